"""Sorting and selecting (sort, topk, masked_select, take, take_along_dim) and writing at
selected places (index_fill, scatter, scatter_reduce). The functions that give indices
only (argsort, nonzero, argwhere) are in ops/values.py."""

from __future__ import annotations

import torch

from ..function import Function, public, register
from ..tensor import unwrap
from .reduce import ValuesIndices, normalize_dims, pick_along_dim
from .shape import Gather, fitted


@public("Tensor.sort tinygraph.sort")
def sort(input, dim=-1, descending=False, stable=False) -> ValuesIndices:
    """The values along `dim` in order, and where each came from (it takes the value's
    grad); `stable` keeps equal values in their order."""
    return pick_along_dim(input, "sort", dim, reduces=False, descending=descending, stable=stable)


@public("Tensor.msort tinygraph.msort")
def msort(input):
    """The values sorted along dim 0."""
    return sort(input, 0).values


@public("Tensor.topk tinygraph.topk")
def topk(input, k, dim=-1, largest=True, sorted=True) -> ValuesIndices:
    """The k largest (or smallest) values along `dim` and their indices, which take their grads."""
    return pick_along_dim(input, "topk", dim, reduces=False, k=k, largest=largest, sorted=sorted)


@public("Tensor.masked_select tinygraph.masked_select")
def masked_select(input, mask):
    """The elements where `mask` (broadcast with input) holds, in order, as a 1-D tensor."""
    mask = unwrap(mask)
    if mask.dtype != torch.bool:
        raise RuntimeError(f"masked_select: expected BoolTensor for mask, not {mask.dtype}.")
    shape = torch.broadcast_shapes(input.shape, mask.shape)
    return input.expand(shape)[mask.expand(shape)]


@public("Tensor.take tinygraph.take")
def take(input, index):
    """The elements at flat positions `index` (negative ones counting from the end), in index's
    shape: a new tensor, also for a 0-dim index (with which indexing would give a view)."""
    index = unwrap(index)
    return input.reshape(-1)[index.reshape(-1)].reshape(index.shape)


@public("Tensor.take_along_dim tinygraph.take_along_dim")
def take_along_dim(input, indices, dim=None):
    """`gather` along `dim` with input and indices broadcast against each other in the other
    dims (torch's own composition); with dim None, the elements at flat positions."""
    indices = unwrap(indices)
    if dim is None:
        return Gather.apply(input.reshape(-1), 0, indices.reshape(-1))
    if input.ndim != indices.ndim:
        raise RuntimeError(
            "torch.take_along_dim(): input and indices should have the same number of dimensions, but got "
            f"{input.ndim} dimensions for input, and {indices.ndim} dimensions for indices"
        )
    (dim,) = normalize_dims(dim, input.ndim)

    def sized(shape, n):
        return (*shape[:dim], n, *shape[dim + 1 :])

    index_shape = torch.broadcast_shapes(sized(input.shape, indices.shape[dim]), indices.shape)
    input_shape = torch.broadcast_shapes(sized(indices.shape, input.shape[dim]), input.shape)
    return Gather.apply(input.expand(input_shape), dim, indices.expand(index_shape))


@register("Tensor.index_fill Tensor.index_fill_ tinygraph.index_fill")
class IndexFill(Function):
    """`value` written at positions `index` along `dim`. A 0-dim tensor value gets the sum
    of the grads of the filled places (each place once, however often index names it)."""

    @staticmethod
    def call(input, dim, index, value):
        return IndexFill.apply(input, dim, unwrap(index), value)

    @staticmethod
    def forward(ctx, x, dim, index, value):
        ctx.dim = dim
        ctx.save_for_backward(index.unique())
        return x.index_fill(dim, index, value)

    @staticmethod
    def backward(ctx, g):
        (places,) = ctx.saved_tensors
        dx, _, _, dvalue = ctx.needs_input_grad
        gx = g.index_fill(ctx.dim, places, 0) if dx else None
        return gx, None, None, (g.index_select(ctx.dim, places).sum() if dvalue else None)


@register("Tensor.scatter Tensor.scatter_ tinygraph.scatter")
class Scatter(Function):
    """`input` with `src` (a tensor, or the number `value`) written where `index` sends it
    along `dim` (for dim 0: out[index[i][j]][j] = src[i][j]). A written place's grad goes to
    src, as torch's (every src element its place's grad, also where index repeats a place).
    torch's deprecated `reduce=` ('add', 'multiply') runs scatter_reduce ('sum', 'prod')."""

    @staticmethod
    def call(input, dim, index, src=None, value=None, *, reduce=None):
        index, src = unwrap(index), value if src is None else src
        if reduce is not None:
            if reduce not in ("add", "multiply"):
                raise RuntimeError(f"reduce argument must be either add or multiply, not {reduce!r}.")
            if isinstance(src, (int, float)):
                src = torch.full(index.shape, src, dtype=input.dtype, device=input.device)
            return ScatterReduce.call(input, dim, index, src, "sum" if reduce == "add" else "prod")
        return Scatter.apply(input, dim, index, fitted(src, index))

    @staticmethod
    def forward(ctx, x, dim, index, src):
        ctx.dim = dim
        ctx.save_for_backward(index)
        return x.scatter(dim, index, src)

    @staticmethod
    def backward(ctx, g):
        (index,) = ctx.saved_tensors
        dx, _, _, dsrc = ctx.needs_input_grad
        gx = g.scatter(ctx.dim, index, 0) if dx else None
        return gx, None, None, (g.gather(ctx.dim, index) if dsrc else None)


@register("Tensor.scatter_reduce Tensor.scatter_reduce_ tinygraph.scatter_reduce")
class ScatterReduce(Function):
    """Each `src` element combined by `reduce` ('sum', 'prod', 'mean', 'amax', 'amin') into
    the place of `input` that `index` sends it to along `dim`; with include_self=False the
    places written to leave their own value out. The grads are torch's formulas."""

    @staticmethod
    def call(input, dim, index, src, reduce, *, include_self=True):
        index = unwrap(index)
        return ScatterReduce.apply(input, dim, index, fitted(src, index), reduce, include_self)

    @staticmethod
    def forward(ctx, x, dim, index, src, reduce, include_self=True):
        ctx.dim, ctx.reduce, ctx.include_self = dim, reduce, include_self
        out = x.scatter_reduce(dim, index, src, reduce, include_self=include_self)
        ctx.save_for_backward(x, index, src, out)
        return out

    @staticmethod
    def backward(ctx, g):
        x, index, src, out = ctx.saved_tensors
        gx, gsrc = SCATTER_REDUCE_GRADS[ctx.reduce](ctx, g, x, index, src, out)
        if not ctx.include_self:
            gx = gx.scatter(ctx.dim, index, 0)  # the old values there were left out
        return gx, None, None, gsrc


def _sum_grads(ctx, g, x, index, src, out):
    return g, g.gather(ctx.dim, index)


def _mean_grads(ctx, g, x, index, src, out):
    counts = (g.new_ones if ctx.include_self else g.new_zeros)(g.shape)
    counts = counts.scatter_add(ctx.dim, index, src.new_ones(src.shape))
    counts = counts.masked_fill(counts == 0, 1)
    return g / counts, g.gather(ctx.dim, index) / counts.gather(ctx.dim, index)


def _extreme_grads(ctx, g, x, index, src, out):
    """Every element equal to its place's result shares that place's grad evenly."""
    x_wins, src_wins = x == out, src == out.gather(ctx.dim, index)
    share = g / x_wins.to(g.dtype).scatter_add(ctx.dim, index, src_wins.to(g.dtype))
    return x_wins * share, src_wins * share.gather(ctx.dim, index)


def _prod_grads(ctx, g, x, index, src, out):
    """The product of the others at each place, without dividing by a zero: a lone zero
    of src gets the product of the place with it set to 1."""
    dim, include_self = ctx.dim, ctx.include_self
    x_safe = x.masked_fill(x == 0, 1)
    gx = g * x_safe.scatter_reduce(dim, index, src, "prod", include_self=include_self) / x_safe
    src_zero = src == 0
    zeros_there = x.new_zeros(x.shape).scatter_add(dim, index, src_zero.to(x.dtype)).gather(dim, index)
    lone_zero = src_zero & (zeros_there == 1)
    if ctx.build_graph and bool((zeros_there > 1).any()):
        raise RuntimeError(
            "scatter_reduce(): Double backward is unsupported for src when >1 zeros in src are scattered "
            "to the same position in self (as in torch)."
        )
    without_it = x.scatter_reduce(dim, index, src.masked_fill(lone_zero, 1), "prod", include_self=include_self)
    others = (g * out).gather(dim, index) / src.masked_fill(src_zero, 1)
    return gx, (g * without_it).gather(dim, index).where(lone_zero, others)


SCATTER_REDUCE_GRADS = {
    "sum": _sum_grads,
    "mean": _mean_grads,
    "amax": _extreme_grads,
    "amin": _extreme_grads,
    "prod": _prod_grads,
}
