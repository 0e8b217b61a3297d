"""The ComfyUI V1 node contract, checked the way the host and its frontend read a node class.

`node_problems(node_id, cls)` lists every breach (an empty list means the node is fine);
`widget_inputs(cls)` says which inputs the frontend turns into widgets and how many
`widgets_values` slots each takes (a seed also gets its control_after_generate slot), which is
what a UI workflow's positional values are matched against. Facts from
shared/reference/COMFYUI_HOST.md section 2 and the frontend's widget constructors.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass

WIDGET_TYPES = frozenset({"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"})
SECTIONS = ("required", "optional", "hidden")
HIDDEN_VALUES = frozenset({"UNIQUE_ID", "PROMPT", "EXTRA_PNGINFO", "DYNPROMPT", "AUTH_TOKEN_COMFY_ORG",
                           "API_KEY_COMFY_ORG"})
OPTION_KEYS = frozenset({
    "default", "min", "max", "step", "round", "tooltip", "forceInput", "lazy", "rawLink", "socketless",
    "widgetType", "multiline", "placeholder", "dynamicPrompts", "label_on", "label_off", "image_upload",
    "image_folder", "remote", "control_after_generate", "options", "multi_select", "advanced", "display",
    "video_upload", "animated_image_upload", "allow_batch"})  # upload buttons are not serialised (frontend 1.27)
SEED_NAMES = ("seed", "noise_seed")  # the frontend adds control_after_generate to these INTs by itself
MAX_INT = 0xFFFFFFFFFFFFFFFF


@dataclass(frozen=True)
class WidgetInput:
    name: str
    type: str                 # INT, FLOAT, STRING, BOOLEAN or COMBO
    options: dict
    choices: tuple | None     # combo values
    has_control: bool         # one extra widgets_values slot (control_after_generate)

    @property
    def slots(self) -> int:
        return 2 if self.has_control else 1


def input_sections(cls) -> dict[str, dict]:
    types = cls.INPUT_TYPES()
    return {section: dict(types.get(section) or {}) for section in SECTIONS}


def spec_parts(spec) -> tuple[object, dict]:
    """An input spec tuple -> (type or list of choices, options dict)."""
    options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
    return spec[0], options


def combo_choices(kind, options: dict) -> tuple | None:
    if isinstance(kind, (list, tuple)):
        return tuple(kind)
    if kind == "COMBO":
        return tuple(options.get("options") or ())
    return None


def widget_inputs(cls) -> list[WidgetInput]:
    """The widget inputs of a node in INPUT_TYPES order (required, then optional)."""
    sections = input_sections(cls)
    widgets = []
    for name, spec in [*sections["required"].items(), *sections["optional"].items()]:
        kind, options = spec_parts(spec)
        choices = combo_choices(kind, options)
        type_name = "COMBO" if choices is not None else kind
        if type_name not in WIDGET_TYPES or options.get("forceInput"):
            continue
        control = options.get("control_after_generate")
        if control is None:
            control = type_name == "INT" and name in SEED_NAMES
        widgets.append(WidgetInput(name, type_name, options, choices, bool(control)))
    return widgets


def node_problems(node_id: str, cls, display_name: str | None = None) -> list[str]:
    problems: list[str] = []
    try:
        raw = cls.INPUT_TYPES()
    except Exception as error:  # noqa: BLE001 - the problem is the report
        return [f"{node_id}: INPUT_TYPES() raised {type(error).__name__}: {error}"]
    if not isinstance(raw, dict) or not isinstance(raw.get("required", {}), dict):
        return [f"{node_id}: INPUT_TYPES() must return a dict with a 'required' dict"]
    problems += [f"{node_id}: unknown INPUT_TYPES section {key!r}" for key in raw if key not in SECTIONS]
    seen: set[str] = set()
    sections = input_sections(cls)
    for section in ("required", "optional"):
        for name, spec in sections[section].items():
            if name in seen:
                problems.append(f"{node_id}.{name}: input defined twice")
            seen.add(name)
            problems += [f"{node_id}.{name}: {p}" for p in _input_problems(name, spec)]
    for name, value in sections["hidden"].items():
        if value not in HIDDEN_VALUES:
            problems.append(f"{node_id}.{name}: hidden value {value!r} is not one of {sorted(HIDDEN_VALUES)}")
    problems += [f"{node_id}: {p}" for p in _class_problems(cls, sections)]
    if display_name is not None and not (isinstance(display_name, str) and display_name.strip()):
        problems.append(f"{node_id}: display name must be a non-empty string")
    return problems


def mapping_problems(class_mappings: dict, display_names: dict | None = None,
                     require_display_names: bool = True) -> dict[str, list[str]]:
    """Problems of every node in NODE_CLASS_MAPPINGS (only nodes with problems are listed)."""
    report = {}
    for node_id, cls in class_mappings.items():
        display = (display_names or {}).get(node_id)
        problems = node_problems(node_id, cls, display)
        if require_display_names and display is None:
            problems.append(f"{node_id}: missing from NODE_DISPLAY_NAME_MAPPINGS")
        if problems:
            report[node_id] = problems
    return report


def _input_problems(name: str, spec) -> list[str]:
    if not name.isidentifier():
        return [f"input name {name!r} is not a Python identifier"]
    if not isinstance(spec, tuple) or not 1 <= len(spec) <= 2:
        return [f"spec must be a tuple of (type,) or (type, options), got {spec!r}"]
    kind, options = spec_parts(spec)
    if len(spec) == 2 and not isinstance(spec[1], dict):
        return ["options must be a dict"]
    problems = [f"unknown option {key!r} (known: {sorted(OPTION_KEYS)})" for key in options if key not in OPTION_KEYS]
    tooltip = options.get("tooltip")
    if not (isinstance(tooltip, str) and tooltip.strip()):
        problems.append("tooltip missing (every input needs one)")
    choices = combo_choices(kind, options)
    if choices is not None:
        problems += _combo_problems(choices, options)
    elif not (isinstance(kind, str) and kind and kind == kind.strip()):
        problems.append(f"type must be a non-empty string or a list of choices, got {kind!r}")
    elif kind in ("INT", "FLOAT") and not options.get("forceInput"):
        problems += _number_problems(kind, options)
    elif kind == "STRING" and "default" in options and not isinstance(options["default"], str):
        problems.append(f"STRING default must be a string, got {options['default']!r}")
    elif kind == "BOOLEAN" and "default" in options and not isinstance(options["default"], bool):
        problems.append(f"BOOLEAN default must be True/False, got {options['default']!r}")
    if options.get("control_after_generate") and kind != "INT":
        problems.append("control_after_generate is only supported here on INT inputs")
    return problems


def _combo_problems(choices: tuple, options: dict) -> list[str]:
    problems = [f"combo choice {c!r} is not a string or number" for c in choices
                if not isinstance(c, (str, int, float)) or isinstance(c, bool)]
    if "default" in options and choices and options["default"] not in choices:
        problems.append(f"combo default {options['default']!r} is not one of the choices")
    return problems


def _number_problems(kind: str, options: dict) -> list[str]:
    number = int if kind == "INT" else (int, float)
    problems = []
    for key in ("default", "min", "max"):  # the frontend uses max 2048 when max is missing
        value = options.get(key)
        if value is None or isinstance(value, bool) or not isinstance(value, number):
            problems.append(f"{kind} needs a numeric {key!r}, got {value!r}")
    if problems:
        return problems
    low, high, default = options["min"], options["max"], options["default"]
    if not low <= default <= high:
        problems.append(f"default {default} is outside min {low} .. max {high}")
    if kind == "INT" and (low < -MAX_INT or high > MAX_INT):
        problems.append(f"INT range {low}..{high} exceeds 64 bits")
    step = options.get("step", 1)
    if not isinstance(step, (int, float)) or step <= 0:
        problems.append(f"step must be positive, got {step!r}")
    elif kind == "INT" and (default - low % step) % step:
        # The frontend snaps INT widgets to min % step + k * step: a default off that grid moves.
        problems.append(f"default {default} is not on the widget grid of step {step} from min {low}")
    return problems


def _class_problems(cls, sections: dict[str, dict]) -> list[str]:
    problems = []
    returns = getattr(cls, "RETURN_TYPES", None)
    if not isinstance(returns, tuple):
        problems.append(f"RETURN_TYPES must be a tuple, got {returns!r}")
        returns = ()
    for attr in ("RETURN_NAMES", "OUTPUT_TOOLTIPS", "OUTPUT_IS_LIST"):
        value = getattr(cls, attr, None)
        if value is not None and (not isinstance(value, (tuple, list)) or len(value) != len(returns)):
            problems.append(f"{attr} must have one entry per RETURN_TYPES entry ({len(returns)})")
    category = getattr(cls, "CATEGORY", None)
    if not (isinstance(category, str) and category.strip()):
        problems.append("CATEGORY must be a non-empty string")
    if not isinstance(getattr(cls, "OUTPUT_NODE", False), bool):
        problems.append("OUTPUT_NODE must be True or False")
    if not returns and not getattr(cls, "OUTPUT_NODE", False):
        problems.append("a node without outputs must be an OUTPUT_NODE, or it never runs")
    function_name = getattr(cls, "FUNCTION", None)
    function = getattr(cls, function_name, None) if isinstance(function_name, str) else None
    if not callable(function):
        problems.append(f"FUNCTION {function_name!r} does not name a method of the class")
    else:
        problems += _signature_problems(f"{function_name}()", function, sections, all_optional=False)
    validate = getattr(cls, "VALIDATE_INPUTS", None)
    if validate is not None:
        problems += _signature_problems("VALIDATE_INPUTS()", validate, sections, all_optional=True)
    return problems


def _signature_problems(label: str, function, sections: dict[str, dict], all_optional: bool) -> list[str]:
    parameters = inspect.signature(function).parameters
    if any(p.kind is p.VAR_KEYWORD for p in parameters.values()):
        return []
    names = set(sections["required"]) | set(sections["optional"]) | set(sections["hidden"])
    problems = []
    for name, parameter in parameters.items():
        if name in ("self", "cls", "input_types") or parameter.default is not parameter.empty:
            continue
        if name not in names:
            problems.append(f"{label} takes {name!r}, which is not an input")
        elif not all_optional and name not in sections["required"]:
            problems.append(f"{label} needs a default for optional/hidden input {name!r} (it may be absent)")
    if not all_optional:
        problems += [f"{label} does not accept input {name!r}" for name in sorted(names) if name not in parameters]
    return problems
