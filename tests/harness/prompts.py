"""Editing API prompts for tests: swap the public model file names for tiny ones, shrink sizes."""
from __future__ import annotations

import copy
import json
from pathlib import Path

from .validation import is_link

WORKFLOWS = Path(__file__).resolve().parents[2] / "workflows"
# Sizes that make a workflow run in seconds on the CPU with tiny models (by input name).
SMALL_SETTINGS = {"width": 64, "height": 64, "frames": 5, "length": 5, "num_frames": 5, "steps": 2,
                  "resize_width": 64, "resize_height": 64, "frame_load_cap": 5,
                  # the parallel workflow samples on two CPU processes (gloo) in place of two GPUs
                  "devices": "cpu,cpu"}


def api_workflows() -> list[Path]:
    return sorted((WORKFLOWS / "api").glob("*.json"))


def ui_workflows() -> list[Path]:
    return sorted(WORKFLOWS.glob("*.json"))


def load_json(path: Path) -> dict:
    return json.loads(Path(path).read_text())


def with_inputs(prompt: dict, values: dict, only_existing: bool = True) -> dict:
    """A copy of `prompt` where every constant input named in `values` gets that value
    (e.g. {"width": 64, "frames": 5, "steps": 2}); links are left alone."""
    changed = copy.deepcopy(prompt)
    for node in changed.values():
        for name, value in values.items():
            current = node["inputs"].get(name, None)
            if (name in node["inputs"] or not only_existing) and not is_link(current):
                node["inputs"][name] = value
    return changed


def with_files(prompt: dict, names: dict[str, str]) -> dict:
    """A copy of `prompt` where string inputs equal to a key of `names` are replaced
    (public model file names -> tiny test files)."""
    changed = copy.deepcopy(prompt)
    for node in changed.values():
        for name, value in node["inputs"].items():
            if isinstance(value, str) and value in names:
                node["inputs"][name] = names[value]
    return changed


def file_inputs(prompt: dict, suffixes=(".safetensors", ".gguf", ".pt", ".pth", ".bin", ".sft")) -> set[str]:
    """Every constant input value that looks like a model file name."""
    return {v for node in prompt.values() for v in node["inputs"].values()
            if isinstance(v, str) and v.lower().endswith(suffixes)}


MEDIA_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".mp4", ".webm", ".mov", ".mkv", ".gif")


def media_inputs(prompt: dict, suffixes=MEDIA_SUFFIXES) -> set[str]:
    """Every constant input value that names an image or video (files of ComfyUI's input folder)."""
    return {v for node in prompt.values() for v in node["inputs"].values()
            if isinstance(v, str) and v.lower().endswith(suffixes)}
