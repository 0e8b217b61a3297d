// HunyuanVideo frontend extension: wires hyvideo_logic.js to LiteGraph.
// (a) memory estimate from GET /hyvideo/plan above the loader/sampler nodes, coloured against the
//     GPU's memory; (b) width/height snapped to multiples of 16 and frames to 4k+1 when edited,
//     with the official resolutions in the node's context menu.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";
import {
  OFFICIAL_FRAMES, RESOLUTION_PRESETS, breakdownLines, planLabel, planQuery, reportLines, snapWidgetValue,
} from "./hyvideo_logic.js";

const PLAN_WIDGETS = new Set(["width", "weight_format"]); // sampler-like and loader-like nodes
const REFRESH_DELAY_MS = 400;
const MAX_HOPS = 6;

function isPackNode(nodeData) {
  return String(nodeData.category ?? "").startsWith("HunyuanVideo") || String(nodeData.name ?? "").startsWith("HyVideo");
}

function widget(node, name) {
  return node.widgets?.find((w) => w.name === name);
}

function widgetValues(node) {
  return Object.fromEntries((node.widgets ?? []).map((w) => [w.name, w.value]));
}

function linkById(graph, id) {
  return graph.links?.get ? graph.links.get(id) : graph.links?.[id];
}

// Pack nodes connected to `start` (both directions), nearest first.
function connectedPackNodes(start) {
  const graph = start.graph;
  const seen = new Set([start.id]);
  const order = [start];
  let frontier = [start];
  for (let hop = 0; hop < MAX_HOPS && frontier.length; hop += 1) {
    const next = [];
    for (const node of frontier) {
      const ids = [
        ...(node.inputs ?? []).map((i) => linkById(graph, i.link)?.origin_id),
        ...(node.outputs ?? []).flatMap((o) => (o.links ?? []).map((l) => linkById(graph, l)?.target_id)),
      ];
      for (const id of ids) {
        const other = id == null ? null : graph.getNodeById(id);
        if (!other || seen.has(other.id) || !other.hyvideoPackNode) continue;
        seen.add(other.id);
        order.push(other);
        next.push(other);
      }
    }
    frontier = next;
  }
  return order;
}

async function refreshPlan(node) {
  if (!node.graph) return; // removed (e.g. another workflow was loaded) before its timer fired
  const group = connectedPackNodes(node);
  const displays = group.filter((n) => n.hyvideoShowsPlan);
  if (!displays.length) return;
  // Widgets of the sampler (the node with a width) first, so its size wins over stale ones.
  const ordered = [...group].sort((a, b) => Number(!widget(a, "width")) - Number(!widget(b, "width")));
  let plan;
  try {
    const response = await api.fetchApi(`/hyvideo/plan?${planQuery(ordered.map(widgetValues))}`);
    plan = await response.json();
  } catch (error) {
    plan = { error: `estimate unavailable (${error.message ?? error})` };
  }
  if (!node.graph) return;
  for (const display of displays) display.hyvideoPlan = plan;
  node.graph.setDirtyCanvas(true, false);
}

function scheduleRefresh(node) {
  clearTimeout(node.hyvideoRefreshTimer);
  node.hyvideoRefreshTimer = setTimeout(() => refreshPlan(node), REFRESH_DELAY_MS);
}

function notify(summary) {
  const toast = app.extensionManager?.toast;
  if (toast?.add) toast.add({ severity: "info", summary: "HunyuanVideo", detail: summary, life: 4000 });
  else console.info(`[hyvideo] ${summary}`);
}

function attachSnapping(node) {
  for (const w of node.widgets ?? []) {
    if (snapWidgetValue(w.name, 1) === null) continue;
    const original = w.callback;
    w.callback = function (value, ...rest) {
      const snap = snapWidgetValue(w.name, w.value);
      if (snap?.changed) {
        notify(`${w.name} ${w.value} → ${snap.value} (${snap.rule})`);
        w.value = snap.value;
      }
      return original?.call(this, w.value, ...rest);
    };
  }
}

function attachPlanRefresh(node) {
  for (const w of node.widgets ?? []) {
    const original = w.callback;
    w.callback = function (...args) {
      const result = original?.apply(this, args);
      scheduleRefresh(node);
      return result;
    };
  }
}

function setSize(node, width, height, frames) {
  for (const [name, value] of [["width", width], ["height", height], ["frames", frames]]) {
    const w = widget(node, name);
    if (w && value !== undefined) {
      w.value = value;
      w.callback?.(value);
    }
  }
  node.setDirtyCanvas?.(true, true);
}

function presetMenu(node) {
  const presets = RESOLUTION_PRESETS.map((p) => ({ content: p.label, callback: () => setSize(node, p.width, p.height) }));
  if (widget(node, "frames")) {
    presets.push({ content: `official length: ${OFFICIAL_FRAMES} frames`, callback: () => setSize(node, undefined, undefined, OFFICIAL_FRAMES) });
  }
  return { content: "HunyuanVideo resolutions", has_submenu: true, submenu: { options: presets } };
}

function drawPlan(node, ctx) {
  if (!node.hyvideoShowsPlan || node.flags?.collapsed) return;
  const { text, colour } = planLabel(node.hyvideoPlan);
  const titleHeight = globalThis.LiteGraph?.NODE_TITLE_HEIGHT ?? 30;
  ctx.save();
  ctx.font = "12px sans-serif";
  ctx.fillStyle = colour;
  ctx.fillText(text, 4, -titleHeight - 6);
  ctx.restore();
}

// What the node reported when it ran (snapped sizes, cache skips, swap, LoRA matches), under it.
function drawReport(node, ctx) {
  if (!node.hyvideoReport?.length || node.flags?.collapsed) return;
  ctx.save();
  ctx.font = "11px sans-serif";
  ctx.fillStyle = "#9aa4b1";
  node.hyvideoReport.forEach((line, i) => ctx.fillText(line, 4, node.size[1] + 16 + 13 * i));
  ctx.restore();
}

// ComfyUI serves this folder twice when the pack's folder name differs from its pyproject name
// (WEB_DIRECTORY and [tool.comfy] web): register once.
const REGISTERED = Symbol.for("hyvideo.MemoryPlanAndSizes");
if (!globalThis[REGISTERED]) {
  globalThis[REGISTERED] = true;
  registerExtension();
}

function registerExtension() {
app.registerExtension({
  name: "hyvideo.MemoryPlanAndSizes",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (!isPackNode(nodeData)) return;
    const onNodeCreated = nodeType.prototype.onNodeCreated;
    nodeType.prototype.onNodeCreated = function (...args) {
      const result = onNodeCreated?.apply(this, args);
      this.hyvideoPackNode = true;
      this.hyvideoShowsPlan = (this.widgets ?? []).some((w) => PLAN_WIDGETS.has(w.name));
      attachSnapping(this);
      attachPlanRefresh(this);
      if (this.hyvideoShowsPlan) scheduleRefresh(this);
      return result;
    };
    const onRemoved = nodeType.prototype.onRemoved;
    nodeType.prototype.onRemoved = function (...args) {
      clearTimeout(this.hyvideoRefreshTimer);
      return onRemoved?.apply(this, args);
    };
    const onConnectionsChange = nodeType.prototype.onConnectionsChange;
    nodeType.prototype.onConnectionsChange = function (...args) {
      const result = onConnectionsChange?.apply(this, args);
      scheduleRefresh(this);
      return result;
    };
    const onDrawForeground = nodeType.prototype.onDrawForeground;
    nodeType.prototype.onDrawForeground = function (ctx, ...rest) {
      const result = onDrawForeground?.call(this, ctx, ...rest);
      drawPlan(this, ctx);
      drawReport(this, ctx);
      return result;
    };
    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (message, ...rest) {
      const result = onExecuted?.call(this, message, ...rest);
      this.hyvideoReport = reportLines(message?.text);
      this.setDirtyCanvas?.(true, true);
      return result;
    };
    const getExtraMenuOptions = nodeType.prototype.getExtraMenuOptions;
    nodeType.prototype.getExtraMenuOptions = function (canvas, options) {
      const result = getExtraMenuOptions?.call(this, canvas, options);
      if (widget(this, "width") && widget(this, "height")) options.unshift(presetMenu(this), null);
      if (this.hyvideoPlan?.breakdown) {
        options.push({ content: "Memory estimate", has_submenu: true,
          submenu: { options: breakdownLines(this.hyvideoPlan).map((line) => ({ content: line, disabled: true })) } });
      }
      return result;
    };
  },
  async loadedGraphNode(node) {
    if (node.hyvideoShowsPlan) scheduleRefresh(node);
  },
});
}
