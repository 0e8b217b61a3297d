"""13B weight memory per storage format, and a real load of a 13B-shaped fp8 checkpoint.

Part 1 (instant): bytes of the 13B DiT's stored tensors per format, counted on the meta device
with the storage policies' rules, as a ratio to bf16 (targets: fp8 <= 0.52, Q4_K <= 0.31).

Part 2 (minutes, ~13.2 GB of disk and RAM): a synthetic checkpoint with the 13B's official keys
and shapes in Comfy-Org fp8_scaled layout (block Linear weights float8_e4m3fn + per-layer
scale_weight + `scaled_fp8` marker, the rest bf16) is written once into a temporary folder, its
page cache dropped, and loaded with the fp8 storage onto the CPU in a fresh process. Printed:
peak RSS growth during the load as a ratio to the file size (target <= 1.15: the model itself is
~1.0) and the load throughput. The file is deleted afterwards.

The file is written by hand (8-byte header length, JSON header, raw tensor bytes) rather than with
safetensors.torch.save_file, because save_file needs every tensor in memory at once (13 GB, plus
its own serialisation buffer): writing the header first and then each tensor as it is generated
keeps the generator's memory at one tensor.

    python benchmarks/weights_memory.py              # both parts
    python benchmarks/weights_memory.py --bytes-only # part 1
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from hyvideo_core.model.config import PRESETS  # noqa: E402
from hyvideo_core.runtime.weight_table import _official_shapes, table_for_format  # noqa: E402
from hyvideo_core.weights.quantised_layers import is_quantisable  # noqa: E402

CONFIG = PRESETS["hunyuan-video-13b"]
FORMATS = ("bf16", "fp8_e4m3fn", "fp8_scaled", "Q8_0", "Q6_K", "Q5_K", "Q4_K", "Q4_0")
TARGETS = {"fp8_scaled": 0.52, "Q4_K": 0.31}
_ST_DTYPES = {torch.float8_e4m3fn: "F8_E4M3", torch.bfloat16: "BF16", torch.float32: "F32"}


def part1() -> None:
    bf16 = table_for_format(CONFIG, "bf16", torch.bfloat16).total()
    print(f"13B DiT weights (meta device, {len(_official_shapes(CONFIG))} tensors), bytes per storage format:")
    print(f"{'format':<12} {'GB':>7} {'vs bf16':>8}  target")
    for fmt in FORMATS:
        total = table_for_format(CONFIG, fmt, torch.bfloat16).total()
        ratio = total / bf16
        target = TARGETS.get(fmt)
        verdict = "" if target is None else f"<= {target}: {'ok' if ratio <= target else 'MISSED'}"
        print(f"{fmt:<12} {total / 1e9:7.2f} {ratio:8.3f}  {verdict}")


# -- part 2 -------------------------------------------------------------------------------------

def synthetic_entries():
    """(name, dtype, shape, make) for every tensor of a 13B fp8_scaled checkpoint, in file order."""
    yield "scaled_fp8", torch.float8_e4m3fn, (0,), lambda: torch.empty(0, dtype=torch.float8_e4m3fn)
    for key, shape in _official_shapes(CONFIG):
        if is_quantisable(key, shape):
            # valid positive fp8 codes (0x00-0x7E; 0x7F would be NaN), generated straight as bytes
            yield key, torch.float8_e4m3fn, shape, (
                lambda s=shape: torch.randint(0, 0x7F, s, dtype=torch.uint8).view(torch.float8_e4m3fn))
            yield key.rsplit(".", 1)[0] + ".scale_weight", torch.float32, (), lambda: torch.tensor(1e-4)
        else:
            yield key, torch.bfloat16, shape, lambda s=shape: (torch.randn(s) * 0.02).to(torch.bfloat16)


def write_streaming_safetensors(path: Path) -> int:
    entries = list(synthetic_entries())
    header, offset = {"__metadata__": {"format": "pt", "note": "synthetic 13B fp8_scaled (benchmark)"}}, 0
    for name, dtype, shape, _ in entries:
        nbytes = dtype.itemsize
        for s in shape:
            nbytes *= s
        header[name] = {"dtype": _ST_DTYPES[dtype], "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)  # the data section starts 8-byte aligned
    with open(path, "wb") as fh:
        fh.write(len(blob).to_bytes(8, "little"))
        fh.write(blob)
        for name, dtype, shape, make in entries:
            tensor = make()
            assert tensor.dtype == dtype and tuple(tensor.shape) == tuple(shape), name
            fh.write(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
        fh.flush()
        os.fsync(fh.fileno())
    drop_page_cache(path)
    return path.stat().st_size


def drop_page_cache(path: Path) -> None:
    """Evict this file's pages from the page cache (only this file), so the load reads the disk."""
    if hasattr(os, "posix_fadvise"):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


LOADER = r"""
import json, sys, time
def status(field):
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1]) * 1024
import torch, hyvideo_core
from hyvideo_core.weights.storage import storage_for
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")
base = status("VmRSS:")
start = time.perf_counter()
model = hyvideo_core.load_transformer(sys.argv[1], storage=storage_for("fp8_scaled"), device="cpu")
seconds = time.perf_counter() - start
layer = model.single_blocks[39].linear1
stored = sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])
print(json.dumps({"seconds": seconds, "peak": status("VmHWM:") - base, "end": status("VmRSS:") - base,
                  "stored": stored, "report": model.load_report.summary(),
                  "fp8": str(layer.weight.dtype), "scale": layer.scale_weight.item()}))
"""


def part2(folder: str | None) -> None:
    import psutil
    workdir = Path(tempfile.mkdtemp(prefix="hyvideo-13b-fp8-", dir=folder))
    path = workdir / "synthetic_13b_fp8_scaled.safetensors"
    try:
        need = table_for_format(CONFIG, "fp8_scaled", torch.bfloat16).total()
        free_disk = shutil.disk_usage(workdir).free
        available = psutil.virtual_memory().available
        if free_disk < need * 1.05 or available < need * 1.2:
            print(f"skipped: needs {need / 1e9:.1f} GB of disk and ~{need * 1.2 / 1e9:.1f} GB of free RAM "
                  f"(have {free_disk / 1e9:.1f} GB disk, {available / 1e9:.1f} GB RAM)")
            return
        start = time.perf_counter()
        size = write_streaming_safetensors(path)
        print(f"\nwrote {path} ({size / 1e9:.2f} GB) in {time.perf_counter() - start:.0f} s; page cache dropped")
        out = subprocess.run([sys.executable, "-c", LOADER, str(path)], capture_output=True, text=True, cwd=ROOT)
        if out.returncode != 0:
            print("load failed:\n" + out.stderr[-3000:])
            return
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"load: {r['report']}")
        print(f"  stored in RAM     {r['stored'] / 1e9:.2f} GB ({r['stored'] / size:.3f} x file; "
              f"e.g. single_blocks.39.linear1 {r['fp8']}, scale {r['scale']:.1e})")
        print(f"  peak RSS growth   {r['peak'] / 1e9:.2f} GB = {r['peak'] / size:.3f} x file size (target <= 1.15)")
        print(f"  RSS after load    {r['end'] / 1e9:.2f} GB = {r['end'] / size:.3f} x file size")
        print(f"  load time         {r['seconds']:.1f} s = {size / r['seconds'] / 1e9:.2f} GB/s "
              "(cold page cache; shared 2-core machine)")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        print(f"deleted {workdir}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bytes-only", action="store_true", help="only the meta-device byte counts")
    parser.add_argument("--dir", default=None, help="where to write the temporary 13 GB file (default: system temp)")
    args = parser.parse_args()
    part1()
    if not args.bytes_only:
        part2(args.dir)


if __name__ == "__main__":
    main()
