"""The harness with ComfyUI's own nodes: the PromptRunner executes native ComfyUI node classes
(KSampler, SamplerCustomAdvanced, BasicScheduler, ModelSamplingSD3, EmptyHunyuanLatentVideo, ...)
next to ours, in this process, with the pack's real ComfyHost behind our nodes. No server runs.

It needs ComfyUI importable with its requirements, so it runs under ComfyUI's Python
(COMFYUI_PYTHON; tests/harness_native_run.py is such a run):

    runner = comfyui_runner("/path/to/ComfyUI", tmp_root)   # models under tmp_root/models/<kind>/
    result = runner.run(prompt).expect_success()

ComfyUI is set up as `main.py --cpu` would: CPU device, folders under `root`, and a progress hook
(ComfyUI's own set_progress_bar_global_hook, the one its server installs) that checks the
interrupt flag and reports progress to the runner.
"""
from __future__ import annotations

import sys
from pathlib import Path

from .executor import PromptRunner
from .pack import load_pack, pack_module

# ComfyUI's built-in node modules with the classes a HunyuanVideo graph uses; only classes in the
# classic (INPUT_TYPES / FUNCTION) form are taken: the harness does not emulate the V3 schema.
BUILT_IN_MODULES = ("nodes", "comfy_extras.nodes_custom_sampler", "comfy_extras.nodes_model_advanced",
                    "comfy_extras.nodes_hunyuan")


def comfyui_runner(comfyui_path: str | Path, root: str | Path, extra_nodes: dict | None = None) -> PromptRunner:
    """A PromptRunner over ComfyUI's built-in classic nodes, the pack's nodes and `extra_nodes`,
    with ComfyUI's folders under `root` (models in root/models/<kind>/, output, input, temp)."""
    root = Path(root)
    mm = _import_comfyui(Path(comfyui_path), root)
    built_in = _built_in_classes()      # before the pack: its folder must never shadow ComfyUI's `nodes`
    pack = load_pack()
    _add_model_folders(root / "models")
    host = _harness_host_class()()
    pack.nodes.host.install_host(host)
    import comfy.utils
    comfy.utils.set_progress_bar_global_hook(_progress_hook(host))
    runner = PromptRunner({**built_in, **pack.NODE_CLASS_MAPPINGS, **(extra_nodes or {})}, host)
    runner.interrupt_types = (*runner.interrupt_types, mm.InterruptProcessingException)
    return runner


def _import_comfyui(comfyui_path: Path, root: Path):
    if not (comfyui_path / "main.py").is_file():
        raise FileNotFoundError(f"no ComfyUI checkout at {comfyui_path} (main.py is missing)")
    if str(comfyui_path) not in sys.path:
        sys.path.insert(0, str(comfyui_path))
    from comfy.cli_args import args
    args.cpu = True                     # before comfy.model_management picks its device
    import folder_paths
    for setter, name in ((folder_paths.set_output_directory, "output"), (folder_paths.set_input_directory, "input"),
                         (folder_paths.set_temp_directory, "temp")):
        (root / name).mkdir(parents=True, exist_ok=True)
        setter(str(root / name))
    import comfy.model_management
    return comfy.model_management


def _add_model_folders(models: Path) -> None:
    import folder_paths

    from .standalone_host import DEFAULT_FOLDERS   # imports the engine: only once the pack is loaded
    for kind, subfolders in DEFAULT_FOLDERS.items():
        folder_paths.add_model_folder_path(kind, str(models / subfolders[0]), is_default=True)


def _built_in_classes() -> dict:
    import importlib
    classes = {}
    for name in BUILT_IN_MODULES:
        for class_type, cls in getattr(importlib.import_module(name), "NODE_CLASS_MAPPINGS", {}).items():
            if hasattr(cls, "INPUT_TYPES") and hasattr(cls, "FUNCTION"):
                classes[class_type] = cls
    return classes


def _harness_host_class():
    """The pack's ComfyHost with what the runner sets and calls on a host (the node being run, a
    progress listener, clearing the interrupt flag at the start of a prompt)."""
    ComfyHost = pack_module("nodes.host.comfy_host").ComfyHost

    class HarnessComfyHost(ComfyHost):
        on_progress = None
        current_node = None

        def clear_interrupt(self) -> None:
            self._mm.interrupt_current_processing(False)

        def interrupt(self) -> None:
            self._mm.interrupt_current_processing(True)

    return HarnessComfyHost


def _progress_hook(host):
    def hook(value, total, preview, prompt_id=None, node_id=None):
        host.check_interrupt()
        if host.on_progress is not None:
            host.on_progress(node_id or host.current_node, value, total, preview)
    return hook
