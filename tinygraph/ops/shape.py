"""Ops that move values without computing new ones: views, indexing, joins, gathers."""

from __future__ import annotations

import torch

from ..function import Function, register


@register
class Reshape(Function):
    """`reshape`, and `view` with `view=True` (which refuses a copy, as torch's does)."""

    @staticmethod
    def forward(ctx, x, shape, view=False):
        ctx.shape = x.shape
        return x.view(shape) if view else x.reshape(shape)

    @staticmethod
    def backward(ctx, g):
        return g.reshape(ctx.shape)


@register
class Permute(Function):
    @staticmethod
    def forward(ctx, x, dims):
        ctx.inverse = [0] * len(dims)
        for i, d in enumerate(dims):
            ctx.inverse[d % x.ndim] = i
        return x.permute(dims)

    @staticmethod
    def backward(ctx, g):
        return g.permute(ctx.inverse)


@register
class Expand(Function):
    @staticmethod
    def forward(ctx, x, shape):
        return x.expand(shape)

    @staticmethod
    def backward(ctx, g):
        return g  # the engine sums it back to the input's shape


def is_advanced(index) -> bool:
    """Does this index gather (tensors, lists, bool masks), rather than slice?"""
    parts = index if isinstance(index, tuple) else (index,)
    return any(isinstance(p, (torch.Tensor, list)) for p in parts)


@register
class GetItem(Function):
    """`x[index]`: basic (ints, slices, None, ...) and advanced (tensors, lists, masks)."""

    @staticmethod
    def forward(ctx, x, index):
        ctx.shape, ctx.index = x.shape, index
        return x[index]

    @staticmethod
    def backward(ctx, g):
        return GetItemBackward.apply(g, ctx.shape, ctx.index)


@register
class GetItemBackward(Function):
    """Zeros of `shape` with `g` put at `index`, repeated positions adding up: the backward
    of `x[index]`, an op of its own so that it too can be differentiated (by `g[index]`)."""

    @staticmethod
    def forward(ctx, g, shape, index):
        ctx.index = index
        out = g.new_zeros(shape)
        if not is_advanced(index):
            out[index] = g
            return out
        # Advanced indices may repeat: find each picked element's flat position, then add.
        flat = torch.arange(out.numel(), device=g.device).view(shape)[index]
        return out.view(-1).index_add_(0, flat.reshape(-1), g.reshape(-1)).view(shape)

    @staticmethod
    def backward(ctx, g):
        return g[ctx.index], None, None


@register
class Cat(Function):
    @staticmethod
    def forward(ctx, *tensors, dim=0):
        ctx.dim, ctx.sizes = dim, [t.shape[dim] for t in tensors]
        return torch.cat(tensors, dim)

    @staticmethod
    def backward(ctx, g):
        return tuple(g.split(ctx.sizes, ctx.dim))


@register
class Stack(Function):
    @staticmethod
    def forward(ctx, *tensors, dim=0):
        ctx.dim = dim
        return torch.stack(tensors, dim)

    @staticmethod
    def backward(ctx, g):
        return tuple(g.unbind(ctx.dim))


@register
class Split(Function):
    """Pieces of `sizes` along `dim`, as one node: its backward joins their grads (no zero
    padding per piece), so splitting a sequence into T steps costs O(T), not O(T^2)."""

    multi_output = True

    @staticmethod
    def forward(ctx, x, sizes, dim):
        ctx.dim = dim
        return tuple(x.split(sizes, dim))

    @staticmethod
    def backward(ctx, *grads):
        return Cat.apply(*grads, dim=ctx.dim)


@register
class Unbind(Function):
    """The slices along `dim`, that dim removed, as one node (the inverse of stack)."""

    multi_output = True

    @staticmethod
    def forward(ctx, x, dim):
        ctx.dim = dim
        return tuple(x.unbind(dim))

    @staticmethod
    def backward(ctx, *grads):
        return Stack.apply(*grads, dim=ctx.dim)


@register
class Gather(Function):
    @staticmethod
    def forward(ctx, x, dim, index):
        ctx.shape, ctx.dim = x.shape, dim
        ctx.save_for_backward(index)
        return x.gather(dim, index)

    @staticmethod
    def backward(ctx, g):
        (index,) = ctx.saved_tensors
        return g.new_zeros(ctx.shape).scatter_add(ctx.dim, index, g), None, None


@register
class ScatterAdd(Function):
    @staticmethod
    def forward(ctx, x, dim, index, src):
        ctx.dim = dim
        ctx.save_for_backward(index)
        return x.scatter_add(dim, index, src)

    @staticmethod
    def backward(ctx, g):
        (index,) = ctx.saved_tensors
        return g, None, None, g.gather(ctx.dim, index)


@register
class IndexSelect(Function):
    @staticmethod
    def forward(ctx, x, dim, index):
        ctx.shape, ctx.dim = x.shape, dim
        ctx.save_for_backward(index)
        return x.index_select(dim, index)

    @staticmethod
    def backward(ctx, g):
        (index,) = ctx.saved_tensors
        return g.new_zeros(ctx.shape).index_add(ctx.dim, index, g), None, None


@register
class IndexAdd(Function):
    @staticmethod
    def forward(ctx, x, dim, index, source):
        ctx.dim = dim
        ctx.save_for_backward(index)
        return x.index_add(dim, index, source)

    @staticmethod
    def backward(ctx, g):
        (index,) = ctx.saved_tensors
        return g, None, None, g.index_select(ctx.dim, index)
