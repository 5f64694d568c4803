"""`Tensor`: a torch.Tensor (`.data`) plus what backprop needs: `.grad`, `.requires_grad`
and `.grad_fn`, the Node of the op that made it (None for a leaf).

Every differentiable method here is one line that hands its work to an op in `ops/`;
the methods that only read values (comparisons, `argmax`, `sign`) return Tensors that
are never part of a graph.
"""

from __future__ import annotations

import math
from collections import namedtuple
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from . import grad_mode

MaxMin = namedtuple("MaxMin", ["values", "indices"])  # what max(dim) and min(dim) return


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


def _shape(args: tuple) -> tuple[int, ...]:
    """Accept both f(2, 3) and f((2, 3)), as torch does."""
    if len(args) == 1 and isinstance(args[0], (tuple, list, torch.Size)):
        return tuple(args[0])
    return tuple(args)


def _unwrap(value: Any) -> Any:
    if isinstance(value, Tensor):
        return value.data
    if isinstance(value, tuple):
        return tuple(_unwrap(v) for v in value)
    return value


class Tensor:
    """A tensor that records the ops applied to it so that `backward()` can find grads.

    Create one with `tinygraph.tensor(...)` or a factory (`zeros`, `randn`...). Its
    `.data` is a plain torch.Tensor, never with torch's own `requires_grad`.
    """

    __slots__ = ("__weakref__", "_hooks", "_slot", "data", "grad", "grad_fn", "requires_grad")
    __array_priority__ = 1000  # numpy defers to our reflected operators

    def __hash__(self) -> int:  # == builds a Tensor, so hashing stays by identity (in Python: compilable)
        return id(self)

    def __init__(self, data: Any, requires_grad: bool = False):
        self.data = data if isinstance(data, torch.Tensor) else _to_torch(data)
        self.grad: Tensor | None = None
        self.grad_fn = None
        self._slot = 0  # which output of its op this is (ops with several outputs)
        self._hooks: list | None = None
        self.requires_grad = False
        if requires_grad:
            self.requires_grad_()

    @classmethod
    def _make(cls, data: torch.Tensor, grad_fn: Any, slot: int = 0) -> Tensor:
        # The fast constructor every op uses.
        t = object.__new__(cls)
        t.data, t.grad, t.grad_fn, t._slot, t._hooks = data, None, grad_fn, slot, None
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

    def size(self, dim: int | None = None) -> Any:
        return self.data.size() if dim is None else self.data.size(dim)

    def dim(self) -> int:
        return self.data.dim()

    def numel(self) -> int:
        return self.data.numel()

    def element_size(self) -> int:
        return self.data.element_size()

    def is_floating_point(self) -> bool:
        return self.data.is_floating_point()

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
    def backward(self, gradient: Any = None, retain_graph: bool | None = None, create_graph: bool = False) -> None:
        """Accumulate this tensor's grad with respect to every leaf into the leaves' `.grad`.

        A non-scalar tensor needs `gradient` (of its shape). The graph's saved tensors
        are freed as backward goes; pass `retain_graph=True` to call backward again, and
        `create_graph=True` to record backward itself for higher-order grads.
        """
        from .autograd import backward

        backward(self, gradient, retain_graph, create_graph)

    def requires_grad_(self, requires_grad: bool = True) -> Tensor:
        """Ask (or stop asking) for this leaf's grad; only floating-point leaves can."""
        if self.grad_fn is not None:
            raise RuntimeError(
                "requires_grad_() only applies to leaves; this tensor was made by an op. "
                "Use .detach().requires_grad_() for a new leaf."
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

    def register_post_accumulate_grad_hook(self, hook: Callable[[Tensor], None]) -> Callable[[], None]:
        """Call `hook(tensor)` each time backward has added into this leaf's `.grad`.
        Returns a function that removes the hook."""
        if self.grad_fn is not None:
            raise RuntimeError("Post-accumulate-grad hooks apply to leaves only.")
        self._hooks = [*(self._hooks or ()), hook]
        return lambda: self._hooks.remove(hook)

    def detach(self) -> Tensor:
        """The same values (shared memory) as a new leaf outside any graph."""
        return Tensor._make(self.data, None)

    # ---- changes in place (for no_grad code such as optimizers and initializers) --------
    def _inplace(self, method: str, *args: Any, **kwargs: Any) -> Tensor:
        if self.requires_grad and grad_mode.state.enabled:
            raise RuntimeError(
                f"{method}() would change a tensor that requires grad in place; do it under "
                "tinygraph.no_grad(), or use the out-of-place op."
            )
        getattr(self.data, method)(*(_unwrap(a) for a in args), **kwargs)
        return self

    def zero_(self) -> Tensor:
        return self._inplace("zero_")

    def fill_(self, value: float) -> Tensor:
        return self._inplace("fill_", value)

    def copy_(self, src: Any) -> Tensor:
        return self._inplace("copy_", src)

    def add_(self, other: Any, alpha: float = 1) -> Tensor:
        return self._inplace("add_", other, alpha=alpha)

    def sub_(self, other: Any, alpha: float = 1) -> Tensor:
        return self._inplace("sub_", other, alpha=alpha)

    def mul_(self, other: Any) -> Tensor:
        return self._inplace("mul_", other)

    def div_(self, other: Any) -> Tensor:
        return self._inplace("div_", other)

    def clamp_(self, min: float | None = None, max: float | None = None) -> Tensor:
        return self._inplace("clamp_", min, max)

    def normal_(self, mean: float = 0.0, std: float = 1.0) -> Tensor:
        return self._inplace("normal_", mean, std)

    def uniform_(self, a: float = 0.0, b: float = 1.0) -> Tensor:
        return self._inplace("uniform_", a, b)

    def __setitem__(self, index: Any, value: Any) -> None:
        self._inplace("__setitem__", _unwrap(index), value)

    # ---- conversions ----------------------------------------------------------------------
    def to(self, *args: Any, **kwargs: Any) -> Tensor:
        """`to(device)`, `to(dtype)`, `to(device, dtype)` or `to(other)`, differentiable."""
        device, dtype = kwargs.get("device"), kwargs.get("dtype")
        for a in args:
            if isinstance(a, torch.dtype):
                dtype = a
            elif isinstance(a, (Tensor, torch.Tensor)):
                device, dtype = a.device, a.dtype
            else:
                device = a
        device = torch.device(device) if device is not None else None
        if device is not None and device.type == "cuda" and device.index is None:
            device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else device
        if (device is None or device == self.device) and (dtype is None or dtype == self.dtype):
            return self
        if dtype is not None and not dtype.is_floating_point:
            return Tensor._make(self.data.to(device=device, dtype=dtype), None)  # no grad through ints
        return E.Cast.apply(self, device=device, dtype=dtype)

    def cpu(self) -> Tensor:
        return self.to("cpu")

    def cuda(self, device: Any = None) -> Tensor:
        return self.to(device if device is not None else "cuda")

    def float(self) -> Tensor:
        return self.to(torch.float32)

    def double(self) -> Tensor:
        return self.to(torch.float64)

    def half(self) -> Tensor:
        return self.to(torch.float16)

    def bfloat16(self) -> Tensor:
        return self.to(torch.bfloat16)

    def long(self) -> Tensor:
        return self.to(torch.int64)

    def int(self) -> Tensor:
        return self.to(torch.int32)

    def bool(self) -> Tensor:
        return self.to(torch.bool)

    def type_as(self, other: Tensor) -> Tensor:
        return self.to(other.dtype)

    def clone(self) -> Tensor:
        return E.Clone.apply(self)

    def contiguous(self) -> Tensor:
        return self if self.data.is_contiguous() else E.Clone.apply(self, contiguous_only=True)

    def new_zeros(self, *size: Any, dtype: torch.dtype | None = None) -> Tensor:
        return Tensor._make(self.data.new_zeros(_shape(size), dtype=dtype), None)

    def new_ones(self, *size: Any, dtype: torch.dtype | None = None) -> Tensor:
        return Tensor._make(self.data.new_ones(_shape(size), dtype=dtype), None)

    def new_full(self, size: Sequence[int], fill_value: float, dtype: torch.dtype | None = None) -> Tensor:
        return Tensor._make(self.data.new_full(tuple(size), fill_value, dtype=dtype), None)

    def new_tensor(self, data: Any, dtype: torch.dtype | None = None) -> Tensor:
        return Tensor._make(_to_torch(data, dtype or self.dtype, self.device), None)

    # ---- arithmetic ---------------------------------------------------------------------
    def __add__(self, other: Any) -> Tensor:
        return E.Add.apply(self, other)

    __radd__ = __add__

    def __sub__(self, other: Any) -> Tensor:
        return E.Sub.apply(self, other)

    def __rsub__(self, other: Any) -> Tensor:
        return E.Sub.apply(other, self)

    def __mul__(self, other: Any) -> Tensor:
        return E.Mul.apply(self, other)

    __rmul__ = __mul__

    def __truediv__(self, other: Any) -> Tensor:
        return E.Div.apply(self, other)

    def __rtruediv__(self, other: Any) -> Tensor:
        return E.Div.apply(other, self)

    def __pow__(self, exponent: Any) -> Tensor:
        return E.Pow.apply(self, exponent)

    def __rpow__(self, base: Any) -> Tensor:
        return E.Pow.apply(base, self)

    def __neg__(self) -> Tensor:
        return E.Neg.apply(self)

    def __matmul__(self, other: Any) -> Tensor:
        return self.matmul(other)

    def __rmatmul__(self, other: Any) -> Tensor:
        return Tensor._make(_unwrap(other), None).matmul(self)

    def add(self, other: Any, alpha: float = 1) -> Tensor:
        return self + (other * alpha if alpha != 1 else other)

    def sub(self, other: Any, alpha: float = 1) -> Tensor:
        return self - (other * alpha if alpha != 1 else other)

    def mul(self, other: Any) -> Tensor:
        return self * other

    def div(self, other: Any) -> Tensor:
        return self / other

    def pow(self, exponent: Any) -> Tensor:
        return self**exponent

    def neg(self) -> Tensor:
        return -self

    def square(self) -> Tensor:
        return self * self

    def exp(self) -> Tensor:
        return E.Exp.apply(self)

    def log(self) -> Tensor:
        return E.Log.apply(self)

    def sqrt(self) -> Tensor:
        return E.Sqrt.apply(self)

    def rsqrt(self) -> Tensor:
        return E.Rsqrt.apply(self)

    def abs(self) -> Tensor:
        return E.Abs.apply(self)

    def tanh(self) -> Tensor:
        return E.Tanh.apply(self)

    def sigmoid(self) -> Tensor:
        return E.Sigmoid.apply(self)

    def relu(self) -> Tensor:
        return E.Relu.apply(self)

    def erf(self) -> Tensor:
        return E.Erf.apply(self)

    def maximum(self, other: Any) -> Tensor:
        return E.Maximum.apply(self, other)

    def minimum(self, other: Any) -> Tensor:
        return -E.Maximum.apply(-self, -other)

    def clamp(self, min: float | None = None, max: float | None = None) -> Tensor:
        return E.Clamp.apply(self, min, max)

    clip = clamp

    def where(self, condition: Any, other: Any) -> Tensor:
        """`self` where `condition` holds, else `other` (torch.Tensor.where's order)."""
        return E.Where.apply(_unwrap(condition), self, other)

    def masked_fill(self, mask: Any, value: float) -> Tensor:
        return E.MaskedFill.apply(self, _unwrap(mask), value)

    def softmax(self, dim: int) -> Tensor:
        return N.Softmax.apply(self, dim)

    def log_softmax(self, dim: int) -> Tensor:
        return N.LogSoftmax.apply(self, dim)

    # ---- values only: never part of a graph --------------------------------------------
    def _const(self, method: str, *args: Any, **kwargs: Any) -> Tensor:
        return Tensor._make(getattr(self.data, method)(*(_unwrap(a) for a in args), **kwargs), None)

    def sign(self) -> Tensor:
        return self._const("sign")

    def __eq__(self, other: Any) -> Tensor:  # type: ignore[override]
        return self._const("__eq__", other)

    def __ne__(self, other: Any) -> Tensor:  # type: ignore[override]
        return self._const("__ne__", other)

    def __lt__(self, other: Any) -> Tensor:
        return self._const("__lt__", other)

    def __le__(self, other: Any) -> Tensor:
        return self._const("__le__", other)

    def __gt__(self, other: Any) -> Tensor:
        return self._const("__gt__", other)

    def __ge__(self, other: Any) -> Tensor:
        return self._const("__ge__", other)

    def __and__(self, other: Any) -> Tensor:
        return self._const("__and__", other)

    def __or__(self, other: Any) -> Tensor:
        return self._const("__or__", other)

    def __invert__(self) -> Tensor:
        return self._const("__invert__")

    def logical_not(self) -> Tensor:
        return self._const("logical_not")

    def isfinite(self) -> Tensor:
        return self._const("isfinite")

    def all(self, dim: Any = None) -> Tensor:
        return self._const("all") if dim is None else self._const("all", dim)

    def any(self, dim: Any = None) -> Tensor:
        return self._const("any") if dim is None else self._const("any", dim)

    def argmax(self, dim: int | None = None, keepdim: bool = False) -> Tensor:
        return self._const("argmax", dim, keepdim)

    def argmin(self, dim: int | None = None, keepdim: bool = False) -> Tensor:
        return self._const("argmin", dim, keepdim)

    def tril(self, diagonal: int = 0) -> Tensor:
        return self._const("tril", diagonal)

    def triu(self, diagonal: int = 0) -> Tensor:
        return self._const("triu", diagonal)

    # ---- reductions -----------------------------------------------------------------------
    def sum(self, dim: Any = None, keepdim: bool = False) -> Tensor:
        return R.Sum.apply(self, dim, keepdim)

    def mean(self, dim: Any = None, keepdim: bool = False) -> Tensor:
        return R.Mean.apply(self, dim, keepdim)

    def var(
        self, dim: Any = None, *, correction: float = 1, keepdim: bool = False, unbiased: bool | None = None
    ) -> Tensor:
        """Variance; `correction=1` (the default) divides by n - 1, `correction=0` by n."""
        if unbiased is not None:
            correction = int(unbiased)
        return R.Var.apply(self, dim, correction, keepdim)

    def std(
        self, dim: Any = None, *, correction: float = 1, keepdim: bool = False, unbiased: bool | None = None
    ) -> Tensor:
        return self.var(dim, correction=correction, keepdim=keepdim, unbiased=unbiased).sqrt()

    def max(self, dim: int | None = None, keepdim: bool = False) -> Any:
        """Over all elements: the largest value (ties share the grad). With `dim`:
        `(values, indices)`, the first maximum taking the grad."""
        if dim is None:
            return R.Amax.apply(self, None, False)
        return MaxMin(*R.MaxDim.apply(self, dim, keepdim))

    def min(self, dim: int | None = None, keepdim: bool = False) -> Any:
        """Like `max`, for the smallest value."""
        if dim is None:
            return -(-self).max()
        values, indices = (-self).max(dim, keepdim)
        return MaxMin(-values, indices)

    def amax(self, dim: Any = (), keepdim: bool = False) -> Tensor:
        return R.Amax.apply(self, dim, keepdim)

    def amin(self, dim: Any = (), keepdim: bool = False) -> Tensor:
        return -(-self).amax(dim, keepdim)

    def logsumexp(self, dim: Any, keepdim: bool = False) -> Tensor:
        return R.LogSumExp.apply(self, dim, keepdim)

    def sum_to_size(self, *size: Any) -> Tensor:
        """Sum broadcast dims away until the shape is `size` (how the engine undoes broadcasting)."""
        size = _shape(size)
        lead = self.ndim - len(size)
        dims = [*range(lead), *(lead + i for i, s in enumerate(size) if s == 1 and self.shape[lead + i] != 1)]
        return self.sum(dims, keepdim=True).reshape(size) if dims else self

    # ---- shape ------------------------------------------------------------------------------
    def reshape(self, *shape: Any) -> Tensor:
        shape = _shape(shape)
        return self if shape == tuple(self.shape) else S.Reshape.apply(self, shape)

    def view(self, *shape: Any) -> Tensor:
        return S.Reshape.apply(self, _shape(shape), view=True)

    def flatten(self, start_dim: int = 0, end_dim: int = -1) -> Tensor:
        if self.ndim == 0:
            return self.reshape(1)
        start, end = start_dim % self.ndim, end_dim % self.ndim
        return self.reshape(*self.shape[:start], -1, *self.shape[end + 1 :])

    def unflatten(self, dim: int, sizes: Sequence[int]) -> Tensor:
        dim %= self.ndim
        return self.reshape(*self.shape[:dim], *sizes, *self.shape[dim + 1 :])

    def unsqueeze(self, dim: int) -> Tensor:
        dim %= self.ndim + 1
        return self.reshape(*self.shape[:dim], 1, *self.shape[dim:])

    def squeeze(self, dim: Any = None) -> Tensor:
        dims = R.normalize_dims(dim, self.ndim)
        return self.reshape([s for i, s in enumerate(self.shape) if not (i in dims and s == 1)])

    def permute(self, *dims: Any) -> Tensor:
        return S.Permute.apply(self, _shape(dims))

    def transpose(self, dim0: int, dim1: int) -> Tensor:
        dims = list(range(self.ndim))
        dims[dim0], dims[dim1] = dims[dim1], dims[dim0]
        return self.permute(dims)

    swapaxes = transpose

    def t(self) -> Tensor:
        return self.transpose(0, 1) if self.ndim == 2 else self

    @property
    def T(self) -> Tensor:
        return self.permute(list(reversed(range(self.ndim))))

    @property
    def mT(self) -> Tensor:
        return self.transpose(-2, -1)

    def expand(self, *sizes: Any) -> Tensor:
        shape = _shape(sizes)
        return self if shape == tuple(self.shape) else S.Expand.apply(self, shape)

    def expand_as(self, other: Tensor) -> Tensor:
        return self.expand(other.shape)

    def broadcast_to(self, shape: Sequence[int]) -> Tensor:
        return self.expand(shape)

    def __getitem__(self, index: Any) -> Tensor:
        return S.GetItem.apply(self, _unwrap(index))

    def narrow(self, dim: int, start: int, length: int) -> Tensor:
        return self[(slice(None),) * (dim % self.ndim) + (slice(start, start + length),)]

    def split(self, split_size_or_sections: int | Sequence[int], dim: int = 0) -> tuple[Tensor, ...]:
        """Pieces of the given size (the last may be smaller), or of the listed sizes."""
        n = self.shape[dim]
        if isinstance(split_size_or_sections, int):
            sizes = [min(split_size_or_sections, n - i) for i in range(0, n, split_size_or_sections)]
        else:
            sizes = list(split_size_or_sections)
            if sum(sizes) != n:
                raise ValueError(f"split sizes {sizes} must add up to {n}, the size of dim {dim}.")
        return S.Split.apply(self, sizes, dim)

    def chunk(self, chunks: int, dim: int = 0) -> tuple[Tensor, ...]:
        return self.split(math.ceil(self.shape[dim] / chunks), dim)

    def unbind(self, dim: int = 0) -> tuple[Tensor, ...]:
        return S.Unbind.apply(self, dim)

    def gather(self, dim: int, index: Any) -> Tensor:
        return S.Gather.apply(self, dim, _unwrap(index))

    def scatter_add(self, dim: int, index: Any, src: Tensor) -> Tensor:
        return S.ScatterAdd.apply(self, dim, _unwrap(index), src)

    def index_select(self, dim: int, index: Any) -> Tensor:
        return S.IndexSelect.apply(self, dim, _unwrap(index))

    def index_add(self, dim: int, index: Any, source: Tensor) -> Tensor:
        return S.IndexAdd.apply(self, dim, _unwrap(index), source)

    def matmul(self, other: Any) -> Tensor:
        """Matrix product with torch's rules: 1-D operands gain a dim that is then dropped."""
        other = other if isinstance(other, Tensor) else Tensor._make(_unwrap(other), None)
        if self.ndim == 1 and other.ndim == 1:
            return (self * other).sum()
        if self.ndim == 1:
            return L.MatMul.apply(self.unsqueeze(0), other).squeeze(-2)
        if other.ndim == 1:
            return L.MatMul.apply(self, other.unsqueeze(-1)).squeeze(-1)
        return L.MatMul.apply(self, other)


# The ops import Tensor, so they are imported once it exists.
from .ops import elementwise as E  # noqa: E402
from .ops import linalg as L  # noqa: E402
from .ops import nn as N  # noqa: E402
from .ops import reduce as R  # noqa: E402
from .ops import shape as S  # noqa: E402
