"""One DiT forward: ours vs diffusers' HunyuanVideoTransformer3DModel on the same weights.

Medium config (hidden 768, 6 heads, 4 double + 8 single blocks), ~2k image tokens, 128 text
tokens. Prints the median time of several runs, the ratio ours/diffusers (target <= 0.9) and
our achieved FLOP/s as a fraction of this CPU's measured matmul FLOP/s. Timings on a shared
machine are noisy; the ratios are measured in one run, interleaved.

    python benchmarks/dit_step.py [--repeats 5] [--dtypes fp32,bf16]
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from hyvideo_core.model.config import PRESETS
from hyvideo_core.model.ops import linear
from hyvideo_core.model.transformer import HunyuanVideoTransformer
from hyvideo_core.weights.diffusers_names import to_diffusers

LATENT = (1, 16, 5, 40, 40)  # 5 x 20 x 20 = 2000 image tokens
TEXT_TOKENS = 128


def build_models(dtype):
    import diffusers
    cfg = PRESETS["medium"]
    torch.manual_seed(0)
    ours = HunyuanVideoTransformer(cfg)
    with torch.no_grad():
        for p in ours.parameters():  # zero-initialised modulation would make blocks trivial
            p.copy_(torch.randn_like(p) * (1.0 / max(1, p.shape[-1]) ** 0.5 if p.ndim > 1 else 0.1))
    ref = diffusers.HunyuanVideoTransformer3DModel(
        num_attention_heads=cfg.heads, attention_head_dim=cfg.head_dim, num_layers=cfg.double_blocks,
        num_single_layers=cfg.single_blocks, text_embed_dim=cfg.text_dim, pooled_projection_dim=cfg.pooled_text_dim,
        rope_axes_dim=cfg.rope_dims)
    ref.load_state_dict(to_diffusers(ours.state_dict(), cfg.hidden_size), strict=True)
    ours.to(dtype).eval()
    ours.compute_dtype = dtype
    ref.to(dtype).eval()
    return cfg, ours, ref


def inputs(cfg, dtype, valid_tokens):
    g = torch.Generator().manual_seed(1)
    mask = torch.zeros(1, TEXT_TOKENS, dtype=torch.int64)
    mask[:, :valid_tokens] = 1
    return dict(x=torch.randn(LATENT, generator=g).to(dtype), t=torch.tensor([900.0]),
                text=torch.randn(1, TEXT_TOKENS, cfg.text_dim, generator=g).to(dtype), mask=mask,
                pooled=torch.randn(1, cfg.pooled_text_dim, generator=g).to(dtype), guidance=torch.tensor([6000.0]))


def run_ours(model, i):
    return model(i["x"], i["t"], i["text"], i["mask"], i["pooled"], i["guidance"])


def run_ref(model, i):
    return model(hidden_states=i["x"], timestep=i["t"], encoder_hidden_states=i["text"], encoder_attention_mask=i["mask"],
                 pooled_projections=i["pooled"], guidance=i["guidance"], return_dict=False)[0]


def forward_flops(cfg, tokens):
    blocks = cfg.double_blocks + cfg.single_blocks
    d = cfg.hidden_size
    return blocks * (24 * d * d * tokens + 4 * tokens * tokens * d)


def matmul_flops_per_s(dtype, repeats=5):
    a = torch.randn(2048, 768, dtype=dtype)
    b = torch.randn(3072, 768, dtype=dtype)
    linear(a, b, None)  # the GEMM our layers run for this dtype on this CPU
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        linear(a, b, None)
        times.append(time.perf_counter() - t0)
    return 2 * 2048 * 768 * 3072 / statistics.median(times)


def bench(dtype, repeats, valid_tokens):
    cfg, ours, ref = build_models(dtype)
    i = inputs(cfg, dtype, valid_tokens)
    times = {"ours": [], "diffusers": []}
    cpu = {"ours": [], "diffusers": []}
    with torch.inference_mode():
        diff = (run_ours(ours, i).float() - run_ref(ref, i).float()).abs().max().item()
        for _ in range(repeats):  # interleaved so load changes hit both alike
            for name, fn, model in (("ours", run_ours, ours), ("diffusers", run_ref, ref)):
                t0, c0 = time.perf_counter(), time.process_time()
                fn(model, i)
                times[name].append(time.perf_counter() - t0)
                cpu[name].append(time.process_time() - c0)
    med = {k: statistics.median(v) for k, v in times.items()}
    cpu_med = {k: statistics.median(v) for k, v in cpu.items()}
    tokens = LATENT[2] * LATENT[3] * LATENT[4] // 4 + valid_tokens
    achieved = forward_flops(cfg, tokens) / med["ours"]
    peak = matmul_flops_per_s(dtype)
    print(f"{str(dtype):15s} text {valid_tokens:3d}/{TEXT_TOKENS} valid | ours {med['ours']*1e3:8.1f} ms | "
          f"diffusers {med['diffusers']*1e3:8.1f} ms | ours/diffusers wall {med['ours']/med['diffusers']:.2f}x, "
          f"cpu-time {cpu_med['ours']/cpu_med['diffusers']:.2f}x | "
          f"ours {achieved/1e9:6.1f} GFLOP/s = {achieved/peak:.2f} of matmul peak ({peak/1e9:.1f} GFLOP/s) | "
          f"max|diff| {diff:.2e}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--dtypes", default="fp32,bf16")
    args = parser.parse_args()
    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16}
    from hyvideo_core.model.ops import CPU_HALF_MATMUL_EMULATED
    print(f"medium DiT {PRESETS['medium'].hidden_size}d, latent {LATENT}, threads {torch.get_num_threads()}; "
          f"CPU bf16 GEMMs {'emulated: ours runs them as fp32 GEMMs' if CPU_HALF_MATMUL_EMULATED else 'native'}")
    for name in args.dtypes.split(","):
        if name == "fp32":
            bench(dtypes[name], args.repeats, valid_tokens=TEXT_TOKENS)
            bench(dtypes[name], args.repeats, valid_tokens=77)
        else:  # bf16 matmul is ~8x slower on CPUs without native bf16: fewer, shorter runs
            bench(dtypes[name], max(2, args.repeats // 2), valid_tokens=TEXT_TOKENS)


if __name__ == "__main__":
    main()
