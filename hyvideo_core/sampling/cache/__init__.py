"""Cache policies the DiT consults through `model.cache` (never flags inside the blocks)."""
from .first_block import FirstBlockCache
from .policy import CachePolicy, CacheReport, StepCache, installed, relative_l1
from .teacache import HUNYUAN_COEFFICIENTS, TeaCache, TeaCacheDecision, rescale

__all__ = ["CachePolicy", "CacheReport", "FirstBlockCache", "HUNYUAN_COEFFICIENTS", "StepCache",
           "TeaCache", "TeaCacheDecision", "installed", "relative_l1", "rescale"]
