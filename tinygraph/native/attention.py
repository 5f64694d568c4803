"""Attention's backward as one C loop per head (attention.c); the formula is
tinygraph.ops.nn.attention_backward."""

from __future__ import annotations

import ctypes

import torch

from ..tensor import empty_in_order, memory_order
from . import function, pointer, settings, threads

BLOCK = 16  # attention.c's W: the head widths covered are its multiples (a test holds the two equal)


def attention_backward(g, q, k, v, out, attn_mask, keep, is_causal, scale, dropout_p, needs_mask_grad):
    """(gq, gk, gv, g_mask) of softmax(q k^T scale) v, as the formula's arguments; it covers
    no mask (or the causal one) and no dropout. Inside a torch.compile it runs as an op of
    its own (tinygraph::attention_backward), which the compiled code calls."""
    if attn_mask is not None or keep is not None or not _fits(q, k, v, g, out):
        return NotImplemented
    if torch.compiler.is_compiling():
        return *torch.ops.tinygraph.attention_backward(g, q, k, v, out, scale, is_causal), None
    grads = _kernel(g, q, k, v, out, scale, is_causal)
    return NotImplemented if grads is None else (*grads, None)


def _kernel(g, q, k, v, out, scale, is_causal):
    """(gq, gk, gv) laid out as q, k and v; None where the library could not be built."""
    kernel = function(
        "attention_backward_f32", *[ctypes.c_void_p] * 9, *[ctypes.c_int64] * 6, ctypes.c_float, ctypes.c_int,
        ctypes.c_int, restype=ctypes.c_int,
    )  # fmt: skip
    if kernel is None:
        return None
    grads = _grads_like(q, k, v)
    views = [_as_heads(t) for t in (q, k, v, out, g, *grads)]
    strides = torch.tensor([s for t in views for s in t.stride()[:3]], dtype=torch.int64)
    B, H, L, E = views[0].shape
    S, Ev = views[1].shape[2], views[2].shape[3]
    if kernel(*map(pointer, views), pointer(strides), B, H, L, S, E, Ev, scale, is_causal, threads(B * H * L * S)):
        raise MemoryError(
            f"attention's backward could not allocate its per-thread buffers ({L} x {S} weights); free some "
            "memory, or set TINYGRAPH_NATIVE=0 to run its torch formula instead."
        )
    return grads


def _grads_like(q, k, v):
    return tuple(empty_in_order(t.shape, memory_order(t), t) for t in (q, k, v))  # as the heads lie


@torch.library.custom_op("tinygraph::attention_backward", mutates_args=(), device_types="cpu")
def _compiled(
    g: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, out: torch.Tensor, scale: float, is_causal: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The kernel as torch.compile calls it (at run time, outside the trace); where the
    library could not be built, the formula, its grads laid out as the kernel's."""
    grads = _kernel(g, q, k, v, out, scale, is_causal)
    if grads is None:
        from ..ops.nn import attention_backward as formula

        grads = _grads_like(q, k, v)
        for grad, value in zip(grads, formula.formula(g, q, k, v, out, None, None, is_causal, scale, 0.0, False)):
            grad.copy_(value)
    return grads


@_compiled.register_fake
def _(g, q, k, v, out, scale, is_causal):
    return _grads_like(q, k, v)


def _fits(q, k, v, *others):
    """CPU float32 heads of 2 to 4 dims, one leading shape, widths in whole blocks of the kernel's."""
    tensors = (q, k, v, *others)  # (a lazily negated one is resolved in _as_heads: torch.compile cannot ask)
    if not settings.enabled or any(t.dtype != torch.float32 or t.device.type != "cpu" or t.layout != torch.strided
                                   for t in tensors):  # fmt: skip
        return False
    if not 2 <= q.ndim == k.ndim == v.ndim <= 4:
        return False
    E, (S, Ev) = q.shape[-1], v.shape[-2:]
    if any(t.shape[:-2] != q.shape[:-2] for t in (k, v)) or k.shape[-2:] != (S, E):
        return False
    if any(t.shape != (*q.shape[:-1], Ev) for t in others):  # the output and its grad
        return False
    return not (E % BLOCK or Ev % BLOCK or 0 in q.shape or 0 in k.shape)


def _as_heads(t: torch.Tensor) -> torch.Tensor:
    """t (of 2 to 4 dims) as (B, H, rows, features) with features contiguous: a view where one exists."""
    t = t.resolve_neg()
    if t.stride(-1) != 1:
        t = t.contiguous()
    return t[(None,) * (4 - t.ndim)]
