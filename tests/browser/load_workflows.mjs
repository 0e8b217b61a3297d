// Loads UI workflows into a running ComfyUI's real frontend (headless Chromium) and reports, as
// one JSON document on stdout, what the frontend made of each; tests/test_comfyui_frontend.py
// judges the report. Progress and browser noise go to stderr.
//
//   node tests/browser/load_workflows.mjs http://127.0.0.1:8188 workflows/a.json workflows/b.json
//
// Environment: CHROMIUM_PATH (default /usr/bin/chromium).
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { basename, join } from "node:path";

import { chromium } from "playwright-core";

const EXTENSION = "hyvideo.MemoryPlanAndSizes";
const OUR_FILES = "/extensions/hyvideo/";
const PLAN_ROUTE = "/hyvideo/plan";
const READY_TIMEOUT_MS = 60_000;
const PLAN_TIMEOUT_MS = 8_000;
// Longer than the extension's refresh delay (400 ms): no estimate request for this long = settled.
const PLAN_QUIET_MS = 900;
// Without the background-networking flags Chromium keeps dialling Google on this closed network.
const CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
  "--disable-background-networking", "--disable-component-update", "--disable-sync"];

const log = (...parts) => process.stderr.write(`[load_workflows] ${parts.join(" ")}\n`);

// Everything the page says that could be an error, tagged with whether it points at our files.
function watchPage(page) {
  const events = [];
  const ours = (text) => text.includes(OUR_FILES) || /hyvideo/i.test(text);
  page.on("console", (message) => {
    if (!["error", "warning"].includes(message.type())) return;
    const where = message.location()?.url ?? "";
    const text = message.text();
    events.push({ kind: `console.${message.type()}`, text, where, ours: ours(where) || ours(text) });
  });
  page.on("pageerror", (error) => {
    const text = `${error.message}\n${error.stack ?? ""}`;
    events.push({ kind: "pageerror", text, where: "", ours: ours(text) });
  });
  page.on("response", (response) => {
    const url = response.url();
    if (response.status() >= 400 && ours(url)) {
      events.push({ kind: "http", text: `${response.status()} ${url}`, where: url, ours: true });
    }
  });
  // Estimate requests, in the order sent, and how many are still unanswered.
  const planCalls = [];
  const plan = { pending: 0, lastActivity: Date.now() };
  const touch = () => { plan.lastActivity = Date.now(); };
  page.on("request", (request) => {
    if (!request.url().includes(PLAN_ROUTE)) return;
    const call = { query: new URL(request.url()).search, status: null };
    planCalls.push(call);
    plan.pending += 1;
    touch();
    request.response().then((response) => { call.status = response?.status() ?? null; })
      .catch(() => {}).finally(() => { plan.pending -= 1; touch(); });
  });
  return { events, planCalls, plan };
}

async function openFrontend(page, url) {
  // A new user gets the template browser over the graph: mark the tutorial as seen, as a returning user.
  const seen = await fetch(`${url}/api/settings/Comfy.TutorialCompleted`, { method: "POST", body: "true" });
  if (!seen.ok) throw new Error(`POST /api/settings/Comfy.TutorialCompleted: ${seen.status}`);
  await page.goto(url);
  await page.waitForFunction(
    (name) => Boolean(window.app?.graph && window.LiteGraph && app.extensions?.some((e) => e.name === name)),
    EXTENSION, { timeout: READY_TIMEOUT_MS });
  await page.waitForLoadState("networkidle");
  // A probe extension keeps the frontend's own list of missing node types from each load.
  await page.evaluate(() => {
    window.hyvideoProbe = { missingNodeTypes: null };
    app.registerExtension({
      name: "hyvideo.test.Probe",
      async afterConfigureGraph(missingNodeTypes) { window.hyvideoProbe.missingNodeTypes = [...(missingNodeTypes ?? [])]; },
    });
  });
}

// Runs in the page: load one workflow and describe the graph the frontend built from it.
async function loadInPage({ workflow, extension }) {
  const registered = window.LiteGraph.registered_node_types;
  window.hyvideoProbe.missingNodeTypes = null;
  const unregistered = workflow.nodes.map((n) => n.type).filter((type) => !(type in registered));
  await app.loadGraphData(workflow, true, true, null);
  const widgetOf = (w) => ({
    // saved: written to the workflow's widgets_values (LiteGraph skips widget.serialize === false).
    name: w.name, type: w.type, value: w.value, saved: w.serialize !== false,
    choices: Array.isArray(w.options?.values) ? w.options.values : null,
    min: w.options?.min ?? null, max: w.options?.max ?? null,
  });
  const nodes = app.graph.nodes.map((node) => ({
    id: node.id, type: node.type, mode: node.mode, ours: Boolean(node.hyvideoPackNode),
    showsPlan: Boolean(node.hyvideoShowsPlan), widgets: (node.widgets ?? []).map(widgetOf),
    widgets_values: node.serialize().widgets_values ?? [],
  }));
  const links = [...(app.graph.links?.values?.() ?? Object.values(app.graph.links ?? {}))]
    .filter(Boolean).map((l) => [l.id, l.origin_id, l.origin_slot, l.target_id, l.target_slot, l.type]);
  const prompt = (await app.graphToPrompt()).output;
  return {
    unregistered, missingNodeTypes: window.hyvideoProbe.missingNodeTypes, nodes, links, prompt,
    extensionRegistered: app.extensions.some((e) => e.name === extension),
  };
}

// Runs in the page: wait until every node that shows an estimate has one.
async function plansInPage({ timeoutMs }) {
  const shows = () => app.graph.nodes.filter((n) => n.hyvideoShowsPlan);
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline && shows().some((n) => !n.hyvideoPlan)) await new Promise((r) => setTimeout(r, 100));
  return Object.fromEntries(shows().map((n) => [n.id, n.hyvideoPlan ?? null]));
}

// Runs in the page: type 1000 into a sampler's width the way the canvas does (value, then callback).
function snapInPage() {
  const node = app.graph.nodes.find((n) => n.type === "HyVideoSampler");
  if (!node) return null;
  const width = node.widgets.find((w) => w.name === "width");
  width.value = 1000;
  width.callback?.(width.value, app.canvas, node);
  return { node: node.id, type: node.type, typed: 1000, value: width.value };
}

// Waits until no estimate request was sent or answered for PLAN_QUIET_MS, counted from now at the
// earliest (the extension sends its requests 400 ms after a change).
async function planRequestsSettled(watch) {
  watch.plan.lastActivity = Math.max(watch.plan.lastActivity, Date.now());
  const deadline = Date.now() + PLAN_TIMEOUT_MS;
  while (Date.now() < deadline) {
    if (watch.plan.pending === 0 && Date.now() - watch.plan.lastActivity >= PLAN_QUIET_MS) return true;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  return false;
}

// Closes whatever dialog the load opened (missing nodes / models, load errors) after noting its text.
async function openDialogs(page) {
  const texts = await page.evaluate(() => [...document.querySelectorAll(".p-dialog")]
    .filter((d) => d.offsetParent !== null || d.getClientRects().length).map((d) => d.innerText.trim().slice(0, 2000)));
  for (let i = 0; i < texts.length; i += 1) await page.keyboard.press("Escape");
  return texts;
}

async function checkWorkflow(page, watch, path) {
  const workflow = JSON.parse(readFileSync(path, "utf8"));
  const firstEvent = watch.events.length;
  const firstPlanCall = watch.planCalls.length;
  const started = Date.now();
  const loaded = await page.evaluate(loadInPage, { workflow, extension: EXTENSION });
  await page.evaluate(plansInPage, { timeoutMs: PLAN_TIMEOUT_MS });
  const settledAfterLoad = await planRequestsSettled(watch);
  const dialogs = await openDialogs(page);
  const plans = await page.evaluate(plansInPage, { timeoutMs: 0 });
  const planCallsAfterLoad = watch.planCalls.length;
  const snap = await page.evaluate(snapInPage);
  const settledAfterSnap = await planRequestsSettled(watch);
  log(`${basename(path)}: ${Date.now() - started} ms`);
  return {
    name: basename(path, ".json"), ...loaded, plans, dialogs, snap,
    settledAfterLoad, settledAfterSnap,
    planCallsOnLoad: watch.planCalls.slice(firstPlanCall, planCallsAfterLoad),
    planCallsAfterSnap: watch.planCalls.slice(planCallsAfterLoad),
    events: watch.events.slice(firstEvent),
  };
}

// Load `first` and, right after, `second` (before the first graph's estimate timers are due): every
// estimate request sent after that should describe the second graph.
async function quickReload(page, watch, first, second) {
  const [a, b] = [first, second].map((path) => JSON.parse(readFileSync(path, "utf8")));
  await page.evaluate(async (workflow) => app.loadGraphData(workflow), a);
  await page.evaluate(async (workflow) => app.loadGraphData(workflow), b);
  const firstCall = watch.planCalls.length;
  const settled = await planRequestsSettled(watch);
  await openDialogs(page);
  return { from: basename(first, ".json"), to: basename(second, ".json"), settled,
    queries: watch.planCalls.slice(firstCall).map((call) => call.query) };
}

async function main() {
  const [url, ...paths] = process.argv.slice(2);
  if (!url || !paths.length) throw new Error("usage: load_workflows.mjs <ComfyUI url> <workflow.json>...");
  const profile = mkdtempSync(join(tmpdir(), "hyvideo-chromium-"));
  const started = Date.now();
  // A fresh profile per run: no settings or workflows left over from an earlier run.
  const browser = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHROMIUM_PATH || "/usr/bin/chromium", headless: true,
    args: CHROMIUM_FLAGS, viewport: { width: 1600, height: 1000 },
  });
  try {
    const page = browser.pages()[0] ?? await browser.newPage();
    const watch = watchPage(page);
    await openFrontend(page, url);
    const startup = { ms: Date.now() - started, events: watch.events.slice(), dialogs: await openDialogs(page) };
    const frontendVersion = await page.evaluate(() => window.__COMFYUI_FRONTEND_VERSION__ ?? null);
    log(`frontend ready in ${startup.ms} ms`);
    const workflows = [];
    for (const path of paths) workflows.push(await checkWorkflow(page, watch, path));
    const reload = paths.length > 1 ? await quickReload(page, watch, paths[0], paths[1]) : null;
    process.stdout.write(JSON.stringify({ frontendVersion, startup, workflows, quickReload: reload }));
  } finally {
    await browser.close();
    rmSync(profile, { recursive: true, force: true });
  }
}

main().catch((error) => {
  log(error.stack ?? error);
  process.exit(1);
});
