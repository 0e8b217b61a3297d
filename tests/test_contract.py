"""harness/contract.py finds each kind of breach of the ComfyUI V1 node contract."""
from __future__ import annotations

import pytest

from harness import contract


def make_node(required=None, optional=None, hidden=None, returns=("LATENT",), function=None, **attrs):
    def run(self, **kwargs):
        return ()

    body = {"RETURN_TYPES": returns, "FUNCTION": "run", "CATEGORY": "HunyuanVideo", "run": function or run, **attrs}
    sections = {"required": required or {}}
    if optional is not None:
        sections["optional"] = optional
    if hidden is not None:
        sections["hidden"] = hidden
    body["INPUT_TYPES"] = classmethod(lambda cls: sections)
    return type("Node", (), body)


GOOD_SEED = ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFFFFFFFFFF, "tooltip": "Noise seed."})


def test_a_correct_node_has_no_problems():
    node = make_node({"seed": GOOD_SEED,
                      "frames": ("INT", {"default": 129, "min": 1, "max": 1025, "step": 4, "tooltip": "4k+1"}),
                      "shift": ("FLOAT", {"default": 7.0, "min": 0.0, "max": 20.0, "step": 0.1, "tooltip": "s"}),
                      "solver": (["euler", "heun"], {"default": "euler", "tooltip": "Solver."}),
                      "model": ("HYVIDEO_MODEL", {"tooltip": "Model."})},
                     optional={"latent": ("LATENT", {"tooltip": "For v2v."})}, hidden={"node": "UNIQUE_ID"})
    assert contract.node_problems("Good", node) == []


@pytest.mark.parametrize("spec, expected", [
    (("INT", {"default": 0, "min": 0, "max": 10}), "tooltip missing"),
    (("INT", {"default": 0, "min": 0, "tooltip": "t"}), "numeric 'max'"),
    (("INT", {"default": 20, "min": 0, "max": 10, "tooltip": "t"}), "outside min 0 .. max 10"),
    (("INT", {"default": 128, "min": 1, "max": 1025, "step": 4, "tooltip": "t"}), "not on the widget grid"),
    (("FLOAT", {"default": 1.0, "min": 0.0, "max": 2.0, "tooltips": "t"}), "unknown option 'tooltips'"),
    ((["a", "b"], {"default": "c", "tooltip": "t"}), "combo default 'c'"),
    (("COMBO", {"options": ["a"], "default": "z", "tooltip": "t"}), "combo default 'z'"),
    (("BOOLEAN", {"default": 1, "tooltip": "t"}), "BOOLEAN default"),
    (("STRING", {"default": 3, "tooltip": "t"}), "STRING default"),
    ((["a"], {"control_after_generate": True, "tooltip": "t"}), "only supported here on INT"),
    ("INT", "spec must be a tuple"),
])
def test_input_problems_are_found(spec, expected):
    problems = contract.node_problems("Bad", make_node({"x": spec}))
    assert any(expected in p for p in problems), problems


def test_class_problems_are_found():
    def run(self, model):
        return ()
    node = make_node({"seed": GOOD_SEED}, optional={"extra": ("LATENT", {"tooltip": "t"})}, returns=["LATENT"],
                     function=run, RETURN_NAMES=("a", "b"), CATEGORY="")
    problems = "\n".join(contract.node_problems("Bad", node))
    for expected in ("RETURN_TYPES must be a tuple", "CATEGORY", "run() takes 'model'",
                     "does not accept input 'extra'", "does not accept input 'seed'"):
        assert expected in problems
    assert "FUNCTION 'nope'" in "\n".join(contract.node_problems("Bad", make_node(FUNCTION="nope")))
    assert "never runs" in "\n".join(contract.node_problems("Bad", make_node(returns=())))
    assert "hidden value" in "\n".join(contract.node_problems("Bad", make_node(hidden={"x": "NODE_ID"})))


def test_optional_inputs_need_defaults_in_the_function():
    def run(self, seed, extra):
        return ()
    node = make_node({"seed": GOOD_SEED}, optional={"extra": ("LATENT", {"tooltip": "t"})}, function=run)
    assert any("needs a default for optional/hidden input 'extra'" in p for p in contract.node_problems("N", node))


def test_widget_inputs_follow_the_frontend():
    node = make_node({"model": ("HYVIDEO_MODEL", {"tooltip": "m"}), "seed": GOOD_SEED,
                      "noise_seed": ("INT", {**GOOD_SEED[1], "control_after_generate": False}),
                      "steps": ("INT", {"default": 50, "min": 1, "max": 100, "tooltip": "s"}),
                      "text": ("STRING", {"forceInput": True, "tooltip": "t"}),
                      "solver": (["euler"], {"tooltip": "s"})},
                     optional={"variation": ("INT", {**GOOD_SEED[1], "control_after_generate": True})})
    widgets = contract.widget_inputs(node)
    assert [(w.name, w.slots) for w in widgets] == [("seed", 2), ("noise_seed", 1), ("steps", 1), ("solver", 1),
                                                    ("variation", 2)]


def test_mapping_problems_require_display_names():
    report = contract.mapping_problems({"A": make_node()}, {})
    assert report == {"A": ["A: missing from NODE_DISPLAY_NAME_MAPPINGS"]}
    assert contract.mapping_problems({"A": make_node()}, {"A": "A node"}) == {}
