"""Test helper (the product only reads GGUF): write a DiT state dict as a HunyuanVideo GGUF (arch `hyvid`),
with the `gguf` package.

Follows city96's conversion (SPEC 9.1): official key names, 2-D block Linear weights quantised,
everything else F32, tensors of more than 4 dims stored flattened with their shape in
`comfy.gguf.orig_shape.<name>`. Only the quant types `gguf.quants` can produce are offered
(Q8_0, Q5_1, Q5_0, Q4_1, Q4_0, BF16); K-quants need llama.cpp's quantizer.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np
import torch
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType as Q, GGUFWriter, quants

from hyvideo_core.errors import InvalidInputError
from hyvideo_core.weights.gguf import ARCH
from hyvideo_core.weights.quantised_layers import is_quantisable

WRITABLE = (Q.Q8_0, Q.Q5_1, Q.Q5_0, Q.Q4_1, Q.Q4_0, Q.BF16)


def write_gguf(state_dict: Mapping[str, torch.Tensor], path, qtype: Q = Q.Q8_0, arch: str = ARCH) -> Path:
    if qtype not in WRITABLE:
        raise InvalidInputError(
            f"write_gguf: cannot quantise to {qtype.name} here; choose one of {[q.name for q in WRITABLE]}.")
    block = GGML_QUANT_SIZES[qtype][0]
    writer = GGUFWriter(str(path), arch=arch)
    for key, tensor in state_dict.items():
        values = tensor.detach().float().cpu().numpy()
        if is_quantisable(key, tuple(tensor.shape)) and values.shape[-1] % block == 0:
            writer.add_tensor(key, quants.quantize(values, qtype), raw_dtype=qtype)
        elif values.ndim > 4:
            writer.add_tensor(key, np.ascontiguousarray(values.reshape(values.shape[0], -1)))
            writer.add_array(f"comfy.gguf.orig_shape.{key}", [int(s) for s in values.shape])
        else:
            writer.add_tensor(key, np.ascontiguousarray(values))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return Path(path)
