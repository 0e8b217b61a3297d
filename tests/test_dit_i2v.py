"""The HunyuanVideo-I2V DiT variants (SPEC_NEXT 2.1, 2.3, 2.4) against diffusers'
HunyuanVideoTransformer3DModel on identical tiny random weights, and token_replace under the
speed features (fp8 / GGUF layers, block swap, sequence parallelism on gloo).

- latent_concat (33 channels, no guidance_in) and SkyReels-V1 I2V (32 channels) are the plain DiT
  with a wider patch embed;
- token_replace (16 channels) is the run option `model.image_condition = TokenReplace()`.
"""
from __future__ import annotations


import pytest
import torch
from gguf import GGMLQuantizationType as Q

import hyvideo_core
from conftest import golden_path
from gguf_write import write_gguf
from gloo_ranks import GROUP_TIMEOUT, run_suite
from hyvideo_core.errors import InvalidInputError
from hyvideo_core.model import ImageCondition, TokenReplace
from hyvideo_core.model.config import PRESETS
from hyvideo_core.model.transformer import HunyuanVideoTransformer, Unsplit
from hyvideo_core.runtime.block_swap import BlockSwap
from hyvideo_core.weights.diffusers_names import to_diffusers
from hyvideo_core.weights.storage import storage_for

diffusers = pytest.importorskip("diffusers")
pytestmark = pytest.mark.usefixtures("one_thread")

TINY = PRESETS["tiny"]


# -- models and inputs ---------------------------------------------------------------------------
def random_model(config, seed: int = 11) -> HunyuanVideoTransformer:
    """A tiny DiT whose every weight is random and O(0.1) (the default init leaves the output
    dominated by a few terms; these make every path matter)."""
    torch.manual_seed(seed)
    model = HunyuanVideoTransformer(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * 0.1)
    return model


def diffusers_model(model, image_condition_type):
    cfg = model.config
    reference = diffusers.HunyuanVideoTransformer3DModel(
        in_channels=cfg.in_channels, out_channels=cfg.out_channels, num_attention_heads=cfg.heads,
        attention_head_dim=cfg.head_dim, num_layers=cfg.double_blocks, num_single_layers=cfg.single_blocks,
        num_refiner_layers=cfg.refiner_blocks, mlp_ratio=cfg.mlp_ratio, patch_size=cfg.patch_size[1],
        patch_size_t=cfg.patch_size[0], guidance_embeds=cfg.guidance_embed, text_embed_dim=cfg.text_dim,
        pooled_projection_dim=cfg.pooled_text_dim, rope_theta=cfg.rope_theta, rope_axes_dim=cfg.rope_dims,
        image_condition_type=image_condition_type)
    reference.load_state_dict(to_diffusers(model.state_dict(), cfg.hidden_size), strict=True)
    return reference.eval()


def inputs(config, shape, valid: list[int] | None, text_len: int = 7, seed: int = 5):
    """(x, t, text, mask, pooled, guidance) for `shape` = (B, C, T, H, W); `valid` = real text
    tokens per sample (trailing padding), None = no mask."""
    g = torch.Generator().manual_seed(seed)
    batch = shape[0]
    x = torch.randn(*shape, generator=g)
    text = torch.randn(batch, text_len, config.text_dim, generator=g)
    mask = None
    if valid is not None:
        mask = torch.zeros(batch, text_len, dtype=torch.long)
        for i, v in enumerate(valid):
            mask[i, :v] = 1
    pooled = torch.randn(batch, config.pooled_text_dim, generator=g)
    guidance = torch.full((batch,), 6000.0) if config.guidance_embed else None
    return x, torch.tensor([870.0, 240.0][:batch]), text, mask, pooled, guidance


def ours(model, args, condition=None):
    if condition is not None:
        model.image_condition = condition
    try:
        with torch.no_grad():
            return model(*args)
    finally:
        model.image_condition = ImageCondition()


def theirs(reference, args):
    x, t, text, mask, pooled, guidance = args
    if mask is None:
        mask = torch.ones(text.shape[:2], dtype=torch.long)
    with torch.no_grad():
        return reference(hidden_states=x, timestep=t, encoder_hidden_states=text, encoder_attention_mask=mask,
                         pooled_projections=pooled, guidance=guidance, return_dict=False)[0]


CASES = {  # (B, T, H, W) of the latent, real text tokens per sample
    "b2_t3_padded": ((2, 3, 4, 6), [4, 7]),
    "b1_t2_nopad": ((1, 2, 6, 4), None),
    "b1_t1_one_frame": ((1, 1, 4, 4), [5]),     # every image token is frame 0
}


def _shape(config, case):
    (b, t, h, w), valid = CASES[case]
    return (b, config.in_channels, t, h, w), valid


def _max(a, b) -> float:
    return float((a - b).abs().max())


# -- latent_concat (33) and SkyReels (32) --------------------------------------------------------
@pytest.mark.parametrize("case", ["b2_t3_padded", "b1_t2_nopad"])
@pytest.mark.parametrize("channels,guidance,condition_type", [(33, False, "latent_concat"), (32, True, None)])
def test_wide_input_variants_equal_diffusers(channels, guidance, condition_type, case):
    model = random_model(TINY.replace(in_channels=channels, guidance_embed=guidance))
    args = inputs(model.config, *_shape(model.config, case))
    expected = theirs(diffusers_model(model, condition_type), args)
    found = ours(model, args)
    assert found.shape == (args[0].shape[0], 16, *args[0].shape[2:])
    assert _max(found, expected) <= 1e-5
    # the image channels are read: zeroing them moves the output far beyond the tolerance
    blank = (args[0].clone().index_fill_(1, torch.arange(16, channels), 0.0), *args[1:])
    assert _max(ours(model, blank), found) > 1e-2


@pytest.mark.parametrize("channels,guidance,variant", [(33, False, "i2v_concat"), (32, True, "keyframe_or_skyreels"),
                                                       (16, True, "t2v")])
def test_variant_detected_from_the_file(channels, guidance, variant):
    source = random_model(TINY.replace(in_channels=channels, guidance_embed=guidance))
    loaded = hyvideo_core.load_transformer(source.state_dict(), config="tiny", dtype=torch.float32)
    assert loaded.config.in_channels == channels and loaded.config.guidance_embed == guidance
    assert loaded.config.variant == variant and loaded.load_report.variant == variant
    assert f"variant {variant}" in loaded.load_report.summary()
    args = inputs(loaded.config, *_shape(loaded.config, "b1_t2_nopad"))
    assert _max(ours(loaded, args), ours(source, args)) == 0.0


def test_wrong_channel_count_names_what_x_must_carry():
    model = random_model(TINY.replace(in_channels=33, guidance_embed=False))
    args = inputs(TINY, (1, 16, 2, 4, 4), None)
    with pytest.raises(InvalidInputError, match=r"expected \[B, 33, T, H, W\].*i2v_concat.*mask"):
        ours(model, (*args[:5], None))


# -- token_replace -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def t2v():
    return random_model(TINY)


@pytest.mark.parametrize("case", list(CASES))
def test_token_replace_equals_diffusers(t2v, case):
    args = inputs(TINY, *_shape(TINY, case))
    expected = theirs(diffusers_model(t2v, "token_replace"), args)
    found = ours(t2v, args, TokenReplace())
    assert _max(found, expected) <= 1e-5
    plain = ours(t2v, args)
    # token_replace changes every frame (frame 0 directly, the others through attention) and
    # diffusers' plain model agrees with our plain forward, not with token_replace
    assert _max(found[:, :, :1], plain[:, :, :1]) > 1e-2
    if found.shape[2] > 1:
        assert _max(found[:, :, 1:], plain[:, :, 1:]) > 1e-4
    assert _max(theirs(diffusers_model(t2v, None), args), plain) <= 1e-5


def test_token_replace_off_is_bit_identical(t2v):
    args = inputs(TINY, *_shape(TINY, "b2_t3_padded"))
    assert isinstance(t2v.image_condition, ImageCondition) and type(t2v.image_condition) is ImageCondition
    with torch.no_grad():
        default = t2v(*args)
        t2v.image_condition = TokenReplace()
        t2v(*args)
        t2v.image_condition = ImageCondition()
        after = t2v(*args)
        e = t2v.embed(*args)
    assert torch.equal(default, after)
    assert e.ctx.first_tokens is None and e.ctx.image_vec is e.ctx.vec


def test_token_replace_uses_t0_without_guidance_on_frame_0_tokens(t2v):
    """The leading vector is time_in(0) + vector_in(pooled): guidance does not reach it."""
    x, t, text, mask, pooled, guidance = inputs(TINY, *_shape(TINY, "b2_t3_padded"))
    t2v.image_condition = TokenReplace()
    try:
        with torch.no_grad():
            e = t2v.embed(x, t, text, mask, pooled, guidance)
            other = t2v.embed(x, t, text, mask, pooled, guidance * 0.5)
            expected = t2v.time_in(torch.zeros(2), torch.float32) + t2v.vector_in(pooled)
    finally:
        t2v.image_condition = ImageCondition()
    grid = t2v.grid(x.shape)
    assert e.ctx.first_tokens.count == grid[1] * grid[2]
    assert torch.equal(e.ctx.first_tokens.vec, expected)
    assert torch.equal(other.ctx.first_tokens.vec, e.ctx.first_tokens.vec) and not torch.equal(other.ctx.vec, e.ctx.vec)


def test_teacache_indicator_sees_the_first_frame_modulation(t2v):
    args = inputs(TINY, *_shape(TINY, "b1_t2_nopad"))
    with torch.no_grad():
        plain = t2v.modulated_image_input(t2v.embed(*args))
        t2v.image_condition = TokenReplace()
        try:
            replaced = t2v.modulated_image_input(t2v.embed(*args))
        finally:
            t2v.image_condition = ImageCondition()
    frame = 3 * 2                        # grid (2, 3, 2): the tokens of latent frame 0
    assert _max(replaced[:, frame:], plain[:, frame:]) <= 1e-6 and _max(replaced[:, :frame], plain[:, :frame]) > 1e-2


def test_a_wrong_image_condition_is_refused(t2v):
    args = inputs(TINY, *_shape(TINY, "b1_t2_nopad"))
    with pytest.raises(InvalidInputError, match="model.image_condition.*TokenReplace"):
        ours(t2v, args, "token_replace")


class _HalfSplit(Unsplit):
    """A stand-in policy that keeps half the image tokens but cannot say which."""

    def split(self, e):
        from dataclasses import replace
        return replace(e, img=e.img[:, : e.img.shape[1] // 2])


def test_a_split_without_rank_information_is_refused(t2v):
    args = inputs(TINY, *_shape(TINY, "b1_t2_nopad"))
    t2v.parallel = _HalfSplit()
    try:
        with pytest.raises(InvalidInputError, match="image_condition=TokenReplace.*_HalfSplit"):
            ours(t2v, args, TokenReplace())
    finally:
        t2v.parallel = Unsplit()


# -- token_replace with fp8 / GGUF layers and block swap ---------------------------------------
@pytest.fixture(scope="module")
def gguf_file(tmp_path_factory):
    from safetensors.torch import load_file
    weights = load_file(str(golden_path("dit", "weights.safetensors")))
    return write_gguf(weights, tmp_path_factory.mktemp("gguf_i2v") / "tiny-Q8_0.gguf", Q.Q8_0)


def _load(fmt, gguf_file):
    source = gguf_file if fmt == "Q8_0" else golden_path("dit", "weights.safetensors")
    storage = storage_for("gguf" if fmt == "Q8_0" else fmt)
    return hyvideo_core.load_transformer(source, config="tiny", dtype=torch.float32, storage=storage)


def _dequantised(model):
    """A plain fp32 model holding the weights `model` computes with."""
    plain = hyvideo_core.load_transformer(golden_path("dit", "weights.safetensors"), config="tiny", dtype=torch.float32)
    with torch.no_grad():
        for name, module in model.named_modules():
            if getattr(module, "codec", None) is not None:
                target = plain.get_submodule(name)
                target.weight.copy_(module.codec.dequantize(module).reshape(target.weight.shape))
    return plain


@pytest.mark.parametrize("fmt", ["fp8_scaled", "Q8_0"])
def test_token_replace_on_quantised_layers_and_block_swap(fmt, gguf_file):
    model = _load(fmt, gguf_file)
    assert any(getattr(m, "codec", None) is not None for m in model.double_blocks[0].modules())
    args = inputs(model.config, *_shape(model.config, "b2_t3_padded"))
    found = ours(model, args, TokenReplace())
    assert _max(found, ours(_dequantised(model), args, TokenReplace())) <= 1e-5
    assert _max(found, ours(model, args)) > 1e-3
    swap = BlockSwap(1, 1, main="cpu", simulate=True)
    swap.install(model)
    try:
        assert torch.equal(ours(model, args, TokenReplace()), found)
        assert swap.stats.fetches > 0
    finally:
        swap.remove()


# -- token_replace under sequence parallelism (gloo, 2 ranks) ---------------------------------
SP_CONFIG = PRESETS["tiny"].replace(heads=4, rope_dims=(4, 6, 6))
SP_CASES = {
    # 9 tokens, all of frame 0: on 2 ranks each holds 5 positions, rank 1 four real + one padding,
    # so the leading range crosses the shard boundary
    "one_frame": ((1, 16, 1, 6, 6), [5]),
    # 27 tokens, frame 0 = 9: rank 0 holds 0..13 (9 of frame 0), rank 1 none; padded text
    "three_frames_padded": ((2, 16, 3, 6, 6), [4, 7]),
}


def _sp_suite(rank: int) -> dict:
    from hyvideo_core.parallel import ParallelConfig, ParallelPolicy
    model = random_model(SP_CONFIG, seed=3)
    args = {name: inputs(SP_CONFIG, *spec) for name, spec in SP_CASES.items()}
    reference = {name: ours(model, a, TokenReplace()) for name, a in args.items()}
    out = {"differs": {name: _max(reference[name], ours(model, a)) for name, a in args.items()}}
    for layout in ((2, 1), (1, 2)):
        policy = ParallelPolicy(ParallelConfig(*layout, False), timeout=GROUP_TIMEOUT).install(model)
        try:
            out[layout] = {name: _max(ours(model, a, TokenReplace()), reference[name]) for name, a in args.items()}
            out[(layout, "counts")] = {name: _first_count(model, a) for name, a in args.items()}
        finally:
            policy.remove()
    return out


def _first_count(model, args) -> int:
    model.image_condition = TokenReplace()
    try:
        with torch.no_grad():
            first = model.embed(*args).ctx.first_tokens
    finally:
        model.image_condition = ImageCondition()
    return 0 if first is None else first.count


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory) -> list[dict]:
    return run_suite("test_dit_i2v:_sp_suite", 2, tmp_path_factory.mktemp("i2v_parallel"))


@pytest.mark.parametrize("layout", [(2, 1), (1, 2)], ids=["ulysses2", "ring2"])
def test_token_replace_on_2_ranks_equals_one_process(two_ranks, layout):
    for rank, found in enumerate(two_ranks):
        for case in SP_CASES:
            assert found["differs"][case] > 1e-3, (rank, case)     # the option matters in these cases
            assert found[layout][case] <= 1e-5, (rank, layout, case, found[layout][case])
    # each rank modulates the frame-0 tokens of its own shard (5 positions per rank)
    assert [r[(layout, "counts")]["one_frame"] for r in two_ranks] == [5, 4]
    assert [r[(layout, "counts")]["three_frames_padded"] for r in two_ranks] == [9, 0]
