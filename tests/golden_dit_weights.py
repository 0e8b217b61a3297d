"""The golden tiny DiT's weights, regenerated rather than tracked (the file is 2.5 MB).

shared/golden/README.md says how the reference made them: its constructor ran after
torch.manual_seed(1001), then a generator seeded 1002 replaced the zero- and one-initialised
tensors in sorted-name order (the lists and constants are in dit/config.json under "init").
Replaying the constructor's random draws in its order (default Linear init, the timestep MLPs'
N(0, 0.02) weights, the patch embedding's xavier-uniform weight) reproduces the reference file
bit for bit; DIT_WEIGHTS_SHA256 pins that, and test_golden_weights.py compares against the
shared original when it is there.
"""
from __future__ import annotations

import hashlib
import math
import os
import tempfile
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

DIT_WEIGHTS_SHA256 = "6644ba0a596876d24c9185ad2fa4a58ad5ba59d930c7ca682c6d6b7de86fbf64"


def dit_weights(config: dict) -> dict[str, torch.Tensor]:
    """The golden DiT's state dict (official names, float32) from its config.json."""
    init = config["init"]
    state = _constructed(config, seed=init["torch_manual_seed_before_construction"])
    generator = torch.Generator().manual_seed(init["rerandomize_generator_seed"])
    zero_weights, zero_vectors = set(init["rerandomized_zero_weights"]), set(init["rerandomized_zero_vectors"])
    unit_scales = set(init["rerandomized_unit_norm_scales"])
    for name in sorted(state):
        shape = state[name].shape
        if name in zero_weights:
            gain = init["final_linear_gain"] if name == "final_layer.linear.weight" else init["zero_weight_gain"]
            state[name] = torch.randn(shape, generator=generator) * gain / math.sqrt(shape[1])
        elif name in zero_vectors:
            state[name] = torch.randn(shape, generator=generator) * init["zero_vector_std"]
        elif name in unit_scales:
            state[name] = 1 + torch.randn(shape, generator=generator) * init["norm_scale_std"]
    return state


def state_digest(state: dict[str, torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for name in sorted(state):
        digest.update(name.encode())
        digest.update(state[name].contiguous().numpy().tobytes())
    return digest.hexdigest()


def dit_weights_path(config: dict) -> Path:
    """A safetensors file of the golden weights, written once per machine (atomically)."""
    path = Path(tempfile.gettempdir()) / "hyvideo_test_golden" / f"dit-{DIT_WEIGHTS_SHA256[:16]}.safetensors"
    if path.exists():
        return path
    state = dit_weights(config)
    found = state_digest(state)
    if found != DIT_WEIGHTS_SHA256:
        raise AssertionError(f"regenerated golden DiT weights have digest {found}, expected {DIT_WEIGHTS_SHA256}")
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(f".{os.getpid()}.partial")
    save_file(state, str(partial))
    os.replace(partial, path)
    return path


def _constructed(config: dict, seed: int) -> dict[str, torch.Tensor]:
    """The reference constructor's parameters: same modules, same order, so the same draws."""
    hidden, mlp = config["hidden_size"], int(config["hidden_size"] * config["mlp_width_ratio"])
    head = hidden // config["heads_num"]
    text, pooled = config["args"]["text_states_dim"], config["args"]["text_states_dim_2"]
    p = config["patch_size"]
    out_features = p[0] * p[1] * p[2] * config["out_channels"]
    state: dict[str, torch.Tensor] = {}

    def linear(name: str, fan_in: int, fan_out: int) -> None:
        layer = nn.Linear(fan_in, fan_out)
        state[f"{name}.weight"], state[f"{name}.bias"] = layer.weight.data, layer.bias.data

    def timestep_embedder(name: str) -> None:
        linear(f"{name}.mlp.0", config["timestep_frequency_embedding_size"], hidden)
        linear(f"{name}.mlp.2", hidden, hidden)
        for index in (0, 2):
            nn.init.normal_(state[f"{name}.mlp.{index}.weight"], std=0.02)

    def ones(name: str, size: int) -> None:
        state[name] = torch.ones(size)

    torch.manual_seed(seed)
    patch = nn.Conv3d(config["in_channels"], hidden, p, stride=p)
    nn.init.xavier_uniform_(patch.weight.data.view(hidden, -1))
    nn.init.zeros_(patch.bias.data)
    state["img_in.proj.weight"], state["img_in.proj.bias"] = patch.weight.data, patch.bias.data

    linear("txt_in.input_embedder", text, hidden)
    timestep_embedder("txt_in.t_embedder")
    linear("txt_in.c_embedder.linear_1", text, hidden)
    linear("txt_in.c_embedder.linear_2", hidden, hidden)
    for b in range(config["token_refiner_depth"]):
        block = f"txt_in.individual_token_refiner.blocks.{b}"
        refiner_mlp = int(hidden * config["token_refiner_mlp_width_ratio"])
        ones(f"{block}.norm1.weight", hidden)
        state[f"{block}.norm1.bias"] = torch.zeros(hidden)
        linear(f"{block}.self_attn_qkv", hidden, 3 * hidden)
        linear(f"{block}.self_attn_proj", hidden, hidden)
        ones(f"{block}.norm2.weight", hidden)
        state[f"{block}.norm2.bias"] = torch.zeros(hidden)
        linear(f"{block}.mlp.fc1", hidden, refiner_mlp)
        linear(f"{block}.mlp.fc2", refiner_mlp, hidden)
        linear(f"{block}.adaLN_modulation.1", hidden, 2 * hidden)

    timestep_embedder("time_in")
    linear("vector_in.in_layer", pooled, hidden)
    linear("vector_in.out_layer", hidden, hidden)
    if config["guidance_embed"]:
        timestep_embedder("guidance_in")

    for b in range(config["mm_double_blocks_depth"]):
        for stream in ("img", "txt"):
            prefix = f"double_blocks.{b}.{stream}"
            linear(f"{prefix}_mod.linear", hidden, 6 * hidden)
            linear(f"{prefix}_attn_qkv", hidden, 3 * hidden)
            ones(f"{prefix}_attn_q_norm.weight", head)
            ones(f"{prefix}_attn_k_norm.weight", head)
            linear(f"{prefix}_attn_proj", hidden, hidden)
            linear(f"{prefix}_mlp.fc1", hidden, mlp)
            linear(f"{prefix}_mlp.fc2", mlp, hidden)
    for b in range(config["mm_single_blocks_depth"]):
        prefix = f"single_blocks.{b}"
        linear(f"{prefix}.linear1", hidden, 3 * hidden + mlp)
        linear(f"{prefix}.linear2", hidden + mlp, hidden)
        ones(f"{prefix}.q_norm.weight", head)
        ones(f"{prefix}.k_norm.weight", head)
        linear(f"{prefix}.modulation.linear", hidden, 3 * hidden)

    linear("final_layer.linear", hidden, out_features)
    linear("final_layer.adaLN_modulation.1", hidden, 2 * hidden)
    return state
