"""API-prompt validation as ComfyUI's execution.validate_prompt does it (v0.3.64), with its
error shapes: a top-level `error` plus `node_errors` {node_id: {errors, dependent_outputs, class_type}}.
"""
from __future__ import annotations

import inspect
import traceback
from dataclasses import dataclass, field


@dataclass
class Validation:
    outputs: list[str]                          # valid OUTPUT_NODE ids, the sinks to execute
    error: dict | None = None                   # top-level error, None when something can run
    node_errors: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.error is None


def is_link(value) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[0], str) and isinstance(value[1], int)


def types_match(received: str, expected) -> bool:
    """Link types compare as strings; "A,B" unions match when they share a type."""
    if not received != expected:
        return True
    if not isinstance(received, str) or not isinstance(expected, str):
        return False
    return bool({t.strip() for t in received.split(",")} & {t.strip() for t in expected.split(",")})


def _error(kind: str, message: str, details: str, **extra) -> dict:
    return {"type": kind, "message": message, "details": details, "extra_info": extra}


def validate_prompt(prompt: dict, mappings: dict) -> Validation:
    outputs = []
    for node_id, node in prompt.items():
        if "class_type" not in node:
            return Validation([], _error("invalid_prompt", "Cannot execute because a node is missing the "
                                         "class_type property.", f"Node ID '#{node_id}'"))
        cls = mappings.get(node["class_type"])
        if cls is None:
            return Validation([], _error("invalid_prompt", f"Cannot execute because node {node['class_type']} "
                                         "does not exist.", f"Node ID '#{node_id}'"))
        if getattr(cls, "OUTPUT_NODE", False) is True:
            outputs.append(node_id)
    if not outputs:
        return Validation([], _error("prompt_no_outputs", "Prompt has no outputs", ""))

    validated: dict[str, tuple[bool, list]] = {}
    good, failures, node_errors = [], [], {}
    for output in sorted(outputs):
        try:
            valid, reasons = _validate_node(prompt, mappings, output, validated)
        except Exception as error:  # noqa: BLE001 - reported like ComfyUI does
            valid, reasons = False, [_error("exception_during_validation", "Exception when validating node",
                                            str(error), exception_type=type(error).__name__,
                                            traceback=traceback.format_tb(error.__traceback__))]
            validated[output] = (False, reasons)
        if valid:
            good.append(output)
            continue
        failures.append(reasons)
        for node_id, (node_valid, node_reasons) in validated.items():
            if not node_valid and node_reasons:
                entry = node_errors.setdefault(node_id, {"errors": node_reasons, "dependent_outputs": [],
                                                         "class_type": prompt[node_id]["class_type"]})
                if output not in entry["dependent_outputs"]:
                    entry["dependent_outputs"].append(output)
    if not good:
        details = "\n".join(f"{r['message']}: {r['details']}" for reasons in failures for r in reasons)
        return Validation([], _error("prompt_outputs_failed_validation", "Prompt outputs failed validation",
                                     details), node_errors)
    return Validation(good, None, node_errors)


def _validate_node(prompt: dict, mappings: dict, node_id: str, validated: dict) -> tuple[bool, list]:
    if node_id in validated:
        return validated[node_id]
    node = prompt[node_id]
    cls = mappings[node["class_type"]]
    inputs = node.setdefault("inputs", {})
    sections = cls.INPUT_TYPES()
    specs = {**(sections.get("required") or {}), **(sections.get("optional") or {})}
    required = set(sections.get("required") or {})
    checked_by_node, takes_kwargs = _validate_function_inputs(cls)
    errors, valid = [], True
    for name, spec in specs.items():
        kind, options = spec[0], (spec[1] if len(spec) > 1 else {})
        if name not in inputs:
            if name in required:
                errors.append(_error("required_input_missing", "Required input is missing", name, input_name=name))
            continue
        value = inputs[name]
        if isinstance(value, list):
            problem, upstream_ok = _check_link(prompt, mappings, name, value, kind, validated,
                                               "input_types" in checked_by_node)
            if problem:
                errors.append(problem)
            valid = valid and upstream_ok
            continue
        problem = _check_constant(inputs, name, value, kind, options, name in checked_by_node or takes_kwargs)
        if problem:
            errors.append(problem)
    if checked_by_node or takes_kwargs:
        errors += _run_validate_inputs(cls, node_id, inputs, sections, checked_by_node, takes_kwargs)
    result = (valid and not errors, errors)
    validated[node_id] = result
    return result


def _validate_function_inputs(cls) -> tuple[set[str], bool]:
    function = getattr(cls, "VALIDATE_INPUTS", None)
    if function is None:
        return set(), False
    spec = inspect.getfullargspec(function)
    return set(spec.args), spec.varkw is not None


def _check_link(prompt, mappings, name, value, kind, validated, types_unchecked) -> tuple[dict | None, bool]:
    if len(value) != 2:
        return _error("bad_linked_input", "Bad linked input, must be a length-2 list of [node_id, slot_index]",
                      name, input_name=name, received_value=value), True
    source_id, slot = value
    source = prompt.get(source_id)
    if source is None:  # ComfyUI raises a KeyError here, reported as an exception during validation
        raise KeyError(f"input {name!r} links to node {source_id!r}, which is not in the prompt")
    returns = mappings[source["class_type"]].RETURN_TYPES
    received = returns[slot]
    if not types_unchecked and not types_match(received, kind):
        return _error("return_type_mismatch", "Return type mismatch between linked nodes",
                      f"{name}, received_type({received}) mismatch input_type({kind})", input_name=name,
                      received_type=received, linked_node=value), True
    try:
        upstream_ok, _ = _validate_node(prompt, mappings, source_id, validated)
    except Exception as error:  # noqa: BLE001 - reported on the upstream node, like ComfyUI
        validated[source_id] = (False, [_error("exception_during_inner_validation",
                                               "Exception when validating inner node", str(error),
                                               input_name=name, exception_type=type(error).__name__,
                                               traceback=traceback.format_tb(error.__traceback__),
                                               linked_node=value)])
        return None, False
    return None, upstream_ok


COERCE = {"INT": int, "FLOAT": float, "STRING": str, "BOOLEAN": bool}


def _check_constant(inputs, name, value, kind, options, skip_range) -> dict | None:
    if isinstance(value, dict) and "__value__" in value:
        value = inputs[name] = value["__value__"]
    if isinstance(kind, str) and kind in COERCE:
        try:
            value = inputs[name] = COERCE[kind](value)
        except Exception as error:  # noqa: BLE001 - ComfyUI reports any conversion failure
            return _error("invalid_input_type", f"Failed to convert an input value to a {kind} value",
                          f"{name}, {value}, {error}", input_name=name, received_value=value)
    if skip_range:
        return None
    if "min" in options and value < options["min"]:
        return _error("value_smaller_than_min", f"Value {value} smaller than min of {options['min']}", name,
                      input_name=name, received_value=value)
    if "max" in options and value > options["max"]:
        return _error("value_bigger_than_max", f"Value {value} bigger than max of {options['max']}", name,
                      input_name=name, received_value=value)
    if isinstance(kind, list) and value not in kind:  # ("COMBO", {"options": ...}) is not checked by ComfyUI
        listed = f"(list of length {len(kind)})" if len(kind) > 20 else str(kind)
        return _error("value_not_in_list", "Value not in list", f"{name}: '{value}' not in {listed}",
                      input_name=name, received_value=value)
    return None


def _run_validate_inputs(cls, node_id, inputs, sections, checked_by_node, takes_kwargs) -> list[dict]:
    # Like ComfyUI: only constants are known at validation time; linked inputs are absent.
    given = {k: v for k, v in inputs.items() if not is_link(v) and (k in checked_by_node or takes_kwargs)}
    for name, value in (sections.get("hidden") or {}).items():
        if value == "UNIQUE_ID" and (name in checked_by_node or takes_kwargs):
            given[name] = node_id
    if "input_types" in checked_by_node:
        given["input_types"] = {}
    result = cls.VALIDATE_INPUTS(**given)
    if result is True:
        return []
    details = "" if result is False else f" - {result}"
    return [_error("custom_validation_failed", "Custom validation failed for node", f"{name}{details}",
                   input_name=name) for name in given]
