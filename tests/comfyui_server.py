"""A real ComfyUI with this pack linked in, for the tests that need one (test_comfyui_real.py,
test_comfyui_frontend.py, test_comfyui_soak.py). Without COMFYUI_PATH (a ComfyUI checkout) they
skip; when the environment variable CI is set they FAIL instead, naming what is missing, so a CI
run can never pass without running them (.ci/run prepares the host; see the README).

    with running_comfyui(tmp_root, extra_custom_nodes={"x.py": "..."}) as server:
        status, body = asyncio.run(http(server, "GET", "/object_info"))

ComfyUI is started on 127.0.0.1 (a free port) with --cpu, a temporary base directory, and an
extra-model-paths yaml that lists a temporary custom_nodes folder holding a symlink to this pack
and model folders holding tiny models under the public file names the workflows use (and small
images / videos under the input names they load). Only the process started here is stopped.
"""
from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Iterator

import pytest

from harness import api_workflows, file_inputs, load_json, media_inputs
from tiny_models import write_dit, write_inputs, write_models

COMFYUI_PATH = os.environ.get("COMFYUI_PATH")
PACK_ROOT = Path(__file__).resolve().parents[1]
PACK_FOLDER = "hyvideo"                    # the symlink's name: ComfyUI serves our JS under /extensions/hyvideo/
START_TIMEOUT = 180
RUN_TIMEOUT = 600                          # one prompt, queued to finished
# CI=true / 1 / yes (any value but empty, 0, false, no): the host tests must run, not skip.
IN_CI = os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def host_missing() -> list[str]:
    """What the real-host tests need and this machine lacks (empty when they can run)."""
    missing = []
    if not COMFYUI_PATH:
        missing.append("COMFYUI_PATH (a ComfyUI checkout)")
    elif not (Path(COMFYUI_PATH) / "main.py").is_file():
        missing.append(f"a ComfyUI checkout at COMFYUI_PATH={COMFYUI_PATH} (no main.py there)")
    python = os.environ.get("COMFYUI_PYTHON")
    if python and not os.access(python, os.X_OK):
        missing.append(f"an executable COMFYUI_PYTHON (got {python})")
    if importlib.util.find_spec("aiohttp") is None:
        missing.append("aiohttp (pip install -e '.[test]')")
    return missing


def unless_present(missing: list[str]) -> list:
    """pytest marks for a module whose tests need `missing` to be empty: skipped outside CI; in CI
    the module's tests run, and `require` (called from their fixture) fails each of them."""
    return [pytest.mark.comfyui,
            pytest.mark.skipif(bool(missing) and not IN_CI, reason=f"needs {', '.join(missing)}")]


def require(missing: list[str]) -> None:
    """Fail (in CI) or skip (elsewhere) when something the real-host tests need is missing."""
    if missing:
        message = f"needs {', '.join(missing)}"
        if IN_CI:
            pytest.fail(f"CI is set, so the real-host tests must run, but this machine {message} "
                        "(.ci/run prepares them)", pytrace=False)
        pytest.skip(message)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def prepare_root(root: Path, extra_custom_nodes: dict[str, str] | None = None) -> Path:
    """Folders for one ComfyUI run under `root`; returns the extra-model-paths yaml.
    `extra_custom_nodes` maps a file name in the custom_nodes folder to its Python source."""
    (root / "custom_nodes").mkdir(parents=True)
    (root / "base" / "custom_nodes").mkdir(parents=True)  # ComfyUI lists its base folder's too
    (root / "custom_nodes" / PACK_FOLDER).symlink_to(PACK_ROOT, target_is_directory=True)
    prompts = [load_json(p) for p in api_workflows()]
    write_models(root / "models", set().union(*(file_inputs(p) for p in prompts)) if prompts else set())
    write_inputs(root / "base" / "input", set().union(*(media_inputs(p) for p in prompts)) if prompts else set())
    write_dit(root / "models" / "diffusion_models" / "tiny_dit.safetensors")
    for name, source in (extra_custom_nodes or {}).items():
        (root / "custom_nodes" / name).write_text(source)
    yaml = root / "extra_model_paths.yaml"
    yaml.write_text(f"hyvideo_tests:\n    base_path: {root / 'models'}\n    diffusion_models: diffusion_models\n"
                    f"    text_encoders: text_encoders\n    vae: vae\n    loras: loras\n    clip_vision: clip_vision\n"
                    f"    custom_nodes: {root / 'custom_nodes'}\n")
    return yaml


def start(root: Path, yaml: Path) -> dict:
    """Start ComfyUI (not yet waited for); the returned dict describes the server."""
    port = free_port()
    log_path = root / "comfyui.log"
    command = [os.environ.get("COMFYUI_PYTHON", sys.executable), "main.py", "--cpu", "--listen", "127.0.0.1",
               "--port", str(port), "--extra-model-paths-config", str(yaml), "--base-directory", str(root / "base"),
               "--database-url", f"sqlite:///{root / 'comfyui.db'}", "--disable-auto-launch", "--disable-api-nodes"]
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, cwd=COMFYUI_PATH, stdout=log, stderr=subprocess.STDOUT)
    return {"url": f"http://127.0.0.1:{port}", "ws": f"ws://127.0.0.1:{port}/ws", "log": log_path,
            "output": root / "base" / "output", "models": root / "models", "process": process}


def stop(server: dict) -> None:
    process = server["process"]
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@contextlib.contextmanager
def running_comfyui(root: Path, extra_custom_nodes: dict[str, str] | None = None) -> Iterator[dict]:
    require(host_missing())
    server = start(root, prepare_root(root, extra_custom_nodes))
    try:
        wait_until_up(server)
        yield server
    finally:
        stop(server)


def rss_bytes(server: dict) -> int:
    """Resident memory of the ComfyUI process started here (VmRSS in /proc/PID/status)."""
    for line in Path(f"/proc/{server['process'].pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for ComfyUI (pid {server['process'].pid})")


def wait_until_up(server: dict) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if server["process"].poll() is not None:
            pytest.fail(f"ComfyUI exited with {server['process'].returncode}:\n{log_tail(server)}")
        try:
            status, _ = asyncio.run(http(server, "GET", "/system_stats"))
            if status == 200:
                return
        except OSError:
            pass
        time.sleep(0.5)
    pytest.fail(f"ComfyUI did not answer within {START_TIMEOUT} s:\n{log_tail(server)}")


def log_tail(server: dict, lines: int = 60) -> str:
    return "\n".join(Path(server["log"]).read_text(errors="replace").splitlines()[-lines:])


async def http(server: dict, method: str, path: str, body=None):
    import aiohttp
    async with aiohttp.ClientSession() as session:
        async with session.request(method, server["url"] + path, json=body) as response:
            text = await response.text()
            return response.status, (json.loads(text) if text and text[0] in "[{" else text)


async def run_prompt(server, prompt: dict, interrupt_after_progress: bool = False,
                     on_first_progress=None) -> tuple[dict, list]:
    """Queue `prompt`, follow the websocket to the end; returns (history entry, ws events).
    `interrupt_after_progress` posts /interrupt at the first progress event; `on_first_progress()`
    is called there (e.g. to kill a process mid-run)."""
    import aiohttp
    client_id = uuid.uuid4().hex
    events = []  # text events of this prompt, plus {"type": "binary_preview"} for preview frames
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(f"{server['ws']}?clientId={client_id}") as ws:
            async with session.post(server["url"] + "/prompt", json={"prompt": prompt, "client_id": client_id}) as r:
                queued = await r.json()
                assert r.status == 200, f"prompt refused: {json.dumps(queued, indent=1)[:3000]}"
            prompt_id = queued["prompt_id"]
            first_progress = True
            async with asyncio.timeout(RUN_TIMEOUT):
                async for message in ws:
                    if message.type == aiohttp.WSMsgType.BINARY:
                        events.append({"type": "binary_preview", "data": {"bytes": len(message.data)}})
                        continue
                    if message.type != aiohttp.WSMsgType.TEXT:
                        continue
                    event = json.loads(message.data)
                    data = event.get("data", {})
                    if data.get("prompt_id") != prompt_id:
                        continue
                    events.append(event)
                    if event["type"] == "progress" and first_progress:
                        first_progress = False
                        if on_first_progress is not None:
                            on_first_progress()
                        if interrupt_after_progress:
                            await session.post(server["url"] + "/interrupt")
                    if event["type"] in ("execution_error", "execution_interrupted") or (
                            event["type"] == "executing" and data.get("node") is None):
                        break
        history = await completed_history(session, server, prompt_id)
    return history, events


async def completed_history(session, server, prompt_id: str) -> dict:
    """The /history entry of a finished prompt (written just after its final websocket event)."""
    entry = {}
    for _ in range(50):
        async with session.get(f"{server['url']}/history/{prompt_id}") as r:
            entry = (await r.json()).get(prompt_id, {})
        if entry.get("status", {}).get("completed") is not None:
            break
        await asyncio.sleep(0.1)
    return entry
