"""The DiT (transformer.py) and the run options the sampling loop sets on it from outside.

`ImageCondition` (default, off) and `TokenReplace` (HunyuanVideo-I2V token_replace) are
installed as `model.image_condition` for a run (image_condition.py). Imported on first use:
`import hyvideo_core.model.config` must stay cheap.
"""
from __future__ import annotations

from ..lazy_exports import lazy_exports

__getattr__, __dir__ = lazy_exports(__name__, {
    "HunyuanVideoTransformer": "hyvideo_core.model.transformer",
    "DiTConfig": "hyvideo_core.model.config",
    "VARIANTS": "hyvideo_core.model.config",
    "ImageCondition": "hyvideo_core.model.image_condition",
    "TokenReplace": "hyvideo_core.model.image_condition",
    "RopeOptions": "hyvideo_core.model.rope",
})
__all__ = ["HunyuanVideoTransformer", "DiTConfig", "VARIANTS", "ImageCondition", "TokenReplace", "RopeOptions"]
