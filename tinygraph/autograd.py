"""The backward pass: walk the tape from the outputs to the leaves, one Node at a time.

The order is a topological sort computed with an explicit stack (a 100,000-op chain
needs no recursion). Each Node's grad is the sum of what its consumers sent it; when it
is complete the Node's backward runs, its saved tensors are freed at once (unless
`retain_graph`), and the grads it returns are summed back to each input's shape and
dtype (broadcasting is undone here, once, not in every op) and passed on.
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
) -> None:
    """Accumulate d(tensors)/d(leaf) into every leaf's `.grad`, like torch.autograd.backward."""
    roots, grads = _roots_and_grads(tensors, grad_tensors, create_graph)
    _run(roots, grads, create_graph if retain_graph is None else retain_graph, create_graph)


def grad(
    outputs: Tensor | Sequence[Tensor],
    inputs: Tensor | Sequence[Tensor],
    grad_outputs: Any = None,
    retain_graph: bool | None = None,
    create_graph: bool = False,
    allow_unused: bool = False,
) -> tuple[Tensor | None, ...]:
    """Return d(outputs)/d(inputs) without touching any `.grad`, like torch.autograd.grad."""
    inputs = [inputs] if isinstance(inputs, Tensor) else list(inputs)
    for i, x in enumerate(inputs):
        if not isinstance(x, Tensor) or not x.requires_grad:
            raise RuntimeError(f"grad(): inputs[{i}] does not require grad; call requires_grad_() on it first.")
    roots, grads = _roots_and_grads(outputs, grad_outputs, create_graph)
    retain = create_graph if retain_graph is None else retain_graph
    found = _run(roots, grads, retain, create_graph, targets=inputs)
    if not allow_unused and any(g is None for g in found):
        raise RuntimeError(
            "One of the inputs was not used to compute the outputs; pass allow_unused=True to get None for it."
        )
    return tuple(found)


def _roots_and_grads(tensors: Any, grad_tensors: Any, create_graph: bool) -> tuple[list, list]:
    roots = [tensors] if isinstance(tensors, Tensor) else list(tensors)
    if grad_tensors is None or isinstance(grad_tensors, (Tensor, torch.Tensor)):
        grad_tensors = [grad_tensors] * len(roots) if len(roots) == 1 or grad_tensors is None else None
    if grad_tensors is None or len(grad_tensors) != len(roots):
        raise RuntimeError("Pass one gradient per output tensor (a list as long as the outputs).")
    grads = []
    for i, (root, g) in enumerate(zip(roots, grad_tensors)):
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
        grads.append(g)
    return roots, grads


def _topological_order(roots: list[Node], stop: set) -> list[Node]:
    """Nodes reachable from `roots`, every consumer before what it consumes (iterative DFS)."""
    order: list[Node] = []
    seen = set(roots)
    for root in roots:
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
    # a target is a leaf Tensor, or (node, slot) for the output of an op
    target_of = {(t if t.grad_fn is None else (t.grad_fn, t._slot)): i for i, t in enumerate(targets or ())}
    target_nodes = {t.grad_fn for t in targets or () if t.grad_fn is not None}
    pending: dict[Node, Any] = {}  # a node's grad so far; a list with one per output for multi-output ops

    def arrive(dest: Any, slot: int, g: Any, shared: bool) -> None:
        if type(dest) is not Node:  # a leaf
            if targets is None:
                _accumulate(dest, g, shared)
            elif dest in target_of:
                i = target_of[dest]
                found[i] = g if found[i] is None else found[i] + g
            return
        if targets is not None:
            i = target_of.get((dest, slot))
            if i is not None:
                found[i] = g if found[i] is None else found[i] + g
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
    needed = _nodes_leading_to(order, target_of, target_nodes) if targets is not None else set()
    user_given = {id(g) for g in root_grads}
    for r, g in zip(roots, root_grads):
        arrive(r.grad_fn if r.grad_fn is not None else r, r._slot, g, True)

    with grad_mode.set_grad_enabled(create_graph):
        hooks = _HookCounts(order) if targets is None else None
        for node in order:
            g = pending.pop(node, None)
            if g is None:
                if hooks is not None and hooks.left:
                    hooks.done(node)
                continue
            for slot, ref in node._retained:
                if targets is None and ref() is not None:
                    _accumulate(ref(), g[slot] if node.fn.multi_output else g, True)
            if targets is not None and (node in stop or node not in needed):
                continue
            grads = _call_backward(node, g, create_graph)
            if grad_mode.state.observer is not None:
                grad_mode.state.observer.backward_ran(node, g, grads)
            if not retain_graph:
                node.release()
            if type(grads) is not tuple and type(grads) is not list:
                grads = (grads,)
            if len(grads) != len(node.edges) and (len(grads) > len(node.edges) or any(node.edges[len(grads) :])):
                raise RuntimeError(
                    f"{node.name}.backward returned {len(grads)} grads for {len(node.edges)} inputs; "
                    "return one per positional input that needs a grad (None where there is none)."
                )
            for i, (edge, g_in) in enumerate(zip(node.edges, grads)):
                if edge is None or g_in is None:
                    continue
                dest, shape, dtype, slot = edge
                if g_in.shape != shape:
                    g_in = g_in.sum_to_size(shape)
                if g_in.dtype != dtype:
                    g_in = g_in.to(dtype)
                if node.stack is not None:
                    _check_finite(node, i, g_in)
                if targets is None and type(dest) is Node and not dest.fn.multi_output:
                    pending[dest] = g_in if dest not in pending else pending[dest] + g_in  # the common case
                    continue
                # The same grad object handed to two inputs (as `a + b` does) or given by
                # the user must be copied before a leaf keeps it and later adds in place.
                shared = id(g_in) in user_given or sum(x is g_in for x in grads) > 1
                arrive(dest, slot, g_in, shared)
            if hooks is not None and hooks.left:
                hooks.done(node)
        if hooks is not None:
            hooks.finish(r for r in roots if r.grad_fn is None)
    return found


def _nodes_leading_to(order: list[Node], target_of: dict, target_nodes: set) -> set[Node]:
    """For grad(): the nodes whose backward can reach a target; the rest are skipped."""
    needed: set[Node] = set(target_nodes)
    for node in reversed(order):  # producers before consumers
        for edge in node.edges:
            if edge is not None and (edge[0] in needed or (type(edge[0]) is not Node and edge[0] in target_of)):
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
    wanted = [i for i, e in enumerate(node.edges) if e is not None]
    with grad_mode.enable_grad():
        out = node.fn.composite(*args, **node.kwargs)
    outs, grads_out = (list(out), list(g)) if node.fn.multi_output else ([out], [g])
    local = _run(outs, grads_out, True, True, targets=[args[i] for i in wanted], stop_at_targets=True)
    grads: list = [None] * len(args)
    for i, gi in zip(wanted, local):
        grads[i] = gi
    return grads


def _accumulate(t: Tensor, g: Any, shared: bool) -> None:
    """Add a grad into `t.grad`, PyTorch's way: in place when no graph is being built."""
    if isinstance(g, Tensor):  # create_graph: keep the grad's own graph, add out of place
        t.grad = g if t.grad is None else t.grad + g
    elif t.grad is None:
        # a view may alias someone else's tensor (compiled code cannot ask, so it copies too)
        t.grad = Tensor._make(g.clone() if shared or torch.compiler.is_compiling() or g._is_view() else g, None)
    elif t.grad.requires_grad:
        t.grad = Tensor._make(t.grad.data + g, None)
    else:
        t.grad.data += g


class _HookCounts:
    """Post-accumulate-grad hooks fire once per backward, when a leaf's grad is complete: a
    leaf used several times (a tied weight, a recurrent one) gets a grad from each use, so
    the engine counts the uses still to come and fires when the count reaches zero."""

    def __init__(self, order: list[Node]):
        self.left: dict[Tensor, int] = {}
        for node in order:
            for edge in node.edges:
                if edge is not None and type(edge[0]) is not Node and edge[0]._hooks:
                    self.left[edge[0]] = self.left.get(edge[0], 0) + 1

    def done(self, node: Node) -> None:
        """`node` has sent its grads (or will send none): its leaves have one use fewer to wait for."""
        for edge in node.edges:
            if edge is not None and edge[0] in self.left:
                self.left[edge[0]] -= 1
                if not self.left[edge[0]]:
                    del self.left[edge[0]]
                    self.fire(edge[0])

    def finish(self, leaf_roots: Any) -> None:
        for leaf in [*self.left, *(r for r in leaf_roots if r._hooks)]:  # uses that sent nothing; leaves as roots
            self.fire(leaf)
        self.left.clear()

    @staticmethod
    def fire(leaf: Tensor) -> None:
        if leaf.grad is not None:
            for hook in leaf._hooks:
                hook(leaf)


def _check_finite(node: Node, i: int, g: Any) -> None:
    data = g.data if isinstance(g, Tensor) else g
    if data.is_floating_point() and not torch.isfinite(data).all():
        raise RuntimeError(
            f"detect_anomaly: {node.name}.backward returned NaN or Inf in the grad of its input {i}. "
            f"Its forward was called at:\n{node.stack}"
        )
