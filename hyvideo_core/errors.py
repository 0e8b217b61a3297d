"""One exception family for the whole engine.

Every message names the file or parameter, what was found and what to do, so that the
ComfyUI node layer can show it to a user as is.
"""
from __future__ import annotations


class HyVideoError(Exception):
    """Base of every error the engine raises on purpose."""


class CheckpointError(HyVideoError):
    """A weights file is unreadable, corrupt, or has missing / mis-shaped tensors."""


class UnknownFormatError(CheckpointError):
    """A file's keys match no layout we know (e.g. a Stable Diffusion file given as the DiT)."""


class MissingPackageError(HyVideoError):
    """An optional package (flash-attn, sageattention, ...) was asked for but is not usable."""


class InvalidInputError(HyVideoError, ValueError):
    """A parameter value (size, steps, strength, tile, ...) is out of range or inconsistent."""


class OutOfMemoryError(HyVideoError, MemoryError):
    """The device ran out of memory; `suggestion` carries what would fit (a plan or tile sizes)."""

    def __init__(self, message: str, suggestion: object = None):
        super().__init__(message)
        self.suggestion = suggestion


class NumericsError(HyVideoError):
    """A computation produced NaN/inf (e.g. fp16 overflow), which would decode to a black video."""


class CancelledError(HyVideoError):
    """The host asked to stop (e.g. ComfyUI's interrupt); raised between steps."""


def finite_number(parameter: str, value, hint: str = "") -> float:
    """`value` as a float if it is a real, finite number (not a bool), else an InvalidInputError
    naming the parameter and what was found; `hint` says what to give instead."""
    import math
    import numbers
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InvalidInputError(f"{parameter}: expected a number, got {type(value).__name__} {value!r}."
                                + (f" {hint}" if hint else ""))
    if not math.isfinite(value):
        raise InvalidInputError(f"{parameter}: {value!r} is not a finite number (NaN and infinity are refused)."
                                + (f" {hint}" if hint else ""))
    return float(value)
