"""The pack root imports outside ComfyUI, every registered node meets the V1 contract, and the
layering holds: only nodes/host.py touches ComfyUI, nothing imports our `nodes` top-level."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from harness.pack import PACK_ROOT, load_pack, pack_module

COMFY_MODULES = ("comfy", "comfy_extras", "comfy_execution", "comfy_api", "folder_paths", "server",
                 "execution", "latent_preview", "node_helpers")


def imported_modules(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
    return found


def python_files(*folders: str) -> list[Path]:
    return [p for folder in folders for p in sorted((PACK_ROOT / folder).rglob("*.py"))]


def test_pack_imports_outside_comfyui_with_its_mappings():
    pack = load_pack()
    assert isinstance(pack.NODE_CLASS_MAPPINGS, dict) and isinstance(pack.NODE_DISPLAY_NAME_MAPPINGS, dict)
    assert pack.WEB_DIRECTORY == "./web/js" and (PACK_ROOT / "web" / "js").is_dir()
    assert pack.IMPORT_ERRORS == {}, pack.IMPORT_ERRORS
    assert pack.nodes.host.host.name == "standalone"
    assert "comfy" not in sys.modules and "folder_paths" not in sys.modules


def test_pack_import_in_a_fresh_interpreter_under_a_mangled_name():
    # What ComfyUI does: spec_from_file_location with the folder path as module name.
    code = ("import importlib.util, sys; name = '/x/custom_nodes/hyvideo'.replace('.', '_x_'); "
            f"spec = importlib.util.spec_from_file_location(name, {str(PACK_ROOT / '__init__.py')!r}); "
            "m = importlib.util.module_from_spec(spec); sys.modules[name] = m; spec.loader.exec_module(m); "
            "print(len(m.NODE_CLASS_MAPPINGS), 'nodes' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/", timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[-1] == "False"  # our nodes package never became the top-level `nodes`


def test_every_registered_node_meets_the_contract():
    pack = load_pack()
    contract = pack_module("nodes.contract")
    assert contract.mapping_problems(pack.NODE_CLASS_MAPPINGS, pack.NODE_DISPLAY_NAME_MAPPINGS) == {}


def test_only_the_host_module_imports_comfyui():
    offenders = []
    for path in python_files("hyvideo_core", "nodes") + [PACK_ROOT / "__init__.py"]:
        if path == PACK_ROOT / "nodes" / "host.py":
            continue
        for line, module in imported_modules(path):
            if module.split(".")[0] in COMFY_MODULES:
                offenders.append(f"{path.relative_to(PACK_ROOT)}:{line} imports {module}")
    assert offenders == []


def test_nothing_imports_our_nodes_package_by_its_top_level_name():
    offenders = [f"{path.relative_to(PACK_ROOT)}:{line}"
                 for path in python_files("hyvideo_core", "nodes", "tests") + [PACK_ROOT / "__init__.py"]
                 for line, module in imported_modules(path) if module == "nodes" or module.startswith("nodes.")]
    assert offenders == []
