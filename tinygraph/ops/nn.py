"""Neural-network ops: linear, embedding, softmax, normalization, and the fused ops.

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

from .. import kernels
from ..compiled import compiled
from ..function import Function, public, register
from ..native import attention as native_attention
from ..native import cross_entropy as native_cross_entropy
from ..native import layer_norm as native_layer_norm
from ..native import matmul, preferred
from ..tensor import Tensor, packed_heads, require_one_dtype, unwrap
from .reduce import normalize_dims
from .shape import Stack


@register("F.linear")
class Linear(Function):
    """y = x @ weight.T + bias, with x of shape (..., in) and weight (out, in)."""

    autocast = "low"

    @staticmethod
    def call(input, weight, bias=None):
        return Linear.apply(input, weight, bias)

    @staticmethod
    def forward(ctx, x, weight, bias=None):
        dx, dw, _ = ctx.needs_input_grad
        ctx.save_for_backward(x if dw else None, weight if dx else None)
        return linear_product(x, weight, bias)

    @staticmethod
    def backward(ctx, g):
        x, weight = ctx.saved_tensors
        dx, dw, db = ctx.needs_input_grad
        return *linear_grads(g, x, weight, dx, dw), g if db else None  # (the engine sums g to the bias's shape)


@preferred(matmul.linear)
def linear_product(x, weight, bias=None):
    """x @ weight.mT + bias: the linear layer's forward, and (as g @ (weight.mT).mT) its grad of x."""
    return F.linear(x, weight, bias)


@preferred(matmul.linear_grads)
def linear_grads(g, x, weight, dx, dw):
    """The linear layer's grads of x (g @ weight) and of its weight (`linear_weight_grad`),
    None where not wanted."""
    return (linear_product(g, weight.mT) if dx else None), (linear_weight_grad(g, x) if dw else None)


@preferred(matmul.weight_grad)
def linear_weight_grad(g, x):
    """g.mT @ x: the linear layer's grad of its weight; every leading dim is a batch dim, so
    the rows of g and x are summed over in one product."""
    rows = math.prod(g.shape[:-1])  # (not -1: it holds for empty tensors too)
    return g.reshape(rows, g.shape[-1]).mT @ x.reshape(rows, x.shape[-1])


@register("F.embedding")
class Embedding(Function):
    """Rows of `weight` picked by integer `ids`; a row picked twice gets both grads, and the
    row `padding_idx` (if given) gets none."""

    @staticmethod
    def call(input, weight, padding_idx=None, max_norm=None, norm_type=2.0, scale_grad_by_freq=False, sparse=False):
        if max_norm is not None or scale_grad_by_freq or sparse:
            raise TypeError(
                "tinygraph's embedding supports padding_idx only (not max_norm, scale_grad_by_freq or sparse); "
                "drop the others."
            )
        if padding_idx is not None and padding_idx < 0:
            padding_idx += weight.shape[0]
        return Embedding.apply(unwrap(input), weight, padding_idx)

    @staticmethod
    def forward(ctx, ids, weight, padding_idx=None):
        ctx.weight_shape, ctx.padding_idx = weight.shape, padding_idx
        ctx.save_for_backward(ids)
        return F.embedding(ids, weight)

    @staticmethod
    def backward(ctx, g):
        (ids,) = ctx.saved_tensors
        if ctx.padding_idx is not None:
            g = g.masked_fill((ids == ctx.padding_idx).unsqueeze(-1), 0)
        rows = g.reshape(-1, g.shape[-1])
        return None, g.new_zeros(ctx.weight_shape).index_add(0, ids.reshape(-1), rows), None


def _softmax_dim(input, dim):
    if dim is None:  # torch's legacy choice for an implicit dim
        dim = 0 if input.ndim in (0, 1, 3) else 1
    return dim


@register("Tensor.softmax tinygraph.softmax F.softmax")
class Softmax(Function):
    autocast = "float32"

    @staticmethod
    def call(input, dim=None, dtype=None):
        return Softmax.apply(input if dtype is None else input.to(dtype), _softmax_dim(input, dim))

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


@register("Tensor.log_softmax tinygraph.log_softmax F.log_softmax")
class LogSoftmax(Function):
    autocast = "float32"

    @staticmethod
    def call(input, dim=None, dtype=None):
        return LogSoftmax.apply(input if dtype is None else input.to(dtype), _softmax_dim(input, dim))

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


@register("F.dropout")
class Dropout(Function):
    """Zero each element with probability p, scale the rest by 1/(1-p); the mask is kept."""

    @staticmethod
    def call(input, p=0.5, training=True, inplace=False):
        """Zero each element with probability p and scale the rest by 1/(1-p), when training."""
        if not 0 <= p <= 1:
            raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
        if not training or p == 0:
            return input
        out = input * 0 if p == 1 else Dropout.apply(input, p)
        return input.copy_(out) if inplace else out

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


@register("F.layer_norm")
class LayerNorm(Function):
    """Normalize over the trailing `normalized_shape` dims (biased variance), then scale and shift."""

    autocast = "float32"
    folds = True  # (the formula and the C kernel add the residual stream's grad: see backward)

    composite = staticmethod(layer_norm_composite)

    @staticmethod
    def call(input, normalized_shape, weight=None, bias=None, eps=1e-5):
        """Normalize over the trailing dims to mean 0 and (biased) variance 1, then scale and shift."""
        shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
        return LayerNorm.apply(input, weight, bias, normalized_shape=shape, eps=eps)

    @staticmethod
    def forward(ctx, x, weight=None, bias=None, *, normalized_shape, eps=1e-5):
        ctx.features = tuple(range(x.ndim - len(normalized_shape), x.ndim))
        ctx.kernel = (
            kernels.use(x, weight, bias) and math.prod(normalized_shape) <= kernels.module("layer_norm").MAX_FEATURES
        )
        if ctx.kernel:  # the rows as one trailing dim, as the kernel wants them
            rows = x.reshape(*x.shape[: x.ndim - len(normalized_shape)], -1)
            out, mean, rstd = kernels.module("layer_norm").layer_norm_forward(rows, _flat(weight), _flat(bias), eps)
            out = out.view(x.shape)
        else:
            out, mean, rstd = torch.native_layer_norm(x, normalized_shape, weight, bias, eps)
        ctx.save_for_backward(x, weight, mean, rstd)
        return out

    @staticmethod
    def backward(ctx, g):
        x, weight, mean, rstd = ctx.saved_tensors
        if not ctx.kernel:
            waiting = ctx.waiting[0] if ctx.waiting else None  # x's grad so far (the residual stream's)
            ctx.folded = (waiting is not None,)
            return layer_norm_backward(g, x, weight, mean, rstd, ctx.features, ctx.needs_input_grad, waiting)
        batch = x.shape[: x.ndim - len(ctx.features)]
        gx, gw, gb = kernels.module("layer_norm").layer_norm_backward(
            g.reshape(*batch, -1), x.reshape(*batch, -1), mean, rstd, _flat(weight), ctx.needs_input_grad[:3]
        )
        shapes = (x.shape, x.shape[len(batch) :], x.shape[len(batch) :])  # x's, weight's, bias's
        return tuple(t.view(shape) if t is not None else None for t, shape in zip((gx, gw, gb), shapes))


def _flat(t):
    return t.reshape(-1) if t is not None else None


@preferred(native_layer_norm.layer_norm_backward)
@compiled
def layer_norm_backward(g, x, weight, mean, rstd, features, needs_input_grad, waiting):
    """(gx, gw, gb) of layer norm from the forward's mean and rstd (a None where not needed);
    gx with `waiting` (a grad of x from elsewhere, or None) added."""
    _, dw, db = needs_input_grad[:3]
    batch = tuple(range(x.ndim - len(features)))
    xhat = (x - mean).mul_(rstd)  # recomputed: cheaper than keeping it
    gw = _sum_over(g * xhat, batch) if dw else None
    gb = _sum_over(g, batch) if db else None
    gxhat = g * weight if weight is not None else g.clone()
    mean_g = gxhat.mean(features, keepdim=True)
    mean_gx = (gxhat * xhat).mean(features, keepdim=True)
    # gx = (gxhat - mean(gxhat) - xhat * mean(gxhat * xhat)) * rstd, in place
    gx = gxhat.sub_(mean_g).sub_(xhat.mul_(mean_gx)).mul_(rstd)
    return (gx if waiting is None else gx.add_(waiting)), gw, gb


def _sum_over(t, dims):
    return t.sum(dims) if dims else t  # torch reads an empty dim tuple as "every dim"


def rms_norm_composite(x, weight=None, *, normalized_shape, eps):
    dims = tuple(range(-len(normalized_shape), 0))
    y = x * ((x * x).mean(dims, keepdim=True) + eps).rsqrt()
    return y * weight if weight is not None else y


@register("F.rms_norm tinygraph.rms_norm")
class RMSNorm(Function):
    """Divide by the root mean square over the trailing `normalized_shape` dims (plus eps),
    then scale by `weight`."""

    autocast = "float32"

    composite = staticmethod(rms_norm_composite)

    @staticmethod
    def call(input, normalized_shape, weight=None, eps=None):
        """x / sqrt(mean(x^2) + eps) over the trailing dims, times `weight`; eps defaults to the
        machine epsilon of the dtype the op computes in (float32 for half precisions), as torch's."""
        shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
        if len(shape) > input.ndim or tuple(input.shape[input.ndim - len(shape) :]) != shape:
            raise RuntimeError(
                f"Given normalized_shape={list(shape)}, expected input with shape [*, {', '.join(map(str, shape))}], "
                f"but got input of size{list(input.shape)}"
            )
        if eps is None:
            eps = torch.finfo(torch.promote_types(input.dtype, torch.float32)).eps
        return RMSNorm.apply(input, weight, normalized_shape=shape, eps=eps)

    @staticmethod
    def forward(ctx, x, weight=None, *, normalized_shape, eps):
        ctx.features = tuple(range(x.ndim - len(normalized_shape), x.ndim))
        rstd = (x * x).mean(ctx.features, keepdim=True).add_(eps).rsqrt_()
        out = x * rstd
        if weight is not None:
            out.mul_(weight)
        ctx.save_for_backward(x, weight, rstd)
        return out

    @staticmethod
    def backward(ctx, g):
        x, weight, rstd = ctx.saved_tensors
        _, dw = ctx.needs_input_grad
        features = ctx.features
        xhat = x * rstd
        gw = _sum_over(g * xhat, tuple(range(x.ndim - len(features)))) if dw else None
        gxhat = g * weight if weight is not None else g.clone()
        mean_gx = (gxhat * xhat).mean(features, keepdim=True)
        # gx = (gxhat - xhat * mean(gxhat * xhat)) * rstd, in place
        return gxhat.sub_(xhat.mul_(mean_gx)).mul_(rstd), gw


def vector_norm(x, p, dims):
    """||x||_p over `dims` (kept), from operators and methods that torch and tinygraph share."""
    if p == 2:  # the norm op, not sqrt(sum(x * x)): its grad x / norm keeps second derivatives
        return x.norm(2, dims, keepdim=True)  # exact where x is tiny (as torch's), not 1e137 - 1e137
    if p == 1:
        return x.abs().sum(dims, keepdim=True)
    if p == math.inf:
        return x.abs().amax(dims, keepdim=True)
    if p == -math.inf:
        return x.abs().amin(dims, keepdim=True)
    if p == 0:  # the count of nonzero elements: no grad
        return (x != 0).sum(dims, keepdim=True).to(x.dtype)
    return (x.abs() ** p).sum(dims, keepdim=True) ** (1 / p)


def norm_slope(x, norm, p, dims):
    """d ||x||_p / dx, with torch's values at the edges: 0 where the norm (or, for p < 1, the
    element) is 0; the elements tied for an infinite norm share its grad."""
    if p == 0:
        return torch.zeros_like(x)
    if p == 1:
        return x.sign()
    if p == 2:
        return (x / norm).masked_fill_(norm == 0, 0)
    if math.isinf(p):
        extreme = x.abs() == norm
        return x.sign() * extreme / extreme.sum(dims, keepdim=True)
    slope = x.sign() * x.abs().pow(p - 1) / norm.pow(p - 1)
    return slope.masked_fill_((norm == 0) | (x == 0) if p < 1 else norm == 0, 0)


def normalize_composite(x, *, p, dims, eps):
    return x / vector_norm(x, p, dims).clamp(min=eps)


@register("F.normalize")
class Normalize(Function):
    """x / max(||x||_p, eps) along `dim`: unit vectors, except the shortest ones. (The output
    is kept for backward: changing it in place before backward is an error, where torch's
    composite, which keeps the norm instead, allows it.)"""

    autocast = "float32"

    composite = staticmethod(normalize_composite)

    @staticmethod
    def call(input, p=2.0, dim=1, eps=1e-12, out=None):
        if out is not None:
            raise TypeError("tinygraph's normalize does not take out=; use the tensor it returns.")
        return Normalize.apply(input, p=p, dims=normalize_dims(dim, input.ndim), eps=eps)

    @staticmethod
    def forward(ctx, x, *, p, dims, eps):
        ctx.p, ctx.dims, ctx.eps = p, dims, eps
        out = F.normalize(x, p, dims, eps)
        ctx.save_for_backward(x, out)
        return out

    @staticmethod
    def backward(ctx, g):
        x, out = ctx.saved_tensors
        p, dims, eps = ctx.p, ctx.dims, ctx.eps
        norm = torch.linalg.vector_norm(x, p, dims, keepdim=True)
        # the norm's own grad counts only where the clamp lets it through (norm >= eps)
        pull = (g * out).sum(dims, keepdim=True).masked_fill_(norm < eps, 0)
        return (g - pull * norm_slope(x, norm, p, dims)) / norm.clamp(min=eps)


def cosine_similarity_composite(x1, x2, *, dim, eps):
    shape = torch.broadcast_shapes(x1.shape, x2.shape)

    def unit(x):
        norm = vector_norm(x.expand(shape), 2, dim)
        # torch clamps the norm outside the graph: its grad stays the unclamped norm's
        return x / (norm + (norm.clamp(min=eps) - norm).detach())

    return (unit(x1) * unit(x2)).sum(dim)


@register("F.cosine_similarity tinygraph.cosine_similarity")
class CosineSimilarity(Function):
    """The cosine of the angle between x1 and x2 (broadcast together) along `dim`: the sum of
    x1 / max(||x1||, eps) * x2 / max(||x2||, eps). As in torch, each norm is clamped outside
    the graph, so its grad is the unclamped norm's."""

    autocast = "float32"

    composite = staticmethod(cosine_similarity_composite)

    @staticmethod
    def call(x1, x2, dim=1, eps=1e-8):
        (dim,) = normalize_dims(dim, max(x1.ndim, x2.ndim))
        return CosineSimilarity.apply(x1, x2, dim=dim, eps=eps)

    @staticmethod
    def forward(ctx, x1, x2, *, dim, eps):
        ctx.dim, ctx.eps = dim, eps
        # an input whose grad is not wanted is kept as its unit vectors (a new tensor, as torch's
        # composite keeps x / ||x||), so changing it in place afterwards does not stop backward
        x1, x2 = torch.broadcast_tensors(x1, x2)
        d1, d2 = ctx.needs_input_grad
        ctx.save_for_backward(x1 if d1 else _units(x1, dim, eps)[0], x2 if d2 else _units(x2, dim, eps)[0])
        return F.cosine_similarity(x1, x2, dim, eps)

    @staticmethod
    def backward(ctx, g):
        (x1, x2), (d1, d2) = ctx.saved_tensors, ctx.needs_input_grad
        dim, eps = ctx.dim, ctx.eps
        (u1, n1, c1), (u2, n2, c2) = (_units(x, dim, eps) if d else (x, None, None) for x, d in ((x1, d1), (x2, d2)))
        cos = (u1 * u2).sum(dim, keepdim=True)
        g = g.unsqueeze(dim)
        # d cos / d x1 = (u2 - cos * x1 / n1) / c1, where x1 / n1 is 0 for n1 = 0 (torch's norm grad)
        g1 = (u2 - cos * x1 / n1.masked_fill(n1 == 0, 1)).mul_(g / c1) if d1 else None
        g2 = (u1 - cos * x2 / n2.masked_fill(n2 == 0, 1)).mul_(g / c2) if d2 else None
        return g1, g2


def _units(x, dim, eps):
    """x / max(||x||, eps) along dim, with ||x|| and the clamped norm."""
    n = torch.linalg.vector_norm(x, 2, dim, keepdim=True)
    c = n.clamp(min=eps)
    return x / c, n, c


def cross_entropy_composite(logits, target, weight=None, *, ignore_index=-100, reduction="mean", label_smoothing=0.0):
    """Per row: (1 - e) * w[t] * -log p[t] + e / C * sum_c w[c] * -log p[c]; 'mean' divides
    by the sum of w[t] over the rows not ignored (their count, without weights)."""
    valid = target != ignore_index
    safe = target.masked_fill(~valid, 0)
    logp = logits.log_softmax(1)
    w_t = weight[safe] if weight is not None else None
    nll = -logp.gather(1, safe.unsqueeze(1)).squeeze(1)
    losses = nll * w_t if weight is not None else nll
    if label_smoothing:
        smooth = -(logp * weight).sum(1) if weight is not None else -logp.sum(1)
        losses = (1 - label_smoothing) * losses + (label_smoothing / logits.shape[1]) * smooth
    losses = losses.masked_fill(~valid, 0)
    if reduction == "mean":
        total = (w_t.masked_fill(~valid, 0)).sum() if weight is not None else valid.sum()
        return losses.sum() / total
    return losses.sum() if reduction == "sum" else losses


@register
class CrossEntropy(Function):
    """Cross-entropy of (N, C) logits against N class indices, from the logits in one pass,
    with torch's class `weight` and `label_smoothing`.

    Its grad, row by row, is p * ((1 - e) w[t] + e/C * sum(w)) - (1 - e) w[t] onehot(t) - e/C * w
    (p = softmax(logits)), scaled by the reduction; no log-softmax is kept (the logits are,
    so changing them in place before backward is an error, where torch's, which keeps the
    log-softmax instead, allows it). Targets equal to `ignore_index` add nothing.
    """

    autocast = "float32"

    composite = staticmethod(cross_entropy_composite)

    @staticmethod
    def forward(ctx, logits, target, weight=None, *, ignore_index=-100, reduction="mean", label_smoothing=0.0):
        ctx.reduction, ctx.smoothing, ctx.ignore_index = reduction, label_smoothing, ignore_index
        ctx.kernel = None
        if weight is None and not label_smoothing:  # a kernel keeps one logsumexp per row, and no softmax:
            # Triton's on a GPU, the C loop on the CPU (NotImplemented where it does not cover the call)
            kernel = kernels.module("cross_entropy") if kernels.use(logits, target) else native_cross_entropy
            out = kernel.cross_entropy_forward(logits, target, ignore_index, reduction)
            if out is not NotImplemented:
                ctx.kernel, (loss, lse) = kernel, out
                ctx.save_for_backward(logits, target, lse)
                return loss
        valid = target != ignore_index
        target = target.masked_fill(~valid, 0)
        lse = logits.logsumexp(1)
        w_t = weight[target] if weight is not None else None
        losses = (logits.gather(1, target.unsqueeze(1)).squeeze(1) - lse).neg_()  # -log p, as torch (-0.0 at p = 1)
        if w_t is not None:
            losses = losses * w_t
        if label_smoothing:
            smooth = (  # -sum_c w_c log p_c, negated last as torch's (the sign of an exact 0)
                logits @ weight - lse * weight.sum() if weight is not None else logits.sum(1) - lse * logits.shape[1]
            ).neg_()
            losses = (1 - label_smoothing) * losses + (label_smoothing / logits.shape[1]) * smooth
        losses.masked_fill_(~valid, 0)
        total = None
        if reduction == "mean":
            total = w_t.masked_fill(~valid, 0).sum() if w_t is not None else valid.sum()
        ctx.save_for_backward(logits, target, valid, lse, weight, total)
        if reduction == "mean":
            return losses.sum() / total
        return losses.sum() if reduction == "sum" else losses

    @staticmethod
    def backward(ctx, g):
        if ctx.kernel is not None:
            logits, target, lse = ctx.saved_tensors
            grad = ctx.kernel.cross_entropy_backward(g, logits, target, lse, ctx.ignore_index, ctx.reduction)
            if grad is not NotImplemented:
                return grad, None, None
            # (the C loop declines after all: the kernels switched off since the forward, say)
            valid = target != ctx.ignore_index
            total = valid.sum() if ctx.reduction == "mean" else None
            return _cross_entropy_grad(ctx, g, logits, target.masked_fill(~valid, 0), valid, lse, None, total)
        return _cross_entropy_grad(ctx, g, *ctx.saved_tensors)


def _cross_entropy_grad(ctx, g, logits, target, valid, lse, weight, total):
    """CrossEntropy's backward formula (the docstring's grad), `target` with ignored rows at 0."""
    e, classes = ctx.smoothing, logits.shape[1]
    w_t = weight[target].unsqueeze(1) if weight is not None else 1.0
    grad = (logits - lse.unsqueeze(1)).exp_()  # softmax
    if e:
        w_sum = weight.sum() if weight is not None else classes
        grad.mul_((1 - e) * w_t + e / classes * w_sum)
        grad.sub_(e / classes * (weight if weight is not None else 1.0))
    elif weight is not None:
        grad.mul_(w_t)
    picked = torch.full_like(grad[:, :1], -(1 - e)) * w_t  # the target's own term
    grad.scatter_add_(1, target.unsqueeze(1), picked)
    scale = g.unsqueeze(1) if ctx.reduction == "none" else g
    if total is not None:
        scale = scale / total
    # masked, not multiplied: with every target ignored, 'mean' divides by 0 and the grad is 0
    return grad.mul_(scale).masked_fill_(~valid.unsqueeze(1), 0), None, None


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
    s = (q @ k.mT) * (scale if scale is not None else 1 / math.sqrt(q.shape[-1]))
    if is_causal:
        L, S = s.shape[-2:]
        s = s.masked_fill(torch.ones(L, S, dtype=torch.bool, device=s.device).triu(1), float("-inf"))
    if attn_mask is not None:
        s = s.masked_fill(~attn_mask, float("-inf")) if attn_mask.dtype == torch.bool else s + attn_mask
    return s.softmax(-1) @ v


@register
class ScaledDotProductAttention(Function):
    """softmax(q k^T * scale + mask) v. Only q, k, v and the output are kept for backward
    (and the dropout mask, if any): the (L, S) attention weights are recomputed there. A
    float mask (a learned attention bias) gets the grad of the scores it is added to.
    (Keeping the output means that changing it in place before backward is an error, where
    torch's math path, which keeps the weights instead, allows it: a deliberate difference.)

    Without dropout the forward is `attention_forward` (torch's fused attention kernel, a
    forward: no autograd involved; on CPU float32 without a mask, a C kernel that also keeps
    each row's logsumexp); with dropout it computes the weights itself, to know the mask it
    drew. The backward is `attention_backward` (on CPU float32 without a mask, a C kernel:
    tinygraph/native/attention.c).
    """

    autocast = "low"

    composite = staticmethod(attention_composite)

    @staticmethod
    def forward(ctx, q, k, v, attn_mask=None, *, dropout_p=0.0, is_causal=False, scale=None):
        return _attend(ctx, q, k, v, attn_mask, dropout_p, is_causal, scale)

    @staticmethod
    def backward(ctx, g):
        return _attend_backward(ctx, g, ctx.needs_input_grad[3])


def _attend(ctx, q, k, v, attn_mask, dropout_p, is_causal, scale):
    """The forward of the attention ops, keeping on ctx what `_attend_backward` needs."""
    ctx.scale = scale if scale is not None else 1 / math.sqrt(q.shape[-1])
    ctx.is_causal, ctx.dropout_p = is_causal, dropout_p
    ctx.kernel = _attention_kernel_fits(q, k, v, attn_mask, dropout_p, ctx.needs_input_grad)
    keep = lse = None  # (lse: one logsumexp per query row, where a kernel kept them)
    if ctx.kernel:  # flash attention
        out, lse = kernels.module("attention").attention_forward(
            q, k, v, attn_mask, is_causal=is_causal, scale=ctx.scale
        )
    elif dropout_p:
        p = _attention_weights(q, k, attn_mask, is_causal, ctx.scale)
        keep = torch.rand_like(p) >= dropout_p
        out = p.mul_(keep).mul_(1 / (1 - dropout_p)) @ v
    else:
        out, lse = attention_forward(q, k, v, attn_mask, is_causal, ctx.scale)
    ctx.save_for_backward(q, k, v, attn_mask, out, lse, keep)
    return out


def _attend_backward(ctx, g, needs_mask_grad):
    """(gq, gk, gv, g_mask) from what `_attend` kept."""
    q, k, v, attn_mask, out, lse, keep = ctx.saved_tensors
    if ctx.kernel:
        kernel = kernels.module("attention").attention_backward
        return *kernel(g, q, k, v, out, lse, attn_mask, is_causal=ctx.is_causal, scale=ctx.scale), None
    options = (ctx.is_causal, ctx.scale, ctx.dropout_p, needs_mask_grad)
    return attention_backward(g, q, k, v, out, lse, attn_mask, keep, *options)


def attention_qkvpacked_composite(qkv, *, is_causal=False, scale=None):
    return attention_composite(*packed_heads(qkv), is_causal=is_causal, scale=scale).transpose(-3, -2)


@register("F.attention_qkvpacked")
class PackedAttention(Function):
    """Attention over heads packed as a QKV projection makes them: qkv (..., L, 3, H, E) to
    (..., L, H, E), flash-attn's `flash_attn_qkvpacked_func` layout with the argument names
    of torch's scaled_dot_product_attention. The same kernels as ScaledDotProductAttention,
    on views of qkv; the grad comes back laid out as qkv (the C kernel writes q's, k's and
    v's grads as slices of one buffer). A layer then records it between an unflatten and a
    flatten, where the unpacked op needs three more ops around it (permute, unbind;
    transpose), each a node to record and to run backward."""

    autocast = "low"

    composite = staticmethod(attention_qkvpacked_composite)

    @staticmethod
    def call(qkv, dropout_p=0.0, is_causal=False, scale=None):
        if qkv.ndim < 4 or qkv.shape[-3] != 3:
            raise RuntimeError(
                f"attention_qkvpacked: qkv must have the shape (..., L, 3, heads, head width), not {tuple(qkv.shape)}; "
                "unflatten a QKV projection's last dim into (3, heads, head width) first."
            )
        if dropout_p:  # its weights' mask is drawn by the unpacked op
            q, k, v = packed_heads(qkv)
            out = scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=is_causal, scale=scale)
            return out.transpose(-3, -2)
        return PackedAttention.apply(qkv, is_causal=is_causal, scale=scale)

    @staticmethod
    def forward(ctx, qkv, *, is_causal=False, scale=None):
        return _attend(ctx, *packed_heads(qkv), None, 0.0, is_causal, scale).transpose(-3, -2)

    @staticmethod
    def backward(ctx, g):
        g = g.transpose(-3, -2)
        if ctx.kernel:  # (Triton's)
            return _packed(_attend_backward(ctx, g, False)[:3])
        q, k, v, _, out, lse, _ = ctx.saved_tensors
        return attention_backward_packed(g, q, k, v, out, lse, ctx.is_causal, ctx.scale)


def _packed(grads):
    """The grad of qkv (..., L, 3, H, E) from q's, k's and v's (..., H, L, E) (a copy)."""
    return torch.stack([t.transpose(-3, -2) for t in grads], -3)


@preferred(native_attention.attention_forward)
def attention_forward(q, k, v, attn_mask, is_causal, scale):
    """(softmax(q k^T scale + mask) v, None): torch's fused attention. (The C kernel returns
    each query row's logsumexp in place of the None, for its backward.)"""
    return F.scaled_dot_product_attention(q, k, v, attn_mask, is_causal=is_causal, scale=scale), None


@preferred(native_attention.attention_backward)
def attention_backward(g, q, k, v, out, lse, attn_mask, keep, is_causal, scale, dropout_p, needs_mask_grad):
    """(gq, gk, gv, g_mask) of softmax(q k^T scale + mask) v, the weights recomputed, `keep`
    the dropout mask (or None). (`lse`, the forward's logsumexps or None, is the C kernel's.)"""
    # heads are usually strided views (of a QKV projection, of the output's grad): copied
    # once here, where each of the five products below would copy its operands again
    q, k, v, g = (t.contiguous() for t in (q, k, v, g))
    p = _attention_weights(q, k, attn_mask, is_causal, scale)
    gp = g @ v.mT
    if keep is not None:
        p_used = p * keep * (1 / (1 - dropout_p))
        gp.mul_(keep).mul_(1 / (1 - dropout_p))
    else:
        p_used = p
    gv = p_used.mT @ g
    # softmax backward; the row sum of gp * p equals the row sum of g * out
    gs = p.mul_(gp.sub_((g * out).sum(-1, keepdim=True)))
    g_mask = gs.clone() if needs_mask_grad else None  # the mask is added after scaling
    gs.mul_(scale)
    return gs @ k, gs.mT @ q, gv, g_mask


@preferred(native_attention.attention_backward_packed)
def attention_backward_packed(g, q, k, v, out, lse, is_causal, scale):
    """The grad of qkv (..., L, 3, H, E), whose views are the heads q, k and v (..., H, L, E):
    `attention_backward`'s three, stacked. (The C kernel writes them as slices of one.)"""
    return _packed(attention_backward.formula(g, q, k, v, out, lse, None, None, is_causal, scale, 0.0, False)[:3])


def _attention_kernel_fits(q, k, v, attn_mask, dropout_p, needs_input_grad):
    """Whether the flash-attention kernel covers this call: no dropout, no grad for the mask,
    q, k and v of one dtype and of one leading shape, heads of at most 256 features, and at
    most 65535 (batch, head) pairs (the kernels' grid)."""
    same = q.dtype == k.dtype == v.dtype and q.ndim == k.ndim == v.ndim and q.shape[:-2] == k.shape[:-2] == v.shape[:-2]
    return (
        same
        and not dropout_p
        and not (len(needs_input_grad) > 3 and needs_input_grad[3])
        and max(q.shape[-1], v.shape[-1]) <= 256
        and math.prod(q.shape[:-2]) <= 65535
        and kernels.use(q, k, v, attn_mask)
    )


@public("F.scaled_dot_product_attention")
def scaled_dot_product_attention(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None):
    """softmax(query @ key^T * scale + mask) @ value over (..., L, E) x (..., S, E) x (..., S, Ev).

    `attn_mask` is boolean (True: may attend) or added to the scores (a float mask that
    requires grad gets one); `is_causal` lets position i see positions up to i. The (L, S)
    weights are not kept for backward.
    """
    if attn_mask is not None and not isinstance(attn_mask, Tensor):
        attn_mask = Tensor._make(attn_mask, None)
    return ScaledDotProductAttention.apply(
        query, key, value, attn_mask, dropout_p=dropout_p, is_causal=is_causal, scale=scale
    )


def _one_dtype(gates_x, h, c, weight_hh):
    """The LSTM's inputs in one dtype, as its composite would have them: h @ weight_hh needs
    the two in one dtype (a sentence otherwise), and the rest promote (the engine casts each
    input's grad back to its dtype)."""
    require_one_dtype("lstm's h @ weight_hh", h=h, weight_hh=weight_hh)
    dtype = torch.promote_types(torch.promote_types(gates_x.dtype, h.dtype), c.dtype)
    return gates_x.to(dtype), h.to(dtype), c.to(dtype), weight_hh.to(dtype)


def lstm_cell_composite(gates_x, h, c, weight_hh):
    i, f, g, o = (gates_x + h @ weight_hh.mT).chunk(4, -1)
    c = f.sigmoid() * c + i.sigmoid() * g.tanh()
    return o.sigmoid() * c.tanh(), c


@register("F.lstm_cell")
class LSTMCell(Function):
    """One LSTM step, torch's gate order (input, forget, cell, output), as one node with two
    outputs, (h, c). `gates_x` (B, 4H) is the input's share of the gates, computed for all
    steps at once by the layer. A dozen small ops per step become one: in an unrolled
    sequence that is most of the time. (h and c are sibling outputs of the one node, so
    grad(h, c) is None, where a composite computes h from c.)"""

    multi_output = True
    autocast = "float32"  # the recurrence in float32 under mixed precision
    composite = staticmethod(lstm_cell_composite)

    @staticmethod
    def forward(ctx, gates_x, h, c, weight_hh):
        gates_x, h, c, weight_hh = _one_dtype(gates_x, h, c, weight_hh)
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
        grad_gates, grad_c_prev = lstm_gate_grads(grad_h, grad_c, c, gates, tanh_c)
        return grad_gates, grad_gates @ weight_hh, grad_c_prev, grad_gates.mT @ h


@compiled
def lstm_gate_grads(grad_h, grad_c, c, gates, tanh_c):
    """The grads of the gates' pre-activations and of the previous c, from the activated
    gates: a dozen small elementwise ops per step, one kernel compiled."""
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
    return grad_gates, grad_c * f


def lstm_sequence_composite(gates_x, h, c, weight_hh):
    outputs = []
    for gates_x_t in gates_x.unbind(1):
        h, c = lstm_cell_composite(gates_x_t, h, c, weight_hh)
        outputs.append(h)
    return Stack.apply(*outputs, dim=1), h, c


@register
class LSTMSequence(Function):
    """An LSTM over a whole sequence as one node, as torch.nn.LSTM runs it: `gates_x`
    (B, T, 4H) is the input's share of the gates at every step, (h, c) the state before
    the first; the outputs are h at every step (B, T, H), and the last h and c.

    Backward walks the steps back once, keeping each step's gate grads, and then takes
    the hidden weight's grad as ONE product over all steps (sum_t grad_gates_t^T h_(t-1)),
    where a node per step (`lstm_cell`) computes and accumulates T products of rank B.
    (The outputs are kept for backward, as the h each next step started from: changing them
    in place before backward is an error, where the unrolled composite allows it.)
    """

    multi_output = True
    autocast = "float32"  # the recurrence in float32 under mixed precision, as LSTMCell
    composite = staticmethod(lstm_sequence_composite)

    @staticmethod
    def forward(ctx, gates_x, h, c, weight_hh):
        gates_x, h, c, weight_hh = _one_dtype(gates_x, h, c, weight_hh)
        B, T, H = gates_x.shape[0], gates_x.shape[1], h.shape[-1]
        gates = gates_x.new_empty(T, B, 4 * H)  # each step's activated gates
        cs = gates_x.new_empty(T + 1, B, H)  # c before each step, and after the last
        tanh_c = gates_x.new_empty(T, B, H)
        out = gates_x.new_empty(B, T, H)
        cs[0] = c
        h0 = h
        for t in range(T):
            torch.addmm(gates_x[:, t], h, weight_hh.mT, out=gates[t])
            i, f, g, o = gates[t].chunk(4, 1)
            gates[t, :, : 2 * H].sigmoid_(), g.tanh_(), o.sigmoid_()  # i and f side by side: one call
            torch.addcmul(f * cs[t], i, g, out=cs[t + 1])
            torch.tanh(cs[t + 1], out=tanh_c[t])
            h = o * tanh_c[t]
            out[:, t] = h  # (assigned, not written with out=: compiled code takes no strided out=)
        ctx.save_for_backward(h0, weight_hh, gates, cs, tanh_c, out)
        return out, h, cs[T].clone()  # (a view of cs would share its version counter with what backward keeps)

    @staticmethod
    def backward(ctx, grad_out, grad_h, grad_c):
        h0, weight_hh, gates, cs, tanh_c, out = ctx.saved_tensors
        T, B, H = tanh_c.shape
        i, f, g, o = (a.transpose(0, 1) for a in gates.chunk(4, 2))  # (B, T, H), as the grads are laid out
        # Each gate's grad is a factor known from the forward times grad_c (i, f, g) or grad_h
        # (o) of its step: the factors of all steps at once first (sigmoid' = s (1 - s), tanh' =
        # 1 - t^2), so that the walk back through the steps is six small ops a step.
        grad_gates = gates.new_empty(B, T, 4 * H)  # filled in place: no (B, T, 4H) temporaries
        by_i, by_f, by_g, by_o = grad_gates.chunk(4, 2)
        by_i.copy_(i).mul_(1 - i).mul_(g)
        by_f.copy_(f).mul_(1 - f).mul_(cs[:-1].transpose(0, 1))
        by_g.copy_(g).square_().neg_().add_(1).mul_(i)
        by_o.copy_(o).mul_(1 - o).mul_(tanh_c.transpose(0, 1))
        dh_dc = (tanh_c * tanh_c).neg_().add_(1).mul_(o.transpose(0, 1))  # h = o tanh(c), (T, B, H)
        for t in reversed(range(T)):
            grad_h = grad_out[:, t] + grad_h  # its own output's, and what step t + 1 sent back
            grad_c = torch.addcmul(grad_c, grad_h, dh_dc[t])
            step = grad_gates[:, t]
            step[:, : 3 * H].view(B, 3, H).mul_(grad_c.unsqueeze(1))
            step[:, 3 * H :].mul_(grad_h)
            grad_h = step @ weight_hh
            grad_c = grad_c * f[:, t]
        grad_w = None
        if ctx.needs_input_grad[3]:
            h_prev = torch.cat([h0.unsqueeze(1), out[:, :-1]], 1)  # (B, T, H): h before each step
            grad_w = grad_gates.flatten(0, 1).mT @ h_prev.flatten(0, 1)
        return grad_gates, grad_h, grad_c, grad_w
