"""Sequence parallelism (Ulysses, ring, both) and CFG parallel on CPU with gloo: N processes
equal one process.

Each configuration spawns its processes once (127.0.0.1, a free port, 1 thread each); every
rank builds the same tiny real-architecture DiT (4 heads, so Ulysses 2 and 4 divide), computes
the one-process results itself, then the same under the parallel policy, and saves what it
found; the tests below read those results. Process groups have a timeout and the spawn a
deadline, so a rank that raises or hangs fails the test instead of hanging it.
"""
from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import gloo_ranks
from gloo_ranks import GROUP_TIMEOUT
from hyvideo_core.errors import InvalidInputError
from hyvideo_core.model.config import PRESETS
from hyvideo_core.model.transformer import HunyuanVideoTransformer
from hyvideo_core.parallel import ParallelConfig, ParallelPolicy, allowed_layouts
from hyvideo_core.sampling import FirstBlockCache, PromptPair, PromptTensors, SamplingOptions, TeaCache, sample
from hyvideo_core.sampling.guidance import GuidanceSettings, GuidedVelocity
from hyvideo_core.sampling.text_inputs import prompt_for_batch

CONFIG = PRESETS["tiny"].replace(heads=4, rope_dims=(4, 6, 6))
SIZE = {"width": 48, "height": 48, "frames": 9}        # latent [B, 16, 3, 6, 6]: 27 image tokens
OPTIONS = SamplingOptions(steps=8, cfg_scale=4.0, seed=3)
TEACACHE_THRESHOLD = 0.2       # this model and run: skips steps 1-3 and 5-6 (margins >= 0.02)
FIRST_BLOCK_THRESHOLD = 0.3    # skips steps 1 and 5 (changes 0.28 / 0.31 / 0.25 / 0.44 around it)


# -- the model and inputs (identical on every rank) --------------------------------------------
def tiny_model() -> HunyuanVideoTransformer:
    torch.manual_seed(7)
    return HunyuanVideoTransformer(CONFIG).eval()


def forward_inputs(shape, text_len: int, valid: list[int] | None, seed: int = 3):
    g = torch.Generator().manual_seed(seed)
    batch = shape[0]
    x = torch.randn(*shape, generator=g)
    text = torch.randn(batch, text_len, CONFIG.text_dim, generator=g)
    mask = None
    if valid is not None:
        mask = torch.zeros(batch, text_len, dtype=torch.long)
        for i, v in enumerate(valid):
            mask[i, :v] = 1
    pooled = torch.randn(batch, CONFIG.pooled_text_dim, generator=g)
    return x, torch.tensor([700.0, 300.0][:batch]), text, mask, pooled, torch.full((batch,), 6000.0)


FORWARD_CASES = {
    # 27 image tokens (divides by neither 2 nor 4), two samples whose text padding differs
    "odd_tokens_padded_text": ((2, 16, 3, 6, 6), 8, [5, 8]),
    # 1 image token: on 4 ranks three shards are padding, and under ring 2 x 2 a whole chunk is
    "one_token": ((1, 16, 1, 2, 2), 4, None),
    # 8 tokens (divides), one sample with trailing text padding (trimmed away)
    "even_tokens": ((1, 16, 2, 4, 4), 6, [4]),
}


def prompt(length: int, seed: int, valid: int) -> PromptTensors:
    g = torch.Generator().manual_seed(seed)
    mask = torch.zeros(1, length, dtype=torch.long)
    mask[:, :valid] = 1
    return PromptTensors(torch.randn(1, length, CONFIG.text_dim, generator=g), mask,
                         torch.randn(1, CONFIG.pooled_text_dim, generator=g))


def embeds() -> PromptPair:
    """The positive prompt is padded (5 of 8 real), the negative is not: a batched CFG forward
    carries a per-sample text mask."""
    return PromptPair(prompt(8, 1, 5), prompt(6, 2, 6))


# -- what each rank runs -------------------------------------------------------------------------
def _policy(u: int, r: int, cfg: bool) -> ParallelPolicy:
    return ParallelPolicy(ParallelConfig(u, r, cfg), timeout=GROUP_TIMEOUT)


def _forwards(model, layout, cases=FORWARD_CASES) -> dict:
    """Max abs difference of the DiT output under `layout` to one process, per input case."""
    inputs = {name: forward_inputs(*spec) for name, spec in cases.items()}
    with torch.no_grad():
        reference = {name: model(*args) for name, args in inputs.items()}
        policy = _policy(*layout).install(model)
        try:
            out = {name: float((model(*args) - reference[name]).abs().max()) for name, args in inputs.items()}
        finally:
            policy.remove()
    out["traffic"] = dict(policy.traffic.sent)
    return out


def _guided_velocity(model, layout) -> float:
    """One true-CFG step's velocity under `layout` (CFG parallel) vs one batched process."""
    pair = embeds()
    settings = GuidanceSettings(6.0, OPTIONS.cfg_scale, "batched")
    pos, neg = (prompt_for_batch(p, 1, "cpu") for p in (pair.positive, pair.negative))
    x = torch.randn(1, 16, 3, 6, 6, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        reference = GuidedVelocity(model, settings, pos, neg)(x, 650.0, 0)
        policy = _policy(*layout).install(model)
        try:
            velocity = GuidedVelocity(model, settings, pos, neg)
            out = velocity(x, 650.0, 0)
            assert velocity.split is not None and velocity.forwards == 1
        finally:
            policy.remove()
    return float((out - reference).abs().max())


def _sampling(model, policy_or_none, cache) -> dict:
    if policy_or_none is not None:
        policy_or_none.install(model)
    try:
        result = sample(model, embeds(), OPTIONS, cache=cache, **SIZE)
    finally:
        if policy_or_none is not None:
            policy_or_none.remove()
    if isinstance(cache, TeaCache):
        skipped = [d.skipped for d in cache.decisions]
    else:
        skipped = [c[3] for c in cache.changes]
    return {"latent": result.latent, "skipped": skipped, "per_branch": result.cache.per_branch,
            "forwards": result.forwards}


def _refusals(rank: int) -> dict:
    out = {}
    try:
        _policy(2, 2, False)                 # 4 processes asked, 2 running
    except InvalidInputError as exc:
        out["world"] = str(exc)
    torch.manual_seed(7)
    three_heads = HunyuanVideoTransformer(CONFIG.replace(hidden_size=48, heads=3)).eval()
    try:
        _policy(2, 1, False).install(three_heads)
    except InvalidInputError as exc:
        out["heads"] = str(exc)
    changed = tiny_model()
    if rank == 1:
        with torch.no_grad():
            changed.final_layer.linear.bias[0] += 0.5      # as if rank 1 had another file / LoRA
    try:
        _policy(2, 1, False).install(changed)
    except InvalidInputError as exc:
        out["weights"] = str(exc)
    try:
        _policy(2, 1, False).install(tiny_model(), identity=f"dit.safetensors lora=style.safetensors@{0.5 + rank}")
    except InvalidInputError as exc:
        out["identity"] = str(exc)
    return out


def _suite_two(rank: int) -> dict:
    model = tiny_model()
    out = {"ulysses2": _forwards(model, (2, 1, False)), "ring2": _forwards(model, (1, 2, False)),
           "cfg2_velocity": _guided_velocity(model, (1, 1, True))}
    out["one_teacache"] = _sampling(model, None, TeaCache(TEACACHE_THRESHOLD))
    out["one_first_block"] = _sampling(model, None, FirstBlockCache(FIRST_BLOCK_THRESHOLD))
    out["ulysses2_teacache"] = _sampling(model, _policy(2, 1, False), TeaCache(TEACACHE_THRESHOLD))
    out["ulysses2_first_block"] = _sampling(model, _policy(2, 1, False), FirstBlockCache(FIRST_BLOCK_THRESHOLD))
    out["cfg2_teacache"] = _sampling(model, _policy(1, 1, True), TeaCache(TEACACHE_THRESHOLD))
    out["refused"] = _refusals(rank)
    return out


def _suite_four(rank: int) -> dict:
    model = tiny_model()
    return {"ulysses2_ring2": _forwards(model, (2, 2, False)), "ring4": _forwards(model, (1, 4, False)),
            "ulysses4": _forwards(model, (4, 1, False)),
            "ulysses2_cfg2_velocity": _guided_velocity(model, (2, 1, True))}


def _suite_one_rank_raises(rank: int) -> dict:
    if rank == 1:
        raise RuntimeError("rank 1 fails on purpose")
    dist.all_reduce(torch.ones(1))           # rank 0 waits for a rank that is gone
    return {}


def run_ranks(suite: str, world: int, folder: Path) -> list[dict]:
    return gloo_ranks.run_suite(f"test_parallel:_suite_{suite}", world, folder)


@pytest.fixture(scope="module")
def two(tmp_path_factory) -> list[dict]:
    return run_ranks("two", 2, tmp_path_factory.mktemp("parallel2"))


@pytest.fixture(scope="module")
def four(tmp_path_factory) -> list[dict]:
    return run_ranks("four", 4, tmp_path_factory.mktemp("parallel4"))


# -- forwards ---------------------------------------------------------------------------------
def _assert_forwards_equal(ranks: list[dict], layout: str) -> None:
    for rank, found in enumerate(ranks):
        for case in FORWARD_CASES:
            assert found[layout][case] <= 1e-5, (rank, layout, case, found[layout][case])


def test_ulysses_2_forward_equals_one_process(two):
    _assert_forwards_equal(two, "ulysses2")
    assert two[0]["ulysses2"]["traffic"]["all_to_all"] > 0


def test_ring_2_forward_equals_one_process(two):
    _assert_forwards_equal(two, "ring2")
    assert two[0]["ring2"]["traffic"]["ring"] > 0 and "all_to_all" not in two[0]["ring2"]["traffic"]


def test_cfg_parallel_2_velocity_equals_one_batched_process(two):
    assert all(r["cfg2_velocity"] <= 1e-5 for r in two), [r["cfg2_velocity"] for r in two]


@pytest.mark.slow
def test_ulysses_2_x_ring_2_and_four_way_forwards_equal_one_process(four):
    for layout in ("ulysses2_ring2", "ring4", "ulysses4"):
        _assert_forwards_equal(four, layout)
    traffic = four[0]["ulysses2_ring2"]["traffic"]
    assert traffic["all_to_all"] > 0 and traffic["ring"] > 0
    assert all(r["ulysses2_cfg2_velocity"] <= 1e-5 for r in four)


def test_the_checks_can_fail():
    """The text mask and the odd length matter: without the mask the output moves far more than
    the 1e-5 the parallel runs are held to."""
    model = tiny_model()
    x, t, text, mask, pooled, g = forward_inputs(*FORWARD_CASES["odd_tokens_padded_text"])
    with torch.no_grad():
        masked = model(x, t, text, mask, pooled, g)
        unmasked = model(x, t, text, torch.ones_like(mask), pooled, g)
    assert float((masked - unmasked).abs().max()) > 1e-3


def test_online_softmax_over_key_chunks_equals_one_softmax():
    """The ring's merge, in one process: chunked (out, lse) merged = softmax over all keys, for
    the device kernel and the float32 math fallback."""
    from hyvideo_core.parallel.lse import OnlineSoftmax, _math, attend
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, n, 16, generator=g) * 2 for n in (7, 11, 11))
    reference = torch.nn.functional.scaled_dot_product_attention(q, k, v)
    for kernel in (attend, _math):
        acc = OnlineSoftmax()
        for part in (slice(0, 4), slice(4, 5), slice(5, 11)):
            acc.add(*kernel(q, k[:, :, part], v[:, :, part]))
        assert float((acc.result(q.dtype) - reference).abs().max()) < 1e-5, kernel


# -- sampling -----------------------------------------------------------------------------------
@pytest.mark.parametrize("run, reference", [("ulysses2_teacache", "one_teacache"),
                                            ("ulysses2_first_block", "one_first_block"),
                                            ("cfg2_teacache", "one_teacache")])
def test_sampling_under_parallel_equals_one_process_and_skips_the_same_steps(two, run, reference):
    one = two[0][reference]
    assert any(one["skipped"]) and not all(one["skipped"])      # the run exercises both decisions
    for rank in two:
        assert rank[run]["skipped"] == one["skipped"]
        assert rank[run]["per_branch"] == one["per_branch"]
        assert float((rank[run]["latent"] - one["latent"]).abs().max()) <= 1e-4
    assert torch.equal(two[0][run]["latent"], two[1][run]["latent"])   # every rank holds the same video
    if run.startswith("cfg2"):
        assert two[0][run]["forwards"] == OPTIONS.steps                # one half per rank, one forward a step


def test_a_rank_that_raises_fails_the_run_instead_of_hanging_it(tmp_path):
    """Rank 1 raises while rank 0 waits in a collective: the run fails at once (the report is
    rank 1's error or rank 0's 'peer gone', whichever exits first), well before the timeout."""
    start = time.monotonic()
    with pytest.raises(mp.ProcessRaisedException, match="rank 1 fails on purpose|Connection reset|Connection closed"):
        run_ranks("one_rank_raises", 2, tmp_path)
    assert time.monotonic() - start < GROUP_TIMEOUT.total_seconds()


# -- refusals -----------------------------------------------------------------------------------
def test_invalid_degrees_are_refused_naming_the_allowed_values():
    with pytest.raises(InvalidInputError, match=r"allowed ulysses_degree values: \[1, 2, 3, 4, 6, 8, 12, 24\]"):
        ParallelConfig(5, 1).check(world_size=5, heads=24)
    with pytest.raises(InvalidInputError, match="ulysses_degree=1, ring_degree=5"):
        ParallelConfig(5, 1).check(world_size=5, heads=24)
    with pytest.raises(InvalidInputError, match=r"= 8 processes, but the world size is 4; .*ulysses_degree=2 "
                                                r"ring_degree=2.*ulysses_degree=2 ring_degree=1 cfg_parallel"):
        ParallelConfig(2, 2, True).check(world_size=4, heads=24)
    with pytest.raises(InvalidInputError, match="ring_degree: must be a whole number >= 1"):
        ParallelConfig(1, 0).check()
    assert allowed_layouts(5, 24) == ["ulysses_degree=1 ring_degree=5"]
    ParallelConfig(4, 2).check(world_size=8, heads=24)


def test_ranks_refuse_a_wrong_world_a_wrong_head_count_and_different_models(two):
    for refused in (r["refused"] for r in two):
        assert "world size is 2" in refused["world"] and "ulysses_degree=2 ring_degree=1" in refused["world"]
        assert "3 attention heads" in refused["heads"] and "[1, 3]" in refused["heads"]
        assert "rank 1 differs from rank 0 in its weights" in refused["weights"]
        assert "identity" in refused["identity"] and "style.safetensors@1.5" in refused["identity"]
