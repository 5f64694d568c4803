"""See the graph: any tinygraph output (a loss, a layer's output) drawn with graphviz.

    with viz.Trace(model) as trace:        # notes each op's module, what it saved,
        loss = model(x, y)[1]              # and, if backward runs inside, its order
        loss.backward()                    # and the grads each node produced
    trace.draw(loss, view="backward").render("graph", format="svg")

One node per recorded op (name, output shape, dtype, device); parameters named by
their module path (`layers.3.attn.qkv.weight`); nodes grouped in nested clusters, one
per module; with `depth`, every module that many levels down is drawn as a single node. The
backward view numbers the ops in the order backward ran them, with the grads they
produced (shape and norm), the bytes they had saved, and NaN/Inf in red. Everything
is walked with explicit stacks, so graphs of any depth draw. `draw` works without a
Trace too (then without modules, order or grads), and on create_graph outputs.

    trace.write_html(loss, "backward.html")  # the backward explorer: step through it in a browser

writes one self-contained page that replays backward one op at a time (tinygraph.explorer).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import graphviz
import torch

from . import grad_mode
from .function import Node
from .tensor import Tensor

STYLES = {
    "op": {"shape": "box", "style": "rounded,filled", "fillcolor": "#f2f2f2"},
    "parameter": {"shape": "box", "style": "filled", "fillcolor": "#cfe8ff"},
    "input": {"shape": "ellipse", "style": "filled", "fillcolor": "#e8e8e8"},
    "saved": {"shape": "note", "style": "dashed", "fontsize": "9", "color": "#8a6d00"},
    "output": {"shape": "doubleoctagon", "style": "filled", "fillcolor": "#d9f2d9"},
    "module": {"shape": "box3d", "style": "filled", "fillcolor": "#fff3c4"},
    "bad": {"fillcolor": "#ff9b9b", "color": "red"},
}


def _shape(shape: Any) -> str:
    return "(" + ", ".join(str(s) for s in shape) + ")"


def _bytes(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return ""


HIST_BINS = 16


@dataclass(frozen=True)
class Stats:
    """A tensor in a few numbers: what the drawing labels and the explorer's panel shows."""

    shape: tuple[int, ...]
    dtype: str
    norm: float  # of every entry, so a NaN or Inf shows here
    min: float  # min, max and hist: of the finite entries
    max: float
    hist: tuple[int, ...]  # counts in HIST_BINS equal bins from min to max
    nonfinite: int  # how many entries are NaN or Inf

    @property
    def finite(self) -> bool:
        return self.nonfinite == 0 and math.isfinite(self.norm)


def summarize(t: Any) -> Stats:
    """Stats of a Tensor or torch.Tensor (in float64, except on MPS, which has none)."""
    data = (t.data if isinstance(t, Tensor) else t).detach()
    x = data.reshape(-1)
    x = x.float() if x.device.type == "mps" else x.double()
    finite = x[torch.isfinite(x)]
    norm = float(torch.linalg.vector_norm(x)) if x.numel() else 0.0
    lo, hi, hist = 0.0, 0.0, [0] * HIST_BINS
    if finite.numel():
        lo, hi = torch.stack([finite.min(), finite.max()]).tolist()
        hist = torch.histc(finite, HIST_BINS, lo, hi).long().tolist()
    dtype = str(data.dtype).removeprefix("torch.")
    return Stats(tuple(data.shape), dtype, norm, lo, hi, tuple(hist), x.numel() - finite.numel())


class Trace:
    """While active: which module each op ran in, the bytes it saved, and backward's order,
    the grad each op received and the grads it produced. Give it the model so parameters
    and clusters get their dotted names. Nothing is recorded while no Trace is active."""

    def __init__(self, module: Any = None):
        self.module_path: dict[int, tuple[str, str]] = {}  # id(module) -> (path, class name)
        self.param_name: dict[int, str] = {}
        if module is not None:
            self.module_path = {id(m): (path, type(m).__name__) for path, m in module.named_modules()}
            self.param_name = {id(p): name for name, p in module.named_parameters()}
        self.scopes: list[str] = []
        self.scope_of: dict[Node, str | None] = {}  # "" is the root module, None outside any
        self.saved_bytes: dict[Node, int] = {}
        self.arguments: dict[Node, list[str | None]] = {}  # per positional input: None for a Tensor, else its repr
        self.order: dict[Node, int] = {}  # 1 for the op backward ran first
        self.received: dict[Node, list[Stats | None]] = {}  # per output of the op
        self.grads: dict[Node, list[Stats | None]] = {}  # per input, as its backward returned them
        self._previous: list[Any] = []

    def __enter__(self) -> Trace:
        self._previous.append(grad_mode.local.state.observer)
        grad_mode.local.state.observer = self
        return self

    def __exit__(self, *exc: object) -> None:
        grad_mode.local.state.observer = self._previous.pop()

    # called by the engine -------------------------------------------------------------------
    @contextlib.contextmanager
    def inside(self, module: Any) -> Iterator[None]:
        path = self.module_path.get(id(module))
        if path is not None:
            self.scopes.append(path[0])
        try:
            yield
        finally:
            if path is not None:
                self.scopes.pop()

    def record(self, node: Node, out: Any = None) -> None:
        self.scope_of[node] = self.scopes[-1] if self.scopes else None
        self.saved_bytes[node] = sum(v.numel() * v.element_size() for v in node._saved if isinstance(v, torch.Tensor))
        self.arguments[node] = [None if isinstance(a, Tensor) else _brief(a) for a in node.args or ()]

    def backward_ran(self, node: Node, received: Any, grads: Any) -> None:
        self.order[node] = len(self.order) + 1
        self.received[node] = _summaries(received)
        self.grads[node] = _summaries(grads)

    def draw(
        self, output: Tensor, view: str = "forward", depth: int | None = None, name: str = "graph"
    ) -> graphviz.Digraph:
        return draw(output, self, view, depth, name)

    def write_html(self, output: Tensor, path: str | Path, depth: int | None = None, title: str = "graph") -> Path:
        return write_html(output, self, path, depth, title)


def _brief(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"a torch.Tensor of shape {_shape(value.shape)}"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _summaries(grads: Any) -> list[Stats | None]:
    grads = grads if isinstance(grads, (tuple, list)) else (grads,)
    return [summarize(g) if g is not None else None for g in grads]


@dataclass
class Graph:
    """What gets drawn, before graphviz: tests check this structure."""

    nodes: dict[str, dict[str, Any]] = field(default_factory=dict)  # id -> kind, label, cluster, bad
    # a node's cluster is the dotted path of its module ("" the root module), None for none
    edges: set[tuple[str, str, str]] = field(default_factory=set)  # (from, to, style)
    ops: dict[Node, str] = field(default_factory=dict)  # each recorded op -> the id it is drawn as

    def add(self, key: str, kind: str, label: str, cluster: str | None = None, bad: bool = False) -> None:
        self.nodes.setdefault(key, {"kind": kind, "label": label, "cluster": cluster, "bad": bad})


def build(
    output: Tensor,
    trace: Trace | None = None,
    view: str = "forward",
    depth: int | None = None,
    expanded: Collection[str] = (),
) -> Graph:
    """Walk the recorded graph behind `output` (iteratively) into a Graph. With `depth`, the
    modules that many levels down are collapsed, except those whose paths are in `expanded`."""
    if view not in ("forward", "backward"):
        raise ValueError(f"view must be 'forward' or 'backward', not {view!r}.")
    if output.grad_fn is None:
        raise ValueError(
            "This tensor was not made by a recorded op (it is a leaf, or ran under no_grad); nothing to draw."
        )
    trace = trace or Trace()
    graph = Graph()
    members: dict[str, set[Node]] = {}  # the ops inside each collapsed module

    def group(path: str | None) -> str | None:
        """The module `depth` levels down that a path falls in: drawn as one node."""
        parts = path.split(".") if path else []
        if depth is None or len(parts) < depth:
            return None
        top = ".".join(parts[:depth])
        return None if top in expanded else top

    def op_key(node: Node) -> str:
        collapsed = group(trace.scope_of.get(node))
        return f"module:{collapsed}" if collapsed is not None else f"op:{id(node)}"

    def leaf_key(t: Tensor) -> str:
        name = trace.param_name.get(id(t))
        collapsed = group(_parent(name)) if name is not None else None
        return f"module:{collapsed}" if collapsed is not None else f"leaf:{id(t)}"

    def add_op(node: Node) -> str:
        key = graph.ops[node] = op_key(node)
        if key.startswith("module:"):
            path = key[len("module:") :]
            kind = next((k for p, k in trace.module_path.values() if p == path), "")
            members.setdefault(key, set()).add(node)
            graph.add(key, "module", "", _parent(path))
            n = len(members[key])
            graph.nodes[key]["label"] = f"{path}\n{kind}, {n} op{'s' * (n != 1)} (collapsed)"
            return key
        shape, dtype, device = node.outputs[0]
        lines = [node.name, f"{_shape(shape)} {str(dtype).removeprefix('torch.')} {device}"]
        bad = False
        if view == "backward":
            if node in trace.order:
                lines[0] = f"#{trace.order[node]} {node.name}"
            for i, g in enumerate(trace.grads.get(node, [])):
                if g is not None:
                    lines.append(f"grad {i}: {_shape(g.shape)} |{g.norm:.3g}|")
                    bad = bad or not g.finite
            if trace.saved_bytes.get(node):
                lines.append(f"saved {_bytes(trace.saved_bytes[node])}")
        graph.add(key, "op", "\n".join(lines), trace.scope_of.get(node), bad)
        return key

    def add_leaf(t: Tensor) -> str:
        key = leaf_key(t)
        if key.startswith("module:"):
            return key
        name = trace.param_name.get(id(t))
        label = (
            f"{name}\n{_shape(t.shape)}" if name else f"input\n{_shape(t.shape)} {str(t.dtype).removeprefix('torch.')}"
        )
        bad = False
        if view == "backward" and t.grad is not None:
            g = summarize(t.grad)
            label += f"\ngrad norm {g.norm:.3g}"
            bad = not g.finite
        graph.add(key, "parameter" if name else "input", label, _parent(name) if name else None, bad)
        return key

    root = add_op(output.grad_fn)
    graph.add("output", "output", f"output\n{_shape(output.shape)}")
    connect(graph, root, "output", view)
    stack, seen = [output.grad_fn], {output.grad_fn}
    while stack:
        node = stack.pop()
        here = op_key(node)
        for edge in node.edges:
            if edge is None:
                continue
            source = edge[0]
            if isinstance(source, Node):
                key = add_op(source)
                if source not in seen:
                    seen.add(source)
                    stack.append(source)
            else:
                key = add_leaf(source)
            if key != here:
                connect(graph, key, here, view)
        if view == "forward" and trace.saved_bytes.get(node) and not here.startswith("module:"):
            saved = f"saved:{id(node)}"
            graph.add(
                saved, "saved", f"saved for backward\n{_bytes(trace.saved_bytes[node])}", trace.scope_of.get(node)
            )
            graph.edges.add((saved, here, "dotted"))
    return graph


def connect(graph: Graph, source: str, consumer: str, view: str) -> None:
    """Forward view: data flows from inputs to ops; backward view: grads flow back."""
    graph.edges.add((source, consumer, "solid") if view == "forward" else (consumer, source, "solid"))


def _parent(path: str) -> str | None:
    """The enclosing module's path: "a.b" -> "a", "a" -> "" (the root), "" -> None."""
    return None if not path else path.rsplit(".", 1)[0] if "." in path else ""


def draw(
    output: Tensor, trace: Trace | None = None, view: str = "forward", depth: int | None = None, name: str = "graph"
) -> graphviz.Digraph:
    """The graph behind `output` as a graphviz Digraph (`.render(path, format="svg")`)."""
    return to_dot(build(output, trace, view, depth), trace, view, name)


def to_dot(graph: Graph, trace: Trace | None = None, view: str = "forward", name: str = "graph") -> graphviz.Digraph:
    """A built Graph as a graphviz Digraph, clustered by module."""
    dot = graphviz.Digraph(
        name,
        graph_attr={"rankdir": "TB" if view == "forward" else "BT", "fontsize": "10"},
        node_attr={"fontsize": "10", "fontname": "Helvetica"},
    )
    kinds = {path: kind for path, kind in (trace.module_path.values() if trace else [])}
    clusters: dict[str | None, list[str]] = {}
    for key, info in graph.nodes.items():
        clusters.setdefault(info["cluster"], []).append(key)
    paths = _with_ancestors(p for p in clusters if p is not None)

    def attrs(info: dict[str, Any]) -> dict[str, str]:
        style = dict(STYLES[info["kind"]])
        if info["bad"]:
            style.update(STYLES["bad"])
        return style

    def emit(target: graphviz.Digraph, path: str | None) -> None:
        for key in clusters.get(path, []):
            target.node(dot_name(key), graph.nodes[key]["label"], **attrs(graph.nodes[key]))
        for child in sorted(p for p in paths if _parent(p) == path or (path is None and p == "")):
            with target.subgraph(name=f"cluster_{child or 'root'}") as sub:
                label = f"{child} ({kinds.get(child, '')})" if child else kinds.get("", "model")
                sub.attr(label=label, style="rounded", color="#999999", fontcolor="#555555")
                emit(sub, child)

    emit(dot, None)
    for source, target, style in sorted(graph.edges):
        dot.edge(dot_name(source), dot_name(target), style=style)
    return dot


def dot_name(key: str) -> str:
    """A Graph node's name in the DOT source (and the <title> of its SVG group)."""
    return key.replace(":", "_")


def write_html(output: Tensor, trace: Trace, path: str | Path, depth: int | None = None, title: str = "graph") -> Path:
    """The backward explorer: one self-contained HTML page (the drawing, and a stepper that
    replays backward one op at a time). Needs a Trace that backward ran inside, and
    graphviz's `dot`. With `depth`, modules are collapsed and expand on click."""
    from .explorer import write_page  # explorer builds on this module, so it is imported late

    return write_page(output, trace, Path(path), depth, title)


def _with_ancestors(paths: Any) -> set[str]:
    """Every module path that holds nodes, and every enclosing one (so nesting is complete)."""
    out: set[str] = set()
    for path in paths:
        while path is not None:
            out.add(path)
            path = _parent(path)
    return out
