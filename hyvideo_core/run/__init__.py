"""The run layer: ONE path from a request to a video, under the CLI and the ComfyUI nodes alike.

    check everything (options, output, every model file sniffed)  -> validate.py, sniff.py
    plan memory and block swap (one budget, one "auto")            -> memory.py
    place models (one mechanism: runtime/placement.py)             -> dit.py, stages.py
    sync LoRAs, sample under the OOM policy, decode, write         -> stages.py, generate.py

`generate(files, settings)` runs it all (the CLI); the nodes call the stages one node at a time.
The lists of names and the defaults every front end shares are in choices.py.
"""
from __future__ import annotations

from ..lazy_exports import lazy_exports

_PUBLIC = {
    "generate": "hyvideo_core.run.generate",
    "GenerateSettings": "hyvideo_core.run.settings",
    "GenerateResult": "hyvideo_core.run.settings",
    "ModelFiles": "hyvideo_core.run.settings",
    "SwapRequest": "hyvideo_core.run.settings",
    "CacheRequest": "hyvideo_core.run.settings",
    "check_budget": "hyvideo_core.run.settings",
    "CheckedRun": "hyvideo_core.run.validate",
    "check_run": "hyvideo_core.run.validate",
    "check_size": "hyvideo_core.run.validate",
    "check_output": "hyvideo_core.run.validate",
    "check_files": "hyvideo_core.run.validate",
    "sniff_model_file": "hyvideo_core.run.sniff",
    "PlacementPlan": "hyvideo_core.run.memory",
    "plan_placement": "hyvideo_core.run.memory",
    "budget_bytes": "hyvideo_core.run.memory",
    "MEMORY_MODES": "hyvideo_core.run.memory",
    "module_bytes": "hyvideo_core.runtime.placement",
    "swap_for_memory_mode": "hyvideo_core.run.memory",
    "swaps_under": "hyvideo_core.run.memory",
    "LoadedDiT": "hyvideo_core.run.dit",
    "RunShape": "hyvideo_core.run.dit",
    "load_dit": "hyvideo_core.run.dit",
    "LocalHost": "hyvideo_core.run.stages",
    "RunHost": "hyvideo_core.run.stages",
    "SampleOutcome": "hyvideo_core.run.stages",
    "DecodeOutcome": "hyvideo_core.run.stages",
    "sample_video": "hyvideo_core.run.stages",
    "encode_prompts": "hyvideo_core.run.stages",
    "encode_first_frame": "hyvideo_core.run.stages",
    "decode_latent": "hyvideo_core.run.stages",
    "encode_video": "hyvideo_core.run.stages",
    "vae_visit": "hyvideo_core.run.stages",
    "Reporter": "hyvideo_core.run.report",
    "GroupLayout": "hyvideo_core.run.worker_group",
    "PersistentGroup": "hyvideo_core.run.worker_group",
    "WorkerGroup": "hyvideo_core.run.worker_group",
    "WorkerGroupError": "hyvideo_core.run.worker_group",
    "parse_devices": "hyvideo_core.run.worker_group",
    "ParallelConfig": "hyvideo_core.parallel.config",
    "DEFAULTS": "hyvideo_core.run.choices",
    "MAX_SIZE": "hyvideo_core.run.validate",
    "MAX_FRAMES": "hyvideo_core.run.validate",
    "MAX_STEPS": "hyvideo_core.run.validate",
    "MAX_SEED": "hyvideo_core.run.validate",
    "PlanInputs": "hyvideo_core.runtime.planner",
    "GiB": "hyvideo_core.runtime.planner",
}

__getattr__, __dir__ = lazy_exports(__name__, _PUBLIC)
