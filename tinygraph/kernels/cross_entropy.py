"""Cross-entropy of (N, C) logits against N class indices, forward and backward as Triton
kernels that never hold a softmax in memory.

Per row x with target t (rows whose target is `ignore_index` count for nothing):

    forward                                   backward
    lse  = log sum_c exp(x_c)                 gx_c = (exp(x_c - lse) - [c == t]) * s
    loss = lse - x_t                          s = g (none, per row), g (sum), g / count (mean),
    sum, or mean over the count of the            0 for an ignored row
    rows not ignored

The forward reads each row once, in chunks of C, keeping a running max m and a running sum
of exp(x - m) (rescaled by exp(m_old - m_new) when the max grows), and keeps only lse
(float32, one per row). The backward reads each row once more and writes its grad:
softmax - onehot is formed chunk by chunk in registers, never stored. A target outside
[0, C) that is not ignored gives a NaN loss (torch raises instead; a kernel cannot, and a
NaN is what the trainer's guard catches) rather than a read out of bounds.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import on_interpreter

REDUCTIONS = ("mean", "sum", "none")
GPU_CHUNK = 4096  # classes per step of a row's loop on a GPU


@triton.jit
def _forward_kernel(LOGITS, row_stride, TARGET, LOSS, LSE, C, ignore_index, BLOCK_C: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    logits = LOGITS + row * row_stride
    m = tl.full((), float("-inf"), tl.float32)
    s = tl.full((), 0.0, tl.float32)
    for start in range(0, C, BLOCK_C):
        cols = start + tl.arange(0, BLOCK_C)
        x = tl.load(logits + cols, mask=cols < C, other=float("-inf")).to(tl.float32)
        m_new = tl.maximum(m, tl.max(x, 0))
        s = s * tl.exp(m - m_new) + tl.sum(tl.exp(x - m_new), 0)
        m = m_new
    lse = m + tl.log(s)
    target = tl.load(TARGET + row)
    kept = target != ignore_index
    inside = (target >= 0) & (target < C)
    x_target = tl.load(logits + target, mask=kept & inside, other=0.0).to(tl.float32)
    loss = tl.where(inside, lse - x_target, float("nan"))
    tl.store(LOSS + row, tl.where(kept, loss, 0.0))
    tl.store(LSE + row, lse)


@triton.jit
def _backward_kernel(LOGITS, row_stride, TARGET, LSE, SCALE, scale_stride, GRAD, C, ignore_index,
                     BLOCK_C: tl.constexpr):  # fmt: skip
    row = tl.program_id(0).to(tl.int64)
    logits = LOGITS + row * row_stride
    grad = GRAD + row * C
    target = tl.load(TARGET + row)
    lse = tl.load(LSE + row)
    scale = tl.where(target != ignore_index, tl.load(SCALE + row * scale_stride).to(tl.float32), 0.0)
    for start in range(0, C, BLOCK_C):
        cols = start + tl.arange(0, BLOCK_C)
        x = tl.load(logits + cols, mask=cols < C, other=0.0).to(tl.float32)
        p = tl.exp(x - lse)
        gx = tl.where(cols == target, p - 1, p) * scale
        tl.store(grad + cols, gx.to(GRAD.dtype.element_ty), mask=cols < C)


def _rows(logits, target):
    if logits.ndim != 2 or target.shape != logits.shape[:1]:
        raise ValueError(
            f"cross_entropy kernel: logits must be (N, C) and target (N,), not {tuple(logits.shape)} "
            f"and {tuple(target.shape)}; flatten the leading dims first."
        )
    logits = logits if logits.stride(1) == 1 else logits.contiguous()
    N, C = logits.shape
    chunk = 16 if on_interpreter(logits) else min(GPU_CHUNK, triton.next_power_of_2(C))
    return logits, target.contiguous(), N, C, chunk, min(max(chunk // 256, 1), 8)


def cross_entropy_forward(
    logits: torch.Tensor, target: torch.Tensor, ignore_index: int = -100, reduction: str = "mean"
) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss, lse): F.cross_entropy(logits, target, ignore_index=, reduction=)'s loss, in the
    logits' dtype, and each row's logsumexp (float32), which `cross_entropy_backward` needs."""
    if reduction not in REDUCTIONS:
        raise ValueError(f"cross_entropy kernel: reduction must be one of {REDUCTIONS}, not {reduction!r}.")
    logits, target, N, C, chunk, warps = _rows(logits, target)
    losses = torch.empty(N, dtype=torch.float32, device=logits.device)
    lse = torch.empty_like(losses)
    _forward_kernel[(N,)](
        logits, logits.stride(0), target, losses, lse, C, ignore_index, BLOCK_C=chunk, num_warps=warps
    )
    if reduction == "none":
        return losses.to(logits.dtype), lse
    total = losses.sum()
    if reduction == "mean":
        total = total / (target != ignore_index).sum()
    return total.to(logits.dtype), lse


def cross_entropy_backward(
    grad: torch.Tensor,
    logits: torch.Tensor,
    target: torch.Tensor,
    lse: torch.Tensor,
    ignore_index: int = -100,
    reduction: str = "mean",
) -> torch.Tensor:
    """The grad of the logits, in their dtype, from the loss's grad (a scalar, or one per row
    for reduction 'none') and the forward's lse."""
    logits, target, N, C, chunk, warps = _rows(logits, target)
    scale = grad.to(torch.float32)
    if reduction == "mean":
        scale = scale / (target != ignore_index).sum()  # a tensor: no sync with the GPU
    scale = scale.expand(N)
    out = torch.empty(N, C, dtype=logits.dtype, device=logits.device)
    _backward_kernel[(N,)](
        logits, logits.stride(0), target, lse, scale, scale.stride(0), out, C, ignore_index, BLOCK_C=chunk,
        num_warps=warps,
    )  # fmt: skip
    return out
