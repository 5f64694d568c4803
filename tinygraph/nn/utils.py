"""Helpers that act on parameters' grads (not part of any graph)."""

from __future__ import annotations

from collections.abc import Iterable

import torch

from ..tensor import Tensor


def clip_grad_norm_(parameters: Iterable[Tensor], max_norm: float, norm_type: float = 2.0) -> Tensor:
    """Scale all grads together so that their joint norm is at most `max_norm`.

    Returns the norm before clipping (inf or nan included, so a caller can react to it).
    """
    grads = [p.grad.data for p in parameters if p.grad is not None]
    if not grads:
        return Tensor(torch.tensor(0.0))
    norms = torch._foreach_norm(grads, norm_type)
    total = torch.linalg.vector_norm(torch.stack([n.to(grads[0].device) for n in norms]), norm_type)
    if max_norm != float("inf"):  # an infinite max_norm only measures
        scale = (max_norm / (total + 1e-6)).clamp(max=1.0)
        torch._foreach_mul_(grads, scale.to(grads[0].device))
    return Tensor(total)
