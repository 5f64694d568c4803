"""Neural-network ops: linear, embedding, softmax, and the fused ops.

A fused op (layer norm, cross-entropy, attention) does in a few kernels what a chain of
primitives would, and its backward is written by hand for speed. Because that backward
only ever runs on torch.Tensors, it may use any torch function, in place. Each one names
its `composite`, the same function built from primitive ops: the tests check that the
two agree, and create_graph differentiates the composite.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..function import Function, register


@register
class Linear(Function):
    """y = x @ weight.T + bias, with x of shape (..., in) and weight (out, in)."""

    autocast = "low"

    @staticmethod
    def forward(ctx, x, weight, bias=None):
        dx, dw, _ = ctx.needs_input_grad
        ctx.save_for_backward(x if dw else None, weight if dx else None)
        return F.linear(x, weight, bias)

    @staticmethod
    def backward(ctx, g):
        x, weight = ctx.saved_tensors
        dx, dw, db = ctx.needs_input_grad
        rows = g.reshape(-1, g.shape[-1])  # every leading dim is a batch dim
        gx = g @ weight if dx else None
        gw = rows.mT @ x.reshape(-1, x.shape[-1]) if dw else None
        gb = rows.sum(0) if db else None
        return gx, gw, gb


@register
class Embedding(Function):
    """Rows of `weight` picked by integer `ids`; a row picked twice gets both grads."""

    @staticmethod
    def forward(ctx, ids, weight):
        ctx.weight_shape = weight.shape
        ctx.save_for_backward(ids)
        return F.embedding(ids, weight)

    @staticmethod
    def backward(ctx, g):
        (ids,) = ctx.saved_tensors
        rows = g.reshape(-1, g.shape[-1])
        return None, g.new_zeros(ctx.weight_shape).index_add(0, ids.reshape(-1), rows)


@register
class Softmax(Function):
    autocast = "float32"

    @staticmethod
    def forward(ctx, x, dim):
        out = x.softmax(dim)
        ctx.dim = dim
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, g):
        (out,) = ctx.saved_tensors
        return out * (g - (g * out).sum(ctx.dim, keepdim=True))


@register
class LogSoftmax(Function):
    autocast = "float32"

    @staticmethod
    def forward(ctx, x, dim):
        out = x.log_softmax(dim)
        ctx.dim = dim
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, g):
        (out,) = ctx.saved_tensors
        return g - out.exp() * g.sum(ctx.dim, keepdim=True)


@register
class Dropout(Function):
    """Zero each element with probability p, scale the rest by 1/(1-p); the mask is kept."""

    @staticmethod
    def forward(ctx, x, p):
        keep = torch.rand_like(x) >= p
        ctx.scale = 1 / (1 - p)
        ctx.save_for_backward(keep)
        return x * keep * ctx.scale

    @staticmethod
    def backward(ctx, g):
        (keep,) = ctx.saved_tensors
        return g * keep * ctx.scale, None


def layer_norm_composite(x, weight=None, bias=None, *, normalized_shape, eps=1e-5):
    dims = tuple(range(-len(normalized_shape), 0))
    y = (x - x.mean(dims, keepdim=True)) * (x.var(dims, correction=0, keepdim=True) + eps).rsqrt()
    if weight is not None:
        y = y * weight
    return y + bias if bias is not None else y


@register
class LayerNorm(Function):
    """Normalize over the trailing `normalized_shape` dims (biased variance), then scale and shift."""

    autocast = "float32"

    composite = staticmethod(layer_norm_composite)

    @staticmethod
    def forward(ctx, x, weight=None, bias=None, *, normalized_shape, eps=1e-5):
        out, mean, rstd = torch.native_layer_norm(x, normalized_shape, weight, bias, eps)
        ctx.features = tuple(range(x.ndim - len(normalized_shape), x.ndim))
        ctx.save_for_backward(x, weight, mean, rstd)
        return out

    @staticmethod
    def backward(ctx, g):
        x, weight, mean, rstd = ctx.saved_tensors
        _, dw, db = ctx.needs_input_grad
        features = ctx.features
        batch = tuple(range(x.ndim - len(features)))
        xhat = (x - mean).mul_(rstd)  # recomputed: cheaper than keeping it
        gw = _sum_over(g * xhat, batch) if dw else None
        gb = _sum_over(g, batch) if db else None
        gxhat = g * weight if weight is not None else g.clone()
        mean_g = gxhat.mean(features, keepdim=True)
        mean_gx = (gxhat * xhat).mean(features, keepdim=True)
        # gx = (gxhat - mean(gxhat) - xhat * mean(gxhat * xhat)) * rstd, in place
        return gxhat.sub_(mean_g).sub_(xhat.mul_(mean_gx)).mul_(rstd), gw, gb


def _sum_over(t, dims):
    return t.sum(dims) if dims else t  # torch reads an empty dim tuple as "every dim"


def cross_entropy_composite(logits, target, *, ignore_index=-100, reduction="mean"):
    valid = target != ignore_index
    picked = logits.log_softmax(1).gather(1, target.masked_fill(~valid, 0).unsqueeze(1)).squeeze(1)
    losses = -picked.masked_fill(~valid, 0)
    if reduction == "mean":
        return losses.sum() / valid.sum()
    return losses.sum() if reduction == "sum" else losses


@register
class CrossEntropy(Function):
    """Cross-entropy of (N, C) logits against N class indices, from the logits in one pass.

    Its grad is softmax(logits) - onehot(target), scaled; no log-softmax is kept.
    Targets equal to `ignore_index` add nothing, and `mean` averages over the others.
    """

    autocast = "float32"

    composite = staticmethod(cross_entropy_composite)

    @staticmethod
    def forward(ctx, logits, target, *, ignore_index=-100, reduction="mean"):
        valid = target != ignore_index
        target = target.masked_fill(~valid, 0)
        lse = logits.logsumexp(1)
        losses = (lse - logits.gather(1, target.unsqueeze(1)).squeeze(1)).masked_fill_(~valid, 0)
        ctx.reduction = reduction
        if reduction == "mean":
            count = valid.sum()
            ctx.save_for_backward(logits, target, valid, lse, count)
            return losses.sum() / count
        ctx.save_for_backward(logits, target, valid, lse, None)
        return losses.sum() if reduction == "sum" else losses

    @staticmethod
    def backward(ctx, g):
        logits, target, valid, lse, count = ctx.saved_tensors
        grad = (logits - lse.unsqueeze(1)).exp_()
        grad.scatter_add_(1, target.unsqueeze(1), grad.new_full((len(target), 1), -1.0))
        scale = valid.unsqueeze(1) * (g.unsqueeze(1) if ctx.reduction == "none" else g)
        return grad.mul_(scale / count if count is not None else scale), None


def _attention_weights(q, k, attn_mask, is_causal, scale):
    """softmax(q k^T * scale + mask): shared by the forward (with dropout) and the backward.

    Masks become an additive bias (0 or -inf): torch's broadcast masked_fill and
    logsumexp are several times slower on the CPU than an add and a softmax.
    """
    s = (q @ k.mT).mul_(scale)
    if is_causal:
        L, S = s.shape[-2:]
        s.add_(torch.full((L, S), float("-inf"), dtype=s.dtype, device=s.device).triu_(1))
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            attn_mask = torch.zeros(attn_mask.shape, dtype=s.dtype, device=s.device).masked_fill_(
                ~attn_mask, float("-inf")
            )
        s.add_(attn_mask)
    return s.softmax(-1)


def attention_composite(q, k, v, attn_mask=None, *, dropout_p=0.0, is_causal=False, scale=None):
    if dropout_p:
        raise NotImplementedError("create_graph through attention with dropout is not supported; use dropout_p=0.")
    s = (q @ k.mT) * (scale or 1 / math.sqrt(q.shape[-1]))
    if is_causal:
        L, S = s.shape[-2:]
        s = s.masked_fill(torch.ones(L, S, dtype=torch.bool, device=s.device).triu(1), float("-inf"))
    if attn_mask is not None:
        s = s.masked_fill(~attn_mask, float("-inf")) if attn_mask.dtype == torch.bool else s + attn_mask
    return s.softmax(-1) @ v


@register
class ScaledDotProductAttention(Function):
    """softmax(q k^T * scale + mask) v. Only q, k, v and the output are kept for backward
    (and the dropout mask, if any): the (L, S) attention weights are recomputed there.

    Without dropout the forward is torch's fused attention kernel (a forward: no autograd
    involved); with dropout it computes the weights itself, to know the mask it drew.
    """

    autocast = "low"

    composite = staticmethod(attention_composite)

    @staticmethod
    def forward(ctx, q, k, v, attn_mask=None, *, dropout_p=0.0, is_causal=False, scale=None):
        ctx.scale = scale or 1 / math.sqrt(q.shape[-1])
        ctx.is_causal, ctx.dropout_p = is_causal, dropout_p
        keep = None
        if dropout_p:
            p = _attention_weights(q, k, attn_mask, is_causal, ctx.scale)
            keep = torch.rand_like(p) >= dropout_p
            out = p.mul_(keep).mul_(1 / (1 - dropout_p)) @ v
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask, is_causal=is_causal, scale=ctx.scale)
        ctx.save_for_backward(q, k, v, attn_mask, out, keep)
        return out

    @staticmethod
    def backward(ctx, g):
        q, k, v, attn_mask, out, keep = ctx.saved_tensors
        p = _attention_weights(q, k, attn_mask, ctx.is_causal, ctx.scale)
        gp = g @ v.mT
        if keep is not None:
            p_used = p * keep * (1 / (1 - ctx.dropout_p))
            gp.mul_(keep).mul_(1 / (1 - ctx.dropout_p))
        else:
            p_used = p
        gv = p_used.mT @ g
        # softmax backward; the row sum of gp * p equals the row sum of g * out
        gs = p.mul_(gp.sub_((g * out).sum(-1, keepdim=True))).mul_(ctx.scale)
        return gs @ k, gs.mT @ q, gv, None


def lstm_cell_composite(gates_x, h, c, weight_hh):
    i, f, g, o = (gates_x + h @ weight_hh.mT).chunk(4, -1)
    c = f.sigmoid() * c + i.sigmoid() * g.tanh()
    return o.sigmoid() * c.tanh(), c


@register
class LSTMCell(Function):
    """One LSTM step, torch's gate order (input, forget, cell, output), as one node with two
    outputs, (h, c). `gates_x` (B, 4H) is the input's share of the gates, computed for all
    steps at once by the layer. A dozen small ops per step become one: in an unrolled
    sequence that is most of the time."""

    multi_output = True
    composite = staticmethod(lstm_cell_composite)

    @staticmethod
    def forward(ctx, gates_x, h, c, weight_hh):
        gates = torch.addmm(gates_x, h, weight_hh.mT)
        i, f, g, o = gates.chunk(4, 1)
        i.sigmoid_(), f.sigmoid_(), g.tanh_(), o.sigmoid_()  # in place: gates now holds the activations
        c_next = torch.addcmul(f * c, i, g)
        tanh_c = c_next.tanh()
        ctx.save_for_backward(h, c, weight_hh, gates, tanh_c)
        return o * tanh_c, c_next

    @staticmethod
    def backward(ctx, grad_h, grad_c):
        h, c, weight_hh, gates, tanh_c = ctx.saved_tensors
        i, f, g, o = gates.chunk(4, 1)
        grad_c = grad_h * o * (1 - tanh_c * tanh_c) + grad_c  # through h = o * tanh(c), plus c's own
        grad_gates = torch.cat(
            [
                grad_c * g * i * (1 - i),  # sigmoid' = s (1 - s)
                grad_c * c * f * (1 - f),
                grad_c * i * (1 - g * g),  # tanh' = 1 - t^2
                grad_h * tanh_c * o * (1 - o),
            ],
            1,
        )
        return grad_gates, grad_gates @ weight_hh, grad_c * f, grad_gates.mT @ h
