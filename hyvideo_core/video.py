"""Frames <-> tensors, and writing videos (mp4 / webm / gif) with imageio.

Frames follow ComfyUI's IMAGE convention: a float tensor [frames, height, width, 3] in 0..1.
A video is written to a hidden temporary file in the destination folder and moved into place
with `os.replace` only once it is complete, so a failure or a cancellation (the `should_stop`
callback raising between frames) never leaves a half-written file behind.
"""
from __future__ import annotations

import errno
import logging
import math
import os
import re
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .errors import InvalidInputError, MissingPackageError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VideoFormat:
    name: str
    extension: str
    codec: str | None        # ffmpeg codec; None for gif (written by Pillow)
    crf_range: tuple[int, int] | None
    default_crf: int | None


FORMATS: dict[str, VideoFormat] = {
    "mp4": VideoFormat("mp4", ".mp4", "libx264", (0, 51), 19),
    "webm": VideoFormat("webm", ".webm", "libvpx-vp9", (0, 63), 31),
    "gif": VideoFormat("gif", ".gif", None, None, None),
}


@dataclass(frozen=True)
class VideoClip:
    """A video read back from disk: uint8 frames [F, H, W, 3] and the stored frame rate."""
    frames: np.ndarray
    fps: float

    @property
    def frame_count(self) -> int:
        return int(self.frames.shape[0])

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the frames."""
        return int(self.frames.shape[2]), int(self.frames.shape[1])


def frames_to_uint8(frames: torch.Tensor | np.ndarray, name: str = "frames") -> np.ndarray:
    """IMAGE tensor [F, H, W, 3] in 0..1 (or uint8 array) -> contiguous uint8 array [F, H, W, 3]."""
    if isinstance(frames, torch.Tensor):
        if frames.dtype == torch.uint8:
            array = frames.detach().cpu().numpy()
        else:
            array = (frames.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
    elif isinstance(frames, np.ndarray):
        array = frames if frames.dtype == np.uint8 else (np.clip(frames, 0, 1) * 255).round().astype(np.uint8)
    else:
        raise InvalidInputError(f"{name}: expected a tensor or array of frames, got {type(frames).__name__}.")
    if array.ndim != 4 or array.shape[-1] != 3 or array.shape[0] == 0:
        raise InvalidInputError(f"{name}: expected frames shaped [frames, height, width, 3] (ComfyUI IMAGE) "
                                f"with at least one frame, got shape {tuple(array.shape)}.")
    return np.ascontiguousarray(array)


def format_for(path: str | os.PathLike, format: str | None = None) -> VideoFormat:
    key = (format or Path(path).suffix.lstrip(".")).lower()
    if key not in FORMATS:
        raise InvalidInputError(f"video format: '{key}' for {os.fspath(path)!r} is not supported; "
                                f"use one of {sorted(FORMATS)}.")
    return FORMATS[key]


def numbered_path(folder: str | os.PathLike, prefix: str, extension: str) -> Path:
    """Next free `<folder>/<prefix>_NNNNN<extension>`; `prefix` may hold sub-folders ("hv/clip")."""
    if not isinstance(prefix, str) or not prefix.strip() or "\x00" in prefix:
        raise InvalidInputError(f"filename_prefix: {prefix!r} is not a usable file name; give a name such as "
                                "'HunyuanVideo' or 'hyvideo/clip'.")
    root = Path(folder).resolve()
    target = (root / prefix).resolve()
    if root != target and root not in target.parents:
        raise InvalidInputError(f"filename_prefix: {prefix!r} points outside the output folder {root}; "
                                f"use a plain name or a sub-folder inside it.")
    if target == root or not target.name:
        raise InvalidInputError(f"filename_prefix: {prefix!r} names the output folder itself; add a file name, "
                                "e.g. 'hyvideo/clip'.")
    make_folder(target.parent, "filename_prefix")
    pattern = re.compile(re.escape(target.name) + r"_(\d+)" + re.escape(extension) + "$")
    try:
        names = os.listdir(target.parent)
    except OSError as error:
        reason = error.strerror or error
        raise InvalidInputError(f"filename_prefix: the folder {target.parent} cannot be read ({reason}); choose "
                                "another output folder or fix its permissions.") from error
    taken = [int(m.group(1)) for f in names if (m := pattern.match(f))]
    counter = max(taken, default=0) + 1
    return target.parent / f"{target.name}_{counter:05d}{extension}"


# OSError numbers that mean "this place cannot take a file" (a bad path, not a failing device).
_PLACE_ERRORS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOENT, errno.ENOTDIR, errno.EISDIR, errno.EEXIST}


def make_folder(folder: Path, parameter: str = "path") -> Path:
    """Create `folder` (and its parents), or an InvalidInputError naming it when it cannot be: a
    parent is a file, the place is read-only, ..."""
    folder = Path(folder)
    blocker = next((p for p in (folder, *folder.parents) if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        raise InvalidInputError(f"{parameter}: cannot create the folder {folder}: {blocker} is a file, not a "
                                "folder; choose another path or move that file.")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise InvalidInputError(f"{parameter}: cannot create the folder {folder} ({error.strerror or error}); "
                                "choose a folder you can write to.") from error
    return folder


def write_video(frames: torch.Tensor | np.ndarray, path: str | os.PathLike, fps: float = 24.0,
                format: str | None = None, crf: int | None = None,
                should_stop: Callable[[], None] | None = None) -> Path:
    """Write `frames` to `path` atomically and return the final path.

    `crf` is the constant-rate factor for mp4 (0-51) and webm (0-63); lower is better quality.
    `should_stop` is called before every frame; whatever it raises aborts the write and no file
    (complete or partial) is left at `path`.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise InvalidInputError(f"path: expected a file path, got {type(path).__name__}.")
    fmt = format_for(path, format)
    if isinstance(fps, bool) or not isinstance(fps, (int, float)) or not math.isfinite(fps) or not fps > 0:
        raise InvalidInputError(f"fps: must be a positive, finite number, got {fps!r}.")
    array = _even_sized(frames_to_uint8(frames), fmt)
    crf = _checked_crf(fmt, crf)
    final = Path(path)
    if final.is_dir():
        raise InvalidInputError(f"path: {final} is a folder; give a file name such as {final / ('video' + fmt.extension)}.")
    make_folder(final.parent, "path")
    temp = final.with_name(f".{final.stem}.{uuid.uuid4().hex[:8]}.partial{fmt.extension}")
    try:
        if fmt.codec is None:
            _write_gif(array, temp, fps, should_stop)
        else:
            _write_ffmpeg(array, temp, fps, fmt, crf, should_stop)
        if not temp.is_file():   # ffmpeg reports a file it cannot create only on its stderr
            raise InvalidInputError(f"path: cannot write the video {final}: ffmpeg could not create a file in "
                                    f"{final.parent} (read-only, or no permission?). Choose a folder you can write "
                                    "to; no partial file was left.")
        os.replace(temp, final)
    except BaseException as error:
        temp.unlink(missing_ok=True)
        if isinstance(error, OSError) and error.errno in _PLACE_ERRORS:
            raise InvalidInputError(f"path: cannot write the video {final} ({error.strerror or error}); the folder "
                                    f"{final.parent} is read-only or not writable for this user. Choose a folder you "
                                    "can write to; no partial file was left.") from error
        raise   # e.g. a full disk: the OSError as it is, the partial file removed
    return final


def read_video(path: str | os.PathLike) -> VideoClip:
    """Every frame of a video file as uint8 [F, H, W, 3], with its frame rate."""
    import imageio.v3 as iio

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise InvalidInputError(f"video: file {path!r} does not exist.")
    if os.path.getsize(path) == 0:
        raise InvalidInputError(f"video {path}: the file is empty (0 bytes); upload or copy it again.")
    try:
        meta = iio.immeta(path)
        frames = np.asarray(iio.imread(path, index=None))
    except Exception as error:  # noqa: BLE001 - ffmpeg / Pillow fail in many ways on a damaged file
        detail = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise InvalidInputError(f"video {path}: cannot be decoded ({detail[:200]}). The file is damaged, empty or "
                                "not a video; re-encode it (e.g. to H.264 mp4) or choose another file.") from error
    if frames.ndim == 3 and frames.size:  # a single-frame file
        frames = frames[None]
    if frames.ndim != 4 or frames.shape[0] == 0 or frames.size == 0:
        raise InvalidInputError(f"video {path}: holds no frames (decoded shape {list(frames.shape)}); choose a video "
                                "with at least one frame.")
    if frames.shape[-1] == 1:  # greyscale
        frames = np.repeat(frames, 3, axis=-1)
    frames = frames[..., :3]
    fps = meta.get("fps")
    if fps is None and meta.get("duration"):  # gif: per-frame duration in ms
        fps = 1000.0 / float(meta["duration"])
    return VideoClip(np.ascontiguousarray(frames), float(fps or 0.0))


def _checked_crf(fmt: VideoFormat, crf: int | None) -> int | None:
    if fmt.crf_range is None:
        return None
    if crf is None:
        return fmt.default_crf
    low, high = fmt.crf_range
    if not low <= int(crf) <= high:
        raise InvalidInputError(f"crf: {crf} is outside {low}..{high} for {fmt.name}; lower means better quality.")
    return int(crf)


def _even_sized(array: np.ndarray, fmt: VideoFormat) -> np.ndarray:
    """yuv420p (what players accept) needs even sizes: pad odd ones by repeating the edge."""
    if fmt.codec is None:
        return array
    _, height, width, _ = array.shape
    pad_h, pad_w = height % 2, width % 2
    if not (pad_h or pad_w):
        return array
    log.warning("video: %dx%d frames padded to %dx%d (%s needs even sizes)",
                width, height, width + pad_w, height + pad_h, fmt.name)
    return np.pad(array, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")


def _write_ffmpeg(array: np.ndarray, path: Path, fps: float, fmt: VideoFormat, crf: int | None,
                  should_stop: Callable[[], None] | None) -> None:
    try:
        import imageio.v2 as imageio
        import imageio_ffmpeg  # noqa: F401  (imageio's FFMPEG plugin needs it)
    except ImportError as exc:
        raise MissingPackageError("video: writing mp4/webm needs `imageio` and `imageio-ffmpeg` "
                                  "(pip install imageio imageio-ffmpeg).") from exc
    params = ["-crf", str(crf)]
    if fmt.name == "webm":
        params += ["-b:v", "0", "-row-mt", "1"]  # -b:v 0 makes libvpx honour crf as constant quality
    # macro_block_size=1: keep the exact size (imageio would otherwise resize to multiples of 16).
    writer = imageio.get_writer(os.fspath(path), format="FFMPEG", mode="I", fps=fps, codec=fmt.codec,
                                pixelformat="yuv420p", quality=None, macro_block_size=1,
                                output_params=params, ffmpeg_log_level="error")
    try:
        for frame in array:
            if should_stop is not None:
                should_stop()
            writer.append_data(frame)
    finally:
        writer.close()


def _write_gif(array: np.ndarray, path: Path, fps: float, should_stop: Callable[[], None] | None) -> None:
    from PIL import Image

    images = []
    for frame in array:
        if should_stop is not None:
            should_stop()
        images.append(Image.fromarray(frame))
    # GIF stores frame delays in 1/100 s; Pillow takes milliseconds.
    images[0].save(path, format="GIF", save_all=True, append_images=images[1:],
                   duration=max(20, round(1000.0 / fps)), loop=0, disposal=2)
