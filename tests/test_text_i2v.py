"""HunyuanVideo-I2V image + text encoding (SPEC_NEXT.md 2.6) on a tiny LLaVA: our encoder equals
transformers' LlavaForConditionalGeneration run the reference's way, from the Hugging Face llava
folder and from ComfyUI's single files (llava_llama3_vision.safetensors + the Llama file)."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from hyvideo_core.errors import CheckpointError, InvalidInputError, UnknownFormatError
from hyvideo_core.text.embeds import TextEmbeds
from hyvideo_core.text.templates import (IMAGE_TOKEN, REFERENCE_I2V_CROP, REFERENCE_IMAGE_SLOTS, VIDEO_I2V_TEMPLATE,
                                         VIDEO_TEMPLATE, image_template, resolve_template)
from test_text_tiny import LLAMA_OVERRIDES, by_hand_clip, folder_encoder, load_tokenizer, text_files  # noqa: F401

PROMPT = "A cat walks on the grass, realistic style."
NEGATIVE = "deformation, a poor composition and deformed video"
# The tiny tower: 28 px images in 7 px patches -> a 4 x 4 grid, 16 image tokens (the real one: 336/14 -> 576).
IMAGE_SIZE, PATCH = 28, 7
PATCHES = (IMAGE_SIZE // PATCH) ** 2
# Llama-3's pre-tokenizer split, so "\n\n" is one token as in the real tokenizer (id 271 there).
LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                r"|\s*[\r\n]+|\s+(?!\S)|\s+")
SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>",
            "<pad>", IMAGE_TOKEN]

# Tencent/HunyuanVideo-I2V hyvideo/constants.py PROMPT_TEMPLATE_ENCODE_VIDEO_I2V, written out in one piece.
REFERENCE_VIDEO_I2V = (
    "<|start_header_id|>system<|end_header_id|>\n\n<image>\nDescribe the video by detailing the following aspects "
    "according to the reference image: 1. The main content and theme of the video.2. The color, shape, size, "
    "texture, quantity, text, and spatial relationships of the objects.3. Actions, events, behaviors temporal "
    "relationships, physical movement changes of the objects.4. background environment, light, style and "
    "atmosphere.5. camera angles, movements, and transitions used in the video:<|eot_id|>\n\n"
    "<|start_header_id|>user<|end_header_id|>\n\n{}<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n")


def save_i2v_tokenizer(folder: Path) -> Path:
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3_SPLIT), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    corpus = [REFERENCE_VIDEO_I2V, PROMPT, NEGATIVE, "a red fox jumps over a lazy dog at sunset"] * 4
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=SPECIALS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus, trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="<|begin_of_text|> $A", special_tokens=[(s, tok.token_to_id(s)) for s in SPECIALS])
    PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|begin_of_text|>", eos_token="<|end_of_text|>",
                            pad_token="<pad>").save_pretrained(str(folder))
    return folder


def tiny_llava(image_id: int):
    from transformers import CLIPVisionConfig, LlavaConfig, LlavaForConditionalGeneration
    from hyvideo_core.demo import tiny_llama_config

    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=48, num_hidden_layers=3, num_attention_heads=2,
                              image_size=IMAGE_SIZE, patch_size=PATCH, hidden_act="quick_gelu", projection_dim=16)
    cfg = LlavaConfig(vision_config=vision.to_dict(), text_config=tiny_llama_config().to_dict(),
                      image_token_index=image_id, vision_feature_layer=-2, vision_feature_select_strategy="default",
                      projector_hidden_act="gelu", image_seq_length=PATCHES)
    torch.manual_seed(1)
    model = LlavaForConditionalGeneration(cfg).eval()
    gen = torch.Generator().manual_seed(2)
    with torch.no_grad():  # weights large enough that every layer and every patch matters
        for name, param in model.named_parameters():
            if param.ndim >= 2:
                param.copy_(torch.randn(param.shape, generator=gen) / param[0].numel() ** 0.5)
            elif "norm" in name:
                param.copy_(1 + 0.1 * torch.randn(param.shape, generator=gen))
            else:
                param.copy_(0.1 * torch.randn(param.shape, generator=gen))
    return model


def xtuner_state(model) -> dict[str, torch.Tensor]:
    """The llava-llama-3-8b-v1_1-transformers key layout (transformers 4.x LLaVA)."""
    out = {}
    for key, value in model.state_dict().items():
        key = key.removeprefix("model.")
        if key.startswith("language_model."):
            key = "language_model.model." + key.removeprefix("language_model.")
        elif key.startswith("vision_tower.") and not key.startswith("vision_tower.vision_model."):
            key = "vision_tower.vision_model." + key.removeprefix("vision_tower.")
        elif key == "lm_head.weight":
            key = "language_model.lm_head.weight"
        if not key.endswith("position_ids"):
            out[key] = value.detach().clone().contiguous()
    return out


def comfy_vision_state(state) -> dict[str, torch.Tensor]:
    """ComfyUI's clip_vision/llava_llama3_vision.safetensors: vision_model.* + multi_modal_projector.*."""
    out = {k.removeprefix("vision_tower."): v for k, v in state.items()
           if k.startswith(("vision_tower.", "multi_modal_projector."))}
    out["visual_projection.weight"] = torch.randn(16, 32)  # ComfyUI's model has one; unused
    return out


_BUILT: dict = {}


@pytest.fixture(scope="module")
def llava_files(text_files, tmp_path_factory):
    if "files" in _BUILT:
        return _BUILT["files"]
    from hyvideo_core.text.vision import clip_processor

    root = tmp_path_factory.mktemp("llava")
    tok_folder = save_i2v_tokenizer(root / "llama_tokenizer")
    tok = load_tokenizer(tok_folder)
    image_id = tok.convert_tokens_to_ids(IMAGE_TOKEN)
    model = tiny_llava(image_id)
    state = xtuner_state(model)
    folder = root / "text_encoder_i2v"
    folder.mkdir()
    save_file(state, str(folder / "model.safetensors"))
    config = model.config.to_dict()
    (folder / "config.json").write_text(json.dumps(config))
    save_i2v_tokenizer(folder)
    clip_processor(IMAGE_SIZE).save_pretrained(str(folder))
    comfy_llm = {k.removeprefix("language_model."): v for k, v in state.items()
                 if k.startswith("language_model.model.")}
    save_file(comfy_llm, str(root / "llava_llama3_fp16.safetensors"))
    save_file(comfy_vision_state(state), str(root / "llava_llama3_vision.safetensors"))
    _BUILT["files"] = {"root": root, "model": model, "tokenizer": tok_folder, "folder": folder,
                       "image_id": image_id, "comfy_llm": root / "llava_llama3_fp16.safetensors",
                       "comfy_vision": root / "llava_llama3_vision.safetensors", **{
                           k: text_files[k] for k in ("clip", "clip_folder", "clip_tokenizer")}}
    return _BUILT["files"]


@pytest.fixture(scope="module")
def i2v_encoder(llava_files):
    from hyvideo_core.text.loader import load_text_encoder
    return load_text_encoder(llava_files["folder"], llava_files["clip_folder"], dtype=torch.float32, device="cpu",
                             vision=llava_files["folder"])


@pytest.fixture(scope="module")
def comfy_encoder(llava_files):
    from hyvideo_core.text.loader import load_text_encoder
    return load_text_encoder(llava_files["comfy_llm"], llava_files["clip_folder"], tokenizer=llava_files["tokenizer"],
                             dtype=torch.float32, device="cpu", llm_config=LLAMA_OVERRIDES,
                             vision=llava_files["comfy_vision"], vision_config={"num_attention_heads": 2})


def make_image(seed: int = 0, height: int = 40, width: int = 60):
    from PIL import Image
    gen = torch.Generator().manual_seed(seed)
    pixels = (torch.rand(height, width, 3, generator=gen) * 255).round().to(torch.uint8)
    return Image.fromarray(pixels.numpy(), mode="RGB")


def by_hand_i2v(files, prompts, images, text_len=256, k=2, layer=-3):
    """The reference's way (HunyuanVideo-I2V text_encoder.encode), written out on transformers'
    LlavaForConditionalGeneration: tokenize template.format(prompt) to crop + text_len, run with
    the CLIPImageProcessor pixels and output_hidden_states, take hidden_states[-3], the text from
    crop - 1 + n to the 4 tokens before the last "\\n\\n" (or the sequence end if only 3 are found)
    and on, the image hidden[start:start + n][::k], and output [image || text]."""
    from hyvideo_core.text.vision import pil_processor_class

    tok = load_tokenizer(files["tokenizer"])
    template = REFERENCE_VIDEO_I2V
    crop = len(tok(template.split("{}")[0])["input_ids"])
    batch = tok([template.format(p.strip()) for p in prompts], max_length=crop + text_len, padding="max_length",
                truncation=True, return_tensors="pt")
    pixels = pil_processor_class().from_pretrained(str(files["folder"]))(images, return_tensors="pt")["pixel_values"]
    image_id, n = files["image_id"], PATCHES
    start = batch.input_ids[0].tolist().index(image_id)
    # transformers >= 4.47 takes the <image> token repeated n times (the processor's job there);
    # the 4.x model the reference ran expanded the single token itself, to the same sequence.
    ids = torch.cat([batch.input_ids[:, :start], torch.full((len(prompts), n), image_id),
                     batch.input_ids[:, start + 1:]], dim=1)
    mask = torch.cat([batch.attention_mask[:, :start], torch.ones(len(prompts), n, dtype=torch.int64),
                      batch.attention_mask[:, start + 1:]], dim=1)
    with torch.no_grad():
        hidden = files["model"](input_ids=ids, attention_mask=mask, pixel_values=pixels,
                                output_hidden_states=True).hidden_states[layer]
    double_return = tok("\n\n", add_special_tokens=False)["input_ids"]
    assert len(double_return) == 1
    states, masks = [], []
    for i in range(len(prompts)):
        found = (batch.input_ids[i] == double_return[0]).nonzero().flatten().tolist()
        last = found[-1] if len(found) > 3 else batch.input_ids.shape[1]
        text = torch.cat([hidden[i, crop - 1 + n:last - 1 + n - 4], hidden[i, last - 1 + n:]])
        text_mask = torch.cat([batch.attention_mask[i, crop:last - 4], batch.attention_mask[i, last:]])
        image = hidden[i, start:start + n][::k]
        states.append(torch.cat([image, text]))
        masks.append(torch.cat([torch.ones(image.shape[0], dtype=torch.int64), text_mask]))
    return torch.stack(states), torch.stack(masks), crop


def assert_matches(embeds, states, mask):
    assert embeds.text_states.shape == states.shape
    assert torch.equal(embeds.text_mask, mask)
    torch.testing.assert_close(embeds.text_states, states, rtol=1e-5, atol=1e-5)


def test_i2v_template_is_the_reference_one(llava_files):
    assert VIDEO_I2V_TEMPLATE.text == REFERENCE_VIDEO_I2V
    assert image_template(VIDEO_TEMPLATE) is VIDEO_I2V_TEMPLATE and VIDEO_I2V_TEMPLATE.has_image
    assert image_template(resolve_template("video-i2v")) is VIDEO_I2V_TEMPLATE
    assert REFERENCE_I2V_CROP["video-i2v"] == 103
    slots = REFERENCE_IMAGE_SLOTS
    assert (slots.image_emb_start, slots.image_emb_end, slots.image_emb_len, slots.double_return_token_id) == \
        (5, 581, 576, 271)
    with pytest.raises(InvalidInputError, match="<image>"):
        image_template(resolve_template("Q: {} A:"))
    # The Llama-3 layout puts <image> at position 5 (BOS, header, 'system', header, '\n\n'), as in the tiny one.
    tok = load_tokenizer(llava_files["tokenizer"])
    ids = tok(VIDEO_I2V_TEMPLATE.prefix)["input_ids"]
    assert ids.index(llava_files["image_id"]) == slots.image_emb_start


def test_folder_encoder_matches_llava_reference(llava_files, i2v_encoder):
    image = make_image()
    embeds = i2v_encoder.encode(PROMPT, negative_prompt=NEGATIVE, image=image)
    states, mask, _ = by_hand_i2v(llava_files, [PROMPT], [image])
    assert_matches(embeds.positive, states, mask)
    assert embeds.positive.image_tokens == math.ceil(PATCHES / 2)
    assert states.shape[1] == math.ceil(PATCHES / 2) + 256 - 4
    # The negative branch sees a black image of the same size.
    from PIL import Image
    black = Image.new("RGB", image.size, (0, 0, 0))
    neg_states, neg_mask, _ = by_hand_i2v(llava_files, [NEGATIVE], [black])
    assert_matches(embeds.negative, neg_states, neg_mask)
    torch.testing.assert_close(embeds.positive.pooled, by_hand_clip(llava_files, [PROMPT]), rtol=1e-5, atol=1e-5)
    # The image matters, and a tensor [3, H, W] in 0..1 is the same image.
    other = i2v_encoder.encode(PROMPT, image=make_image(seed=5))
    assert (other.positive.text_states - embeds.positive.text_states).abs().max() > 1e-3
    tensor = torch.from_numpy(__import__("numpy").array(image)).permute(2, 0, 1).float() / 255
    again = i2v_encoder.encode(PROMPT, image=tensor)
    torch.testing.assert_close(again.positive.text_states, embeds.positive.text_states, rtol=0, atol=0)


def test_comfyui_single_files_match_the_folder(llava_files, i2v_encoder, comfy_encoder):
    image = make_image(seed=3)
    ours = comfy_encoder.encode(PROMPT, negative_prompt="", image=image)
    folder = i2v_encoder.encode(PROMPT, negative_prompt="", image=image)
    for role in ("positive", "negative"):
        a, b = getattr(ours, role), getattr(folder, role)
        assert torch.equal(a.text_mask, b.text_mask)
        torch.testing.assert_close(a.text_states, b.text_states, rtol=1e-5, atol=1e-5)
    states, mask, _ = by_hand_i2v(llava_files, [PROMPT], [image])
    assert_matches(ours.positive, states, mask)
    assert comfy_encoder.vision.patches == PATCHES and comfy_encoder.vision.image_token_id is None


@pytest.mark.parametrize("k", [1, 2, 4])
def test_interleave_keeps_every_kth_image_token(llava_files, i2v_encoder, k):
    image = make_image(seed=1)
    embeds = i2v_encoder.encode(PROMPT, image=image, image_embed_interleave=k).positive
    states, mask, _ = by_hand_i2v(llava_files, [PROMPT], [image], k=k)
    assert_matches(embeds, states, mask)
    full = i2v_encoder.encode(PROMPT, image=image, image_embed_interleave=1).positive
    n = len(range(0, PATCHES, k))
    assert embeds.image_tokens == n
    torch.testing.assert_close(embeds.text_states[:, :n], full.text_states[:, :PATCHES:k], rtol=0, atol=0)
    torch.testing.assert_close(embeds.text_states[:, n:], full.text_states[:, PATCHES:], rtol=0, atol=0)


def test_truncated_prompt_uses_the_reference_fallback(llava_files, i2v_encoder):
    long = " ".join([PROMPT] * 6)
    image = make_image(seed=2)
    embeds = i2v_encoder.encode(long, image=image, text_len=12)
    states, mask, _ = by_hand_i2v(llava_files, [long], [image], text_len=12)
    assert_matches(embeds.positive, states, mask)
    pos = embeds.positive
    assert pos.dropped_tokens == pos.prompt_tokens - (12 - 4) and bool(pos.text_mask.bool().all())
    assert embeds.notes


def test_embeds_round_trip_keeps_the_image_tokens(i2v_encoder, tmp_path):
    embeds = i2v_encoder.encode(PROMPT, negative_prompt=NEGATIVE, image=make_image())
    loaded = TextEmbeds.load(embeds.save(tmp_path / "i2v.safetensors"))
    for role in ("positive", "negative"):
        a, b = getattr(embeds, role), getattr(loaded, role)
        assert torch.equal(a.text_states, b.text_states) and torch.equal(a.text_mask, b.text_mask)
        assert a.info() == b.info() and b.image_tokens == math.ceil(PATCHES / 2)
    assert loaded.positive.template == "video-i2v"


def test_cache_tells_images_apart(i2v_encoder):
    i2v_encoder.cache.clear()
    first = i2v_encoder.encode(PROMPT, image=make_image(seed=7))
    assert i2v_encoder.encode(PROMPT, image=make_image(seed=7)).positive is first.positive
    assert i2v_encoder.encode(PROMPT, image=make_image(seed=8)).positive is not first.positive
    assert i2v_encoder.encode(PROMPT, image=make_image(seed=7), image_embed_interleave=4).positive \
        is not first.positive


def test_memory_estimate_counts_the_vision_tower(i2v_encoder, folder_encoder):
    from hyvideo_core.text.memory import WORKSPACE, encode_device_bytes, vision_device_bytes
    from hyvideo_core.runtime.placement import module_bytes
    vision = vision_device_bytes(i2v_encoder.vision, 2)
    assert vision > module_bytes(i2v_encoder.vision.modules) > 0
    with_image = encode_device_bytes(i2v_encoder, image=True)
    assert with_image >= vision + WORKSPACE
    assert with_image > encode_device_bytes(i2v_encoder, image=False)  # the longer Llama sequence
    assert encode_device_bytes(i2v_encoder) == with_image
    with pytest.raises(InvalidInputError, match="vision tower"):
        encode_device_bytes(folder_encoder, image=True)


def test_bad_inputs_are_named(i2v_encoder, folder_encoder):
    image = make_image()
    with pytest.raises(InvalidInputError, match=r"image: .*no vision tower.*vision=.*llava_llama3_vision"):
        folder_encoder.encode(PROMPT, image=image)
    for bad, match in [(torch.rand(40, 60, 3), r"\[3, H, W\].*movedim"), (torch.rand(40, 60), r"\[3, H, W\]"),
                       (torch.rand(3, 8, 8) * 255, "0..1"), ((torch.rand(3, 8, 8) * 255).to(torch.uint8), "float"),
                       ("cat.png", "PIL image")]:
        with pytest.raises(InvalidInputError, match=match):
            i2v_encoder.encode(PROMPT, image=bad)
    for k in (0, "2", True):
        with pytest.raises(InvalidInputError, match="image_embed_interleave"):
            i2v_encoder.encode(PROMPT, image=image, image_embed_interleave=k)
    with pytest.raises(InvalidInputError, match="pass `image=`"):
        i2v_encoder.encode(PROMPT, template="video-i2v")
    with pytest.raises(InvalidInputError, match="placeholder"):
        i2v_encoder.encode(f"a cat {IMAGE_TOKEN}", image=image)


def test_bad_vision_files_are_refused(llava_files, text_files, tmp_path):
    from safetensors.torch import load_file
    from hyvideo_core.text.loader import load_text_encoder
    from hyvideo_core.text.vision_loader import load_vision_tower

    state = load_file(str(llava_files["comfy_vision"]))
    extra = tmp_path / "extra.safetensors"
    save_file({**state, "vision_model.encoder.layers.0.mlp.fc3.weight": torch.zeros(2)}, str(extra))
    with pytest.raises(CheckpointError, match=r"extra\.safetensors.*fc3"):
        load_vision_tower(extra, torch.float32, "cpu", {"num_attention_heads": 2})
    stray = tmp_path / "stray.safetensors"
    save_file({**state, "image_newline": torch.zeros(2)}, str(stray))
    with pytest.raises(CheckpointError, match=r"stray\.safetensors.*image_newline"):
        load_vision_tower(stray, torch.float32, "cpu", {"num_attention_heads": 2})
    plain = tmp_path / "clip_vision_l.safetensors"
    save_file({k: v for k, v in state.items() if not k.startswith("multi_modal_projector.")}, str(plain))
    with pytest.raises(CheckpointError, match=r"clip_vision_l\.safetensors.*projector"):
        load_vision_tower(plain, torch.float32, "cpu")
    with pytest.raises(UnknownFormatError, match="not a CLIP vision tower"):
        load_vision_tower(llava_files["comfy_llm"], torch.float32, "cpu")
    # A tokenizer without <image> cannot place the image: refused at load time.
    with pytest.raises(CheckpointError, match="<image>"):
        load_text_encoder(llava_files["comfy_llm"], llava_files["clip_folder"], tokenizer=text_files["llama_tokenizer"],
                          dtype=torch.float32, device="cpu", llm_config=LLAMA_OVERRIDES,
                          vision=llava_files["comfy_vision"], vision_config={"num_attention_heads": 2})
