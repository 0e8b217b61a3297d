"""The pack root imports outside ComfyUI, every registered node meets the V1 contract, and the
layering holds: only nodes/host.py touches ComfyUI, nothing imports our `nodes` top-level."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from harness import contract
from harness.pack import PACK_ROOT, load_pack

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
    assert pack.nodes.host.host.name == "standalone"  # installed by conftest.py
    assert "comfy" not in sys.modules and "folder_paths" not in sys.modules


def test_pack_import_in_a_fresh_interpreter_under_a_mangled_name():
    # What ComfyUI does: spec_from_file_location with the folder path as module name.
    code = ("import importlib.util, sys; name = '/x/custom_nodes/hyvideo'.replace('.', '_x_'); "
            f"spec = importlib.util.spec_from_file_location(name, {str(PACK_ROOT / '__init__.py')!r}); "
            "m = importlib.util.module_from_spec(spec); sys.modules[name] = m; spec.loader.exec_module(m); "
            "print(len(m.NODE_CLASS_MAPPINGS), m.nodes.host.host.name, 'nodes' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/", timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[-2] == "none"   # no host until one is installed; the routes are recorded
    assert out.stdout.split()[-1] == "False"  # our nodes package never became the top-level `nodes`


def test_every_registered_node_meets_the_contract():
    pack = load_pack()
    assert contract.mapping_problems(pack.NODE_CLASS_MAPPINGS, pack.NODE_DISPLAY_NAME_MAPPINGS) == {}


def test_only_the_host_module_imports_comfyui():
    offenders = []
    for path in python_files("hyvideo_core", "nodes") + [PACK_ROOT / "__init__.py"]:
        if PACK_ROOT / "nodes" / "host" in path.parents:
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


def engine_imports() -> dict[str, set[str]]:
    """hyvideo_core module -> the hyvideo_core modules it imports anywhere (inside functions too).
    `from pkg import sub` counts as importing the submodule only; the packages above a module are
    left out (they are initialised before it runs)."""
    modules = {}
    for path in python_files("hyvideo_core"):
        parts = path.relative_to(PACK_ROOT).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    edges = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module != "__future__":
                base = package.rsplit(".", node.level - 1)[0] if node.level else ""
                target = ".".join(p for p in (base, node.module) if p)
                subs = {f"{target}.{alias.name}" for alias in node.names} & modules.keys()
                targets.update(subs if len(subs) == len(node.names) else subs | {target})
        above = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)}
        edges[name] = {t for t in targets if t in modules and t != name}
        edges[name] |= {".".join(t.split(".")[:i]) for t in edges[name] for i in range(1, t.count(".") + 1)} - above
        edges[name] = (edges[name] & modules.keys()) - {name}
    return edges


def test_no_engine_module_imports_one_that_imports_it_back():
    edges = engine_imports()
    assert "hyvideo_core.weights.gguf" in edges["hyvideo_core.weights.reader"]  # the walk sees lazy imports
    cycles = set()
    for start in edges:
        stack, seen = [(start, (start,))], set()
        while stack:
            module, path = stack.pop()
            for target in edges[module]:
                if target == start and start == min(path):  # each cycle once, from its first module
                    cycles.add(" -> ".join(path + (start,)))
                elif target not in seen:
                    seen.add(target)
                    stack.append((target, path + (target,)))
    assert sorted(cycles) == []
