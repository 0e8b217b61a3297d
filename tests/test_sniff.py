"""sniff_model_file: each model file checked for its kind and soundness from headers only."""
from __future__ import annotations

import ctypes
import json
import os
import struct
import time
import zipfile
from pathlib import Path

import pytest
import torch
from gguf import GGMLQuantizationType as Q
from safetensors.torch import load_file, save_file

from hyvideo_core.demo import demo_dit_state, demo_vae_state, write_demo_models
from hyvideo_core.errors import CheckpointError, InvalidInputError, UnknownFormatError
from hyvideo_core.run.sniff import ROLES, SniffedFile, sniff_model_file
from hyvideo_core.weights.comfy_names import official_to_comfy
from hyvideo_core.weights.diffusers_names import to_diffusers
from tiny_models import write_lora

from gguf_write import write_gguf


def _message_names(exc_info, parameter: str, path: Path) -> str:
    message = str(exc_info.value)
    assert parameter in message, message
    assert path.name in message, message
    return message


def _sniff_fails(path, role, error, *words, parameter=None):
    parameter = parameter or f"--{role}"
    with pytest.raises(error) as exc_info:
        sniff_model_file(path, role, parameter=parameter)
    message = _message_names(exc_info, parameter, Path(path))
    for word in words:
        assert word in message, message
    return message


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return write_demo_models(tmp_path_factory.mktemp("demo"))


@pytest.fixture(scope="module")
def files(demo, tmp_path_factory):
    """One real tiny single file per kind."""
    tmp = tmp_path_factory.mktemp("kinds")
    return {"dit": demo.dit, "vae": demo.vae / "diffusion_pytorch_model.safetensors",
            "llm": demo.llm / "model.safetensors", "clip": demo.clip / "model.safetensors",
            "lora": write_lora(tmp / "hunyuan_lora.safetensors")}


# -- accepted ------------------------------------------------------------------------------------
def _comfy_dit(tmp: Path) -> Path:
    path = tmp / "comfy_dit.safetensors"
    save_file({"model.diffusion_model." + official_to_comfy(k): v.to(torch.bfloat16)
               for k, v in demo_dit_state().items()}, str(path))
    return path


def _diffusers_dit(tmp: Path) -> Path:
    folder = tmp / "transformer"
    folder.mkdir()
    save_file(to_diffusers(demo_dit_state(), hidden=64), str(folder / "diffusion_pytorch_model.safetensors"))
    (folder / "config.json").write_text(json.dumps({"_class_name": "HunyuanVideoTransformer3DModel"}))
    return tmp  # a pipeline folder: the DiT is in transformer/


def _fp8_scaled_dit(tmp: Path) -> Path:
    state = {}
    for key, value in demo_dit_state().items():
        if key.startswith("double_blocks.") and key.endswith(".weight") and value.ndim == 2:
            state[key] = value.to(torch.float8_e4m3fn)
            state[key[: -len("weight")] + "scale_weight"] = torch.ones(())
        else:
            state[key] = value.to(torch.bfloat16)
    state["scaled_fp8"] = torch.zeros(0, dtype=torch.float8_e4m3fn)
    save_file(state, str(tmp / "dit_fp8_scaled.safetensors"))
    return tmp / "dit_fp8_scaled.safetensors"


def _gguf_dit(tmp: Path) -> Path:
    return write_gguf(demo_dit_state(), tmp / "hunyuan-video-t2v-720p-Q8_0.gguf", Q.Q8_0)


def _tencent_vae(tmp: Path) -> Path:
    folder = tmp / "vae"
    folder.mkdir()
    torch.save({"state_dict": {"vae." + k: v for k, v in demo_vae_state().items()}}, folder / "pytorch_model.pt")
    return folder  # Tencent's vae/ folder holds pytorch_model.pt (+ config.json)


def _sharded_llm(tmp: Path, demo) -> Path:
    folder = tmp / "llm_sharded"
    folder.mkdir()
    state = load_file(str(demo.llm / "model.safetensors"))
    keys = sorted(state)
    shards = {"model-00001-of-00002.safetensors": keys[::2], "model-00002-of-00002.safetensors": keys[1::2]}
    for name, names in shards.items():
        save_file({k: state[k] for k in names}, str(folder / name))
    (folder / "model.safetensors.index.json").write_text(json.dumps(
        {"weight_map": {k: name for name, names in shards.items() for k in names}}))
    (folder / "config.json").write_text((demo.llm / "config.json").read_text())
    return folder


def _kohya_lora(tmp: Path, lora: Path) -> Path:
    renamed = {}
    for key, value in load_file(str(lora)).items():
        module, role = key[len("diffusion_model."):].rsplit(".lora_", 1)
        role = {"A.weight": "lora_down.weight", "B.weight": "lora_up.weight"}[role]
        renamed[f"lora_unet_{module.replace('.', '_')}.{role}"] = value
    path = tmp / "kohya_lora.safetensors"
    save_file(renamed, str(path))
    return path


def _peft_folder(tmp: Path, lora: Path) -> Path:
    folder = tmp / "peft_adapter"
    folder.mkdir()
    state = {"base_model.model." + k[len("diffusion_model."):]: v for k, v in load_file(str(lora)).items()}
    save_file(state, str(folder / "adapter_model.safetensors"))
    (folder / "adapter_config.json").write_text(json.dumps({"r": 4, "lora_alpha": 4}))
    return folder


ACCEPTED = {
    "dit file": ("dit", lambda t, d, f: f["dit"], "safetensors", ["HunyuanVideo DiT", "official names", "fp32"]),
    "dit ComfyUI-prefixed bf16": ("dit", lambda t, d, f: _comfy_dit(t), "safetensors",
                                  ["comfy names under 'model.diffusion_model.'", "bf16"]),
    "dit diffusers pipeline folder": ("dit", lambda t, d, f: _diffusers_dit(t), "folder", ["diffusers names"]),
    "dit fp8_scaled": ("dit", lambda t, d, f: _fp8_scaled_dit(t), "safetensors", ["fp8_scaled", "fp8_e4m3fn"]),
    "dit GGUF": ("dit", lambda t, d, f: _gguf_dit(t), "gguf", ["HunyuanVideo DiT", "GGUF", "Q8_0"]),
    "vae folder": ("vae", lambda t, d, f: d.vae, "folder", ["HunyuanVideo 3D VAE", "180 tensors"]),
    "vae file": ("vae", lambda t, d, f: f["vae"], "safetensors", ["HunyuanVideo 3D VAE"]),
    "vae Tencent pytorch_model.pt": ("vae", lambda t, d, f: _tencent_vae(t), "folder", ["under 'vae.'"]),
    "vae Tencent .pt file": ("vae", lambda t, d, f: _tencent_vae(t) / "pytorch_model.pt", "pt", ["3D VAE"]),
    "llm folder": ("llm", lambda t, d, f: d.llm, "folder", ["Llama text encoder", "5 layers", "hidden 64"]),
    "llm single file": ("llm", lambda t, d, f: f["llm"], "safetensors", ["Llama text encoder"]),
    "llm sharded folder": ("llm", lambda t, d, f: _sharded_llm(t, d), "folder", ["Llama", "48 tensors"]),
    "clip folder": ("clip", lambda t, d, f: d.clip, "folder", ["CLIP text encoder", "2 layers", "hidden 32"]),
    "clip single file": ("clip", lambda t, d, f: f["clip"], "safetensors", ["CLIP text encoder"]),
    "lora ComfyUI names": ("lora", lambda t, d, f: f["lora"], "safetensors",
                           ["HunyuanVideo LoRA", "official names", "10 modules", "rank 4", "20 tensors", "bf16"]),
    "lora kohya": ("lora", lambda t, d, f: _kohya_lora(t, f["lora"]), "safetensors", ["official underscored"]),
    "lora PEFT folder": ("lora", lambda t, d, f: _peft_folder(t, f["lora"]), "folder", ["HunyuanVideo LoRA"]),
}


@pytest.mark.parametrize("case", list(ACCEPTED))
def test_each_role_accepts_its_files(case, demo, files, tmp_path):
    role, make, container, words = ACCEPTED[case]
    path = make(tmp_path, demo, files)
    found = sniff_model_file(path, role, parameter=f"--{role}")
    assert isinstance(found, SniffedFile)
    assert (found.path, found.role, found.container) == (path, role, container)
    for word in words:
        assert word in found.what, found.what
    assert found.tensors > 0
    weights = [path] if path.is_file() else [p for p in path.rglob("*") if p.suffix in (".safetensors", ".pt")]
    assert found.nbytes == sum(p.stat().st_size for p in weights)


def test_counts_are_those_of_the_file(files):
    found = sniff_model_file(files["dit"], "dit", parameter="--dit")
    assert found.tensors == len(load_file(str(files["dit"])))
    assert found.nbytes == files["dit"].stat().st_size


# -- the wrong kind ----------------------------------------------------------------------------
@pytest.mark.parametrize("kind, role", [(k, r) for k in ROLES for r in ROLES if k != r])
def test_wrong_kind_names_what_the_file_is_and_where_it_belongs(kind, role, files):
    message = _sniff_fails(files[kind], role, UnknownFormatError, f"It belongs in --{kind}.")
    assert "Choose " in message


@pytest.mark.parametrize("kind", ["vae", "llm", "clip"])
def test_wrong_kind_folders(kind, demo):
    role = {"vae": "dit", "llm": "clip", "clip": "llm"}[kind]
    message = _sniff_fails(getattr(demo, kind), role, UnknownFormatError, f"It belongs in --{kind}.",
                           "this folder is")
    assert "not " in message


def test_node_parameter_names_get_a_plain_hint(files):
    message = _sniff_fails(files["vae"], "dit", UnknownFormatError, "It belongs in the vae input.",
                           parameter="unet_name")
    assert "--" not in message


def test_other_models_are_described(tmp_path):
    sd_vae = tmp_path / "sd_vae.safetensors"
    save_file({"decoder.conv_in.weight": torch.zeros(4, 4, 3, 3), "encoder.conv_in.weight": torch.zeros(4, 3, 3, 3)},
              str(sd_vae))
    _sniff_fails(sd_vae, "vae", UnknownFormatError, "2D image VAE")
    sd_unet = tmp_path / "sd15.safetensors"
    save_file({"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(4, 4, 3, 3)}, str(sd_unet))
    _sniff_fails(sd_unet, "dit", UnknownFormatError, "a Stable Diffusion UNet")
    sd_lora = tmp_path / "sd_lora.safetensors"
    save_file({"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": torch.zeros(4, 8),
               "lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight": torch.zeros(8, 4)}, str(sd_lora))
    _sniff_fails(sd_lora, "lora", UnknownFormatError, "a LoRA for another model", "down_blocks_0")


def test_2d_vae_weights_under_the_3d_name_are_refused(tmp_path):
    path = tmp_path / "flat_vae.safetensors"
    save_file({"decoder.conv_in.conv.weight": torch.zeros(4, 4, 3, 3)}, str(path))
    _sniff_fails(path, "vae", UnknownFormatError, "5-D")


def test_lora_that_trained_norms_is_not_a_dit(files, tmp_path):
    state = load_file(str(files["lora"]))
    state["diffusion_model.txt_in.individual_token_refiner.blocks.0.norm1.weight"] = torch.ones(64)
    path = tmp_path / "lora_with_norms.safetensors"
    save_file(state, str(path))
    _sniff_fails(path, "dit", UnknownFormatError, "It belongs in --lora.")
    assert "HunyuanVideo LoRA" in sniff_model_file(path, "lora", parameter="--lora").what


def test_gguf_only_for_the_dit(files, tmp_path):
    hyvid = _gguf_dit(tmp_path)
    _sniff_fails(hyvid, "vae", UnknownFormatError, "It belongs in --dit.")
    llama = write_gguf(load_file(str(files["llm"])), tmp_path / "llama-Q8_0.gguf", Q.Q8_0, arch="llama")
    _sniff_fails(llama, "llm", UnknownFormatError, "architecture 'llama'", "Only the DiT can be a GGUF")


# -- damaged files ---------------------------------------------------------------------------------
def _copy(src: Path, dst: Path, data: bytes | None = None) -> Path:
    dst.write_bytes(src.read_bytes() if data is None else data)
    return dst


def test_truncated_safetensors(files, tmp_path):
    data = files["dit"].read_bytes()
    path = _copy(files["dit"], tmp_path / "cut.safetensors", data[: len(data) // 2])
    _sniff_fails(path, "dit", CheckpointError, "truncated", "Download it again")


def test_header_longer_than_the_file(files, tmp_path):
    data = files["vae"].read_bytes()
    path = _copy(files["vae"], tmp_path / "cut_header.safetensors", data[:200])
    _sniff_fails(path, "vae", CheckpointError, "truncated")


def test_damaged_header_length(files, tmp_path):
    data = bytearray(files["vae"].read_bytes())
    data[:8] = struct.pack("<Q", 2 ** 40)
    path = _copy(files["vae"], tmp_path / "bad_length.safetensors", bytes(data))
    _sniff_fails(path, "vae", CheckpointError, "header says")
    (header_len,) = struct.unpack("<Q", files["vae"].read_bytes()[:8])
    data[:8] = struct.pack("<Q", header_len // 2)  # the JSON is cut short
    _copy(files["vae"], path, bytes(data))
    _sniff_fails(path, "vae", CheckpointError, "corrupt safetensors header")


def test_damaged_json_header(files, tmp_path):
    data = bytearray(files["llm"].read_bytes())
    data[20:28] = b"\xff" * 8
    path = _copy(files["llm"], tmp_path / "bad_json.safetensors", bytes(data))
    _sniff_fails(path, "llm", CheckpointError, "corrupt safetensors header")


def test_header_of_wrong_structure_is_a_checkpoint_error(tmp_path):
    header = b'{"a": 1}'
    path = _copy(tmp_path, tmp_path / "odd.safetensors", struct.pack("<Q", len(header)) + header)
    _sniff_fails(path, "dit", CheckpointError, "download it again")


def test_garbage_and_tiny_files(tmp_path):
    garbage = _copy(tmp_path, tmp_path / "garbage.safetensors", b"\x01" * 64)
    _sniff_fails(garbage, "clip", CheckpointError, "not safetensors, GGUF nor a torch checkpoint")
    tiny = _copy(tmp_path, tmp_path / "tiny.safetensors", b"\x03\x00\x00")
    _sniff_fails(tiny, "clip", CheckpointError)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.safetensors"
    path.touch()
    _sniff_fails(path, "dit", CheckpointError, "empty (0 bytes)")


def test_header_only_safetensors_holds_no_tensors(tmp_path):
    path = tmp_path / "nothing.safetensors"
    save_file({}, str(path))
    _sniff_fails(path, "lora", CheckpointError, "holds no tensors")


def test_truncated_gguf(tmp_path):
    path = _gguf_dit(tmp_path)
    data = path.read_bytes()
    from gguf import GGUFReader
    first_data = min(int(t.data_offset) for t in GGUFReader(str(path)).tensors)
    for cut in (first_data, len(data) // 2, len(data) - 16, 200):  # after the header, in the data, in the table
        cut_path = _copy(path, tmp_path / f"cut-{cut}.gguf", data[:cut])
        _sniff_fails(cut_path, "dit", CheckpointError, "download it again")


def test_gguf_with_bad_magic(tmp_path):
    path = _gguf_dit(tmp_path)
    data = path.read_bytes()
    bad = _copy(path, tmp_path / "bad-magic.gguf", b"GGUX" + data[4:])
    _sniff_fails(bad, "dit", CheckpointError, "not safetensors, GGUF nor a torch checkpoint")


def test_truncated_torch_zip(tmp_path):
    good = _tencent_vae(tmp_path) / "pytorch_model.pt"
    data = good.read_bytes()
    path = _copy(good, tmp_path / "cut.pt", data[: len(data) // 2])
    _sniff_fails(path, "vae", CheckpointError, "truncated")


def test_legacy_pickle_pt_is_refused_with_the_fix(tmp_path):
    path = tmp_path / "legacy.pt"
    torch.save(demo_vae_state(), path, _use_new_zipfile_serialization=False)
    assert not zipfile.is_zipfile(path)
    _sniff_fails(path, "vae", CheckpointError, "legacy (non-zip)", "safetensors")


class _Code:
    def __reduce__(self):
        return (print, ("executed",))


def test_pt_with_pickled_code_is_refused(tmp_path):
    path = tmp_path / "code.pth"
    torch.save({"weight": torch.zeros(2), "payload": _Code()}, path)
    _sniff_fails(path, "lora", CheckpointError, "not executed")


# -- paths and names -------------------------------------------------------------------------------
def test_missing_path_lists_what_is_there(files):
    missing = files["dit"].parent / "hunyuan_video_t2v_720p_bf16.safetensors"
    _sniff_fails(missing, "dit", InvalidInputError, "no such file or folder", files["dit"].name)


def test_no_path_given():
    with pytest.raises(InvalidInputError, match="--dit: no file given"):
        sniff_model_file("", "dit", parameter="--dit")


def test_unknown_role(files):
    with pytest.raises(InvalidInputError, match="unknown model role"):
        sniff_model_file(files["dit"], "unet", parameter="--unet")


@pytest.mark.parametrize("name, error, words", [
    ("model.onnx", UnknownFormatError, ["unsupported file type '.onnx'"]),
    ("notes.txt", UnknownFormatError, ["unsupported file type '.txt'"]),
    ("hunyuan.safetensors.part", CheckpointError, ["unfinished download"]),
    ("config.json", InvalidInputError, ["JSON file", "Give the model folder"]),
])
def test_bad_extension(name, error, words, files, tmp_path):
    path = _copy(files["dit"], tmp_path / name)  # the content is a fine DiT: the name decides
    _sniff_fails(path, "dit", error, *words)


def test_folder_of_several_models_where_one_file_is_needed(files, tmp_path):
    folder = tmp_path / "loras"
    folder.mkdir()
    _copy(files["lora"], folder / "a.safetensors")
    _copy(files["lora"], folder / "b.safetensors")
    _sniff_fails(folder, "lora", InvalidInputError, "2 separate model files", "Give one file")


def test_folder_holding_one_gguf_asks_for_the_file(tmp_path):
    folder = tmp_path / "unet"
    folder.mkdir()
    _gguf_dit(folder)
    _sniff_fails(folder, "dit", CheckpointError, "Give the file itself")


def test_models_folder_where_one_model_folder_is_needed(demo):
    _sniff_fails(demo.llm.parent, "llm", CheckpointError, "It holds model folders", demo.llm.name)


def test_empty_folder(tmp_path):
    folder = tmp_path / "nothing_here"
    folder.mkdir()
    _sniff_fails(folder, "vae", CheckpointError, "no model files")


def test_text_folder_needs_config_json(demo, tmp_path):
    folder = tmp_path / "llm_no_config"
    folder.mkdir()
    _copy(demo.llm / "model.safetensors", folder / "model.safetensors")
    _sniff_fails(folder, "llm", InvalidInputError, "without config.json")


def test_text_folder_config_of_another_model(demo, tmp_path):
    folder = tmp_path / "t5"
    folder.mkdir()
    _copy(demo.llm / "model.safetensors", folder / "model.safetensors")
    (folder / "config.json").write_text(json.dumps({"model_type": "t5"}))
    _sniff_fails(folder, "llm", UnknownFormatError, "model_type 't5'")


def test_vae_folder_with_another_config(demo, tmp_path):
    folder = tmp_path / "vae_bad_config"
    folder.mkdir()
    _copy(demo.vae / "diffusion_pytorch_model.safetensors", folder / "diffusion_pytorch_model.safetensors")
    (folder / "config.json").write_text(json.dumps({"model_type": "llama"}))
    _sniff_fails(folder, "vae", CheckpointError, "does not describe a VAE")


def test_one_shard_where_the_folder_is_needed(demo, tmp_path):
    folder = _sharded_llm(tmp_path, demo)
    _sniff_fails(folder / "model-00001-of-00002.safetensors", "llm", InvalidInputError, "one shard", "Give the folder")


def test_missing_shard(demo, tmp_path):
    folder = _sharded_llm(tmp_path, demo)
    (folder / "model-00002-of-00002.safetensors").unlink()
    _sniff_fails(folder, "llm", CheckpointError, "shards missing", "model-00002-of-00002.safetensors")


def test_pipeline_folder_picks_the_role_subfolder(demo, tmp_path):
    root = tmp_path / "ckpts"
    (root / "text_encoder").mkdir(parents=True)
    for f in demo.llm.iterdir():
        _copy(f, root / "text_encoder" / f.name)
    found = sniff_model_file(root, "llm", parameter="--llm")
    assert found.container == "folder" and "Llama" in found.what
    _sniff_fails(root, "clip", CheckpointError)  # no text_encoder_2/: the Llama folder is not CLIP


# -- headers only --------------------------------------------------------------------------------
_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
_PAGE = os.sysconf("SC_PAGE_SIZE")


def resident_bytes(path: Path) -> int:
    """Bytes of the file now in the page cache (mincore on a fresh mapping, which touches nothing)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        addr = _libc.mmap(None, size, 1, 1, fd, 0)  # PROT_READ, MAP_SHARED
        if addr is None or addr == ctypes.c_void_p(-1).value:
            raise OSError(ctypes.get_errno(), "mmap failed")
        try:
            pages = (ctypes.c_ubyte * ((size + _PAGE - 1) // _PAGE))()
            if _libc.mincore(ctypes.c_void_p(addr), size, pages) != 0:
                raise OSError(ctypes.get_errno(), "mincore failed")
            return sum(p & 1 for p in pages) * _PAGE
        finally:
            _libc.munmap(ctypes.c_void_p(addr), size)
    finally:
        os.close(fd)


def evict(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def _rchar() -> int:
    with open("/proc/self/io") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("rchar"))


PAD = 10 << 20  # float32 elements: 40 MB of zeros


def _big_dit_safetensors(tmp: Path) -> tuple[Path, str]:
    state = demo_dit_state()
    state["zz_padding"] = torch.zeros(PAD)
    save_file(state, str(tmp / "big_dit.safetensors"))
    return tmp / "big_dit.safetensors", "dit"


def _big_vae_pt(tmp: Path) -> tuple[Path, str]:
    state = {"vae." + k: v for k, v in demo_vae_state().items()}
    state["vae.zz_padding"] = torch.zeros(PAD)
    torch.save({"state_dict": state}, tmp / "big_vae.pt")
    return tmp / "big_vae.pt", "vae"


def _big_dit_gguf(tmp: Path) -> tuple[Path, str]:
    state = demo_dit_state()
    state["zz_padding"] = torch.zeros(PAD)
    return write_gguf(state, tmp / "big_dit.gguf", Q.Q8_0), "dit"


@pytest.mark.parametrize("make", [_big_dit_safetensors, _big_vae_pt, _big_dit_gguf])
def test_no_tensor_data_is_read(make, tmp_path):
    """read() calls (rchar) and pages brought into the page cache (mincore after evicting the
    file) stay far below the 40 MB of tensor data; reading the file, the measure sees it all."""
    path, role = make(tmp_path)
    size = path.stat().st_size
    assert size > 40e6
    evict(path)
    evictable = resident_bytes(path) < size // 10  # False on filesystems without a page cache (tmpfs)
    before = _rchar()
    found = sniff_model_file(path, role, parameter=f"--{role}")
    read = _rchar() - before
    assert found.nbytes == size
    assert read < 2e6, f"sniff read {read} of {size} bytes"
    if evictable:
        # Readahead may bring in the first read_ahead_kb (8 MB here) around the header.
        assert resident_bytes(path) < size // 2, f"{resident_bytes(path)} of {size} bytes are now in memory"
        with open(path, "rb") as fh:  # the control: reading the data shows up in both measures
            while fh.read(1 << 22):
                pass
        assert resident_bytes(path) > size * 0.9
    assert _rchar() - before > size


def test_whole_demo_set_is_sniffed_in_under_a_second(demo):
    start = time.perf_counter()
    found = [sniff_model_file(demo.dit, "dit", parameter="--dit"),
             sniff_model_file(demo.vae, "vae", parameter="--vae"),
             sniff_model_file(demo.llm, "llm", parameter="--llm"),
             sniff_model_file(demo.clip, "clip", parameter="--clip")]
    elapsed = time.perf_counter() - start
    assert [f.role for f in found] == ["dit", "vae", "llm", "clip"]
    assert elapsed < 1.0, f"{elapsed:.2f} s"


def test_sniffed_file_is_frozen(files):
    found = sniff_model_file(files["clip"], "clip", parameter="--clip")
    with pytest.raises(AttributeError):
        found.role = "llm"  # type: ignore[misc]
    assert os.fspath(found.path) == os.fspath(files["clip"])
