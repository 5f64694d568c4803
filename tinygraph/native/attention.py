"""Attention's forward and backward, each as one C loop per head (attention.c); the formulas
are tinygraph.ops.nn.attention_forward and attention_backward."""

from __future__ import annotations

import ctypes
import functools

from ..tensor import empty_in_order, joinable_empty, memory_order, stacked_view
from . import covers, function, library, pointer, threads


def attention_forward(q, k, v, attn_mask, is_causal, scale):
    """(out, lse) of softmax(q k^T scale) v, as the formula's arguments: lse is each query
    row's logsumexp of its scaled scores, which spares backward the softmax's sums. It covers
    no mask (or the causal one); the output is laid out as torch's CPU attention lays it out,
    (B, L, H, Ev) in memory, so that joining the heads again is a view."""
    if attn_mask is not None or not _fits(q, k, v):
        return NotImplemented
    kernel = function(
        "attention_forward_f32", *[ctypes.c_void_p] * 6, *[ctypes.c_int64] * 6, ctypes.c_float, ctypes.c_int,
        ctypes.c_int, restype=ctypes.c_int,
    )  # fmt: skip
    if kernel is None:
        return NotImplemented
    Ev = v.shape[-1]
    if q.ndim == 4:
        out = q.new_empty(q.shape[0], q.shape[2], q.shape[1], Ev).transpose(1, 2)
    else:
        out = q.new_empty(*q.shape[:-1], Ev)
    lse = q.new_empty(q.shape[:-1])
    status = _call(kernel, (q, k, v, out), lse, scale, is_causal)
    return NotImplemented if status else (out, lse)  # (an inf or a nan among the inputs: torch's attention)


def attention_backward(g, q, k, v, out, lse, attn_mask, keep, is_causal, scale, dropout_p, needs_mask_grad):
    """(gq, gk, gv, g_mask) of softmax(q k^T scale) v, as the formula's arguments; it covers
    no mask (or the causal one) and no dropout. With the forward's `lse` (None: not at hand)
    the weights take one pass, not three."""
    if attn_mask is not None or keep is not None or not _fits(q, k, v, g, out):
        return NotImplemented
    kernel = function(
        "attention_backward_f32", *[ctypes.c_void_p] * 10, *[ctypes.c_int64] * 6, ctypes.c_float, ctypes.c_int,
        ctypes.c_int, restype=ctypes.c_int,
    )  # fmt: skip
    if kernel is None:
        return NotImplemented
    joint = stacked_view((q, k, v), 0)
    if joint is not None:  # q, k and v: slices of one projection; their grads are slices of one
        # buffer laid out as it, which unbind's backward joins for free
        grads = tuple(joinable_empty(joint.shape, memory_order(joint), q).unbind(0))
    else:
        grads = tuple(empty_in_order(t.shape, memory_order(t), t) for t in (q, k, v))  # as the heads lie
    lse = lse.contiguous() if lse is not None and covers(lse) and lse.shape == q.shape[:-1] else None
    status = _call(kernel, (q, k, v, out, g, *grads), lse, scale, is_causal)
    # an inf or a nan among the inputs: the formula's grads, whose nans fall where torch's do
    return NotImplemented if status else (*grads, None)


def _call(kernel, tensors, lse, scale, is_causal):
    """Run a kernel on q, k, v, the output and the rest of attention.c's `enum tensor` (each
    read as (B, H, rows, features): its strides passed along, 3 each) and the logsumexps; 0,
    or 1 where an input was not finite."""
    tensors = [t if t.stride(-1) == 1 else t.contiguous() for t in tensors]
    missing = (0,) * (4 - tensors[0].ndim)  # (a dim of one: any stride)
    strides = [s for t in tensors for s in (missing + t.stride())[:3]]
    B, H, L, E = (1,) * len(missing) + tuple(tensors[0].shape)
    S, Ev = tensors[1].shape[-2], tensors[2].shape[-1]
    team = min(threads(B * H * L * S), B * H)  # a thread per head at most: each holds an L x S block or two
    args = (*map(pointer, tensors), pointer(lse), (ctypes.c_int64 * len(strides))(*strides))
    status = kernel(*args, B, H, L, S, E, Ev, scale, is_causal, team)
    if status < 0:
        raise MemoryError(
            f"attention's kernel could not allocate its per-thread buffers ({L} x {S} weights); free some "
            "memory, or set TINYGRAPH_NATIVE=0 to run its torch formula instead."
        )
    return status


def _fits(q, k, v, *others):
    """CPU float32 heads of 2 to 4 dims, one leading shape, widths in whole blocks of the kernel's."""
    if not covers(q, k, v, *others) or not (2 <= q.ndim == k.ndim == v.ndim <= 4):
        return False
    E, (S, Ev) = q.shape[-1], v.shape[-2:]
    if any(t.shape[:-2] != q.shape[:-2] for t in (k, v)) or k.shape[-2:] != (S, E):
        return False
    if any(t.shape != (*q.shape[:-1], Ev) for t in others):  # the output and its grad
        return False
    lib = library()  # (none: the formula runs)
    block = lib is not None and _block(lib)
    return bool(block) and not (E % block or Ev % block or 0 in q.shape or 0 in k.shape)


@functools.cache
def _block(lib: ctypes.CDLL) -> int:
    """The kernel's block width (attention.c's W): the head widths it covers are its multiples."""
    return ctypes.c_int.in_dll(lib, "attention_block").value
