"""Text nodes: encode a prompt (and a negative prompt for true CFG) with our text encoder, and
bridge to and from ComfyUI's native HunyuanVideo CONDITIONING."""
from __future__ import annotations

from hyvideo_core.run import encode_prompts
from hyvideo_core.text import DEFAULT_NEGATIVE_PROMPT, conditioning_to_embeds, embeds_to_conditioning, encode_device_bytes

from .host import host

CATEGORY = "HunyuanVideo/text"
EMBEDS_TOOLTIP = "Prompt embeddings for the HunyuanVideo Sampler."


def embeds_report(embeds) -> list[str]:
    parts = [f"positive: {embeds.positive.valid_tokens.max().item()} tokens"]
    if embeds.negative is not None:
        parts.append(f"negative: {embeds.negative.valid_tokens.max().item()} tokens")
    return ["; ".join(parts), *embeds.notes]


class HyVideoTextEncode:
    DESCRIPTION = ("Encodes the prompt with LLaVA-Llama-3 (hidden states) and CLIP-L (pooled). The negative prompt "
                   "is only used with true CFG (sampler true_cfg_scale > 1); leave it empty otherwise.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "text_encoder": ("HYVIDEO_TEXT_ENCODER", {"tooltip": "From the HunyuanVideo Text Encoder Loader."}),
            "prompt": ("STRING", {"multiline": True, "default": "",
                                  "tooltip": "What the video shows: subject, action, scene, style, camera."}),
            "negative_prompt": ("STRING", {
                "multiline": True, "default": "",
                "tooltip": "Only used when the sampler's true_cfg_scale > 1 (then encoded as well). The "
                           f"reference's default negative prompt is: {DEFAULT_NEGATIVE_PROMPT}"}),
            "template": (["video", "image", "custom"], {
                "default": "video",
                "tooltip": "The system prompt wrapped around yours: video (official), image (the reference's choice "
                           "for 1 frame) or custom (custom_template)."}),
            "custom_template": ("STRING", {
                "multiline": True, "default": "",
                "tooltip": "With template=custom: the template text with '{}' where the prompt goes."}),
        }}

    RETURN_TYPES = ("HYVIDEO_EMBEDS",)
    RETURN_NAMES = ("embeds",)
    OUTPUT_TOOLTIPS = (EMBEDS_TOOLTIP,)
    FUNCTION = "encode"
    CATEGORY = CATEGORY

    def encode(self, text_encoder, prompt, negative_prompt, template, custom_template):
        chosen = custom_template if template == "custom" else template
        negative = negative_prompt if negative_prompt.strip() else None
        notes = make_room_for(text_encoder, chosen)
        with host.interruptible():
            embeds = encode_prompts(text_encoder, prompt, negative, chosen, host)
        return {"ui": {"text": [*embeds_report(embeds), *notes]}, "result": (embeds,)}


def make_room_for(text_encoder, template="video") -> list[str]:
    """Before a tower visits the GPU, move this pack's transformers off it if the larger tower would
    not fit next to them (what ComfyUI does with its own models between encoding and sampling);
    the sampler puts them back. Nothing happens when the towers run where they are stored."""
    device = text_encoder.device
    if device == text_encoder.offload_device or device.type == "cpu":
        return []
    needed = encode_device_bytes(text_encoder, template=template)
    free, _ = host.device_memory(device)
    if free >= needed:
        return []
    host.unload_all()
    return [f"moved the transformer off {device} to make room for the text encoder "
            f"({needed / 2**30:.1f} GiB needed, {free / 2**30:.1f} GiB were free); the sampler moves it back"]


class HyVideoConditioningToEmbeds:
    DESCRIPTION = ("Uses ComfyUI's own HunyuanVideo text encoding (DualCLIPLoader type hunyuan_video + CLIP Text "
                   "Encode) with this pack's sampler.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "positive": ("CONDITIONING", {"tooltip": "Native CONDITIONING of the prompt (CLIP Text Encode)."}),
        }, "optional": {
            "negative": ("CONDITIONING", {"tooltip": "Native CONDITIONING of a negative prompt, for true CFG."}),
        }}

    RETURN_TYPES = ("HYVIDEO_EMBEDS",)
    RETURN_NAMES = ("embeds",)
    OUTPUT_TOOLTIPS = (EMBEDS_TOOLTIP,)
    FUNCTION = "convert"
    CATEGORY = CATEGORY

    def convert(self, positive, negative=None):
        # The width is checked against the DiT by the sampler, which knows the model.
        embeds = conditioning_to_embeds(positive, negative, text_dim=None)
        return {"ui": {"text": [*embeds_report(embeds), *native_image_note(positive)]}, "result": (embeds,)}


NATIVE_I2V_KEYS = ("concat_latent_image", "concat_mask", "guiding_frame_index", "ref_latent")


def native_image_note(conditioning) -> list[str]:
    """ComfyUI's HunyuanImageToVideo puts the image in the CONDITIONING; the embeds carry text only."""
    found = sorted({key for entry in conditioning if isinstance(entry, (list, tuple)) and len(entry) > 1
                    and isinstance(entry[1], dict) for key in entry[1] if key in NATIVE_I2V_KEYS})
    if not found:
        return []
    return [f"the native image-to-video keys {found} (HunyuanImageToVideo) are not used: encode the image with "
            "HunyuanVideo I2V Encode and connect it to the sampler's image_cond"]


class HyVideoEmbedsToConditioning:
    DESCRIPTION = "Uses this pack's text encoding with ComfyUI's native HunyuanVideo sampling nodes."

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"embeds": ("HYVIDEO_EMBEDS", {"tooltip": "From the HunyuanVideo Text Encode node."})}}

    RETURN_TYPES = ("CONDITIONING", "CONDITIONING")
    RETURN_NAMES = ("positive", "negative")
    OUTPUT_TOOLTIPS = ("Native CONDITIONING of the prompt.",
                       "Native CONDITIONING of the negative prompt (the positive one when none was encoded).")
    FUNCTION = "convert"
    CATEGORY = CATEGORY

    def convert(self, embeds):
        positive = embeds_to_conditioning(embeds.positive)
        if embeds.negative is None:
            return {"ui": {"text": ["no negative prompt was encoded: the negative output repeats the positive"]},
                    "result": (positive, positive)}
        return (positive, embeds_to_conditioning(embeds.negative))


NODE_CLASS_MAPPINGS = {
    "HyVideoTextEncode": HyVideoTextEncode,
    "HyVideoConditioningToEmbeds": HyVideoConditioningToEmbeds,
    "HyVideoEmbedsToConditioning": HyVideoEmbedsToConditioning,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "HyVideoTextEncode": "HunyuanVideo Text Encode",
    "HyVideoConditioningToEmbeds": "HunyuanVideo Conditioning to Embeds",
    "HyVideoEmbedsToConditioning": "HunyuanVideo Embeds to Conditioning",
}
