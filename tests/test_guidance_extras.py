"""Guidance extras (SPEC_NEXT 6.1, 6.2): CFG-Zero* (optimised scale, zero-init) and Enhance-A-Video,
each off by default and bit-identical to plain sampling when off; the Sampling Extras node; and
the extras under the parallel policy (2 CPU ranks, gloo) including RIFLEx's RoPE shards.

Oracles: CFG-Zero*'s formula written out per sample, and diffusers' ClassifierFreeZeroStarGuidance
(diffusers 0.42: alpha on the flattened predictions with eps 1e-8, zero_init_steps default 1
counting from step 0, as here); ComfyUI's CFGZeroStar node (SPEC_NEXT 6.1) has the same alpha
rule in denoised space and no zero-init. Enhance-A-Video's score from a loop over samples,
positions and heads with an explicit off-diagonal mask.
"""
from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from hyvideo_core.errors import InvalidInputError
from hyvideo_core.model.rope import RopeOptions
from hyvideo_core.sampling import (LATENT_SCALE, SamplingExtras, SamplingOptions, flow_sigmas, sample,
                                   seeded_noise)
from hyvideo_core.sampling import enhance
from hyvideo_core.sampling.enhance import EnhanceAttention, enhance_score
from hyvideo_core.sampling.extras import installed_extras
from hyvideo_core.sampling.guidance import GuidanceSettings, GuidedVelocity, combine_cfg, zero_star_scale
from hyvideo_core.model.attention import SDPA, TokenLayout

from test_sampling_support import SIZE, ForwardRecorder, embeds, tiny_model

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model():
    return tiny_model()


def velocities(seed: int = 0, batch: int = 2):
    g = torch.Generator().manual_seed(seed)
    v_c = torch.randn(batch, 16, 3, 4, 4, generator=g)
    v_u = 0.7 * v_c + 0.5 * torch.randn(batch, 16, 3, 4, 4, generator=g)
    return v_u, v_c


# -- CFG-Zero*: the rule -------------------------------------------------------------------------------
def zero_star_by_hand(v_u, v_c, s):
    out = torch.empty_like(v_c, dtype=torch.float64)
    for b in range(v_c.shape[0]):
        c, u = v_c[b].double(), v_u[b].double()
        alpha = float((c * u).sum() / ((u * u).sum() + 1e-8))
        out[b] = alpha * u + s * (c - alpha * u)
    return out


def test_cfg_zero_star_equals_the_formula_and_diffusers():
    from diffusers.guiders import ClassifierFreeZeroStarGuidance
    v_u, v_c = velocities()
    ours = combine_cfg(v_u, v_c, 4.0, zero_star=True)
    torch.testing.assert_close(ours.double(), zero_star_by_hand(v_u, v_c, 4.0), atol=1e-5, rtol=1e-5)
    guider = ClassifierFreeZeroStarGuidance(guidance_scale=4.0, zero_init_steps=0)
    guider.set_state(step=0, num_inference_steps=10, timestep=torch.tensor(500))
    torch.testing.assert_close(ours, guider.forward(v_c, v_u).pred, atol=1e-6, rtol=1e-6)
    alpha = zero_star_scale(v_c, v_u)
    assert alpha.shape == (2, 1, 1, 1, 1) and 0.8 < float(alpha.min()) < float(alpha.max()) < 0.999   # per sample
    # off: exactly the plain CFG expression
    assert torch.equal(GuidanceSettings(cfg_scale=4.0).combine(v_u, v_c, 4.0), v_u + (v_c - v_u) * 4.0)
    assert not torch.allclose(ours, v_u + (v_c - v_u) * 4.0)


def test_diffusers_zero_init_counts_steps_as_here():
    from diffusers.guiders import ClassifierFreeZeroStarGuidance
    v_u, v_c = velocities()
    guider = ClassifierFreeZeroStarGuidance(guidance_scale=4.0, zero_init_steps=2)
    zeroed = []
    for step in range(4):
        guider.set_state(step=step, num_inference_steps=4, timestep=torch.tensor(500))
        zeroed.append(bool((guider.forward(v_c, v_u).pred == 0).all()))
    assert zeroed == [True, True, False, False]


@pytest.mark.parametrize("mode", ["batched", "sequential"])
def test_one_sampling_step_with_cfg_zero_star_equals_the_formula(model, mode):
    e = embeds(model.config)
    result = sample(model, e, SamplingOptions(steps=1, seed=4, cfg_scale=3.0, cfg_mode=mode, cfg_zero_star=True),
                    **SIZE)
    x = seeded_noise(result.plan.shape, 4)
    with torch.no_grad():
        v_u = model(x, 1000.0, e.negative.text_states, e.negative.text_mask, e.negative.pooled, 6000.0)
        v_c = model(x, 1000.0, e.positive.text_states, e.positive.text_mask, e.positive.pooled, 6000.0)
    expected = (x.double() - zero_star_by_hand(v_u, v_c, 3.0)) / LATENT_SCALE
    torch.testing.assert_close(result.latent.double(), expected, atol=3e-5, rtol=1e-5)
    plain = sample(model, e, SamplingOptions(steps=1, seed=4, cfg_scale=3.0, cfg_mode=mode), **SIZE)
    assert (plain.latent - result.latent).abs().max() > 1e-4


@pytest.mark.parametrize("cfg_scale", [1.0, 3.0])
def test_zero_init_steps_skip_the_forward_and_keep_the_noise(model, cfg_scale):
    rec = ForwardRecorder(model)
    try:
        result = sample(model, embeds(model.config, negative=cfg_scale > 1),
                        SamplingOptions(steps=4, seed=6, cfg_scale=cfg_scale, zero_init_steps=2), **SIZE)
    finally:
        rec.handle.remove()
    assert result.forwards == len(rec) == 2                       # steps 2 and 3 only
    noise = seeded_noise(result.plan.shape, 6)
    first_x = rec.calls[0][0]
    assert torch.equal(first_x[:1], noise)                         # v = 0 twice: x did not move
    assert rec.calls[0][1] == pytest.approx(float(flow_sigmas(4, 7.0)[2]) * 1000)
    plain = sample(model, embeds(model.config, negative=cfg_scale > 1),
                   SamplingOptions(steps=4, seed=6, cfg_scale=cfg_scale), **SIZE)
    assert plain.forwards == 4 and (plain.latent - result.latent).abs().max() > 1e-3


def test_zero_init_before_a_later_start_is_noted_and_changes_nothing(model):
    raw = torch.randn(1, 16, 3, 6, 8, generator=torch.Generator().manual_seed(9))
    e = embeds(model.config, negative=False)
    asked = sample(model, e, SamplingOptions(steps=10, denoise=0.4, seed=5, zero_init_steps=2), init_latent=raw)
    plain = sample(model, e, SamplingOptions(steps=10, denoise=0.4, seed=5), init_latent=raw)
    assert asked.forwards == 4 and torch.equal(asked.latent, plain.latent)
    assert any("zero_init_steps=2 is not used" in n for n in asked.notes)
    split = sample(model, e, SamplingOptions(steps=10, denoise=0.8, seed=5, zero_init_steps=3), init_latent=raw)
    assert split.forwards == 7                                     # starts at step 2: step 2 is zeroed


def test_cfg_zero_star_without_true_cfg_is_noted_and_bit_identical(model):
    e = embeds(model.config, negative=False)
    plain = sample(model, e, SamplingOptions(steps=2, seed=1), **SIZE)
    asked = sample(model, e, SamplingOptions(steps=2, seed=1, cfg_zero_star=True), **SIZE)
    assert torch.equal(plain.latent, asked.latent)
    assert any("cfg_zero_star applies to true CFG only" in n for n in asked.notes)


@pytest.mark.parametrize("change, name", [
    (dict(zero_init_steps=-1), "zero_init_steps"), (dict(zero_init_steps=1.5), "zero_init_steps"),
    (dict(zero_init_steps=3), "zero_init_steps"),             # covers the whole 3-step run
    (dict(cfg_zero_star="yes"), "cfg_zero_star"), (dict(enhance_weight=-1.0), "enhance_weight"),
    (dict(enhance_weight=math.nan), "enhance_weight"), (dict(riflex_index=-2), "riflex_index"),
])
def test_bad_extras_are_refused_naming_the_parameter_before_any_forward(model, change, name):
    rec = ForwardRecorder(model)
    try:
        with pytest.raises(InvalidInputError, match=name):
            sample(model, embeds(model.config, negative=False), SamplingOptions(steps=3, **change), **SIZE)
    finally:
        rec.handle.remove()
    assert len(rec) == 0


# -- Enhance-A-Video -------------------------------------------------------------------------------------
def score_by_hand(q, k, frames, weight):
    """Per sample: the T x T frame attention of every position and head, its off-diagonal mean."""
    batch, tokens, heads, dim = q.shape
    space = tokens // frames
    scores = []
    for b in range(batch):
        total, count = 0.0, 0
        for s in range(space):
            rows = [t * space + s for t in range(frames)]         # token (t, s) in (t, h, w) order
            for h in range(heads):
                qs, ks = q[b, rows, h].double(), k[b, rows, h].double()
                a = torch.softmax(qs @ ks.T / math.sqrt(dim), dim=-1)
                off = ~torch.eye(frames, dtype=torch.bool)
                total += float(a[off].sum())
                count += frames * frames - frames
        scores.append(max(total / count * (frames + weight), 1.0))
    return torch.tensor(scores, dtype=torch.float64)


def random_qk(batch=2, frames=4, space=6, heads=2, dim=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(batch, frames * space, heads, dim, generator=g),
            torch.randn(batch, frames * space, heads, dim, generator=g))


def test_enhance_score_equals_a_straightforward_implementation(monkeypatch):
    q, k = random_qk()
    expected = score_by_hand(q, k, 4, 4.0)
    assert float(expected.min()) > 1.0                       # the clamp is not what makes them equal
    torch.testing.assert_close(enhance_score(q, k, 4, 4.0).double(), expected, atol=1e-6, rtol=1e-6)
    # frames that attend only to themselves: CFI ~ 0, clamped to 1
    diagonal = q * 30
    torch.testing.assert_close(enhance_score(diagonal, diagonal, 4, 2.0).double(),
                               score_by_hand(diagonal, diagonal, 4, 2.0))
    assert torch.equal(enhance_score(diagonal, diagonal, 4, 2.0), torch.ones(2))
    # positions taken in chunks: the same score
    monkeypatch.setattr(enhance, "CHUNK_BYTES", 2 * 2 * 16 * 4)
    torch.testing.assert_close(enhance_score(q, k, 4, 4.0).double(), expected, atol=1e-6, rtol=1e-6)
    assert torch.equal(enhance_score(q[:, :6], k[:, :6], 1, 4.0), torch.ones(2))      # one frame


def test_enhance_attention_scales_only_the_image_rows():
    q, k = random_qk(batch=2, frames=3, space=4)
    g = torch.Generator().manual_seed(3)
    txt = [torch.randn(2, 5, 2, 8, generator=g) for _ in range(3)]
    qj, kj, vj = (torch.cat([a, t], 1) for a, t in zip((q, k, torch.randn_like(q)), txt))
    plain = SDPA()(qj, kj, vj, TokenLayout(None))
    wrapper = EnhanceAttention(SDPA(), 2.0, (3, 2, 2))
    out = wrapper(qj, kj, vj, TokenLayout(None))
    score = enhance_score(q, k, 3, 2.0)
    assert torch.equal(out[:, 12:], plain[:, 12:])
    torch.testing.assert_close(out[:, :12], plain[:, :12] * score[:, None, None])
    assert wrapper.name == "sdpa+enhance" and float(score.min()) > 1


def test_enhance_weight_0_is_bit_identical_and_on_differs_but_is_finite(model):
    e = embeds(model.config)
    seen = []
    handle = model.register_forward_pre_hook(lambda m, a: seen.append(m.attention))
    backend = model.attention
    try:
        plain = sample(model, e, SamplingOptions(steps=2, seed=3, cfg_scale=2.0), **SIZE)
        off = sample(model, e, SamplingOptions(steps=2, seed=3, cfg_scale=2.0, enhance_weight=0.0), **SIZE)
        on = sample(model, e, SamplingOptions(steps=2, seed=3, cfg_scale=2.0, enhance_weight=4.0), **SIZE)
        sequential = sample(model, e, SamplingOptions(steps=2, seed=3, cfg_scale=2.0, cfg_mode="sequential",
                                                      enhance_weight=4.0), **SIZE)
    finally:
        handle.remove()
    assert torch.equal(plain.latent, off.latent) and all(a is backend for a in seen[:4])
    assert isinstance(seen[4], EnhanceAttention) and model.attention is backend
    assert torch.isfinite(on.latent).all() and (on.latent - plain.latent).abs().max() > 1e-4
    torch.testing.assert_close(on.latent, sequential.latent, atol=2e-5, rtol=1e-5)   # per-sample score


def test_enhance_follows_each_forwards_frame_count(model):
    """A forward over part of the video (a context window) gets its own frames and token count."""
    p = embeds(model.config, negative=False).positive
    options = SamplingOptions(enhance_weight=2.0)
    grids = []
    with installed_extras(model, options, (1, 16, 3, 6, 8)), torch.no_grad():
        wrapper = model.attention
        for frames in (3, 2):
            x = torch.randn(1, 16, frames, 6, 8, generator=torch.Generator().manual_seed(frames))
            y = model(x, 500.0, p.text_states, p.text_mask, p.pooled, 6000.0)
            grids.append((wrapper.frames, wrapper.image_tokens))
            assert torch.isfinite(y).all()
    assert grids == [(3, 36), (2, 24)] and not isinstance(model.attention, EnhanceAttention)


def test_enhance_is_refused_under_sequence_parallelism_before_the_first_step(model):
    """In one process, a stand-in for an installed 2-way Ulysses policy (the real one: below)."""
    previous = model.parallel
    model.parallel = SimpleNamespace(config=SimpleNamespace(sp_degree=2), cfg_split=None)
    try:
        with pytest.raises(InvalidInputError, match="enhance_weight: Enhance-A-Video is not supported under "
                                                    "sequence parallelism"):
            sample(model, embeds(model.config, negative=False), SamplingOptions(steps=1, enhance_weight=2.0),
                   **SIZE)
    finally:
        model.parallel = previous


# -- the node -------------------------------------------------------------------------------------------
def test_sampling_extras_value_merges_into_the_options():
    extras = SamplingExtras(riflex_index=4, cfg_zero_star=True, zero_init_steps=2, enhance_weight=4.0)
    options = extras.apply(SamplingOptions(steps=30, cfg_scale=5.0))
    assert (options.steps, options.cfg_scale, options.riflex_index, options.cfg_zero_star, options.zero_init_steps,
            options.enhance_weight) == (30, 5.0, 4, True, 2, 4.0)
    assert SamplingExtras().apply(SamplingOptions()) == SamplingOptions()
    with pytest.raises(InvalidInputError, match="enhance_weight"):
        SamplingExtras(enhance_weight=-1.0).check()


@pytest.fixture(scope="module")
def runner(tmp_path_factory):
    from node_graphs import tiny_runner
    return tiny_runner(tmp_path_factory.mktemp("extras_graph"), tmp_path_factory.mktemp("extras_models"))[0]


def with_extras(**values):
    from node_graphs import SAMPLER, node, t2v_prompt
    prompt = t2v_prompt()
    if values:
        prompt["40"] = node("HyVideoSamplingExtras", **{"riflex_index": 0, "cfg_zero_star": False,
                                                        "zero_init_steps": 0, "enhance_weight": 0.0, **values})
        prompt[SAMPLER]["inputs"]["extras"] = ["40", 0]
    return prompt


def test_the_extras_node_reaches_the_sampler(runner):
    from node_graphs import SAMPLER, sampled, ui_text
    plain = runner.run(with_extras()).expect_success()
    defaults = runner.run(with_extras(riflex_index=0)).expect_success()
    on = runner.run(with_extras(zero_init_steps=1, enhance_weight=4.0, cfg_zero_star=True)).expect_success()
    assert torch.equal(sampled(plain), sampled(defaults))
    assert (sampled(on) - sampled(plain)).abs().max() > 1e-4 and torch.isfinite(sampled(on)).all()
    assert "1 model calls" in ui_text(on, SAMPLER) and "2 model calls" in ui_text(plain, SAMPLER)
    assert "cfg_zero_star applies to true CFG only" in ui_text(on, SAMPLER)


# -- under the parallel policy (2 ranks) ----------------------------------------------------------------
def _parallel_suite(rank: int) -> dict:
    from hyvideo_core.sampling.text_inputs import prompt_for_batch
    from test_parallel import CONFIG, _policy, embeds as pair, forward_inputs, tiny_model as make
    model = make()                       # temporal rope dim 4: RIFLEx k = 1 has N_1 = 6 latent frames
    out = {}
    args = forward_inputs((1, 16, 7, 2, 4), 6, [4])        # 7 latent frames x 2 tokens = 14, text padded
    with torch.no_grad():
        plain = model(*args)
        model.rope_options = RopeOptions(riflex_index=1)
        reference = model(*args)
        policy = _policy(2, 1, False).install(model)
        try:
            sharded = model(*args)
        finally:
            policy.remove()
            model.rope_options = RopeOptions()
    out["riflex_changes"] = float((reference - plain).abs().max())
    out["riflex_ulysses2"] = float((sharded - reference).abs().max())
    # CFG-Zero* combined by CFG parallel vs one batched process
    e = pair()
    settings = GuidanceSettings(6.0, 4.0, "batched", cfg_zero_star=True)
    pos, neg = (prompt_for_batch(p, 1, "cpu") for p in (e.positive, e.negative))
    x = torch.randn(1, 16, 3, 6, 6, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        one = GuidedVelocity(model, settings, pos, neg)(x, 650.0, 0)
        plain_cfg = GuidedVelocity(model, GuidanceSettings(6.0, 4.0, "batched"), pos, neg)(x, 650.0, 0)
        policy = _policy(1, 1, True).install(model)
        try:
            split = GuidedVelocity(model, settings, pos, neg)(x, 650.0, 0)
        finally:
            policy.remove()
    out["zero_star_changes"] = float((one - plain_cfg).abs().max())
    out["zero_star_cfg2"] = float((split - one).abs().max())
    # Enhance-A-Video: refused under Ulysses before any forward; fine under CFG parallel alone
    size = {"width": 48, "height": 48, "frames": 9}
    options = SamplingOptions(steps=2, cfg_scale=4.0, seed=3, enhance_weight=4.0)
    calls = []
    handle = model.register_forward_pre_hook(lambda m, a: calls.append(1))
    policy = _policy(2, 1, False).install(model)
    try:
        sample(model, e, options, **size)
    except InvalidInputError as error:
        out["enhance_refused"] = str(error)
    finally:
        policy.remove()
        handle.remove()
    out["forwards_before_refusal"] = len(calls)
    one_run = sample(model, e, options, **size).latent
    policy = _policy(1, 1, True).install(model)
    try:
        out["enhance_cfg2"] = float((sample(model, e, options, **size).latent - one_run).abs().max())
    finally:
        policy.remove()
    out["enhance_changes"] = float((sample(model, e, SamplingOptions(steps=2, cfg_scale=4.0, seed=3), **size).latent
                                    - one_run).abs().max())
    assert CONFIG.rope_dims[0] == 4
    return out


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> list[dict]:
    from gloo_ranks import run_suite
    return run_suite("test_guidance_extras:_parallel_suite", 2, tmp_path_factory.mktemp("extras_parallel"))


def test_riflex_rope_shards_equal_one_process_under_ulysses_2(ranks):
    for out in ranks:
        assert out["riflex_changes"] > 1e-4 and out["riflex_ulysses2"] < 1e-5, out


def test_cfg_parallel_combines_with_cfg_zero_star(ranks):
    for out in ranks:
        assert out["zero_star_changes"] > 1e-4 and out["zero_star_cfg2"] < 1e-5, out


def test_enhance_is_refused_under_ulysses_and_matches_one_process_under_cfg_parallel(ranks):
    for out in ranks:
        assert "enhance_weight" in out["enhance_refused"] and out["forwards_before_refusal"] == 0
        assert out["enhance_changes"] > 1e-4 and out["enhance_cfg2"] < 1e-5, out


# -- the CLI --------------------------------------------------------------------------------------------
def test_cli_options_reach_the_sampling_options_and_defaults_match_the_node():
    from harness import load_pack
    from hyvideo_core.cli import _parser, _settings, main
    from hyvideo_core.run.choices import DEFAULTS
    args = _parser().parse_args(["generate", "--riflex-index", "4", "--cfg-zero-star", "--zero-init-steps", "2",
                                 "--enhance-weight", "4"])
    s = _settings(args).sampling
    assert (s.riflex_index, s.cfg_zero_star, s.zero_init_steps, s.enhance_weight) == (4, True, 2, 4.0)
    defaults = _settings(_parser().parse_args(["generate"])).sampling
    assert SamplingExtras().apply(defaults) == defaults
    node = load_pack().NODE_CLASS_MAPPINGS["HyVideoSamplingExtras"].INPUT_TYPES()["required"]
    for name in ("riflex_index", "cfg_zero_star", "zero_init_steps", "enhance_weight"):
        assert node[name][1]["default"] == getattr(DEFAULTS, name) == getattr(defaults, name), name
    assert main(["generate", "--demo", "--enhance-weight", "-1"]) == 2      # refused before anything loads
