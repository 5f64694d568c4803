"""Cross-entropy's forward and backward, each as one C loop over the rows (cross_entropy.c),
with the interface of the Triton kernels (tinygraph/kernels/cross_entropy.py); the formula is
tinygraph.ops.nn.CrossEntropy's own, which runs wherever these return NotImplemented."""

from __future__ import annotations

import ctypes

import torch

from . import covers, function, pointer, threads

_FORWARD = (ctypes.c_void_p, ctypes.c_int64, ctypes.c_void_p, *[ctypes.c_int64] * 3, ctypes.c_void_p,
            ctypes.c_void_p, ctypes.c_int)  # fmt: skip
_BACKWARD = (ctypes.c_void_p, ctypes.c_int64, *[ctypes.c_void_p] * 3, *[ctypes.c_int64] * 4, ctypes.c_void_p,
             ctypes.c_int)  # fmt: skip


def cross_entropy_forward(logits, target, ignore_index, reduction):
    """(loss, lse) of (N, C) float32 logits against N class indices, as the Triton kernel's;
    NotImplemented where the formula should run (another device or dtype, a logit not finite,
    a target out of range)."""
    if not _fits(logits, target) or reduction not in ("mean", "sum", "none"):
        return NotImplemented
    kernel = function("cross_entropy_forward_f32", *_FORWARD, restype=ctypes.c_int)
    if kernel is None:
        return NotImplemented
    (N, C), target = logits.shape, target.contiguous()
    losses, lse = logits.new_empty(N), logits.new_empty(N)
    args = (pointer(logits), logits.stride(0), pointer(target), N, C, ignore_index, pointer(losses), pointer(lse))
    if kernel(*args, threads(N * C)):
        return NotImplemented
    if reduction == "none":
        return losses, lse
    total = losses.sum()
    return (total / (target != ignore_index).sum() if reduction == "mean" else total), lse


def cross_entropy_backward(grad, logits, target, lse, ignore_index, reduction):
    """The grad of the logits from the loss's grad (a scalar, or one per row for 'none') and
    the forward's lse, as the Triton kernel's."""
    if not _fits(logits, target) or not covers(grad, lse):
        return NotImplemented
    kernel = function("cross_entropy_backward_f32", *_BACKWARD)
    if kernel is None:
        return NotImplemented
    (N, C), target = logits.shape, target.contiguous()
    scale = grad.reshape(-1).contiguous()
    if reduction == "mean":
        scale = scale / (target != ignore_index).sum()
    out = logits.new_empty(N, C)
    args = (pointer(logits), logits.stride(0), pointer(target), pointer(lse), pointer(scale), int(scale.numel() > 1))
    kernel(*args, N, C, ignore_index, pointer(out), threads(N * C))
    return out


def _fits(logits, target):
    return (
        covers(logits)
        and logits.ndim == 2
        and logits.stride(1) == 1
        and isinstance(target, torch.Tensor)
        and target.dtype == torch.int64
        and target.shape == logits.shape[:1]
        and target.device.type == "cpu"
    )
