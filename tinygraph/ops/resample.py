"""Ops that move values along dims by fixed rules: padding, interpolation, sliding windows.

Padding (reflect, replicate, circular) and interpolation are linear maps, one dim at a
time, that take each output position from a few input positions with fixed weights.
`Taps` lists them; `adjoint` runs a list of them backward: each output's grad goes back
to the positions it was taken from, times the weight (index_select, a product and
index_add: ops with backwards, so create_graph records this as it would any formula).
The forward is torch's kernel; the taps depend on shapes and options only.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import torch
import torch.nn.functional as F

from ..function import Function, register
from .reduce import normalize_dims


def per_dim(value, dims: int, name: str, op: str) -> tuple[int, ...]:
    """An int-or-sequence argument as one int per spatial dim, as torch reads it."""
    values = (value,) * dims if isinstance(value, int) else tuple(int(v) for v in value)
    if len(values) == 1:
        values *= dims
    if len(values) != dims:
        raise RuntimeError(f"{op}: expected {name} to be a single integer or a list of {dims} integers, got {value}")
    return values


class Taps(NamedTuple):
    """A linear map along `dim`: output position out[t] adds weight[t] * input[src[t]] (weight
    None: 1), for every t. `size` is the input's length along `dim`."""

    dim: int
    size: int
    out: torch.Tensor
    src: torch.Tensor
    weight: torch.Tensor | None = None


def adjoint(g, taps):
    """The grad of a map made of `taps` (one per dim) given its output grad g."""
    for t in taps:
        dim = t.dim % g.ndim
        picked = g.index_select(dim, t.out)
        if t.weight is not None:
            picked = picked * t.weight.to(g.dtype).reshape(-1, *(1,) * (g.ndim - 1 - dim))
        shape = list(picked.shape)
        shape[dim] = t.size
        g = picked.new_zeros(shape).index_add(dim, t.src, picked)
    return g


def window_taps(dim: int, size: int, starts: torch.Tensor, ends: torch.Tensor, weights: torch.Tensor) -> Taps:
    """Output o takes weights[o] * input[i] for every i in [starts[o], ends[o]) inside [0, size)."""
    width = int((ends - starts).max().clamp(min=1))
    positions = starts[:, None] + torch.arange(width, device=starts.device)
    inside = (positions < ends[:, None]) & (positions >= 0) & (positions < size)
    out = torch.arange(len(starts), device=starts.device)[:, None].expand_as(positions)
    return Taps(dim, size, out[inside], positions[inside], weights[:, None].expand_as(positions)[inside])


# ---- padding ---------------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=256)
def _pad_taps(shape: tuple[int, ...], pad: tuple[int, ...], mode: str, device: torch.device) -> list[Taps]:
    taps = []
    for i in range(len(pad) // 2):  # F.pad's pairs start from the last dim
        dim, before, after = len(shape) - 1 - i, pad[2 * i], pad[2 * i + 1]
        if before == after == 0:
            continue
        size = shape[dim]
        j = torch.arange(-before, size + after, device=device)  # each output's position relative to the input
        if mode == "reflect":
            src = (size - 1) - ((size - 1) - j.abs()).abs()
        elif mode == "replicate":
            src = j.clamp(0, size - 1)
        else:  # circular
            src = j % size
        taps.append(Taps(dim, size, torch.arange(len(j), device=device), src))
    return taps


@register("F.pad")
class Pad(Function):
    """F.pad. Constant padding's grad is the crop (padding by -pad); reflect, replicate and
    circular padding send the grad of every copy back to the element it copies."""

    @staticmethod
    def call(input, pad, mode="constant", value=None):
        """Pad the last len(pad) // 2 dims, the last first: (left, right, top, bottom, ...). A
        negative amount crops. mode: 'constant' (with `value`, default 0), 'reflect', 'replicate'
        or 'circular' (the last three on the last 1-3 dims, as torch)."""
        return Pad.apply(input, tuple(int(p) for p in pad), mode, value)

    @staticmethod
    def forward(ctx, x, pad, mode, value):
        ctx.shape, ctx.pad, ctx.mode = tuple(x.shape), pad, mode
        return F.pad(x, pad, mode, value)

    @staticmethod
    def backward(ctx, g):
        if ctx.mode == "constant":
            return Pad.apply(g, tuple(-p for p in ctx.pad), "constant", 0.0)
        return adjoint(g, _pad_taps(ctx.shape, ctx.pad, ctx.mode, g.device))


# ---- interpolation ---------------------------------------------------------------------------------------------

# the 1-d mode that does along each dim what a mode does
ONE_DIM = {
    "nearest": "nearest",
    "nearest-exact": "nearest-exact",
    "linear": "linear",
    "bilinear": "linear",
    "trilinear": "linear",
}


@functools.lru_cache(maxsize=256)
def _interpolate_taps(in_size, out_size, scales, mode, align_corners, recompute, device) -> list[Taps]:
    """Where each output position comes from along each dim, found by interpolating the
    positions 0, 1, ..., L-1 themselves with torch's own 1-d interpolation: its choice of
    source index (align_corners, size or scale_factor, rounding) is ours by construction.
    Nearest: the position is the source. Linear: position p lies between floor(p) and the
    next one, weights 1 - frac and frac (both the last at the end)."""
    taps = []
    for i, (size, length) in enumerate(zip(in_size, out_size)):
        positions = torch.arange(size, dtype=torch.float64, device=device).reshape(1, 1, size)
        how = {"size": length} if scales is None else {"scale_factor": scales[i]}
        linear = ONE_DIM[mode] == "linear"
        where = F.interpolate(
            positions, **how, mode=ONE_DIM[mode], align_corners=align_corners if linear else None,
            recompute_scale_factor=recompute,
        ).reshape(-1)  # fmt: skip
        outputs = torch.arange(length, device=device)
        if not linear:
            taps.append(Taps(i - len(in_size), size, outputs, where.long()))
            continue
        lo = where.floor().long().clamp(max=size - 1)
        frac = where - lo
        hi = (lo + 1).clamp(max=size - 1)
        taps.append(Taps(i - len(in_size), size, outputs.repeat(2), torch.cat([lo, hi]), torch.cat([1 - frac, frac])))
    return taps


def _area_size(input, size, scale_factor, align_corners):
    """The output size of mode='area', as torch computes it (floor(side * scale))."""
    if align_corners is not None:
        raise ValueError(
            "align_corners option can only be set with the interpolating modes: linear | bilinear | bicubic | trilinear"
        )
    if (size is None) == (scale_factor is None):
        raise ValueError("only one of size or scale_factor should be defined" if size is not None else
                         "either size or scale_factor should be defined")  # fmt: skip
    dims = input.ndim - 2
    if size is not None:
        return tuple(size) if isinstance(size, (tuple, list)) else (size,) * dims
    scales = tuple(scale_factor) if isinstance(scale_factor, (tuple, list)) else (scale_factor,) * dims
    return tuple(math.floor(float(side) * s) for side, s in zip(input.shape[2:], scales))


@register("F.interpolate")
class Interpolate(Function):
    """F.interpolate's nearest, nearest-exact, linear, bilinear and trilinear modes. The
    forward is torch's; the backward sends each output's grad to its sources (see Taps)."""

    @staticmethod
    def call(
        input,
        size=None,
        scale_factor=None,
        mode="nearest",
        align_corners=None,
        recompute_scale_factor=None,
        antialias=False,
    ):
        """Resize the spatial dims of (N, C, *spatial) to `size`, or by `scale_factor`: 'nearest',
        'nearest-exact', 'linear' (3-D), 'bilinear' (4-D), 'trilinear' (5-D), with torch's
        `align_corners`; 'area' is adaptive average pooling to the new size."""
        if antialias:
            raise NotImplementedError("interpolate: antialias=True is not supported by tinygraph; leave it False.")
        if mode == "area":
            from .pool import adaptive_avg_pool  # (pool builds on this module)

            return adaptive_avg_pool(input, _area_size(input, size, scale_factor, align_corners))
        if mode in ("bicubic", "lanczos"):
            raise NotImplementedError(
                f"interpolate: mode={mode!r} is not supported by tinygraph; use 'bilinear', 'nearest' or 'area'."
            )
        if scale_factor is not None and not isinstance(scale_factor, (tuple, list)):
            scale_factor = (float(scale_factor),) * (input.ndim - 2)
        scales = tuple(scale_factor) if scale_factor is not None else None
        size = tuple(size) if isinstance(size, (tuple, list)) else size
        return Interpolate.apply(input, size, scales, mode, align_corners, recompute_scale_factor)

    @staticmethod
    def forward(ctx, x, size, scales, mode, align_corners, recompute):
        out = F.interpolate(x, size, scales, mode, align_corners, recompute)
        ctx.options = tuple(x.shape[2:]), tuple(out.shape[2:]), scales, mode, align_corners, recompute
        return out

    @staticmethod
    def backward(ctx, g):
        return adjoint(g, _interpolate_taps(*ctx.options, g.device))


# ---- sliding windows -------------------------------------------------------------------------------------------


@register("Tensor.unfold")
class Unfold(Function):
    """`x.unfold(dimension, size, step)`: the windows x[..., i*step : i*step + size, ...] along
    `dimension`, each laid out along a new last dim; a view. An element in several windows
    gets the sum of their grads."""

    view = True

    @staticmethod
    def call(input, dimension, size, step):
        if input.ndim == 0:  # torch's scalar special case: one window of the one element
            return input.reshape(input.data.unfold(dimension, size, step).shape)
        (dim,) = normalize_dims(dimension, input.ndim)
        return Unfold.apply(input, dim, size, step)

    @staticmethod
    def forward(ctx, x, dim, size, step):
        ctx.shape, ctx.dim, ctx.size, ctx.step = x.shape, dim, size, step
        return x.unfold(dim, size, step)

    @staticmethod
    def backward(ctx, g):
        dim, windows = ctx.dim, g.shape[ctx.dim]
        g = g.movedim(-1, dim + 1).flatten(dim, dim + 1)  # window i, offset j: input position i * step + j
        src = torch.arange(windows, device=g.device)[:, None] * ctx.step + torch.arange(ctx.size, device=g.device)
        return g.new_zeros(ctx.shape).index_add(dim, src.reshape(-1), g)


@register("F.unfold")
class Im2Col(Function):
    """F.unfold: every kernel-sized block of (N, C, H, W) as a column (N, C * kh * kw, blocks).
    Its grad is F.fold of the grad (overlapping blocks add up), and fold's is unfold."""

    @staticmethod
    def call(input, kernel_size, dilation=1, padding=0, stride=1):
        return Im2Col.apply(input, kernel_size, dilation, padding, stride)

    @staticmethod
    def forward(ctx, x, kernel_size, dilation, padding, stride):
        ctx.size, ctx.options = tuple(x.shape[-2:]), (kernel_size, dilation, padding, stride)
        return F.unfold(x, kernel_size, dilation, padding, stride)

    @staticmethod
    def backward(ctx, g):
        return Col2Im.apply(g, ctx.size, *ctx.options)


@register("F.fold")
class Col2Im(Function):
    """F.fold: columns (N, C * kh * kw, blocks) summed back into an (N, C, *output_size) image;
    the transpose of F.unfold."""

    @staticmethod
    def call(input, output_size, kernel_size, dilation=1, padding=0, stride=1):
        return Col2Im.apply(input, output_size, kernel_size, dilation, padding, stride)

    @staticmethod
    def forward(ctx, x, output_size, kernel_size, dilation, padding, stride):
        ctx.options = (kernel_size, dilation, padding, stride)
        return F.fold(x, output_size, kernel_size, dilation, padding, stride)

    @staticmethod
    def backward(ctx, g):
        return Im2Col.apply(g, *ctx.options)
