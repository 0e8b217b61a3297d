"""EasyCache and MagCache (SPEC_NEXT 5.1, 5.2): decisions equal an independent replay of each
published rule on a recorded tiny-model run, threshold 0 is bit-identical to no cache, state is
per branch and reset per run, and parallel ranks decide like one process."""
from __future__ import annotations


import pytest
import torch

from hyvideo_core.errors import InvalidInputError
from hyvideo_core.run import CacheRequest
from hyvideo_core.sampling import SamplingOptions, sample
from hyvideo_core.sampling.cache import (DEFAULT_THRESHOLDS, HUNYUAN_MAG_RATIOS, EasyCache, MagCache, make_cache,
                                         resample_ratios)

from test_sampling_support import SIZE, embeds, tiny_model

pytestmark = pytest.mark.usefixtures("one_thread")


# -- the published rules, written out from the formulas (independently of the policies) ---------------
def mean_abs(t: torch.Tensor) -> float:
    return float(t.double().abs().mean())


def easycache_reference(inputs, outputs, threshold: float, warmup_steps: int) -> list[bool]:
    """EasyCache4HunyuanVideo on one branch: inputs[t] enters the transformation at every step,
    outputs[t] leaves it at the computed ones. True = skipped."""
    steps = len(inputs)
    acc, k, prev_in, last_in, last_out, skipped = 0.0, None, None, None, None, []
    for t, x in enumerate(inputs):
        compute = True
        if t < max(warmup_steps, 1) or t == steps - 1:
            acc = 0.0
        elif k is not None:
            acc += k * mean_abs(x - prev_in) / mean_abs(last_out)
            compute = not acc < threshold
            if compute:
                acc = 0.0
        prev_in = x
        skipped.append(not compute)
        if compute:
            if t not in outputs:          # the policy skipped where the rule computes
                return skipped
            out = outputs[t]
            if last_out is not None:
                k = mean_abs(out - last_out) / mean_abs(x - last_in)
            last_in, last_out = x, out
    return skipped


def magcache_reference(table, steps: int, threshold: float, max_skips: int, retention: float) -> list[bool]:
    """MagCache4HunyuanVideo, plus this pack's rule that the first and last step compute."""
    length = len(table)
    ratios = [table[round(i * (length - 1) / (steps - 1))] for i in range(steps)]
    acc_ratio, err, n, skipped = 1.0, 0.0, 0, []
    for t in range(steps):
        skip = False
        if t >= int(retention * steps) and 0 < t < steps - 1:
            acc_ratio *= ratios[t]
            err += abs(1 - acc_ratio)
            n += 1
            skip = err <= threshold and n <= max_skips
        if not skip:
            acc_ratio, err, n = 1.0, 0.0, 0
        skipped.append(skip)
    return skipped


class Trajectory:
    """What a policy's `run` sees: the image tokens entering the blocks at every forward and
    what the blocks return at the computed ones, per branch."""

    def __init__(self, model, policy):
        self.inputs: dict[str, list[torch.Tensor]] = {}
        self.outputs: dict[str, dict[int, torch.Tensor]] = {}
        run_blocks, run = model.run_blocks, policy.run

        def recording_run_blocks(img, txt, ctx, start=0, stop=None):
            out = run_blocks(img, txt, ctx, start, stop)
            if start == 0 and stop is None:
                branch = self.outputs.setdefault(policy.branch, {})
                branch[len(self.inputs[policy.branch]) - 1] = out[0].detach().clone()
            return out

        def recording_run(m, e):
            self.inputs.setdefault(policy.branch, []).append(e.img.detach().clone())
            return run(m, e)

        model.run_blocks, policy.run = recording_run_blocks, recording_run
        self._undo = lambda: (delattr(model, "run_blocks"), delattr(policy, "run"))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._undo()


@pytest.fixture(scope="module")
def model():
    return tiny_model()


def _sample(model, policy, steps=12, negative=False, **options):
    return sample(model, embeds(model.config, negative=negative), SamplingOptions(steps=steps, **options),
                  cache=policy, **SIZE)


def _skips(policy, branch="cond") -> list[bool]:
    return [d.skipped for d in policy.decisions if d.branch == branch]


# -- EasyCache ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("threshold", [0.05, 0.1, 0.2])
def test_easycache_decisions_equal_the_rule_replayed_on_the_recorded_run(model, threshold):
    policy = EasyCache(threshold)
    with Trajectory(model, policy) as seen:
        result = _sample(model, policy)
    expected = easycache_reference(seen.inputs["cond"], seen.outputs["cond"], threshold, policy.warmup_steps)
    assert _skips(policy) == expected
    assert any(expected) and not all(expected[1:-1])
    assert result.cache.skipped == sum(expected) and result.cache.computed == 12 - sum(expected)
    # the recorded prediction is k * mean|in_t - in_t-1| / mean|out_c|, k from the last two computed steps
    d = next(d for d in policy.decisions if d.predicted is not None)
    ins, outs = seen.inputs["cond"], seen.outputs["cond"]
    k = mean_abs(outs[d.step - 1] - outs[d.step - 2]) / mean_abs(ins[d.step - 1] - ins[d.step - 2])
    assert d.predicted == pytest.approx(k * mean_abs(ins[d.step] - ins[d.step - 1]) / mean_abs(outs[d.step - 1]),
                                        rel=1e-4)


def test_easycache_skip_reuses_the_last_computed_transformation(model):
    e = embeds(model.config, negative=False)
    with torch.no_grad():
        emb = [model.embed(torch.randn(1, 16, 3, 6, 8, generator=torch.Generator().manual_seed(s)), 900.0 - 10 * s,
                           e.positive.text_states, e.positive.text_mask, e.positive.pooled, 6000.0) for s in range(3)]
        policy = EasyCache(threshold=1e9, warmup=0.0)
        policy.start_run(5)
        outs = []
        for step in range(4):
            policy.begin_step(step, "cond")
            outs.append(policy.run(model, emb[min(step, 2)]))
        full = model.run_blocks(emb[1].img, emb[1].txt, emb[1].ctx)[0]
    assert [d.skipped for d in policy.decisions] == [False, False, True, True]   # k needs two computed steps
    assert torch.equal(outs[2], emb[2].img + (full - emb[1].img))
    assert policy.report().skipped == 2


def test_easycache_warmup_and_window_always_compute(model):
    policy = EasyCache(threshold=1e9, warmup=0.5)
    _sample(model, policy, steps=8)
    assert [d.step for d in policy.decisions if d.skipped] == [4, 5, 6]
    policy = EasyCache(threshold=1e9, start_step=3, end_step=5, warmup=0.0)
    _sample(model, policy, steps=8)
    assert [d.step for d in policy.decisions if d.skipped] == [3, 4]


# -- MagCache -----------------------------------------------------------------------------------------
def test_magcache_resamples_the_published_tables_by_nearest_index():
    table = HUNYUAN_MAG_RATIOS["720p"]
    assert len(table) == 50 and table[0] == 1.0 and table[-1] == 0.75456
    assert resample_ratios(table, 50) == table
    assert resample_ratios(table, 8) == tuple(table[i] for i in (0, 7, 14, 21, 28, 35, 42, 49))
    assert resample_ratios(table, 20)[1] == table[3]          # round(1 * 49 / 19 = 2.58) = 3


@pytest.mark.parametrize("steps", [50, 30, 20, 8])
@pytest.mark.parametrize("table", ["720p", "544p"])
@pytest.mark.parametrize("threshold, max_skips", [(0.24, 6), (0.12, 4)])
def test_magcache_decisions_follow_the_published_rule_on_the_published_tables(steps, table, threshold, max_skips):
    policy = MagCache(threshold, max_skips=max_skips, ratios=table)
    policy.start_run(steps)
    for step in range(steps):
        policy.begin_step(step, "cond")
        policy.decide()
    expected = magcache_reference(HUNYUAN_MAG_RATIOS[table], steps, threshold, max_skips, 0.2)
    assert _skips(policy) == expected
    assert any(expected)


def test_magcache_eight_steps_at_the_defaults_by_hand():
    """544p table at 8 steps: 1.05672, 1.06614, 1.01502, 1.00815, 0.99063, 0.97686 on steps 1-6;
    err 0.057, 0.183 (skip, skip), 0.327 > 0.24 (compute), then 0.008, 0.009, 0.034 (skip x3)."""
    policy = MagCache(ratios="544p")
    policy.start_run(8)
    for step in range(8):
        policy.begin_step(step, "cond")
        policy.decide()
    assert [d.step for d in policy.decisions if d.skipped] == [1, 2, 4, 5, 6]


def test_magcache_on_the_tiny_model_calibrates_then_follows_the_rule(model):
    """Calibration records mean_tokens |r_t| / |r_t-1| of the blocks' residual; MagCache on those
    ratios takes the rule's decisions and adds the cached residual on skipped steps."""
    calibration = MagCache(calibrate=True)
    with Trajectory(model, calibration) as seen:
        plain = _sample(model, calibration)
    assert calibration.report().skipped == 0
    residuals = [seen.outputs["cond"][t] - x for t, x in enumerate(seen.inputs["cond"])]
    measured = [1.0] + [float((b.norm(dim=-1) / a.norm(dim=-1)).mean()) for a, b in zip(residuals, residuals[1:])]
    assert calibration.calibrated["cond"] == pytest.approx(measured, rel=1e-5)
    for threshold, max_skips in ((0.01, 6), (0.05, 2), (0.24, 6)):
        policy = MagCache(threshold, max_skips=max_skips, ratios=measured)
        result = _sample(model, policy)
        expected = magcache_reference(measured, 12, threshold, max_skips, 0.2)
        assert _skips(policy) == expected, threshold
        assert any(expected) and not all(expected[2:-1])
        assert result.cache.skipped == sum(expected)
        assert float((result.latent - plain.latent).norm() / plain.latent.norm()) < 0.05


def test_magcache_auto_picks_the_table_nearest_the_short_side(model):
    policy = MagCache()
    _sample(model, policy, steps=4)
    assert policy.table == "544p"                                   # a 48 px video
    policy.start_run(4)
    policy.choose_table((33, 45, 80), (1, 2, 2))                   # 720 x 1280
    assert policy.table == "720p"
    policy.start_run(4)
    policy.choose_table((33, 34, 60), (1, 2, 2))                   # 544 x 960
    assert policy.table == "544p"


# -- both ---------------------------------------------------------------------------------------------
POLICIES = {"easycache": lambda t: EasyCache(t), "magcache": lambda t: MagCache(t)}


@pytest.mark.parametrize("name", POLICIES)
@pytest.mark.parametrize("cfg_mode", ["batched", "sequential"])
def test_threshold_zero_is_bit_identical_to_no_cache(model, name, cfg_mode):
    opts = SamplingOptions(steps=6, cfg_scale=2.5, cfg_mode=cfg_mode, seed=1)
    plain = sample(model, embeds(model.config), opts, **SIZE)
    cached = sample(model, embeds(model.config), opts, cache=POLICIES[name](0.0), **SIZE)
    assert torch.equal(plain.latent, cached.latent)
    assert cached.cache.skipped == 0 and cached.cache.computed == plain.forwards


@pytest.mark.parametrize("name, threshold", [("easycache", 0.1), ("magcache", 0.24)])
def test_a_nonzero_threshold_skips_some_steps_and_stays_close(model, name, threshold):
    plain = _sample(model, None, steps=12)
    cached = _sample(model, POLICIES[name](threshold), steps=12)
    assert 0 < cached.cache.skipped < 10
    assert cached.cache.computed + cached.cache.skipped == cached.forwards == 12
    assert 0 < float((cached.latent - plain.latent).norm() / plain.latent.norm()) < 0.05


def test_easycache_keeps_separate_state_per_branch_under_sequential_cfg(model):
    """Each branch's decisions are the rule replayed on that branch's own inputs and outputs; a
    shared state would measure cond against uncond."""
    policy = EasyCache(0.1)
    with Trajectory(model, policy) as seen:
        result = _sample(model, policy, negative=True, cfg_scale=3.0, cfg_mode="sequential")
    assert set(result.cache.per_branch) == {"cond", "uncond"}
    for branch in ("cond", "uncond"):
        expected = easycache_reference(seen.inputs[branch], seen.outputs[branch], 0.1, policy.warmup_steps)
        assert _skips(policy, branch) == expected
        assert result.cache.per_branch[branch] == (12 - sum(expected), sum(expected))
    assert any(_skips(policy, "cond"))
    rates = {b: [d.rate for d in policy.decisions if d.branch == b] for b in ("cond", "uncond")}
    assert rates["cond"] != rates["uncond"]


def test_magcache_keeps_a_residual_per_branch_under_sequential_cfg(model):
    policy = MagCache(0.24)
    result = _sample(model, policy, negative=True, cfg_scale=3.0, cfg_mode="sequential")
    assert _skips(policy, "cond") == _skips(policy, "uncond") == magcache_reference(
        HUNYUAN_MAG_RATIOS["544p"], 12, 0.24, 6, 0.2)
    assert result.cache.per_branch["cond"] == result.cache.per_branch["uncond"]
    # a skipped forward adds its own branch's residual
    pair = embeds(model.config)
    with torch.no_grad():
        x = torch.randn(1, 16, 3, 6, 8, generator=torch.Generator().manual_seed(4))
        emb = {b: model.embed(x, 900.0, p.text_states, p.text_mask, p.pooled, 6000.0)
               for b, p in (("cond", pair.positive), ("uncond", pair.negative))}
        full = {b: model.run_blocks(e.img, e.txt, e.ctx)[0] for b, e in emb.items()}
        policy = MagCache(1e9, retention=0.0, ratios=[1.0, 1.0, 1.0, 1.0])
        policy.start_run(4)
        outs = {}
        for step in range(2):
            for branch in ("cond", "uncond"):
                policy.begin_step(step, branch)
                outs[step, branch] = policy.run(model, emb[branch])
    assert [d.skipped for d in policy.decisions] == [False, False, True, True]
    for branch in ("cond", "uncond"):
        assert torch.equal(outs[1, branch], emb[branch].img + (full[branch] - emb[branch].img))
    assert not torch.equal(outs[1, "cond"], outs[1, "uncond"])


@pytest.mark.parametrize("name, threshold", [("easycache", 0.1), ("magcache", 0.24)])
def test_state_resets_at_the_start_of_every_run(model, name, threshold):
    policy = POLICIES[name](threshold)
    run = lambda seed: sample(model, embeds(model.config, negative=False), SamplingOptions(steps=10, seed=seed),
                              cache=policy, **SIZE)
    first = run(0)
    decisions = list(policy.decisions)
    run(5)
    again = run(0)
    assert torch.equal(first.latent, again.latent)
    assert first.cache == again.cache and first.cache.skipped > 0
    assert policy.decisions == decisions


def test_registry_defaults_and_options():
    assert DEFAULT_THRESHOLDS["easycache"] == 0.025 and DEFAULT_THRESHOLDS["magcache"] == 0.24
    mag = CacheRequest("magcache").build()
    assert (mag.threshold, mag.max_skips, mag.retention, mag.ratios) == (0.24, 6, 0.2, "auto")
    assert CacheRequest("easycache").build().warmup == 0.1
    tuned = CacheRequest("magcache", 0.12, options=(("max_skips", 4), ("ratios", "720p"))).build()
    assert (tuned.threshold, tuned.max_skips, tuned.ratios) == (0.12, 4, "720p")
    with pytest.raises(InvalidInputError, match="max_skips"):
        make_cache("easycache", max_skips=3)
    with pytest.raises(InvalidInputError, match="ratios"):
        MagCache(ratios="1080p")
    with pytest.raises(InvalidInputError, match="max_skips"):
        MagCache(max_skips=0)
    with pytest.raises(InvalidInputError, match="warmup"):
        EasyCache(warmup=1.5)
    with pytest.raises(InvalidInputError, match="threshold"):
        EasyCache(threshold=-1)


def test_nodes_build_the_requests():
    from harness import load_pack
    nodes = load_pack().NODE_CLASS_MAPPINGS
    (easy,) = nodes["HyVideoEasyCache"]().settings(0.05, 0, -1, "offload", warmup=0.2)
    assert isinstance(easy.build(), EasyCache) and easy.build().warmup == 0.2 and easy.storage == "offload"
    inputs = nodes["HyVideoMagCache"].INPUT_TYPES()["required"]
    assert inputs["max_skips"][1]["default"] == 6 and inputs["ratios"][1]["default"] == "auto"
    (mag,) = nodes["HyVideoMagCache"]().settings(0.12, 0, -1, "main", max_skips=4, retention=0.3, ratios="720p")
    built = mag.build()
    assert (built.threshold, built.max_skips, built.retention, built.ratios) == (0.12, 4, 0.3, "720p")
    with pytest.raises(InvalidInputError, match="max_skips"):
        nodes["HyVideoMagCache"]().settings(0.12, 0, -1, "main", max_skips=0, retention=0.3, ratios="720p")


# -- parallel ranks (gloo, 2 processes, Ulysses 2) ----------------------------------------------------
def _parallel_suite(rank: int) -> dict:
    import test_parallel as tp
    model, out = tp.tiny_model(), {}
    for label, make in PARALLEL_POLICIES.items():
        for layout in ("one", "ulysses2"):
            policy, parallel = make(), (tp._policy(2, 1, False) if layout == "ulysses2" else None)
            if parallel is not None:
                parallel.install(model)
            try:
                result = sample(model, tp.embeds(), tp.OPTIONS, cache=policy, **tp.SIZE)
            finally:
                if parallel is not None:
                    parallel.remove()
            out[f"{layout}_{label}"] = {"latent": result.latent, "skipped": [d.skipped for d in policy.decisions],
                                        "predicted": [getattr(d, "predicted", None) for d in policy.decisions],
                                        "calibrated": getattr(policy, "calibrated", None)}
    return out


PARALLEL_POLICIES = {"easycache": lambda: EasyCache(0.1), "magcache": lambda: MagCache(0.24),
                     "magcache_calibrate": lambda: MagCache(calibrate=True)}


@pytest.fixture(scope="module")
def parallel_runs(tmp_path_factory):
    from gloo_ranks import run_suite
    return run_suite("test_cache_easy_mag:_parallel_suite", 2, tmp_path_factory.mktemp("cache_parallel"))


@pytest.mark.parametrize("label", list(PARALLEL_POLICIES))
def test_ulysses_2_ranks_take_the_one_process_decisions(parallel_runs, label):
    one = parallel_runs[0][f"one_{label}"]
    if label != "magcache_calibrate":
        assert any(one["skipped"]) and not all(one["skipped"])
    for rank in parallel_runs:
        found = rank[f"ulysses2_{label}"]
        assert found["skipped"] == one["skipped"]
        assert found["predicted"] == pytest.approx(one["predicted"], rel=1e-4)   # EasyCache: reduced over ranks
        assert float((found["latent"] - one["latent"]).abs().max()) <= 1e-4
        if one["calibrated"] is not None:
            assert found["calibrated"].keys() == one["calibrated"].keys()
            for branch, ratios in one["calibrated"].items():
                assert found["calibrated"][branch] == pytest.approx(ratios, rel=1e-4)
    assert torch.equal(parallel_runs[0][f"ulysses2_{label}"]["latent"], parallel_runs[1][f"ulysses2_{label}"]["latent"])
