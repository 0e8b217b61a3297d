"""Loading streams tensor by tensor: peak RAM ~ the loaded model, never model + file (Linux only).

A ~0.2 GB fp8 checkpoint of a DiT with hidden size 1024 is loaded in a fresh process; the peak RSS
growth during `load_transformer` is compared with the file size. Without handing the mapped pages
back after each tensor the ratio is ~2; with it, ~1 (benchmarks/weights_memory.py does the same
with a 13B-shaped file).
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from hyvideo_core.model.config import DiTConfig
from hyvideo_core.model.transformer import HunyuanVideoTransformer
from hyvideo_core.weights.quantised_layers import is_quantisable

CONFIG = dict(hidden_size=1024, heads=8, double_blocks=2, single_blocks=2, text_dim=256,
              pooled_text_dim=64, rope_dims=(16, 56, 56))

LOADER = r"""
import json, sys, torch
def status(field):
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1]) * 1024
import hyvideo_core
from hyvideo_core.weights.storage import storage_for
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # reset the peak-RSS high-water mark
base = status("VmRSS:")
model = hyvideo_core.load_transformer(sys.argv[1], config=json.loads(sys.argv[2]), storage=storage_for(sys.argv[3]))
print(json.dumps({"peak": status("VmHWM:") - base, "end": status("VmRSS:") - base,
                  "stored": sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])}))
"""


def _write_fp8_checkpoint(path: Path) -> int:
    cfg = DiTConfig(**CONFIG)
    with torch.device("meta"):
        shapes = {k: tuple(v.shape) for k, v in HunyuanVideoTransformer(cfg).state_dict().items()}
    tensors = {"scaled_fp8": torch.empty(0, dtype=torch.float8_e4m3fn)}
    for key, shape in shapes.items():
        if is_quantisable(key, shape):
            tensors[key] = torch.randint(0, 0x7E, shape, dtype=torch.uint8).view(torch.float8_e4m3fn)
            tensors[key.rsplit(".", 1)[0] + ".scale_weight"] = torch.tensor(2e-4)
        else:
            tensors[key] = torch.randn(shape, dtype=torch.bfloat16) * 0.02
    save_file(tensors, str(path))
    return path.stat().st_size


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_fp8_load_peak_rss_is_bounded_by_model_not_file(tmp_path):
    path = tmp_path / "medium_fp8_scaled.safetensors"
    size = _write_fp8_checkpoint(path)
    out = subprocess.run([sys.executable, "-c", LOADER, str(path), json.dumps(CONFIG), "fp8_scaled"],
                         capture_output=True, text=True, timeout=300, cwd=Path(__file__).parents[1])
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    ratio = result["peak"] / size
    print(f"file {size / 1e6:.0f} MB, stored {result['stored'] / 1e6:.0f} MB, peak RSS growth {ratio:.3f} x file")
    assert 0.9 < result["stored"] / size < 1.01   # the model really holds the file's bytes (fp8 kept)
    assert ratio < 1.15
