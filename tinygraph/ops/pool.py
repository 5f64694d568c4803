"""Pooling: max (and its inverse, max_unpool), average and adaptive pooling, 1-d to 3-d.

Max pooling's forward is torch's, which also says where each maximum was (`indices`, flat
over the spatial dims); its backward adds each output's grad at that position (an element
that wins several windows gets them all), and max_unpool, which puts values at such
positions, takes its grad back from them. Average pooling is a fixed linear map along
each spatial dim (a window's elements, each times 1 / its divisor), so its backward is
the `adjoint` of its taps, like padding's and interpolation's (see resample.py).
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F

from ..function import Function, public, register
from ..tensor import unwrap
from .resample import adjoint, per_dim, window_taps


def _flat_spatial(t, dims: int):
    return t.flatten(-dims) if dims > 1 else t


# ---- max -------------------------------------------------------------------------------------------------------


@register
class MaxPool(Function):
    """The largest element of each window, and where it was: `pool` is torch's max_poolNd or
    adaptive_max_poolNd over the last `dims` dims, `options` its arguments; `dilated` says
    whether a window may hold no element of the input at all."""

    @staticmethod
    def forward(ctx, x, dims, dilated, pool, *options):
        out, indices = pool(x, *options, return_indices=True)
        ctx.shape, ctx.dims, ctx.dilated = x.shape, dims, dilated
        ctx.save_for_backward(indices)
        return out, indices

    @staticmethod
    def backward(ctx, g):
        (indices,) = ctx.saved_tensors
        lead, size = ctx.shape[: -ctx.dims], math.prod(ctx.shape[-ctx.dims :])
        indices, g = _flat_spatial(indices, ctx.dims), _flat_spatial(g, ctx.dims)
        if ctx.dilated:  # a window can miss the input: its -inf comes with an index past the end; no grad there
            past = indices >= size
            indices, g = indices.masked_fill(past, 0), g.masked_fill(past, 0)
        return g.new_zeros([*lead, size]).scatter_add(-1, indices, g).reshape(ctx.shape)

    # the public functions, with torch's signatures

    @staticmethod
    @public("F.max_pool1d tinygraph.max_pool1d")
    def max_pool1d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False):
        """The largest element of each window along the last dim (and, if asked, where it was)."""
        return _max_pool(1, input, kernel_size, stride, padding, dilation, ceil_mode, return_indices)

    @staticmethod
    @public("F.max_pool2d tinygraph.max_pool2d")
    def max_pool2d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False):
        """The largest element of each window over the last 2 dims (and, if asked, where it was: flat over them)."""
        return _max_pool(2, input, kernel_size, stride, padding, dilation, ceil_mode, return_indices)

    @staticmethod
    @public("F.max_pool3d tinygraph.max_pool3d")
    def max_pool3d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False):
        """The largest element of each window over the last 3 dims (and, if asked, where it was: flat over them)."""
        return _max_pool(3, input, kernel_size, stride, padding, dilation, ceil_mode, return_indices)

    @staticmethod
    @public("F.adaptive_max_pool1d")
    def adaptive_max_pool1d(input, output_size, return_indices=False):
        """The largest element of each of `output_size` windows along the last dim, as even as can be."""
        return _adaptive_max_pool(1, input, output_size, return_indices)

    @staticmethod
    @public("F.adaptive_max_pool2d")
    def adaptive_max_pool2d(input, output_size, return_indices=False):
        """The largest element of each of `output_size` windows over the last 2 dims (None keeps a size)."""
        return _adaptive_max_pool(2, input, output_size, return_indices)

    @staticmethod
    @public("F.adaptive_max_pool3d")
    def adaptive_max_pool3d(input, output_size, return_indices=False):
        """The largest element of each of `output_size` windows over the last 3 dims (None keeps a size)."""
        return _adaptive_max_pool(3, input, output_size, return_indices)


def _max_pool(dims, input, kernel_size, stride, padding, dilation, ceil_mode, return_indices):
    pool = (F.max_pool1d, F.max_pool2d, F.max_pool3d)[dims - 1]
    dilated = any(d > 1 for d in per_dim(dilation, dims, "dilation", f"max_pool{dims}d"))
    out, indices = MaxPool.apply(input, dims, dilated, pool, kernel_size, stride, padding, dilation, ceil_mode)
    return (out, indices) if return_indices else out


def _adaptive_max_pool(dims, input, output_size, return_indices):
    pool = (F.adaptive_max_pool1d, F.adaptive_max_pool2d, F.adaptive_max_pool3d)[dims - 1]
    out, indices = MaxPool.apply(input, dims, False, pool, output_size)
    return (out, indices) if return_indices else out


@register
class MaxUnpool(Function):
    """torch's max_unpoolNd (`unpool`): each value put at its position (`indices`, as max
    pooling gives them) in zeros of the unpooled size; its grad is read back from there."""

    @staticmethod
    def forward(ctx, x, indices, dims, unpool, *options):
        ctx.shape, ctx.dims = x.shape, dims
        ctx.save_for_backward(indices)
        return unpool(x, indices, *options)

    @staticmethod
    def backward(ctx, g):
        (indices,) = ctx.saved_tensors
        return _flat_spatial(g, ctx.dims).gather(-1, _flat_spatial(indices, ctx.dims)).reshape(ctx.shape), None

    # the public functions, with torch's signatures

    @staticmethod
    @public("F.max_unpool1d")
    def max_unpool1d(input, indices, kernel_size, stride=None, padding=0, output_size=None):
        """The inverse of max_pool1d given its indices: each value at its position, zeros elsewhere."""
        return _max_unpool(1, input, indices, kernel_size, stride, padding, output_size)

    @staticmethod
    @public("F.max_unpool2d")
    def max_unpool2d(input, indices, kernel_size, stride=None, padding=0, output_size=None):
        """The inverse of max_pool2d given its indices: each value at its position, zeros elsewhere."""
        return _max_unpool(2, input, indices, kernel_size, stride, padding, output_size)

    @staticmethod
    @public("F.max_unpool3d")
    def max_unpool3d(input, indices, kernel_size, stride=None, padding=0, output_size=None):
        """The inverse of max_pool3d given its indices: each value at its position, zeros elsewhere."""
        return _max_unpool(3, input, indices, kernel_size, stride, padding, output_size)


def _max_unpool(dims, input, indices, kernel_size, stride, padding, output_size):
    unpool = (F.max_unpool1d, F.max_unpool2d, F.max_unpool3d)[dims - 1]
    return MaxUnpool.apply(input, unwrap(indices), dims, unpool, kernel_size, stride, padding, output_size)


# ---- average ---------------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=256)
def _avg_taps(in_size, out_size, kernel, stride, padding, count_include_pad, divisor_override, device):
    """torch's windows: o * stride - padding, k long but never past the padding (ceil_mode's
    last one may end sooner). The divisor (the window's length, or the part of it inside
    the input) is a product of one factor per dim, so each dim divides by its own; a
    `divisor_override` divides once, in the first dim."""
    taps = []
    for i, (size, length, k, s, p) in enumerate(zip(in_size, out_size, kernel, stride, padding)):
        starts = torch.arange(length, device=device) * s - p
        ends = (starts + k).clamp(max=size + p)
        if divisor_override:
            weight = torch.full(starts.shape, 1 / divisor_override if i == 0 else 1.0, dtype=torch.float64)
        else:
            divisor = (ends - starts) if count_include_pad else ends.clamp(max=size) - starts.clamp(min=0)
            weight = 1 / divisor.clamp(min=1).double()  # (an empty window has no taps)
        taps.append(window_taps(i - len(in_size), size, starts, ends, weight.to(device)))
    return taps


@register
class AvgPool(Function):
    """The mean of each window (avg_poolNd over the last len(kernel) dims)."""

    @staticmethod
    def forward(ctx, x, kernel, stride, padding, ceil_mode, count_include_pad, divisor_override):
        dims = len(kernel)
        pool = (F.avg_pool1d, F.avg_pool2d, F.avg_pool3d)[dims - 1]
        extra = (divisor_override,) if dims > 1 else ()
        out = pool(x, kernel, stride, padding, ceil_mode, count_include_pad, *extra)
        sizes = tuple(x.shape[-dims:]), tuple(out.shape[-dims:])
        ctx.taps = (*sizes, kernel, stride, padding, count_include_pad, divisor_override)
        return out

    @staticmethod
    def backward(ctx, g):
        return adjoint(g, _avg_taps(*ctx.taps, g.device))

    # the public functions, with torch's signatures

    @staticmethod
    @public("F.avg_pool1d tinygraph.avg_pool1d")
    def avg_pool1d(input, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True):
        """The mean of each window along the last dim (the padding counts in it unless count_include_pad=False)."""
        return _avg_pool(1, input, kernel_size, stride, padding, ceil_mode, count_include_pad)

    @staticmethod
    @public("F.avg_pool2d")
    def avg_pool2d(
        input, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True, divisor_override=None
    ):
        """The mean of each window over the last 2 dims (or its sum / divisor_override)."""
        return _avg_pool(2, input, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override)

    @staticmethod
    @public("F.avg_pool3d")
    def avg_pool3d(
        input, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True, divisor_override=None
    ):
        """The mean of each window over the last 3 dims (or its sum / divisor_override)."""
        return _avg_pool(3, input, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override)


def _avg_pool(dims, input, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override=None):
    name = f"avg_pool{dims}d"
    kernel = per_dim(kernel_size, dims, "kernel_size", name)
    stride = kernel if stride is None or stride == [] else per_dim(stride, dims, "stride", name)
    padding = per_dim(padding, dims, "padding", name)
    if divisor_override == 0:
        raise RuntimeError("divisor must be not zero")
    return AvgPool.apply(input, kernel, stride, padding, ceil_mode, count_include_pad, divisor_override)


@functools.lru_cache(maxsize=256)
def _adaptive_taps(in_size, out_size, device):
    """torch's adaptive windows: output o of n covers [floor(o * L / n), ceil((o + 1) * L / n))."""
    taps = []
    for i, (size, length) in enumerate(zip(in_size, out_size)):
        o = torch.arange(length, device=device)
        starts, ends = o * size // length, ((o + 1) * size + length - 1) // length
        taps.append(window_taps(i - len(in_size), size, starts, ends, 1 / (ends - starts).double()))
    return taps


@register
class AdaptiveAvgPool(Function):
    """The mean of each of `output_size` windows, as even as can be, over the last `dims` dims."""

    @staticmethod
    def forward(ctx, x, dims, output_size):
        out = (F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_avg_pool3d)[dims - 1](x, output_size)
        ctx.taps = tuple(x.shape[-dims:]), tuple(out.shape[-dims:])
        return out

    @staticmethod
    def backward(ctx, g):
        return adjoint(g, _adaptive_taps(*ctx.taps, g.device))

    # the public functions, with torch's signatures

    @staticmethod
    @public("F.adaptive_avg_pool1d tinygraph.adaptive_avg_pool1d")
    def adaptive_avg_pool1d(input, output_size):
        """The mean of each of `output_size` windows along the last dim, as even as can be."""
        return AdaptiveAvgPool.apply(input, 1, output_size)

    @staticmethod
    @public("F.adaptive_avg_pool2d")
    def adaptive_avg_pool2d(input, output_size):
        """The mean of each of `output_size` windows over the last 2 dims (None keeps a size)."""
        return AdaptiveAvgPool.apply(input, 2, output_size)

    @staticmethod
    @public("F.adaptive_avg_pool3d")
    def adaptive_avg_pool3d(input, output_size):
        """The mean of each of `output_size` windows over the last 3 dims (None keeps a size)."""
        return AdaptiveAvgPool.apply(input, 3, output_size)


def adaptive_avg_pool(input, output_size):
    """Adaptive average pooling over as many trailing dims as `output_size` lists (None keeps a size)."""
    return AdaptiveAvgPool.apply(input, len(output_size), tuple(output_size))
