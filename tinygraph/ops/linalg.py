"""Matrix products."""

from __future__ import annotations

from ..function import Function, register


@register
class MatMul(Function):
    """`a @ b` for inputs of at least 2 dims, batch dims broadcasting (`matmul` adds 1-D)."""

    autocast = "low"

    @staticmethod
    def forward(ctx, a, b):
        da, db = ctx.needs_input_grad
        ctx.fold = b.ndim == 2 and a.ndim > 2
        ctx.save_for_backward(b if da else None, a if db else None)
        return a @ b

    @staticmethod
    def backward(ctx, g):
        b, a = ctx.saved_tensors
        ga = g @ b.mT if b is not None else None
        if a is None:
            gb = None
        elif ctx.fold:  # a shared 2-D weight: fold the batch into rows, no grad per batch
            gb = a.reshape(-1, a.shape[-1]).mT @ g.reshape(-1, g.shape[-1])
        else:
            gb = a.mT @ g
        return ga, gb
