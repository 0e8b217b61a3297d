"""Optional torch.compile of each DiT block (not exercised in CI: it needs a working compiler
toolchain and takes minutes on first use).

Blocks are compiled one by one rather than the whole model: every block has the same structure,
so the compiled graph is reused, and block swapping can still move weights between calls (the
parameters are graph inputs, not constants).
"""
from __future__ import annotations

import logging

import torch.nn as nn

log = logging.getLogger(__name__)


def compile_blocks(model: nn.Module, **options) -> int:
    """`module.compile(**options)` on every double and single block; returns how many."""
    blocks = list(model.double_blocks) + list(model.single_blocks)
    for block in blocks:
        block.compile(**options)
    log.info("torch.compile enabled for %d blocks (%s).", len(blocks), options or "default options")
    return len(blocks)
