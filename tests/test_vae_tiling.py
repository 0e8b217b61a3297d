"""Tiled VAE decode/encode: exact geometry for any tiles, no seams, PSNR, auto tiles, OOM fallback."""
from __future__ import annotations

import logging
import math

import pytest
import torch
import torch.nn.functional as F

import hyvideo_core
from hyvideo_core.errors import InvalidInputError, OutOfMemoryError
from hyvideo_core.vae import TileSpec, VAEConfig
from hyvideo_core.vae.memory import estimate_decode_bytes
from hyvideo_core.vae.tile_choice import choose_decode_tiles, smaller_tiles
from hyvideo_core.vae.tiling import decode_tile_count, snap_tiles, tiled_decode, tiled_encode
from conftest import golden_json, golden_path

pytestmark = pytest.mark.usefixtures("one_thread")

SETTINGS = [  # (spatial px, overlap, temporal frames, overlap): non-default temporal sizes included
    TileSpec(32, 8, 8, 4),
    TileSpec(40, 16, 4, 0),
    TileSpec(32, 16, 12, 8),
]


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR of the 0..1 images the user sees."""
    a, b = (a / 2 + 0.5).clamp(0, 1), (b / 2 + 0.5).clamp(0, 1)
    return 10 * math.log10(1.0 / max(F.mse_loss(a, b).item(), 1e-20))


# --- geometry: the VAE's own resampling (nearest x8 in space, causal x4 in time) tiles exactly --
def _decoder_geometry(z):
    video = torch.cat([z[:, :, :1], z[:, :, 1:].repeat_interleave(4, dim=2)], dim=2)
    return video.repeat_interleave(8, 3).repeat_interleave(8, 4)[:, :3]


def _encoder_geometry(x):
    return x[:, :, ::4, ::8, ::8].repeat(1, 2, 1, 1, 1)


@pytest.mark.parametrize("tiles", SETTINGS + [TileSpec(56, 48, 20, 16), TileSpec(48, 0, 8, 0),
                                               TileSpec(None, 0, 8, 4), TileSpec(40, 8, None, 0),
                                               TileSpec(256, 64, 64, 16)])
@pytest.mark.parametrize("frames", [1, 2, 3, 6, 11])
def test_tile_geometry_is_exact_for_any_tiles(tiles, frames):
    """Every output lands where an untiled pass puts it: seams line up for any size/overlap."""
    config = VAEConfig()
    g = torch.Generator().manual_seed(frames)
    z = torch.randn(1, 16, frames, 7, 13, generator=g)
    torch.testing.assert_close(tiled_decode(z, _decoder_geometry, tiles, config), _decoder_geometry(z),
                               atol=1e-6, rtol=0)
    x = torch.randn(1, 3, 4 * (frames - 1) + 1, 56, 104, generator=g)
    torch.testing.assert_close(tiled_encode(x, _encoder_geometry, tiles, config), _encoder_geometry(x),
                               atol=1e-6, rtol=0)


# --- the real (tiny) VAE --------------------------------------------------------------------
@pytest.mark.parametrize("tiles", SETTINGS)
def test_constant_latent_decodes_without_seams(vae, tiles):
    """A constant latent decodes to a constant video, so any seam (weights not summing to one,
    a missing or doubled region) shows up as a deviation. Tolerance: GroupNorm statistics over
    tiles of other sizes round differently (~3e-5 after the whole decoder); a seam is O(0.1)."""
    values = torch.randn(1, 16, 1, 1, 1, generator=torch.Generator().manual_seed(2))
    latent = values.expand(1, 16, 3, 6, 6).contiguous()
    untiled = vae.decode(latent)
    tiled = vae.decode(latent, tiling=tiles)
    assert tiled.shape == untiled.shape == (1, 3, 9, 48, 48)
    torch.testing.assert_close(tiled, untiled, atol=1e-4, rtol=0)
    per_channel = tiled.flatten(2)
    assert (per_channel.amax(-1) - per_channel.amin(-1)).max() < 1e-4


def test_spatial_tiling_is_exact_on_spatially_constant_latent(vae):
    """Constant in space, varying in time: every spatial tile sees the same field, so spatial
    tiling must reproduce the untiled decode exactly (checks the 2-D blend bookkeeping)."""
    latent = torch.randn(1, 16, 3, 1, 1, generator=torch.Generator().manual_seed(3)).expand(1, 16, 3, 7, 5)
    torch.testing.assert_close(vae.decode(latent, tiling=TileSpec(32, 8, None, 0)), vae.decode(latent),
                               atol=1e-4, rtol=0)


def test_tiled_vs_untiled_psnr_on_smooth_latent(vae, record_property, capsys):
    coarse = torch.randn(1, 16, 2, 3, 3, generator=torch.Generator().manual_seed(4))
    latent = F.interpolate(coarse, size=(3, 6, 6), mode="trilinear", align_corners=True)
    untiled = vae.decode(latent)
    scores = {}
    for tiles in SETTINGS + [TileSpec(None, 0, 8, 4)]:
        scores[tiles.describe()] = psnr(vae.decode(latent, tiling=tiles), untiled)
    record_property("psnr_db", scores)
    with capsys.disabled():
        print("\nVAE tiled vs untiled PSNR (tiny random-weight VAE):",
              ", ".join(f"{k}: {v:.1f} dB" for k, v in scores.items()))
    # Random tiny weights make GroupNorm statistics very tile-dependent: the reference's own
    # tiling scores ~16 dB on its golden case. Exactness of the tiling is checked above.
    assert min(scores.values()) > 12.0


def test_tiled_encode_constant_video_equals_untiled(vae):
    video = torch.rand(1, 3, 1, 1, 1, generator=torch.Generator().manual_seed(5)).expand(1, 3, 9, 48, 48)
    untiled = vae.encode(video)
    tiled = vae.encode(video, tiling=TileSpec(32, 8, 4, 0))
    torch.testing.assert_close(tiled.mean, untiled.mean, atol=1e-4, rtol=0)
    torch.testing.assert_close(tiled.logvar, untiled.logvar, atol=1e-4, rtol=0)


# --- out-of-memory fallback and auto tiles ---------------------------------------------------
def _fail_first_call(vae, monkeypatch, failures=1):
    real = vae._decode_plain
    calls = {"n": 0}

    def flaky(latent):
        calls["n"] += 1
        if calls["n"] <= failures:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB (injected)")
        return real(latent)

    monkeypatch.setattr(vae, "_decode_plain", flaky)
    return calls


def test_oom_on_first_attempt_retries_with_smaller_tiles(vae, monkeypatch, caplog):
    latent = torch.randn(1, 16, 3, 6, 6, generator=torch.Generator().manual_seed(6))
    _fail_first_call(vae, monkeypatch)
    with caplog.at_level(logging.WARNING):
        video = vae.decode(latent)
    report = vae.last_decode_report
    assert report.failed and report.failed[0][0] == "one pass (untiled)"
    assert "injected" in report.failed[0][1]
    assert report.tiles is not None
    assert "retrying with" in caplog.text and report.tiles.describe() in caplog.text
    monkeypatch.undo()
    torch.testing.assert_close(video, vae.decode_once(latent, report.tiles), atol=0, rtol=0)


def test_oom_everywhere_gives_a_clear_error(vae, monkeypatch):
    latent = torch.randn(1, 16, 3, 6, 6)
    _fail_first_call(vae, monkeypatch, failures=10**6)
    with pytest.raises(OutOfMemoryError, match="no smaller tiles are left") as info:
        vae.decode(latent)
    assert len(info.value.suggestion.failed) >= 2


def test_oom_fallback_halves_spatial_then_temporal():
    config = VAEConfig()
    shape = (1, 16, 33, 90, 160)  # 720p, 129 frames
    steps, tiles = [], None
    while True:
        tiles = smaller_tiles(tiles, shape, config)
        if tiles is None:
            break
        steps.append((tiles.spatial, tiles.temporal))
    assert steps[:3] == [(256, 64), (128, 64), (64, 64)]
    assert steps[3:7] == [(64, 32), (64, 16), (64, 8), (64, 4)]
    assert steps[-1] == (32, 4)


def test_auto_tiles_fit_the_budget(vae):
    shape = (1, 16, 9, 32, 32)
    untiled_need = estimate_decode_bytes(vae.config, (9, 32, 32), 4)
    tiles, budget, need = choose_decode_tiles(vae, shape, budget=untiled_need * 10)
    assert tiles is None and need <= budget
    tiles, budget, need = choose_decode_tiles(vae, shape, budget=untiled_need // 4)
    assert tiles is not None and need <= budget
    smaller, _, smaller_need = choose_decode_tiles(vae, shape, budget=untiled_need // 16)
    assert smaller_need < need


def test_auto_decode_runs_and_reports(vae):
    latent = torch.randn(1, 16, 3, 6, 6, generator=torch.Generator().manual_seed(7))
    need = estimate_decode_bytes(vae.config, (3, 6, 6), 4)
    video = vae.decode(latent, tiling="auto", memory_budget=need // 3)
    report = vae.last_decode_report
    assert report.tiles is not None and report.budget_bytes == need // 3
    torch.testing.assert_close(video, vae.decode_once(latent, report.tiles), atol=0, rtol=0)


def test_auto_encode_fits_the_budget(vae):
    from hyvideo_core.vae.memory import estimate_encode_bytes
    from hyvideo_core.vae.tile_choice import choose_encode_tiles
    video = torch.rand(1, 3, 9, 48, 48, generator=torch.Generator().manual_seed(8)) * 2 - 1
    need = estimate_encode_bytes(vae.config, (9, 48, 48), 4)
    assert choose_encode_tiles(vae, video.shape, budget=need) is None
    tiles = choose_encode_tiles(vae, video.shape, budget=need // 3)
    assert tiles is not None
    posterior = vae.encode(video, tiling="auto", memory_budget=need // 3)
    torch.testing.assert_close(posterior.mean, vae.encode(video, tiling=tiles).mean, atol=0, rtol=0)


# --- tile settings ---------------------------------------------------------------------------
def test_tiles_below_minimum_are_rejected():
    with pytest.raises(InvalidInputError, match="below the minimum of 32 pixels"):
        TileSpec(spatial=16, spatial_overlap=0)
    with pytest.raises(InvalidInputError, match="below the minimum of 4 frames"):
        TileSpec(temporal=2, temporal_overlap=0)
    with pytest.raises(InvalidInputError, match="smaller than the spatial tile"):
        TileSpec(spatial=64, spatial_overlap=64)


def test_tiles_are_snapped_to_latent_units_with_a_warning(caplog):
    with caplog.at_level(logging.WARNING):
        tiles = snap_tiles(TileSpec(100, 30, 30, 9), VAEConfig())
    assert tiles == TileSpec(96, 24, 28, 8)
    assert "snapped" in caplog.text


def test_decode_reports_progress_per_tile_and_can_be_stopped():
    vae = hyvideo_core.load_vae(golden_path("vae", "weights.safetensors"), config=golden_json("vae", "config.json"),
                                dtype=torch.float32)
    latent = torch.randn(1, 16, 5, 8, 8)
    tiles = TileSpec(32, 8, 8, 4)
    seen = []
    vae.decode(latent, tiling=tiles, progress=lambda done, total: seen.append((done, total)))
    total = decode_tile_count(latent.shape, snap_tiles(tiles, vae.config), vae.config)
    assert total > 4 and seen == [(i, total) for i in range(1, total + 1)]

    class Stop(Exception):
        pass

    def stop_at_two(done, _total):
        if done == 2:
            raise Stop

    with pytest.raises(Stop):
        vae.decode(latent, tiling=tiles, progress=stop_at_two)
    seen.clear()
    vae.decode(latent, progress=lambda done, total: seen.append((done, total)))
    assert seen == [(1, 1)]
