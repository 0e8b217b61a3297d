"""LoRA files in every format: the ΔW per official weight equals scale·B·A of the known LoRA
they were written from, fused targets (qkv, linear1) and the final-layer halves included."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from hyvideo_core.errors import CheckpointError
from hyvideo_core.lora import load_lora, parse_lora
from hyvideo_core.weights.diffusers_names import diffusers_parts
from hyvideo_core.weights.reader import DictSource

from test_lora_support import (RANK, diffusers_layers, dit, known_lora, write_comfy_internal,  # noqa: F401
                               write_diffusers, write_diffusion_pipe, write_kohya, write_kohya_comfy, write_named)

SPECIAL = "double_blocks.1.txt_attn_qkv"   # gets its own alpha (per-module alpha / alpha_pattern)


@pytest.fixture(scope="module")
def known(dit):
    return known_lora(dit, special_alpha={SPECIAL: 2.0})


def _writers(tmp, hidden):
    return {
        "diffusers/PEFT (alpha metadata)": lambda k: write_diffusers(k, tmp / "dm", hidden, metadata=True),
        "diffusers/PEFT (no alpha)": lambda k: write_diffusers(k, tmp / "dn", hidden, metadata=False),
        "kohya/musubi": lambda k: write_kohya(k, tmp / "kohya.safetensors"),
        "kohya (ComfyUI internal names)": lambda k: write_kohya_comfy(k, tmp / "kohya_comfy.safetensors"),
        "ComfyUI/diffusion-pipe (official names)": lambda k: write_diffusion_pipe(k, tmp / "pipe.safetensors"),
        "ComfyUI internal names": lambda k: write_comfy_internal(k, tmp / "comfy.safetensors"),
    }


def _assert_deltas(lora, known, model):
    assert set(lora.modules) == set(known)
    for module, k in known.items():
        rows = model.get_submodule(module).weight.shape[0]
        torch.testing.assert_close(lora.delta(module, rows), k.delta(), atol=1e-6, rtol=1e-5, msg=module)


@pytest.mark.parametrize("label", list(_writers(None, 0)))
def test_every_format_gives_scale_B_A_for_every_module(label, known, dit, tmp_path):
    """All Linear/Conv3d of the tiny DiT: patch embed (Conv3d), qkv, linear1, modulations
    (incl. the final layer's, mind the half swap), refiner (incl. self_attn_qkv), embedders."""
    path = _writers(tmp_path, dit.config.hidden_size)[label](known)
    lora = load_lora(path)
    assert lora.format.startswith(label.split(" (alpha")[0].split(" (no alpha")[0])
    assert not lora.unmatched
    _assert_deltas(lora, known, dit)


def test_same_lora_in_all_formats_gives_identical_deltas(known, dit, tmp_path):
    loras = {label: load_lora(write(known)) for label, write in _writers(tmp_path, dit.config.hidden_size).items()}
    reference = loras["kohya/musubi"]
    for label, lora in loras.items():
        for module in known:
            torch.testing.assert_close(lora.delta(module), reference.delta(module), atol=1e-6, rtol=1e-5,
                                       msg=f"{label}: {module}")


def test_diffusers_fused_parts_are_cat_A_and_blockdiag_B(known, dit):
    """q/k/v with their own A's become A = cat(A_q, A_k, A_v) (rank 3r), B block-diagonal;
    linear1 has 4 parts (rank 4r)."""
    g = torch.Generator().manual_seed(5)
    sd = {}
    hidden = dit.config.hidden_size
    for module in ("double_blocks.0.img_attn_qkv", "single_blocks.1.linear1"):
        parts = diffusers_parts(module).modules
        rows = dit.get_submodule(module).weight.shape[0]
        sizes = [hidden, hidden, hidden, rows - 3 * hidden][: len(parts)]
        for name, size in zip(parts, sizes):
            sd[f"transformer.{name}.lora_A.weight"] = torch.randn(RANK, hidden, generator=g)
            sd[f"transformer.{name}.lora_B.weight"] = torch.randn(size, RANK, generator=g)
    lora = parse_lora(DictSource(sd), "parts")
    for module in ("double_blocks.0.img_attn_qkv", "single_blocks.1.linear1"):
        names = diffusers_parts(module).modules
        a, b = lora.modules[module].fused()
        assert a.shape == (RANK * len(names), hidden)
        torch.testing.assert_close(a, torch.cat([sd[f"transformer.{n}.lora_A.weight"] for n in names]))
        torch.testing.assert_close(b, torch.block_diag(*[sd[f"transformer.{n}.lora_B.weight"] for n in names]))
        torch.testing.assert_close(lora.delta(module), b @ a)


def test_final_layer_swaps_only_B_halves(dit):
    """Official [shift; scale] rows. A diffusers LoRA changing only `scale` has B non-zero in its
    first half ([scale; shift]); loaded, only the second official half changes, and A is intact
    (swapping A's rank rows too is diffusers' converter bug, SPEC 8.2)."""
    hidden = dit.config.hidden_size
    g = torch.Generator().manual_seed(2)
    a = torch.randn(RANK, hidden, generator=g)
    b = torch.cat([torch.randn(hidden, RANK, generator=g), torch.zeros(hidden, RANK)])  # diffusers order
    lora = parse_lora(DictSource({"transformer.norm_out.linear.lora_A.weight": a,
                                  "transformer.norm_out.linear.lora_B.weight": b}), "final")
    delta = lora.delta("final_layer.adaLN_modulation.1")
    assert delta[:hidden].abs().max() == 0                      # shift untouched
    torch.testing.assert_close(delta[hidden:], b[:hidden] @ a)  # scale changed as asked
    torch.testing.assert_close(lora.modules["final_layer.adaLN_modulation.1"].parts[0].down, a)


def test_diffusers_converter_output_loads_to_the_same_delta(known, dit):
    """diffusers' own official->diffusers LoRA converter (an independent implementation) on the
    modules it converts correctly (it hard-codes hidden 3072 for linear1 and has the final-layer
    and refiner-qkv bugs of SPEC 8.2)."""
    from diffusers.loaders.lora_conversion_utils import _convert_hunyuan_video_lora_to_diffusers
    skip = ("linear1", "final_layer.adaLN_modulation", "self_attn_qkv")
    subset = {m: k for m, k in known.items() if not any(s in m for s in skip)}
    official = {}
    for module, k in subset.items():
        official[f"diffusion_model.{module}.lora_A.weight"] = k.down * k.scale
        official[f"diffusion_model.{module}.lora_B.weight"] = k.up.clone()
    converted = _convert_hunyuan_video_lora_to_diffusers(official)
    assert any(".attn.to_q." in key for key in converted)
    lora = parse_lora(DictSource(converted), "converted")
    assert lora.format == "diffusers/PEFT"
    _assert_deltas(lora, subset, dit)


def test_peft_alpha_pattern_and_rslora():
    a, b = torch.randn(8, 6), torch.randn(6, 8)
    sd = {"transformer.transformer_blocks.0.attn.to_out.0.lora_A.weight": a,
          "transformer.transformer_blocks.0.attn.to_out.0.lora_B.weight": b,
          "transformer.proj_out.lora_A.weight": a, "transformer.proj_out.lora_B.weight": b}
    src = DictSource(sd)
    lora = parse_lora(src, "p", {"lora_alpha": 16, "alpha_pattern": {"proj_out": 4}})
    torch.testing.assert_close(lora.delta("double_blocks.0.img_attn_proj"), 2.0 * (b @ a))
    torch.testing.assert_close(lora.delta("final_layer.linear"), 0.5 * (b @ a))
    rs = parse_lora(src, "rs", {"lora_alpha": 16, "use_rslora": True})
    torch.testing.assert_close(rs.delta("final_layer.linear"), 16 / 8 ** 0.5 * (b @ a))


def test_norm_weights_saved_with_the_lora_are_read(dit):
    """train_norm_layers files carry full norm_q/norm_k weights (SPEC 7.4)."""
    w = torch.rand(32)
    a, b = torch.randn(2, 64), torch.randn(192, 2)
    lora = parse_lora(DictSource({"transformer.transformer_blocks.0.attn.norm_added_k.weight": w,
                                  "transformer.transformer_blocks.0.attn.to_q.lora_A.weight": a,
                                  "transformer.transformer_blocks.0.attn.to_q.lora_B.weight": b[:64]}), "n")
    assert torch.equal(lora.full_weights["double_blocks.0.txt_attn_k_norm.weight"], w)


def test_unmatched_and_unsupported_keys_are_listed(dit):
    a, b = torch.randn(2, 64), torch.randn(64, 2)
    lora = parse_lora(DictSource({
        "lora_unet_double_blocks_0_img_attn_proj.lora_down.weight": a,
        "lora_unet_double_blocks_0_img_attn_proj.lora_up.weight": b,
        "lora_te1_text_model_encoder_layers_0_mlp_fc1.lora_down.weight": a,
        "lora_te1_text_model_encoder_layers_0_mlp_fc1.lora_up.weight": b,
        "lora_unet_double_blocks_0_img_attn_proj.dora_scale": torch.ones(64, 1),
    }), "mixed")
    reasons = {u.key: u.reason for u in lora.unmatched}
    assert "no HunyuanVideo DiT module" in reasons["lora_te1_text_model_encoder_layers_0_mlp_fc1.lora_down.weight"]
    assert "DoRA" in reasons["lora_unet_double_blocks_0_img_attn_proj.dora_scale"]
    assert list(lora.modules) == ["double_blocks.0.img_attn_proj"]


# -- bad input -------------------------------------------------------------------------------
def test_lora_for_another_model_names_its_first_keys(tmp_path):
    a, b = torch.randn(4, 320), torch.randn(320, 4)
    path = tmp_path / "sdxl_lora.safetensors"
    save_file({"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": a,
               "lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight": b,
               "lora_unet_down_blocks_0_attentions_0_proj_in.alpha": torch.tensor(4.0)}, str(path))
    with pytest.raises(CheckpointError) as err:
        load_lora(path)
    text = str(err.value)
    assert "sdxl_lora.safetensors" in text and "not a HunyuanVideo LoRA" in text
    assert "lora_unet_down_blocks_0_attentions_0_proj_in" in text


def test_rank_mismatch_is_an_error_naming_the_module():
    with pytest.raises(CheckpointError, match=r"double_blocks_0_img_attn_qkv.*rank mismatch"):
        parse_lora(DictSource({"lora_unet_double_blocks_0_img_attn_qkv.lora_down.weight": torch.randn(4, 64),
                               "lora_unet_double_blocks_0_img_attn_qkv.lora_up.weight": torch.randn(192, 8)}), "bad")


def test_half_a_pair_is_an_error():
    with pytest.raises(CheckpointError, match=r"img_attn_proj.*no up/B"):
        parse_lora(DictSource({"diffusion_model.double_blocks.0.img_attn_proj.lora_A.weight": torch.randn(4, 64)}), "x")


def test_a_full_model_is_not_taken_for_a_lora(tmp_path):
    with pytest.raises(CheckpointError, match="no key matches"):
        parse_lora(DictSource({"double_blocks.0.img_attn_qkv.weight": torch.randn(192, 64)}), "model")


@pytest.mark.parametrize("content", [b"", b"\x00" * 7, b"\xff" * 64])
def test_corrupt_files_fail_clearly(tmp_path, content):
    path = tmp_path / "broken.safetensors"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match="broken.safetensors"):
        load_lora(path)


def test_truncated_lora_fails_clearly(known, tmp_path):
    path = write_kohya(known, tmp_path / "cut.safetensors")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        load_lora(path)


def test_pt_lora_with_pickled_code_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("executed",))
    path = tmp_path / "evil.pt"
    torch.save({"x": Evil()}, str(path))
    with pytest.raises(CheckpointError, match="not executed"):
        load_lora(path)


def test_peft_adapter_folder_with_adapter_config(tmp_path, dit):
    """PEFT's own layout: base_model.model.<diffusers name> keys, alpha in adapter_config.json."""
    import json
    a, b = torch.randn(4, 64), torch.randn(64, 4)
    save_file({"base_model.model.transformer_blocks.1.attn.to_add_out.lora_A.weight": a,
               "base_model.model.transformer_blocks.1.attn.to_add_out.lora_B.weight": b},
              str(tmp_path / "adapter_model.safetensors"))
    (tmp_path / "adapter_config.json").write_text(json.dumps({"r": 4, "lora_alpha": 2}))
    lora = load_lora(tmp_path)
    torch.testing.assert_close(lora.delta("double_blocks.1.txt_attn_proj"), 0.5 * (b @ a))


def test_kohya_style_diffusers_names():
    a, b = torch.randn(4, 64), torch.randn(64, 4)
    lora = parse_lora(DictSource({"lora_transformer_single_transformer_blocks_0_attn_to_k.lora_down.weight": a,
                                  "lora_transformer_single_transformer_blocks_0_attn_to_k.lora_up.weight": b,
                                  "lora_transformer_single_transformer_blocks_0_attn_to_k.alpha": torch.tensor(8.0)}),
                      "k")
    assert lora.format == "kohya (diffusers names)"
    delta = lora.delta("single_blocks.0.linear1", 64 * 3 + 256)
    torch.testing.assert_close(delta[64:128], 2 * (b @ a))
    assert delta[:64].abs().max() == 0 and delta[128:].abs().max() == 0


def test_every_13b_module_name_resolves_in_every_naming():
    """The full 13B key listings (tests/data): every Linear/Conv3d in official, ComfyUI, kohya
    and diffusers spelling lands on its official module; the dashtoon keyframe LoRA's targets
    (all Linear minus 'norm', plus x_embedder.proj: 465 modules, SPEC 7.3) all resolve."""
    import json
    from pathlib import Path

    from hyvideo_core.lora.keys import name_index
    from hyvideo_core.weights.comfy_names import official_to_comfy
    from hyvideo_core.weights.diffusers_names import official_module_of

    data = Path(__file__).parent / "data"
    official = json.loads((data / "dit_keys_official_13b.json").read_text())
    diffusers = json.loads((data / "dit_keys_diffusers_13b.json").read_text())
    index = name_index(40)
    layers = [k[: -len(".weight")] for k, shape in official.items() if k.endswith(".weight") and len(shape) >= 2]
    assert len(layers) == 344     # 20x10 double + 40x3 single + 2x5 refiner + 14 others
    for module in layers:
        comfy = official_to_comfy(module + ".weight")[: -len(".weight")]
        for spelling in (module, "diffusion_model." + module, "lora_unet_" + module.replace(".", "_"),
                         "diffusion_model." + comfy, "lora_unet_" + comfy.replace(".", "_")):
            assert index.module(spelling).module == module, spelling
    targets = [k[: -len(".weight")] for k, shape in diffusers.items()
               if k.endswith(".weight") and (len(shape) == 2 and "norm" not in k or k.startswith("x_embedder."))]
    assert len(targets) == 465
    for name in targets:
        found = index.module("transformer." + name)
        assert (found.module, found.part, found.parts) == official_module_of(name), name
