"""LoRA for the HunyuanVideo DiT in every format in circulation, applied without reloads.

    lora = load_lora("my_lora.safetensors")                 # any format -> LoraFile
    report = apply_loras(model, [(lora, 0.8)])              # merge / runtime adapters (mode="auto")
    set_strengths(model, {lora.name: 0.5})                   # no reload
    remove_loras(model)                                      # base weights back, bit-exact
"""
from .apply import MODES, apply_loras, remove_loras, set_strengths
from .block_strengths import BlockStrengths
from .formats import LoraFile, LoraPart, ModuleLora, UnmatchedKey, load_lora, parse_lora
from .report import LoraMatch, LoraReport, RequantisationError
from .resolve import LoraSpec

__all__ = ["BlockStrengths", "LoraFile", "LoraMatch", "LoraPart", "LoraReport", "LoraSpec", "MODES", "ModuleLora",
           "RequantisationError", "UnmatchedKey", "apply_loras", "load_lora", "parse_lora", "remove_loras",
           "set_strengths"]
