"""What applying LoRAs did: matched modules, unmatched keys, merged vs runtime layers, fp8 error."""
from __future__ import annotations

from dataclasses import dataclass, field

from .formats import UnmatchedKey


@dataclass(frozen=True)
class LoraMatch:
    """One LoRA file against one model."""

    name: str
    format: str
    strength: float
    matched: tuple[str, ...]             # official modules (and norm parameters) it changes
    unmatched: tuple[UnmatchedKey, ...]  # keys not applied, each with the reason
    skipped: tuple[str, ...] = ()        # modules left out by block strength 0
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class RequantisationError:
    """How far an fp8 layer re-quantised after a merge is from the exact merged weight."""

    module: str
    max_abs: float
    max_rel: float        # max_abs / max |merged weight|


@dataclass(frozen=True)
class LoraReport:
    loras: tuple[LoraMatch, ...]
    mode: str
    merged: tuple[str, ...] = ()
    unmerged: tuple[str, ...] = ()
    requantised: tuple[RequantisationError, ...] = ()
    widened: tuple[int, int] | None = None     # patch-embed input channels (before, after)
    notes: tuple[str, ...] = field(default=())

    @property
    def unmatched(self) -> tuple[UnmatchedKey, ...]:
        return tuple(u for lora in self.loras for u in lora.unmatched)

    @property
    def max_requantisation_error(self) -> float:
        return max((r.max_rel for r in self.requantised), default=0.0)

    def summary(self) -> str:
        lines = []
        for lora in self.loras:
            line = (f"LoRA {lora.name} ({lora.format}) x{lora.strength:g}: {len(lora.matched)} modules")
            if lora.skipped:
                line += f", {len(lora.skipped)} skipped by block strength"
            if lora.unmatched:
                line += f", {len(lora.unmatched)} keys not applied (first: {lora.unmatched[0].key}: {lora.unmatched[0].reason})"
            lines.append(line)
        lines.append(f"{len(self.merged)} layers merged, {len(self.unmerged)} runtime adapters (mode {self.mode})")
        if self.requantised:
            lines.append(f"{len(self.requantised)} fp8 layers re-quantised, max relative error "
                         f"{self.max_requantisation_error:.3g}")
        if self.widened:
            lines.append(f"patch embed widened from {self.widened[0]} to {self.widened[1]} input channels (keyframe model)")
        lines.extend(self.notes)
        for lora in self.loras:
            lines.extend(f"{lora.name}: {note}" for note in lora.notes)
        return "\n".join(lines)
