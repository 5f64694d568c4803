"""Flash attention, forward and backward, as Triton kernels: softmax(q k^T * scale + mask) v
without an (L, S) matrix in memory, in the forward or the backward (FlashAttention-2).

For one query row q_i, keys k_j, values v_j, with masked scores at -inf (or a float mask added):

    forward                                   backward (g = grad of o_i, D_i = sum(g_i * o_i))
    s_ij = q_i . k_j * scale + mask_ij        p_ij  = exp(s_ij - lse_i)      (recomputed)
    lse_i = log sum_j exp(s_ij)               gv_j  = sum_i p_ij g_i
    p_ij = exp(s_ij - lse_i)                  gp_ij = g_i . v_j
    o_i  = sum_j p_ij v_j                     gs_ij = p_ij (gp_ij - D_i)     (softmax backward)
                                              gq_i  = scale * sum_j gs_ij k_j
                                              gk_j  = scale * sum_i gs_ij q_i

The forward walks a block of query rows over blocks of keys with the online softmax: a
running row max m and sum l, the output accumulated unnormalized and rescaled by
exp(m_old - m_new) whenever the max grows, divided by l at the end. It saves only o and
lse (float32, one per row). The backward first computes D (one pass over g and o), then
one kernel per key block accumulates gk and gv over the query blocks, and one kernel per
query block accumulates gq over the key blocks; both recompute s and p block by block from
q, k and lse. With is_causal, blocks wholly above the diagonal are skipped, not just masked.

Scores are kept in base 2 (scaled by log2 e) so that exp is one exp2; lse is saved in base e.
Matrix products run on q, k, v's own dtype (tensor cores for float16 and bfloat16) with
float32 sums; p and gs are rounded to that dtype before their products, as FlashAttention
does. A row that no key may attend gives NaN, as softmax over nothing does in the composite.
There is no dropout here: with dropout_p > 0 the op keeps its own path.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from . import dot_precision, on_interpreter

LOG2E = math.log2(math.e)
# these stand right of a tensor in the formulas: the interpreter fails on constexpr * tensor
_LOG2E = tl.constexpr(LOG2E)
_LN2 = tl.constexpr(math.log(2))
MAX_HEAD_DIM = 256
# (query rows, keys) per program on a GPU: the block a program keeps is the large one
GPU_BLOCKS = {"forward": (128, 64), "key_grads": (32, 128), "query_grads": (128, 32)}
NO_MASK, BOOL_MASK, FLOAT_MASK = 0, 1, 2


@triton.jit
def _dot(a, b, UPCAST: tl.constexpr, PRECISION: tl.constexpr):
    # the interpreter multiplies bfloat16's bit patterns in tl.dot: it gets float32 operands
    if UPCAST:
        return tl.dot(a.to(tl.float32), b.to(tl.float32), input_precision="ieee")
    return tl.dot(a, b, input_precision=PRECISION)


@triton.jit
def _scores(q, k, rows, cols, MASK, mask_strides, L, S, qk_scale, MASK_KIND: tl.constexpr, IS_CAUSAL: tl.constexpr,
            UPCAST: tl.constexpr, PRECISION: tl.constexpr):  # fmt: skip
    """The (rows, cols) block of q k^T * scale + mask, in base 2, -inf where masked."""
    s = _dot(q, tl.trans(k), UPCAST, PRECISION) * qk_scale
    allowed = (cols < S)[None, :]
    if IS_CAUSAL:
        allowed &= cols[None, :] <= rows[:, None]  # top left aligned, as torch's is_causal
    if MASK_KIND != 0:
        inside = (rows < L)[:, None] & (cols < S)[None, :]
        offsets = rows.to(tl.int64)[:, None] * mask_strides[2] + cols.to(tl.int64)[None, :] * mask_strides[3]
        mask = tl.load(MASK + offsets, mask=inside, other=MASK_KIND == 1)  # rows past L: allowed, no 0 / 0
        if MASK_KIND == 1:
            allowed &= mask != 0
        else:
            s += mask.to(tl.float32) * _LOG2E
    return tl.where(allowed, s, float("-inf"))


@triton.jit
def _probs_and_score_grads(q, k, v, g, lse, d, rows, cols, MASK, mask_strides, L, S, qk_scale, MASK_KIND: tl.constexpr,
                           IS_CAUSAL: tl.constexpr, UPCAST: tl.constexpr, PRECISION: tl.constexpr):  # fmt: skip
    """The backward's (rows, cols) block: p recomputed from lse (base 2), and gs = p (g v^T - D)."""
    s = _scores(q, k, rows, cols, MASK, mask_strides, L, S, qk_scale, MASK_KIND, IS_CAUSAL, UPCAST, PRECISION)
    p = tl.exp2(s - lse[:, None])
    return p, p * (_dot(g, tl.trans(v), UPCAST, PRECISION) - d[:, None])


@triton.jit
def _head(BASE, strides, batch, head):
    """BASE moved to one (batch, head)'s (rows, features) matrix."""
    return BASE + batch * strides[0] + head * strides[1]


@triton.jit
def _row_terms(LSE, D, z, rows, L):
    """lse (in base 2) and D of the rows of one (batch, head); 0 past L."""
    inside = rows < L
    return tl.load(LSE + z * L + rows, mask=inside, other=0.0) * _LOG2E, tl.load(
        D + z * L + rows, mask=inside, other=0.0
    )


@triton.jit
def _load_rows(BASE, rows, row_stride, n_rows, cols, n_cols):
    """A (rows, cols) block of a row-major matrix whose last dim is contiguous; 0 outside."""
    inside = (rows < n_rows)[:, None] & (cols < n_cols)[None, :]
    return tl.load(BASE + rows.to(tl.int64)[:, None] * row_stride + cols[None, :], mask=inside, other=0.0)


@triton.jit
def _store_rows(BASE, block, rows, row_stride, n_rows, cols, n_cols):
    """Store a float32 block in BASE's dtype where _load_rows would have read it."""
    inside = (rows < n_rows)[:, None] & (cols < n_cols)[None, :]
    offsets = rows.to(tl.int64)[:, None] * row_stride + cols[None, :]
    tl.store(BASE + offsets, block.to(BASE.dtype.element_ty), mask=inside)


@triton.jit
def _forward_kernel(Q, K, V, MASK, OUT, LSE, q_strides, k_strides, v_strides, mask_strides, out_strides, H, L, S,
                    qk_scale, E: tl.constexpr, EV: tl.constexpr, MASK_KIND: tl.constexpr, IS_CAUSAL: tl.constexpr,
                    UPCAST: tl.constexpr, PRECISION: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                    BLOCK_E: tl.constexpr, BLOCK_EV: tl.constexpr):  # fmt: skip
    start_m = tl.program_id(0) * BLOCK_M
    z = tl.program_id(1).to(tl.int64)  # (batch, head) in int64: offsets past 2^31 stay right
    batch, head = z // H, z % H
    K = _head(K, k_strides, batch, head)
    V = _head(V, v_strides, batch, head)
    MASK = _head(MASK, mask_strides, batch, head)
    rows = start_m + tl.arange(0, BLOCK_M)
    e, ev = tl.arange(0, BLOCK_E), tl.arange(0, BLOCK_EV)
    q = _load_rows(_head(Q, q_strides, batch, head), rows, q_strides[2], L, e, E)
    m = tl.full((BLOCK_M,), float("-inf"), tl.float32)
    l = tl.zeros((BLOCK_M,), tl.float32)
    acc = tl.zeros((BLOCK_M, BLOCK_EV), tl.float32)
    end_n = tl.minimum(S, start_m + BLOCK_M) if IS_CAUSAL else S
    for start_n in range(0, end_n, BLOCK_N):
        cols = start_n + tl.arange(0, BLOCK_N)
        k = _load_rows(K, cols, k_strides[2], S, e, E)
        v = _load_rows(V, cols, v_strides[2], S, ev, EV)
        s = _scores(q, k, rows, cols, MASK, mask_strides, L, S, qk_scale, MASK_KIND, IS_CAUSAL, UPCAST, PRECISION)
        m_new = tl.maximum(m, tl.max(s, 1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # a row masked so far: exp2(-inf) = 0, not NaN
        p = tl.exp2(s - m_safe[:, None])
        rescale = tl.exp2(m - m_safe)
        l = l * rescale + tl.sum(p, 1)
        acc = acc * rescale[:, None] + _dot(p.to(v.dtype), v, UPCAST, PRECISION)
        m = m_new
    _store_rows(_head(OUT, out_strides, batch, head), acc / l[:, None], rows, out_strides[2], L, ev, EV)
    tl.store(LSE + z * L + rows, (m + tl.log2(l)) * _LN2, mask=rows < L)  # lse back in base e


@triton.jit
def _row_dot_kernel(G, OUT, D, g_strides, out_strides, H, L, EV: tl.constexpr, BLOCK_M: tl.constexpr,
                    BLOCK_EV: tl.constexpr):  # fmt: skip
    """D = sum(g * o) over each row: the softmax backward's row term, once per row."""
    z = tl.program_id(1).to(tl.int64)
    batch, head = z // H, z % H
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    ev = tl.arange(0, BLOCK_EV)
    g = _load_rows(_head(G, g_strides, batch, head), rows, g_strides[2], L, ev, EV).to(tl.float32)
    o = _load_rows(_head(OUT, out_strides, batch, head), rows, out_strides[2], L, ev, EV)
    tl.store(D + z * L + rows, tl.sum(g * o.to(tl.float32), 1), mask=rows < L)


@triton.jit
def _key_grads_kernel(Q, K, V, MASK, G, LSE, D, GK, GV, q_strides, k_strides, v_strides, mask_strides, g_strides,
                      gk_strides, gv_strides, H, L, S, scale, qk_scale, E: tl.constexpr, EV: tl.constexpr,
                      MASK_KIND: tl.constexpr, IS_CAUSAL: tl.constexpr,
                      UPCAST: tl.constexpr, PRECISION: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                      BLOCK_E: tl.constexpr, BLOCK_EV: tl.constexpr):  # fmt: skip
    """gk and gv of one block of keys, summed over every query block that sees it."""
    start_n = tl.program_id(0) * BLOCK_N
    z = tl.program_id(1).to(tl.int64)
    batch, head = z // H, z % H
    Q = _head(Q, q_strides, batch, head)
    G = _head(G, g_strides, batch, head)
    MASK = _head(MASK, mask_strides, batch, head)
    cols = start_n + tl.arange(0, BLOCK_N)
    e, ev = tl.arange(0, BLOCK_E), tl.arange(0, BLOCK_EV)
    k = _load_rows(_head(K, k_strides, batch, head), cols, k_strides[2], S, e, E)
    v = _load_rows(_head(V, v_strides, batch, head), cols, v_strides[2], S, ev, EV)
    gk = tl.zeros((BLOCK_N, BLOCK_E), tl.float32)
    gv = tl.zeros((BLOCK_N, BLOCK_EV), tl.float32)
    begin_m = (start_n // BLOCK_M) * BLOCK_M if IS_CAUSAL else 0  # rows above the first key see none of it
    for start_m in range(begin_m, L, BLOCK_M):
        rows = start_m + tl.arange(0, BLOCK_M)
        q = _load_rows(Q, rows, q_strides[2], L, e, E)
        g = _load_rows(G, rows, g_strides[2], L, ev, EV)  # 0 on rows past L: they add nothing
        lse, d = _row_terms(LSE, D, z, rows, L)
        p, gs = _probs_and_score_grads(q, k, v, g, lse, d, rows, cols, MASK, mask_strides, L, S, qk_scale,
                                       MASK_KIND, IS_CAUSAL, UPCAST, PRECISION)  # fmt: skip
        gv += _dot(tl.trans(p.to(g.dtype)), g, UPCAST, PRECISION)
        gk += _dot(tl.trans(gs.to(q.dtype)), q, UPCAST, PRECISION)
    _store_rows(_head(GK, gk_strides, batch, head), gk * scale, cols, gk_strides[2], S, e, E)
    _store_rows(_head(GV, gv_strides, batch, head), gv, cols, gv_strides[2], S, ev, EV)


@triton.jit
def _query_grads_kernel(Q, K, V, MASK, G, LSE, D, GQ, q_strides, k_strides, v_strides, mask_strides, g_strides,
                        gq_strides, H, L, S, scale, qk_scale, E: tl.constexpr, EV: tl.constexpr,
                        MASK_KIND: tl.constexpr, IS_CAUSAL: tl.constexpr,
                        UPCAST: tl.constexpr, PRECISION: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                        BLOCK_E: tl.constexpr, BLOCK_EV: tl.constexpr):  # fmt: skip
    """gq of one block of query rows, summed over every key block it sees."""
    start_m = tl.program_id(0) * BLOCK_M
    z = tl.program_id(1).to(tl.int64)
    batch, head = z // H, z % H
    K = _head(K, k_strides, batch, head)
    V = _head(V, v_strides, batch, head)
    MASK = _head(MASK, mask_strides, batch, head)
    rows = start_m + tl.arange(0, BLOCK_M)
    e, ev = tl.arange(0, BLOCK_E), tl.arange(0, BLOCK_EV)
    q = _load_rows(_head(Q, q_strides, batch, head), rows, q_strides[2], L, e, E)
    g = _load_rows(_head(G, g_strides, batch, head), rows, g_strides[2], L, ev, EV)
    lse, d = _row_terms(LSE, D, z, rows, L)
    gq = tl.zeros((BLOCK_M, BLOCK_E), tl.float32)
    end_n = tl.minimum(S, start_m + BLOCK_M) if IS_CAUSAL else S
    for start_n in range(0, end_n, BLOCK_N):
        cols = start_n + tl.arange(0, BLOCK_N)
        k = _load_rows(K, cols, k_strides[2], S, e, E)
        v = _load_rows(V, cols, v_strides[2], S, ev, EV)
        _, gs = _probs_and_score_grads(q, k, v, g, lse, d, rows, cols, MASK, mask_strides, L, S, qk_scale,
                                       MASK_KIND, IS_CAUSAL, UPCAST, PRECISION)  # fmt: skip
        gq += _dot(gs.to(k.dtype), k, UPCAST, PRECISION)
    _store_rows(_head(GQ, gq_strides, batch, head), gq * scale, rows, gq_strides[2], L, e, E)


def _as_4d(t: torch.Tensor) -> torch.Tensor:
    """(batch, heads, rows, features), last dim contiguous: a view where it can be."""
    t = t.reshape(-1, *t.shape[-3:]) if t.ndim > 4 else t[(None,) * (4 - t.ndim)]
    return t if t.stride(-1) == 1 else t.contiguous()


def _mask_and_kind(attn_mask, q4, L, S):
    """The mask as a (B, H, L, S) view (zero strides where it broadcasts) and its kind."""
    if attn_mask is None:
        return q4, (0, 0, 0, 0), NO_MASK
    kind = BOOL_MASK if attn_mask.dtype == torch.bool else FLOAT_MASK
    if kind == BOOL_MASK:
        attn_mask = attn_mask.view(torch.uint8)  # the same bytes, in a dtype every triton version loads
    mask = attn_mask.expand(q4.shape[0], q4.shape[1], L, S)
    return mask, mask.stride(), kind


def _setup(q, k, v, attn_mask, scale):
    """q, k, v as 4-d views, the mask as a (B, H, L, S) view, the scale, and the launch
    arguments every kernel shares."""
    if not (q.ndim == k.ndim == v.ndim >= 2 and q.shape[:-2] == k.shape[:-2] == v.shape[:-2]):
        raise ValueError(
            f"attention kernel: q, k, v must share their leading dims, not {tuple(q.shape)}, {tuple(k.shape)}, "
            f"{tuple(v.shape)}; expand or repeat k and v first."
        )
    if k.shape[-1] != q.shape[-1] or k.shape[-2] != v.shape[-2]:
        raise ValueError(f"attention kernel: k must be (..., S, {q.shape[-1]}) and v (..., S, Ev) alike.")
    if max(q.shape[-1], v.shape[-1]) > MAX_HEAD_DIM:
        raise ValueError(f"attention kernel: head dims above {MAX_HEAD_DIM} are not supported; use the torch formula.")
    q4, k4, v4 = _as_4d(q), _as_4d(k), _as_4d(v)
    (B, H, L, E), S, EV = q4.shape, k4.shape[2], v4.shape[3]
    if B * H > 65535:  # they are the grid's second dim
        raise ValueError(f"attention kernel: {B * H} (batch, head) pairs exceed 65535; use the torch formula.")
    mask, mask_strides, kind = _mask_and_kind(attn_mask, q4, L, S)
    shared = dict(
        H=H, L=L, S=S, E=E, EV=EV, MASK_KIND=kind, UPCAST=on_interpreter(q), PRECISION=dot_precision(q.dtype),
        BLOCK_E=max(16, triton.next_power_of_2(E)), BLOCK_EV=max(16, triton.next_power_of_2(EV)),
    )  # fmt: skip
    return q4, k4, v4, mask, mask_strides, scale or 1 / math.sqrt(E), shared


def _launch_config(kernel, q, head_dim):
    """Blocks and launch settings. The interpreter: the smallest blocks, so that tests cross
    their boundaries. A GPU: FlashAttention-2's usual shapes (untuned here) for rows of up to
    128 bytes (64 half-precision features); for wider rows the block a program keeps is
    halved, with fewer pipeline stages and more warps, to stay within shared memory."""
    if on_interpreter(q):
        return dict(BLOCK_M=16, BLOCK_N=16)
    block_m, block_n = GPU_BLOCKS[kernel]
    if head_dim * q.element_size() <= 128:
        return dict(BLOCK_M=block_m, BLOCK_N=block_n, num_warps=4, num_stages=3)
    block_m, block_n = (block_m, block_n // 2) if kernel == "key_grads" else (block_m // 2, block_n)
    return dict(BLOCK_M=block_m, BLOCK_N=block_n, num_warps=8, num_stages=2)


def attention_forward(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    attn_mask: torch.Tensor | None = None,
    *,
    is_causal: bool = False,
    scale: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(out, lse): F.scaled_dot_product_attention(q, k, v, attn_mask, is_causal=, scale=)
    for q (..., L, E), k (..., S, E), v (..., S, Ev) (up to 4 dims of the same leading
    shape), and each query row's logsumexp of its scores (float32, q's leading shape and L).
    attn_mask is a bool (True takes part) or float (added) mask broadcastable to (..., L, S).
    The output takes q's memory layout where it can (heads split from rows stay so)."""
    q4, k4, v4, mask, mask_strides, scale, shared = _setup(q, k, v, attn_mask, scale)
    B, H, L, E = q4.shape
    out = torch.empty_like(q4) if shared["EV"] == E else q4.new_empty(B, H, L, shared["EV"])
    lse = torch.empty(B, H, L, dtype=torch.float32, device=q.device)
    config = _launch_config("forward", q, max(E, shared["EV"]))
    _forward_kernel[(triton.cdiv(L, config["BLOCK_M"]), B * H)](
        q4, k4, v4, mask, out, lse, q4.stride(), k4.stride(), v4.stride(), mask_strides, out.stride(),
        qk_scale=scale * LOG2E, IS_CAUSAL=is_causal, **shared, **config,
    )  # fmt: skip
    return out.view(*q.shape[:-1], -1), lse.view(q.shape[:-1])


def attention_backward(
    grad: torch.Tensor,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    out: torch.Tensor,
    lse: torch.Tensor,
    attn_mask: torch.Tensor | None = None,
    *,
    is_causal: bool = False,
    scale: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(gq, gk, gv), each in its input's layout where it can, from the grad of the output
    and the forward's out and lse, with the forward's q, k, v, mask and options."""
    q4, k4, v4, mask, mask_strides, scale, shared = _setup(q, k, v, attn_mask, scale)
    g4, out4, lse = _as_4d(grad), _as_4d(out), lse.contiguous()
    B, H, L, E = q4.shape
    head_dim = max(E, shared["EV"])
    d = torch.empty(B, H, L, dtype=torch.float32, device=q.device)
    rows = _launch_config("forward", q, head_dim)["BLOCK_M"]
    _row_dot_kernel[(triton.cdiv(L, rows), B * H)](
        g4, out4, d, g4.stride(), out4.stride(), H, L, shared["EV"], BLOCK_M=rows, BLOCK_EV=shared["BLOCK_EV"]
    )
    gq, gk, gv = torch.empty_like(q4), torch.empty_like(k4), torch.empty_like(v4)
    inputs = (q4, k4, v4, mask, g4, lse, d)
    strides = (q4.stride(), k4.stride(), v4.stride(), mask_strides, g4.stride())
    options = dict(scale=scale, qk_scale=scale * LOG2E, IS_CAUSAL=is_causal, **shared)
    config = _launch_config("key_grads", q, head_dim)
    grid = (triton.cdiv(k4.shape[2], config["BLOCK_N"]), B * H)
    _key_grads_kernel[grid](*inputs, gk, gv, *strides, gk.stride(), gv.stride(), **options, **config)
    config = _launch_config("query_grads", q, head_dim)
    _query_grads_kernel[(triton.cdiv(L, config["BLOCK_M"]), B * H)](
        *inputs, gq, *strides, gq.stride(), **options, **config
    )
    return gq.view(q.shape), gk.view(k.shape), gv.view(v.shape)
