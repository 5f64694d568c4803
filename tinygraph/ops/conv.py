"""Convolutions (conv1d/2d/3d) and transposed convolutions, each the other's backward.

A convolution's input grad is the transposed convolution of its output grad with the same
weight; a transposed convolution's input grad is the convolution of its output grad. The
weight's grad is, for both, the correlation of one side with the other summed over the
batch, which is one more convolution (`weight_grad`). So `Conv.backward` calls
`ConvTranspose` and `Conv`, and `ConvTranspose.backward` calls `Conv`: under create_graph
those calls are recorded like any other op, and every higher order comes from the same
two ops. torch's convolution kernel does the arithmetic, forward only.
"""

from __future__ import annotations

import torch

from ..function import Function, public, register
from ..tensor import require_one_dtype
from .resample import Pad, per_dim


def _batched(op: str, input, dims: int):
    """input with a batch dim (torch accepts an unbatched (C, *spatial) input), and whether one was added."""
    if input.ndim not in (dims + 1, dims + 2):
        raise RuntimeError(
            f"Expected {dims + 1}D (unbatched) or {dims + 2}D (batched) input to {op}, but got input of size: "
            f"{list(input.shape)}"
        )
    return (input.unsqueeze(0), True) if input.ndim == dims + 1 else (input, False)


def _sum_but_channels(g):
    return g.sum([0, *range(2, g.ndim)])


def weight_grad(x, g, kernel, stride, padding, dilation, groups):
    """The weight's grad of a convolution of x whose output grad is g (and, with the two
    exchanged, of a transposed convolution: see ConvTranspose.backward):

        gw[o, i, k] = sum over batch n and output positions t of  g[n, o, t] * x[n, i, t * stride + k * dilation - padding]

    That is itself a convolution, of x with g as the weight, summing over the batch as a
    convolution sums over channels: x's batch becomes the channels (group by group) and its
    channels the batch, g's batch the weight's input channels; stride and dilation trade
    places. Its output covers at least the kernel; the rest is cut off.
    """
    n, dims = x.shape[0], len(kernel)
    spatial = list(range(3, 3 + dims))
    xs = x.reshape(n, groups, x.shape[1] // groups, *x.shape[2:]).permute(2, 1, 0, *spatial)
    xs = xs.reshape(x.shape[1] // groups, groups * n, *x.shape[2:])
    gs = g.transpose(0, 1).contiguous()  # (C_out, N, *spatial); contiguous: twice as fast a kernel on CPU
    out = Conv.apply(xs, gs, None, stride=dilation, padding=padding, dilation=stride, groups=groups)
    return _crop(out, kernel).transpose(0, 1)


def _crop(t, sizes):
    """t's first `sizes` positions of each spatial dim."""
    if tuple(t.shape[2:]) == tuple(sizes):
        return t
    return t[(slice(None), slice(None), *(slice(0, size) for size in sizes))]


def _forward(ctx, x, weight, bias, stride, padding, dilation, groups, transposed, output_padding):
    """Either op's forward: torch's convolution kernel, keeping x for the weight's grad and the weight for x's."""
    require_one_dtype("convolution", input=x, weight=weight, bias=bias)  # (torch.convolution itself casts)
    dx, dw, _ = ctx.needs_input_grad
    ctx.options = stride, padding, dilation, groups
    ctx.input_size, ctx.kernel = x.shape[2:], weight.shape[2:]
    ctx.save_for_backward(x if dw else None, weight if dx else None)
    return torch.convolution(x, weight, bias, stride, padding, dilation, transposed, output_padding, groups)


@register
class Conv(Function):
    """Cross-correlation of x (N, C_in, *spatial) with weight (C_out, C_in / groups, *kernel), plus bias."""

    autocast = "low"

    @staticmethod
    def forward(ctx, x, weight, bias=None, *, stride, padding, dilation, groups):
        return _forward(ctx, x, weight, bias, stride, padding, dilation, groups, False, (0,) * len(stride))

    @staticmethod
    def backward(ctx, g):
        x, weight = ctx.saved_tensors
        dx, dw, db = ctx.needs_input_grad
        stride, padding, dilation, groups = ctx.options
        gx = gw = None
        if dx:
            # the transposed convolution's output would be shorter than x by the positions no
            # window reached (at most stride - 1 of them): output_padding restores them
            extra = tuple(
                size + 2 * p - d * (k - 1) - 1 - (out - 1) * s
                for size, out, k, s, p, d in zip(ctx.input_size, g.shape[2:], ctx.kernel, stride, padding, dilation)
            )
            gx = ConvTranspose.apply(
                g, weight, None, stride=stride, padding=padding, output_padding=extra, groups=groups, dilation=dilation
            )
        if dw:
            gw = weight_grad(x, g, ctx.kernel, stride, padding, dilation, groups)
        return gx, gw, _sum_but_channels(g) if db else None

    # the public functions, with torch's signatures

    @staticmethod
    @public("F.conv1d tinygraph.conv1d")
    def conv1d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
        """Cross-correlation of input (N, C_in, L) or (C_in, L) with weight (C_out, C_in / groups, k), plus
        bias (C_out). padding: an int, 'valid' (none) or 'same' (output as long as input; stride 1)."""
        return _conv(1, input, weight, bias, stride, padding, dilation, groups)

    @staticmethod
    @public("F.conv2d tinygraph.conv2d")
    def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
        """Cross-correlation of input (N, C_in, H, W) or (C_in, H, W) with weight (C_out, C_in / groups, kh, kw),
        plus bias (C_out). stride, padding, dilation: an int or one per dim; padding also 'valid' or 'same'."""
        return _conv(2, input, weight, bias, stride, padding, dilation, groups)

    @staticmethod
    @public("F.conv3d tinygraph.conv3d")
    def conv3d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
        """Cross-correlation of input (N, C_in, D, H, W) or unbatched with weight (C_out, C_in / groups, *kernel),
        plus bias (C_out). stride, padding, dilation: an int or one per dim; padding also 'valid' or 'same'."""
        return _conv(3, input, weight, bias, stride, padding, dilation, groups)


@register
class ConvTranspose(Function):
    """The transpose (adjoint) of Conv: x (N, C_in, *spatial) with weight (C_in, C_out / groups, *kernel),
    plus bias; output_padding adds that many positions at the end of each spatial dim."""

    autocast = "low"

    @staticmethod
    def forward(ctx, x, weight, bias=None, *, stride, padding, output_padding, groups, dilation):
        return _forward(ctx, x, weight, bias, stride, padding, dilation, groups, True, output_padding)

    @staticmethod
    def backward(ctx, g):
        x, weight = ctx.saved_tensors
        dx, dw, db = ctx.needs_input_grad
        stride, padding, dilation, groups = ctx.options
        gx = gw = None
        if dx:
            gx = Conv.apply(g, weight, None, stride=stride, padding=padding, dilation=dilation, groups=groups)
            gx = _crop(gx, ctx.input_size)  # longer than x where output_padding >= stride: windows past the end
        if dw:
            gw = weight_grad(g, x, ctx.kernel, stride, padding, dilation, groups)
        return gx, gw, _sum_but_channels(g) if db else None

    # the public functions, with torch's signatures

    @staticmethod
    @public("F.conv_transpose1d tinygraph.conv_transpose1d")
    def conv_transpose1d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1):
        """The transpose of conv1d (its input grad): input (N, C_in, L) or (C_in, L), weight
        (C_in, C_out / groups, k), plus bias (C_out); output_padding lengthens the output at the end."""
        return _conv_transpose(1, input, weight, bias, stride, padding, output_padding, groups, dilation)

    @staticmethod
    @public("F.conv_transpose2d tinygraph.conv_transpose2d")
    def conv_transpose2d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1):
        """The transpose of conv2d (its input grad): input (N, C_in, H, W) or unbatched, weight
        (C_in, C_out / groups, kh, kw), plus bias (C_out); output_padding adds rows and columns at the end."""
        return _conv_transpose(2, input, weight, bias, stride, padding, output_padding, groups, dilation)

    @staticmethod
    @public("F.conv_transpose3d tinygraph.conv_transpose3d")
    def conv_transpose3d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1):
        """The transpose of conv3d (its input grad): input (N, C_in, D, H, W) or unbatched, weight
        (C_in, C_out / groups, *kernel), plus bias (C_out)."""
        return _conv_transpose(3, input, weight, bias, stride, padding, output_padding, groups, dilation)


def _conv(dims, input, weight, bias, stride, padding, dilation, groups):
    name = f"conv{dims}d"
    stride, dilation = per_dim(stride, dims, "stride", name), per_dim(dilation, dims, "dilation", name)
    x, unbatched = _batched(name, input, dims)
    if padding == "same":  # d * (k - 1) in all per dim, half before; an odd total puts the extra one after
        if any(s != 1 for s in stride):
            raise RuntimeError("padding='same' is not supported for strided convolutions")
        totals = [d * (k - 1) for d, k in zip(dilation, weight.shape[2:])]
        if any(t % 2 for t in totals):
            x = Pad.call(x, [p for t in reversed(totals) for p in (0, t % 2)])  # F.pad lists the last dim first
        padding = tuple(t // 2 for t in totals)
    elif padding == "valid":
        padding = (0,) * dims
    elif isinstance(padding, str):
        raise RuntimeError(f"Invalid padding string: '{padding}'")
    else:
        padding = per_dim(padding, dims, "padding", name)
    out = Conv.apply(x, weight, bias, stride=stride, padding=padding, dilation=dilation, groups=groups)
    return out.squeeze(0) if unbatched else out


def _conv_transpose(dims, input, weight, bias, stride, padding, output_padding, groups, dilation):
    name = f"conv_transpose{dims}d"
    if isinstance(padding, str):
        raise TypeError(f"{name}(): argument 'padding' must be tuple of ints, not str")
    x, unbatched = _batched(name, input, dims)
    out = ConvTranspose.apply(
        x,
        weight,
        bias,
        stride=per_dim(stride, dims, "stride", name),
        padding=per_dim(padding, dims, "padding", name),
        output_padding=per_dim(output_padding, dims, "output_padding", name),
        groups=groups,
        dilation=per_dim(dilation, dims, "dilation", name),
    )
    return out.squeeze(0) if unbatched else out
