"""Cache policies the DiT consults through `model.cache` (never flags inside the blocks)."""
from .easycache import EasyCache, EasyCacheDecision
from .first_block import FirstBlockCache
from .magcache import HUNYUAN_MAG_RATIOS, MagCache, MagCacheDecision, resample_ratios
from .policy import CachePolicy, CacheReport, StepCache, installed, relative_l1
from .teacache import HUNYUAN_COEFFICIENTS, TeaCache, TeaCacheDecision, rescale

# The policies by the name every front end uses, and their default thresholds.
CACHE_POLICIES = {"teacache": TeaCache, "first_block": FirstBlockCache, "easycache": EasyCache,
                  "magcache": MagCache}
DEFAULT_THRESHOLDS = {"teacache": 0.15, "first_block": 0.05, "easycache": 0.025, "magcache": 0.24}
# A policy's own knobs beyond the shared ones (keyword -> published default).
POLICY_OPTIONS = {"easycache": {"warmup": 0.1}, "magcache": {"max_skips": 6, "retention": 0.2, "ratios": "auto"}}


def make_cache(name: str, threshold: float | None = None, start_step: int = 0, end_step: int | None = None,
               storage: str = "main", **options) -> CachePolicy | None:
    """A fresh policy by name ('none' gives None); threshold None = the policy's default;
    `options` are the policy's own knobs (POLICY_OPTIONS)."""
    from ...errors import InvalidInputError
    if name == "none":
        return None
    if name not in CACHE_POLICIES:
        raise InvalidInputError(f"cache: {name!r} is not one of {['none', *CACHE_POLICIES]}.")
    unknown = sorted(set(options) - set(POLICY_OPTIONS.get(name, {})))
    if unknown:
        raise InvalidInputError(f"cache {name}: no option {unknown}; it takes {sorted(POLICY_OPTIONS.get(name, {}))}.")
    chosen = DEFAULT_THRESHOLDS[name] if threshold is None else threshold
    return CACHE_POLICIES[name](chosen, start_step, end_step, storage=storage, **options)


__all__ = ["CACHE_POLICIES", "CachePolicy", "CacheReport", "DEFAULT_THRESHOLDS", "EasyCache", "EasyCacheDecision",
           "FirstBlockCache", "HUNYUAN_COEFFICIENTS", "HUNYUAN_MAG_RATIOS", "MagCache", "MagCacheDecision",
           "POLICY_OPTIONS", "StepCache", "TeaCache", "TeaCacheDecision", "installed", "make_cache", "relative_l1",
           "resample_ratios", "rescale"]
