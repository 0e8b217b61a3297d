"""Prompt templates for the LLaVA-Llama-3 tower (SPEC.md 4.2) and the default negative prompt.

The template wraps the user prompt in a chat turn whose system message describes what to
attend to. The hidden states of the template's prefix are cropped away after encoding; the
crop length is measured by tokenizing the prefix (95 tokens for the video template and 36
for the image template with the Llama-3 tokenizer, BOS included), so any tokenizer works.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import InvalidInputError

PLACEHOLDER = "{}"

# Tencent/HunyuanVideo hyvideo/constants.py, PROMPT_TEMPLATE_ENCODE_VIDEO ("dit-llm-encode-video").
# There is deliberately no space after "video." and the other numbered sentence ends.
VIDEO_TEMPLATE_TEXT = (
    "<|start_header_id|>system<|end_header_id|>\n\n"
    "Describe the video by detailing the following aspects: "
    "1. The main content and theme of the video."
    "2. The color, shape, size, texture, quantity, text, and spatial relationships of the objects."
    "3. Actions, events, behaviors temporal relationships, physical movement changes of the objects."
    "4. background environment, light, style and atmosphere."
    "5. camera angles, movements, and transitions used in the video:<|eot_id|>"
    "<|start_header_id|>user<|end_header_id|>\n\n{}<|eot_id|>"
)

# Tencent/HunyuanVideo hyvideo/constants.py, PROMPT_TEMPLATE_ENCODE ("dit-llm-encode"), used
# by the reference when a single frame is generated.
IMAGE_TEMPLATE_TEXT = (
    "<|start_header_id|>system<|end_header_id|>\n\n"
    "Describe the image by detailing the color, shape, size, texture, "
    "quantity, text, spatial relationships of the objects and background:<|eot_id|>"
    "<|start_header_id|>user<|end_header_id|>\n\n{}<|eot_id|>"
)

# Tencent/HunyuanVideo-I2V hyvideo/constants.py, PROMPT_TEMPLATE_ENCODE_VIDEO_I2V
# ("dit-llm-encode-video-i2v"): the image placeholder opens the system text, and the template
# ends with the assistant header, whose four tokens before the last "\n\n" the crop removes
# (SPEC_NEXT.md 2.6).
IMAGE_TOKEN = "<image>"
VIDEO_I2V_TEMPLATE_TEXT = (
    "<|start_header_id|>system<|end_header_id|>\n\n<image>\nDescribe the video by detailing the "
    "following aspects according to the reference image: "
    "1. The main content and theme of the video."
    "2. The color, shape, size, texture, quantity, text, and spatial relationships of the objects."
    "3. Actions, events, behaviors temporal relationships, physical movement changes of the objects."
    "4. background environment, light, style and atmosphere."
    "5. camera angles, movements, and transitions used in the video:<|eot_id|>\n\n"
    "<|start_header_id|>user<|end_header_id|>\n\n{}<|eot_id|>"
    "<|start_header_id|>assistant<|end_header_id|>\n\n"
)

# PROMPT_TEMPLATE_ENCODE_I2V ("dit-llm-encode-i2v"). The reference declares it (crop_start 36,
# copied from the text-only image template) but its encoder refuses single-frame I2V; we
# measure the crop like every other template.
IMAGE_I2V_TEMPLATE_TEXT = (
    "<|start_header_id|>system<|end_header_id|>\n\n<image>\nDescribe the image by detailing the "
    "color, shape, size, texture, quantity, text, spatial relationships of the objects and background:<|eot_id|>"
    "<|start_header_id|>user<|end_header_id|>\n\n{}<|eot_id|>"
    "<|start_header_id|>assistant<|end_header_id|>\n\n"
)

# The crop_start values the reference hard-codes for the Llama-3 tokenizer; we measure the
# crop instead, and these are kept to check that measurement against.
REFERENCE_CROP = {"video": 95, "image": 36}
REFERENCE_I2V_CROP = {"video-i2v": 103, "image-i2v": 36}  # in tokens, <image> counted once


@dataclass(frozen=True)
class ImageSlots:
    """The reference's image bookkeeping values for its I2V templates (Llama-3 tokenizer, 576
    CLIP ViT-L/14-336 patches). We derive each from the tokens and the vision tower instead
    (the <image> position, the patch count, the "\n\n" id); these document and check that."""

    image_emb_start: int = 5
    image_emb_end: int = 581
    image_emb_len: int = 576
    double_return_token_id: int = 271
    # Tokens before the last "\n\n" that the text crop drops (<|eot_id|> + assistant header).
    assistant_tokens: int = 4


REFERENCE_IMAGE_SLOTS = ImageSlots()

# SPEC.md 5.3: the reference's negative prompt when true CFG is on and none is given.
DEFAULT_NEGATIVE_PROMPT = (
    "Aerial view, aerial view, overexposed, low quality, deformation, a poor composition, "
    "bad hands, bad teeth, bad eyes, bad limbs, distortion"
)
# SPEC_NEXT.md 2.5: HunyuanVideo-I2V's NEGATIVE_PROMPT_I2V (its uncond branch also sees a black image).
DEFAULT_NEGATIVE_PROMPT_I2V = "deformation, a poor composition and deformed video, bad teeth, bad eyes, bad limbs"


@dataclass(frozen=True)
class PromptTemplate:
    """A template with exactly one `{}` where the (stripped) prompt goes.

    Only `{}` is special: other braces are literal text (the reference uses str.format, which
    gives the same string for its templates, which contain no other braces).
    """

    name: str
    text: str

    def __post_init__(self) -> None:
        count = self.text.count(PLACEHOLDER)
        if count != 1:
            raise InvalidInputError(
                f"template {self.name!r}: must contain the placeholder '{{}}' exactly once (where "
                f"the prompt goes); found it {count} times. Example: "
                "'<|start_header_id|>user<|end_header_id|>\\n\\n{}<|eot_id|>'.")

    @property
    def prefix(self) -> str:
        """The text before the prompt: its hidden states are cropped away."""
        return self.text.split(PLACEHOLDER, 1)[0]

    @property
    def suffix(self) -> str:
        return self.text.split(PLACEHOLDER, 1)[1]

    def render(self, prompt: str) -> str:
        return self.prefix + prompt.strip() + self.suffix

    @property
    def has_image(self) -> bool:
        """An I2V template: its prefix holds the <image> placeholder."""
        return IMAGE_TOKEN in self.prefix


VIDEO_TEMPLATE = PromptTemplate("video", VIDEO_TEMPLATE_TEXT)
IMAGE_TEMPLATE = PromptTemplate("image", IMAGE_TEMPLATE_TEXT)
VIDEO_I2V_TEMPLATE = PromptTemplate("video-i2v", VIDEO_I2V_TEMPLATE_TEXT)
IMAGE_I2V_TEMPLATE = PromptTemplate("image-i2v", IMAGE_I2V_TEMPLATE_TEXT)
BUILTIN_TEMPLATES = {"video": VIDEO_TEMPLATE, "image": IMAGE_TEMPLATE,
                     "video-i2v": VIDEO_I2V_TEMPLATE, "image-i2v": IMAGE_I2V_TEMPLATE}
_I2V_OF = {"video": VIDEO_I2V_TEMPLATE, "image": IMAGE_I2V_TEMPLATE}


def resolve_template(template: str | PromptTemplate) -> PromptTemplate:
    """'video', 'image', a PromptTemplate, or a custom template text containing '{}'."""
    if isinstance(template, PromptTemplate):
        return template
    if not isinstance(template, str):
        raise InvalidInputError(
            f"template: expected 'video', 'image' or a text containing '{{}}', got a "
            f"{type(template).__name__}.")
    if template in BUILTIN_TEMPLATES:
        return BUILTIN_TEMPLATES[template]
    if PLACEHOLDER not in template:
        raise InvalidInputError(
            f"template: {template[:60]!r} is neither 'video' nor 'image' nor a custom template "
            "(a custom template must contain '{}' where the prompt goes).")
    return PromptTemplate("custom", template)


def image_template(template: PromptTemplate) -> PromptTemplate:
    """The template an encode with an image uses: 'video' and 'image' become their I2V
    versions; an I2V or custom template must hold <image> once, in its prefix."""
    if template.name in _I2V_OF and template.text == BUILTIN_TEMPLATES[template.name].text:
        return _I2V_OF[template.name]
    count = template.text.count(IMAGE_TOKEN)
    if count != 1 or not template.has_image:
        raise InvalidInputError(
            f"template {template.name!r}: an encode with an image needs a template holding "
            f"{IMAGE_TOKEN!r} exactly once, before the prompt's '{{}}' (found it {count} times"
            f"{'' if count != 1 else ', after the prompt'}); use 'video' (the reference's "
            "'dit-llm-encode-video-i2v') or 'video-i2v'.")
    return template


def template_for_frames(frames: int) -> PromptTemplate:
    """The reference's choice: the image template for a single frame, else the video one."""
    return IMAGE_TEMPLATE if frames == 1 else VIDEO_TEMPLATE
