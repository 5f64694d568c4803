"""Reductions over `dim` (an int, a tuple of ints, or None for all) with `keepdim`."""

from __future__ import annotations

import math

from ..function import Function, register


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
            raise IndexError(f"Dimension {d} is out of range for a tensor with {ndim} dims.")
    return tuple(sorted({d % rank for d in dims})) if ndim else ()


def _kept_shape(shape, dims) -> list[int]:
    return [1 if i in dims else s for i, s in enumerate(shape)]


def expand_reduced(g, shape, dims, keepdim: bool):
    """Put a reduced grad back in the input's shape (the backward of every reduction)."""
    if not keepdim:
        g = g.reshape(_kept_shape(shape, dims))
    return g.expand(shape)


@register
class Sum(Function):
    @staticmethod
    def forward(ctx, x, dim=None, keepdim=False):
        ctx.shape, ctx.dims, ctx.keepdim = x.shape, normalize_dims(dim, x.ndim), keepdim
        return x.sum(ctx.dims, keepdim=keepdim) if ctx.dims else x.clone()

    @staticmethod
    def backward(ctx, g):
        return expand_reduced(g, ctx.shape, ctx.dims, ctx.keepdim)


@register
class Mean(Function):
    @staticmethod
    def forward(ctx, x, dim=None, keepdim=False):
        ctx.shape, ctx.dims, ctx.keepdim = x.shape, normalize_dims(dim, x.ndim), keepdim
        ctx.count = math.prod(x.shape[d] for d in ctx.dims)
        return x.mean(ctx.dims, keepdim=keepdim) if ctx.dims else x.clone()

    @staticmethod
    def backward(ctx, g):
        return expand_reduced(g / ctx.count, ctx.shape, ctx.dims, ctx.keepdim)


@register
class Var(Function):
    """Variance with `correction` (1: Bessel's unbiased estimate, 0: the biased one)."""

    @staticmethod
    def forward(ctx, x, dim=None, correction=1, keepdim=False):
        ctx.dims, ctx.keepdim = normalize_dims(dim, x.ndim), keepdim
        ctx.divisor = math.prod(x.shape[d] for d in ctx.dims) - correction
        ctx.save_for_backward(x)
        return x.var(ctx.dims, correction=correction, keepdim=keepdim)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        centered = x - x.mean(ctx.dims, keepdim=True)
        return expand_reduced(g, x.shape, ctx.dims, ctx.keepdim) * centered * (2 / ctx.divisor)


@register
class MaxDim(Function):
    """`x.max(dim)`: the values and the index of the first maximum; only that element gets a grad."""

    @staticmethod
    def forward(ctx, x, dim, keepdim=False):
        (ctx.dim,) = normalize_dims(dim, x.ndim) or (0,)
        ctx.shape, ctx.keepdim = x.shape, keepdim
        values, indices = x.max(ctx.dim, keepdim=keepdim)
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
    """`x.amax(dim)`, and `x.max()` over everything: tied maxima share the grad evenly, as in torch."""

    @staticmethod
    def forward(ctx, x, dim=None, keepdim=False):
        ctx.dims, ctx.keepdim = normalize_dims(dim, x.ndim), keepdim
        out = x.amax(ctx.dims, keepdim=keepdim) if ctx.dims else x.clone()
        ctx.save_for_backward(x, out)
        return out

    @staticmethod
    def backward(ctx, g):
        x, out = ctx.saved_tensors
        winners = x == expand_reduced(out, x.shape, ctx.dims, ctx.keepdim)
        share = expand_reduced(g, x.shape, ctx.dims, ctx.keepdim) / winners.sum(ctx.dims, keepdim=True)
        return share * winners


@register
class LogSumExp(Function):
    autocast = "float32"

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
