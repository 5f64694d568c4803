"""The backward explorer: a recorded graph as one self-contained HTML page.

The page holds graphviz's drawing of the backward graph (SVG, inline) and, as JSON, what
the Trace noted for every op that backward ran: the grad it received, the grads its
hand-written backward produced for each input, the bytes it saved, and that backward's
source. `assets/explorer.js` replays them one op at a time, in backward's order.

With `depth`, the page holds several drawings: one with every module that deep collapsed
to a box, and one per collapsed module with that module drawn open. Clicking a box, or
stepping to an op inside it, shows its drawing: graphviz lays out each drawing here, so
the page needs no layout engine and no network.
"""

from __future__ import annotations

import html
import inspect
import json
import math
import re
import textwrap
from pathlib import Path
from typing import Any

from . import viz
from .function import Node
from .tensor import Tensor

ASSETS = Path(__file__).parent / "assets"
PACKAGE_ROOT = Path(__file__).resolve().parent.parent


def write_page(output: Tensor, trace: viz.Trace, path: Path, depth: int | None = None, title: str = "graph") -> Path:
    """Write the explorer of the backward graph behind `output` to `path` (see render)."""
    page = render(output, trace, depth, title)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    return path


def render(output: Tensor, trace: viz.Trace, depth: int | None = None, title: str = "graph") -> str:
    """The page as a string: the drawings, the steps as JSON, the script and the styles."""
    overview = viz.build(output, trace, "backward", depth)
    steps = sorted((n for n in overview.ops if n in trace.order), key=trace.order.__getitem__)
    if not steps:
        raise ValueError(
            "No op behind this output ran backward inside the Trace; call backward() (or tinygraph.grad) "
            "inside `with viz.Trace(model):`, then write the page."
        )
    collapsed = sorted(k.removeprefix("module:") for k, n in overview.nodes.items() if n["kind"] == "module")
    graphs = [overview] + [viz.build(output, trace, "backward", depth, expanded={m}) for m in collapsed]
    views = [None, *collapsed]  # the module each drawing shows open (None: the overview)
    kinds = dict(trace.module_path.values())  # module path -> class name
    data = {
        "views": [
            {"module": m, "kind": kinds.get(m, ""), "box": viz.dot_name(f"module:{m}")} if m is not None else {}
            for m in views
        ],
        "steps": _steps(steps, graphs, views, kinds, trace),
        "sources": [],
    }
    _add_sources(data, steps)
    drawings = "\n".join(
        f'<div class="view" data-view="{i}" hidden>{_svg(graph, trace, f"view{i}")}</div>'
        for i, graph in enumerate(graphs)
    )
    parts = {
        "STYLE": (ASSETS / "explorer.css").read_text(encoding="utf-8"),
        "SCRIPT": (ASSETS / "explorer.js").read_text(encoding="utf-8"),
        "DATA": json.dumps(data, separators=(",", ":")).replace("<", "\\u003c"),  # no "</script>" inside
        "DRAWINGS": drawings,
        "TITLE": html.escape(title),
    }
    template = (ASSETS / "explorer.html").read_text(encoding="utf-8")
    # one pass, so that nothing inserted is searched for markers again
    return re.sub(r"/\*(STYLE|SCRIPT|DATA)\*/|<!--(DRAWINGS|TITLE)-->", lambda m: parts[m[1] or m[2]], template)


def _steps(
    steps: list[Node], graphs: list[viz.Graph], views: list[str | None], kinds: dict[str, str], trace: viz.Trace
) -> list[dict[str, Any]]:
    """One record per op, in backward's order: what the panel shows and where it is drawn."""
    consumers: dict[Node, list[int]] = {}  # the ops that sent each op its grad
    for node in steps:
        for edge in node.edges:
            if edge is not None and isinstance(edge[0], Node):
                consumers.setdefault(edge[0], []).append(trace.order[node])
    out = []
    for node in steps:
        at = [viz.dot_name(graph.ops[node]) for graph in graphs]  # the drawn node's <title>, per drawing
        key = graphs[0].ops[node]  # in the overview: the op itself, or the collapsed module it is in
        home = views.index(key.removeprefix("module:")) if graphs[0].nodes[key]["kind"] == "module" else 0
        module = trace.scope_of.get(node)
        out.append(
            {
                "number": trace.order[node],
                "name": node.name,
                "module": module,
                "kind": kinds.get(module, ""),
                "at": at,
                "home": home,
                "outputs": [[list(shape), str(dtype).removeprefix("torch.")] for shape, dtype, _ in node.outputs],
                "received": [_stats(s) for s in trace.received.get(node, [])],
                "from": sorted(consumers.get(node, [])),
                "inputs": [_input(node, i, trace) for i in range(len(node.edges))],
                "options": ", ".join(f"{k}={v!r}" for k, v in (node.kwargs or {}).items()),
                "saved": trace.saved_bytes.get(node, 0),
            }
        )
    return out


def _input(node: Node, i: int, trace: viz.Trace) -> dict[str, Any]:
    """Where input i's grad went (an op, with its step; a parameter; an input tensor), or,
    for an input that got none, what it was."""
    edge = node.edges[i]
    if edge is None:
        arguments = trace.arguments.get(node, [])
        value = arguments[i] if i < len(arguments) else None
        return {"to": None, "value": value}
    dest, shape, _, slot = edge
    if isinstance(dest, Node):
        output = f" (output {slot})" if dest.fn.multi_output else ""
        number = trace.order.get(dest)
        to = f"#{number} {dest.name}{output}" if number is not None else f"{dest.name}{output}"
    else:
        number, to = None, trace.param_name.get(id(dest), "input")
    grads = trace.grads.get(node, [])
    return {"to": to, "step": number, "shape": list(shape), "grad": _stats(grads[i] if i < len(grads) else None)}


def _stats(s: viz.Stats | None) -> dict[str, Any] | None:
    if s is None:
        return None
    number = lambda x: x if math.isfinite(x) else str(x)  # noqa: E731  (JSON has no NaN or Inf)
    return {
        "shape": list(s.shape),
        "dtype": s.dtype,
        "norm": number(s.norm),
        "min": number(s.min),
        "max": number(s.max),
        "hist": list(s.hist),
        "nonfinite": s.nonfinite,
    }


def _add_sources(data: dict[str, Any], steps: list[Node]) -> None:
    """Each op class's backward source once; every step points at its op's."""
    index: dict[type, int] = {}
    for step, node in zip(data["steps"], steps):
        if node.fn not in index:
            index[node.fn] = len(data["sources"])
            data["sources"].append(_source(node.fn))
        step["source"] = index[node.fn]


def _source(fn: type) -> dict[str, Any]:
    backward = inspect.unwrap(fn.backward)
    try:
        lines, first = inspect.getsourcelines(backward)
        file = Path(inspect.getsourcefile(backward) or "")
    except (OSError, TypeError):
        return {"op": fn.__name__, "file": "", "line": 0, "code": "(its source is not available)"}
    where = file.resolve()
    shown = str(where.relative_to(PACKAGE_ROOT)) if where.is_relative_to(PACKAGE_ROOT) else file.name
    return {"op": fn.__name__, "file": shown, "line": first, "code": textwrap.dedent("".join(lines)).rstrip()}


def _svg(graph: viz.Graph, trace: viz.Trace, name: str) -> str:
    """graphviz's SVG of one drawing, ready to inline: no XML prolog, comments or ids
    (several drawings share a page, and graphviz numbers each one's ids from 1)."""
    svg = viz.to_dot(graph, trace, "backward", name=name).pipe(format="svg", encoding="utf-8")
    svg = svg[svg.index("<svg") :]
    svg = re.sub(r"<!--.*?-->\n?", "", svg, flags=re.S)
    return re.sub(r' id="[^"]*"', "", svg)
