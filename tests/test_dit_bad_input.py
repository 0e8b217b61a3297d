"""Wrong files and wrong options give clear errors, never crashes or silent loads."""
from __future__ import annotations


import pytest
import torch
from safetensors.torch import save_file

import hyvideo_core
from hyvideo_core.errors import CheckpointError, InvalidInputError, MissingPackageError, UnknownFormatError


def test_stable_diffusion_checkpoint_named(tmp_path):
    path = tmp_path / "sd15.safetensors"
    save_file({"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(4, 4),
               "first_stage_model.decoder.conv_in.weight": torch.zeros(2)}, str(path))
    with pytest.raises(UnknownFormatError, match="Stable Diffusion") as err:
        hyvideo_core.load_transformer(path)
    assert str(path) in str(err.value)


def test_truncated_safetensors(golden_dit_weights, tmp_path):
    path = tmp_path / "cut.safetensors"
    save_file(dict(golden_dit_weights), str(path))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        hyvideo_core.load_transformer(path)


def test_corrupt_header(tmp_path):
    path = tmp_path / "junk.safetensors"
    path.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    with pytest.raises(CheckpointError):
        hyvideo_core.load_transformer(path)


class Payload:
    """A pickled object that would run code on load if it were unpickled unsafely."""

    def __reduce__(self):
        return (exec, ("open('/tmp/hyvideo_pwned', 'w').write('x')",))


def test_pickled_object_rejected_not_executed(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"module": {"img_in.proj.weight": torch.zeros(1)}, "hook": Payload()}, path)
    with pytest.raises(CheckpointError, match="rejected"):
        hyvideo_core.load_transformer(path)
    import os
    assert not os.path.exists("/tmp/hyvideo_pwned")


def test_missing_and_misshaped_keys_listed(golden_dit_weights):
    sd = dict(golden_dit_weights)
    del sd["single_blocks.1.linear2.weight"]
    sd["double_blocks.0.img_attn_proj.bias"] = torch.zeros(65)
    with pytest.raises(CheckpointError) as err:
        hyvideo_core.load_transformer(sd, config="tiny")
    message = str(err.value)
    assert "single_blocks.1.linear2.weight" in message and "double_blocks.0.img_attn_proj.bias" in message
    assert "missing" in message and "wrong shapes" in message


def test_unknown_attention_backend(golden_dit_weights):
    with pytest.raises(InvalidInputError, match="xformers"):
        hyvideo_core.load_transformer(golden_dit_weights, attention="xformers")


def test_unavailable_backend_fails_at_load_naming_package_and_fallback(golden_dit_weights):
    with pytest.raises(MissingPackageError) as err:
        hyvideo_core.load_transformer(golden_dit_weights, attention="flash")
    assert "sdpa" in str(err.value)


def test_wrong_latent_channels_at_call(golden_dit):
    with pytest.raises(InvalidInputError, match=r"\[B, 16, T, H, W\]"):
        golden_dit(torch.zeros(1, 4, 1, 4, 4), 500.0, torch.zeros(1, 3, 64), None, torch.zeros(1, 32), 6000.0)


def test_wrong_text_dim_at_call(golden_dit):
    with pytest.raises(InvalidInputError, match="text_states"):
        golden_dit(torch.zeros(1, 16, 1, 4, 4), 500.0, torch.zeros(1, 3, 4096), None, torch.zeros(1, 32), 6000.0)


def test_not_a_checkpoint_at_all(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("hello")
    with pytest.raises(CheckpointError, match="unrecognised"):
        hyvideo_core.load_transformer(path)


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="no such file"):
        hyvideo_core.load_transformer(tmp_path / "absent.safetensors")
