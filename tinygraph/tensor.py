"""`Tensor`: a torch.Tensor (`.data`) plus what backprop needs: `.grad`, `.requires_grad`
and `.grad_fn`, the Node of the op that made it (None for a leaf).

This file holds what a tensor *is*; what can be *done* with one (`exp`, `sum`, `+`,
`x[i]`...) is installed from the op registry (`tinygraph.function.PUBLIC`), where each op
names the methods and functions it provides, next to its forward and backward.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from . import grad_mode


def _to_torch(data: Any, dtype: torch.dtype | None = None, device: Any = None) -> torch.Tensor:
    if isinstance(data, Tensor):
        data = data.data
    if isinstance(data, torch.Tensor):
        return data.detach().to(device=device, dtype=dtype, copy=True)
    if isinstance(data, np.ndarray):
        return torch.from_numpy(np.array(data)).to(device=device, dtype=dtype)
    if isinstance(data, (list, tuple)):
        data = [d.tolist() if isinstance(d, Tensor) else d for d in data]
    return torch.tensor(data, dtype=dtype, device=device)


def require_one_dtype(op: str, **tensors: Any) -> None:
    """Refuse, as torch's op does (it does not promote), tensors of different dtypes; None
    and plain numbers are left out."""
    named = {name: t for name, t in tensors.items() if isinstance(t, (Tensor, torch.Tensor))}
    if len({t.dtype for t in named.values()}) > 1:
        got = ", ".join(f"{name} {t.dtype}" for name, t in named.items())
        raise RuntimeError(
            f"{op} needs its tensors in one dtype (it does not promote, as torch's does not), but got {got}; "
            "convert them with .to(dtype) first."
        )


def memory_order(t: torch.Tensor) -> list[int]:
    """t's dims from the outermost in memory to the innermost (by stride; ties keep their
    order), the last dim innermost."""
    order: list[int] = []
    for d in range(t.ndim - 1):  # an insertion sort: torch.compile cannot sort symbolic strides
        i = len(order)
        while i and t.stride(order[i - 1]) < t.stride(d):
            i -= 1
        order.insert(i, d)
    return [*order, t.ndim - 1] if t.ndim else []


def empty_in_order(shape: Any, order: list[int], like: torch.Tensor) -> torch.Tensor:
    """An empty tensor of `shape`, like's dtype and device, whose dims lie in memory in
    `order` (a grad laid out as its input's memory, so going back through views is free)."""
    return like.new_empty([shape[d] for d in order]).permute([order.index(d) for d in range(len(shape))])


# buffers made by joinable_empty, by id (torch.Tensor's == is elementwise): gone with them
_JOINABLE: weakref.WeakValueDictionary[int, torch.Tensor] = weakref.WeakValueDictionary()


def joinable_empty(shape: Any, order: list[int], like: torch.Tensor) -> torch.Tensor:
    """`empty_in_order`, for a kernel that writes several grads as slices of it (split off
    by `unbind`): unbind's backward may then join them by a view, as no one else holds this
    memory (`joinable`). Grads from anywhere else are stacked, a copy, as torch's are."""
    t = empty_in_order(shape, order, like)
    _JOINABLE[id(t._base)] = t._base
    return t


def joinable(t: Any) -> bool:
    """Whether `t` is a view of a buffer made by `joinable_empty` (never inside torch.compile,
    where no kernel makes one)."""
    if torch.compiler.is_compiling():
        return False
    base = getattr(t, "_base", None) if type(t) is torch.Tensor else None
    return base is not None and _JOINABLE.get(id(base)) is base


def stacked_view(tensors: Any, dim: int) -> torch.Tensor | None:
    """`torch.stack(tensors, dim)` as a view of their own memory, where they are slices of one
    tensor along a dim (one storage, one shape and strides, each a fixed step past the one
    before, no element shared): as q, k and v are, split off a QKV projection. None where they
    are not, and for anything but plain torch.Tensors outside torch.compile (whose tensors have
    no addresses to compare)."""
    first = tensors[0]
    if len(tensors) < 2 or torch.compiler.is_compiling() or type(first) is not torch.Tensor:
        return None
    step = tensors[1].storage_offset() - first.storage_offset()
    where = first.untyped_storage().data_ptr()
    for i, t in enumerate(tensors):
        if not (
            type(t) is torch.Tensor
            and t.shape == first.shape
            and t.stride() == first.stride()
            and t.dtype == first.dtype
            and t.storage_offset() == first.storage_offset() + i * step
            and t.untyped_storage().data_ptr() == where
        ):
            return None
    dim %= first.ndim + 1
    shape = (*first.shape[:dim], len(tensors), *first.shape[dim:])
    strides = (*first.stride()[:dim], step, *first.stride()[dim:])
    return None if overlaps(shape, strides) else first.as_strided(shape, strides, first.storage_offset())


def overlaps(shape: Any, strides: Any) -> bool:
    """Whether two elements of a tensor of this shape and these strides share memory (an
    expanded dim, unfolded windows)."""
    reach = 1  # how far the dims with smaller strides reach: the next stride must pass it
    for size, stride in sorted(zip(shape, strides), key=lambda p: p[1]):
        if size > 1:
            if stride < reach:
                return True
            reach += stride * (size - 1)
    return False


def packed_heads(qkv: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """q, k and v (..., H, L, E) as views of qkv (..., L, 3, H, E), flash-attn's packed heads."""
    return tuple(t.transpose(-3, -2) for t in qkv.unbind(-3))


def unwrap(value: Any) -> Any:
    """Tensors (also inside tuples and lists) as their torch data; anything else as it is."""
    if isinstance(value, Tensor):
        return value.data
    if isinstance(value, (tuple, list)):
        return type(value)(unwrap(v) for v in value)
    return value


class Tensor:
    """A tensor that records the ops applied to it so that `backward()` can find grads.

    Create one with `tinygraph.tensor(...)` or a factory (`zeros`, `randn`...). Its
    `.data` is a plain torch.Tensor, never with torch's own `requires_grad`.
    """

    __slots__ = (
        "__weakref__",
        "_base",  # for a view: the tensor whose memory it shares (see inplace.py); else None
        "_post_hooks",  # post-accumulate-grad hooks (leaves)
        "_pre_hooks",  # register_hook hooks of a leaf (a non-leaf's live on its Node)
        "_slot",  # which output of its op this is (ops with several outputs)
        "_version",  # for a view: the memory's version when its graph was last brought up to date
        "_view_kind",  # for a view: "multi" (one of several outputs, as split's), "no_grad" (made unrecorded) or None
        "data",
        "grad",
        "grad_fn",
        "requires_grad",
    )
    __array_priority__ = 1000  # numpy defers to our reflected operators

    def __hash__(self) -> int:  # == builds a Tensor, so hashing stays by identity (in Python: compilable)
        return id(self)

    def __init__(self, data: Any, requires_grad: bool = False):
        self.data = data if isinstance(data, torch.Tensor) else _to_torch(data)
        self.grad: Tensor | None = None
        self.grad_fn = None
        self._slot = 0
        self._base = self._pre_hooks = self._post_hooks = None
        self._version = 0
        self.requires_grad = False
        if requires_grad:
            self.requires_grad_()

    @classmethod
    def _make(cls, data: torch.Tensor, grad_fn: Any, slot: int = 0) -> Tensor:
        # The fast constructor every op uses.
        t = object.__new__(cls)
        t.data, t.grad, t.grad_fn, t._slot, t._base, t._pre_hooks, t._post_hooks = (
            data,
            None,
            grad_fn,
            slot,
            None,
            None,
            None,
        )
        t.requires_grad = grad_fn is not None
        return t

    # ---- what it is -------------------------------------------------------------------
    @property
    def shape(self) -> torch.Size:
        return self.data.shape

    @property
    def dtype(self) -> torch.dtype:
        return self.data.dtype

    @property
    def device(self) -> torch.device:
        return self.data.device

    @property
    def ndim(self) -> int:
        return self.data.ndim

    @property
    def is_leaf(self) -> bool:
        """True for tensors no recorded op made: parameters, inputs, constants."""
        return self.grad_fn is None

    @property
    def is_cuda(self) -> bool:
        return self.data.is_cuda

    @property
    def T(self) -> Tensor:
        return self.permute(*reversed(range(self.ndim)))

    @property
    def mT(self) -> Tensor:
        return self.transpose(-2, -1)

    def size(self, dim: int | None = None) -> Any:
        return self.data.size() if dim is None else self.data.size(dim)

    def dim(self) -> int:
        return self.data.dim()

    def numel(self) -> int:
        return self.data.numel()

    def element_size(self) -> int:
        return self.data.element_size()

    def stride(self, dim: int | None = None) -> Any:
        return self.data.stride() if dim is None else self.data.stride(dim)

    def is_floating_point(self) -> bool:
        return self.data.is_floating_point()

    def is_complex(self) -> bool:
        return self.data.is_complex()

    def is_contiguous(self) -> bool:
        return self.data.is_contiguous()

    def item(self) -> Any:
        return self.data.item()

    def tolist(self) -> Any:
        return self.data.tolist()

    def numpy(self) -> np.ndarray:
        return self.data.detach().cpu().numpy()

    def __len__(self) -> int:
        return len(self.data)

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    def __bool__(self) -> bool:
        return bool(self.data)

    def __float__(self) -> float:
        return float(self.data)

    def __int__(self) -> int:
        return int(self.data)

    def __index__(self) -> int:
        return self.data.__index__()

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        return self.numpy() if dtype is None else self.numpy().astype(dtype)

    def __format__(self, spec: str) -> str:
        return format(self.item(), spec) if spec and self.numel() == 1 else str(self)

    def __repr__(self) -> str:
        text = repr(self.data)[:-1]
        if self.grad_fn is not None:
            return f"{text}, grad_fn=<{self.grad_fn.name}>)"
        return f"{text}, requires_grad=True)" if self.requires_grad else text + ")"

    # ---- autograd -------------------------------------------------------------------------
    def backward(
        self,
        gradient: Any = None,
        retain_graph: bool | None = None,
        create_graph: bool = False,
        inputs: Any = None,
    ) -> None:
        """Accumulate this tensor's grad with respect to every leaf into the leaves' `.grad`
        (or only into `inputs`' when they are given).

        A non-scalar tensor needs `gradient` (of its shape). The graph's saved tensors
        are freed as backward goes; pass `retain_graph=True` to call backward again, and
        `create_graph=True` to record backward itself for higher-order grads.
        """
        from .autograd import backward

        backward(self, gradient, retain_graph, create_graph, inputs=inputs)

    def requires_grad_(self, requires_grad: bool = True) -> Tensor:
        """Ask (or stop asking) for this leaf's grad; only floating-point leaves can."""
        if self.grad_fn is not None:
            if requires_grad:
                return self  # torch: a no-op on a tensor that already requires grad
            raise RuntimeError(
                "requires_grad_(False) only applies to leaves; this tensor was made by an op. "
                "Use .detach() for a tensor outside the graph."
            )
        if requires_grad and not (self.data.is_floating_point() or self.data.is_complex()):
            raise RuntimeError(
                f"Only floating-point tensors can require grad, and this one is {self.dtype}; "
                "convert it first, e.g. x.float()."
            )
        self.requires_grad = requires_grad
        return self

    def retain_grad(self) -> None:
        """Keep `.grad` on this non-leaf tensor after backward (leaves keep it anyway)."""
        import weakref

        if self.grad_fn is not None:
            self.grad_fn._retained = (*self.grad_fn._retained, (self._slot, weakref.ref(self)))
        elif not self.requires_grad:
            raise RuntimeError("retain_grad() needs a tensor that requires grad.")

    @property
    def retains_grad(self) -> bool:
        return self.grad_fn is not None and any(ref() is self for _, ref in self.grad_fn._retained)

    def register_hook(self, hook: Callable[[Tensor], Tensor | None]) -> Callable[[], None]:
        """Call `hook(grad)` when this tensor's grad has been computed; a hook that returns
        a tensor replaces the grad. Returns a function that removes the hook."""
        if not self.requires_grad:
            raise RuntimeError("register_hook() needs a tensor that requires grad.")
        if self.grad_fn is None:
            self._pre_hooks = [*(self._pre_hooks or ()), hook]
            return lambda: self._pre_hooks.remove(hook)
        entry = (self._slot, hook)
        self.grad_fn._hooks = (*self.grad_fn._hooks, entry)
        node = self.grad_fn

        def remove() -> None:
            node._hooks = tuple(h for h in node._hooks if h is not entry)

        return remove

    def register_post_accumulate_grad_hook(self, hook: Callable[[Tensor], None]) -> Callable[[], None]:
        """Call `hook(tensor)` each time backward has added into this leaf's `.grad`.
        Returns a function that removes the hook."""
        if self.grad_fn is not None:
            raise RuntimeError("Post-accumulate-grad hooks apply to leaves only.")
        self._post_hooks = [*(self._post_hooks or ()), hook]
        return lambda: self._post_hooks.remove(hook)

    def detach(self) -> Tensor:
        """The same values (shared memory, as torch's) as a new leaf outside any graph."""
        return Tensor._make(self.data.detach(), None)

    def detach_(self) -> Tensor:
        """Make this tensor a leaf outside any graph, in place."""
        if self._base is not None:
            raise RuntimeError("detach_() cannot be called on a view; use detach() instead.")
        self.grad_fn, self.requires_grad, self._slot = None, False, 0
        return self

    # ---- torch functions given tinygraph Tensors ------------------------------------------
    @classmethod
    def __torch_function__(cls, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        """`torch.cat([a, b])` with tinygraph Tensors runs `tinygraph.cat`, when there is one."""
        from .function import torch_equivalent

        return torch_equivalent(func)(*args, **(kwargs or {}))


def is_grad_needed(*values: Any) -> bool:
    """Would an op on these values be recorded? (grad mode on and one of them requires grad)"""
    return grad_mode.local.state.enabled and any(isinstance(v, Tensor) and v.requires_grad for v in values)
