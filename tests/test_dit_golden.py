"""The DiT reproduces the official reference implementation (shared/golden, float32, CPU)."""
from __future__ import annotations

import pytest
import torch

from conftest import golden_json, golden_tensors
from hyvideo_core.model.rope import rope_freqs

CASES = [c["name"] for c in golden_json("dit", "cases.json")]


def _run(model, case):
    with torch.no_grad():
        return model(case["x"], case["t"], case["text_states"], case["text_mask"], case["text_states_2"], case["guidance"])


@pytest.mark.parametrize("name", CASES)
def test_output_matches_reference(golden_dit, name):
    case = golden_tensors("dit", "cases", f"{name}.safetensors")
    out = _run(golden_dit, case)
    assert out.shape == case["output"].shape
    torch.testing.assert_close(out, case["output"], atol=1e-4, rtol=1e-4)


def test_intermediates_match_reference(golden_dit):
    case = golden_tensors("dit", "cases", "b2_t3_h8_w12_pad.safetensors")
    model, valid = golden_dit, case["text_mask"].bool()
    with torch.no_grad():
        e = model.embed(case["x"], case["t"], case["text_states"], case["text_mask"], case["text_states_2"], case["guidance"])
        n_double = len(model.double_blocks)
        img, txt = model.run_blocks(e.img, e.txt, e.ctx, 0, n_double)
        final_img, _ = model.run_blocks(img, txt, e.ctx, n_double)
    close = dict(atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(e.ctx.vec, case["intermediate.vec"], **close)
    torch.testing.assert_close(e.txt[valid], case["intermediate.refined_txt"][valid], **close)
    torch.testing.assert_close(img, case["intermediate.after_double_img"], **close)
    torch.testing.assert_close(txt[valid], case["intermediate.after_double_txt"][valid], **close)
    torch.testing.assert_close(final_img, case["intermediate.before_final_img"], **close)


def assert_rotation_matches(freqs: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> None:
    """The reference's [N, head_dim] cos/sin tables repeat each angle for the two channels of an
    interleaved pair; rope_freqs holds each angle once, as a complex number."""
    assert torch.equal(cos[:, 0::2], cos[:, 1::2]) and torch.equal(sin[:, 0::2], sin[:, 1::2])
    assert freqs.shape == (cos.shape[0], 1, cos.shape[1] // 2) and freqs.dtype == torch.complex64
    torch.testing.assert_close(freqs[:, 0].real, cos[:, 0::2], atol=1e-5, rtol=0)
    torch.testing.assert_close(freqs[:, 0].imag, sin[:, 0::2], atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", CASES)
def test_rope_of_dit_cases(golden_dit, name):
    case = golden_tensors("dit", "cases", f"{name}.safetensors")
    freqs = rope_freqs(golden_dit.grid(case["x"].shape), golden_dit.config.rope_dims, 256)
    assert_rotation_matches(freqs, case["freqs_cos"], case["freqs_sin"])


@pytest.mark.parametrize("case", golden_json("rope", "rope_cases.json"), ids=lambda c: c["name"])
def test_rope_cases(case):
    expected = golden_tensors("rope", case["file"])
    freqs = rope_freqs(tuple(case["rope_grid_thw"]), tuple(case["rope_dim_list"]), case["theta"])
    assert_rotation_matches(freqs, expected["freqs_cos"], expected["freqs_sin"])


def test_padding_never_reaches_the_image(golden_dit):
    case = golden_tensors("dit", "cases", "b2_t3_h8_w12_pad.safetensors")
    pad = ~case["text_mask"].bool()
    noisy = case["text_states"].clone()
    noisy[pad] = torch.randn_like(noisy[pad]) * 100
    torch.testing.assert_close(_run(golden_dit, {**case, "text_states": noisy}), _run(golden_dit, case), atol=1e-5, rtol=0)


def test_mask_matters(golden_dit):
    """Sanity: ignoring the mask changes the output, so the test above can fail."""
    case = golden_tensors("dit", "cases", "b2_t3_h8_w12_pad.safetensors")
    unmasked = _run(golden_dit, {**case, "text_mask": torch.ones_like(case["text_mask"])})
    assert (unmasked - case["output"]).abs().max() > 1e-2


def test_cut_text_equals_padded_text(golden_dit):
    """One sample with its text cut to the valid tokens gives the padded result."""
    case = golden_tensors("dit", "cases", "b2_t3_h8_w12_pad.safetensors")
    n = int(case["text_mask"][1].sum())
    single = {k: case[k][1:2] for k in ("x", "t", "text_states_2", "guidance")}
    cut = _run(golden_dit, {**single, "text_states": case["text_states"][1:2, :n], "text_mask": case["text_mask"][1:2, :n]})
    torch.testing.assert_close(cut[0], case["output"][1], atol=1e-4, rtol=1e-4)
