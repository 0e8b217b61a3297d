"""Save video: frames -> mp4 / webm / gif in ComfyUI's output folder, written atomically (a cancelled or
failed write leaves no file), with a preview in the node."""
from __future__ import annotations

import os

import torch

from hyvideo_core.errors import InvalidInputError
from hyvideo_core.run.choices import check_choice
from hyvideo_core.video import FORMATS, numbered_path, write_video

from .host import host

MIME = {"mp4": "video/mp4", "webm": "video/webm", "gif": "image/gif"}


class HyVideoSaveVideo:
    DESCRIPTION = "Writes the frames as a video into ComfyUI's output folder and shows it in the node."

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "images": ("IMAGE", {"tooltip": "The frames ([frames, height, width, 3]), e.g. from VAE Decode."}),
            "filename_prefix": ("STRING", {"default": "HunyuanVideo",
                                           "tooltip": "File name start; may include sub-folders of the output "
                                                      "folder, e.g. 'hyvideo/clip'. A counter is appended."}),
            "format": (list(FORMATS), {"default": "mp4",
                                       "tooltip": "mp4 (H.264), webm (VP9) or gif."}),
            "fps": ("FLOAT", {"default": 24.0, "min": 0.1, "max": 240.0, "step": 0.1,
                              "tooltip": "Frames per second (HunyuanVideo is trained at 24)."}),
            "crf": ("INT", {"default": 19, "min": 0, "max": 63,
                            "tooltip": "Quality as a constant-rate factor: lower is better and larger (mp4 0-51, "
                                       "default 19; webm 0-63, 31 is typical). gif has no quality setting."}),
        }}

    RETURN_TYPES = ()
    OUTPUT_NODE = True
    FUNCTION = "save"
    CATEGORY = "HunyuanVideo/output"

    def save(self, images, filename_prefix, format, fps, crf):
        check_choice("format", format, tuple(FORMATS))
        if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[-1] != 3 or not len(images):
            found = list(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
            raise InvalidInputError(f"images: expected frames [frames, height, width, 3] (an IMAGE, e.g. from VAE "
                                    f"Decode) with at least one frame, got {found}.")
        output = host.output_dir()
        path = numbered_path(output, filename_prefix, FORMATS[format].extension)
        notes = []
        if format == "gif":
            crf = None
            notes.append("gif: crf is not used")
        # should_stop raises on an interrupt between frames; write_video then removes its partial file.
        write_video(images, path, fps=fps, format=format, crf=crf, should_stop=host.check_interrupt)
        subfolder = os.path.relpath(path.parent, os.path.realpath(output))
        entry = {"filename": path.name, "subfolder": "" if subfolder == "." else subfolder, "type": "output",
                 "format": MIME[format], "frame_rate": fps}
        notes.insert(0, f"{path.name}: {images.shape[0]} frames of {images.shape[2]}x{images.shape[1]} at {fps:g} fps")
        return {"ui": {"images": [entry], "animated": (True,), "text": notes}}


NODE_CLASS_MAPPINGS = {"HyVideoSaveVideo": HyVideoSaveVideo}
NODE_DISPLAY_NAME_MAPPINGS = {"HyVideoSaveVideo": "HunyuanVideo Save Video"}
