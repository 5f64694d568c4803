"""Cumulative ops along a dim: cumsum, cumprod, logcumsumexp, cummax, cummin."""

from __future__ import annotations

import torch

from ..function import Function, public, register
from .reduce import ValuesIndices, normalize_dims, pick_along_dim


def reversed_cumsum(t, dim):
    """Element k is the sum of the elements from k to the end: the backward of cumsum."""
    return t.flip(dim).cumsum(dim).flip(dim)


@register("Tensor.cumsum Tensor.cumsum_ tinygraph.cumsum")
class Cumsum(Function):
    """The running sum. With `dtype`, the sums are made in that dtype and the grad in the
    input's, as torch's."""

    @staticmethod
    def forward(ctx, x, dim, *, dtype=None):
        ctx.dim, ctx.input_dtype = dim, x.dtype
        return x.cumsum(dim, dtype=dtype)

    @staticmethod
    def backward(ctx, g):
        return reversed_cumsum(g if g.dtype == ctx.input_dtype else g.to(ctx.input_dtype), ctx.dim)


def cumprod_composite(x, dim, *, dtype=None):
    """cumprod from primitive ops, for create_graph: element j is the product of the
    elements i along `dim` with those after j (i > j) replaced by 1, an (n, n) table per row."""
    if dtype is not None:
        x = x.to(dtype)
    if x.ndim == 0:
        return x * 1
    (dim,) = normalize_dims(dim, x.ndim)
    n = x.shape[dim]
    position = torch.arange(n, device=x.device)
    later = (position > position.unsqueeze(1)).reshape(n, n, *[1] * (x.ndim - dim - 1))  # [j, i]: is i after j?
    return x.unsqueeze(dim).masked_fill(later, 1).prod(dim + 1)


@register("Tensor.cumprod Tensor.cumprod_ tinygraph.cumprod")
class Cumprod(Function):
    """The running product (with `dtype`, made in that dtype). The grad of element k is the sum over j >= k of g_j times the
    product of the elements up to j but k. Its backward is torch's O(n) one, exact where the
    input has zeros: before a row's first zero that is the reversed cumsum of g * out,
    divided by x_k; at the first zero, the product before it times what follows it up to
    the second zero; after it, 0. Create_graph differentiates `cumprod_composite`."""

    composite = staticmethod(cumprod_composite)

    @staticmethod
    def forward(ctx, x, dim, *, dtype=None):
        ctx.dim = dim
        out = x.cumprod(dim, dtype=dtype)
        ctx.save_for_backward(x, out)
        return out

    @staticmethod
    def backward(ctx, g):
        x, out = ctx.saved_tensors
        g = g.to(x.dtype)  # with dtype=: the grad in the input's dtype, as torch's
        if x.ndim == 0:
            return g
        dim = ctx.dim
        is_zero = x == 0
        zeros_so_far = is_zero.cumsum(dim)
        before = zeros_so_far == 0  # before the row's first zero
        after_first = zeros_so_far == 1  # from the first zero to the second
        safe = x.masked_fill(~before, 1)
        grad = reversed_cumsum((out * g).masked_fill_(~before, 0), dim).div_(safe)
        from_first = x.masked_fill(~after_first | is_zero, 1).cumprod(dim).mul_(g.masked_fill(~after_first, 0))
        at_first = safe.prod(dim, keepdim=True).mul_(from_first.sum(dim, keepdim=True))
        return torch.where(is_zero & after_first, at_first, grad)


@register("Tensor.logcumsumexp tinygraph.logcumsumexp")
class LogCumSumExp(Function):
    """log(cumsum(exp(x))), computed stably. The grad, sum over j >= k of g_j exp(x_k -
    out_j), is computed as torch's is: the positive and the negative parts of g each go
    through a reversed logcumsumexp, so nothing overflows."""

    autocast = "float32"

    @staticmethod
    def forward(ctx, x, dim):
        ctx.dim = dim
        out = x.logcumsumexp(dim)
        ctx.save_for_backward(x, out)
        return out

    @staticmethod
    def backward(ctx, g):
        x, out = ctx.saved_tensors
        dim, lowest = ctx.dim, torch.finfo(g.dtype).min
        log_abs = g.abs().log()
        positive = _reversed_logcumsumexp(log_abs.masked_fill(~(g > 0), lowest) - out, dim)
        negative = _reversed_logcumsumexp(log_abs.masked_fill(~(g < 0), lowest) - out, dim)
        return (positive + x).exp() - (negative + x).exp()


def _reversed_logcumsumexp(t, dim):
    return t.flip(dim).logcumsumexp(dim).flip(dim)


@public("Tensor.cummax tinygraph.cummax")
def cummax(input, dim) -> ValuesIndices:
    """The running maximum along `dim` and where it was found; each value's grad goes there."""
    return pick_along_dim(input, "cummax", dim, reduces=False)


@public("Tensor.cummin tinygraph.cummin")
def cummin(input, dim) -> ValuesIndices:
    """The running minimum along `dim` and where it was found; each value's grad goes there."""
    return pick_along_dim(input, "cummin", dim, reduces=False)
