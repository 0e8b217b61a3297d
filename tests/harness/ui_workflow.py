"""UI workflow (what the ComfyUI editor saves) -> API prompt (what POST /prompt takes).

The server never converts; the frontend does. This follows the frontend's rules:
- `widgets_values` is positional in INPUT_TYPES order over the widget inputs (INT, FLOAT,
  STRING, BOOLEAN, combos; not forceInput), and a seed-like INT has one extra value, its
  control_after_generate mode ("randomize", "fixed", ...), which the API prompt does not carry;
- a linked input takes the link instead of its widget value;
- muted nodes (mode 2) are dropped, bypassed nodes (mode 4) pass an input of the same type
  through; Note/MarkdownNote are dropped, Reroute is followed, a PrimitiveNode's value is
  inlined into the widget it feeds.
A count of widget values that does not match INPUT_TYPES is an error: it is exactly the
"every setting shifted by one slot" breakage users meet with stale workflows.
"""
from __future__ import annotations

from .contract import widget_inputs

DROPPED_TYPES = frozenset({"Note", "MarkdownNote"})
MUTED, BYPASSED = 2, 4


class WorkflowError(ValueError):
    pass


def _links(workflow: dict) -> dict[int, tuple]:
    """link id -> (from_node, from_slot, to_node, to_slot, type); both saved formats."""
    table = {}
    for link in workflow.get("links") or []:
        if isinstance(link, dict):
            table[link["id"]] = (link["origin_id"], link["origin_slot"], link["target_id"], link["target_slot"],
                                 link.get("type"))
        else:
            table[link[0]] = tuple(link[1:6])
    return table


def ui_to_api(workflow: dict, mappings: dict, display_names: dict | None = None) -> dict:
    if (workflow.get("definitions") or {}).get("subgraphs"):
        raise WorkflowError("subgraphs are not supported by this converter; flatten the workflow")
    nodes = {node["id"]: node for node in workflow["nodes"]}
    links = _links(workflow)
    prompt = {}
    for node_id, node in nodes.items():
        kind = node["type"]
        if kind in DROPPED_TYPES or kind in ("Reroute", "PrimitiveNode") or node.get("mode", 0) in (MUTED, BYPASSED):
            continue
        cls = mappings.get(kind)
        if cls is None:
            raise WorkflowError(f"node {node_id}: type {kind!r} is not a known node (missing node pack?)")
        inputs = _widget_values(node_id, node, widget_inputs(cls), _has_upload_button(cls))
        for entry in node.get("inputs") or []:
            if entry.get("link") is None:
                continue
            source = _resolve(nodes, links, entry["link"])
            if source is None:
                inputs.pop(entry["name"], None)
            else:
                inputs[entry["name"]] = source
        title = node.get("title") or (display_names or {}).get(kind) or kind
        prompt[str(node_id)] = {"inputs": inputs, "class_type": kind, "_meta": {"title": title}}
    return prompt


def _has_upload_button(cls) -> bool:
    """Nodes with an image/video upload button: the frontend saves the button's value last."""
    spec = cls.INPUT_TYPES()
    options = [o[1] for group in ("required", "optional") for o in spec.get(group, {}).values()
               if len(o) > 1 and isinstance(o[1], dict)]
    return any(o.get("image_upload") or o.get("video_upload") for o in options)


def _widget_values(node_id, node, widgets, upload_button: bool = False) -> dict:
    values = node.get("widgets_values")
    if values is None:
        values = []
    if isinstance(values, dict):  # some packs save widgets by name
        return {w.name: values[w.name] for w in widgets if w.name in values}
    expected = sum(w.slots for w in widgets)
    if upload_button and len(values) == expected + 1:
        values = values[:-1]   # the upload button's own value, as the real frontend saves it
    if len(values) != expected:
        layout = ", ".join(w.name + (" (+control_after_generate)" if w.has_control else "") for w in widgets)
        raise WorkflowError(f"node {node_id} ({node['type']}): widgets_values has {len(values)} values but "
                            f"INPUT_TYPES expects {expected}: {layout}")
    inputs, position = {}, 0
    for widget in widgets:
        inputs[widget.name] = values[position]
        if widget.has_control and values[position + 1] not in ("fixed", "increment", "decrement", "randomize"):
            raise WorkflowError(f"node {node_id} ({node['type']}): {widget.name}'s control_after_generate value "
                                f"is {values[position + 1]!r}; the widget values are shifted")
        position += widget.slots
    return inputs


def _resolve(nodes: dict, links: dict, link_id, depth: int = 0):
    """The API value feeding a link: [node id, slot], a PrimitiveNode constant, or None (dropped)."""
    if depth > 64:
        raise WorkflowError(f"link {link_id}: cycle through reroutes or bypassed nodes")
    if link_id not in links:
        raise WorkflowError(f"link {link_id} is used by a node but missing from the links table")
    source_id, slot, _, _, link_type = links[link_id]
    source = nodes.get(source_id)
    if source is None:
        raise WorkflowError(f"link {link_id} starts at node {source_id}, which does not exist")
    mode = source.get("mode", 0)
    if source["type"] == "Reroute" or mode == BYPASSED:
        through = _pass_through_input(source, slot, link_type)
        return None if through is None else _resolve(nodes, links, through, depth + 1)
    if mode == MUTED:
        return None
    if source["type"] == "PrimitiveNode":
        return source["widgets_values"][0]
    return [str(source_id), slot]


def _pass_through_input(node: dict, slot: int, link_type):
    """Reroute: its only input. Bypassed node: the input at the same index if its type matches,
    else the first input of the output's type (the frontend's rule)."""
    inputs = [i for i in node.get("inputs") or []]
    if node["type"] == "Reroute":
        return inputs[0].get("link") if inputs else None
    outputs = node.get("outputs") or []
    wanted = outputs[slot].get("type") if slot < len(outputs) else link_type
    if slot < len(inputs) and inputs[slot].get("type") == wanted and inputs[slot].get("link") is not None:
        return inputs[slot]["link"]
    for entry in inputs:
        if entry.get("type") == wanted and entry.get("link") is not None:
            return entry["link"]
    return None


def prompt_differences(expected: dict, actual: dict) -> list[str]:
    """Human-readable differences between two API prompts (titles are ignored)."""
    problems = []
    for node_id in sorted(set(expected) | set(actual), key=str):
        if node_id not in actual:
            problems.append(f"node {node_id} missing from the converted prompt")
        elif node_id not in expected:
            problems.append(f"node {node_id} ({actual[node_id]['class_type']}) not in the API twin")
        elif expected[node_id]["class_type"] != actual[node_id]["class_type"]:
            problems.append(f"node {node_id}: class {expected[node_id]['class_type']} vs {actual[node_id]['class_type']}")
        else:
            a, b = expected[node_id]["inputs"], actual[node_id]["inputs"]
            for name in sorted(set(a) | set(b)):
                if a.get(name, "<absent>") != b.get(name, "<absent>"):
                    problems.append(f"node {node_id}.{name}: API twin {a.get(name, '<absent>')!r} "
                                    f"vs converted {b.get(name, '<absent>')!r}")
    return problems
