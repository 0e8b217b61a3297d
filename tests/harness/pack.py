"""Import the pack root the way ComfyUI does: as a package with a name of our choosing.

Tests must reach node modules only through this (e.g. `load_pack().nodes.host.host`), never with
`import nodes`, which would be a second copy of every module (and of the host) and would shadow
ComfyUI's own top-level `nodes` module.
"""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

PACK_ROOT = Path(__file__).resolve().parents[2]
PACK_NAME = "hyvideo_pack"


def load_pack(name: str = PACK_NAME) -> ModuleType:
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, PACK_ROOT / "__init__.py",
                                                  submodule_search_locations=[str(PACK_ROOT)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def pack_module(relative: str) -> ModuleType:
    """A module of the pack by its path inside it, e.g. pack_module("nodes.routes")."""
    return importlib.import_module(f"{load_pack().__name__}.{relative}")
