"""The linear layer's three matrix products as one C loop nest (matmul.c); the formulas are
tinygraph.ops.nn.linear_product (the forward, and the grad of x) and linear_weight_grad.

Why not torch's product: torch's `mm` on the CPU is MKL's sgemm, which on AMD processors
keeps to generic or AVX2 code; at a language model's shapes this loop is 10-30% faster on
the AVX-512 machine tinygraph is benchmarked on, than MKL and than oneDNN (docs/performance.md).
It runs only where it was measured to pay: on AVX-512 machines, for products of at least
`settings.matmul_products` multiply-adds (below that a call costs more than it saves).
"""

from __future__ import annotations

import ctypes

import torch

from . import covers, function, pointer, settings


def linear(x, weight, bias=None):
    """x @ weight.mT + bias; NotImplemented where the formula should run."""
    if not (
        weight.ndim == 2
        and x.ndim >= 1
        and x.numel() * weight.shape[0] >= settings.matmul_products  # (first of the costlier checks)
        and covers(x, weight, bias)
        and x.shape[-1] == weight.shape[1]  # (a mismatch: the formula says so in torch's words)
        and (bias is None or bias.shape == weight.shape[:1])  # (others broadcast: the formula's)
        and _tuned()
    ):
        return NotImplemented
    out = _product(_rows(x), weight.mT, bias)
    return out if x.ndim == 2 else out.reshape(*x.shape[:-1], weight.shape[0])


def weight_grad(g, x):
    """g.mT @ x over every row of g and x (the leading dims flattened); NotImplemented where the formula should run."""
    if not (
        g.ndim >= 1
        and x.ndim >= 1
        and g.numel() * x.shape[-1] >= settings.matmul_products
        and covers(g, x)
        and g.shape[:-1] == x.shape[:-1]
        and _tuned()
    ):
        return NotImplemented
    return _product(_rows(g).mT, _rows(x))


def _rows(t):
    """t as a matrix of its last dim's rows (t is not empty: it is above the threshold)."""
    return t if t.ndim == 2 else t.reshape(-1, t.shape[-1])


def _product(a, b, bias=None):
    """a @ b + bias for 2-d torch.Tensors a and b, through the C loop."""
    (m, k), n = a.shape, b.shape[1]
    kernel = function(
        "matmul_f32", ctypes.c_void_p, *[ctypes.c_int64] * 2, ctypes.c_void_p, *[ctypes.c_int64] * 2,
        ctypes.c_void_p, ctypes.c_int64, ctypes.c_void_p, *[ctypes.c_int64] * 3, ctypes.c_int, restype=ctypes.c_int,
    )  # fmt: skip
    out = a.new_empty(m, n)
    sbias = 0 if bias is None else bias.stride(0)
    args = (pointer(a), *a.stride(), pointer(b), *b.stride(), pointer(bias), sbias, pointer(out), m, n, k)
    if kernel(*args, torch.get_num_threads()):
        raise MemoryError(
            f"the linear layer's product could not allocate {k * n * 4 // 2**20 + 1} MB for a copy of its right operand; "
            "free some memory, or set TINYGRAPH_NATIVE=0 to run torch's product instead."
        )
    return out


def _tuned() -> bool:
    """Whether the library was built for a machine where the loop's block sizes were measured (AVX-512)."""
    tuned = function("matmul_tuned", restype=ctypes.c_int)
    return tuned is not None and bool(tuned())
