"""Loading keyframe images and source videos from ComfyUI's input folder (with the upload button),
as IMAGE frames [frames, H, W, 3] in 0..1, so the keyframe and video-to-video workflows need no
other node pack."""
from __future__ import annotations

import hashlib
import os

import numpy as np
import torch

from hyvideo_core.conditioning import fit_image
from hyvideo_core.errors import InvalidInputError
from hyvideo_core.video import read_video

from .host import host

CATEGORY = "HunyuanVideo/media"
IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"})
VIDEO_EXTENSIONS = frozenset({".mp4", ".webm", ".mov", ".mkv", ".avi", ".gif", ".m4v"})


def input_stamp(name: str) -> str:
    """Content hash of an input file, so replacing it under the same name re-runs the node."""
    try:
        path = host.input_path(name)
    except InvalidInputError:
        return ""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def input_problem(name: str) -> bool | str:
    try:
        host.input_path(name)
        return True
    except InvalidInputError as error:
        return str(error)


def read_image(path: str) -> torch.Tensor:
    from PIL import Image, ImageOps
    try:
        with Image.open(path) as image:
            rgb = ImageOps.exif_transpose(image).convert("RGB")
            array = np.asarray(rgb, dtype=np.float32) / 255.0
    except Exception as error:  # noqa: BLE001 - Pillow raises OSError, ValueError, SyntaxError, DecompressionBombError ...
        raise InvalidInputError(f"image {os.path.basename(path)}: cannot be read as an image "
                                f"({type(error).__name__}: {error}). The file is damaged, empty or not an image; "
                                "save it again as PNG or JPEG.") from error
    if array.ndim != 3 or 0 in array.shape:
        raise InvalidInputError(f"image {os.path.basename(path)}: holds no pixels (size {list(array.shape[:2])}).")
    return torch.from_numpy(array)[None]


def check_counts(**counts) -> None:
    """Whole numbers at or above their minimum: `name=(value, minimum)` (a direct call skips the widgets' limits)."""
    for name, (value, minimum) in counts.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise InvalidInputError(f"{name}: expected a whole number >= {minimum}, got {value!r}.")


class HyVideoLoadImage:
    DESCRIPTION = "Loads an image from ComfyUI's input folder (e.g. a keyframe)."

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": (host.input_files(IMAGE_EXTENSIONS), {
            "image_upload": True, "tooltip": "An image in ComfyUI's input folder; the button uploads one."})}}

    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("image",)
    OUTPUT_TOOLTIPS = ("The image, [1, height, width, 3] in 0..1 (alpha dropped).",)
    FUNCTION = "load"
    CATEGORY = CATEGORY

    @classmethod
    def VALIDATE_INPUTS(cls, image):
        return input_problem(image)

    @classmethod
    def IS_CHANGED(cls, image):
        return input_stamp(image)

    def load(self, image):
        return (read_image(host.input_path(image)),)


class HyVideoLoadVideo:
    DESCRIPTION = ("Loads frames of a video from ComfyUI's input folder (e.g. for video-to-video), optionally "
                   "resized by the larger ratio and centre-cropped to width x height.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "video": (host.input_files(VIDEO_EXTENSIONS), {
                "video_upload": True, "tooltip": "A video in ComfyUI's input folder; the button uploads one."}),
            "frame_load_cap": ("INT", {"default": 129, "min": 0, "max": 100000,
                                       "tooltip": "At most this many frames (after skipping); 0 = all."}),
            "skip_first_frames": ("INT", {"default": 0, "min": 0, "max": 100000,
                                          "tooltip": "Frames to skip at the start."}),
            "select_every_nth": ("INT", {"default": 1, "min": 1, "max": 1000,
                                         "tooltip": "Keep every n-th frame (2 halves the frame rate)."}),
            "resize_width": ("INT", {"default": 0, "min": 0, "max": 4096, "step": 16,
                                     "tooltip": "Resize and centre-crop to this width; 0 (with resize_height 0) "
                                                "keeps the size."}),
            "resize_height": ("INT", {"default": 0, "min": 0, "max": 4096, "step": 16,
                                      "tooltip": "Resize and centre-crop to this height; 0 (with resize_width 0) "
                                                 "keeps the size."}),
        }}

    RETURN_TYPES = ("IMAGE", "INT", "FLOAT")
    RETURN_NAMES = ("images", "frame_count", "fps")
    OUTPUT_TOOLTIPS = ("The frames, [frames, height, width, 3] in 0..1.", "How many frames were loaded.",
                       "The frame rate of the loaded frames.")
    FUNCTION = "load"
    CATEGORY = CATEGORY

    @classmethod
    def VALIDATE_INPUTS(cls, video):
        return input_problem(video)

    @classmethod
    def IS_CHANGED(cls, video, **_):
        return input_stamp(video)

    def load(self, video, frame_load_cap, skip_first_frames, select_every_nth, resize_width, resize_height):
        check_counts(frame_load_cap=(frame_load_cap, 0), skip_first_frames=(skip_first_frames, 0),
                     select_every_nth=(select_every_nth, 1), resize_width=(resize_width, 0),
                     resize_height=(resize_height, 0))
        if (resize_width == 0) != (resize_height == 0):
            raise InvalidInputError(f"resize_width {resize_width} / resize_height {resize_height}: give both to "
                                    "resize, or set both to 0 to keep the size.")
        clip = read_video(host.input_path(video))
        frames = clip.frames[skip_first_frames::select_every_nth]
        if frame_load_cap:
            frames = frames[:frame_load_cap]
        if len(frames) == 0:
            raise InvalidInputError(f"video {video}: {clip.frame_count} frames, none left after skipping "
                                    f"{skip_first_frames} and taking every {select_every_nth}.")
        images = torch.from_numpy(np.ascontiguousarray(frames)).float().div_(255.0)
        size = (resize_width, resize_height)
        if all(size) and (images.shape[2], images.shape[1]) != size:
            images = torch.stack([fit_image(frame, *size, "video frame").permute(1, 2, 0) for frame in images])
        fps = clip.fps / select_every_nth
        return {"ui": {"text": [f"{images.shape[0]} frames of {images.shape[2]}x{images.shape[1]} at {fps:g} fps"]},
                "result": (images, int(images.shape[0]), float(fps))}


NODE_CLASS_MAPPINGS = {"HyVideoLoadImage": HyVideoLoadImage, "HyVideoLoadVideo": HyVideoLoadVideo}
NODE_DISPLAY_NAME_MAPPINGS = {"HyVideoLoadImage": "HunyuanVideo Load Image", "HyVideoLoadVideo": "HunyuanVideo Load Video"}
