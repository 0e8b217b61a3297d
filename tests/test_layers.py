"""Imports point down, and the nodes use only the engine's public surface; only nodes/host/ (a
package: the host protocol, ComfyHost, the native-model adapter) talks to ComfyUI."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HOST = ROOT / "nodes" / "host"
COMFY_MODULES = ("comfy", "comfy_extras", "comfy_execution", "comfy_api", "folder_paths", "server", "execution",
                 "latent_preview", "node_helpers")
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


def node_files() -> list[Path]:
    return sorted((ROOT / "nodes").rglob("*.py"))


def test_the_host_is_a_package_inside_nodes():
    assert (HOST / "__init__.py").is_file() and not (ROOT / "nodes" / "host.py").exists()
    assert {"comfy_host.py", "native_model.py"} <= {p.name for p in HOST.glob("*.py")}


def test_nodes_import_only_the_public_engine_surface():
    deep = [(str(path.relative_to(ROOT)), module) for path in node_files()
            for module, _ in _imports(path) if module.startswith("hyvideo_core") and module not in PUBLIC]
    assert deep == []


def test_only_the_host_package_imports_comfyui():
    outside = [(str(path.relative_to(ROOT)), module) for path in node_files() if HOST not in path.parents
               for module, _ in _imports(path) if module.split(".")[0] in COMFY_MODULES]
    assert outside == []
    inside = {module.split(".")[0] for path in HOST.glob("*.py") for module, _ in _imports(path)}
    assert {"comfy", "folder_paths"} <= inside   # the check above looks at the right names


def test_nodes_read_no_private_attributes_of_engine_objects():
    private = []
    for path in node_files():
        if HOST in path.parents:   # the host's own state (self._mm, ...) and ComfyUI's objects
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
                owner = node.value.id if isinstance(node.value, ast.Name) else ""
                if owner not in ("self", "cls"):
                    private.append((str(path.relative_to(ROOT)), node.lineno, node.attr))
    assert private == []


def test_the_host_package_reads_no_private_attributes_of_engine_objects():
    """nodes/host/ may use its own private state (self._x, a module's _names) but nothing private of
    the engine's objects (handles, LoadedDiT, placements)."""
    private = []
    for path in sorted(HOST.glob("*.py")):
        own = {n.name for n in ast.walk(ast.parse(path.read_text()))
               if isinstance(n, (ast.FunctionDef, ast.ClassDef)) and n.name.startswith("_")}
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
                owner = node.value.id if isinstance(node.value, ast.Name) else ""
                if owner not in ("self", "cls", "host") and node.attr not in own and node.attr != "_installed":
                    private.append((path.name, node.lineno, node.attr))
    assert private == []


def test_the_engine_never_imports_comfyui_or_the_nodes():
    for path in (ROOT / "hyvideo_core").rglob("*.py"):
        for module, _ in _imports(path):
            top = module.split(".")[0]
            assert top not in ("comfy", "folder_paths", "server", "nodes", "comfy_extras"), (path, module)
