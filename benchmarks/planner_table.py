"""Print the README's "what fits" table, computed by the memory planner (no GPU needed).

For each GPU size (24/32/48/80 GB, taken as GiB: that is what the cards have), resolution
(544x960 and 720x1280, 129 frames) and weight format (bf16, fp8, GGUF Q8_0, Q4_K) it asks
`auto_swap` for the least block swapping that fits and prints the swap counts and the predicted
peak. Then it prints the full breakdown of the 13B at 720x1280x129, fp8, every block swapped.

    python benchmarks/planner_table.py            # Markdown on stdout
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hyvideo_core.errors import OutOfMemoryError  # noqa: E402
from hyvideo_core.runtime.planner import GiB, PlanInputs, auto_swap, plan  # noqa: E402

GPUS = (24, 32, 48, 80)
SIZES = ((960, 544, "544p"), (1280, 720, "720p"))
FORMATS = (("bf16", "bf16"), ("fp8_scaled", "fp8"), ("Q8_0", "GGUF Q8_0"), ("Q4_K", "GGUF Q4_K"))


def cell(inputs: PlanInputs, budget_gib: int) -> str:
    try:
        chosen = auto_swap(inputs, budget=budget_gib * GiB)
    except OutOfMemoryError as error:
        return f"does not fit (needs {error.suggestion.peak / GiB:.1f})"
    d, s = chosen.swap
    swap = "no swap" if (d, s) == (0, 0) else f"swap {d}+{s}" + (" +txt_in" if chosen.inputs.offload_txt_in else "")
    return f"{swap} ({chosen.peak / GiB:.1f})"


def table() -> str:
    head = "| GPU | video | " + " | ".join(label for _, label in FORMATS) + " |"
    rule = "|---|---|" + "---|" * len(FORMATS)
    rows = [head, rule]
    for gpu in GPUS:
        for width, height, label in SIZES:
            cells = [cell(PlanInputs(weight_format=fmt, width=width, height=height, frames=129), gpu)
                     for fmt, _ in FORMATS]
            rows.append(f"| {gpu} GB | {label} ({width}x{height}x129) | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def main() -> None:
    print("### What fits (predicted by `hyvideo_core.runtime.planner`)\n")
    print("Least block swapping (double+single blocks kept in RAM) that fits, and the predicted peak "
          "in GiB; batch 1, embedded guidance (no true CFG), attention sdpa (fused kernels), VAE decode "
          "in reference tiles (256 px, 64 frames), 0.5 GiB reserve.\n")
    print(table())
    p = plan(PlanInputs(weight_format="fp8_scaled", width=1280, height=720, frames=129,
                        swap_double=20, swap_single=40))
    print("\nBreakdown, 13B at 720x1280x129, fp8, all 60 blocks swapped:\n")
    print("```\n" + p.describe() + "\n```")
    print(f"\nfits 24 GB: {p.peak <= 24 * GiB} (peak {p.peak / GiB:.2f} GiB)")


if __name__ == "__main__":
    main()
