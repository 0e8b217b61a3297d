"""One memory model per component: the planner's VAE decode terms are the tile chooser's figures,
and the text encode need is one function over the towers as stored."""
from __future__ import annotations

import logging
import math
from types import SimpleNamespace

import pytest
import torch

from hyvideo_core.runtime.placement import module_bytes
from hyvideo_core.runtime.planner import PlanInputs, plan
from hyvideo_core.vae.config import PRESETS as VAE_PRESETS
from hyvideo_core.vae.memory import DEFAULT_CONFIG, decode_memory, decode_tile_shape, estimate_decode_bytes
from hyvideo_core.vae.vae import vae_weight_bytes
from hyvideo_core.vae.tile_choice import choose_decode_tiles, tiles_of
from hyvideo_core.vae.vae import HunyuanVideoVAE

TILE = "VAE decode tile activations"
VIDEO = "VAE decoded video on device"
WEIGHTS = "VAE decode weights"

# (width, height, frames, tile px, tile frames) -> the latent tile the decode runs
CASES = [
    ((256, 256, 17, 256, 64), (5, 32, 32)),      # the reference tile: 17 frames of 256x256, one pass
    ((1280, 720, 129, 256, 64), (17, 32, 32)),   # the reference tiles on 720p
    ((960, 544, 129, 128, 32), (9, 16, 16)),
    ((512, 512, 65, 128, 32), (9, 16, 16)),
    ((1280, 720, 129, None, None), (33, 90, 160)),
]


@pytest.fixture(scope="module")
def meta_vae():
    """The official VAE's architecture in fp16 on the meta device (no memory, no weights)."""
    with torch.device("meta"):
        return HunyuanVideoVAE(DEFAULT_CONFIG).to(torch.float16)


def _plan(size, **changes):
    width, height, frames, px, tile_frames = size
    return plan(PlanInputs(weight_format="fp8_scaled", width=width, height=height, frames=frames, vae_tile_px=px,
                           vae_tile_frames=tile_frames, vae_dtype=torch.float16, unload_dit_for_decode=True,
                           **changes))


def _latent(size):
    width, height, frames, *_ = size
    return (frames - 1) // 4 + 1, height // 8, width // 8


@pytest.mark.parametrize("size,tile", CASES)
def test_planner_decode_terms_are_the_vae_memory_model(size, tile):
    tiles = tiles_of(size[3], size[4])
    assert decode_tile_shape(DEFAULT_CONFIG, _latent(size), tiles) == tile
    breakdown = _plan(size).breakdown
    assert breakdown[TILE] == estimate_decode_bytes(DEFAULT_CONFIG, tile, 2)
    need = decode_memory(DEFAULT_CONFIG, _latent(size), tiles, 2, output_on_device=False)
    assert (breakdown[TILE], breakdown[VIDEO]) == (need.tile, need.video)


def test_reference_tile_figures():
    """The calibrated estimate (ALLOCATOR_OVERHEAD 1.4) for the reference tiles in fp16."""
    assert estimate_decode_bytes(DEFAULT_CONFIG, (5, 32, 32), 2) / 2**30 == pytest.approx(1.62, abs=0.01)
    assert estimate_decode_bytes(DEFAULT_CONFIG, (17, 32, 32), 2) / 2**30 == pytest.approx(5.82, abs=0.01)
    assert _plan((256, 256, 17, 256, 64)).breakdown[VIDEO] == 0   # one pass: the video is the decoder's output


@pytest.mark.parametrize("size,tile", CASES)
def test_tile_chooser_accepts_what_the_planner_says_fits(size, tile, meta_vae, caplog):
    p = _plan(size)
    budget = p.decode_peak - p.breakdown[WEIGHTS]   # free once the VAE is loaded (the DiT is unloaded)
    assert budget == p.breakdown[TILE] + p.breakdown[VIDEO]
    shape = (1, 16) + _latent(size)
    with caplog.at_level(logging.WARNING, logger="hyvideo_core.vae.tile_choice"):
        chosen, _, need = choose_decode_tiles(meta_vae, shape, budget=budget, output_device="cpu")
    assert need <= budget and "even the smallest tiles" not in caplog.text
    # the planner's tiles fit, so the chooser takes tiles at least as large
    assert math.prod(decode_tile_shape(DEFAULT_CONFIG, shape[2:], chosen)) >= math.prod(tile)
    # one byte less and the planner's tiles no longer fit the chooser's model either
    smaller, _, _ = choose_decode_tiles(meta_vae, shape, budget=budget - 1, output_device="cpu")
    assert decode_tile_shape(DEFAULT_CONFIG, shape[2:], smaller) != tile


@pytest.mark.parametrize("size", [(256, 256, 17, 256, 64), (512, 512, 65, 128, 32)])
def test_chooser_picks_the_planner_tiles_at_the_planner_figure(size, meta_vae):
    p = _plan(size)
    budget = p.breakdown[TILE] + p.breakdown[VIDEO]
    chosen, _, need = choose_decode_tiles(meta_vae, (1, 16) + _latent(size), budget=budget, output_device="cpu")
    assert decode_tile_shape(DEFAULT_CONFIG, _latent(size), chosen) == \
        decode_tile_shape(DEFAULT_CONFIG, _latent(size), tiles_of(size[3], size[4]))
    assert need == budget


def test_decoded_video_is_counted_where_it_is_assembled(meta_vae):
    """output_device="cpu" (nodes, pipeline): the device holds the chunk/strips being assembled;
    assembled on the device: also the whole video in the VAE's dtype (not float32)."""
    size = (1280, 720, 129, 256, 64)
    in_ram, on_gpu = _plan(size), _plan(size, vae_output_on_device=True)
    assert 0 < in_ram.breakdown[VIDEO] < on_gpu.breakdown[VIDEO]
    assert on_gpu.breakdown[VIDEO] - in_ram.breakdown[VIDEO] == 3 * 129 * 720 * 1280 * 2
    budget = on_gpu.breakdown[TILE] + on_gpu.breakdown[VIDEO]
    _, _, need = choose_decode_tiles(meta_vae, (1, 16) + _latent(size), budget=budget)  # output on its device
    assert need <= budget
    # the chunk being assembled is one temporal tile (65 frames) of full 720p frames
    assert in_ram.breakdown[VIDEO] >= 3 * 65 * 720 * 1280 * 2


def test_batch_does_not_grow_the_tile():
    one, two = _plan((960, 544, 129, 256, 64)), _plan((960, 544, 129, 256, 64), batch=2)
    assert one.breakdown[TILE] == two.breakdown[TILE]       # samples are decoded one at a time


def test_vae_weights_are_counted_from_the_config():
    assert vae_weight_bytes(DEFAULT_CONFIG, torch.float16) == 246_478_803 * 2   # SPEC 3.1
    assert _plan((1280, 720, 129, 256, 64)).breakdown[WEIGHTS] == 246_478_803 * 2
    tiny = VAE_PRESETS["tiny"]
    assert vae_weight_bytes(tiny, torch.float32) == module_bytes(HunyuanVideoVAE(tiny))
    assert vae_weight_bytes(tiny, torch.float32, with_encoder=False) == module_bytes(
        HunyuanVideoVAE(tiny, with_encoder=False))


# --- text towers -------------------------------------------------------------------------------------

def _towers(fp8: bool = False):
    from transformers import CLIPTextConfig, CLIPTextModel, LlamaConfig, LlamaModel
    torch.manual_seed(0)
    llama = LlamaModel(LlamaConfig(vocab_size=100, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2)).eval()
    clip = CLIPTextModel(CLIPTextConfig(vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                        num_attention_heads=2, max_position_embeddings=77)).eval()
    if fp8:
        for layer in llama.modules():
            if isinstance(layer, torch.nn.Linear):
                layer.weight.data = layer.weight.data.to(torch.float8_e4m3fn)
    return SimpleNamespace(llm=SimpleNamespace(model=llama), clip=SimpleNamespace(model=clip, max_length=77),
                           crop_start=lambda template="video": 5)


def test_text_encode_need_is_the_larger_visit():
    from hyvideo_core.text.memory import WORKSPACE, encode_device_bytes, tower_activation_bytes
    enc = _towers()
    # Llama (fp32), 2 prompts of 5 + 10 tokens: T = 30, D = 64, kv = 32, I = 128, 4 heads
    t, tokens = 30, 15
    attention = 6 * t * 64 + 2 * t * 32 + 2 * 2 * 4 * tokens ** 2
    expected = (2 * t * 64 + max(attention, 3 * t * 128) + 2 * tokens ** 2) * 4
    assert tower_activation_bytes(enc.llm.model, 2, tokens) == expected
    llm = module_bytes(enc.llm.model) + expected
    clip = module_bytes(enc.clip.model) + tower_activation_bytes(enc.clip.model, 2, 77)
    assert encode_device_bytes(enc, text_len=10) == max(llm, clip) + WORKSPACE
    assert encode_device_bytes(enc, text_len=10, prompts=1) < encode_device_bytes(enc, text_len=10)


def test_text_encode_counts_fp8_weights_as_stored():
    from hyvideo_core.text.memory import tower_activation_bytes, tower_device_bytes
    plain, fp8 = _towers().llm.model, _towers(fp8=True).llm.model
    linear = sum(m.weight.numel() for m in plain.modules() if isinstance(m, torch.nn.Linear))
    assert module_bytes(plain) - module_bytes(fp8) == 3 * linear           # 4 -> 1 byte a weight
    largest = max(m.weight.numel() for m in plain.modules() if isinstance(m, torch.nn.Linear))
    assert tower_activation_bytes(fp8, 2, 15) - tower_activation_bytes(plain, 2, 15) == 8 * largest
    assert tower_device_bytes(fp8, 2, 15) == module_bytes(fp8) + tower_activation_bytes(fp8, 2, 15)
