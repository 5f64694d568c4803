"""Layer norm over the last dim, forward and backward, as Triton kernels.

With N features per row, xhat = (x - mean) * rstd, and g the incoming grad:

    forward                                   backward
    mean = sum(x) / N                         gxhat = g * w            (g where no weight)
    var  = sum((x - mean)^2) / N              gx = (gxhat - mean(gxhat) - xhat * mean(gxhat * xhat)) * rstd
    rstd = 1 / sqrt(var + eps)                gw = sum over rows of g * xhat
    y    = xhat * w + b                       gb = sum over rows of g

The forward reads each row once (a block of whole rows per program, in registers), writes
y and keeps mean and rstd (float32, one each per row): the backward recomputes xhat from
x, mean and rstd rather than keep it. The backward reads x and g once, writes gx, and adds
its rows' g * xhat and g into one float32 partial row per program; the few partial rows
are summed at the end. Everything is computed in float32 whatever the input dtype. A
normalized_shape of several dims is one dim here: flatten x's trailing dims, and w and b.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import on_interpreter, programs

MAX_FEATURES = 16384  # a whole row sits in one program's registers
GPU_TILE = 4096  # elements per program on a GPU: several short rows, or one long one


@triton.jit
def _forward_kernel(X, W, B, Y, MEAN, RSTD, M, N, eps, HAS_WEIGHT: tl.constexpr, HAS_BIAS: tl.constexpr,
                    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):  # fmt: skip
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.arange(0, BLOCK_N)
    inside = (rows < M)[:, None] & (cols < N)[None, :]
    offsets = rows.to(tl.int64)[:, None] * N + cols[None, :]
    x = tl.load(X + offsets, mask=inside, other=0.0).to(tl.float32)
    mean = tl.sum(x, 1) / N
    centered = tl.where(inside, x - mean[:, None], 0.0)
    rstd = tl.rsqrt(tl.sum(centered * centered, 1) / N + eps)
    y = centered * rstd[:, None]
    if HAS_WEIGHT:
        y *= tl.load(W + cols, mask=cols < N, other=0.0).to(tl.float32)[None, :]
    if HAS_BIAS:
        y += tl.load(B + cols, mask=cols < N, other=0.0).to(tl.float32)[None, :]
    tl.store(Y + offsets, y.to(Y.dtype.element_ty), mask=inside)
    tl.store(MEAN + rows, mean, mask=rows < M)
    tl.store(RSTD + rows, rstd, mask=rows < M)


@triton.jit
def _backward_kernel(G, X, W, MEAN, RSTD, GX, GW_PARTIAL, GB_PARTIAL, M, N, HAS_WEIGHT: tl.constexpr,
                     INPUT_GRAD: tl.constexpr, WEIGHT_GRAD: tl.constexpr, BIAS_GRAD: tl.constexpr,
                     BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):  # fmt: skip
    program = tl.program_id(0)
    cols = tl.arange(0, BLOCK_N)
    if HAS_WEIGHT:
        w = tl.load(W + cols, mask=cols < N, other=0.0).to(tl.float32)
    gw = tl.zeros((BLOCK_N,), tl.float32)
    gb = tl.zeros((BLOCK_N,), tl.float32)
    # each program strides over the row blocks, adding its rows into one partial gw and gb
    for start in range(program * BLOCK_M, M, tl.num_programs(0) * BLOCK_M):
        rows = start + tl.arange(0, BLOCK_M)
        inside = (rows < M)[:, None] & (cols < N)[None, :]
        offsets = rows.to(tl.int64)[:, None] * N + cols[None, :]
        x = tl.load(X + offsets, mask=inside, other=0.0).to(tl.float32)
        g = tl.load(G + offsets, mask=inside, other=0.0).to(tl.float32)  # 0 outside: adds nothing
        mean = tl.load(MEAN + rows, mask=rows < M, other=0.0)
        rstd = tl.load(RSTD + rows, mask=rows < M, other=0.0)
        xhat = tl.where(inside, (x - mean[:, None]) * rstd[:, None], 0.0)
        if INPUT_GRAD:
            gxhat = g * w[None, :] if HAS_WEIGHT else g
            mean_g = tl.sum(gxhat, 1) / N
            mean_gx = tl.sum(gxhat * xhat, 1) / N
            gx = (gxhat - mean_g[:, None] - xhat * mean_gx[:, None]) * rstd[:, None]
            tl.store(GX + offsets, gx.to(GX.dtype.element_ty), mask=inside)
        if WEIGHT_GRAD:
            gw += tl.sum(g * xhat, 0)
        if BIAS_GRAD:
            gb += tl.sum(g, 0)
    if WEIGHT_GRAD:
        tl.store(GW_PARTIAL + program * N + cols, gw, mask=cols < N)
    if BIAS_GRAD:
        tl.store(GB_PARTIAL + program * N + cols, gb, mask=cols < N)


def _blocks(x: torch.Tensor) -> tuple[int, int, int]:
    """(rows per program, features per program, warps) for rows of x's last dim."""
    N = x.shape[-1]
    block_n = triton.next_power_of_2(N)
    if block_n > MAX_FEATURES:
        raise ValueError(f"layer_norm kernel: rows of {N} features exceed {MAX_FEATURES}; use the torch formula.")
    if on_interpreter(x):
        return 4, block_n, 1
    block_m = max(1, GPU_TILE // block_n)
    return block_m, block_n, min(max(block_m * block_n // 512, 1), 8)


def layer_norm_forward(
    x: torch.Tensor, weight: torch.Tensor | None = None, bias: torch.Tensor | None = None, eps: float = 1e-5
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(y, mean, rstd) of layer norm over x's last dim; weight and bias have that dim's size.
    mean and rstd are float32 with x's leading shape: what `layer_norm_backward` needs."""
    rows = x.reshape(-1, x.shape[-1]).contiguous()
    M, N = rows.shape
    y = torch.empty_like(rows)
    mean = torch.empty(M, dtype=torch.float32, device=x.device)
    rstd = torch.empty_like(mean)
    block_m, block_n, warps = _blocks(x)
    _forward_kernel[(triton.cdiv(M, block_m),)](
        rows, weight if weight is not None else rows, bias if bias is not None else rows, y, mean, rstd, M, N, eps,
        HAS_WEIGHT=weight is not None, HAS_BIAS=bias is not None, BLOCK_M=block_m, BLOCK_N=block_n, num_warps=warps,
    )  # fmt: skip
    return y.view(x.shape), mean.view(x.shape[:-1]), rstd.view(x.shape[:-1])


def layer_norm_backward(
    grad: torch.Tensor,
    x: torch.Tensor,
    mean: torch.Tensor,
    rstd: torch.Tensor,
    weight: torch.Tensor | None = None,
    output_mask: tuple[bool, bool, bool] = (True, True, True),
) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """(gx, gw, gb) from the forward's mean and rstd, as torch.native_layer_norm_backward:
    `output_mask` says which of the three to compute (gw needs a weight); the others are None."""
    input_grad, weight_grad, bias_grad = output_mask
    weight_grad = weight_grad and weight is not None
    rows = x.reshape(-1, x.shape[-1]).contiguous()
    M, N = rows.shape
    g = grad.reshape(M, N).contiguous()
    block_m, block_n, warps = _blocks(x)
    count = programs(x.device, triton.cdiv(M, block_m))
    gx = torch.empty_like(rows) if input_grad else None
    partial = torch.empty(2, count, N, dtype=torch.float32, device=x.device) if weight_grad or bias_grad else None
    _backward_kernel[(count,)](
        g, rows, weight if weight is not None else rows, mean, rstd, gx if input_grad else rows,
        partial[0] if partial is not None else rows, partial[1] if partial is not None else rows, M, N,
        HAS_WEIGHT=weight is not None, INPUT_GRAD=input_grad, WEIGHT_GRAD=weight_grad, BIAS_GRAD=bias_grad,
        BLOCK_M=block_m, BLOCK_N=block_n, num_warps=warps,
    )  # fmt: skip
    param_dtype = weight.dtype if weight is not None else x.dtype
    return (
        gx.view(x.shape) if input_grad else None,
        partial[0].sum(0).to(param_dtype) if weight_grad else None,
        partial[1].sum(0).to(param_dtype) if bias_grad else None,
    )
