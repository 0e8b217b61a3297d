"""Parallel scaling: (a) an analytic model of one 720p x 129 video on 1-8 H100s beside xDiT's
published times, and (b) a CPU measurement of the sequence-parallel policy at equal threads.

    python benchmarks/parallel_scaling.py [--repeats 2] [--ring] [--blocks D,S] [--skip-cpu]

(a) The model. One 50-step 1280x720x129 video: N = 118,800 image tokens + 256 text, D = 3072,
    60 blocks (SPEC 10.1: 24 D^2 L per block for the linear layers + 4 L^2 D for attention =
    12.07 PFLOP per forward, no true CFG: the model is guidance-distilled).
    - DiT compute runs at one sustained rate per GPU, R_dit, the rate the official one-GPU time
      implies (xDiT/HV: 1904 s) once the VAE decode and the text encoders are taken out of it,
      and stays at that rate for every N (each GPU keeps >= 14.8k-token shards: large GEMMs and
      flash tiles). So our one-GPU time is 1904 s by construction.
    - VAE decode: the tiled decode's FLOPs are counted (FlopCounterMode on the meta device over
      the 84 tiles of the reference's 256 px / 64-frame tiles) and run at 12% of the 989 TFLOP/s
      bf16 peak (an assumption: the causal 3-D decoder is memory bound: GroupNorm, SiLU and
      upsampling over wide activations). xDiT decodes the whole video on every rank; ours
      spreads the tiles round robin (parallel/vae_decode.py): a round of N tiles takes as long
      as its largest tile, plus gathering that round on rank 0 over NVLink.
    - Text encoders: 1 s, not parallel (assumption; 4 TFLOP of Llama-8B work at 256 tokens).
    - Communication, per block and rank, as our policy sends it (parallel/comm.py,
      attention.py): Ulysses U: one all-to-all of the stacked image q/k/v (3 n D bytes x (U-1)/U)
      and one back of the output (n D (U-1)/U), an all-gather of the text output's heads; ring
      R: R-1 K/V chunks of 2 n D each to the next rank; per forward an all-gather of the final
      layer's tokens. bf16 (2 bytes). NVLink 4 is 450 GB/s per direction per GPU; NCCL
      all-to-all and ring sends are taken at 300 GB/s effective, plus 30 us per collective.
    - Overlap: our Ulysses all-to-alls are synchronous (exposed, no overlap assumed); the ring's
      next chunk travels while the current chunk is attended (RingExchange), so only the part
      of a transfer longer than the chunk's attention is exposed.
    Side by side: the same model for an xDiT-like run (VAE decode not parallel), and the
    residual between that and xDiT's measured times: the part of xDiT's time this model does
    not explain. Whether we would pay it too, the model cannot tell, so both are printed.

    Why ours can be faster than xDiT's 5.64x at 8 GPUs, as far as this model supports it:
    - the parallel VAE decode takes the ~36 s decode (every xDiT rank runs all of it) down to
      ~5 s: the largest single gain, about +0.9x of speedup at 8 GPUs;
    - the all-to-all bytes are those of xDiT (q, k, v and the output; the text is not sent), but
      in one stacked collective instead of three: fewer latencies, same bandwidth;
    - overlapping the all-to-all with the QKV projections (send k while v is projected) could
      hide the exposed all-to-all time, but over NVLink that is only ~3.5 s of ~240 s at 8 GPUs
      (~1.5%): the model does not support claiming more from it. It would matter on PCIe (the
      sensitivity line at 50 GB/s shows how much).
    If the ~64 s by which xDiT's measured 8-GPU time exceeds this model is a cost of the
    platform or of sequence parallelism itself (not of xDiT), we pay it too and the model
    predicts about 6.2x, below the issue's 6.5x target; only if that residual is xDiT's own does
    the prediction (about 7.8x) meet it. The script prints both; it claims no more.

(b) The CPU measurement (2 processes, gloo, 127.0.0.1): the medium DiT (hidden 768, 6 heads,
    4 double + 8 single blocks) at 3,600 image tokens + 128 text, float32; the step (one
    forward) of 2 ranks x 1 thread under Ulysses 2 (and ring 2 with --ring) against 1 rank x 2
    threads, interleaved run by run (the machine is shared), each after a warm-up forward. The
    bytes each rank sends per step are counted by wrapping the torch.distributed calls the
    policy makes (the payload leaving the rank: all-to-all: the slices for the other ranks;
    all-gather: the input once per other rank; all-reduce: 2 (W-1)/W of the tensor, as a
    ring all-reduce sends; point-to-point sends: the tensor), beside the policy's own Traffic
    counter as a cross-check.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import socket
import statistics
import sys
import tempfile
import time
from datetime import timedelta

import torch

# -- (a) the analytic model ------------------------------------------------------------------
XDIT_H100_S = {1: 1904.08, 2: 925.04, 4: 514.08, 8: 337.58}   # SPEC_NEXT 1.6, 1280x720x129, 50 steps
STEPS = 50
D, HEADS, BLOCKS, TEXT = 3072, 24, 60, 256
IMAGE_TOKENS = 33 * 45 * 80                  # latent 33 x 90 x 160, patch 1 x 2 x 2
OUT_CHANNELS = 16 * 4                       # final layer: 16 channels x patch 1 x 2 x 2 per token
BYTES = 2                                   # bf16
PEAK_FLOPS = 989e12                         # H100 SXM dense bf16
NVLINK_GBS = 450                            # NVLink 4 per direction per GPU
COMM_GBS = 300                              # NCCL all-to-all / ring send, effective
COMM_LATENCY_S = 30e-6                      # per collective
VAE_EFFICIENCY = 0.12                       # of PEAK_FLOPS, the causal 3-D decoder (memory bound)
TEXT_S = 1.0                                # the text encoders, once


def dit_forward_flops(image: int = IMAGE_TOKENS, text: int = TEXT) -> float:
    L = image + text
    return 24 * D * D * L * BLOCKS + 240 * D * L * L      # SPEC 10.1


def vae_tiles() -> list[float]:
    """FLOPs of each tile of the 720p x 129 tiled decode (reference tiles), in decode order."""
    from torch.utils.flop_counter import FlopCounterMode
    from hyvideo_core.vae import HunyuanVideoVAE, TileSpec
    from hyvideo_core.vae.memory import DEFAULT_CONFIG
    from hyvideo_core.vae.tiling import decode_tile_inputs
    with torch.device("meta"):
        vae = HunyuanVideoVAE(DEFAULT_CONFIG, with_encoder=False).to(torch.bfloat16)
    latent = torch.empty((1, 16, 33, 90, 160), device="meta", dtype=torch.bfloat16)
    by_shape: dict[tuple, float] = {}
    flops = []
    for tile in decode_tile_inputs(latent, TileSpec(), DEFAULT_CONFIG):
        shape = tuple(tile.shape)
        if shape not in by_shape:
            with FlopCounterMode(display=False) as counter:
                vae.decoder(vae.post_quant_conv(torch.empty(shape, device="meta", dtype=torch.bfloat16)))
            by_shape[shape] = counter.get_total_flops()
        flops.append(by_shape[shape])
    return flops


def decoded_tile_bytes(flops: float, per_tile_flops: list[float]) -> float:
    """Bytes of a decoded tile (3 x frames x 8h x 8w bf16), in proportion to its FLOPs (the
    decoder's FLOPs are linear in the output volume): a full 256 px x 65-frame tile = 25.6 MB."""
    return 3 * 65 * 256 * 256 * BYTES * flops / max(per_tile_flops)


def comm_per_step(u: int, r: int) -> tuple[float, float, int]:
    """(all-to-all + all-gather bytes, ring bytes, collectives) one rank sends per forward."""
    n = math.ceil(IMAGE_TOKENS / (u * r))
    a2a = gather = ring = 0.0
    collectives = 0
    if u > 1:
        a2a = (3 + 1) * n * D * BYTES * (u - 1) / u               # stacked q/k/v in, output back
        gather = TEXT * (D // u) * BYTES * (u - 1)                # text output heads
        collectives += 3
    if r > 1:
        ring = (r - 1) * 2 * n * D * BYTES                        # K/V chunk = u*n tokens x D/u
        collectives += r - 1
    final = n * OUT_CHANNELS * BYTES * (u * r - 1)                # all-gather of the final tokens
    return BLOCKS * (a2a + gather) + final, BLOCKS * ring, BLOCKS * collectives + 1


def ring_exposed_per_step(u: int, r: int, dit_rate: float, bandwidth: float) -> float:
    """Seconds of ring transfer not hidden behind the chunk's attention, per forward."""
    if r == 1:
        return 0.0
    n = math.ceil(IMAGE_TOKENS / (u * r))
    chunk_bytes = 2 * n * D * BYTES
    chunk_attention_s = 4 * (u * n + TEXT) * (u * n) * (D / u) / dit_rate
    return BLOCKS * (r - 1) * max(0.0, chunk_bytes / bandwidth - chunk_attention_s)


def model_times(n_gpus: int, u: int, r: int, dit_rate: float, vae: list[float], vae_rate: float,
                parallel_vae: bool, bandwidth: float = COMM_GBS * 1e9) -> dict[str, float]:
    dit = STEPS * dit_forward_flops() / n_gpus / dit_rate
    a2a_bytes, ring_bytes, collectives = comm_per_step(u, r)
    comm = STEPS * (a2a_bytes / bandwidth + collectives * COMM_LATENCY_S
                    + ring_exposed_per_step(u, r, dit_rate, bandwidth))
    if parallel_vae and n_gpus > 1:
        rounds = [vae[i:i + n_gpus] for i in range(0, len(vae), n_gpus)]
        decode = sum(max(rnd) / vae_rate + sum(decoded_tile_bytes(f, vae) for f in rnd[1:]) / bandwidth
                     for rnd in rounds)
    else:
        decode = sum(vae) / vae_rate
    total = dit + comm + decode + TEXT_S
    return {"dit": dit, "comm": comm, "vae": decode, "total": total,
            "sent_gb": (a2a_bytes + ring_bytes) / 1e9}


def analytic() -> None:
    vae = vae_tiles()
    vae_rate = VAE_EFFICIENCY * PEAK_FLOPS
    vae_s = sum(vae) / vae_rate
    dit_rate = STEPS * dit_forward_flops() / (XDIT_H100_S[1] - vae_s - TEXT_S)
    print("(a) analytic model: one 50-step 1280x720x129 video on N H100s (bf16)")
    print(f"    DiT {dit_forward_flops() / 1e15:.2f} PFLOP/forward x {STEPS} steps at {dit_rate / 1e12:.0f} TFLOP/s "
          f"per GPU ({dit_rate / PEAK_FLOPS:.0%} of {PEAK_FLOPS / 1e12:.0f}: the official 1-GPU time minus VAE, text)")
    print(f"    VAE decode {sum(vae) / 1e15:.2f} PFLOP in {len(vae)} tiles at {VAE_EFFICIENCY:.0%} of peak = "
          f"{vae_s:.1f} s "
          f"on one GPU; text encoders {TEXT_S:.0f} s")
    print(f"    NVLink 4: {NVLINK_GBS} GB/s per direction; all-to-all and ring sends at {COMM_GBS} GB/s effective, "
          f"{COMM_LATENCY_S * 1e6:.0f} us per collective; Ulysses all-to-all exposed, ring overlapped with attention")
    header = (f"    {'N':>2} {'layout':<10} {'DiT s':>7} {'comm s':>7} {'VAE s':>6} {'ours s':>7} {'speedup':>8} "
              f"{'GB/step':>8} | {'xDiT-like':>9} {'xDiT pub.':>9} {'xDiT x':>7} {'resid. s':>8} {'ours+resid':>10}")
    print(header)
    base = model_times(1, 1, 1, dit_rate, vae, vae_rate, True)["total"]
    rows = [(1, 1, 1), (2, 2, 1), (4, 4, 1), (8, 8, 1), (8, 4, 2), (8, 2, 4), (8, 1, 8)]
    predicted = {}
    for n, u, r in rows:
        ours = model_times(n, u, r, dit_rate, vae, vae_rate, True)
        like = model_times(n, u, r, dit_rate, vae, vae_rate, False)["total"]
        published = XDIT_H100_S.get(n) if r == 1 else None
        residual = published - like if published else None
        line = (f"    {n:>2} {f'U{u} x R{r}':<10} {ours['dit']:7.1f} {ours['comm']:7.1f} {ours['vae']:6.1f} "
                f"{ours['total']:7.1f} {base / ours['total']:7.2f}x {ours['sent_gb']:8.2f} | {like:9.1f} ")
        if published:
            line += (f"{published:9.1f} {XDIT_H100_S[1] / published:6.2f}x {residual:8.1f} "
                     f"{ours['total'] + residual:7.1f} ({base / (ours['total'] + residual):.2f}x)")
            predicted[n] = (base / ours["total"], base / (ours["total"] + residual), XDIT_H100_S[1] / published,
                            base / like)
        print(line)
    pcie = model_times(8, 8, 1, dit_rate, vae, vae_rate, True, bandwidth=50e9)
    print(f"    sensitivity: U8 at 50 GB/s (PCIe-class) all-to-all: comm {pcie['comm']:.1f} s, total "
          f"{pcie['total']:.1f} s ({base / pcie['total']:.2f}x): where overlapping it with the QKV projections pays")
    ours8, with_residual8, xdit8, like8 = predicted[8]
    print(f"    8-GPU speedup: predicted {ours8:.2f}x (without xDiT's unexplained residual) / {with_residual8:.2f}x "
          f"(paying it too); xDiT measured {xdit8:.2f}x, this model for xDiT {like8:.2f}x; issue target 6.5x: "
          + ("met" if with_residual8 >= 6.5 else
             "met only if the residual is xDiT's own" if ours8 >= 6.5 else "NOT met"))


# -- (b) the CPU measurement -------------------------------------------------------------------
LATENT = (1, 16, 9, 40, 40)       # 9 x 20 x 20 = 3600 image tokens
TEXT_TOKENS, VALID_TEXT = 128, 100
EXPECTED_API = "hyvideo_core.parallel: ParallelPolicy(ParallelConfig(ulysses_degree, ring_degree)).install(model)"


def _policy_api():
    """The sequence-parallel policy (ParallelPolicy, ParallelConfig), or None when not there yet."""
    try:
        from hyvideo_core.parallel import ParallelConfig, ParallelPolicy
    except ImportError:
        return None
    if not hasattr(ParallelPolicy, "install"):
        return None
    return ParallelPolicy, ParallelConfig


class SentBytes:
    """Wraps the torch.distributed calls and adds up what this rank sends (see the docstring)."""

    # The calls that move data; composites (batch_isend_irecv, all_gather_object, ...) reach these.
    CALLS = ("all_to_all_single", "all_to_all", "all_gather_into_tensor", "all_gather_single", "all_gather",
             "all_reduce", "isend", "send", "broadcast", "reduce_scatter_tensor")

    def __init__(self):
        import torch.distributed as dist
        import torch.distributed.distributed_c10d as c10d
        self.dist, self.sent, self.calls, self.counting = dist, {}, {}, False
        for name in self.CALLS:
            if hasattr(c10d, name):
                # both namespaces: P2POp checks its op against c10d's own isend, and
                # batch_isend_irecv calls each op's function, so point-to-point sends count here
                wrapped = self._wrap(name, getattr(c10d, name))
                setattr(c10d, name, wrapped)
                setattr(dist, name, wrapped)

    def _wrap(self, name, original):
        def wrapped(*args, **kwargs):
            if self.counting:
                self.sent[name] = self.sent.get(name, 0) + self._bytes(name, args, kwargs)
                self.calls[name] = self.calls.get(name, 0) + 1
            return original(*args, **kwargs)
        wrapped.__name__ = name
        return wrapped

    def _bytes(self, name, args, kwargs) -> int:
        dist = self.dist
        group = kwargs.get("group")
        size = lambda t: t.numel() * t.element_size()  # noqa: E731
        world = dist.get_world_size(group)
        if name == "all_to_all_single":
            t = args[1] if len(args) > 1 else kwargs["input"]
            splits = args[3] if len(args) > 3 else kwargs.get("input_split_sizes")
            if splits:
                mine = splits[dist.get_rank(group)]
                return size(t) * (sum(splits) - mine) // sum(splits)
            return size(t) * (world - 1) // world
        if name == "all_to_all":
            inputs = args[1] if len(args) > 1 else kwargs["input_tensor_list"]
            return sum(size(t) for i, t in enumerate(inputs) if i != dist.get_rank(group))
        if name in ("all_gather_into_tensor", "all_gather_single", "all_gather"):
            t = args[1] if len(args) > 1 else kwargs.get("input_tensor", kwargs.get("tensor"))
            return size(t) * (world - 1)
        if name == "all_reduce":
            return size(args[0]) * 2 * (world - 1) // world
        if name == "reduce_scatter_tensor":
            return size(args[1]) * (world - 1) // world
        if name in ("isend", "send"):
            return size(args[0])
        if name == "broadcast":
            src = args[1] if len(args) > 1 else kwargs.get("src", 0)
            return size(args[0]) * (world - 1) if dist.get_rank() == src else 0
        return 0


def _medium_model(blocks: tuple[int, int] | None):
    from hyvideo_core.model.config import PRESETS
    from hyvideo_core.model.transformer import HunyuanVideoTransformer
    cfg = PRESETS["medium"]
    if blocks:
        cfg = cfg.replace(double_blocks=blocks[0], single_blocks=blocks[1])
    torch.manual_seed(0)
    model = HunyuanVideoTransformer(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():   # zero-initialised modulation would make the blocks trivial
            p.copy_(torch.randn_like(p) * (1.0 / max(1, p.shape[-1]) ** 0.5 if p.ndim > 1 else 0.1))
    g = torch.Generator().manual_seed(1)
    mask = torch.zeros(1, TEXT_TOKENS, dtype=torch.int64)
    mask[:, :VALID_TEXT] = 1
    inputs = (torch.randn(LATENT, generator=g), torch.tensor([900.0]),
              torch.randn(1, TEXT_TOKENS, cfg.text_dim, generator=g), mask,
              torch.randn(1, cfg.pooled_text_dim, generator=g), torch.tensor([6000.0]))
    return model, inputs


def _rank_main(rank: int, port: int, folder: str, options: dict) -> None:
    import torch.distributed as dist
    ParallelPolicy, ParallelConfig = _policy_api()
    counter = SentBytes()
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2,
                            timeout=timedelta(seconds=1800))
    model, inputs = _medium_model(options["blocks"])
    layouts = [("ulysses 2", ParallelConfig(ulysses_degree=2))]
    if options["ring"]:
        layouts.append(("ring 2", ParallelConfig(ring_degree=2)))
    policies = {name: ParallelPolicy(config) for name, config in layouts}
    times: dict[str, list[float]] = {"1 rank x 2 threads": []}
    times.update({f"2 ranks x 1 thread, {name}": [] for name, _ in layouts})
    sent, policy_traffic, errors, reference = {}, {}, {}, None

    def one_process() -> float:
        nonlocal reference
        dist.barrier()
        seconds = 0.0
        if rank == 0:                     # rank 1 waits in the barrier below (blocked, not spinning)
            torch.set_num_threads(2)
            start = time.perf_counter()
            reference = model(*inputs)
            seconds = time.perf_counter() - start
        dist.barrier()
        return seconds

    def parallel(name: str, count: bool) -> float:
        torch.set_num_threads(1)
        policy = policies[name].install(model, identity="benchmark medium DiT")
        try:
            dist.barrier()
            policy.traffic.reset()
            counter.sent.clear()
            counter.counting = count
            start = time.perf_counter()
            out = model(*inputs)
            seconds = time.perf_counter() - start
            counter.counting = False
            if count:
                sent[name] = dict(counter.sent)
                policy_traffic[name] = policy.traffic.total
                if reference is not None:
                    errors[name] = float((out - reference).abs().max())
        finally:
            policy.remove()
        slowest = torch.tensor([seconds])
        dist.all_reduce(slowest, op=dist.ReduceOp.MAX)
        return float(slowest)

    with torch.no_grad():
        one_process()                                   # warm-ups
        for name, _ in layouts:
            parallel(name, count=False)
        for repeat in range(options["repeats"]):        # interleaved: the machine is shared
            times["1 rank x 2 threads"].append(one_process())
            for name, _ in layouts:
                times[f"2 ranks x 1 thread, {name}"].append(parallel(name, count=repeat == 0))
    with open(os.path.join(folder, f"rank{rank}.json"), "w") as f:
        json.dump({"times": times, "sent": sent, "policy_traffic": policy_traffic, "errors": errors}, f)
    dist.destroy_process_group()


def cpu_measurement(repeats: int, ring: bool, blocks: tuple[int, int] | None) -> None:
    label = "medium DiT" + (f" with {blocks[0]} double + {blocks[1]} single blocks" if blocks else "")
    tokens = LATENT[2] * LATENT[3] * LATENT[4] // 4
    print(f"(b) CPU, gloo, equal total threads: {label}, {tokens} image + {TEXT_TOKENS} text tokens, float32, "
          f"median of {repeats} after a warm-up; {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} "
          "(timings on a loaded machine are not comparable)")
    if _policy_api() is None:
        print(f"(b) skipped: sequence parallel policy not available (expected {EXPECTED_API})")
        return
    import torch.multiprocessing as mp
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as folder:
        mp.spawn(_rank_main, args=(port, folder, {"repeats": repeats, "ring": ring, "blocks": blocks}), nprocs=2)
        ranks = [json.load(open(os.path.join(folder, f"rank{r}.json"))) for r in range(2)]
    times = ranks[0]["times"]
    single = statistics.median(times["1 rank x 2 threads"])
    print(f"    {'configuration':<32} {'step s':>8} {'ratio':>7}   bytes sent per step, each rank")
    print(f"    {'1 rank x 2 threads':<32} {single:8.2f} {1:7.2f}")
    for key, values in times.items():
        if key.startswith("1 rank"):
            continue
        name = key.split(", ")[1]
        step = statistics.median(values)
        per_rank = "; ".join(
            f"rank {r}: {sum(rk['sent'][name].values()) / 2**20:.2f} MiB ("
            + ", ".join(f"{k} {v / 2**20:.2f}" for k, v in sorted(rk["sent"][name].items())) + ")"
            for r, rk in enumerate(ranks))
        print(f"    {key:<32} {step:8.2f} {step / single:7.2f}   {per_rank}")
        print(f"    {'':<32} {'':>8} {'':>7}   policy's own counter: "
              + ", ".join(f"rank {r} {rk['policy_traffic'][name] / 2**20:.2f} MiB" for r, rk in enumerate(ranks))
              + f"; max |out - one process| = {ranks[0]['errors'].get(name, float('nan')):.2e}")
    print("    target: ratio <= 1.15")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--ring", action="store_true", help="also measure ring 2")
    parser.add_argument("--blocks", default=None, help="D,S: fewer blocks than the medium model (quick runs)")
    parser.add_argument("--skip-cpu", action="store_true")
    parser.add_argument("--skip-model", action="store_true", help="skip (a), the analytic model")
    args = parser.parse_args(argv)
    blocks = tuple(int(v) for v in args.blocks.split(",")) if args.blocks else None
    if not args.skip_model:
        analytic()
        print()
    if args.skip_cpu:
        print("(b) skipped (--skip-cpu)")
        return
    cpu_measurement(args.repeats, args.ring, blocks)


if __name__ == "__main__":
    sys.exit(main())
