// node --test tests/js/   — the pure logic of the frontend extension.
import { test } from "node:test";
import assert from "node:assert/strict";

import {
  RESOLUTION_PRESETS, breakdownLines, formatBytes, memoryLevel, planLabel, planQuery, presetFor, reportLines,
  snapFrames, snapSize, snapWidgetValue,
} from "../../web/js/hyvideo_logic.js";

test("sizes snap up to multiples of 16, like the reference pipeline", () => {
  assert.equal(snapSize(1280), 1280);
  assert.equal(snapSize(1000), 1008);
  assert.equal(snapSize(1281), 1296);
  assert.equal(snapSize(7), 16);
  assert.equal(snapSize("545"), 560);
});

test("frames snap down to 4k+1, as the sampler does", () => {
  assert.deepEqual([1, 2, 3, 4, 5, 128, 129, 130, 131, 126].map(snapFrames), [1, 1, 1, 1, 5, 125, 129, 129, 129, 125]);
  assert.equal(snapFrames(0), 1);
});

test("a node's report wraps into short lines", () => {
  assert.deepEqual(reportLines(["960x544x129, 50 steps", "size 1000 rounded up to 1008 and reported here"], 24),
    ["960x544x129, 50 steps", "size 1000 rounded up to", "  1008 and reported here"]);
  assert.deepEqual(reportLines(undefined), []);
});

test("only size and frame widgets are snapped, and a change is reported", () => {
  assert.deepEqual(snapWidgetValue("width", 1000), { value: 1008, changed: true, rule: "a multiple of 16" });
  assert.deepEqual(snapWidgetValue("frames", 129), { value: 129, changed: false, rule: "4k+1 frames" });
  assert.equal(snapWidgetValue("steps", 33), null);
});

test("the official presets are all there, valid, in both orientations", () => {
  assert.equal(RESOLUTION_PRESETS.length, 10);
  const sizes = RESOLUTION_PRESETS.map((p) => `${p.width}x${p.height}`).sort();
  assert.deepEqual(sizes, ["1104x832", "1280x720", "544x960", "624x832", "720x1280", "720x720", "832x1104",
    "832x624", "960x544", "960x960"]);
  for (const p of RESOLUTION_PRESETS) {
    assert.equal(snapSize(p.width), p.width);
    assert.equal(snapSize(p.height), p.height);
  }
  assert.equal(presetFor(1280, 720).label, "720p · 1280×720 landscape");
  assert.equal(presetFor(544, 960).label, "540p · 544×960 portrait");
  assert.equal(presetFor(1000, 1000), null);
});

test("the plan query takes the nearest node's value and maps widget names", () => {
  const sampler = { width: 960, height: 544, frames: 129, true_cfg_scale: 1.0, steps: 50, seed: 3 };
  const loader = { weight_format: "fp8_e4m3fn", attention: "sdpa", width: 1 };
  const swap = { double_blocks_to_swap: "auto", single_blocks_to_swap: 20 };
  const query = new URLSearchParams(planQuery([sampler, loader, swap]));
  assert.equal(query.get("width"), "960");
  assert.equal(query.get("weight_format"), "fp8_e4m3fn");
  assert.equal(query.get("double_blocks_to_swap"), "auto");
  assert.equal(query.get("true_cfg"), "false");
  assert.equal(query.get("steps"), null);
  assert.equal(new URLSearchParams(planQuery([{ cfg_scale: 6 }])).get("true_cfg"), "true");
});

test("bytes are formatted in binary units", () => {
  assert.equal(formatBytes(512), "512 B");
  assert.equal(formatBytes(24 * 1024 ** 3), "24.0 GB");
  assert.equal(formatBytes(1536 * 1024 ** 2), "1.5 GB");
  assert.equal(formatBytes(NaN), "?");
});

test("estimates are coloured against the budget", () => {
  const gb = 1024 ** 3;
  assert.equal(memoryLevel(10 * gb, 24 * gb), "fits");
  assert.equal(memoryLevel(22 * gb, 24 * gb), "tight");
  assert.equal(memoryLevel(30 * gb, 24 * gb), "over");
  assert.equal(memoryLevel(undefined, 24 * gb), "unknown");
  const label = planLabel({ peak_bytes: 30 * gb, budget_bytes: 24 * gb, device: { name: "cuda:0" } });
  assert.equal(label.text, "est. 30.0 GB of 24.0 GB (cuda:0) — does not fit");
  assert.equal(label.colour, "#e53935");
  assert.equal(planLabel({ error: "planner not available" }).text, "memory: planner not available");
});

test("the breakdown lists the largest parts first", () => {
  const plan = { breakdown: { latents: 10, weights: 3 * 1024 ** 3, activations: 2 * 1024 ** 3 } };
  assert.deepEqual(breakdownLines(plan, 2), ["weights: 3.0 GB", "activations: 2.0 GB"]);
});
