"""Loading the towers from the layouts users have: Hugging Face folders and ComfyUI single files
(fp16 and scaled fp8, config built in code, tokenizer from a folder), and the errors for
wrong or incomplete inputs."""
from __future__ import annotations

import copy
import logging
import shutil

import pytest
import torch
from safetensors.torch import save_file

from hyvideo_core.errors import CheckpointError, InvalidInputError, UnknownFormatError
from hyvideo_core.model import ops
from hyvideo_core.text.loader import load_clip_tower, load_llama_tower, load_text_encoder
from hyvideo_core.text.templates import VIDEO_TEMPLATE
from test_text_tiny import (CLIP_OVERRIDES, LINEARS, LLAMA_OVERRIDES, by_hand_llm, comfy_llama_state,  # noqa: F401
                            folder_encoder, text_files)

PROMPT = "a red fox jumps over a lazy dog at sunset"


def llama_from(files, path, **kw):
    tok = kw.pop("tokenizer", files["llama_tokenizer"])
    return load_llama_tower(path, tok, torch.float32, "cpu", config=kw.pop("config", LLAMA_OVERRIDES), **kw)


def linear_weight(tower, name: str) -> torch.Tensor:
    layer = tower.model.get_submodule(name)
    return layer.codec.dequantize(layer) if layer.codec is not None else layer.weight.float()


def test_folder_layout_loads_only_the_needed_layers(text_files, caplog):
    with caplog.at_level(logging.WARNING):
        tower = load_llama_tower(text_files["llm_folder"], None, torch.float32, "cpu")
    assert len(tower.model.layers) == 3  # 5 layers, the last two are after hidden_states[-3]
    assert isinstance(tower.model.norm, torch.nn.Identity)
    reference = text_files["llama"].model.state_dict()
    for name, param in tower.model.named_parameters():
        assert torch.equal(param, reference[name]), name
    assert "not used" not in caplog.text  # lm_head, layers 3-4 and the norm are unused by design


def test_comfy_fp16_single_file_equals_folder_layout(text_files, folder_encoder):
    tower = llama_from(text_files, text_files["llm_fp16"])
    reference = text_files["llama"].model.state_dict()
    for name, param in tower.model.named_parameters():
        assert param.dtype == torch.float32
        assert torch.equal(param, reference[name].half().float()), name
    enc = load_text_encoder(text_files["llm_fp16"], text_files["clip_l"], tokenizer=text_files["llama_tokenizer"],
                            clip_tokenizer=text_files["clip_tokenizer"], dtype=torch.float32, device="cpu",
                            llm_config=LLAMA_OVERRIDES, clip_config=CLIP_OVERRIDES)
    got, want = enc.encode(PROMPT).positive, folder_encoder.encode(PROMPT).positive
    assert torch.equal(got.text_mask, want.text_mask)
    valid = want.text_mask[0].bool()  # the file is fp16: close, not equal, to the fp32 folder
    rel = (got.text_states[0, valid] - want.text_states[0, valid]).norm() / want.text_states[0, valid].norm()
    assert rel < 1e-2, float(rel)
    torch.testing.assert_close(got.pooled, want.pooled, rtol=1e-6, atol=1e-6)  # clip_l saved in fp32


def dequantised_copy(llama, weights):
    """The reference model with every weight replaced by what the loaded tower computes with."""
    model = copy.deepcopy(llama)
    with torch.no_grad():
        for name, param in model.model.named_parameters():
            param.copy_(weights(name))
    return model


def test_comfy_fp8_scaled_single_file(text_files):
    from safetensors import safe_open
    tower = llama_from(text_files, text_files["llm_fp8"])
    with safe_open(str(text_files["llm_fp8"]), "pt") as f:
        for i in range(3):
            for linear in LINEARS:
                name = f"layers.{i}.{linear}"
                layer = tower.model.get_submodule(name)
                assert isinstance(layer, ops.Linear) and layer.weight.dtype == torch.float8_e4m3fn
                stored, scale = f.get_tensor(f"model.{name}.weight"), f.get_tensor(f"model.{name}.scale_weight")
                assert torch.equal(layer.weight, stored)  # kept as stored: no requantisation
                assert torch.equal(linear_weight(tower, name), stored.float() * scale)
                original = text_files["llama"].model.get_submodule(name).weight
                assert (linear_weight(tower, name) - original).abs().max() <= original.abs().max() / 8
        # The forward dequantises per layer: same result as a float model holding weight * scale.
        reference = dequantised_copy(text_files["llama"], lambda n: (
            f.get_tensor(f"model.{n}").float() * f.get_tensor(f"model.{n[:-len('weight')]}scale_weight")
            if any(f".{lin}.weight" in n for lin in LINEARS) else f.get_tensor(f"model.{n}").float()))
    got = tower.encode([PROMPT], VIDEO_TEMPLATE, "cpu")
    states, mask, _ = by_hand_llm(text_files, [PROMPT], VIDEO_TEMPLATE, llama=reference)
    assert torch.equal(got.mask, mask)
    torch.testing.assert_close(got.states, states, rtol=1e-5, atol=1e-5)
    # Stored in the compute dtype instead: the same dequantised weights.
    full = llama_from(text_files, text_files["llm_fp8"], storage="compute")
    for i in range(3):
        name = f"layers.{i}.self_attn.q_proj"
        assert full.model.get_submodule(name).weight.dtype == torch.float32
        assert torch.equal(linear_weight(full, name), linear_weight(tower, name))


def test_fp8_storage_from_a_full_precision_folder(text_files):
    tower = load_llama_tower(text_files["llm_folder"], None, torch.float32, "cpu", storage="fp8_e4m3fn")
    layer = tower.model.get_submodule("layers.0.mlp.down_proj")
    assert layer.weight.dtype == torch.float8_e4m3fn and layer.scale_weight.ndim == 0
    assert tower.model.embed_tokens.weight.dtype == torch.float32  # embeddings stay in high precision
    original = text_files["llama"].model.layers[0].mlp.down_proj.weight
    assert layer.scale_weight == original.abs().max() / 448  # absmax maps to e4m3fn's largest value
    kept = dict(tower.model.named_parameters())  # layers 3-4 are not in the tower (and not needed)
    reference = dequantised_copy(text_files["llama"], lambda n: (
        n not in kept and text_files["llama"].model.state_dict()[n]) if n not in kept else (
        linear_weight(tower, n[: -len(".weight")]) if any(f".{lin}.weight" in n for lin in LINEARS) else kept[n]))
    got = tower.encode([PROMPT], VIDEO_TEMPLATE, "cpu")
    states, _, _ = by_hand_llm(text_files, [PROMPT], VIDEO_TEMPLATE, llama=reference)
    torch.testing.assert_close(got.states, states, rtol=1e-5, atol=1e-5)


def test_clip_single_file_and_whole_clip_model_folder(text_files, tmp_path):
    from transformers import CLIPConfig, CLIPModel
    single = load_clip_tower(text_files["clip_l"], text_files["clip_tokenizer"], torch.float32, "cpu", CLIP_OVERRIDES)
    reference = text_files["clip"].state_dict()
    for name, param in single.model.named_parameters():
        assert torch.equal(param, reference[name]), name
    # openai/clip-vit-large-patch14 is a whole CLIPModel (text + vision): only the text part loads.
    text_cfg = text_files["clip"].config.to_dict()
    full = CLIPModel(CLIPConfig(text_config=text_cfg, vision_config=dict(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=32,
        patch_size=16)))
    full.text_model.load_state_dict(text_files["clip"].state_dict(), strict=False)
    full.save_pretrained(str(tmp_path / "clip"))
    shutil.copytree(text_files["clip_tokenizer"], tmp_path / "clip", dirs_exist_ok=True)
    tower = load_clip_tower(tmp_path / "clip", None, torch.float32, "cpu")
    got = tower.encode([PROMPT], "cpu").pooled
    torch.testing.assert_close(got, single.encode([PROMPT], "cpu").pooled, rtol=1e-6, atol=1e-6)


def test_comfy_checkpoint_prefix_and_unexpected_keys(text_files, tmp_path, caplog):
    state = {f"text_encoders.llama.transformer.{k}": v for k, v in comfy_llama_state(text_files["llama"]).items()}
    state["text_encoders.llama.transformer.model.layers.0.extra.weight"] = torch.zeros(2)
    save_file(state, str(tmp_path / "bundle.safetensors"))
    with caplog.at_level(logging.WARNING):
        tower = llama_from(text_files, tmp_path / "bundle.safetensors")
    assert "layers.0.extra.weight" in caplog.text  # reported, not silently dropped
    assert torch.equal(tower.model.layers[2].mlp.up_proj.weight, text_files["llama"].model.layers[2].mlp.up_proj.weight)


def test_missing_tokenizer_says_where_it_looked(text_files, tmp_path):
    with pytest.raises(CheckpointError, match="no tokenizer folder was given"):
        llama_from(text_files, text_files["llm_fp16"], tokenizer=None)
    broken = tmp_path / "llama_tokenizer"  # a ComfyUI checkout without tokenizer.json
    broken.mkdir()
    shutil.copy(text_files["llama_tokenizer"] / "tokenizer_config.json", broken)
    with pytest.raises(CheckpointError, match=f"Looked in: {broken} .*no tokenizer.json"):
        llama_from(text_files, text_files["llm_fp16"], tokenizer=broken)
    with pytest.raises(CheckpointError, match="clip_tokenizer"):
        load_clip_tower(text_files["clip_l"], tmp_path / "nowhere", torch.float32, "cpu", CLIP_OVERRIDES)


def test_folder_tokenizer_used_when_the_given_one_is_broken(text_files, tmp_path, caplog):
    empty = tmp_path / "empty"
    empty.mkdir()
    with caplog.at_level(logging.WARNING):
        tower = load_llama_tower(text_files["llm_folder"], empty, torch.float32, "cpu")
    assert tower.tokenizer is not None and str(empty) in caplog.text


def test_wrong_files_are_named(text_files, tmp_path):
    with pytest.raises(UnknownFormatError, match="looks like a CLIP text encoder.*Pass it as `clip=`"):
        llama_from(text_files, text_files["clip_l"])
    with pytest.raises(UnknownFormatError, match="not a CLIP text encoder.*Llama.*Pass it as `llm=`"):
        load_clip_tower(text_files["llm_fp16"], text_files["clip_tokenizer"], torch.float32, "cpu")
    dit = tmp_path / "dit.safetensors"
    save_file({"txt_in.individual_token_refiner.blocks.0.norm1.weight": torch.ones(4)}, str(dit))
    with pytest.raises(UnknownFormatError, match="HunyuanVideo transformer"):
        llama_from(text_files, dit)


def test_tokenizer_of_another_model_is_refused(text_files, tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast
    vocab = {f"w{i}": i for i in range(5000)}
    for i, token in enumerate(["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]):
        vocab[token] = 5000 + i
    tok = Tokenizer(models.WordLevel(vocab, unk_token="w0"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|begin_of_text|>").save_pretrained(str(tmp_path / "t"))
    with pytest.raises(CheckpointError, match="does not know the Llama-3 chat token <.start_header_id.>"):
        llama_from(text_files, text_files["llm_fp16"], tokenizer=tmp_path / "t")
    tok.add_special_tokens(["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"])
    PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|begin_of_text|>").save_pretrained(str(tmp_path / "t"))
    with pytest.raises(CheckpointError, match="ids up to 5003.*embeds only 640 tokens.*belongs to another model"):
        llama_from(text_files, text_files["llm_fp16"], tokenizer=tmp_path / "t")


def test_incomplete_file(text_files, tmp_path):
    state = comfy_llama_state(text_files["llama"])
    del state["model.layers.1.mlp.down_proj.weight"]
    save_file(state, str(tmp_path / "cut.safetensors"))
    with pytest.raises(CheckpointError, match="1 tensors of the LlamaModel are missing.*layers.1.mlp.down_proj"):
        llama_from(text_files, tmp_path / "cut.safetensors")


def test_shape_mismatch_and_bad_options(text_files):
    with pytest.raises(CheckpointError, match="has shape"):
        llama_from(text_files, text_files["llm_fp16"], config={**LLAMA_OVERRIDES, "num_attention_heads": 2,
                                                                 "head_dim": 32, "num_key_value_heads": 2})
    with pytest.raises(InvalidInputError, match="llm_storage"):
        load_text_encoder(text_files["llm_folder"], text_files["clip_folder"], llm_storage="int4")
    with pytest.raises(InvalidInputError, match="hidden_state_skip_layer"):
        load_llama_tower(text_files["llm_folder"], None, torch.float32, "cpu", skip_layers=9)


def test_code_built_configs_match_the_real_models():
    """The single-file path builds the real architectures from shapes alone (no tiny overrides)."""
    from hyvideo_core.text.configs import clip_config_from_shapes, llama_config_from_shapes
    shapes = {"model.embed_tokens.weight": (128320, 4096), "model.norm.weight": (4096,)}
    for i in range(32):
        shapes[f"model.layers.{i}.self_attn.q_proj.weight"] = (4096, 4096)
        shapes[f"model.layers.{i}.self_attn.k_proj.weight"] = (1024, 4096)
        shapes[f"model.layers.{i}.mlp.gate_proj.weight"] = (14336, 4096)
    cfg = llama_config_from_shapes(shapes, "model.")
    assert (cfg.vocab_size, cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads,
            cfg.num_key_value_heads, cfg.intermediate_size, cfg.head_dim) == (128320, 4096, 32, 32, 8, 14336, 128)
    assert cfg.rope_parameters["rope_theta"] == 500000.0 and cfg.rms_norm_eps == 1e-5
    shapes = {"text_model.embeddings.token_embedding.weight": (49408, 768),
              "text_model.embeddings.position_embedding.weight": (77, 768)}
    for i in range(12):
        shapes[f"text_model.encoder.layers.{i}.mlp.fc1.weight"] = (3072, 768)
    cfg = clip_config_from_shapes(shapes, "text_model.", {"eos_token_id": 49407})
    assert (cfg.vocab_size, cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads, cfg.intermediate_size,
            cfg.max_position_embeddings, cfg.hidden_act, cfg.eos_token_id) == (
        49408, 768, 12, 12, 3072, 77, "quick_gelu", 49407)
