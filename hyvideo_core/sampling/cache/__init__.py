"""Cache policies the DiT consults through `model.cache` (never flags inside the blocks)."""
from .first_block import FirstBlockCache
from .policy import CachePolicy, CacheReport, StepCache, installed, relative_l1
from .teacache import HUNYUAN_COEFFICIENTS, TeaCache, TeaCacheDecision, rescale

# The policies by the name every front end uses, and their default thresholds.
CACHE_POLICIES = {"teacache": TeaCache, "first_block": FirstBlockCache}
DEFAULT_THRESHOLDS = {"teacache": 0.15, "first_block": 0.05}


def make_cache(name: str, threshold: float | None = None, start_step: int = 0, end_step: int | None = None,
               storage: str = "main") -> CachePolicy | None:
    """A fresh policy by name ('none' gives None); threshold None = the policy's default."""
    from ...errors import InvalidInputError
    if name == "none":
        return None
    if name not in CACHE_POLICIES:
        raise InvalidInputError(f"cache: {name!r} is not one of {['none', *CACHE_POLICIES]}.")
    chosen = DEFAULT_THRESHOLDS[name] if threshold is None else threshold
    return CACHE_POLICIES[name](chosen, start_step, end_step, storage=storage)


__all__ = ["CACHE_POLICIES", "CachePolicy", "CacheReport", "DEFAULT_THRESHOLDS", "FirstBlockCache",
           "HUNYUAN_COEFFICIENTS", "StepCache", "TeaCache", "TeaCacheDecision", "installed", "make_cache",
           "relative_l1", "rescale"]
