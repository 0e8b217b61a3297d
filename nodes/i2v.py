"""Image to video (HunyuanVideo-I2V): the first frame's latent for the sampler, and the prompt
encoded with the image through the LLaVA vision tower (SPEC_NEXT.md 2.2-2.6)."""
from __future__ import annotations

from hyvideo_core.conditioning import I2V_MODES, image_conditioning_from_native, recommended_shift
from hyvideo_core.errors import InvalidInputError
from hyvideo_core.run import encode_first_frame, encode_prompts
from hyvideo_core.text import DEFAULT_IMAGE_INTERLEAVE, DEFAULT_NEGATIVE_PROMPT_I2V

from .host import host
from .loaders import check_inputs
from .text import EMBEDS_TOOLTIP, embeds_report, make_room_for

CATEGORY = "HunyuanVideo/conditioning"
I2V_TEMPLATES = ("video", "image")


def first_image(image, parameter: str = "image"):
    """The first image of a ComfyUI IMAGE batch [B, H, W, 3]; a note when more were given."""
    notes = [f"{parameter}: {image.shape[0]} images were given; the first one is used"] if image.shape[0] > 1 else []
    return image[:1], notes


def encode_with_image(encoder, prompt: str, negative: str | None, template: str, image, interleave: int):
    """The run layer's encode_prompts with the image (the vision tower visits the device too)."""
    if encoder.vision is None:
        raise InvalidInputError(
            "text_encoder: it has no vision tower, so it cannot encode the image. Connect a HunyuanVideo Vision "
            "Tower Loader (llava_llama3_vision.safetensors) to the Text Encoder Loader's vision input.")
    return encode_prompts(encoder, prompt, negative, template, host, image=image, image_embed_interleave=interleave)


class HyVideoI2VTextEncode:
    DESCRIPTION = ("Encodes the prompt together with the first frame (HunyuanVideo-I2V): the LLaVA vision tower's "
                   "image tokens, then the prompt, through the I2V template. The text encoder needs the vision "
                   "tower (Vision Tower Loader -> Text Encoder Loader's vision input).")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "text_encoder": ("HYVIDEO_TEXT_ENCODER", {"tooltip": "From the Text Encoder Loader with a vision tower."}),
            "image": ("IMAGE", {"tooltip": "The first frame (the first image of a batch); the vision tower sees "
                                           "it whole, resized and centre-cropped to its 336 px square."}),
            "prompt": ("STRING", {"multiline": True, "default": "",
                                  "tooltip": "What happens in the video, starting from the image."}),
            "negative_prompt": ("STRING", {
                "multiline": True, "default": "",
                "tooltip": "Only used when the sampler's true_cfg_scale > 1 (encoded with a black image, as the "
                           f"reference). The reference's I2V negative prompt is: {DEFAULT_NEGATIVE_PROMPT_I2V}"}),
            "image_interleave": ("INT", {
                "default": DEFAULT_IMAGE_INTERLEAVE, "min": 1, "max": 512,
                "tooltip": "Keep every k-th of the 576 image tokens: 4 for the v2 replace model (token_replace, "
                           "the current HunyuanVideo-I2V), 2 for the v1 concat model (latent_concat). Higher = "
                           "more weight on the text."}),
            "template": (list(I2V_TEMPLATES), {
                "default": "video",
                "tooltip": "video: the reference's I2V video template (dit-llm-encode-video-i2v); image: its I2V "
                           "image template."}),
        }}

    RETURN_TYPES = ("HYVIDEO_EMBEDS",)
    RETURN_NAMES = ("embeds",)
    OUTPUT_TOOLTIPS = (EMBEDS_TOOLTIP,)
    FUNCTION = "encode"
    CATEGORY = "HunyuanVideo/text"

    def encode(self, text_encoder, image, prompt, negative_prompt, image_interleave, template):
        check_inputs(template=(template, I2V_TEMPLATES))
        image, notes = first_image(image)
        negative = negative_prompt if negative_prompt.strip() else None
        notes += make_room_for(text_encoder, template)
        with host.interruptible():
            embeds = encode_with_image(text_encoder, prompt, negative, template, image[0].movedim(-1, 0),
                                       image_interleave)
        tokens = embeds.positive.image_tokens
        notes.insert(0, f"image: {tokens} tokens (image_interleave {image_interleave})")
        return {"ui": {"text": [*embeds_report(embeds), *notes]}, "result": (embeds,)}


class HyVideoI2VEncode:
    DESCRIPTION = ("Encodes the first frame for image to video: resized to cover width x height and centre-cropped, "
                   "then VAE-encoded. Connect it to the sampler's image_cond input; the sampler takes the video "
                   "size from here. auto picks the model's way from its input channels (16: token_replace, "
                   "33: latent_concat, 32: SkyReels).")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "vae": ("HYVIDEO_VAE", {"tooltip": "From the HunyuanVideo VAE Loader (with its encoder)."}),
            "image": ("IMAGE", {"tooltip": "The first frame (the first image of a batch)."}),
            "width": ("INT", {"default": 1280, "min": 16, "max": 4096, "step": 16,
                              "tooltip": "Video width, a multiple of 16 (others are snapped and reported); the "
                                         "model was trained at 720p (1280x720)."}),
            "height": ("INT", {"default": 720, "min": 16, "max": 4096, "step": 16,
                               "tooltip": "Video height, a multiple of 16. Another aspect ratio than the image's "
                                          "crops the image's edges (reported)."}),
            "mode": (list(I2V_MODES), {
                "default": "auto",
                "tooltip": "auto: from the model's input channels. token_replace: the v2 replace model (16 ch); "
                           "latent_concat: the v1 concat model (33 ch, the first 4 decoded frames are dropped); "
                           "skyreels: SkyReels-V1 I2V (32 ch)."}),
            "stability": ("BOOLEAN", {
                "default": True,
                "tooltip": "stability (on): the start latent carries a trace of the image, use sampler shift 7; "
                           "dynamic (off): pure noise start, more motion, use shift 17 (the official scripts)."}),
        }}

    RETURN_TYPES = ("HYVIDEO_IMAGE_COND",)
    RETURN_NAMES = ("image_cond",)
    OUTPUT_TOOLTIPS = ("The encoded first frame, for the sampler's image_cond input.",)
    FUNCTION = "encode"
    CATEGORY = CATEGORY

    def encode(self, vae, image, width, height, mode, stability):
        check_inputs(mode=(mode, I2V_MODES))
        image, notes = first_image(image)
        host.check_interrupt()
        with host.interruptible():
            cond = encode_first_frame(vae.vae, image, width, height, mode, bool(stability), main=vae.main,
                                      offload=vae.offload, host=host)
        style = "stability" if cond.stability else "dynamic"
        text = [f"first frame {cond.width}x{cond.height}, mode {cond.mode}, {style} (recommended sampler shift "
                f"{recommended_shift(cond.stability):g})", *cond.notes, *notes]
        return {"ui": {"text": text}, "result": (cond,)}


class HyVideoNativeImageCond:
    DESCRIPTION = ("Uses ComfyUI's own HunyuanImageToVideo (v1 concat or v2 replace, with a start image) as this "
                   "pack's image conditioning: connect its positive and latent outputs.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "positive": ("CONDITIONING", {"tooltip": "HunyuanImageToVideo's positive output (v1 concat carries the "
                                                     "image latent here)."}),
            "stability": ("BOOLEAN", {"default": True, "tooltip": "As in I2V Encode: on = shift 7 and a trace of "
                                                                  "the image in the start latent; off = shift 17."}),
        }, "optional": {
            "latent": ("LATENT", {"tooltip": "HunyuanImageToVideo's latent output (v2 replace carries the image "
                                             "latent in its frame 0)."}),
        }}

    RETURN_TYPES = ("HYVIDEO_IMAGE_COND",)
    RETURN_NAMES = ("image_cond",)
    OUTPUT_TOOLTIPS = ("The first frame, for the sampler's image_cond input.",)
    FUNCTION = "convert"
    CATEGORY = CATEGORY

    def convert(self, positive, stability, latent=None):
        cond = image_conditioning_from_native(positive, latent, bool(stability))
        return {"ui": {"text": [f"first frame {cond.width}x{cond.height}, mode {cond.mode}", *cond.notes]},
                "result": (cond,)}


NODE_CLASS_MAPPINGS = {"HyVideoI2VTextEncode": HyVideoI2VTextEncode, "HyVideoI2VEncode": HyVideoI2VEncode,
                       "HyVideoNativeImageCond": HyVideoNativeImageCond}
NODE_DISPLAY_NAME_MAPPINGS = {"HyVideoI2VTextEncode": "HunyuanVideo I2V Text Encode",
                              "HyVideoI2VEncode": "HunyuanVideo I2V Encode",
                              "HyVideoNativeImageCond": "Native I2V to Image Cond"}
