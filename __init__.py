"""ComfyUI entry point of the HunyuanVideo pack (V1 node contract).

ComfyUI imports this folder as a package (under a mangled name) after it has set up its model
folders and server; tests import it the same way with importlib. The engine, `hyvideo_core`,
lives beside this file and is made importable here when it is not installed.
"""
from __future__ import annotations

import importlib.util
import logging
import os
import sys

_PACK_DIR = os.path.dirname(os.path.abspath(__file__))
log = logging.getLogger(__name__)


def _make_engine_importable() -> None:
    spec = importlib.util.find_spec("hyvideo_core")
    if spec is None:
        # Appended, not prepended: the pack folder must never shadow ComfyUI's own modules.
        sys.path.append(_PACK_DIR)
        return
    origin = os.path.dirname(os.path.dirname(os.path.abspath(spec.origin or "")))
    if os.path.realpath(origin) != os.path.realpath(_PACK_DIR):
        log.warning("hyvideo: using the hyvideo_core installed at %s, not the copy in this pack (%s)",
                    origin, _PACK_DIR)


_make_engine_importable()

from .nodes import IMPORT_ERRORS, NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS  # noqa: E402
from .nodes import routes as _routes  # noqa: E402
from .nodes.host import host as _host  # noqa: E402

_routes.register(_host)

WEB_DIRECTORY = "./web/js"

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
