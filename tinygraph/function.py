"""`Function`: one differentiable op, its forward and backward side by side.

`Node`: the record an op leaves on the tape. It is also the `ctx` that the op's
forward and backward receive, so whatever forward stores on it, backward finds.

How backward formulas stay differentiable: `forward` always works on plain
torch.Tensors. `backward` is written only with operators and methods that
torch.Tensor and tinygraph.Tensor share (`g * y`, `g.sum(dim)`, `g.masked_fill(m, 0)`).
The engine calls it with torch.Tensors when no graph is wanted (fast: nothing is
recorded), and with tinygraph Tensors under `create_graph=True`, where the very same
formula is recorded as a graph that can be differentiated again.
"""

from __future__ import annotations

import os
import traceback
from typing import Any, ClassVar

import torch

from . import grad_mode

OPS: dict[str, type[Function]] = {}
OUTPUT = object()  # marks a saved tensor that is the op's own output


def register(cls: type[Function]) -> type[Function]:
    """Class decorator that adds an op to the registry; the test suite then demands a spec for it."""
    if cls.__name__ in OPS:
        raise ValueError(f"An op named {cls.__name__} is already registered; give the new op another name.")
    OPS[cls.__name__] = cls
    return cls


class Node:
    """One recorded op: the op's class, where its inputs' grads go, and what it saved.

    `edges[i]` is None when input i needs no grad, else `(target, shape, dtype, slot)`:
    the target is the Node that made input i, or the leaf Tensor itself; the shape and
    dtype let the engine sum a broadcast grad back to the input's shape and cast it back;
    the slot says which output of a multi-output op input i was (0 for all others).
    """

    _retained: tuple = ()  # (slot, weakref) of non-leaf Tensors that asked for retain_grad()
    _released = False
    _saved: tuple = ()
    _links: tuple = ()
    stack: str | None = None  # where the user's code called the op, kept in anomaly mode only

    def __init__(self, fn: type[Function], args: tuple):
        self.fn = fn
        self.args = args  # the op's inputs, dropped once forward has run
        self.edges: tuple = ()
        self.needs_input_grad: tuple[bool, ...] = ()
        self.build_graph = False  # set by the engine: hand backward Tensors (True) or torch.Tensors

    @property
    def name(self) -> str:
        return self.fn.__name__

    def save_for_backward(self, *values: Any) -> None:
        """Keep tensors (or plain numbers, or None) for backward.

        Each torch.Tensor's version is noted, so an in-place change made before backward
        is caught. Inputs are remembered as the tinygraph Tensors they came from and the
        output as this node's own output, so under create_graph backward sees them as
        parts of the graph, not as constants.
        """
        self._saved = values
        if torch.compiler.is_compiling():  # compiled code cannot read versions: nothing to check then
            self._versions = [None] * len(values)
        else:
            self._versions = [v._version if isinstance(v, torch.Tensor) else None for v in values]

    def _link_saved(self, out: torch.Tensor) -> None:
        # Called once forward has returned: mark which saved tensors are inputs or the output.
        # (The output is marked by a constant, not by the node itself: a node pointing to
        # itself is a reference cycle that only Python's garbage collector would break.)
        links = []
        for v in self._saved:
            link = None
            if v is out:
                link = OUTPUT
            elif isinstance(v, torch.Tensor):
                for a in self.args:
                    if isinstance(a, Tensor) and a.data is v:
                        link = a
                        break
            links.append(link)
        self._links = links

    @property
    def saved_tensors(self) -> tuple:
        """What forward saved, checked against in-place changes and against reuse after release."""
        if self._released:
            raise self.freed_error()
        for v, version in zip(self._saved, self._versions):
            if version is not None and v._version != version:
                where = f" Its forward was called at:\n{self.stack}" if self.stack else ""
                raise RuntimeError(
                    f"A tensor saved by {self.name} for backward was modified in place after it was "
                    f"saved (its version went from {version} to {v._version}). Clone it before the "
                    f"in-place change, or use the out-of-place op.{where}"
                )
        if not self.build_graph:
            return self._saved
        return tuple(self._as_graph_tensor(v, link) for v, link in zip(self._saved, self._links))

    def freed_error(self) -> RuntimeError:
        return RuntimeError(
            f"Trying to backward through {self.name} a second time, but its saved tensors were "
            "already freed; pass retain_graph=True to the first backward() or grad() call."
        )

    def _as_graph_tensor(self, value: Any, link: Any) -> Any:
        if isinstance(link, Tensor):
            return link
        if link is OUTPUT:
            return Tensor._make(value, self)
        return Tensor(value) if isinstance(value, torch.Tensor) else value

    def release(self) -> None:
        """Free what backward needed: it has run and the graph is not retained."""
        if self._saved:
            self._released = True
            self._saved = self._links = ()
        self.args = None  # a fused op's inputs

    def __repr__(self) -> str:
        return f"<{self.name}>"


class Function:
    """Base class of every op. Subclasses define two static methods:

    - `forward(ctx, *inputs, **kwargs)`: compute on torch.Tensors; save what backward
      needs with `ctx.save_for_backward(...)` or as attributes of `ctx`. It may return
      a tuple: the first value is differentiable, the rest (indices, masks) are not.
    - `backward(ctx, grad)`: return one grad per positional input (None where there is
      none), written with operators and methods that torch and tinygraph share.

    An op with several differentiable outputs (split, unbind) sets `multi_output = True`:
    forward returns a tuple of them, and backward gets one grad per output (zeros for
    outputs that received none).

    `autocast = "low"` or `"float32"` says where the op runs under mixed precision.

    A fused op may also set `composite`: the same function composed of primitive ops.
    Its hand-written backward serves first-order gradients; under create_graph the
    engine differentiates the composite instead, so higher orders stay exact.
    """

    composite: ClassVar[Any] = None
    multi_output: ClassVar[bool] = False
    # under tinygraph.autocast: "low" casts floating inputs to its dtype, "float32" to float32
    autocast: ClassVar[str | None] = None

    @staticmethod
    def forward(ctx: Node, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError

    @staticmethod
    def backward(ctx: Node, grad: Any) -> Any:
        raise NotImplementedError

    @classmethod
    def apply(cls, *args: Any, **kwargs: Any) -> Any:
        """Run the op on Tensors (or torch.Tensors) and record it when a grad is needed."""
        if cls.autocast is not None and grad_mode.state.autocast is not None:
            args = _autocast(args, grad_mode.state.autocast if cls.autocast == "low" else torch.float32)
        ctx = Node(cls, args)
        record = grad_mode.state.enabled
        data, edges, needs = [], [], []
        has_tensor = recorded = False
        for a in args:  # one pass: the torch data, and where each input's grad must go
            if isinstance(a, Tensor):
                has_tensor = True
                data.append(a.data)
                if record and a.requires_grad:
                    recorded = True
                    edges.append((a if a.grad_fn is None else a.grad_fn, a.data.shape, a.data.dtype, a._slot))
                    needs.append(True)
                    continue
            else:
                data.append(a)
            edges.append(None)
            needs.append(False)
        ctx.needs_input_grad = tuple(needs)
        try:
            out = cls.forward(ctx, *data, **kwargs)
        except RuntimeError as err:
            _explain_device_mismatch(cls, args, err)
            raise
        if not has_tensor:
            return out  # called from a backward formula on torch.Tensors
        extra: tuple = ()
        if not cls.multi_output and type(out) is tuple:
            out, *extra = out

        if recorded:
            ctx.edges = edges
            # shape, dtype and device of each output: zeros for unused outputs, and for viz
            ctx.outputs = [(o.shape, o.dtype, o.device) for o in (out if cls.multi_output else (out,))]
            if ctx._saved:
                ctx._link_saved(out)
            ctx.kwargs = kwargs
            if grad_mode.state.anomaly:
                ctx.stack = _user_frames()
                if grad_mode.state.anomaly_forward:
                    _check_forward_finite(ctx, data, out)
            if grad_mode.state.observer is not None:
                grad_mode.state.observer.record(ctx, out)
        if not recorded or cls.composite is None:
            ctx.args = None  # only a fused op keeps its inputs, to differentiate its composite
        node = ctx if recorded else None
        if cls.multi_output:
            return tuple(Tensor._make(o, node, slot) for slot, o in enumerate(out))
        result = Tensor._make(out, node)
        return (result, *(Tensor._make(e, None) for e in extra)) if extra else result


def _autocast(args: tuple, dtype: torch.dtype) -> tuple:
    """Floating-point Tensor inputs cast to `dtype`, by recorded (differentiable) casts."""
    return tuple(a.to(dtype) if isinstance(a, Tensor) and a.is_floating_point() else a for a in args)


def _check_forward_finite(ctx: Node, data: list, out: Any) -> None:
    def finite(t: Any) -> bool:
        return not isinstance(t, torch.Tensor) or not t.is_floating_point() or bool(torch.isfinite(t).all())

    outputs = out if isinstance(out, (tuple, list)) else (out,)
    if all(finite(d) for d in data) and not all(finite(o) for o in outputs):
        raise RuntimeError(
            f"detect_anomaly: the forward of {ctx.name} made NaN or Inf out of finite inputs. "
            f"It was called at:\n{ctx.stack}"
        )


def _user_frames() -> str:
    """Where the op was called from, tinygraph's own frames left out."""
    here = os.path.dirname(os.path.abspath(__file__))
    frames = [f for f in traceback.extract_stack() if not os.path.abspath(f.filename).startswith(here)]
    return "".join(traceback.format_list(frames))


def _explain_device_mismatch(cls: type[Function], args: tuple, err: RuntimeError) -> None:
    devices = {str(a.device) for a in args if isinstance(a, (Tensor, torch.Tensor))}
    if len(devices) > 1:
        raise RuntimeError(
            f"{cls.__name__} got tensors on different devices ({', '.join(sorted(devices))}); "
            "move them to one device with .to(device) first."
        ) from err


# Tensor's methods call ops, so each module imports the other once its own names exist.
from .tensor import Tensor  # noqa: E402
