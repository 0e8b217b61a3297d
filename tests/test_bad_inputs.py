"""Bad inputs of every public entry point, each refused with the project's own error naming what is wrong
(issue 14): the library in-process, the CLI as subprocesses (exit code 2 and an `error:` line), the nodes
by direct calls and through the harness. Cases that could hang or allocate a lot if their check broke run
in a subprocess with a timeout, so a regression fails its test instead of stalling the suite."""
from __future__ import annotations

import json
import math
import os
import struct
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file, save_file

import hyvideo_core
from hyvideo_core.errors import CheckpointError, InvalidInputError, NumericsError, OutOfMemoryError
from hyvideo_core.lora import BlockStrengths, LoraSpec, apply_loras, load_lora, remove_loras, set_strengths
from hyvideo_core.run.choices import parse_dtype
from hyvideo_core.sampling import FirstBlockCache, SamplingHooks, SamplingOptions, TeaCache, sample, seeded_noise
from hyvideo_core.sampling.noise import check_seed
from hyvideo_core.video import numbered_path, read_video, write_video
from hyvideo_core.weights.storage import storage_for

from test_sampling_support import SIZE, embeds
from tiny_models import golden_dit_state, write_dit, write_dit_fp8, write_image, write_lora, write_vae

pytestmark = pytest.mark.usefixtures("one_thread")

TESTS = Path(__file__).parent
NAN, INF = float("nan"), float("inf")


def refused(kind, call, *names):
    """`call()` raises `kind` whose message names each of `names`; returns the error."""
    with pytest.raises(kind) as info:
        call()
    message = str(info.value)
    for name in names:
        assert str(name) in message, message
    return info.value


def run_isolated(code: str, timeout: float = 90) -> dict:
    """Run `code` in a fresh interpreter; what it raised as {type, message} ({"ok": true} if nothing).
    A hang raises subprocess.TimeoutExpired: the test fails, the suite goes on."""
    body = textwrap.indent(textwrap.dedent(code), "    ")
    script = (f"import json, sys\nsys.path.insert(0, {str(TESTS)!r})\ntry:\n{body}\n"
              "    print(json.dumps({'ok': True}))\n"
              "except Exception as error:\n"
              "    print(json.dumps({'type': type(error).__name__, 'message': str(error)}))\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=timeout,
                          cwd=TESTS.parent)
    lines = done.stdout.strip().splitlines()
    assert done.returncode == 0 and lines, done.stderr[-2000:]
    return json.loads(lines[-1])


# -- shared tiny files ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad_inputs")
    f = SimpleNamespace(root=root, dit=write_dit(root / "dit.safetensors"), vae=write_vae(root / "vae.safetensors"),
                        lora=write_lora(root / "style_lora.safetensors"))
    blocker = root / "blocker"
    blocker.write_text("a file where a folder is expected")
    f.blocker = blocker
    return f


@pytest.fixture(scope="module")
def model(files):
    return hyvideo_core.load_transformer(files.dit, dtype=torch.float32, attention="sdpa")


@pytest.fixture(scope="module")
def lora(files):
    return load_lora(files.lora)


@pytest.fixture(scope="module")
def prompts(model):
    return embeds(model.config, negative=False)


def _sample(model, prompts, options=None, **size):
    return sample(model, prompts, options or SamplingOptions(steps=1), **{**SIZE, **size})


# -- dtype, device, source and storage arguments ---------------------------------------------------
LOADER_CASES = {
    "dit dtype int8 (text)": (lambda f: hyvideo_core.load_transformer(f.dit, dtype="int8"), ("dtype", "int8", "bf16")),
    "dit dtype int8 (torch)": (lambda f: hyvideo_core.load_transformer(f.dit, dtype=torch.int8), ("dtype", "int8")),
    "dit dtype float64": (lambda f: hyvideo_core.load_transformer(f.dit, dtype=torch.float64), ("dtype", "float64")),
    "dit dtype number": (lambda f: hyvideo_core.load_transformer(f.dit, dtype=16), ("dtype", "16")),
    "vae dtype fp64": (lambda f: hyvideo_core.load_vae(f.vae, dtype="fp64"), ("dtype", "fp64")),
    "text encoder dtype int8": (lambda f: hyvideo_core.load_text_encoder("llm", "clip", dtype="int8"),
                                ("dtype", "int8")),
    "parse_dtype names its parameter": (lambda f: parse_dtype("double", "precision"), ("precision", "double")),
    "dit device gpu": (lambda f: hyvideo_core.load_transformer(f.dit, device="gpu"), ("device", "gpu")),
    "dit device cuda without CUDA": (lambda f: hyvideo_core.load_transformer(f.dit, device="cuda:7"),
                                     ("device", "cuda")),
    "vae device": (lambda f: hyvideo_core.load_vae(f.vae, device="tpu"), ("device", "tpu")),
    "text encoder device": (lambda f: hyvideo_core.load_text_encoder("llm", "clip", device="npu0"),
                            ("device", "npu0")),
    "dit attention": (lambda f: hyvideo_core.load_transformer(f.dit, attention="flashy"), ("attention", "flashy")),
    "dit storage as a string": (lambda f: hyvideo_core.load_transformer(f.dit, storage="bf16"), ("storage",)),
    "weight format": (lambda f: storage_for("fp7"), ("weight_format", "fp7")),
    "text encoder skip layer": (lambda f: hyvideo_core.load_text_encoder("llm", "clip", hidden_state_skip_layer=1.5),
                                ("hidden_state_skip_layer",)),
}


@pytest.mark.parametrize("case", LOADER_CASES)
def test_loader_arguments_are_refused_by_name(case, files):
    call, names = LOADER_CASES[case]
    refused(InvalidInputError, lambda: call(files), *names)


@pytest.mark.parametrize("source, kind, names", [
    (12345, InvalidInputError, ("checkpoint source", "int")),
    (object(), InvalidInputError, ("checkpoint source", "object")),
    ("nowhere/missing.safetensors", CheckpointError, ("missing.safetensors", "no such file")),
])
def test_a_source_that_is_no_checkpoint_is_named(source, kind, names):
    refused(kind, lambda: hyvideo_core.load_transformer(source), *names)


def test_dtype_names_work_everywhere(files, graph):
    assert hyvideo_core.load_transformer(files.dit, dtype="bf16").compute_dtype == torch.bfloat16
    assert hyvideo_core.load_vae(files.vae, dtype="Float32").dtype == torch.float32
    from node_graphs import CLIP, LLM
    towers = graph[1]["models"] / "text_encoders"      # the harness's tiny single-file towers
    encoder = hyvideo_core.load_text_encoder(towers / LLM, towers / CLIP, towers / "llama_tokenizer",
                                             towers / "clip_tokenizer", dtype="half", device="cpu")
    assert encoder.info.dtype == torch.float16
    assert [parse_dtype(n) for n in ("fp16", "half", "float16", "bfloat16", "fp32", "float", "torch.float32")] == [
        torch.float16, torch.float16, torch.float16, torch.bfloat16, torch.float32, torch.float32, torch.float32]


# -- seeds ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [2**64, -1, 3.0, True, "7"])
def test_seeds_outside_0_to_2_pow_64_are_refused(seed):
    refused(InvalidInputError, lambda: seeded_noise((1, 16, 1, 2, 2), seed), "seed", repr(seed))


def test_a_seed_out_of_range_is_refused_by_sample_before_any_step(model, prompts):
    refused(InvalidInputError, lambda: _sample(model, prompts, SamplingOptions(steps=1, seed=2**64)), "seed")


def test_every_seed_up_to_2_pow_64_minus_1_works_as_comfyui_seeds_it():
    top = seeded_noise((2, 16, 1, 2, 2), 2**64 - 1)          # sample 1 wraps around to seed 0
    assert torch.equal(top[1:], seeded_noise((1, 16, 1, 2, 2), 0))
    assert torch.isfinite(seeded_noise((1, 16, 1, 2, 2), 2**63)).all()
    # ComfyUI's prepare_noise: torch.manual_seed(seed) then randn on the CPU
    expected = torch.randn((1, 16, 1, 2, 2), generator=torch.Generator("cpu").manual_seed(2**63 + 5))
    assert torch.equal(seeded_noise((1, 16, 1, 2, 2), 2**63 + 5), expected)
    assert check_seed(2**64 - 1) == 2**64 - 1


# -- sizes and step counts --------------------------------------------------------------------------
@pytest.mark.parametrize("size, name", [
    (dict(width=0), "width"), (dict(height=-720), "height"), (dict(width=4097), "4096"), (dict(frames=0), "frames"),
    (dict(frames=1026), "1025"), (dict(width="64"), "width"), (dict(height=48.0), "height"),
    (dict(batch_size=0), "batch_size"),
])
def test_sizes_must_be_positive_and_within_the_widget_limits(model, prompts, size, name):
    refused(InvalidInputError, lambda: _sample(model, prompts, **size), name)


def test_a_million_frames_through_the_library_is_refused_up_front():
    outcome = run_isolated("""
        import time, torch, hyvideo_core
        from test_sampling_support import embeds, tiny_model
        model = tiny_model()
        start = time.perf_counter()
        try:
            hyvideo_core.sample(model, embeds(model.config, negative=False), hyvideo_core.SamplingOptions(steps=1),
                                width=16, height=16, frames=1_000_001)
        finally:
            print("seconds", time.perf_counter() - start, file=sys.stderr)
    """, timeout=90)
    assert outcome.get("type") == "InvalidInputError", outcome
    assert "frames" in outcome["message"] and "1000001" in outcome["message"] and "1025" in outcome["message"]


# -- sampling options: finite numbers, known names --------------------------------------------------
OPTION_CASES = [
    (dict(steps=0), "steps"), (dict(steps=1001), "1000"), (dict(steps=2.5), "steps"),
    (dict(shift=NAN), "shift"), (dict(shift=INF), "shift"), (dict(shift=0.0), "shift"), (dict(shift="7"), "shift"),
    (dict(embedded_guidance=NAN), "embedded_guidance"), (dict(embedded_guidance=INF), "embedded_guidance"),
    (dict(embedded_guidance=-1.0), "embedded_guidance"), (dict(cfg_scale=NAN), "cfg_scale"),
    (dict(cfg_scale=INF), "cfg_scale"), (dict(denoise=NAN), "denoise"), (dict(denoise=0.0), "denoise"),
    (dict(denoise=1.5), "denoise"), (dict(cfg_mode="parallel"), "cfg_mode"), (dict(solver="heun"), "solver"),
    (dict(start_step=0.5), "start_step"), (dict(end_step="2"), "end_step"),
]


@pytest.mark.parametrize("change, name", OPTION_CASES, ids=[f"{k}={v!r}" for (c, _) in OPTION_CASES for k, v in c.items()])
def test_sampling_options_are_checked_before_any_step(model, prompts, change, name):
    hooks = SamplingHooks(progress=lambda *_: pytest.fail("a step ran"))
    refused(InvalidInputError, lambda: sample(model, prompts, SamplingOptions(**{"steps": 2, **change}),
                                              hooks=hooks, **SIZE), name)


@pytest.mark.parametrize("make", [lambda: TeaCache(threshold=INF), lambda: FirstBlockCache(threshold=INF),
                                  lambda: FirstBlockCache(threshold=NAN)], ids=["teacache inf", "fbc inf", "fbc nan"])
def test_cache_thresholds_must_be_finite(model, prompts, make):
    refused(InvalidInputError, lambda: sample(model, prompts, SamplingOptions(steps=2), cache=make(), **SIZE),
            "threshold")


# -- LoRA strengths and block strengths -------------------------------------------------------------
@pytest.mark.parametrize("strength", [NAN, INF, -INF, "strong", None])
def test_lora_strengths_must_be_finite_and_name_the_lora(model, lora, strength):
    refused(InvalidInputError, lambda: LoraSpec(lora, strength), "style_lora", "strength")
    refused(InvalidInputError, lambda: apply_loras(model, [(lora, strength)]), "style_lora", "strength")
    assert getattr(model, "lora_state", None) is None      # nothing was applied


@pytest.mark.parametrize("blocks, named", [("double:0=nan", "double:0=nan"), ("single:*=inf", "single:*=inf"),
                                           ("other=-inf", "other=-inf"), ("default=NaN", "default=NaN")])
def test_block_strength_text_must_be_finite(model, lora, blocks, named):
    refused(InvalidInputError, lambda: apply_loras(model, [(lora, 1.0, blocks)]), named)


@pytest.mark.parametrize("make, named", [
    (lambda: BlockStrengths(double={0: INF}), "double block 0"), (lambda: BlockStrengths(single={1: NAN}), "single"),
    (lambda: BlockStrengths(other=NAN), "other"), (lambda: BlockStrengths(double_rest=INF), "double_rest"),
])
def test_block_strength_values_must_be_finite(make, named):
    refused(InvalidInputError, make, "block strengths", named)


def test_set_strengths_refuses_nan_naming_the_lora_and_keeps_the_applied_one(model, lora):
    apply_loras(model, [(lora, 0.5)])
    try:
        refused(InvalidInputError, lambda: set_strengths(model, {lora.name: NAN}), "style_lora", "strength")
        refused(InvalidInputError, lambda: set_strengths(model, {lora.name: (1.0, "double:1=inf")}), "double:1=inf")
        refused(InvalidInputError, lambda: set_strengths(model, "0.5"), "set_strengths")
        assert model.lora_state.specs[0].strength == 0.5
    finally:
        remove_loras(model)
    refused(InvalidInputError, lambda: apply_loras(model, [lora], mode="fast"), "mode", "fast")


def test_a_lora_file_with_nan_weights_is_refused_naming_the_file_and_tensor(files, tmp_path):
    state = load_file(str(files.lora))
    key = sorted(state)[3]
    state[key] = torch.full_like(state[key], NAN)
    path = tmp_path / "nan_lora.safetensors"
    save_file(state, str(path))
    refused(CheckpointError, lambda: load_lora(path), str(path), key)
    refused(InvalidInputError, lambda: load_lora(42), "checkpoint source", "int")


# -- checkpoints: non-finite weights, damaged headers -----------------------------------------------
def _save(state, path: Path) -> Path:
    save_file(state, str(path))
    return path


def test_a_dit_whose_weights_are_all_nan_is_refused_at_load_naming_the_file_and_first_tensor(tmp_path):
    path = _save({k: torch.full_like(v, NAN).to(torch.bfloat16) for k, v in golden_dit_state().items()},
                 tmp_path / "nan_dit.safetensors")
    error = refused(CheckpointError, lambda: hyvideo_core.load_transformer(path), str(path), "NaN", "tensor '")
    assert error.args[0].split("tensor '")[1].split("'")[0] in golden_dit_state()


def test_a_text_encoder_with_a_nan_weight_is_refused_at_load_naming_the_file_and_tensor(tmp_path):
    from tiny_models import write_clip, write_llm
    llm, clip = write_llm(tmp_path / "llava_llama3_fp16.safetensors"), write_clip(tmp_path / "clip_l.safetensors")
    state = load_file(str(clip))
    key = next(k for k in state if k.endswith("mlp.fc1.weight"))
    state[key][0, 0] = NAN
    _save(state, clip)
    refused(CheckpointError, lambda: hyvideo_core.load_text_encoder(llm, clip, tokenizer=tmp_path / "llama_tokenizer",
                                                                    clip_tokenizer=tmp_path / "clip_tokenizer",
                                                                    device="cpu"), str(clip), key, "NaN")


@pytest.mark.parametrize("value", [INF, NAN])
def test_one_bad_tensor_among_good_ones_is_named(tmp_path, value):
    state = {k: v.to(torch.bfloat16) for k, v in golden_dit_state().items()}
    key = "double_blocks.1.img_attn_proj.weight"
    state[key][3, 5] = value
    path = _save(state, tmp_path / "one_bad.safetensors")
    refused(CheckpointError, lambda: hyvideo_core.load_transformer(path, dtype="fp32"), str(path), key, "1 NaN")


@pytest.mark.parametrize("code", [0x7F, 0xFF], ids=["nan", "negative nan"])
def test_fp8_bytes_that_are_nan_are_found_without_decoding(tmp_path, code):
    path = write_dit_fp8(tmp_path / "dit_fp8_e4m3fn.safetensors")
    state = load_file(str(path))
    key = "single_blocks.1.linear1.weight"
    raw = state[key].view(torch.uint8).clone()
    raw[0, 0] = code
    state[key] = raw.view(torch.float8_e4m3fn)
    _save(state, path)
    refused(CheckpointError, lambda: hyvideo_core.load_transformer(path), str(path), key)


@pytest.mark.filterwarnings("ignore:invalid value encountered in cast")   # the gguf writer quantising NaN
def test_gguf_block_scales_that_are_nan_are_named(tmp_path):
    from gguf import GGMLQuantizationType
    from gguf_write import write_gguf
    state = golden_dit_state()
    key = "double_blocks.0.img_mlp.fc1.weight"
    state[key] = state[key].clone()
    state[key][0, :32] = NAN
    path = write_gguf(state, tmp_path / "nan.gguf", GGMLQuantizationType.Q8_0)
    refused(CheckpointError, lambda: hyvideo_core.load_transformer(path), str(path), key, "scales")


def test_a_vae_with_nan_weights_is_refused_naming_the_file_and_tensor(files, tmp_path):
    state = load_file(str(files.vae))
    key = "decoder.conv_in.conv.bias"
    state[key] = torch.full_like(state[key], INF)
    path = _save(state, tmp_path / "inf_vae.safetensors")
    refused(CheckpointError, lambda: hyvideo_core.load_vae(path), str(path), key)


@pytest.fixture(scope="module")
def gguf_bytes(tmp_path_factory):
    from tiny_models import write_dit_gguf
    return write_dit_gguf(tmp_path_factory.mktemp("gguf") / "whole.gguf").read_bytes()


@pytest.mark.parametrize("cut", [24, 200, 2000, -4000], ids=["after the header", "in the metadata",
                                                            "in the tensor table", "in the data"])
def test_a_gguf_cut_short_is_a_checkpoint_error_naming_the_file(gguf_bytes, tmp_path, cut):
    path = tmp_path / "cut.gguf"
    path.write_bytes(gguf_bytes[:cut])
    refused(CheckpointError, lambda: hyvideo_core.load_transformer(path), str(path), "GGUF")


@pytest.mark.parametrize("header, named", [
    ({"a": 1}, "'a'"), ({"__metadata__": {}, "w": []}, "'w'"), ({"w": {"dtype": "F32", "shape": [2], "data_offsets": [8, 0]}}, "'w'"),
    ({"w": {"dtype": "F32", "shape": "2", "data_offsets": [0, 8]}}, "'w'"),
    ({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0]}}, "'w'"),
    ({"w": {"shape": [2], "data_offsets": [0, 8]}}, "'w'"),
])
def test_well_formed_json_headers_with_malformed_entries_are_checkpoint_errors(tmp_path, header, named):
    text = json.dumps(header).encode()
    path = tmp_path / "odd.safetensors"
    path.write_bytes(struct.pack("<Q", len(text)) + text + b"\0" * 16)
    refused(CheckpointError, lambda: hyvideo_core.load_transformer(path), str(path), named)


def test_a_truncated_safetensors_and_a_broken_shard_index_are_named(files, tmp_path):
    data = files.dit.read_bytes()
    path = tmp_path / "half.safetensors"
    path.write_bytes(data[: len(data) // 2])
    refused(CheckpointError, lambda: hyvideo_core.load_transformer(path), str(path), "truncated")
    folder = tmp_path / "sharded"
    folder.mkdir()
    (folder / "model.safetensors.index.json").write_text('{"metadata": {}}')
    refused(CheckpointError, lambda: hyvideo_core.load_transformer(folder), "model.safetensors.index.json",
            "weight_map")


# -- NaN during sampling ------------------------------------------------------------------------------
def test_a_nan_velocity_names_the_step_the_first_bad_module_and_the_loras(model, prompts, lora):
    apply_loras(model, [(lora, 0.7)])
    layer = model.single_blocks[0].linear2
    hook = layer.register_forward_hook(lambda _m, _a, out: out * INF * 0)   # inf * 0 = NaN
    try:
        refused(NumericsError, lambda: _sample(model, prompts, SamplingOptions(steps=3)),
                "step 1 of 3", "'single_blocks.0.linear2'", "style_lora x0.7")
    finally:
        hook.remove()
        remove_loras(model)


def test_an_overflowing_cfg_combination_is_told_apart_from_a_bad_module(model):
    refused(NumericsError, lambda: _sample(model, embeds(model.config), SamplingOptions(steps=2, cfg_scale=1e300)),
            "step 1 of 2", "guidance combination (cfg_scale) overflowed", "No LoRA")


# -- the run layer: what cannot fit is refused before the first step -------------------------------
@pytest.fixture(scope="module")
def loaded(files):
    from hyvideo_core.run import load_dit
    cpu = torch.device("cpu")
    return load_dit(files.dit, dtype=torch.float32, weight_format="auto", attention="sdpa", main=cpu, offload=cpu,
                    swapping=False)


def test_a_request_that_cannot_fit_is_refused_with_the_estimate_and_the_nearest_fits(loaded, monkeypatch):
    import hyvideo_core.run.stages as stages
    from hyvideo_core.run import LocalHost, sample_video
    monkeypatch.setattr(stages, "device_capacity", lambda device, total=None: 2**30)   # "1 GiB of RAM"
    hooks = SamplingHooks(progress=lambda *_: pytest.fail("a step ran"))
    error = refused(OutOfMemoryError, lambda: sample_video(
        loaded, embeds(loaded.transformer.config, negative=False), SamplingOptions(steps=1), size=(1024, 1024, 129),
        hooks=hooks, host=LocalHost("cpu")), "1024x1024x129", "cannot fit", "GiB", "1.0 GiB of host RAM",
        "largest frame count that fits is", "largest size of the same aspect")
    fits = error.suggestion["fits"]
    assert fits[0]["width"] == 1024 and 1 <= fits[0]["frames"] < 129 and fits[1]["width"] < 1024


def test_a_request_larger_than_the_host_ram_is_refused_for_real():
    outcome = run_isolated("""
        import resource, torch
        from hyvideo_core.run import LocalHost, load_dit, sample_video
        from hyvideo_core.run.memory import device_capacity
        from hyvideo_core.sampling import SamplingOptions
        from golden_dit_weights import dit_weights_path
        from test_sampling_support import embeds
        from tiny_models import write_dit
        import tempfile, pathlib
        if device_capacity(torch.device("cpu")) > 100 * 2**30:
            raise SystemExit(print(json.dumps({"skip": "more than 100 GiB of RAM"})))
        resource.setrlimit(resource.RLIMIT_AS, (24 * 2**30, 24 * 2**30))   # a broken check dies, not the machine
        path = write_dit(pathlib.Path(tempfile.mkdtemp()) / "dit.safetensors")
        cpu = torch.device("cpu")
        dit = load_dit(path, dtype=torch.float32, weight_format="auto", attention="sdpa", main=cpu, offload=cpu,
                       swapping=False)
        sample_video(dit, embeds(dit.transformer.config, negative=False), SamplingOptions(steps=1),
                     size=(4096, 4096, 1025), host=LocalHost("cpu"))
    """, timeout=90)
    if "skip" in outcome:
        pytest.skip(outcome["skip"])
    assert outcome.get("type") == "OutOfMemoryError", outcome
    assert "host RAM" in outcome["message"] and "4096x4096x1025" in outcome["message"]


# -- videos and images in, videos out ---------------------------------------------------------------
@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    import imageio_ffmpeg
    root = tmp_path_factory.mktemp("clips")
    good = write_video(torch.rand(4, 16, 16, 3), root / "good.mp4", fps=8)
    data = good.read_bytes()
    (root / "empty.mp4").write_bytes(b"")
    (root / "junk.mp4").write_bytes(os.urandom(2000))
    (root / "cut.mp4").write_bytes(data[: len(data) // 3])
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-loglevel", "error", "-f", "lavfi", "-i",
                    "anullsrc=r=8000:cl=mono", "-t", "0.2", str(root / "no_frames.mp4")], check=True, timeout=60)
    return root


@pytest.mark.parametrize("name", ["empty.mp4", "junk.mp4", "cut.mp4", "no_frames.mp4", "missing.mp4"])
def test_unreadable_videos_are_named(clips, name):
    refused(InvalidInputError, lambda: read_video(clips / name), name)


def _read_only_folder(tmp_path: Path) -> Path:
    """A folder nobody here can create files in: chmod 0o555 (not root) or /sys (root's read-only place)."""
    if os.geteuid() != 0:
        folder = tmp_path / "read_only"
        folder.mkdir()
        folder.chmod(0o555)
        return folder
    try:
        Path("/sys/.hyvideo_probe").touch()
    except OSError:
        return Path("/sys")
    pytest.skip("running as root without a read-only folder")


@pytest.mark.parametrize("extension", [".mp4", ".gif"])
def test_writing_into_a_read_only_folder_is_refused_naming_the_path_and_leaves_nothing(tmp_path, extension):
    folder = _read_only_folder(tmp_path)
    before = set(os.listdir(folder))
    target = folder / f"clip{extension}"
    refused(InvalidInputError, lambda: write_video(torch.rand(2, 16, 16, 3), target), str(target), "no partial file")
    assert set(os.listdir(folder)) == before


@pytest.mark.parametrize("where, named", [("blocker/clip.mp4", "blocker"), ("blocker/deeper/clip.gif", "blocker")])
def test_writing_where_a_parent_is_a_file_is_refused(files, where, named):
    refused(InvalidInputError, lambda: write_video(torch.rand(2, 16, 16, 3), files.root / where),
            str(files.blocker), "is a file")


@pytest.mark.parametrize("kwargs, named", [
    (dict(fps=NAN), "fps"), (dict(fps=0), "fps"), (dict(crf=99), "crf"), (dict(format="avi"), "avi"),
    (dict(frames=torch.rand(16, 16, 3)), "frames"), (dict(frames=torch.rand(0, 16, 16, 3)), "frames"),
])
def test_bad_write_options_are_named(tmp_path, kwargs, named):
    frames = kwargs.pop("frames", torch.rand(2, 16, 16, 3))
    refused(InvalidInputError, lambda: write_video(frames, tmp_path / "clip.mp4", **kwargs), named)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("prefix, named", [("blocker/x", "is a file"), ("../outside", "outside"), ("", "prefix"),
                                           (".", "prefix")])
def test_bad_filename_prefixes_are_named(files, prefix, named):
    refused(InvalidInputError, lambda: numbered_path(files.root, prefix, ".mp4"), "filename_prefix", named)


def test_an_output_folder_that_only_looks_writable_is_refused_up_front(tmp_path):
    from hyvideo_core.run import check_output
    folder = _read_only_folder(tmp_path)
    refused(InvalidInputError, lambda: check_output(folder / "x.mp4"), "--output", str(folder), "not writable")


# -- the CLI (subprocesses, started together) -------------------------------------------------------
CLI_CASES = {
    "plan width 0": (["plan", "--width", "0"], "--width 0"),
    "plan height -720": (["plan", "--height", "-720"], "--height -720"),
    "plan frames 0": (["plan", "--frames", "0"], "--frames 0"),
    "plan width 4097": (["plan", "--width", "4097"], "--width 4097"),
    "plan swap abc": (["plan", "--swap", "abc"], "--swap"),
    "plan vram nan": (["plan", "--vram-gb", "nan"], "--vram-gb"),
    "seed 2**64": (["generate", "--demo", "--seed", str(2**64)], "--seed"),
    "seed -1": (["generate", "--demo", "--seed", "-1"], "--seed"),
    "shift nan": (["generate", "--demo", "--shift", "nan"], "--shift"),
    "guidance inf": (["generate", "--demo", "--guidance", "inf"], "--guidance"),
    "steps 0": (["generate", "--demo", "--steps", "0"], "--steps"),
    "a million frames": (["generate", "--demo", "--frames", "1000001"], "--frames"),
    "cache threshold inf": (["generate", "--demo", "--cache", "teacache", "--cache-threshold", "inf"],
                            "--cache-threshold"),
    "fps 0": (["generate", "--demo", "--fps", "0"], "--fps"),
    "output into a read-only folder": (["generate", "--demo", "-o", "{read_only}/x.mp4"], "--output"),
}


@pytest.fixture(scope="module", autouse=True)
def cli_started(tmp_path_factory):
    """Every CLI case started with the module's first test (each is ~3 s of interpreter start-up), so they
    run while the in-process cases do; `cli_runs` collects them."""
    import tempfile
    from hyvideo_core.demo import write_demo_models
    write_demo_models(Path(tempfile.gettempdir()) / "hyvideo_demo_models")   # built once, not by every process
    read_only = _read_only_folder(tmp_path_factory.mktemp("cli"))
    cwd = tmp_path_factory.mktemp("cli_cwd")
    started = {case: subprocess.Popen([sys.executable, "-m", "hyvideo_core",
                                       *(a.format(read_only=read_only) for a in args)], cwd=cwd, text=True,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE)
               for case, (args, _) in CLI_CASES.items()}
    yield started
    for process in started.values():
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert not list(cwd.iterdir()), "a refused command wrote a file"


@pytest.fixture(scope="module")
def cli_runs(cli_started):
    runs = {}
    for case, process in cli_started.items():
        try:
            out, err = process.communicate(timeout=240)
        except subprocess.TimeoutExpired:
            process.kill()
            out, err = process.communicate()
            err += "\n<timed out>"
        runs[case] = (process.returncode, out, err)
    return runs


@pytest.mark.parametrize("case", CLI_CASES)
def test_the_cli_refuses_bad_options_with_exit_code_2_naming_them(cli_runs, case):
    code, out, err = cli_runs[case]
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2 and errors, f"exit {code}\n{err[-1500:]}"
    assert CLI_CASES[case][1] in errors[0], errors[0]
    assert "Traceback" not in err and out == ""


# -- the nodes: direct calls (a script, or an API prompt built by hand) -----------------------------
@pytest.fixture(scope="module")
def pack():
    from harness import load_pack
    return load_pack().nodes


def _node_call(pack, module, cls, method, **inputs):
    return getattr(getattr(getattr(pack, module), cls)(), method)(**inputs)


NODE_CASES = {
    "model loader precision": ("loaders", "HyVideoModelLoader", "load",
                               dict(model_name="x", base_precision="fp8", weight_format="auto", attention="sdpa"),
                               ("base_precision", "'fp8'", "bf16")),
    "model loader weight format": ("loaders", "HyVideoModelLoader", "load",
                                   dict(model_name="x", base_precision="bf16", weight_format="int4", attention="sdpa"),
                                   ("weight_format", "int4", "fp8_scaled")),
    "model loader attention": ("loaders", "HyVideoModelLoader", "load",
                               dict(model_name="x", base_precision="bf16", weight_format="auto", attention="xformers"),
                               ("attention", "xformers", "sdpa")),
    "vae loader precision": ("loaders", "HyVideoVAELoader", "load", dict(vae_name="x", precision="fp64"),
                             ("precision", "fp64", "auto")),
    "text loader storage": ("loaders", "HyVideoTextEncoderLoader", "load",
                            dict(llm_name="a", clip_name="b", precision="auto", llm_format="int4", device="main"),
                            ("llm_format", "int4")),
    "text loader device": ("loaders", "HyVideoTextEncoderLoader", "load",
                           dict(llm_name="a", clip_name="b", precision="auto", llm_format="auto", device="gpu"),
                           ("device", "gpu", "cpu")),
    "sampler solver": ("sampling", "HyVideoSampler", "sample",
                       dict(model=None, embeds=None, width=32, height=32, frames=5, steps=2, shift=7.0,
                            embedded_guidance=6.0, true_cfg_scale=1.0, cfg_mode="batched", seed=0, denoise=1.0,
                            solver="heun"), ("solver", "heun", "euler")),
    "sampler cfg mode": ("sampling", "HyVideoSampler", "sample",
                         dict(model=None, embeds=None, width=32, height=32, frames=5, steps=2, shift=7.0,
                              embedded_guidance=6.0, true_cfg_scale=1.0, cfg_mode="both", seed=0, denoise=1.0,
                              solver="euler"), ("cfg_mode", "both", "sequential")),
    "save format": ("video", "HyVideoSaveVideo", "save",
                    dict(images=torch.rand(2, 16, 16, 3), filename_prefix="x", format="avi", fps=8.0, crf=19),
                    ("format", "avi", "mp4")),
    "save images": ("video", "HyVideoSaveVideo", "save",
                    dict(images=torch.rand(16, 16, 3), filename_prefix="x", format="mp4", fps=8.0, crf=19),
                    ("images", "[16, 16, 3]")),
    "load video nth": ("media", "HyVideoLoadVideo", "load",
                       dict(video="clip.mp4", frame_load_cap=0, skip_first_frames=0, select_every_nth=0,
                            resize_width=0, resize_height=0), ("select_every_nth", "0")),
    "load video cap": ("media", "HyVideoLoadVideo", "load",
                       dict(video="clip.mp4", frame_load_cap=-1, skip_first_frames=0, select_every_nth=1,
                            resize_width=0, resize_height=0), ("frame_load_cap", "-1")),
}


@pytest.mark.parametrize("case", NODE_CASES)
def test_direct_node_calls_with_unknown_choices_name_the_input_and_the_choices(pack, case):
    module, cls, method, inputs, names = NODE_CASES[case]
    refused(InvalidInputError, lambda: _node_call(pack, module, cls, method, **inputs), *names)


# -- the nodes in a prompt (the harness runs them as ComfyUI does) ---------------------------------
@pytest.fixture(scope="module")
def graph(tmp_path_factory):
    from node_graphs import tiny_runner
    runner, folders = tiny_runner(tmp_path_factory.mktemp("graph"), tmp_path_factory.mktemp("graph_models"))
    data = (folders["input"] / "clip.mp4").read_bytes()
    (folders["input"] / "junk.mp4").write_bytes(os.urandom(3000))
    (folders["input"] / "empty.webm").write_bytes(b"")
    (folders["input"] / "cut.mp4").write_bytes(data[: len(data) // 3])
    (folders["input"] / "junk.png").write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(200))
    png = write_image(folders["input"] / "whole.png").read_bytes()
    (folders["input"] / "cut.png").write_bytes(png[: len(png) // 2])
    folders["output"].mkdir(parents=True, exist_ok=True)
    (folders["output"] / "blocker").write_text("a file")
    return runner, folders


def _error(result, node_id):
    assert result.status == "error" and result.error["node_id"] == node_id, result.describe()
    return result.error["exception_type"], result.error["exception_message"]


@pytest.mark.parametrize("name", ["junk.mp4", "empty.webm", "cut.mp4"])
def test_load_video_with_a_damaged_file_is_a_clear_node_error(graph, name):
    from node_graphs import node
    runner, _ = graph
    prompt = {"1": node("HyVideoLoadVideo", video=name, frame_load_cap=0, skip_first_frames=0, select_every_nth=1,
                        resize_width=0, resize_height=0),
              "2": node("HyVideoSaveVideo", images=["1", 0], filename_prefix="v", format="gif", fps=8.0, crf=0)}
    kind, message = _error(runner.run(prompt), "1")
    assert kind == "InvalidInputError" and name in message


@pytest.mark.parametrize("name", ["junk.png", "cut.png"])
def test_load_image_with_a_damaged_file_is_a_clear_node_error(graph, name):
    from node_graphs import node
    runner, _ = graph
    prompt = {"1": node("HyVideoLoadImage", image=name),
              "2": node("HyVideoSaveVideo", images=["1", 0], filename_prefix="i", format="gif", fps=8.0, crf=0)}
    kind, message = _error(runner.run(prompt), "1")
    assert kind == "InvalidInputError" and name in message


def test_save_video_under_a_file_names_the_path(graph):
    from node_graphs import node
    runner, folders = graph
    prompt = {"1": node("HyVideoLoadImage", image="whole.png"),
              "2": node("HyVideoSaveVideo", images=["1", 0], filename_prefix="blocker/clip", format="gif", fps=8.0,
                        crf=0)}
    kind, message = _error(runner.run(prompt), "2")
    assert kind == "InvalidInputError" and str(folders["output"] / "blocker") in message


def test_a_non_finite_lora_strength_in_a_prompt_names_the_lora(graph):
    from node_graphs import LORA, t2v_prompt
    runner, _ = graph
    kind, message = _error(runner.run(t2v_prompt(loras=[(LORA, NAN)])), "20")   # NaN passes min/max checks
    assert kind == "InvalidInputError" and "style_lora" in message and "strength" in message
    result = runner.run(t2v_prompt(loras=[(LORA, INF)]))                       # inf is above the widget's max
    assert result.status == "invalid" and "strength" in result.node_errors["20"]["errors"][0]["details"]


def test_a_sampler_request_that_cannot_fit_is_refused_before_the_first_step(graph, monkeypatch):
    import hyvideo_core.run.stages as stages
    from node_graphs import SAMPLER, t2v_prompt
    runner, _ = graph
    monkeypatch.setattr(stages, "device_capacity", lambda device, total=None: 2**30)
    result = runner.run(t2v_prompt(width=1024, height=1024, frames=129, seed=11))
    kind, message = _error(result, SAMPLER)
    assert kind == "OutOfMemoryError" and "1024x1024x129 cannot fit" in message and "GiB" in message
    assert not [p for p in result.progress if p[0] == SAMPLER]


def test_finite_checks_cost_no_false_alarm_on_good_files(files, model):
    """The checks refuse only what is bad: the tiny files load, and a normal run samples."""
    assert math.isfinite(float(hyvideo_core.load_vae(files.vae).decoder.conv_in.conv.weight.float().sum()))
    assert hyvideo_core.load_transformer(files.dit, dtype="fp32").compute_dtype == torch.float32
