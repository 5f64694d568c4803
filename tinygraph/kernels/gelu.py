"""GELU, exact or tanh, forward and backward as Triton kernels, with an optional fused bias:
the MLP's gelu(x @ W.T + b) adds b inside the kernel instead of in a pass of its own.

With h = x + b (h = x without a bias), Phi the standard normal CDF and phi its density:

    forward                                   backward
    exact: y = h * Phi(h)                     gh = g * (Phi(h) + h * phi(h))
           Phi(h) = (1 + erf(h / sqrt 2)) / 2        phi(h) = exp(-h^2 / 2) / sqrt(2 pi)
    tanh:  y = h * (1 + t) / 2                gh = g * ((1 + t) / 2 + h * (1 - t^2) * u' / 2)
           t = tanh(u), u = sqrt(2/pi) * (h + 0.044715 h^3),  u' = sqrt(2/pi) * (1 + 3 * 0.044715 h^2)
                                              gx = gh,  gb = sum over rows of gh

Nothing is saved but the op's inputs: the backward recomputes h = x + b in registers (no
pass, no memory), reads g once and writes gh once; with a bias, each program adds its
rows of gh into a float32 partial row, and the few partial rows are summed at the end.
Rows are x's last dim (the bias's size); everything is computed in float32.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..ops.elementwise import INV_SQRT_2PI, SQRT1_2, SQRT_2_PI
from . import on_interpreter, programs

# these stand right of a tensor in the formulas: the interpreter fails on constexpr * tensor
_SQRT1_2 = tl.constexpr(SQRT1_2)
_SQRT_2_PI = tl.constexpr(SQRT_2_PI)
_INV_SQRT_2PI = tl.constexpr(INV_SQRT_2PI)
GPU_BLOCK = (8, 256)  # rows, features per program on a GPU: 16 elements per thread of 4 warps


@triton.jit
def _tanh(z):
    e = tl.exp(-2 * tl.abs(z))  # triton has no tanh; exp(-2|z|) never overflows
    t = (1 - e) / (1 + e)
    return tl.where(z < 0, -t, t)


@triton.jit
def _gelu(h, TANH: tl.constexpr):
    if TANH:
        return 0.5 * h * (1 + _tanh((h + 0.044715 * h * h * h) * _SQRT_2_PI))
    return 0.5 * h * (1 + tl.erf(h * _SQRT1_2))


@triton.jit
def _gelu_slope(h, TANH: tl.constexpr):
    if TANH:
        t = _tanh((h + 0.044715 * h * h * h) * _SQRT_2_PI)
        return 0.5 * (1 + t) + 0.5 * h * (1 - t * t) * (1 + 3 * 0.044715 * h * h) * _SQRT_2_PI
    return 0.5 * (1 + tl.erf(h * _SQRT1_2)) + h * tl.exp(-0.5 * h * h) * _INV_SQRT_2PI


@triton.jit
def _kernel(X, B, G, OUT, GB_PARTIAL, M, N, HAS_BIAS: tl.constexpr, BACKWARD: tl.constexpr, TANH: tl.constexpr,
            BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):  # fmt: skip
    """OUT = gelu(X + B) forward, or gelu'(X + B) * G backward (plus a partial sum of it per
    column for the bias grad), over a (row programs, column blocks) grid."""
    program = tl.program_id(0)
    cols = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    if HAS_BIAS:
        b = tl.load(B + cols, mask=cols < N, other=0.0).to(tl.float32)
    gb = tl.zeros((BLOCK_N,), tl.float32)
    for start in range(program * BLOCK_M, M, tl.num_programs(0) * BLOCK_M):
        rows = start + tl.arange(0, BLOCK_M)
        inside = (rows < M)[:, None] & (cols < N)[None, :]
        offsets = rows.to(tl.int64)[:, None] * N + cols[None, :]
        h = tl.load(X + offsets, mask=inside, other=0.0).to(tl.float32)
        if HAS_BIAS:
            h += b[None, :]
        if BACKWARD:
            out = _gelu_slope(h, TANH) * tl.load(G + offsets, mask=inside, other=0.0).to(tl.float32)
            if HAS_BIAS:
                gb += tl.sum(out, 0)  # g is 0 outside: adds nothing
        else:
            out = _gelu(h, TANH)
        tl.store(OUT + offsets, out.to(OUT.dtype.element_ty), mask=inside)
    if BACKWARD and HAS_BIAS:
        tl.store(GB_PARTIAL + program * N + cols, gb, mask=cols < N)


def _launch(x, bias, grad, approximate):
    if approximate not in ("none", "tanh"):
        raise ValueError(f"gelu kernel: approximate must be 'none' or 'tanh', not {approximate!r}.")
    rows = x.reshape(-1, x.shape[-1]).contiguous()
    M, N = rows.shape
    if bias is not None and bias.shape != (N,):
        raise ValueError(f"gelu kernel: bias must have shape ({N},), the input's last dim, not {tuple(bias.shape)}.")
    block_m, block_n = (4, 16) if on_interpreter(x) else GPU_BLOCK
    count = programs(x.device, triton.cdiv(M, block_m))
    out = torch.empty_like(rows)
    partial = (
        torch.empty(count, N, dtype=torch.float32, device=x.device) if grad is not None and bias is not None else None
    )
    _kernel[(count, triton.cdiv(N, block_n))](
        rows, bias if bias is not None else rows, grad.reshape(M, N).contiguous() if grad is not None else rows, out,
        partial if partial is not None else rows, M, N, HAS_BIAS=bias is not None, BACKWARD=grad is not None,
        TANH=approximate == "tanh", BLOCK_M=block_m, BLOCK_N=block_n, num_warps=4,
    )  # fmt: skip
    return out.view(x.shape), partial


def gelu_forward(x: torch.Tensor, approximate: str = "none", *, bias: torch.Tensor | None = None) -> torch.Tensor:
    """gelu(x + bias), as F.gelu(x + bias, approximate=approximate); bias has x's last dim."""
    return _launch(x, bias, None, approximate)[0]


def gelu_backward(
    grad: torch.Tensor, x: torch.Tensor, approximate: str = "none", *, bias: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(grad of x, grad of bias) for y = gelu(x + bias), from the same x and bias; the bias
    grad is None without a bias. The argument order is aten's gelu_backward."""
    gx, partial = _launch(x, bias, grad, approximate)
    return gx, partial.sum(0).to(bias.dtype) if bias is not None else None
