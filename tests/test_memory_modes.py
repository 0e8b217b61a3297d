"""The host's memory setting (ComfyUI's --lowvram / --novram / --highvram) applied to our own sampler's
block swap, and the text towers / VAE handed to the host before they run (issue 15)."""
from __future__ import annotations

import pytest
import torch

from harness import load_pack
from hyvideo_core.run import LocalHost, SwapRequest, encode_prompts, swap_for_memory_mode, swaps_under, vae_visit
from node_graphs import SAMPLER, sampled, t2v_prompt, tiny_runner, ui_text

OFF, AUTO, FIXED = SwapRequest(), SwapRequest("auto"), SwapRequest("fixed", 2, 3)


@pytest.mark.parametrize("mode", ["normal", "high"])
def test_normal_and_high_keep_what_was_asked(mode):
    for request in (OFF, AUTO, FIXED):
        assert swap_for_memory_mode(request, mode, 20, 40) == (request, "")


def test_novram_swaps_every_block_unless_counts_were_fixed():
    every, note = swap_for_memory_mode(SwapRequest(prefetch=False), "none", 20, 40)
    assert (every.mode, every.double, every.single, every.offload_txt_in, every.prefetch) == ("fixed", 20, 40, True,
                                                                                             False)
    assert "--novram" in note and "fixed counts" in note
    assert swap_for_memory_mode(AUTO, "none", 20, 40)[0].double == 20
    assert swap_for_memory_mode(FIXED, "none", 20, 40) == (FIXED, "")


def test_lowvram_turns_off_into_auto():
    auto, note = swap_for_memory_mode(OFF, "low", 20, 40)
    assert auto.mode == "auto" and "--lowvram" in note
    assert swap_for_memory_mode(AUTO, "low", 20, 40) == (AUTO, "")
    assert swap_for_memory_mode(FIXED, "low", 20, 40) == (FIXED, "")


def test_unknown_mode_is_a_bug_not_a_silent_default():
    with pytest.raises(ValueError, match="memory mode"):
        swap_for_memory_mode(OFF, "tiny", 20, 40)


def test_weights_load_into_ram_when_the_mode_will_swap():
    assert not swaps_under("normal", OFF) and not swaps_under("high", OFF)
    assert swaps_under("low", OFF) and swaps_under("none", OFF) and swaps_under("normal", AUTO)


class RecordingHost(LocalHost):
    def __init__(self):
        super().__init__("cpu")
        self.placed = []

    def place_components(self, placements, nbytes, device):
        self.placed.append(([p.what for p in placements], nbytes, str(device)))


def test_the_text_towers_and_the_vae_are_handed_to_the_host_before_they_run(tmp_path):
    from hyvideo_core.demo import write_demo_models
    from hyvideo_core.text import encode_device_bytes, load_text_encoder
    from hyvideo_core.vae import load_vae
    files = write_demo_models(tmp_path)
    host = RecordingHost()
    encoder = load_text_encoder(files.llm, files.clip, dtype="fp32", device="cpu")
    encode_prompts(encoder, "a fox", None, "video", host)
    (towers, nbytes, device), = host.placed
    assert towers == ["Llama text encoder", "CLIP text encoder"] and device == "cpu"
    assert nbytes == encode_device_bytes(encoder, template="video") > 0
    vae = load_vae(files.vae, dtype="fp32")
    with vae_visit(vae, torch.device("cpu"), torch.device("cpu"), host):
        pass
    assert host.placed[-1] == (["VAE"], 0, "cpu")
    with vae_visit(vae, torch.device("cpu"), torch.device("cpu"), host):
        pass
    assert len(host.placed) == 3          # one Placement per VAE: the host sees the same one each time


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    return tiny_runner(tmp_path_factory.mktemp("models"), tmp_path_factory.mktemp("tiny_models"))


@pytest.fixture()
def host():
    host = load_pack().nodes.host.host
    yield host
    host.vram_mode = "normal"


def test_our_sampler_honours_novram_and_lowvram(setup, host):
    runner = setup[0]
    plain = runner.run(t2v_prompt(seed=21)).expect_success()
    assert "--novram" not in ui_text(plain, SAMPLER)
    host.vram_mode = "none"
    none = runner.run(t2v_prompt(seed=21, steps=3)).expect_success()
    text = ui_text(none, SAMPLER)
    assert "--novram: every block (and txt_in) is swapped" in text, text
    loaded = runner._objects[("1", "HyVideoModelLoader")].cached[1]
    config = loaded.transformer.config
    swap = loaded.placement.swap
    assert swap is not None and (swap.report.double, swap.report.single) == (config.double_blocks,
                                                                             config.single_blocks)
    host.vram_mode = "normal"
    resident = runner.run(t2v_prompt(seed=21, steps=3)).expect_success()
    assert torch.equal(sampled(none), sampled(resident))      # where the weights live never changes the math
    host.vram_mode = "low"
    low = runner.run(t2v_prompt(seed=22)).expect_success()
    assert "--lowvram: block swap 'auto'" in ui_text(low, SAMPLER)
    fixed = runner.run(t2v_prompt(seed=23, swap={"double_blocks_to_swap": 1,
                                                  "single_blocks_to_swap": 0})).expect_success()
    assert "--lowvram" not in ui_text(fixed, SAMPLER)           # the Block Swap node's counts are kept
