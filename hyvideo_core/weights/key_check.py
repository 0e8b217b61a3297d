"""Compare a checkpoint's tensor names and shapes with what a model expects."""
from __future__ import annotations

from typing import Iterable, Mapping


def key_mismatches(expected: Mapping[str, tuple], found: Mapping[str, tuple], extra: Iterable[str] = (),
                   examples: int = 8) -> list[str]:
    """Phrases naming the missing, unexpected and mis-shaped tensors (empty when they match)."""
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected)) + list(extra)
    wrong = [f"{k}: file {list(found[k])}, model {list(expected[k])}"
             for k in expected if k in found and tuple(found[k]) != tuple(expected[k])]
    problems = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("with wrong shapes", wrong)):
        if items:
            problems.append(f"{len(items)} {label}: {_few(items, examples)}")
    return problems


def _few(items: list[str], n: int) -> str:
    return ", ".join(items[:n]) + (f", ... (+{len(items) - n})" if len(items) > n else "")
