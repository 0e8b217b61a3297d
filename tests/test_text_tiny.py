"""Tiny text towers for the text tests, built offline: byte-level BPE tokenizers trained on a few
sentences (hyvideo_core.demo's builders, with the Llama-3 chat tokens / CLIP's BOS-EOS),
random transformers Llama and CLIP models, and the files users have (Hugging Face folders,
ComfyUI single files incl. scaled fp8). The other test_text_* files import these fixtures.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from hyvideo_core.demo import (CLIP_SPECIALS, LLAMA_SPECIALS, save_clip_tokenizer, save_llama_tokenizer,  # noqa: F401
                               tiny_clip_config, tiny_llama_config)
from hyvideo_core.weights.fp8 import quantize
from hyvideo_core.text.templates import PromptTemplate

LINEARS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
           "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")


def load_tokenizer(folder: Path):
    from transformers import PreTrainedTokenizerFast
    return PreTrainedTokenizerFast.from_pretrained(str(folder))


# Overrides that let the code-built configs (real 8B / CLIP-L constants) describe the tiny files.
LLAMA_OVERRIDES = dict(num_attention_heads=4, head_dim=16, max_position_embeddings=1024)
CLIP_OVERRIDES = dict(num_attention_heads=2)


def comfy_llama_state(model) -> dict[str, torch.Tensor]:
    """A LlamaForCausalLM's weights in ComfyUI's single-file layout (model.* keys, no lm_head)."""
    return {k: v.detach().clone() for k, v in model.state_dict().items() if k.startswith("model.")}


def comfy_llama_fp8_scaled(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """ComfyUI's scaled-fp8 layout: fp8 linear weights, a scalar `scale_weight` per linear and
    a `scaled_fp8` marker tensor whose dtype names the fp8 format."""
    out = {}
    for key, value in state.items():
        if any(f".{name}.weight" in key for name in LINEARS):
            q, scale = quantize(value, torch.float8_e4m3fn)
            out[key] = q
            out[key[: -len("weight")] + "scale_weight"] = scale
        else:
            out[key] = value.to(torch.float16)
    out["scaled_fp8"] = torch.zeros(0, dtype=torch.float8_e4m3fn)
    return out


def by_hand_llm(files, prompts, template: PromptTemplate, text_len=256, layer=-3, llama=None):
    """The reference's way: tokenizer(template.format(prompt), max_length=crop+256, padding=
    "max_length", truncation=True), the full LlamaModel with output_hidden_states, then
    hidden_states[-3][:, crop:] and mask[:, crop:]."""
    tok = load_tokenizer(files["llama_tokenizer"])
    crop = len(tok(template.prefix)["input_ids"])  # BOS + prefix, via the tokenizer's own post-processor
    batch = tok([template.text.format(p.strip()) for p in prompts], max_length=crop + text_len,
                padding="max_length", truncation=True, return_tensors="pt")
    with torch.no_grad():
        out = (llama or files["llama"]).model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                                              output_hidden_states=True)
    return out.hidden_states[layer][:, crop:], batch.attention_mask[:, crop:], crop


def by_hand_clip(files, prompts):
    """CLIPTextModel pooler_output on tokenizer(prompt, max_length=77, padding, truncation)."""
    tok = load_tokenizer(files["clip_tokenizer"])
    batch = tok([p.strip() for p in prompts], max_length=77, padding="max_length", truncation=True,
                return_tensors="pt")
    with torch.no_grad():
        return files["clip"](input_ids=batch.input_ids, attention_mask=batch.attention_mask).pooler_output

# Fixtures imported into several test modules are set up once per module; build once instead.
_BUILT: dict = {}


@pytest.fixture(scope="session")
def text_files(tmp_path_factory):
    """Every layout of the same tiny towers, plus the reference models themselves."""
    if "files" not in _BUILT:
        _BUILT["files"] = build_text_files(tmp_path_factory.mktemp("text"))
    return _BUILT["files"]


def build_text_files(root: Path) -> dict:
    from transformers import CLIPTextModel, LlamaForCausalLM

    llama_tok = save_llama_tokenizer(root / "llama_tokenizer")
    clip_tok = save_clip_tokenizer(root / "clip_tokenizer")
    clip_eos = load_tokenizer(clip_tok).eos_token_id

    torch.manual_seed(0)
    llama = LlamaForCausalLM(tiny_llama_config()).eval()
    clip = CLIPTextModel(tiny_clip_config(clip_eos)).eval()

    llm_folder = root / "text_encoder"  # what HunyuanVideo's preprocessing script writes
    llama.save_pretrained(str(llm_folder))
    save_llama_tokenizer(llm_folder)
    clip_folder = root / "text_encoder_2"
    clip.save_pretrained(str(clip_folder))
    save_clip_tokenizer(clip_folder)

    comfy = comfy_llama_state(llama)
    save_file({k: v.to(torch.float16) for k, v in comfy.items()}, str(root / "llava_llama3_fp16.safetensors"))
    save_file(comfy_llama_fp8_scaled(comfy), str(root / "llava_llama3_fp8_scaled.safetensors"))
    clip_state = {f"text_model.{k.removeprefix('text_model.')}": v for k, v in clip.state_dict().items()}
    clip_state["text_projection.weight"] = torch.randn(32, 32)  # present in ComfyUI's clip_l, unused
    save_file(clip_state, str(root / "clip_l.safetensors"))
    return {
        "root": root, "llama": llama, "clip": clip, "llama_tokenizer": llama_tok, "clip_tokenizer": clip_tok,
        "llm_folder": llm_folder, "clip_folder": clip_folder,
        "llm_fp16": root / "llava_llama3_fp16.safetensors",
        "llm_fp8": root / "llava_llama3_fp8_scaled.safetensors",
        "clip_l": root / "clip_l.safetensors",
    }


@pytest.fixture(scope="session")
def folder_encoder(text_files):
    from hyvideo_core.text.loader import load_text_encoder
    if "encoder" not in _BUILT:
        _BUILT["encoder"] = load_text_encoder(text_files["llm_folder"], text_files["clip_folder"],
                                              dtype=torch.float32, device="cpu")
    return _BUILT["encoder"]


def test_tiny_tokenizer_has_llama3_chat_tokens(text_files):
    tok = load_tokenizer(text_files["llama_tokenizer"])
    for token in LLAMA_SPECIALS:
        assert len(tok(token, add_special_tokens=False)["input_ids"]) == 1
    ids = tok("<|start_header_id|>user<|end_header_id|>\n\na cat<|eot_id|>")["input_ids"]
    assert ids[0] == tok.bos_token_id and ids[1] == tok.convert_tokens_to_ids("<|start_header_id|>")
    assert len(tok) <= tiny_llama_config().vocab_size
