"""Layer norm's backward as one C loop per row (layer_norm.c); the formula is
tinygraph.ops.nn.layer_norm_backward."""

from __future__ import annotations

import ctypes
import math

import torch

from . import covers, function, pointer, threads


def layer_norm_backward(g, x, weight, mean, rstd, features, needs_input_grad, waiting):
    """(gx, gw, gb) of layer norm from the forward's mean and rstd, as the formula's arguments
    (gx with `waiting` added, where it is not None)."""
    if not covers(g, x, weight, mean, rstd, waiting) or g.shape != x.shape or x.numel() == 0:
        return NotImplemented
    if waiting is not None and waiting.shape != x.shape:
        return NotImplemented
    kernel = function(
        "layer_norm_backward_f32", *[ctypes.c_void_p] * 9, ctypes.c_int64, ctypes.c_int64, ctypes.c_int,
        restype=ctypes.c_int,
    )  # fmt: skip
    if kernel is None:
        return NotImplemented
    normalized = x.shape[x.ndim - len(features) :]
    d = math.prod(normalized)
    rows = x.numel() // d
    if mean.numel() != rows or rstd.numel() != rows or (weight is not None and weight.numel() != d):
        return NotImplemented  # not the forward's own statistics: the C loop would read past them
    team = threads(x.numel())
    if team > 1 and rows < 2 * team:
        # threads share out rows and each keeps its own sums of gw and gb over all d features: with a
        # row or two each, those sums cost more than the rows (1 x 1e6: 3.9 ms, the formula 2.8)
        return NotImplemented
    g, x, mean, rstd = g.contiguous(), x.contiguous(), mean.contiguous(), rstd.contiguous()
    weight = weight.contiguous() if weight is not None else None
    waiting = waiting.contiguous() if waiting is not None else None
    gx, gw, gb = torch.empty_like(x), x.new_empty(normalized), x.new_empty(normalized)
    args = (g, x, mean, rstd, weight, waiting, gx, gw, gb)
    if kernel(*map(pointer, args), rows, d, team):
        raise MemoryError(
            f"layer_norm's backward could not allocate its partial sums ({24 * d} bytes per thread); free some "
            "memory, or set TINYGRAPH_NATIVE=0 to run its torch formula instead."
        )
    _, dw, db = needs_input_grad[:3]
    return gx, gw if dw else None, gb if db else None
