"""The tests' standalone host: ComfyUI's folder layout, clear missing-file errors, progress with
interrupts, devices, unload hooks. And nodes/host.py's `host`: it forwards to the installed host,
which outside ComfyUI is a NoHost until one is installed."""
from __future__ import annotations

import os
import weakref

import pytest
import torch

from harness import standalone_host as standalone
from harness.pack import load_pack, pack_module
from hyvideo_core.errors import CancelledError, HyVideoError, InvalidInputError

host_module = pack_module("nodes.host")


@pytest.fixture
def host(tmp_path):
    models = tmp_path / "models"
    for relative in ("unet/a.safetensors", "diffusion_models/sub/b.gguf", "diffusion_models/notes.txt",
                     "diffusion_models/.hidden.safetensors", "clip/clip_l.safetensors", "vae/v.sft"):
        (models / relative).parent.mkdir(parents=True, exist_ok=True)
        (models / relative).write_bytes(b"x")
    return standalone.StandaloneHost(models, tmp_path / "out", tmp_path / "tmp")


def test_model_folders_follow_comfyui(host, tmp_path):
    assert host.filenames("diffusion_models") == ["a.safetensors", os.path.join("sub", "b.gguf")]
    assert host.filenames("unet") == host.filenames("diffusion_models")
    assert host.filenames("text_encoders") == ["clip_l.safetensors"]
    assert host.full_path("vae", "v.sft") == str(tmp_path / "models" / "vae" / "v.sft")
    host.add_model_folder("loras", tmp_path / "extra_loras")
    assert str(tmp_path / "extra_loras") in host.folders("loras")


def test_missing_files_name_the_folders_searched(host, tmp_path):
    with pytest.raises(InvalidInputError) as error:
        host.full_path("diffusion_models", "hunyuan_video_t2v_720p_bf16.safetensors")
    message = str(error.value)
    assert str(tmp_path / "models" / "diffusion_models") in message and str(tmp_path / "models" / "unet") in message
    assert "a.safetensors" in message  # what is there instead
    with pytest.raises(InvalidInputError, match="unknown"):
        host.filenames("checkpoints_typo")


def test_relative_names_cannot_escape_the_folders(host):
    with pytest.raises(InvalidInputError):
        host.full_path("vae", "../unet/a.safetensors")


def test_progress_reports_and_stops_on_interrupt(host):
    seen = []
    host.on_progress = lambda node, value, total, preview: seen.append((node, value, total, None if preview is None
                                                                        else preview.shape))
    bar = host.progress(3, node_id="7")
    bar.update(1, preview_rgb=torch.rand(8, 6, 3))
    bar.update(5)
    assert seen == [("7", 1, 3, (8, 6, 3)), ("7", 3, 3, None)]
    host.interrupt()
    with pytest.raises(CancelledError):
        bar.update(2)
    host.check_interrupt()  # the flag was cleared when raised, as in ComfyUI


def test_interruptible_frees_memory_on_failure(host, monkeypatch):
    freed = []
    monkeypatch.setattr(host, "free_memory", lambda: freed.append(1))
    with pytest.raises(CancelledError):
        with host.interruptible():
            raise CancelledError("stop")
    assert freed == [1]


def test_devices_and_memory(host):
    main, offload = host.devices()
    assert offload == torch.device("cpu") and main.type in ("cpu", "cuda")
    free, total = host.device_memory()
    assert 0 < free <= total


def test_unload_calls_registered_objects_weakly(host):
    class Model:
        unloaded = 0

        def unload(self):
            Model.unloaded += 1

    kept, dropped = Model(), Model()
    host.register_unloadable(kept)
    host.register_unloadable(dropped)
    ref = weakref.ref(dropped)
    del dropped
    assert ref() is None
    host.unload_all()
    assert Model.unloaded == 1


def test_output_and_temp_folders_are_created(host, tmp_path):
    assert host.output_dir() == str(tmp_path / "out") and os.path.isdir(tmp_path / "out")
    assert host.temp_dir() == str(tmp_path / "tmp") and os.path.isdir(tmp_path / "tmp")


@pytest.fixture
def no_host():
    """A NoHost behind the pack's `host` for one test; the session's standalone host afterwards."""
    previous = host_module.install_host(host_module.NoHost())
    yield host_module.host
    host_module.install_host(previous)


def test_every_host_offers_every_service():
    for cls in (host_module.ComfyHost, standalone.StandaloneHost, host_module.NoHost):
        assert [name for name in host_module.HOST_METHODS if not callable(getattr(cls, name, None))] == [], cls


def test_outside_comfyui_the_nohost_lists_nothing_records_routes_and_refuses_the_rest(no_host):
    assert no_host.name == "none"
    assert no_host.filenames("diffusion_models") == [] and no_host.model_dirs("text_encoders") == []
    assert no_host.input_files(None) == []
    no_host.register_route("get", "/x", print)
    assert no_host.routes == [("GET", "/x", print)]
    for call in (lambda: no_host.full_path("vae", "v.sft"), no_host.devices, no_host.output_dir,
                 lambda: no_host.progress(3)):
        with pytest.raises(HyVideoError, match="inside ComfyUI"):
            call()
    with pytest.raises(AttributeError):
        no_host.on_progress  # not a service: a plain AttributeError (getattr(host, name, default) works)


def test_node_modules_hold_the_forwarding_host_and_see_the_installed_one(no_host, host):
    pack = load_pack()
    assert pack.nodes.loaders.host is no_host and pack.nodes.lora.host is no_host
    assert pack.nodes.loaders.host.filenames("diffusion_models") == []
    previous = host_module.install_host(host)
    assert isinstance(previous, host_module.NoHost)
    assert pack.nodes.loaders.host.filenames("diffusion_models") == ["a.safetensors", os.path.join("sub", "b.gguf")]
    no_host.on_progress = print  # attribute writes reach the installed host too
    assert host.on_progress is print
    del no_host.on_progress
    assert "on_progress" not in vars(host)


def test_routes_recorded_before_a_host_is_installed_are_handed_to_it(no_host, host):
    handler = object()
    no_host.register_route("GET", "/hyvideo/test", handler)
    host_module.install_host(host)
    assert ("GET", "/hyvideo/test", handler) in host.routes


def test_native_model_needs_comfyui_here(host, no_host):
    """The standalone host has no ComfyUI samplers or memory manager: asking for a native MODEL is a
    clear error (inside ComfyUI, tests/test_comfyui_native.py runs it); so is asking a NoHost."""
    assert "native_model" in host_module.HOST_METHODS
    with pytest.raises(HyVideoError, match="inside ComfyUI"):
        host.native_model(object(), shift=7.0)
    with pytest.raises(HyVideoError, match="inside ComfyUI"):
        no_host.native_model(object())


def test_the_native_bridge_node_reports_that_it_needs_comfyui(tmp_path):
    from harness import pack_runner
    prompt = {"1": {"class_type": "HyVideoModelLoader",
                    "inputs": {"model_name": "tiny.safetensors", "base_precision": "fp32", "weight_format": "auto",
                               "attention": "sdpa"}},
              "2": {"class_type": "HyVideoToNativeModel", "inputs": {"model": ["1", 0], "shift": 7.0}},
              "3": {"class_type": "HyVideoTestSink", "inputs": {"model": ["2", 0]}}}

    class Sink:
        RETURN_TYPES = ()
        OUTPUT_NODE = True
        FUNCTION = "run"
        CATEGORY = "tests"

        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {"model": ("MODEL", {"tooltip": "m"})}}

        def run(self, model):
            return {}

    from tiny_models import write_dit
    write_dit(tmp_path / "models" / "diffusion_models" / "tiny.safetensors", torch.float32)
    runner = pack_runner(models_dir=tmp_path / "models", output_dir=tmp_path / "out",
                         extra_nodes={"HyVideoTestSink": Sink})
    result = runner.run(prompt)
    assert result.error is not None and result.error["node_id"] == "2", result.error
    assert "inside ComfyUI" in result.error["exception_message"]
