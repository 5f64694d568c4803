"""The backward pass: walk the tape from the outputs to the leaves, one Node at a time.

The order is a topological sort computed with an explicit stack (a 100,000-op chain
needs no recursion); roots are nodes like any other, so a root computed from another
root runs first. Each Node's grad is the sum of what its consumers sent it; when it
is complete the Node's hooks run, then its backward, its saved tensors are freed at once
(unless `retain_graph`), and the grads it returns are summed back to each input's shape
and dtype (broadcasting is undone here, once, not in every op) and passed on.

A leaf keeps the grad object it receives only when nothing else can hold it: a grad
handed to two inputs (`a + b`), passed through unchanged (`clone`, `expand`) from such
a one, a view, or one the user gave, is copied first, so no two `.grad`s ever share memory.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from . import grad_mode
from .function import Node
from .tensor import Tensor


def backward(
    tensors: Tensor | Sequence[Tensor],
    grad_tensors: Any = None,
    retain_graph: bool | None = None,
    create_graph: bool = False,
    inputs: Tensor | Sequence[Tensor] | None = None,
) -> None:
    """Accumulate d(tensors)/d(leaf) into every leaf's `.grad`, like torch.autograd.backward;
    with `inputs`, into those tensors' `.grad` only (leaves or not)."""
    roots, grads = _roots_and_grads(tensors, grad_tensors, create_graph)
    retain = create_graph if retain_graph is None else retain_graph
    if inputs is None:
        _run(roots, grads, retain, create_graph)
        return
    inputs = _checked_inputs(inputs, "backward(inputs=...)")
    for t, g in zip(inputs, _run(roots, grads, retain, create_graph, targets=inputs)):
        if g is not None:
            _accumulate(t, g, shared=True)


def grad(
    outputs: Tensor | Sequence[Tensor],
    inputs: Tensor | Sequence[Tensor],
    grad_outputs: Any = None,
    retain_graph: bool | None = None,
    create_graph: bool = False,
    allow_unused: bool = False,
) -> tuple[Tensor | None, ...]:
    """Return d(outputs)/d(inputs) without touching any `.grad`, like torch.autograd.grad."""
    inputs = _checked_inputs(inputs, "grad()")
    roots, grads = _roots_and_grads(outputs, grad_outputs, create_graph)
    retain = create_graph if retain_graph is None else retain_graph
    found = _run(roots, grads, retain, create_graph, targets=inputs)
    if not allow_unused and any(g is None for g in found):
        raise RuntimeError(
            "One of the inputs was not used to compute the outputs; pass allow_unused=True to get None for it."
        )
    return tuple(Tensor._make(g, None) if isinstance(g, torch.Tensor) else g for g in found)


def _checked_inputs(inputs: Any, where: str) -> list[Tensor]:
    inputs = [inputs] if isinstance(inputs, Tensor) else list(inputs)
    if not inputs:
        raise RuntimeError(f"{where}: inputs is empty; pass the tensors whose grads you want.")
    for i, x in enumerate(inputs):
        if isinstance(x, Tensor):
            _up_to_date(x)
        if not isinstance(x, Tensor) or not x.requires_grad:
            raise RuntimeError(f"{where}: inputs[{i}] does not require grad; call requires_grad_() on it first.")
    return inputs


def _up_to_date(t: Tensor) -> None:
    """A view written through since its graph was made: its graph as it is now (see inplace.py)."""
    if t._base is not None:
        from .inplace import bring_up_to_date

        bring_up_to_date(t)


def _roots_and_grads(tensors: Any, grad_tensors: Any, create_graph: bool) -> tuple[list, list]:
    roots = [tensors] if isinstance(tensors, Tensor) else list(tensors)
    if grad_tensors is None or isinstance(grad_tensors, (Tensor, torch.Tensor)):
        grad_tensors = [grad_tensors] * len(roots) if len(roots) == 1 or grad_tensors is None else None
    if grad_tensors is None or len(grad_tensors) != len(roots):
        raise RuntimeError("Pass one gradient per output tensor (a list as long as the outputs).")
    grads = []
    for i, (root, g) in enumerate(zip(roots, grad_tensors)):
        _up_to_date(root)
        if not root.requires_grad:
            raise RuntimeError(
                f"Output {i} does not require grad: none of its inputs had requires_grad=True, "
                "or it was computed under no_grad()."
            )
        if g is None:
            if root.numel() != 1:
                raise RuntimeError(
                    f"backward() on a tensor of shape {tuple(root.shape)} needs a gradient of the "
                    "same shape: pass gradient=..., or reduce the output to a scalar first."
                )
            g = torch.ones_like(root.data)
        elif tuple(g.shape) != tuple(root.shape):
            raise RuntimeError(
                f"The gradient has shape {tuple(g.shape)} but the output has shape "
                f"{tuple(root.shape)}; pass a gradient of the output's shape."
            )
        if create_graph:
            g = g if isinstance(g, Tensor) else Tensor(g)
        else:
            g = g.data if isinstance(g, Tensor) else g
        if g.dtype != root.dtype and g.is_floating_point() and root.is_floating_point():
            g = g.to(root.dtype)  # as torch's: a grad takes its output's dtype (float64 for a float32 root: float32)
        grads.append(g)
    return roots, grads


def _topological_order(roots: list[Node], stop: set) -> list[Node]:
    """Nodes reachable from `roots`, every consumer before what it consumes (iterative DFS;
    a root reached from another root is ordered like any other node)."""
    order: list[Node] = []
    seen: set[Node] = set()
    for root in roots:
        if root in seen:
            continue
        seen.add(root)
        stack = [(root, iter(root.edges))]
        while stack:
            node, edges = stack[-1]
            for edge in edges:
                if edge is not None:
                    child = edge[0]
                    if type(child) is Node and child not in seen:
                        seen.add(child)
                        if child not in stop:
                            stack.append((child, iter(child.edges)))
                            break
                        order.append(child)
            else:
                stack.pop()
                order.append(node)
    order.reverse()
    return order


def _run(
    roots: list[Tensor],
    root_grads: list,
    retain_graph: bool,
    create_graph: bool,
    targets: list[Tensor] | None = None,
    stop_at_targets: bool = False,
) -> list:
    """The engine. Without `targets` grads go into leaves; with them they are returned."""
    found: list = [None] * len(targets) if targets is not None else []
    # a target is a leaf Tensor, or (node, slot) for the output of an op; it may be listed twice
    target_of: dict[Any, list[int]] = {}
    for i, t in enumerate(targets or ()):
        target_of.setdefault(t if t.grad_fn is None else (t.grad_fn, t._slot), []).append(i)
    target_nodes = {t.grad_fn for t in targets or () if t.grad_fn is not None}
    pending: dict[Node, Any] = {}  # a node's grad so far; a list with one per output for multi-output ops
    shared: set[int] = {id(g) for g in root_grads}  # grad objects held in more than one place

    def found_at(key: Any, g: Any) -> None:
        for i in target_of[key]:
            found[i] = g if found[i] is None else found[i] + g

    def arrive(dest: Any, slot: int, g: Any) -> None:
        if type(dest) is not Node:  # a leaf
            if targets is not None:
                if dest in target_of:
                    found_at(dest, g)
            elif sinks is not None and dest in sinks.left:
                sinks.collect(dest, g)
            else:
                _accumulate(dest, g, id(g) in shared)
            return
        if targets is not None:
            if (dest, slot) in target_of:
                found_at((dest, slot), g)
            if dest not in needed:
                return
        if dest.fn.multi_output:
            slots = pending.setdefault(dest, [None] * len(dest.outputs))
            slots[slot] = g if slots[slot] is None else slots[slot] + g
        else:
            pending[dest] = g if dest not in pending else pending[dest] + g

    roots_nodes = [r.grad_fn for r in roots if r.grad_fn is not None]
    stop = target_nodes if stop_at_targets else set()
    order = _topological_order(roots_nodes, stop)
    needed = _nodes_leading_to(order, target_of) if targets is not None else set()
    sinks = _LeafSinks(order, roots, shared) if targets is None else None
    if sinks is not None and not sinks.left:
        sinks = None
    for r, g in zip(roots, root_grads):
        arrive(r.grad_fn if r.grad_fn is not None else r, r._slot, g)

    observer = grad_mode.local.state.observer
    with grad_mode.set_grad_enabled(create_graph):
        for node in order:
            g = pending.pop(node, None)
            if g is None:  # no grad reached it: nothing to run, but (if needed) it is done with
                if sinks is not None:
                    sinks.done(node)
                if not retain_graph and (targets is None or node in needed):
                    node.release()
                continue
            if node._hooks:
                g = _run_hooks(node, g, shared)
            if targets is None:
                for slot, ref in node._retained:
                    gs = g[slot] if node.fn.multi_output else g
                    if ref() is not None and gs is not None:
                        _accumulate(ref(), gs, shared=True)
            if targets is not None and (node in stop or node not in needed):
                continue  # grad() frees only the nodes it runs, as torch's does
            # (anomaly mode: a bad grad that waited must not be blamed on the op that folded it in)
            waiting = ()
            if node.fn.folds and targets is None and not create_graph and observer is None and node.stack is None:
                waiting = _waiting(node, pending)
            if waiting:
                node.waiting, node.folded = waiting, ()
                try:
                    grads = _call_backward(node, g, create_graph)
                finally:
                    node.waiting = ()  # (a graph kept alive after backward must not keep these grads too)
                folded = [i < len(node.folded) and node.folded[i] and w is not None for i, w in enumerate(waiting)]
            else:
                grads = _call_backward(node, g, create_graph)
            if observer is not None:
                observer.backward_ran(node, g, grads)
            if not retain_graph:
                node.release()
            if type(grads) is not tuple and type(grads) is not list:
                grads = (grads,)
            if len(grads) != len(node.edges) and (
                any(g is not None for g in grads[len(node.edges) :]) or any(node.edges[len(grads) :])
            ):
                raise RuntimeError(
                    f"{node.name}.backward returned {len(grads)} grads for {len(node.edges)} inputs; "
                    "return one per positional input that needs a grad (None where there is none)."
                )
            if len(grads) > 1:
                _note_repeats(grads, shared)
            for i, (edge, g_in) in enumerate(zip(node.edges, grads)):
                if edge is None or g_in is None:
                    continue
                dest, shape, dtype, slot = edge
                if g_in.shape != shape:
                    g_in = _summed_to(node, i, g_in, shape)
                if g_in.dtype != dtype:
                    g_in = g_in.to(dtype)
                if node.stack is not None:
                    _check_finite(node, i, g_in)
                if targets is None and type(dest) is Node and not dest.fn.multi_output:
                    if dest in pending and not (waiting and folded[i]):
                        g_in = pending[dest] + g_in
                    pending[dest] = g_in  # (the common case)
                    continue
                arrive(dest, slot, g_in)
            if sinks is not None:
                sinks.done(node)
        if sinks is not None:
            sinks.finish()
    if targets is not None:
        _leaf_hooks_on_found(targets, found)
    return found


def _waiting(node: Node, pending: dict) -> tuple:
    """For an op that folds: the grad waiting for each input, where it can be folded in (a
    plain grad of the input's shape and dtype, for a node that this op's other inputs do not
    also feed: their grads must be added to the total, not to what waited); () where none can."""
    dests = [e[0] for e in node.edges if e is not None]
    waiting = []
    for edge in node.edges:
        single = edge is not None and type(edge[0]) is Node and not edge[0].fn.multi_output  # (else a list waits)
        g = pending.get(edge[0]) if single else None
        fits = g is not None and g.shape == edge[1] and g.dtype == edge[2] and sum(d is edge[0] for d in dests) == 1
        waiting.append(g if fits else None)
    return tuple(waiting) if any(w is not None for w in waiting) else ()


def _note_repeats(grads: Sequence, shared: set[int]) -> None:
    """The same grad object handed to two inputs (as `a + b` does) is held twice."""
    seen: set[int] = set()
    for g in grads:
        if g is not None:
            if id(g) in seen:
                shared.add(id(g))
            seen.add(id(g))


def _summed_to(node: Node, i: int, g: Any, shape: torch.Size) -> Any:
    """A grad in its input's shape: broadcasting summed away. Any other mismatch is the op's bug."""
    try:
        out = g.sum_to_size(shape)
    except RuntimeError:
        out = None
    if out is None or out.shape != shape:
        raise RuntimeError(
            f"{node.name}.backward returned a grad of shape {tuple(g.shape)} for its input {i}, whose shape is "
            f"{tuple(shape)}; return the grad in the input's shape (or one that broadcasts to the output's)."
        )
    return out


def _run_hooks(node: Node, g: Any, shared: set[int]) -> Any:
    """register_hook on a non-leaf: each hook sees its output's complete grad and may replace it."""
    multi = node.fn.multi_output
    grads = list(g) if multi else [g]
    for slot, hook in node._hooks:
        if grads[slot] is None:
            continue
        shared.add(id(grads[slot]))  # the hook may keep what it was handed
        new = hook(_as_tensor(grads[slot]))
        if new is not None:
            grads[slot] = new if isinstance(grads[slot], Tensor) else new.data
            shared.add(id(grads[slot]))  # the hook's caller may keep it
    return grads if multi else grads[0]


def _leaf_hooks_on_found(targets: list[Tensor], found: list) -> None:
    for i, t in enumerate(targets):
        if t.grad_fn is None and t._pre_hooks and found[i] is not None:
            found[i] = _hooked(t, found[i])


def _hooked(leaf: Tensor, g: Any) -> Any:
    for hook in leaf._pre_hooks:
        new = hook(_as_tensor(g))
        if new is not None:
            g = new if isinstance(g, Tensor) else new.data
    return g


def _as_tensor(g: Any) -> Tensor:
    return g if isinstance(g, Tensor) else Tensor._make(g, None)


def _nodes_leading_to(order: list[Node], target_of: dict) -> set[Node]:
    """For grad(): the nodes whose backward sends grads on towards a target; the rest (a
    target's own node too, unless another target lies beyond it) are not run, as in torch."""
    needed: set[Node] = set()
    for node in reversed(order):  # producers before consumers
        for edge in node.edges:
            if edge is None:
                continue
            dest, slot = edge[0], edge[3]
            if dest in needed or (dest in target_of if type(dest) is not Node else (dest, slot) in target_of):
                needed.add(node)
                break
    return needed


def _call_backward(node: Node, g: Any, create_graph: bool) -> Any:
    if node.fn.multi_output:  # outputs nobody used get zeros
        g = [
            gi if gi is not None else _zeros(shape, dtype, device, create_graph)
            for gi, (shape, dtype, device) in zip(g, node.outputs)
        ]
    if create_graph and node.fn.composite is not None:
        return _composite_backward(node, g)
    node.build_graph = create_graph
    return node.fn.backward(node, *g) if node.fn.multi_output else node.fn.backward(node, g)


def _zeros(shape: Any, dtype: Any, device: Any, as_tensor: bool) -> Any:
    zeros = torch.zeros(shape, dtype=dtype, device=device)
    return Tensor(zeros) if as_tensor else zeros


def _composite_backward(node: Node, g: Any) -> list:
    """A fused op under create_graph: differentiate its composite of primitive ops instead,
    so the recorded backward is itself differentiable to any order."""
    if node.args is None:  # released by an earlier backward
        raise node.freed_error()
    node.build_graph = True
    _ = node.saved_tensors  # checks in-place changes
    args = node.args
    # an input passed twice (lstm_cell(x, h, h, w)) gets its whole grad once: it is one input
    # of the composite's graph, and the engine adds what each position sends
    first = {id(a): i for i, a in reversed(list(enumerate(args)))}
    wanted = [i for i, e in enumerate(node.edges) if e is not None and first[id(args[i])] == i]
    with grad_mode.enable_grad():
        out = node.fn.composite(*args, **node.kwargs)
    outs, grads_out = (list(out), list(g)) if node.fn.multi_output else ([out], [g])
    live = [(o, gi) for o, gi in zip(outs, grads_out) if o.requires_grad]
    local = _run([o for o, _ in live], [gi for _, gi in live], True, True, [args[i] for i in wanted], True)
    grads: list = [None] * len(args)
    for i, gi in zip(wanted, local):
        grads[i] = gi
    return grads


def _accumulate(t: Tensor, g: Any, shared: bool) -> None:
    """Add a grad into `t.grad`, PyTorch's way: in place when no graph is being built, and
    keeping the grad object itself only when nothing else holds it."""
    if isinstance(g, Tensor):  # create_graph: keep the grad's own graph, add out of place
        if t.grad is None:
            t.grad = g.clone() if shared or g.data._is_view() else g
        else:
            t.grad = t.grad + g
    elif t.grad is None:
        # compiled code cannot ask whether a grad is a view, so it copies too
        t.grad = Tensor._make(g.clone() if shared or torch.compiler.is_compiling() or g._is_view() else g, None)
    elif t.grad.requires_grad:
        t.grad = Tensor._make(t.grad.data + g, None)
    else:
        t.grad.data += g


class _LeafSinks:
    """Leaves with hooks: their grads are gathered until every use has sent its part, then
    `register_hook` hooks see the total (and may replace it), it is accumulated, and the
    post-accumulate-grad hooks fire, once per backward. (A leaf used several times, a tied
    or recurrent weight, gets a grad from each use; the engine counts the uses to come.)"""

    def __init__(self, order: list[Node], roots: list[Tensor], shared: set[int]):
        self.left: dict[Tensor, int] = {}
        self.gathered: dict[Tensor, Any] = {}
        self.shared = shared
        for node in order:
            for edge in node.edges:
                if edge is not None and type(edge[0]) is not Node and (edge[0]._pre_hooks or edge[0]._post_hooks):
                    self.left[edge[0]] = self.left.get(edge[0], 0) + 1
        for r in roots:
            if r.grad_fn is None and (r._pre_hooks or r._post_hooks):
                self.left[r] = self.left.get(r, 0) + 1  # its own root grad is one more use

    def collect(self, leaf: Tensor, g: Any) -> None:
        before = self.gathered.get(leaf)
        self.gathered[leaf] = g if before is None else before + g

    def done(self, node: Node) -> None:
        """`node` has sent its grads (or will send none): its leaves have one use fewer to wait for."""
        for edge in node.edges:
            if edge is not None and edge[0] in self.left:
                self.left[edge[0]] -= 1
                if not self.left[edge[0]]:
                    del self.left[edge[0]]
                    self.flush(edge[0])

    def finish(self) -> None:
        for leaf in list(self.left):  # uses that sent nothing, and leaves that were roots
            del self.left[leaf]
            self.flush(leaf)

    def flush(self, leaf: Tensor) -> None:
        g = self.gathered.pop(leaf, None)
        if g is not None:
            hooked = _hooked(leaf, g) if leaf._pre_hooks else g
            # (a hook may keep what it was handed, or what it returned: either is then held twice)
            _accumulate(leaf, hooked, shared=bool(leaf._pre_hooks) or id(g) in self.shared)
        if leaf.grad is not None:
            for hook in leaf._post_hooks or ():
                hook(leaf)


def _check_finite(node: Node, i: int, g: Any) -> None:
    data = g.data if isinstance(g, Tensor) else g
    if data.is_floating_point() and not torch.isfinite(data).all():
        raise RuntimeError(
            f"detect_anomaly: {node.name}.backward returned NaN or Inf in the grad of its input {i}. "
            f"Its forward was called at:\n{node.stack}"
        )
