"""Reductions over `dim` (an int, a tuple of ints, or None for all) with `keepdim`."""

from __future__ import annotations

import math
from collections import namedtuple

import torch

from ..function import Function, public, register
from ..tensor import Tensor

MaxMin = namedtuple("MaxMin", ["values", "indices"])  # what max(dim) and min(dim) return, as torch's


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


def expand_reduced(g, shape, dims, keepdim: bool):
    """Put a reduced grad back in the input's shape (the backward of every reduction)."""
    if not keepdim:
        g = g.reshape(_kept_shape(shape, dims))
    return g.expand(shape)


@register("Tensor.sum tinygraph.sum")
class Sum(Function):
    @staticmethod
    def call(input, dim=None, keepdim=False):
        return Sum.apply(input, dim, keepdim)

    @staticmethod
    def forward(ctx, x, dim=None, keepdim=False):
        ctx.shape, ctx.dims, ctx.keepdim = x.shape, normalize_dims(dim, x.ndim), keepdim
        return x.sum(ctx.dims, keepdim=keepdim) if ctx.dims else x.clone()

    @staticmethod
    def backward(ctx, g):
        return expand_reduced(g, ctx.shape, ctx.dims, ctx.keepdim)


@register("Tensor.mean tinygraph.mean")
class Mean(Function):
    @staticmethod
    def call(input, dim=None, keepdim=False):
        return Mean.apply(input, dim, keepdim)

    @staticmethod
    def forward(ctx, x, dim=None, keepdim=False):
        ctx.shape, ctx.dims, ctx.keepdim = x.shape, normalize_dims(dim, x.ndim), keepdim
        ctx.count = math.prod(x.shape[d] for d in ctx.dims)
        return x.mean(ctx.dims, keepdim=keepdim) if ctx.dims else x.clone()

    @staticmethod
    def backward(ctx, g):
        return expand_reduced(g / ctx.count, ctx.shape, ctx.dims, ctx.keepdim)


def _correction(correction, unbiased) -> float:
    if unbiased is not None:
        return int(unbiased)
    return 1 if correction is None else correction


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
    def call(input, dim=None, *, correction=None, keepdim=False, unbiased=None):
        return Var.apply(input, dim, _correction(correction, unbiased), keepdim)

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
    def call(input, dim=None, *, correction=None, keepdim=False, unbiased=None):
        return Std.apply(input, dim, _correction(correction, unbiased), keepdim)

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


@register
class MaxDim(Function):
    """`x.max(dim)` (or `x.min(dim)` with largest=False): the values and the index of the
    first extreme; only that element gets a grad."""

    @staticmethod
    def forward(ctx, x, dim, keepdim=False, largest=True):
        (ctx.dim,) = normalize_dims(dim, x.ndim) or (0,)
        ctx.shape, ctx.keepdim = x.shape, keepdim
        if not largest:
            ctx.name = "MinDim"
        values, indices = x.max(ctx.dim, keepdim=keepdim) if largest else x.min(ctx.dim, keepdim=keepdim)
        ctx.save_for_backward(indices)
        return values, indices

    @staticmethod
    def backward(ctx, g):
        (indices,) = ctx.saved_tensors
        if not ctx.keepdim and len(ctx.shape):
            g, indices = g.unsqueeze(ctx.dim), indices.unsqueeze(ctx.dim)
        return g.new_zeros(ctx.shape).scatter_add(ctx.dim, indices, g)


@register
class Amax(Function):
    """`x.amax(dim)` (and `amin` with largest=False), and `x.max()` over everything: tied
    extremes share the grad evenly, as in torch."""

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
        winners = x == expand_reduced(out, x.shape, ctx.dims, ctx.keepdim)
        share = expand_reduced(g, x.shape, ctx.dims, ctx.keepdim) / winners.sum(ctx.dims, keepdim=True)
        return share * winners


def _extreme(input, dim, keepdim, largest):
    if isinstance(dim, Tensor):  # torch.max(a, b): the elementwise maximum
        from .elementwise import Maximum

        return Maximum.apply(input, dim, largest)
    if dim is None:
        return Amax.apply(input, None, False, largest)
    return MaxMin(*MaxDim.apply(input, dim, keepdim, largest))


@public("Tensor.max tinygraph.max")
def largest(input, dim=None, keepdim=False):
    """Over all elements: the largest value (ties share the grad). With `dim`:
    `(values, indices)`, the first maximum taking the grad. With a tensor: `maximum`."""
    return _extreme(input, dim, keepdim, True)


@public("Tensor.min tinygraph.min")
def smallest(input, dim=None, keepdim=False):
    """Like `max`, for the smallest value."""
    return _extreme(input, dim, keepdim, False)


@public("Tensor.amax tinygraph.amax")
def amax(input, dim=(), keepdim=False):
    return Amax.apply(input, dim, keepdim, True)


@public("Tensor.amin tinygraph.amin")
def amin(input, dim=(), keepdim=False):
    return Amax.apply(input, dim, keepdim, False)


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
