"""An embedded tiny demo model set: the real architectures at toy size with random weights.

`write_demo_models(folder)` writes the files users have (DiT and VAE safetensors with official
keys, the Llama and CLIP text towers as Hugging Face folders with their tokenizers)
so `hyvideo generate --demo` runs the whole pipeline — loading, text encoding, sampling,
decoding, video writing — offline in seconds. The same builders make the test fixtures.

The tokenizers are byte-level BPE models trained here on the prompt templates, with the
special tokens Llama-3 and CLIP use; no tokenizer can be downloaded on a machine without a
model hub, and the `tokenizers` library trains one in milliseconds.
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file

from .model.config import PRESETS
from .model.transformer import HunyuanVideoTransformer
from .text.templates import DEFAULT_NEGATIVE_PROMPT, IMAGE_TEMPLATE_TEXT, VIDEO_TEMPLATE_TEXT
from .vae.config import PRESETS as VAE_PRESETS
from .vae.vae import HunyuanVideoVAE

DEMO_PROMPT = "A cat walks on the grass, realistic style."
LLAMA_SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>",
                  "<|eot_id|>", "<pad>"]
CLIP_SPECIALS = ["<|startoftext|>", "<|endoftext|>"]
CORPUS = [VIDEO_TEMPLATE_TEXT, IMAGE_TEMPLATE_TEXT, DEFAULT_NEGATIVE_PROMPT, DEMO_PROMPT,
          "a red fox jumps over a lazy dog at sunset"] * 2


@dataclass(frozen=True)
class DemoModels:
    dit: Path
    vae: Path    # folder: config.json (the group count is not in the weights) + weights
    llm: Path    # folder: config, weights, tokenizer
    clip: Path   # folder: config, weights, tokenizer


DEMO_VERSION = 1  # bump when the builders change, so cached demo folders are rebuilt


def write_demo_models(folder: str | Path, seed: int = 0) -> DemoModels:
    """The tiny model set in a ComfyUI-style models folder, built once per folder and version.

    It is written to a temporary sibling and renamed into place, so an interrupted or
    concurrent build never leaves a half-written set behind."""
    folder = Path(folder) / f"v{DEMO_VERSION}-seed{seed}"
    if not folder.exists():
        staging = folder.with_name(f"{folder.name}.partial-{os.getpid()}")
        shutil.rmtree(staging, ignore_errors=True)
        try:
            _write(_files(staging), seed)
            staging.rename(folder)
        except OSError:
            if not folder.exists():
                raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return _files(folder)


def _files(folder: Path) -> DemoModels:
    return DemoModels(
        dit=folder / "diffusion_models" / "hyvideo_demo_dit.safetensors",
        vae=folder / "vae" / "hyvideo-demo-vae",
        llm=folder / "text_encoders" / "hyvideo-demo-llm",
        clip=folder / "text_encoders" / "hyvideo-demo-clip",
    )


def _write(files: DemoModels, seed: int) -> None:
    for path in (files.dit.parent, files.vae):
        path.mkdir(parents=True, exist_ok=True)
    save_file(demo_dit_state(seed), str(files.dit))
    save_file(demo_vae_state(seed), str(files.vae / "diffusion_pytorch_model.safetensors"))
    tiny = VAE_PRESETS["tiny"]
    (files.vae / "config.json").write_text(json.dumps({
        "block_out_channels": list(tiny.block_out_channels), "layers_per_block": tiny.layers_per_block,
        "norm_num_groups": tiny.norm_num_groups, "latent_channels": tiny.latent_channels}))
    tiny_llama(seed).save_pretrained(str(files.llm))
    save_llama_tokenizer(files.llm)
    save_clip_tokenizer(files.clip)
    tiny_clip(seed, clip_eos_id(files.clip)).save_pretrained(str(files.clip))


# -- DiT and VAE -------------------------------------------------------------------------------
def demo_dit_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """The tiny DiT (golden test architecture) with every weight random, zero-inits included,
    so all blocks shape the output (scaled like the reference's init)."""
    gen = torch.Generator().manual_seed(seed)
    model = HunyuanVideoTransformer(PRESETS["tiny"])
    state = {}
    for name, tensor in model.state_dict().items():
        if tensor.ndim >= 2:
            fan_in = tensor[0].numel()
            value = torch.randn(tensor.shape, generator=gen) / fan_in ** 0.5
        elif name.endswith("norm.weight") or "norm1" in name or "norm2" in name or "_norm" in name:
            value = 1 + 0.1 * torch.randn(tensor.shape, generator=gen)
        else:
            value = 0.1 * torch.randn(tensor.shape, generator=gen)
        state[name] = value.contiguous()
    return state


def demo_vae_state(seed: int = 0) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return {k: v.contiguous() for k, v in HunyuanVideoVAE(VAE_PRESETS["tiny"]).state_dict().items()}


# -- text towers and tokenizers ----------------------------------------------------------------
def _bpe(specials: list[str], single: str, vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS, trainer)
    tok.post_processor = processors.TemplateProcessing(
        single=single, special_tokens=[(s, tok.token_to_id(s)) for s in specials])
    return tok


def save_llama_tokenizer(folder: Path) -> Path:
    """A Llama-3-style tokenizer (BOS added by the post-processor, chat header tokens)."""
    from transformers import PreTrainedTokenizerFast

    tok = _bpe(LLAMA_SPECIALS, "<|begin_of_text|> $A", 600)
    PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|begin_of_text|>", eos_token="<|end_of_text|>",
                            pad_token="<pad>").save_pretrained(str(folder))
    return folder


def save_clip_tokenizer(folder: Path) -> Path:
    from transformers import PreTrainedTokenizerFast

    tok = _bpe(CLIP_SPECIALS, "<|startoftext|> $A <|endoftext|>", 500)
    PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|startoftext|>", eos_token="<|endoftext|>",
                            pad_token="<|endoftext|>").save_pretrained(str(folder))
    return folder


def clip_eos_id(tokenizer_folder: Path) -> int:
    from transformers import PreTrainedTokenizerFast
    return PreTrainedTokenizerFast.from_pretrained(str(tokenizer_folder)).eos_token_id


def tiny_llama_config(vocab_size: int = 640):
    from transformers import LlamaConfig
    # Hidden 64 = the tiny DiT's text width; initializer_range 0.2 so every layer matters.
    return LlamaConfig(vocab_size=vocab_size, hidden_size=64, intermediate_size=96, num_hidden_layers=5,
                       num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=1024,
                       rms_norm_eps=1e-5, rope_theta=500000.0, initializer_range=0.2,
                       bos_token_id=0, eos_token_id=1, pad_token_id=5)


def tiny_clip_config(eos_token_id: int, vocab_size: int = 520):
    from transformers import CLIPTextConfig
    # Hidden 32 = the tiny DiT's pooled-text width.
    return CLIPTextConfig(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                          num_attention_heads=2, max_position_embeddings=77, hidden_act="quick_gelu",
                          initializer_range=0.2, bos_token_id=0, eos_token_id=eos_token_id, pad_token_id=eos_token_id)


def tiny_llama(seed: int = 0):
    from transformers import LlamaForCausalLM
    torch.manual_seed(seed)
    return LlamaForCausalLM(tiny_llama_config()).eval()


def tiny_clip(seed: int, eos_token_id: int):
    from transformers import CLIPTextModel
    torch.manual_seed(seed + 1)
    return CLIPTextModel(tiny_clip_config(eos_token_id)).eval()
