"""Reductions over `dim` (an int, a tuple of ints, or None for all) with `keepdim`, and the
ops that pick elements along a dim with their indices (max/min over a dim, median, mode,
kthvalue; sort, topk, cummax and cummin use the same op)."""

from __future__ import annotations

import math
from collections import namedtuple

import torch

from ..function import Function, public, register
from ..tensor import Tensor

ValuesIndices = namedtuple("ValuesIndices", ["values", "indices"])  # what max(dim), sort, topk... return
MinMax = namedtuple("MinMax", ["min", "max"])  # what aminmax returns


def normalize_dims(dim, ndim: int) -> tuple[int, ...]:
    """`dim` as a sorted tuple of non-negative ints; None means every dim."""
    if dim is None:
        return tuple(range(ndim))
    dims = (dim,) if isinstance(dim, int) else tuple(dim)
    if not dims and ndim:
        return tuple(range(ndim))  # torch: an empty tuple reduces everything, too
    rank = max(ndim, 1)
    for d in dims:
        if not -rank <= d < rank:
            raise IndexError(f"Dimension out of range (expected to be in range of [{-rank}, {rank - 1}], but got {d})")
    return tuple(sorted({d % rank for d in dims})) if ndim else ()


def _kept_shape(shape, dims) -> list[int]:
    return [1 if i in dims else s for i, s in enumerate(shape)]


def unreduce(t, shape, dims, keepdim: bool):
    """A reduced tensor with its reduced dims back as size 1 (so it broadcasts against the input)."""
    return t if keepdim else t.reshape(_kept_shape(shape, dims))


def expand_reduced(g, shape, dims, keepdim: bool):
    """Put a reduced grad back in the input's shape (the backward of every reduction)."""
    return unreduce(g, shape, dims, keepdim).expand(shape)


@register("Tensor.sum tinygraph.sum")
class Sum(Function):
    """With `dtype`, the input is converted first and the grad converted back, as in torch."""

    @staticmethod
    def call(input, dim=None, keepdim=False, *, dtype=None):
        return Sum.apply(input, dim, keepdim, dtype=dtype)

    @staticmethod
    def forward(ctx, x, dim=None, keepdim=False, *, dtype=None):
        ctx.shape, ctx.dims, ctx.keepdim = x.shape, normalize_dims(dim, x.ndim), keepdim
        return x.sum(ctx.dims, keepdim=keepdim, dtype=dtype)

    @staticmethod
    def backward(ctx, g):
        return expand_reduced(g, ctx.shape, ctx.dims, ctx.keepdim)


@register("Tensor.mean tinygraph.mean")
class Mean(Function):
    @staticmethod
    def call(input, dim=None, keepdim=False, *, dtype=None):
        return Mean.apply(input, dim, keepdim, dtype=dtype)

    @staticmethod
    def forward(ctx, x, dim=None, keepdim=False, *, dtype=None):
        ctx.shape, ctx.dims, ctx.keepdim = x.shape, normalize_dims(dim, x.ndim), keepdim
        ctx.count = math.prod(x.shape[d] for d in ctx.dims)
        return x.mean(ctx.dims, keepdim=keepdim, dtype=dtype)

    @staticmethod
    def backward(ctx, g):
        return expand_reduced(g / ctx.count, ctx.shape, ctx.dims, ctx.keepdim)


def _dim_and_correction(dim, unbiased, correction) -> tuple:
    """torch's ways of asking for a correction: `correction=`, or `unbiased` (also in the
    place of `dim`: `x.var(False)`); 1 by default."""
    if isinstance(dim, bool):
        dim, unbiased = None, dim
    if unbiased is not None:
        return dim, int(unbiased)
    return dim, 1 if correction is None else correction


def _var_grad(g, x, dims, keepdim, correction, every_dim):
    """d var / dx = 2 (x - mean) / (n - correction). With no degrees of freedom left, torch's
    values: over every dim, inf (nan where x equals the mean); over given dims, the factor
    2 / (n - correction) as it comes (infinite at 0)."""
    divisor = math.prod(x.shape[d] for d in dims) - correction
    centered = x - x.mean(dims, keepdim=True)
    if every_dim and divisor <= 0:
        return g * x.new_full(x.shape, math.inf).masked_fill(centered == 0, math.nan)
    factor = 2 / divisor if divisor != 0 else math.inf
    return expand_reduced(g, x.shape, dims, keepdim) * centered * factor


@register("Tensor.var tinygraph.var")
class Var(Function):
    """Variance with `correction` (1: Bessel's unbiased estimate, 0: the biased one)."""

    @staticmethod
    def call(input, dim=None, unbiased=None, keepdim=False, *, correction=None):
        return Var.apply(input, *_dim_and_correction(dim, unbiased, correction), keepdim)

    @staticmethod
    def forward(ctx, x, dim=None, correction=1, keepdim=False):
        ctx.dims, ctx.keepdim, ctx.correction = normalize_dims(dim, x.ndim), keepdim, correction
        ctx.every_dim = dim is None or x.ndim == 0
        ctx.save_for_backward(x)
        return x.var(ctx.dims, correction=correction, keepdim=keepdim)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return _var_grad(g, x, ctx.dims, ctx.keepdim, ctx.correction, ctx.every_dim)


@register("Tensor.std tinygraph.std")
class Std(Function):
    """The square root of the variance. Where it is 0 (a constant row) its grad is 0, as torch defines it."""

    @staticmethod
    def call(input, dim=None, unbiased=None, keepdim=False, *, correction=None):
        return Std.apply(input, *_dim_and_correction(dim, unbiased, correction), keepdim)

    @staticmethod
    def forward(ctx, x, dim=None, correction=1, keepdim=False):
        ctx.dims, ctx.keepdim, ctx.correction = normalize_dims(dim, x.ndim), keepdim, correction
        ctx.every_dim = dim is None or x.ndim == 0
        out = x.std(ctx.dims, correction=correction, keepdim=keepdim)
        ctx.save_for_backward(x, out)
        return out

    @staticmethod
    def backward(ctx, g):
        x, out = ctx.saved_tensors
        g_var = (g / (2 * out)).masked_fill(out == 0, 0)
        return _var_grad(g_var, x, ctx.dims, ctx.keepdim, ctx.correction, ctx.every_dim)


@public("tinygraph.var_mean")
def var_mean(input, dim=None, unbiased=None, keepdim=False, *, correction=None):
    """(var, mean) over the same dims."""
    dim, correction = _dim_and_correction(dim, unbiased, correction)
    return Var.apply(input, dim, correction, keepdim), Mean.apply(input, dim, keepdim)


@public("tinygraph.std_mean")
def std_mean(input, dim=None, unbiased=None, keepdim=False, *, correction=None):
    """(std, mean) over the same dims."""
    dim, correction = _dim_and_correction(dim, unbiased, correction)
    return Std.apply(input, dim, correction, keepdim), Mean.apply(input, dim, keepdim)


@register("Tensor.prod tinygraph.prod")
class Prod(Function):
    """The product of the elements, over one dim or all. The grad of each element is the
    product of all the others, made of the products before it and after it (never the
    product divided by the element): exact where the input has zeros, as torch's, and
    differentiable again."""

    @staticmethod
    def call(input, dim=None, keepdim=False, *, dtype=None):
        return Prod.apply(input, dim, keepdim, dtype=dtype)

    @staticmethod
    def forward(ctx, x, dim=None, keepdim=False, *, dtype=None):
        ctx.dim, ctx.keepdim = dim, keepdim
        ctx.save_for_backward(x)
        if dim is None:
            return x.prod(dtype=dtype).reshape([1] * x.ndim if keepdim else [])
        return x.prod(dim, keepdim, dtype=dtype)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        if x.dtype != g.dtype:  # prod(dtype=): the products in that dtype, as torch's
            x = x.to(g.dtype)
        if x.ndim == 0 or x.numel() == 0:
            return g.expand(x.shape)
        if ctx.dim is None:
            return g * products_of_the_others(x.reshape(-1), 0).reshape(x.shape)
        (dim,) = normalize_dims(ctx.dim, x.ndim)
        return unreduce(g, x.shape, (dim,), ctx.keepdim) * products_of_the_others(x, dim)


def products_of_the_others(x, dim: int):
    """For each element along `dim` (>= 0), the product of all the other elements there."""
    return exclusive_cumprod(x, dim) * exclusive_cumprod(x.flip(dim), dim).flip(dim)


def exclusive_cumprod(x, dim: int):
    """The product of the elements before each one along `dim` (>= 0): 1 for the first."""
    ones = x.new_ones((*x.shape[:dim], 1, *x.shape[dim + 1 :]))
    return torch.cat([ones, x.narrow(dim, 0, x.shape[dim] - 1)], dim).cumprod(dim)  # tinygraph.cat on Tensors


@register
class PickAlongDim(Function):
    """Elements picked along `dim` with their indices, by the torch method `how`: max or min
    over a dim, median, nanmedian, mode, kthvalue (which reduce the dim, unless keepdim),
    sort, topk, cummax, cummin. Each picked value's grad goes to the element it came from."""

    @staticmethod
    def forward(ctx, x, how, dim, reduces, **options):
        ctx.name = how.capitalize()
        values, indices = getattr(x, how)(dim=dim, **options)
        ctx.shape, ctx.dim = x.shape, dim
        ctx.unsqueeze = reduces and not options.get("keepdim") and x.ndim > 0
        ctx.save_for_backward(indices)
        return values, indices

    @staticmethod
    def backward(ctx, g):
        (indices,) = ctx.saved_tensors
        if ctx.unsqueeze:
            g, indices = g.unsqueeze(ctx.dim), indices.unsqueeze(ctx.dim)
        return g.new_zeros(ctx.shape).scatter_add(ctx.dim, indices, g)


def pick_along_dim(input, how, dim, reduces=True, **options) -> ValuesIndices:
    return ValuesIndices(*PickAlongDim.apply(input, how, dim, reduces, **options))


@register
class PickFromAll(Function):
    """One value of the whole tensor, by the torch method `how` (max, min, median,
    nanmedian). Its grad is shared evenly by the elements equal to it, or by the NaNs when
    it is NaN, as in torch."""

    @staticmethod
    def forward(ctx, x, how):
        ctx.name = how.capitalize()
        out = getattr(x, how)()
        ctx.save_for_backward(x, out)
        return out

    @staticmethod
    def backward(ctx, g):
        x, out = ctx.saved_tensors
        chosen = (x == out) | (x.isnan() & out.isnan())
        # the others get an exact 0, even from a nan grad (as torch's; amax's multiplies instead)
        return (g / chosen.sum()).expand(x.shape).masked_fill(~chosen, 0)


@register
class Amax(Function):
    """`x.amax(dim)` (and `amin` with largest=False): tied extremes share the grad evenly,
    as in torch."""

    @staticmethod
    def forward(ctx, x, dim=None, keepdim=False, largest=True):
        ctx.dims, ctx.keepdim = normalize_dims(dim, x.ndim), keepdim
        if not largest:
            ctx.name = "Amin"
        reduce = x.amax if largest else x.amin
        out = reduce(ctx.dims, keepdim=keepdim) if ctx.dims else x.clone()
        ctx.save_for_backward(x, out)
        return out

    @staticmethod
    def backward(ctx, g):
        x, out = ctx.saved_tensors
        return _to_extremes(g, x, out, ctx.dims, ctx.keepdim)


def _to_extremes(g, x, out, dims, keepdim):
    """The grad of an extreme (amax, amin) shared evenly by the elements tied at it."""
    winners = x == expand_reduced(out, x.shape, dims, keepdim)
    return expand_reduced(g, x.shape, dims, keepdim) / winners.sum(dims, keepdim=True) * winners


@register
class Aminmax(Function):
    """`(amin, amax)` as one node with two outputs, as torch's (so a backward through one frees
    both, and a second backward through the other is refused without retain_graph, as there)."""

    multi_output = True

    @staticmethod
    def forward(ctx, x, dim=None, keepdim=False):
        ctx.dims, ctx.keepdim = normalize_dims(dim, x.ndim), keepdim
        low, high = (
            (x.amin(ctx.dims, keepdim=keepdim), x.amax(ctx.dims, keepdim=keepdim))
            if ctx.dims
            else (x.clone(), x.clone())
        )
        ctx.save_for_backward(x, low, high)
        return low, high

    @staticmethod
    def backward(ctx, g_min, g_max):
        x, low, high = ctx.saved_tensors
        return _to_extremes(g_min, x, low, ctx.dims, ctx.keepdim) + _to_extremes(g_max, x, high, ctx.dims, ctx.keepdim)


def _pick(input, dim, keepdim, how):
    """max, min, median, nanmedian: of all the elements (dim None), or along `dim` with indices."""
    if isinstance(dim, Tensor) and how in ("max", "min"):  # torch.max(a, b): the elementwise maximum
        from .elementwise import Maximum

        return Maximum.apply(input, dim, how == "max")
    if dim is None:
        return PickFromAll.apply(input, how)
    return pick_along_dim(input, how, dim, keepdim=keepdim)


@public("Tensor.max tinygraph.max")
def largest(input, dim=None, keepdim=False):
    """Over all elements: the largest value (ties share the grad). With `dim`:
    `(values, indices)`, the first maximum taking the grad. With a tensor: `maximum`."""
    return _pick(input, dim, keepdim, "max")


@public("Tensor.min tinygraph.min")
def smallest(input, dim=None, keepdim=False):
    """Like `max`, for the smallest value."""
    return _pick(input, dim, keepdim, "min")


@public("Tensor.amax tinygraph.amax")
def amax(input, dim=(), keepdim=False):
    return Amax.apply(input, dim, keepdim, True)


@public("Tensor.amin tinygraph.amin")
def amin(input, dim=(), keepdim=False):
    return Amax.apply(input, dim, keepdim, False)


@public("Tensor.aminmax tinygraph.aminmax")
def aminmax(input, *, dim=None, keepdim=False) -> MinMax:
    """`(min, max)` over `dim` (an int) or over everything; tied extremes share the grad."""
    return MinMax(*Aminmax.apply(input, dim, keepdim))


@public("Tensor.median tinygraph.median")
def median(input, dim=None, keepdim=False):
    """The lower of the two middle values: of all the elements (its grad shared by those equal
    to it), or along `dim` as `(values, indices)`, the grad going to the element at the index."""
    return _pick(input, dim, keepdim, "median")


@public("Tensor.nanmedian tinygraph.nanmedian")
def nanmedian(input, dim=None, keepdim=False):
    """`median` of the values that are not NaN."""
    return _pick(input, dim, keepdim, "nanmedian")


@public("Tensor.mode tinygraph.mode")
def mode(input, dim=-1, keepdim=False) -> ValuesIndices:
    """The most frequent value along `dim` and an index of it, which takes the grad."""
    return pick_along_dim(input, "mode", dim, keepdim=keepdim)


@public("Tensor.kthvalue tinygraph.kthvalue")
def kthvalue(input, k, dim=-1, keepdim=False) -> ValuesIndices:
    """The k-th smallest value along `dim` (k from 1) and its index, which takes the grad."""
    return pick_along_dim(input, "kthvalue", dim, k=k, keepdim=keepdim)


@register("Tensor.logsumexp tinygraph.logsumexp")
class LogSumExp(Function):
    autocast = "float32"

    @staticmethod
    def call(input, dim, keepdim=False):
        return LogSumExp.apply(input, dim, keepdim)

    @staticmethod
    def forward(ctx, x, dim, keepdim=False):
        ctx.dims, ctx.keepdim = normalize_dims(dim, x.ndim), keepdim
        out = x.logsumexp(ctx.dims, keepdim=keepdim) if ctx.dims else x.clone()
        ctx.save_for_backward(x, out)
        return out

    @staticmethod
    def backward(ctx, g):
        x, out = ctx.saved_tensors
        out = expand_reduced(out, x.shape, ctx.dims, ctx.keepdim)
        return expand_reduced(g, x.shape, ctx.dims, ctx.keepdim) * (x - out).exp()


@public("Tensor.sum_to_size")
def sum_to_size(input, *size):
    """Sum broadcast dims away until the shape is `size` (how the engine undoes broadcasting)."""
    size = tuple(size[0]) if len(size) == 1 and isinstance(size[0], (tuple, list, torch.Size)) else size
    lead = input.ndim - len(size)
    dims = [*range(lead), *(lead + i for i, s in enumerate(size) if s == 1 and input.shape[lead + i] != 1)]
    return input.sum(dims, keepdim=True).reshape(size) if dims else input
