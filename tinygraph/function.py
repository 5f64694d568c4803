"""`Function`: one differentiable op, its forward and backward side by side.

`Node`: the record an op leaves on the tape. It is also the `ctx` that the op's
forward and backward receive, so whatever forward stores on it, backward finds.

`register("Tensor.exp tinygraph.exp")`: adds an op to the registry (the test suite then
demands a spec for it) and installs the public names it provides: a method of Tensor, a
function of `tinygraph`, of `tinygraph.nn.functional` (`F.`) or of `tinygraph.linalg`
(`linalg.`). `public(...)` does the same for a function composed of ops. A name of the
form `Tensor.name_` or `Tensor.__iname__` is the in-place variant of the op, and
`Tensor.__rname__` the reflected operator; both are derived, never written by hand.

How backward formulas stay differentiable: `forward` always works on plain
torch.Tensors. `backward` is written only with operators and methods that
torch.Tensor and tinygraph.Tensor share (`g * y`, `g.sum(dim)`, `g.masked_fill(m, 0)`).
The engine calls it with torch.Tensors when no graph is wanted (fast: nothing is
recorded), and with tinygraph Tensors under `create_graph=True`, where the very same
formula is recorded as a graph that can be differentiated again.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import os
import sys
import traceback
from collections.abc import Callable
from typing import Any, ClassVar

import torch

from . import grad_mode
from .tensor import Tensor

OPS: dict[str, type[Function]] = {}
PUBLIC: dict[str, Callable] = {}  # "Tensor.exp", "tinygraph.exp", "F.gelu" -> what it calls
OUTPUT = object()  # marks a saved tensor that is the op's own output
NAMESPACES = {"Tensor": "", "tinygraph": "", "F": ".nn.functional", "linalg": ".linalg"}
NUMPY_NAMES = {"axis": "dim", "keepdims": "keepdim"}  # torch takes numpy's names for these everywhere


def register(provides: Any = "") -> Any:
    """Class decorator: add an op to the registry and install the public names it provides
    (`@register("Tensor.exp tinygraph.exp")`; a bare `@register` provides none). The names
    call the op's `call` static method when it has one (argument handling, torch's
    signature), else `apply`."""

    def add(cls: type[Function]) -> type[Function]:
        if cls.__name__ in OPS:
            raise ValueError(f"An op named {cls.__name__} is already registered; give the new op another name.")
        OPS[cls.__name__] = cls
        cls.provides = tuple(provides.split())
        if cls.provides:
            public(provides)(cls.__dict__["call"].__func__ if "call" in cls.__dict__ else cls.apply)
        return cls

    if isinstance(provides, type):  # used bare: @register
        cls, provides = provides, ""
        return add(cls)
    return add


def public(provides: str) -> Callable[[Callable], Callable]:
    """Decorator: install a function under public names (see the module docstring); the
    function itself is returned unchanged."""

    def install(fn: Callable) -> Callable:
        for full in provides.split():
            space, name = full.split(".", 1)
            if space not in NAMESPACES:
                raise ValueError(f"{full}: the namespaces are {', '.join(NAMESPACES)}.")
            wrapped = _named(_variant(fn, space, name), full)
            PUBLIC[full] = wrapped
            setattr(_namespace(space), name, wrapped)
        return fn

    return install


def _namespace(space: str) -> Any:
    if space == "Tensor":
        return Tensor
    package = sys.modules[__package__]
    return importlib.import_module(NAMESPACES[space], __package__) if NAMESPACES[space] else package


def _variant(fn: Callable, space: str, name: str) -> Callable:
    """The callable behind one public name: fn itself, its reflected form, or its in-place form."""
    if space != "Tensor":
        return fn
    dunder = name.startswith("__") and name.endswith("__")
    variant = fn
    if dunder and name[2] == "r" and name not in ("__rshift__", "__repr__"):
        variant = lambda self, other: fn(other, self)  # noqa: E731  (2 - x is Sub(2, x))
    elif (dunder and name[2] == "i" and name not in ("__index__", "__int__", "__invert__", "__iter__")) or (
        not dunder and name.endswith("_")
    ):
        from .inplace import in_place  # (it needs this module)

        variant = in_place(fn, name)
    if variant is not fn:
        variant.__wrapped__ = fn  # what it is a form of (tools/list_ops.py reads it)
    return variant


def _named(fn: Callable, full: str) -> Callable:
    """A public function: it bears its public name, takes numpy's `axis=` and `keepdims=`
    for `dim=` and `keepdim=` (as torch's functions do), and a call with arguments it does
    not take is a TypeError that says which, as a sentence."""
    short = full.split(".", 1)[1]

    @functools.wraps(fn)
    def named(*args: Any, **kwargs: Any) -> Any:
        if kwargs and ("axis" in kwargs or "keepdims" in kwargs):
            kwargs = {NUMPY_NAMES.get(k, k): v for k, v in kwargs.items()}
        try:
            return fn(*args, **kwargs)
        except TypeError as err:
            raise _unsupported(fn, full, args, kwargs) or err from None

    named.__name__ = named.__qualname__ = short
    return named


def _unsupported(fn: Callable, full: str, args: tuple, kwargs: dict) -> TypeError | None:
    """When the arguments themselves do not fit `fn`'s signature (not a failure inside it)."""
    op = getattr(fn, "__self__", None)  # Op.apply takes what Op.forward takes, after ctx
    try:
        signature = inspect.signature(op.forward if isinstance(op, type) else fn)
    except (TypeError, ValueError):
        return None
    if isinstance(op, type):
        signature = signature.replace(parameters=list(signature.parameters.values())[1:])
    if "args" in signature.parameters:  # *args: the call's own checks speak for it
        return None
    try:
        signature.bind(*args, **kwargs)
    except TypeError as err:
        return TypeError(f"{full}(): {err}; tinygraph's {full.split('.', 1)[1]} takes {signature}.")
    return None


def torch_equivalent(func: Any) -> Callable:
    """What a torch function called with tinygraph Tensors runs instead: the tinygraph
    function of the same name, or one that raises a sentence saying what to do."""
    name = getattr(func, "__name__", str(func))
    module = getattr(func, "__module__", None) or ""
    if getattr(func, "__objclass__", None) is not None:  # a torch.Tensor method
        candidates = [f"Tensor.{name}", f"tinygraph.{name}"]
    elif "nn" in module:
        candidates = [f"F.{name}", f"tinygraph.{name}"]
    else:
        candidates = [f"tinygraph.{name}", f"F.{name}"]
    for key in candidates:
        if key in PUBLIC:
            return PUBLIC[key]

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise TypeError(
            f"torch.{name} was given a tinygraph Tensor, and tinygraph has no {name}; call a tinygraph "
            "function instead (see the README's list of ops), or pass `.data` (a plain torch.Tensor, "
            "outside the graph: no grad flows through it)."
        )

    return refuse


class Node:
    """One recorded op: the op's class, where its inputs' grads go, and what it saved.

    `edges[i]` is None when input i needs no grad, else `(target, shape, dtype, slot)`:
    the target is the Node that made input i, or the leaf Tensor itself; the shape and
    dtype let the engine sum a broadcast grad back to the input's shape and cast it back;
    the slot says which output of a multi-output op input i was (0 for all others).
    """

    _retained: tuple = ()  # (slot, weakref) of non-leaf Tensors that asked for retain_grad()
    waiting: tuple = ()  # for an op that folds: the grad already waiting for each input (see Function)
    folded: tuple = ()  # and which of them its backward added in
    _hooks: tuple = ()  # (slot, hook) of register_hook on this node's outputs
    _released = False
    _saved: tuple = ()
    _versions: tuple = ()
    _links: tuple = ()
    stack: str | None = None  # where the user's code called the op, kept in anomaly mode only

    def __init__(self, fn: type[Function], args: tuple):
        self.fn = fn
        self.name = fn.__name__  # what viz and errors call it; an op may say more (Amax as "Amin")
        self.args = args  # the op's inputs, dropped once forward has run
        self.edges: tuple = ()
        self.needs_input_grad: tuple[bool, ...] = ()
        self.build_graph = False  # set by the engine: hand backward Tensors (True) or torch.Tensors

    def save_for_backward(self, *values: Any) -> None:
        """Keep tensors (or plain numbers, or None) for backward.

        Each torch.Tensor's version is noted, so an in-place change made before backward
        is caught. Inputs are remembered with the graph they had when saved, and the
        output as this node's own output, so under create_graph backward sees them as
        parts of the graph, not as constants.
        """
        self._saved = values
        if torch.compiler.is_compiling():  # compiled code cannot read versions: nothing to check then
            self._versions = [None] * len(values)
        else:
            self._versions = [v._version if isinstance(v, torch.Tensor) else None for v in values]

    def _link_saved(self, out: Any) -> None:
        # Called once forward has returned: mark which saved tensors are inputs or outputs.
        # An input is linked to the graph it had at this moment (its leaf, or its node and
        # slot), so a later in-place change of that Tensor object does not change the meaning
        # of what was saved. (The output is marked by a constant, not by the node itself: a
        # node pointing to itself is a reference cycle that only the garbage collector breaks.)
        # (by identity: an output before any input, else the first input holding a saved tensor)
        outputs = out if self.fn.multi_output else (out,)
        links = []
        for v in self._saved:
            links.append(None)
            if not isinstance(v, torch.Tensor):
                continue
            for slot, o in enumerate(outputs):
                if o is v:
                    links[-1] = (OUTPUT, slot)
                    break
            else:
                for a in self.args:
                    if isinstance(a, Tensor) and a.data is v:
                        links[-1] = a if a.grad_fn is None else (a.grad_fn, a._slot)
                        break
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
        if isinstance(link, tuple):
            node, slot = link
            return Tensor._make(value, self if node is OUTPUT else node, slot)
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

    and, optionally, `call(...)`: what the public names run, with torch's signature (it
    checks and arranges the arguments, then calls `apply`).

    An op with several differentiable outputs (split, unbind) sets `multi_output = True`:
    forward returns a tuple of them, and backward gets one grad per output (zeros for
    outputs that received none). An op whose output shares its first input's memory
    (reshape, transpose, x[i]) sets `view = True`, so that in-place changes through
    either are tracked (see inplace.py).

    `autocast = "low"` or `"float32"` says where the op runs under mixed precision.

    A fused op may also set `composite`: the same function composed of primitive ops.
    Its hand-written backward serves first-order gradients; under create_graph the
    engine differentiates the composite instead, so higher orders stay exact.

    An op whose backward can add, in the same pass, a grad that is already waiting for one
    of its inputs (the residual stream's grad, for a layer norm) sets `folds = True`. The
    engine then hands backward the waiting grads in `ctx.waiting` (one per input, None
    where none waits or it cannot be folded; an empty tuple where nothing is folded at all:
    under grad(), create_graph, an observer or anomaly mode), and backward names those it
    added in `ctx.folded`; the engine takes each such grad in place of the one that waited.
    """

    composite: ClassVar[Any] = None
    folds: ClassVar[bool] = False
    multi_output: ClassVar[bool] = False
    view: ClassVar[bool] = False
    provides: ClassVar[tuple[str, ...]] = ()
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
        state = grad_mode.local.state
        if cls.autocast is not None and state.autocast is not None:
            args = _autocast(args, state, state.autocast if cls.autocast == "low" else torch.float32)
        if cls.composite is not None and state.composites:
            return cls.composite(*args, **kwargs)
        ctx = Node(cls, args)
        record = state.enabled
        data, edges, needs = [], [], []
        has_tensor = recorded = False
        for a in args:  # one pass: the torch data, and where each input's grad must go
            if isinstance(a, Tensor):
                has_tensor = True
                if a._base is not None and record:
                    _bring_view_up_to_date(a)
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
            if cls.multi_output:
                ctx.outputs = [(o.shape, o.dtype, o.device) for o in out]
            else:
                ctx.outputs = ((out.shape, out.dtype, out.device),)
            if ctx._saved:
                ctx._link_saved(out)
            ctx.kwargs = kwargs
            if state.anomaly:
                ctx.stack = _user_frames()
                if state.anomaly_forward:
                    _check_forward_finite(ctx, data, out)
            if state.observer is not None:
                state.observer.record(ctx, out)
        if not recorded or cls.composite is None:
            ctx.args = None  # only a fused op keeps its inputs, to differentiate its composite
        node = ctx if recorded else None
        if cls.multi_output:
            outs = tuple(Tensor._make(o, node, slot) for slot, o in enumerate(out))
            if cls.view:
                for o in outs:
                    _mark_view(o, args[0], "multi")
            return outs
        result = Tensor._make(out, node)
        if cls.view:
            _mark_view(result, args[0], None if record else "no_grad")
        return (result, *(Tensor._make(e, None) for e in extra)) if extra else result


def _mark_view(t: Tensor, source: Any, kind: str | None) -> None:
    """Note that `t` shares its memory with `source`'s (an in-place change of either is then
    tracked), and what kind of view it is (torch refuses in-place changes of some)."""
    if isinstance(source, Tensor) and not torch.compiler.is_compiling() and t.data._is_view():
        t._base = source._base if source._base is not None else source
        t._version = t.data._version
        t._view_kind = kind


def _bring_view_up_to_date(t: Tensor) -> None:
    if not torch.compiler.is_compiling() and t.data._version != t._version:
        from .inplace import bring_up_to_date

        bring_up_to_date(t)


def _autocast(args: tuple, state: Any, dtype: torch.dtype) -> tuple:
    """Floating-point Tensor inputs on the autocast device, by recorded (differentiable) casts."""
    return tuple(
        a.to(dtype) if isinstance(a, Tensor) and a.is_floating_point() and a.device.type == state.autocast_device else a
        for a in args
    )


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
