"""Runs API-format prompts the way ComfyUI's PromptExecutor does, without ComfyUI.

- validation first (validation.py), with ComfyUI's error shapes;
- only valid OUTPUT_NODE sinks and their ancestors run, dependencies first;
- one node instance per node id, kept across runs while the id keeps its class;
- outputs cached by input signature (class, constants, IS_CHANGED, upstream signatures): a node
  re-runs only when something it depends on changed, and entries unused by a prompt are dropped;
- the whole run is inside torch.inference_mode(); the interrupt flag is cleared at the start
  and checked before every node; ui dicts of every node are collected (like /history outputs).
"""
from __future__ import annotations

import asyncio
import inspect
import traceback
from dataclasses import dataclass, field

import torch

from .native_types import output_type_problem
from .validation import Validation, is_link, validate_prompt


class HarnessLimitation(Exception):
    """A node uses a ComfyUI feature this harness does not emulate (lists, lazy inputs, expansion)."""


@dataclass
class RunResult:
    status: str                                   # success | error | interrupted | invalid
    outputs: dict = field(default_factory=dict)   # node id -> ui dict (what /history shows)
    results: dict = field(default_factory=dict)   # node id -> output tuple (for tests to inspect)
    executed: list = field(default_factory=list)  # node ids run this time, in order
    cached: list = field(default_factory=list)    # node ids served from the cache
    error: dict | None = None                     # execution_error / execution_interrupted / validation
    node_errors: dict = field(default_factory=dict)
    progress: list = field(default_factory=list)  # (node id, value, total, has_preview)

    @property
    def ok(self) -> bool:
        return self.status == "success"

    def expect_success(self) -> "RunResult":
        if not self.ok:
            raise AssertionError(f"prompt {self.status}: {self.describe()}")
        return self

    def describe(self) -> str:
        if self.error is None:
            return self.status
        parts = [f"{self.error.get('exception_type', self.error.get('type'))}: "
                 f"{self.error.get('exception_message', self.error.get('message'))}"]
        if self.error.get("node_id"):
            parts.append(f"in node {self.error['node_id']} ({self.error.get('node_type')})")
        for node_id, entry in self.node_errors.items():
            for e in entry["errors"]:
                parts.append(f"node {node_id} ({entry['class_type']}): {e['message']}: {e['details']}")
        if self.error.get("traceback"):
            parts.append("".join(self.error["traceback"]))
        return "\n".join(parts)


class PromptRunner:
    def __init__(self, mappings: dict, host):
        self.mappings = dict(mappings)
        self.host = host
        self._outputs: dict = {}     # signature -> (output tuple, ui dict)
        self._objects: dict = {}     # (node id, class_type) -> node instance
        self.interrupt_types = (self._host_interrupt_type(),)

    def validate(self, prompt: dict) -> Validation:
        return validate_prompt(prompt, self.mappings)

    def free(self) -> None:
        """Like POST /free {"free_memory": true}: drop cached outputs and node instances."""
        self._outputs.clear()
        self._objects.clear()

    def run(self, prompt: dict, extra_data: dict | None = None) -> RunResult:
        import copy
        prompt = copy.deepcopy(prompt)  # validation coerces values in place, as ComfyUI does
        checked = self.validate(prompt)
        if not checked.ok:
            return RunResult("invalid", error=checked.error, node_errors=checked.node_errors)
        result = RunResult("success", node_errors=checked.node_errors)
        order = execution_order(prompt, checked.outputs)
        signatures: dict[str, object] = {}
        values: dict[str, tuple] = {}
        listener, self.host.on_progress = self.host.on_progress, self._recorder(result, getattr(self.host, "on_progress", None))
        self.host.clear_interrupt()
        try:
            with torch.inference_mode():
                for node_id in order:
                    self.host.current_node = node_id
                    signatures[node_id] = self._signature(prompt, node_id, signatures)
                    if signatures[node_id] in self._outputs:
                        values[node_id], ui = self._outputs[signatures[node_id]]
                        result.cached.append(node_id)
                    else:
                        self.host.check_interrupt()  # ComfyUI checks before every node
                        values[node_id], ui = self._execute(prompt, node_id, values, extra_data or {})
                        self._outputs[signatures[node_id]] = (values[node_id], ui)
                        result.executed.append(node_id)
                    result.results[node_id] = values[node_id]
                    if ui:
                        result.outputs[node_id] = ui
        except self.interrupt_types as error:
            result.status = "interrupted"
            result.error = {"node_id": self.host.current_node, "node_type": _class_of(prompt, self.host.current_node),
                            "executed": list(result.executed), "exception_type": type(error).__name__,
                            "exception_message": str(error)}
        except Exception as error:  # noqa: BLE001 - becomes an execution_error, like ComfyUI's
            result.status = "error"
            result.error = {"node_id": self.host.current_node, "node_type": _class_of(prompt, self.host.current_node),
                            "executed": list(result.executed), "exception_type": type(error).__name__,
                            "exception_message": str(error),
                            "traceback": traceback.format_tb(error.__traceback__)}
        finally:
            self.host.on_progress = listener
            self.host.current_node = None
            self._forget_unused(prompt, set(signatures.values()))
        return result

    def _execute(self, prompt: dict, node_id: str, values: dict, extra_data: dict) -> tuple[tuple, dict]:
        node = prompt[node_id]
        cls = self.mappings[node["class_type"]]
        _refuse_unemulated(cls)
        key = (node_id, node["class_type"])
        if key not in self._objects:
            self._objects[key] = cls()
        instance = self._objects[key]
        arguments = {name: (values[v[0]][v[1]] if is_link(v) else v) for name, v in node["inputs"].items()
                     if name in _declared_inputs(cls)}
        arguments.update(_hidden_inputs(cls, node_id, prompt, extra_data))
        function = getattr(instance, cls.FUNCTION)
        returned = asyncio.run(function(**arguments)) if inspect.iscoroutinefunction(function) else function(**arguments)
        outputs, ui = _split_return(node_id, cls, returned)
        for slot, (kind, value) in enumerate(zip(cls.RETURN_TYPES, outputs)):
            problem = output_type_problem(kind, value)
            if problem:
                raise TypeError(f"node {node_id} ({node['class_type']}) output {slot} ({kind}): {problem}")
        return outputs, ui

    def _signature(self, prompt: dict, node_id: str, known: dict):
        node = prompt[node_id]
        cls = self.mappings[node["class_type"]]
        parts = []
        for name, value in sorted(node["inputs"].items()):
            parts.append((name, ("link", known[value[0]], value[1]) if is_link(value) else _hashable(value)))
        changed = None
        if hasattr(cls, "IS_CHANGED"):
            constants = {k: (None if is_link(v) else v) for k, v in node["inputs"].items()}
            changed = cls.IS_CHANGED(**constants)
            if isinstance(changed, float) and changed != changed:  # NaN: always run again
                changed = object()
            changed = _hashable(changed)
        identity = node_id if getattr(cls, "NOT_IDEMPOTENT", False) else None
        return (node["class_type"], identity, changed, tuple(parts))

    def _forget_unused(self, prompt: dict, used: set) -> None:
        self._outputs = {k: v for k, v in self._outputs.items() if k in used}
        self._objects = {k: v for k, v in self._objects.items() if prompt.get(k[0], {}).get("class_type") == k[1]}

    @staticmethod
    def _recorder(result: RunResult, chained):
        def record(node_id, value, total, preview):
            result.progress.append((node_id, value, total, preview is not None))
            if chained is not None:
                chained(node_id, value, total, preview)
        return record

    def _host_interrupt_type(self):
        from hyvideo_core.errors import CancelledError
        return CancelledError


def execution_order(prompt: dict, outputs: list[str]) -> list[str]:
    """Ancestors before descendants, starting from the sinks in id order (depth first)."""
    order, seen = [], set()

    def visit(node_id: str) -> None:
        if node_id in seen:
            return
        seen.add(node_id)
        for value in prompt[node_id]["inputs"].values():
            if is_link(value):
                visit(value[0])
        order.append(node_id)

    for output in sorted(outputs):
        visit(output)
    return order


def _declared_inputs(cls) -> set[str]:
    sections = cls.INPUT_TYPES()
    return set(sections.get("required") or {}) | set(sections.get("optional") or {})


def _hidden_inputs(cls, node_id: str, prompt: dict, extra_data: dict) -> dict:
    values = {"UNIQUE_ID": node_id, "PROMPT": prompt, "EXTRA_PNGINFO": extra_data.get("extra_pnginfo"),
              "DYNPROMPT": None}
    return {name: values.get(kind) for name, kind in (cls.INPUT_TYPES().get("hidden") or {}).items()}


def _refuse_unemulated(cls) -> None:
    if getattr(cls, "INPUT_IS_LIST", False) or any(getattr(cls, "OUTPUT_IS_LIST", ()) or ()):
        raise HarnessLimitation(f"{cls.__name__}: INPUT_IS_LIST/OUTPUT_IS_LIST are not emulated by the harness")
    sections = cls.INPUT_TYPES()
    for section in ("required", "optional"):
        for name, spec in (sections.get(section) or {}).items():
            if len(spec) > 1 and isinstance(spec[1], dict) and spec[1].get("lazy"):
                raise HarnessLimitation(f"{cls.__name__}.{name}: lazy inputs are not emulated by the harness")


def _split_return(node_id: str, cls, returned) -> tuple[tuple, dict]:
    ui = {}
    if isinstance(returned, dict):
        if "expand" in returned:
            raise HarnessLimitation(f"node {node_id}: graph expansion is not emulated by the harness")
        ui = returned.get("ui") or {}
        returned = returned.get("result", ())
    outputs = tuple(returned or ())
    if len(outputs) != len(cls.RETURN_TYPES):
        raise TypeError(f"node {node_id} ({cls.__name__}) returned {len(outputs)} values but RETURN_TYPES "
                        f"declares {len(cls.RETURN_TYPES)}")
    return outputs, ui


def _class_of(prompt: dict, node_id: str | None) -> str | None:
    return prompt.get(node_id, {}).get("class_type") if node_id else None


def _hashable(value):
    if isinstance(value, dict):
        return tuple(sorted((k, _hashable(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return tuple(_hashable(v) for v in value)
    return value
