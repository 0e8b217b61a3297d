// Pure logic of the HunyuanVideo frontend extension: size snapping, resolution presets, the
// memory-plan query and how its answer is shown. No DOM, no LiteGraph: tested with `node --test`.

export const SIZE_MULTIPLE = 16; // latent is /8 and patches are 2x2: sizes are multiples of 16
export const OFFICIAL_FRAMES = 129;

// The official resolutions (SPEC 5.5), all at 129 frames; each appears in both orientations.
const PRESET_SIZES = {
  "540p": [[960, 544], [544, 960], [832, 624], [624, 832], [720, 720]],
  "720p": [[1280, 720], [720, 1280], [1104, 832], [832, 1104], [960, 960]],
};

export const RESOLUTION_PRESETS = Object.entries(PRESET_SIZES).flatMap(([tier, sizes]) =>
  sizes.map(([width, height]) => ({ label: `${tier} · ${width}×${height} ${orientation(width, height)}`, width, height })),
);

export function orientation(width, height) {
  if (width === height) return "square";
  return width > height ? "landscape" : "portrait";
}

// Widget names the extension snaps, by rule.
const SIZE_WIDGETS = new Set(["width", "height"]);
const FRAME_WIDGETS = new Set(["frames", "length", "num_frames", "video_length"]);

// Width/height: up to the next multiple of 16, as the reference pipeline rounds (at least 16).
export function snapSize(value) {
  const number = Math.max(SIZE_MULTIPLE, Math.round(Number(value)));
  return Math.ceil(number / SIZE_MULTIPLE) * SIZE_MULTIPLE;
}

// Frames: down to 4k+1 (1, 5, 9, ... 129), the only counts the causal VAE accepts; the sampler
// rounds the same way (as ComfyUI's Empty HunyuanLatentVideo does).
export function snapFrames(value) {
  const number = Math.max(1, Math.round(Number(value)));
  return Math.floor((number - 1) / 4) * 4 + 1;
}

// The text a node reported when it ran (its ui.text), wrapped to lines of at most `width` chars.
export function reportLines(text, width = 64) {
  const lines = [];
  for (const entry of [].concat(text ?? [])) {
    let line = "";
    for (const word of String(entry).split(/\s+/).filter(Boolean)) {
      if (line && line.length + 1 + word.length > width) {
        lines.push(line);
        line = "  " + word;
      } else {
        line = line ? `${line} ${word}` : word;
      }
    }
    if (line) lines.push(line);
  }
  return lines;
}

// {value, changed, rule} for a widget, or null when the widget is not one we snap.
export function snapWidgetValue(name, value) {
  let snapped;
  if (SIZE_WIDGETS.has(name)) snapped = snapSize(value);
  else if (FRAME_WIDGETS.has(name)) snapped = snapFrames(value);
  else return null;
  const rule = SIZE_WIDGETS.has(name) ? `a multiple of ${SIZE_MULTIPLE}` : "4k+1 frames";
  return { value: snapped, changed: snapped !== Number(value), rule };
}

export function presetFor(width, height) {
  return RESOLUTION_PRESETS.find((p) => p.width === Number(width) && p.height === Number(height)) ?? null;
}

// Query parameter of GET /hyvideo/plan -> widget names that may carry it, first match wins.
export const PLAN_PARAMETERS = {
  width: ["width"],
  height: ["height"],
  frames: ["frames", "length", "num_frames", "video_length"],
  batch: ["batch_size", "batch"],
  weight_format: ["weight_format", "quantization"],
  attention: ["attention", "attention_mode"],
  double_blocks_to_swap: ["double_blocks_to_swap"],
  single_blocks_to_swap: ["single_blocks_to_swap"],
  true_cfg: ["true_cfg_scale", "cfg_scale"],
  vae_tiling: ["vae_tiling", "tiling"],
  budget_gb: ["vram_budget_gb", "budget_gb"],
};

// Merge widget values of the connected pack nodes ({name: value} maps, nearest first) into the
// query for the planner. Values the planner does not understand stay out.
export function planQuery(widgetMaps) {
  const merged = {};
  for (const widgets of widgetMaps) {
    for (const [name, value] of Object.entries(widgets)) if (!(name in merged)) merged[name] = value;
  }
  const query = {};
  for (const [parameter, names] of Object.entries(PLAN_PARAMETERS)) {
    const name = names.find((n) => merged[n] !== undefined && merged[n] !== null && merged[n] !== "");
    if (name === undefined) continue;
    let value = merged[name];
    if (parameter === "true_cfg") value = Number(value) > 1 ? "true" : "false";
    query[parameter] = String(value);
  }
  return new URLSearchParams(Object.entries(query).sort()).toString();
}

export function formatBytes(bytes) {
  if (!Number.isFinite(bytes) || bytes < 0) return "?";
  const units = ["B", "KB", "MB", "GB", "TB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${value.toFixed(unit >= 3 ? 1 : 0)} ${units[unit]}`;
}

export const COLOURS = { fits: "#4caf50", tight: "#ffb300", over: "#e53935", unknown: "#9e9e9e" };

// Colour of an estimate against the memory it must fit in: green below 85 %, amber up to 100 %.
export function memoryLevel(peakBytes, budgetBytes) {
  if (!(peakBytes >= 0) || !(budgetBytes > 0)) return "unknown";
  const ratio = peakBytes / budgetBytes;
  if (ratio <= 0.85) return "fits";
  return ratio <= 1 ? "tight" : "over";
}

// One line for the node: "est. 21.3 GB of 24.0 GB (cuda:0)", or why there is no estimate.
export function planLabel(plan) {
  if (!plan) return { text: "memory: …", colour: COLOURS.unknown };
  if (plan.error) return { text: `memory: ${plan.error}`, colour: COLOURS.unknown };
  const level = memoryLevel(plan.peak_bytes, plan.budget_bytes);
  const device = plan.device?.name ? ` (${plan.device.name})` : "";
  const text = `est. ${formatBytes(plan.peak_bytes)} of ${formatBytes(plan.budget_bytes)}${device}`;
  return { text: level === "over" ? `${text} — does not fit` : text, colour: COLOURS[level] };
}

// The largest contributors of a plan, biggest first, for the node's tooltip.
export function breakdownLines(plan, limit = 6) {
  const entries = Object.entries(plan?.breakdown ?? {}).sort((a, b) => b[1] - a[1]);
  return entries.slice(0, limit).map(([name, bytes]) => `${name}: ${formatBytes(bytes)}`);
}
