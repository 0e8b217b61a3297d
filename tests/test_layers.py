"""Imports point down, and the nodes use only the engine's public surface."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PUBLIC = {"hyvideo_core", "hyvideo_core.errors", "hyvideo_core.run", "hyvideo_core.run.choices",
          "hyvideo_core.sampling", "hyvideo_core.text", "hyvideo_core.vae", "hyvideo_core.video",
          "hyvideo_core.lora", "hyvideo_core.conditioning"}


def _imports(path: Path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module, [a.name for a in node.names]
        elif isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, []


def test_nodes_import_only_the_public_engine_surface():
    deep = [(path.name, module) for path in sorted((ROOT / "nodes").glob("*.py"))
            for module, _ in _imports(path) if module.startswith("hyvideo_core") and module not in PUBLIC]
    assert deep == []


def test_nodes_read_no_private_attributes_of_engine_objects():
    private = []
    for path in sorted((ROOT / "nodes").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
                owner = node.value.id if isinstance(node.value, ast.Name) else ""
                if owner not in ("self", "cls") and not (path.name == "host.py"):
                    private.append((path.name, node.lineno, node.attr))
    assert private == []


def test_the_engine_never_imports_comfyui_or_the_nodes():
    for path in (ROOT / "hyvideo_core").rglob("*.py"):
        for module, _ in _imports(path):
            top = module.split(".")[0]
            assert top not in ("comfy", "folder_paths", "server", "nodes", "comfy_extras"), (path, module)
