"""Parallel VAE decode: the tiles of the tiled decode spread over the ranks of a process group and
blended on rank 0, bit-identical to the one-process tiled decode with the same tiles.

How (SPEC_NEXT 1.5: the scheme of ParaAttention and of HunyuanVideo 1.5's tile-parallel decode):
- every rank lists the same latent tiles (vae/tiling.py `decode_tile_inputs`: a dry run of
  `tiled_decode`, so the list is exactly the tiles the one-process decode runs, in its order);
- tile i belongs to rank i % world (round robin; the short edge tiles spread too). The tiles go in
  rounds: in round k rank r decodes tile k*world + r, the ranks exchange one status flag each
  (`all_gather`), and when every rank succeeded the tiles are gathered on rank 0 (`gather`; tiles
  of one round can differ in shape, so each is zero-padded to the round's largest and cut back on
  rank 0, which knows every shape);
- rank 0 runs `tiled_decode` itself with a `decode` that hands out the gathered tiles in order,
  pulling the next round when it needs one. The blend therefore sees the same tensors in the same
  order as the one-process decode, and rank 0 holds at most one round of tiles besides the
  blend strips and the output (the one-process decode's memory plus world + 1 decoded tiles at
  the gather: the receive buffers and one cut-back copy; runtime/planner.py prices that).

Failure: a rank whose decode raises reports it in that round's status exchange; every other rank
then raises at once with the failing rank's message (an out-of-memory or a cancel keeps its kind,
OutOfMemoryError / CancelledError, so a caller can retry smaller tiles or stop on every rank alike)
and the failing rank re-raises its own error. A rank that never arrives (killed, stuck) leaves the
others in a collective until the process group's timeout (`init_process_group(timeout=...)`),
which torch.distributed turns into an error; nothing here waits without one.

Backends: NCCL exchanges on the current CUDA device, gloo on the CPU (tiles decoded on a GPU are
moved to the CPU for a gloo group); both go through torch.distributed's own collectives.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.distributed as dist

from ..errors import CancelledError, HyVideoError, InvalidInputError, OutOfMemoryError
from ..runtime.devices import is_out_of_memory
from ..vae.tiling import TileSpec, decode_tile_inputs, decoded_tile_shape, snap_tiles, tiled_decode


def decode_parallel(vae, latent: torch.Tensor, tiles: TileSpec | None, group=None, *,
                    output_device: torch.device | str | None = None,
                    progress: Callable[[int, int], None] | None = None) -> torch.Tensor | None:
    """Decode raw latents [B, 16, T, h, w] with `tiles` over the ranks of `group` (default: the
    world). Every rank of the group calls it with the same latent and tiles. Returns the video on
    the group's rank 0 (on `output_device`, default the VAE's device, as `vae.decode_once`) and
    None on the other ranks. `progress(done, total)` is called on rank 0 after every blended tile;
    whatever it raises stops every rank."""
    if not dist.is_available() or not dist.is_initialized():
        raise InvalidInputError("parallel VAE decode: torch.distributed is not initialised; call "
                                "torch.distributed.init_process_group first (or decode with vae.decode).")
    vae._check_latent(latent)
    config = vae.config
    tiles = None if tiles is None else snap_tiles(tiles, config)
    exchange = _Exchange(group, vae.device)
    # Samples are decoded one after the other (as decode_once does); their tiles form one list.
    samples = [s.to(vae.device, vae.dtype) for s in latent.split(1)]
    per_sample = [[s] if tiles is None else decode_tile_inputs(s, tiles, config) for s in samples]
    exchange.check_same_work(latent.shape, tiles, len(per_sample[0]))
    rounds = _Rounds(vae, [t for inputs in per_sample for t in inputs], exchange)
    if exchange.rank != 0:
        rounds.run_all()
        return None

    def run(chunk: torch.Tensor) -> torch.Tensor:
        tile = rounds.next_tile(chunk)
        if progress is not None:
            progress(rounds.handed, rounds.count)
        return tile

    out = None
    try:
        for index, sample in enumerate(samples):
            video = run(sample) if tiles is None else tiled_decode(sample, run, tiles, config,
                                                                   out_device=output_device)
            video = video.to(output_device) if output_device is not None else video
            if latent.shape[0] == 1:
                out = video
                break
            if out is None:
                out = video.new_empty((latent.shape[0],) + video.shape[1:])
            out[index] = video[0]
            del video
        rounds.finish()
    except BaseException as error:
        rounds.abort(error)
        raise
    return out


class _Exchange:
    """The group, this rank, and the device its collectives run on."""

    def __init__(self, group, compute: torch.device):
        self.group = group
        self.rank = dist.get_rank(group)
        self.world = dist.get_world_size(group)
        self.root = 0 if group is None else dist.get_global_rank(group, 0)
        backend = str(dist.get_backend(group)).lower()
        if "nccl" in backend:
            self.device = torch.device("cuda", torch.cuda.current_device())
        elif "gloo" in backend or compute.type == "cpu":
            self.device = torch.device("cpu")
        else:  # another device backend (e.g. hccl): exchange where the tiles are decoded
            self.device = compute

    def all_ints(self, values: list[int]) -> list[list[int]]:
        mine = torch.tensor(values, dtype=torch.int64, device=self.device)
        everyone = [torch.empty_like(mine) for _ in range(self.world)]
        dist.all_gather(everyone, mine, group=self.group)
        return [t.tolist() for t in everyone]

    def check_same_work(self, latent_shape, tiles: TileSpec | None, count: int) -> None:
        spec = [-1, -1, -1, -1] if tiles is None else [
            -1 if tiles.spatial is None else tiles.spatial, tiles.spatial_overlap,
            -1 if tiles.temporal is None else tiles.temporal, tiles.temporal_overlap]
        signatures = self.all_ints([*latent_shape, *spec, count])
        if any(s != signatures[0] for s in signatures):
            listed = "; ".join(f"rank {r}: latent {s[:5]}, tiles {s[5:9]}, {s[9]} tiles per sample"
                               for r, s in enumerate(signatures))
            raise InvalidInputError(
                f"parallel VAE decode: the ranks were given different work ({listed}); every rank must "
                "pass the same latent shape and tiles.")


class _Rounds:
    """All tiles of a decode, round by round: in round k rank r decodes tile k*world + r."""

    def __init__(self, vae, inputs: list[torch.Tensor], exchange: _Exchange):
        self.vae, self.inputs, self.x = vae, inputs, exchange
        self.count = len(inputs)
        self.rounds = -(-self.count // exchange.world)
        self.round = 0
        self.ready: list[torch.Tensor] = []   # rank 0: tiles of the current round not handed out yet
        self.handed = 0
        self.reported = False                 # a failure was already announced to every rank

    def run_all(self) -> None:
        while self.round < self.rounds:
            self._round()

    def next_tile(self, chunk: torch.Tensor) -> torch.Tensor:
        """Rank 0: the decoded tile for the `chunk` tiled_decode asks for next."""
        if self.handed >= self.count or chunk.shape != self.inputs[self.handed].shape:
            raise AssertionError(f"parallel VAE decode: tile {self.handed} of {self.count} asked for with "
                                 f"latent shape {tuple(chunk.shape)}; the tile list does not match the blend")
        if not self.ready:
            self.ready = self._round()
        self.handed += 1
        return self.ready.pop(0)

    def finish(self) -> None:
        if self.handed != self.count or self.round != self.rounds or self.ready:
            raise AssertionError(f"parallel VAE decode: {self.handed} of {self.count} tiles blended")

    def abort(self, error: BaseException) -> None:
        """Rank 0 failed between rounds: announce it in the next round's status exchange, so that
        the other ranks stop now instead of waiting for the group's timeout."""
        if self.reported or self.round >= self.rounds:
            return
        try:
            self._round(failure=error)
        except BaseException:  # noqa: BLE001 - the caller re-raises `error` itself
            pass

    def _round(self, failure: BaseException | None = None) -> list[torch.Tensor]:
        x, vae = self.x, self.vae
        first = self.round * x.world
        self.round += 1
        indices = range(first, min(first + x.world, self.count))
        shapes = [decoded_tile_shape(self.inputs[i].shape, vae.config) for i in indices]
        mine = first + x.rank
        tile, error = None, failure
        if error is None and mine < self.count:
            try:
                tile = vae.decode_once(self.inputs[mine], None)
                if tuple(tile.shape) != shapes[x.rank]:
                    raise AssertionError(f"decoded tile {mine} has shape {tuple(tile.shape)}, "
                                         f"expected {shapes[x.rank]}")
            except BaseException as exc:  # announced to every rank, then re-raised here
                error = exc
        self._check_status(error)
        largest = tuple(max(s[d] for s in shapes) for d in range(5))
        send = _padded(tile, largest, x.device, vae.dtype)
        buffers = [torch.empty_like(send) for _ in range(x.world)] if x.rank == 0 else None
        dist.gather(send, buffers, dst=x.root, group=x.group)
        if x.rank != 0:
            return []
        received = [tile]                      # rank 0's own tile, untouched
        for r in range(1, len(shapes)):
            part, buffers[r] = buffers[r].to(tile.device), None
            if tuple(part.shape) != shapes[r]:  # cut back to the tile (a copy: the layout the blend saw in one process)
                part = part[tuple(slice(0, n) for n in shapes[r])].contiguous()
            received.append(part)
        return received

    def _check_status(self, error: BaseException | None) -> None:
        """Every rank says whether its tile decoded; on any failure every rank raises now."""
        flags = self.x.all_ints([0 if error is None else _kind(error)])
        failed = [(r, f[0]) for r, f in enumerate(flags) if f[0]]
        if not failed:
            return
        self.reported = True
        messages = [None] * self.x.world
        dist.all_gather_object(messages, None if error is None else f"{type(error).__name__}: {error}",
                               group=self.x.group)
        if error is not None:
            raise error
        text = "; ".join(f"rank {r}: {messages[r]}" for r, _ in failed)
        message = (f"parallel VAE decode stopped on rank {self.x.rank} because another rank failed ({text}); "
                   "every rank stops with it. Fix that rank's error (out of memory: smaller tiles on every rank).")
        kinds = {kind for _, kind in failed}
        if kinds == {_OOM}:
            raise OutOfMemoryError(message)
        if kinds == {_CANCELLED}:
            raise CancelledError(message)
        raise HyVideoError(message)


_OOM, _CANCELLED, _OTHER = 1, 2, 3


def _kind(error: BaseException) -> int:
    if is_out_of_memory(error):
        return _OOM
    if isinstance(error, (CancelledError, KeyboardInterrupt)):
        return _CANCELLED
    return _OTHER


def _padded(tile: torch.Tensor | None, shape: tuple[int, ...], device: torch.device, dtype) -> torch.Tensor:
    """The tile on the exchange device, zero-padded to `shape` (a rank without a tile sends zeros)."""
    if tile is not None and tuple(tile.shape) == shape:
        return tile.to(device).contiguous()
    buffer = torch.zeros(shape, dtype=dtype if tile is None else tile.dtype, device=device)
    if tile is not None:
        buffer[tuple(slice(0, n) for n in tile.shape)] = tile
    return buffer
