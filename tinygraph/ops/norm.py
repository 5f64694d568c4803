"""Norms: `linalg.vector_norm` is the op; `Tensor.norm`, `linalg.norm` and
`linalg.matrix_norm` choose what it computes, as torch's do."""

from __future__ import annotations

import math

import torch

from ..function import Function, public, register
from .reduce import Amax, normalize_dims, unreduce


@register("linalg.vector_norm")
class VectorNorm(Function):
    """(sum |x|^ord)^(1/ord) over `dim` (every dim by default); ord 0 counts the nonzeros,
    inf and -inf give the largest and smallest |x|. Where the norm is 0 the grad is 0, as torch's."""

    @staticmethod
    def call(x, ord=2, dim=None, keepdim=False, *, dtype=None):
        if not isinstance(ord, (int, float)) or isinstance(ord, bool):
            raise RuntimeError(f"linalg.vector_norm: ord must be a number, not {ord!r}.")
        return VectorNorm.apply(x, float(ord), dim, keepdim, dtype=dtype)

    @staticmethod
    def forward(ctx, x, ord, dim, keepdim, *, dtype=None):
        ctx.ord, ctx.dims, ctx.keepdim = ord, normalize_dims(dim, x.ndim), keepdim
        out = torch.linalg.vector_norm(x, ord, dim, keepdim, dtype=dtype)
        ctx.save_for_backward(x, out)
        return out

    @staticmethod
    def backward(ctx, g):
        x, out = ctx.saved_tensors
        p = ctx.ord
        g, out = unreduce(g, x.shape, ctx.dims, ctx.keepdim), unreduce(out, x.shape, ctx.dims, ctx.keepdim)
        if p == 0:
            return None  # torch's: no grad at all (x.grad stays None)
        if p == 1:
            return x.sign() * g
        if p == 2:
            return g * (x / out).masked_fill(out == 0, 0)
        if math.isinf(p):  # the elements at the extreme (or NaN) share the grad
            at_extreme = (x.abs() == out) | x.isnan()
            return x.sign() * (g / at_extreme.sum(ctx.dims, keepdim=True)) * at_extreme
        if p < 1:
            return x.sign() * x.abs().pow(p - 1).masked_fill(x == 0, 0) * g * out.pow(1 - p)
        scale = (g / out.pow(p - 1)).masked_fill(out == 0, 0)
        if p < 2:
            return x.sign() * x.abs().pow(p - 1) * scale
        return x * x.abs().pow(p - 2) * scale


@public("linalg.matrix_norm")
def matrix_norm(A, ord="fro", dim=(-2, -1), keepdim=False, *, dtype=None):
    """'fro' (the 2-norm of all the entries), and 1, -1, inf, -inf (the largest or smallest
    column or row sum of |A|), over the two dims `dim`; torch's formulas, so torch's grads."""
    if A.ndim < 2:
        raise RuntimeError(f"linalg.matrix_norm: The input tensor A must have at least 2 dimensions, not {A.ndim}.")
    dims = list(dim)
    if len(dims) != 2 or len(normalize_dims(dims, A.ndim)) != 2:
        raise RuntimeError(f"linalg.matrix_norm: dim must be a 2-tuple of different dims. Got {dim}")
    if ord == "fro":
        return VectorNorm.call(A, 2, dims, keepdim, dtype=dtype)
    if ord in ("nuc", 2, -2):
        raise NotImplementedError(
            f"linalg.matrix_norm: tinygraph has no ord={ord!r} (it needs singular values); use 'fro', 1, -1, inf or -inf."
        )
    if ord not in (1, -1, math.inf, -math.inf):
        raise RuntimeError(f"linalg.matrix_norm: Order {ord} not supported.")
    rows, cols = (d % A.ndim for d in dims)
    if math.isinf(ord):  # the inf norm is the 1 norm of the transpose
        rows, cols = cols, rows
    if not keepdim and rows < cols:
        cols -= 1  # the first reduction removed a dim before it
    return Amax.apply(VectorNorm.call(A, 1, rows, keepdim, dtype=dtype), cols, keepdim, ord > 0)


@public("linalg.norm")
def linalg_norm(A, ord=None, dim=None, keepdim=False, *, dtype=None):
    """A vector norm, or a matrix norm when `dim` names two dims (or A is 2-D with ord given)."""
    dims = None if dim is None else [dim] if isinstance(dim, int) else list(dim)
    if dims is not None and len(dims) not in (1, 2):
        raise RuntimeError(f"linalg.norm: If dim is specified, it must be of length 1 or 2. Got {dim}")
    if dims is None and ord is not None and A.ndim not in (1, 2):
        raise RuntimeError(
            f"linalg.norm: If dim is not specified but ord is, the input must be 1D or 2D. Got {A.ndim}D."
        )
    if ord is not None and ((dims is not None and len(dims) == 2) or (dims is None and A.ndim == 2)):
        return matrix_norm(A, ord, dims or (0, 1), keepdim, dtype=dtype)
    if isinstance(ord, str):
        raise RuntimeError(f"linalg.norm: ord={ord!r} is a matrix norm; give two dims (or a 2-D input).")
    return VectorNorm.call(A, 2 if ord is None else ord, dims, keepdim, dtype=dtype)


@public("Tensor.norm tinygraph.norm")
def norm(input, p="fro", dim=None, keepdim=False, dtype=None):
    """torch.norm: the p-norm of the entries over `dim` (all by default); 'fro' is the 2-norm."""
    dims = [dim] if isinstance(dim, int) else dim
    if p == "fro" and (dims is None or len(dims) <= 2):
        return VectorNorm.call(input, 2, dims, keepdim, dtype=dtype)
    if isinstance(p, str):
        return matrix_norm(input, p, dims if dims is not None else range(input.ndim), keepdim, dtype=dtype)
    return VectorNorm.call(input, 2 if p is None else p, dims, keepdim, dtype=dtype)
