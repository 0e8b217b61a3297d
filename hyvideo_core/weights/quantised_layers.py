"""Which DiT tensors may be stored quantised (fp8, GGUF quants) and which stay in high precision.

Quantised: the 2-D `weight` of every Linear inside the 20 double and 40 single blocks (qkv,
proj, mlp fc1/fc2, img/txt modulation, linear1/linear2, modulation). They hold 12.46B of the
12.82B parameters (SPEC 1.1), so quantising only them gives almost all of the saving.

Kept in the compute dtype (never quantised), because they are small and quality-critical:
- every bias and every norm scale (RMSNorm q/k norms, the refiner's LayerNorms);
- the embedders: `img_in` (patch Conv3d), `txt_in` (input projection, the two token refiner
  blocks, its timestep/context embedders), `time_in`, `vector_in`, `guidance_in`;
- `final_layer` (its adaLN modulation and the output projection).

This is the same split as the official `_fp8.pt` release (Linear layers of double/single blocks)
and as city96's GGUF conversion (which skips txt_in/img_in/time_in/vector_in/guidance_in/final_layer
and only quantises 2-D tensors).
"""
from __future__ import annotations

import re

_BLOCK_LINEAR = re.compile(r"^(double_blocks|single_blocks)\.\d+\.(.+)\.weight$")


def is_quantisable(key: str, shape: tuple[int, ...]) -> bool:
    """True for an official key that may be stored in fp8 / a GGUF quant (2-D block Linear weight)."""
    return len(shape) == 2 and _BLOCK_LINEAR.match(key) is not None
