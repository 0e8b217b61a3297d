"""Package attributes imported on first use: `import hyvideo_core` must stay cheap because
ComfyUI imports every pack at start-up, and torch/transformers-heavy modules can wait."""
from __future__ import annotations

import importlib
from typing import Callable, Mapping


def lazy_exports(package: str, names: Mapping[str, str]) -> tuple[Callable, Callable]:
    """(__getattr__, __dir__) for a package whose public `names` live in the given modules."""
    def __getattr__(name: str):
        if name in names:
            return getattr(importlib.import_module(names[name]), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__():
        return sorted(set(importlib.import_module(package).__dict__) | set(names))

    return __getattr__, __dir__
