"""The VAE against the reference's golden vectors and against diffusers' AutoencoderKLHunyuanVideo."""
from __future__ import annotations

import pytest
import torch

import hyvideo_core
from hyvideo_core.vae import SCALING_FACTOR, TileSpec, attention, layers
from conftest import golden_json, golden_path, golden_tensors

pytestmark = pytest.mark.usefixtures("one_thread")

ATOL = 1e-4


def reference_tiles(tile_latent_min_size: int, tile_latent_min_tsize: int, tile_overlap_factor: float,
                    **sample_sizes) -> TileSpec:
    """The reference VAE's tiling attributes (AutoencoderKLCausal3D) as a TileSpec: latent tiles
    and the latents they overlap by, times the 8x / 4x compression."""
    overlap = tile_latent_min_size - int(tile_latent_min_size * (1 - tile_overlap_factor))
    temporal_overlap = tile_latent_min_tsize - int(tile_latent_min_tsize * (1 - tile_overlap_factor))
    return TileSpec(spatial=tile_latent_min_size * 8, spatial_overlap=overlap * 8,
                    temporal=tile_latent_min_tsize * 4, temporal_overlap=temporal_overlap * 4)


@pytest.fixture(scope="module")
def diffusers_vae():
    diffusers = pytest.importorskip("diffusers")
    config = golden_json("vae", "config.json")
    model = diffusers.AutoencoderKLHunyuanVideo(
        in_channels=3, out_channels=3, latent_channels=config["latent_channels"],
        block_out_channels=tuple(config["block_out_channels"]), layers_per_block=config["layers_per_block"],
        norm_num_groups=config["norm_num_groups"], scaling_factor=config["scaling_factor"])
    model.load_state_dict(golden_tensors("vae", "weights.safetensors"), strict=True)
    # diffusers decodes frame-wise (4+1 latent frames per call) by default: a different result.
    model.use_framewise_decoding = False
    model.use_framewise_encoding = False
    return model.eval()


def test_encode_matches_reference(vae):
    case = golden_tensors("vae", "cases", "encode.safetensors")
    posterior = vae.encode(case["video"])
    torch.testing.assert_close(posterior.mean, case["latent_mean"], atol=ATOL, rtol=0)
    torch.testing.assert_close(posterior.logvar, case["latent_logvar"], atol=ATOL, rtol=0)
    torch.testing.assert_close(posterior.mode(), case["latent_mode"], atol=ATOL, rtol=0)
    torch.testing.assert_close(posterior.std, case["latent_std"], atol=ATOL, rtol=0)


def test_decode_matches_reference(vae):
    case = golden_tensors("vae", "cases", "decode.safetensors")
    torch.testing.assert_close(vae.decode(case["latent"]), case["video"], atol=ATOL, rtol=0)


def test_reference_tiled_decode_with_recorded_settings(vae):
    case = golden_tensors("vae", "cases", "tiled_decode.safetensors")
    settings = golden_json("vae", "cases.json")["tiled_decode"]["attributes_set"]
    tiles = reference_tiles(**settings)
    assert tiles == TileSpec(spatial=32, spatial_overlap=8, temporal=16, temporal_overlap=4)
    out = vae.decode(case["latent"], tiling=tiles)
    # The tiled result differs from an untiled decode by up to 1.86, so this checks the blending.
    torch.testing.assert_close(out, case["video"], atol=ATOL, rtol=0)


def test_streamed_layers_equal_plain_path(vae, monkeypatch):
    """Large tensors take the time-chunked conv and frame-chunked attention paths; force them."""
    case = golden_tensors("vae", "cases", "decode.safetensors")
    video = golden_tensors("vae", "cases", "encode.safetensors")["video"][:, :, :5, :24, :32]
    plain = vae.encode(video).mean
    monkeypatch.setattr(layers, "STREAM_CHUNK_BYTES", 3000)
    monkeypatch.setattr(attention, "SMALL_MASKED_ELEMENTS", 0)
    monkeypatch.setattr(attention, "SCORE_BLOCK_ELEMENTS", 700)
    torch.testing.assert_close(vae.decode(case["latent"]), case["video"], atol=ATOL, rtol=0)
    torch.testing.assert_close(vae.encode(video).mean, plain, atol=1e-5, rtol=0)


def test_decode_equals_diffusers(vae, diffusers_vae):
    latent = torch.randn(2, 16, 3, 4, 6, generator=torch.Generator().manual_seed(11))
    ours = vae.decode(latent)
    assert ours.shape == (2, 3, 9, 32, 48)
    with torch.no_grad():
        for i in range(2):  # diffusers' own batch-of-2 result differs from its batch-of-1 by ~1e-5
            theirs = diffusers_vae.decode(latent[i:i + 1]).sample
            torch.testing.assert_close(ours[i:i + 1], theirs, atol=1e-5, rtol=0)


def test_encode_equals_diffusers(vae, diffusers_vae):
    video = torch.rand(1, 3, 9, 32, 48, generator=torch.Generator().manual_seed(12)) * 2 - 1
    ours = vae.encode(video)
    with torch.no_grad():
        theirs = diffusers_vae.encode(video).latent_dist
    torch.testing.assert_close(ours.mean, theirs.mean, atol=1e-5, rtol=0)
    torch.testing.assert_close(ours.logvar, theirs.logvar, atol=1e-5, rtol=0)


def test_posterior_sample_uses_generator(vae):
    video = golden_tensors("vae", "cases", "encode.safetensors")["video"]
    posterior = vae.encode(video)
    first = posterior.sample(torch.Generator().manual_seed(3))
    again = posterior.sample(torch.Generator().manual_seed(3))
    other = posterior.sample(torch.Generator().manual_seed(4))
    noise = torch.randn(posterior.mean.shape, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(first, posterior.mean + posterior.std * noise)
    assert torch.equal(first, again) and not torch.equal(first, other)


def test_logvar_is_clamped():
    from hyvideo_core.vae.posterior import DiagonalGaussian
    moments = torch.tensor([0.0, 0.0, -50.0, 40.0]).view(1, 4, 1, 1, 1)
    posterior = DiagonalGaussian.from_moments(moments)
    assert posterior.logvar.flatten().tolist() == [-30.0, 20.0]


def test_scaling_factor_is_the_samplers_latent_scale(vae):
    from hyvideo_core.sampling import LATENT_SCALE
    assert vae.config.scaling_factor == SCALING_FACTOR == LATENT_SCALE == 0.476986


def test_bf16_decode_is_close():
    vae16 = hyvideo_core.load_vae(golden_path("vae", "weights.safetensors"),
                                  config=golden_json("vae", "config.json"), dtype="bf16")
    case = golden_tensors("vae", "cases", "decode.safetensors")
    out = vae16.decode(case["latent"])
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), case["video"], atol=0.15, rtol=0)
