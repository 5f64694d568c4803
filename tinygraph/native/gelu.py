"""GELU's backward as one C loop (gelu.c); the formula is tinygraph.ops.elementwise.gelu_backward."""

from __future__ import annotations

import ctypes

import torch

from . import covers, function, pointer, threads


def gelu_backward(g, x, out, approximate):
    """g * gelu'(x) from x and the output gelu(x), as the formula's arguments."""
    if not covers(g, x, out) or not (g.shape == x.shape == out.shape):
        return NotImplemented
    kernel = function("gelu_backward_f32", *[ctypes.c_void_p] * 4, ctypes.c_int64, ctypes.c_int, ctypes.c_int)
    if kernel is None:
        return NotImplemented
    g, x, out = g.contiguous(), x.contiguous(), out.contiguous()
    gx = torch.empty_like(x)
    n = x.numel()
    kernel(pointer(g), pointer(x), pointer(out), pointer(gx), n, approximate == "tanh", threads(n))
    return gx
