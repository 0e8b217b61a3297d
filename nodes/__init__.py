"""The pack's ComfyUI nodes, collected from every node module in this folder.

A node module (loaders.py, sampling.py, ...) defines `NODE_CLASS_MAPPINGS` and optionally
`NODE_DISPLAY_NAME_MAPPINGS`, exactly like a ComfyUI pack; adding a file here is all it takes.
Modules are imported relatively: this package is only reachable through the pack root, so it
never shadows ComfyUI's own top-level `nodes` module.

A module that fails to import is logged with its traceback and listed in IMPORT_ERRORS; the
other modules still load (as ComfyUI does for whole packs), and the tests require it to be empty.
"""
from __future__ import annotations

import importlib
import logging
import pkgutil

log = logging.getLogger(__name__)

# Modules here that are infrastructure, not nodes.
NOT_NODE_MODULES = frozenset({"host", "folders", "routes", "model_handle", "settings"})

NODE_CLASS_MAPPINGS: dict[str, type] = {}
NODE_DISPLAY_NAME_MAPPINGS: dict[str, str] = {}
IMPORT_ERRORS: dict[str, str] = {}


def node_module_names() -> list[str]:
    return sorted(info.name for info in pkgutil.iter_modules(__path__)
                  if not info.name.startswith("_") and info.name not in NOT_NODE_MODULES)


def _collect() -> None:
    owners: dict[str, str] = {}
    for name in node_module_names():
        try:
            module = importlib.import_module(f".{name}", __name__)
        except Exception as error:  # noqa: BLE001 - reported below, and the tests fail on it
            log.exception("hyvideo: node module %s failed to import", name)
            IMPORT_ERRORS[name] = f"{type(error).__name__}: {error}"
            continue
        for node_id, cls in getattr(module, "NODE_CLASS_MAPPINGS", {}).items():
            if node_id in owners:
                raise RuntimeError(f"hyvideo: node id {node_id!r} is defined by both nodes/{owners[node_id]}.py "
                                   f"and nodes/{name}.py; node ids must be unique.")
            owners[node_id] = name
            NODE_CLASS_MAPPINGS[node_id] = cls
        NODE_DISPLAY_NAME_MAPPINGS.update(getattr(module, "NODE_DISPLAY_NAME_MAPPINGS", {}))


_collect()
