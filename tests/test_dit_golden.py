"""The DiT reproduces the official reference implementation (shared/golden, float32, CPU)."""
from __future__ import annotations

import pytest
import torch

from conftest import golden_json, golden_tensors
from hyvideo_core.model.rope import rope_tables

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


@pytest.mark.parametrize("name", CASES)
def test_rope_tables_of_dit_cases(golden_dit, name):
    case = golden_tensors("dit", "cases", f"{name}.safetensors")
    cos, sin = rope_tables(golden_dit.grid(case["x"].shape), golden_dit.config.rope_dims, 256)
    torch.testing.assert_close(cos, case["freqs_cos"], atol=1e-5, rtol=0)
    torch.testing.assert_close(sin, case["freqs_sin"], atol=1e-5, rtol=0)


@pytest.mark.parametrize("case", golden_json("rope", "rope_cases.json"), ids=lambda c: c["name"])
def test_rope_cases(case):
    expected = golden_tensors("rope", case["file"])
    cos, sin = rope_tables(tuple(case["rope_grid_thw"]), tuple(case["rope_dim_list"]), case["theta"])
    torch.testing.assert_close(cos, expected["freqs_cos"], atol=1e-5, rtol=0)
    torch.testing.assert_close(sin, expected["freqs_sin"], atol=1e-5, rtol=0)


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
