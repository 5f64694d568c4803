"""The linear layer's matrix products through oneDNN, the CPU library torch ships with (as
`mkldnn`); the formula is tinygraph.ops.nn.linear_product, whose `F.linear` runs MKL's sgemm.

Why another library for the same product: at a language model's shapes oneDNN's product
is the faster one where it generates AVX-512 code and MKL does not (MKL keeps to generic or
AVX2 kernels on AMD processors): 5-35% faster on the AMD EPYC where tinygraph is
benchmarked, more the larger the product (docs/performance.md). A call costs ~20 us more
to set up, so products of fewer than `settings.onednn_products` multiply-adds stay with
MKL. It serves the forward (x @ weight.mT + bias) and the backward's grad of x (g @ weight,
as g @ (weight.mT).mT); not the grad of the weight (g.mT @ x), whose operands both run
along the summed dimension, where oneDNN's product was slower than MKL's.
"""

from __future__ import annotations

import functools

import torch

from ..tensor import overlaps
from . import covers, settings


def linear(x, weight, bias=None):
    """x @ weight.mT + bias through oneDNN; NotImplemented where the formula should run."""
    if not (
        weight.ndim == 2
        and x.ndim >= 1
        and x.numel() * weight.shape[0] >= settings.onednn_products  # (first: most small calls stop here)
        and covers(x, weight, bias)
        and x.shape[-1] == weight.shape[1]  # (a mismatch: the formula says so in torch's words)
        and (bias is None or bias.shape == weight.shape[:1])  # (oneDNN drops a 0-d bias, refuses others)
        and not overlaps(weight.shape, weight.stride())  # (it refuses unfolded rows)
        and _available()
        and torch.backends.mkldnn.enabled  # (torch's own switch for oneDNN)
    ):
        return NotImplemented
    # (a bias with a stride of 0, an expanded one, gives oneDNN garbage: it gets its own memory)
    return torch.ops.mkldnn._linear_pointwise(x, weight, None if bias is None else bias.contiguous(), "none", [], "")


@functools.cache
def _available() -> bool:
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")
