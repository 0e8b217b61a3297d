"""Load and soak in a real ComfyUI (issue #14 item 7): many prompts through the HTTP API, one of
them cancelled mid-run. Skipped unless COMFYUI_PATH points at a ComfyUI checkout; failed instead
when CI is set (tests/comfyui_server.py). Tiny models and sizes: the whole file takes about a minute.

One prompt runs alone first (it loads the models, which ComfyUI then caches) and the server's RSS
is read; then 19 more with other seeds (so ComfyUI's cache cannot answer them) and one long one
are queued at once, the long one is interrupted after its first progress event, and the RSS is
read again once the queue is empty.
"""
from __future__ import annotations

import asyncio
import json
import uuid

import pytest

from comfyui_server import (completed_history, host_missing, log_tail, require, rss_bytes, running_comfyui,
                            unless_present)
from harness import SMALL_SETTINGS, api_workflows, load_json, with_inputs

try:
    import aiohttp
except ImportError:      # host_missing() names it: skipped, or failed in CI
    aiohttp = None

MISSING = host_missing()
pytestmark = unless_present(MISSING)

PROMPTS = 20                 # that complete; one more is cancelled
CANCELLED_AT = 10            # its place in the queue (0-based, among all 21)
RSS_TOLERANCE = 0.05         # RSS after the last prompt vs after the first
QUEUE_TIMEOUT = 300
DONE = ("execution_success", "execution_error", "execution_interrupted")


def soak_prompt(seed: int, steps: int = SMALL_SETTINGS["steps"]) -> dict:
    prompt = with_inputs(load_json(next(p for p in api_workflows() if p.stem == "hunyuan_video_t2v_80gb")),
                         {**SMALL_SETTINGS, "steps": steps, "seed": seed})
    saver = next(n for n in prompt.values() if n["class_type"] == "HyVideoSaveVideo")
    saver["inputs"]["filename_prefix"] = "soak/run"
    return prompt


@pytest.fixture(scope="module")
def comfy(tmp_path_factory):
    require(MISSING)
    with running_comfyui(tmp_path_factory.mktemp("comfyui_soak")) as server:
        yield server


async def run_queue(server: dict, prompts: list[dict], cancel: int | None = None) -> tuple[list[str], dict, list]:
    """Queue every prompt at once on one websocket, POST /interrupt for prompt `cancel` after its
    first progress event, and wait for all to end; returns (prompt ids, id -> history, events)."""
    client_id = uuid.uuid4().hex
    events: list[tuple[str, dict]] = []   # (type, data) of every text event, in arrival order
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(f"{server['ws']}?clientId={client_id}", max_msg_size=0) as ws:
            ids = []
            for prompt in prompts:
                async with session.post(server["url"] + "/prompt",
                                        json={"prompt": prompt, "client_id": client_id}) as r:
                    queued = await r.json()
                    assert r.status == 200, f"prompt refused: {json.dumps(queued, indent=1)[:3000]}"
                    ids.append(queued["prompt_id"])
            pending, interrupted = set(ids), False
            async with asyncio.timeout(QUEUE_TIMEOUT):
                async for message in ws:
                    if message.type != aiohttp.WSMsgType.TEXT:
                        continue                 # binary preview frames
                    event = json.loads(message.data)
                    data = event.get("data", {})
                    events.append((event["type"], data))
                    if (event["type"] == "progress" and cancel is not None and not interrupted
                            and data.get("prompt_id") == ids[cancel]):
                        interrupted = True
                        async with session.post(server["url"] + "/interrupt", json={"prompt_id": ids[cancel]}) as r:
                            assert r.status == 200
                    if event["type"] in DONE:
                        pending.discard(data.get("prompt_id"))
                        if not pending:
                            break
        histories = {}
        for prompt_id in ids:
            histories[prompt_id] = await completed_history(session, server, prompt_id)
    return ids, histories, events


def output_files(history: dict) -> list[str]:
    return [f"{item.get('subfolder', '')}/{item['filename']}".lstrip("/")
            for ui in history.get("outputs", {}).values() for key in ("videos", "images", "gifs")
            for item in ui.get(key, [])]


def test_twenty_prompts_complete_memory_stays_flat_and_a_cancelled_one_leaves_the_queue_running(comfy):
    output = comfy["output"]
    before = {p for p in output.rglob("*") if p.is_file()} if output.exists() else set()

    (first_id,), first, _ = asyncio.run(run_queue(comfy, [soak_prompt(seed=1000)]))
    assert first[first_id]["status"]["status_str"] == "success", log_tail(comfy)
    rss_first = rss_bytes(comfy)

    prompts = [soak_prompt(seed=1001 + i) for i in range(PROMPTS - 1)]
    prompts.insert(CANCELLED_AT, soak_prompt(seed=7, steps=500))
    ids, histories, events = asyncio.run(run_queue(comfy, prompts, cancel=CANCELLED_AT))
    rss_last = rss_bytes(comfy)
    histories[first_id] = first[first_id]
    cancelled = ids[CANCELLED_AT]
    completed = [first_id] + [i for i in ids if i != cancelled]

    # Every prompt but the cancelled one completed, with its own video.
    failed = {i: histories[i].get("status") for i in completed if histories[i].get("status", {}).get("status_str") != "success"}
    assert not failed, f"{json.dumps(failed, indent=1)[:3000]}\n{log_tail(comfy)}"
    files = {i: output_files(histories[i]) for i in completed}
    assert all(len(f) == 1 for f in files.values()), files
    assert len({f[0] for f in files.values()}) == PROMPTS, "two prompts wrote the same file"

    # The cancelled one stopped at its sampler, early, and the queue went on after it.
    ends = [(kind, data) for kind, data in events if kind in DONE]
    end_order = [data["prompt_id"] for _, data in ends]
    kind, data = ends[end_order.index(cancelled)]
    assert kind == "execution_interrupted" and data["node_type"] == "HyVideoSampler", (kind, data)
    steps = [d["value"] for k, d in events if k == "progress" and d.get("prompt_id") == cancelled]
    assert steps and max(steps) < 500, f"the cancelled prompt ran {max(steps, default=0)} of 500 steps"
    assert histories[cancelled]["status"]["status_str"] == "error" and not output_files(histories[cancelled])
    after_cancel = ids[CANCELLED_AT + 1:]
    assert end_order[end_order.index(cancelled) + 1:] == after_cancel, "the prompts queued after it did not all run"
    assert all(histories[i]["status"]["status_str"] == "success" for i in after_cancel)

    # No partial video: the output folder holds exactly the completed prompts' videos, none empty.
    new = {p for p in output.rglob("*") if p.is_file()} - before
    assert sorted(str(p.relative_to(output)) for p in new) == sorted(f[0] for f in files.values()), \
        "files in the output folder that no completed prompt reported (a partial video?)"
    assert all(p.stat().st_size > 0 for p in new)

    # Memory: ComfyUI's RSS after the last prompt within 5 % of its RSS after the first.
    growth = (rss_last - rss_first) / rss_first
    assert abs(growth) <= RSS_TOLERANCE, \
        f"RSS {rss_first / 2**20:.0f} MiB after the first prompt, {rss_last / 2**20:.0f} MiB after the last ({growth:+.1%})"
