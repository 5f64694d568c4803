"""Attention's forward and backward, each as one C loop per head (attention.c); the formulas
are tinygraph.ops.nn.attention_forward, attention_backward and attention_backward_packed.

Like the linear layer's loop (matmul.py) they also run inside a torch.compile (the compiled
training step), where they enter the graph as custom ops (`native.operator`),
`tinygraph::attention_forward` and `tinygraph::attention_backward` (or `_packed`, for
heads packed as a QKV projection makes them), which the compiled code calls like any of torch's. A
tracer can see the tensors' dtype, device and shapes, not the library: where a kernel then
does not cover a call after all (no library, a head width not in whole blocks, an input not
finite), its op runs torch's attention or the formula itself.
"""

from __future__ import annotations

import ctypes
import functools
import math

import torch

from ..tensor import empty_in_order, joinable_empty, memory_order, packed_heads, stacked_view
from . import covers, function, library, operator, pointer, settings, threads

# the kernels' arguments: the tensors' data, the logsumexps and the strides; B, H, L, S, E, Ev; scale, causal, threads
_SIZES = (*[ctypes.c_int64] * 6, ctypes.c_float, ctypes.c_int, ctypes.c_int)
_FORWARD = (*[ctypes.c_void_p] * 6, *_SIZES)  # q, k, v, out, lse, strides
_BACKWARD = (*[ctypes.c_void_p] * 10, *_SIZES)  # q, k, v, out, g, gq, gk, gv, lse, strides


def attention_forward(q, k, v, attn_mask, is_causal, scale):
    """(out, lse) of softmax(q k^T scale) v, as the formula's arguments: lse is each query
    row's logsumexp of its scaled scores, which spares backward the softmax's sums. It covers
    no mask (or the causal one); the output is laid out as torch's CPU attention lays it out,
    (B, L, H, Ev) in memory, so that joining the heads again is a view."""
    if attn_mask is not None or not _fits(q, k, v):
        return NotImplemented
    if torch.compiler.is_compiling():
        return traced_forward(q, k, v, is_causal, scale)
    kernel = function("attention_forward_f32", *_FORWARD, restype=ctypes.c_int)
    if kernel is None:
        return NotImplemented
    out, lse = _laid_out(q, v), q.new_empty(q.shape[:-1])
    status = _call(kernel, (q, k, v, out), lse, scale, is_causal)
    return NotImplemented if status else (out, lse)  # (an inf or a nan among the inputs: torch's attention)


def attention_backward(g, q, k, v, out, lse, attn_mask, keep, is_causal, scale, dropout_p, needs_mask_grad):
    """(gq, gk, gv, g_mask) of softmax(q k^T scale) v, as the formula's arguments; it covers
    no mask (or the causal one) and no dropout. With the forward's `lse` (None: not at hand)
    the weights take one pass, not three."""
    if attn_mask is not None or keep is not None or not _fits(q, k, v, g, out):
        return NotImplemented
    if torch.compiler.is_compiling():
        return (*traced_backward(g, q, k, v, out, lse, is_causal, scale), None)
    joint = stacked_view((q, k, v), 0)
    if joint is not None:  # q, k and v: slices of one projection; their grads are slices of one
        # buffer laid out as it, which unbind's backward joins for free
        grads = tuple(joinable_empty(joint.shape, memory_order(joint), q).unbind(0))
    else:
        grads = tuple(empty_in_order(t.shape, memory_order(t), t) for t in (q, k, v))  # as the heads lie
    # an inf or a nan among the inputs: the formula's grads (nans in more places than torch's,
    # whose kernel skips the masked blocks)
    return (*grads, None) if _backward(grads, g, q, k, v, out, lse, is_causal, scale) else NotImplemented


def attention_backward_packed(g, q, k, v, out, lse, is_causal, scale):
    """The grad of qkv (..., L, 3, H, E), whose views are the heads q, k and v (..., H, L, E),
    as the formula's arguments: the kernel writes q's, k's and v's grads as its slices."""
    if not _fits(q, k, v, g, out) or q.ndim < 3:
        return NotImplemented
    if torch.compiler.is_compiling():
        return traced_backward_packed(g, q, k, v, out, lse, is_causal, scale)
    packed = _packed_grad(q)
    return packed if _backward(packed_heads(packed), g, q, k, v, out, lse, is_causal, scale) else NotImplemented


def _backward(grads, g, q, k, v, out, lse, is_causal, scale):
    """Whether the C backward wrote q's, k's and v's grads into `grads` (not: no library, or an
    input not finite)."""
    kernel = function("attention_backward_f32", *_BACKWARD, restype=ctypes.c_int)
    if kernel is None:
        return False
    lse = lse.contiguous() if lse is not None and covers(lse) and lse.shape == q.shape[:-1] else None
    return not _call(kernel, (q, k, v, out, g, *grads), lse, scale, is_causal)


def _packed_grad(q):
    """An empty grad for qkv (..., L, 3, H, E), given its heads' q (..., H, L, E)."""
    *lead, H, L, E = q.shape
    return q.new_empty(*lead, L, 3, H, E)


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
    """CPU float32 heads of 2 to 4 dims, one leading shape, widths in whole blocks of the kernel's
    (inside a torch.compile: what a tracer can ask; the custom ops ask the rest when they run)."""
    if torch.compiler.is_compiling():
        tensors = (q, k, v, *others)
        if not settings.enabled or any(t is not None and (t.dtype != torch.float32 or not t.is_cpu) for t in tensors):
            return False
    elif not covers(q, k, v, *others):
        return False
    if not (2 <= q.ndim == k.ndim == v.ndim <= 4):
        return False
    E, (S, Ev) = q.shape[-1], v.shape[-2:]
    if any(t.shape[:-2] != q.shape[:-2] for t in (k, v)) or k.shape[-2:] != (S, E):
        return False
    if any(t.shape != (*q.shape[:-1], Ev) for t in others):  # the output and its grad
        return False
    if torch.compiler.is_compiling():  # (the library is the op's to load, when it runs: a tracer cannot follow that)
        return True
    lib = library()  # (none: the formula runs)
    block = lib is not None and _block(lib)
    return bool(block) and not (E % block or Ev % block or 0 in q.shape or 0 in k.shape)


@functools.cache
def _block(lib: ctypes.CDLL) -> int:
    """The kernel's block width (attention.c's W): the head widths it covers are its multiples."""
    return ctypes.c_int.in_dll(lib, "attention_block").value


def _fake_forward(q, k, v, is_causal, scale):
    return _laid_out(q, v), q.new_empty(q.shape[:-1])


@operator(
    "attention_forward(Tensor q, Tensor k, Tensor v, bool is_causal, float scale) -> (Tensor, Tensor)", _fake_forward
)
def traced_forward(q, k, v, is_causal, scale):
    """The C forward as one opaque op that compiled code calls; where it declines after all (an
    input not finite), torch's attention and the logsumexps found from the scores."""
    result = attention_forward(q, k, v, None, is_causal, scale)
    if result is not NotImplemented:
        return result
    scores = (q @ k.mT) * scale
    if is_causal:
        scores = scores.masked_fill(torch.ones(scores.shape[-2:], dtype=torch.bool).triu(1), -math.inf)
    out = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=is_causal, scale=scale)
    return _laid_out(q, v).copy_(out), scores.logsumexp(-1)


_BACKWARD_ARGS = "Tensor g, Tensor q, Tensor k, Tensor v, Tensor out, Tensor? lse, bool is_causal, float scale"


def _fake_backward(g, q, k, v, out, lse, is_causal, scale):
    return _own_grads(q, k, v)


def _own_grads(q, k, v):
    """Empty grads for q, k and v, contiguous whatever their strides (an operator's outputs
    share no memory)."""
    return tuple(t.new_empty(t.shape) for t in (q, k, v))


@operator(f"attention_backward({_BACKWARD_ARGS}) -> (Tensor, Tensor, Tensor)", _fake_backward)
def traced_backward(g, q, k, v, out, lse, is_causal, scale):
    """The C backward as one opaque op that compiled code calls (its grads in buffers of their
    own: an operator's outputs share no memory); where it declines after all (an input not
    finite), the formula's grads."""
    grads = _own_grads(q, k, v)
    if _fits(q, k, v, g, out) and _backward(grads, g, q, k, v, out, lse, is_causal, scale):
        return grads
    from ..ops.nn import attention_backward as formula  # (the ops import this module)

    return tuple(
        t.clone() for t in formula.formula(g, q, k, v, out, None, None, None, is_causal, scale, 0.0, False)[:3]
    )


def _fake_backward_packed(g, q, k, v, out, lse, is_causal, scale):
    return _packed_grad(q)


@operator(f"attention_backward_packed({_BACKWARD_ARGS}) -> Tensor", _fake_backward_packed)
def traced_backward_packed(g, q, k, v, out, lse, is_causal, scale):
    """`traced_backward` returning the one grad of the heads' qkv (..., L, 3, H, E), as the C
    backward writes it: compiled code then stacks no three grads (a copy) to make it."""
    packed = _packed_grad(q)
    if _fits(q, k, v, g, out) and _backward(packed_heads(packed), g, q, k, v, out, lse, is_causal, scale):
        return packed
    from ..ops.nn import attention_backward_packed as formula

    return formula.formula(g, q, k, v, out, None, is_causal, scale)


def _laid_out(q, v):
    """The output's buffer: (B, L, H, Ev) in memory for heads of 4 dims, as torch lays it out."""
    Ev = v.shape[-1]
    if q.ndim == 4:
        return q.new_empty(q.shape[0], q.shape[2], q.shape[1], Ev).transpose(1, 2)
    return q.new_empty(*q.shape[:-1], Ev)
