"""Per-block LoRA strength and block selection.

A multiplier per double-stream block i and single-stream block j (on top of the LoRA's own
strength); modules outside the blocks (embedders, token refiner, final layer) take `other`.
Text form, for a node widget: items separated by commas or spaces, e.g.
`double:0-9=1 double:10-19=0.5 single:*=0 other=1` (`d`/`s` also accepted; `*` sets every block of
that kind not listed; `default=` every block not listed at all). Block selection is strength 0 for
the blocks left out: `BlockStrengths.only(double=[...], single=[...])`.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Iterable, Mapping

from ..errors import InvalidInputError, finite_number

_BLOCK = re.compile(r"(double_blocks|single_blocks)\.(\d+)\.")
_ITEM = re.compile(r"(double|single|d|s):(\*|\d+(?:-\d+)?)=(.+)")


@dataclass(frozen=True)
class BlockStrengths:
    double: Mapping[int, float] = field(default_factory=dict)
    single: Mapping[int, float] = field(default_factory=dict)
    default: float = 1.0               # blocks not listed
    other: float = 1.0                 # modules outside double/single blocks
    double_rest: float | None = None   # 'double:*': double blocks not listed (overrides default)
    single_rest: float | None = None

    def __post_init__(self):
        hint = "Give finite multipliers (1 = the LoRA's strength, 0 = off)."
        for kind in ("double", "single"):
            table = getattr(self, kind)
            if not isinstance(table, Mapping):
                raise InvalidInputError(f"block strengths: {kind} must map block numbers to multipliers, got "
                                        f"{type(table).__name__}.")
            for index, value in table.items():
                if isinstance(index, bool) or not isinstance(index, int):
                    raise InvalidInputError(f"block strengths: {kind} block {index!r} is not a block number.")
                finite_number(f"block strengths: {kind} block {index}", value, hint)
        for name in ("default", "other", "double_rest", "single_rest"):
            value = getattr(self, name)
            if value is not None or name in ("default", "other"):
                finite_number(f"block strengths: {name}", value, hint)

    def multiplier(self, module: str) -> float:
        m = _BLOCK.match(module)
        if m is None:
            return self.other
        if m.group(1) == "double_blocks":
            table, rest = self.double, self.double_rest
        else:
            table, rest = self.single, self.single_rest
        return float(table.get(int(m.group(2)), self.default if rest is None else rest))

    def check(self, double_blocks: int, single_blocks: int) -> None:
        for name, table, count in (("double", self.double, double_blocks), ("single", self.single, single_blocks)):
            bad = sorted(i for i in table if not 0 <= i < count)
            if bad:
                raise InvalidInputError(
                    f"block strengths: {name} block(s) {bad} do not exist; this model has {count} {name} "
                    f"blocks (0..{count - 1}).")

    @classmethod
    def only(cls, double: Iterable[int] = (), single: Iterable[int] = (), other: bool = True) -> "BlockStrengths":
        """Apply the LoRA only to the listed blocks (and to non-block modules if `other`)."""
        return cls({i: 1.0 for i in double}, {j: 1.0 for j in single}, default=0.0, other=1.0 if other else 0.0)

    @classmethod
    def parse(cls, text: str) -> "BlockStrengths":
        tables: dict[str, dict[int, float]] = {"double": {}, "single": {}}
        rest: dict[str, float | None] = {"double": None, "single": None}
        scalars = {"default": 1.0, "other": 1.0}
        for item in filter(None, re.split(r"[,\s]+", text.strip())):
            try:
                m = _ITEM.fullmatch(item)
                if m:
                    kind = "double" if m.group(1) in ("double", "d") else "single"
                    value = _finite_item(float(m.group(3)), item, text)
                    if m.group(2) == "*":
                        rest[kind] = value
                    else:
                        lo, _, hi = m.group(2).partition("-")
                        if int(hi or lo) < int(lo):
                            raise ValueError(item)
                        tables[kind].update({i: value for i in range(int(lo), int(hi or lo) + 1)})
                elif item.partition("=")[0] in scalars:
                    key, _, value = item.partition("=")
                    scalars[key] = _finite_item(float(value), item, text)
                else:
                    raise ValueError(item)
            except InvalidInputError:
                raise
            except ValueError:
                raise InvalidInputError(
                    f"block strengths: cannot read {item!r} in {text!r}; write items like 'double:0-9=0.5', "
                    "'single:*=0', 'default=1' or 'other=1'.") from None
        return cls(tables["double"], tables["single"], scalars["default"], scalars["other"],
                   rest["double"], rest["single"])


def _finite_item(value: float, item: str, text: str) -> float:
    if not math.isfinite(value):
        raise InvalidInputError(f"block strengths: {item!r} in {text!r} is not a finite multiplier (NaN and "
                                "infinity are refused); write e.g. 'double:0-9=0.5'.")
    return value
