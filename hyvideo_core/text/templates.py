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

# The crop_start values the reference hard-codes for the Llama-3 tokenizer; we measure the
# crop instead, and these are kept to check that measurement against.
REFERENCE_CROP = {"video": 95, "image": 36}

# SPEC.md 5.3: the reference's negative prompt when true CFG is on and none is given.
DEFAULT_NEGATIVE_PROMPT = (
    "Aerial view, aerial view, overexposed, low quality, deformation, a poor composition, "
    "bad hands, bad teeth, bad eyes, bad limbs, distortion"
)


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


VIDEO_TEMPLATE = PromptTemplate("video", VIDEO_TEMPLATE_TEXT)
IMAGE_TEMPLATE = PromptTemplate("image", IMAGE_TEMPLATE_TEXT)
BUILTIN_TEMPLATES = {"video": VIDEO_TEMPLATE, "image": IMAGE_TEMPLATE}


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


def template_for_frames(frames: int) -> PromptTemplate:
    """The reference's choice: the image template for a single frame, else the video one."""
    return IMAGE_TEMPLATE if frames == 1 else VIDEO_TEMPLATE
