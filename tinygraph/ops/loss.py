"""Losses, with torch.nn.functional's names, signatures and argument order (the deprecated
`size_average` and `reduce` included, mapped onto `reduction` as torch maps them).

Each loss is an elementwise op or a composition of ops giving the loss per element; class
or element weights multiply it, and `reduction` ('mean', 'sum' or 'none') is applied by
the ordinary reduction ops. (Cross-entropy's fused op, which reads the logits once and
reduces itself, is with the other fused ops in nn.py.)
"""

from __future__ import annotations

import math
import warnings

import torch.nn.functional as F

from ..function import Function, public, register
from ..tensor import require_one_dtype, unwrap
from .activation import LogSigmoid
from .nn import CrossEntropy


def legacy_reduction(size_average, reduce, reduction):
    """`reduction`, or what torch's deprecated `size_average` and `reduce` say instead when given."""
    if size_average is None and reduce is None:
        return reduction
    reduction = "none" if reduce is False else "sum" if size_average is False else "mean"
    warnings.warn(
        f"size_average and reduce args will be deprecated, please use reduction='{reduction}' instead.",
        stacklevel=3,
    )
    return reduction


def reduction_of(size_average, reduce, reduction, allowed=("mean", "sum", "none")):
    """The reduction a loss applies (see legacy_reduction), checked."""
    reduction = legacy_reduction(size_average, reduce, reduction)
    if reduction not in allowed:
        raise ValueError(f"{reduction} is not a valid value for reduction")
    return reduction


def reduce_loss(losses, reduction):
    """The losses per element, averaged ('mean'), summed ('sum') or as they are ('none')."""
    return losses.mean() if reduction == "mean" else losses.sum() if reduction == "sum" else losses


def class_rows(input, target):
    """(N, C, d1, ...) scores and (N, d1, ...) targets as rows: (N * d1 * ..., C) and (N * d1 * ...)."""
    rows = input.permute(0, *range(2, input.ndim), 1).reshape(-1, input.shape[1])
    return rows, target.reshape(-1)


def _warn_if_broadcast(input, target):
    if target.shape != input.shape:
        warnings.warn(
            f"Using a target size ({target.shape}) that is different to the input size ({input.shape}). "
            "This will likely lead to incorrect results due to broadcasting. "
            "Please ensure they have the same size.",
            stacklevel=3,
        )


def _element_weighted(losses, weight, input, reduction, weighted_mean):
    """torch's optional per-element `weight` of l1, mse and huber losses: 'mean' divides by
    the weights' sum when `weighted_mean` (l1, mse), by the element count otherwise (huber)."""
    if weight is None:
        return reduce_loss(losses, reduction)
    if weight.shape != input.shape:
        raise ValueError("Weights and input must have the same size.")
    losses = losses * weight
    if reduction == "mean" and weighted_mean:
        return losses.sum() / weight.sum()
    return reduce_loss(losses, reduction)


@public("F.l1_loss")
def l1_loss(input, target, size_average=None, reduce=None, reduction="mean", weight=None):
    """|input - target| per element (grad 0 where they are equal, as torch's)."""
    _warn_if_broadcast(input, target)
    reduction = reduction_of(size_average, reduce, reduction)
    return _element_weighted((input - target).abs(), weight, input, reduction, weighted_mean=True)


@public("F.mse_loss")
def mse_loss(input, target, size_average=None, reduce=None, reduction="mean", weight=None):
    """(input - target)^2 per element."""
    _warn_if_broadcast(input, target)
    reduction = reduction_of(size_average, reduce, reduction)
    return _element_weighted((input - target).square(), weight, input, reduction, weighted_mean=True)


@register("F.huber_loss")
class Huber(Function):
    """With d = input - target: d^2 / 2 where |d| <= delta, else delta (|d| - delta / 2); the
    grad is d clamped to [-delta, delta]. `smooth_l1_loss` is the same divided by beta (= delta)."""

    autocast = "float32"

    @staticmethod
    def call(input, target, reduction="mean", delta=1.0, weight=None):
        _warn_if_broadcast(input, target)
        reduction = reduction_of(None, None, reduction)
        losses = Huber.apply(input, target, delta=delta)
        return _element_weighted(losses, weight, input, reduction, weighted_mean=False)

    @staticmethod
    def forward(ctx, x, t, delta=1.0, smooth=False):
        ctx.delta, ctx.smooth = delta, smooth
        ctx.save_for_backward(x, t)
        if smooth:
            ctx.name = "SmoothL1"
            return F.smooth_l1_loss(x, t, reduction="none", beta=delta)
        return F.huber_loss(x, t, reduction="none", delta=delta)

    @staticmethod
    def backward(ctx, g):
        x, t = ctx.saved_tensors
        d = x - t
        gd = g * (d / ctx.delta).clamp(-1, 1) if ctx.smooth else g * d.clamp(-ctx.delta, ctx.delta)
        dx, dt = ctx.needs_input_grad
        return (gd if dx else None), (-gd if dt else None)


@public("F.smooth_l1_loss")
def smooth_l1_loss(input, target, size_average=None, reduce=None, reduction="mean", beta=1.0):
    """d^2 / (2 beta) where |d| < beta, else |d| - beta / 2 (d = input - target); l1 at beta = 0."""
    if beta == 0:
        return l1_loss(input, target, size_average, reduce, reduction)
    _warn_if_broadcast(input, target)
    reduction = reduction_of(size_average, reduce, reduction)
    return reduce_loss(Huber.apply(input, target, delta=beta, smooth=True), reduction)


@register("F.binary_cross_entropy")
class BinaryCrossEntropy(Function):
    """-(t log x + (1 - t) log(1 - x)) per element, each log floored at -100 (torch's), for
    probabilities x. The grad of x divides by x (1 - x) floored at 1e-12, as torch's does."""

    autocast = "float32"

    @staticmethod
    def call(input, target, weight=None, size_average=None, reduce=None, reduction="mean"):
        reduction = reduction_of(size_average, reduce, reduction)
        if target.shape != input.shape:
            raise ValueError(
                f"Using a target size ({target.shape}) that is different to the input size ({input.shape}) is "
                "deprecated. Please ensure they have the same size."
            )
        losses = BinaryCrossEntropy.apply(input, target)
        return reduce_loss(losses if weight is None else losses * weight, reduction)

    @staticmethod
    def forward(ctx, x, t):
        ctx.save_for_backward(x, t)
        return F.binary_cross_entropy(x, t, reduction="none")

    @staticmethod
    def backward(ctx, g):
        x, t = ctx.saved_tensors
        dx, dt = ctx.needs_input_grad
        gx = g * (x - t) / ((1 - x) * x).clamp(min=1e-12) if dx else None
        gt = g * ((1 - x).log() - x.log()) if dt else None
        return gx, gt


@register("F.binary_cross_entropy_with_logits")
class BinaryCrossEntropyWithLogits(Function):
    """Binary cross-entropy of sigmoid(x), computed from the logits x, stable for any x:
    (1 - t) x - (1 + (pos_weight - 1) t) log sigmoid(x) per element (torch's form)."""

    autocast = "float32"

    @staticmethod
    def call(input, target, weight=None, size_average=None, reduce=None, reduction="mean", pos_weight=None):
        reduction = reduction_of(size_average, reduce, reduction)
        if target.shape != input.shape:
            raise ValueError(f"Target size ({target.shape}) must be the same as input size ({input.shape})")
        losses = BinaryCrossEntropyWithLogits.apply(input, target, pos_weight)
        return reduce_loss(losses if weight is None else losses * weight, reduction)

    @staticmethod
    def forward(ctx, x, t, pos_weight=None):
        ctx.save_for_backward(x, t, pos_weight)
        return F.binary_cross_entropy_with_logits(x, t, pos_weight=pos_weight, reduction="none")

    @staticmethod
    def backward(ctx, g):
        x, t, pos_weight = ctx.saved_tensors
        dx, dt, dpos = ctx.needs_input_grad
        if pos_weight is None:
            return (g * (x.sigmoid() - t) if dx else None), (-g * x if dt else None), None
        pt = pos_weight * t
        gx = g * ((pt + 1 - t) * x.sigmoid() - pt) if dx else None
        log_p = LogSigmoid.apply(x) if dt or dpos else None
        gt = -g * (x + (pos_weight - 1) * log_p) if dt else None
        gpos = -g * t * log_p if dpos else None
        return gx, gt, gpos


@register("F.kl_div")
class KLDiv(Function):
    """Pointwise KL divergence of log-probabilities `input` from `target`: t (log t - x), 0
    where t = 0 (with log_target: exp(t) (t - x)).

    Where the target needs a grad, the input is kept for it (the grad's second derivative
    with respect to the input stays exact), so changing the input in place before backward
    is an error; with log_target torch keeps t - x instead and allows that change: a
    deliberate difference."""

    autocast = "float32"

    @staticmethod
    def call(input, target, size_average=None, reduce=None, reduction="mean", log_target=False):
        if size_average is None and reduce is None and reduction == "mean":
            warnings.warn(
                "reduction: 'mean' divides the total loss by both the batch size and the support size."
                "'batchmean' divides only by the batch size, and aligns with the KL div math definition."
                "'mean' will be changed to behave the same as 'batchmean' in the next major release.",
                stacklevel=3,
            )
        reduction = reduction_of(size_average, reduce, reduction, ("mean", "sum", "none", "batchmean"))
        losses = KLDiv.apply(input, target, log_target=log_target)
        if reduction == "batchmean":
            return losses.sum() / input.shape[0] if input.ndim else losses.sum()
        return reduce_loss(losses, reduction)

    @staticmethod
    def forward(ctx, x, t, log_target=False):
        ctx.log_target = log_target
        ctx.save_for_backward(x if ctx.needs_input_grad[1] else None, t)  # x: for the target's grad only
        return F.kl_div(x, t, reduction="none", log_target=log_target)

    @staticmethod
    def backward(ctx, g):
        x, t = ctx.saved_tensors
        dx, dt = ctx.needs_input_grad
        if ctx.log_target:
            p = t.exp()
            return (-g * p if dx else None), (g * p * (t - x + 1) if dt else None)
        # times t / t (1, and nan at t = 0: torch's grad there, that of t log t with 0 * log 0 = 0),
        # held constant: its own derivative, 0, overflows where t * t underflows (t ~ 1e-200)
        return (-g * t if dx else None), (g * (t.log() + 1 - x) * (t / t).detach() if dt else None)


@public("F.poisson_nll_loss")
def poisson_nll_loss(
    input, target, log_input=True, full=False, size_average=None, eps=1e-8, reduce=None, reduction="mean"
):
    """Negative log-likelihood of `target` under Poisson(rate): exp(input) - target * input when
    `log_input`, else input - target * log(input + eps); `full` adds Stirling's approximation
    of log(target!) where target > 1 (torch's own composition)."""
    reduction = reduction_of(size_average, reduce, reduction)
    losses = input.exp() - target * input if log_input else input - target * (input + eps).log()
    if full:
        stirling = target * target.log() - target + 0.5 * (2 * math.pi * target).log()
        losses = losses + stirling.masked_fill(target <= 1, 0)
    return reduce_loss(losses, reduction)


@register("F.soft_margin_loss")
class SoftMargin(Function):
    """log(1 + exp(-target * input)) per element: the logistic loss of labels -1 and 1."""

    autocast = "float32"

    @staticmethod
    def call(input, target, size_average=None, reduce=None, reduction="mean"):
        reduction = reduction_of(size_average, reduce, reduction)
        return reduce_loss(SoftMargin.apply(input, target), reduction)

    @staticmethod
    def forward(ctx, x, y):
        ctx.save_for_backward(x, y)
        return F.soft_margin_loss(x, y, reduction="none")

    @staticmethod
    def backward(ctx, g):
        x, y = ctx.saved_tensors
        dx, dy = ctx.needs_input_grad
        pull = -g * (-(x * y)).sigmoid()
        return (pull * y if dx else None), (pull * x if dy else None)


@public("F.nll_loss")
def nll_loss(input, target, weight=None, size_average=None, ignore_index=-100, reduce=None, reduction="mean"):
    """Negative log-likelihood of log-probabilities (C), (N, C) or (N, C, d1, ...) at the target
    classes, weighted by class `weight`; 'mean' divides by the weights of the targets counted."""
    reduction = reduction_of(size_average, reduce, reduction)
    target, weight = unwrap(target), unwrap(weight)
    require_one_dtype("nll_loss", input=input, weight=weight)
    if input.ndim > 2:
        rows, flat = class_rows(input, target)
        out = nll_loss(rows, flat, weight, ignore_index=ignore_index, reduction=reduction)
        return out.reshape(target.shape) if reduction == "none" else out
    if input.ndim == 1:
        out = nll_loss(input.unsqueeze(0), target.reshape(1), weight, ignore_index=ignore_index, reduction=reduction)
        return out.reshape(()) if reduction == "none" else out
    valid = target != ignore_index
    safe = target.masked_fill(~valid, 0)
    picked = -input.gather(1, safe.unsqueeze(1)).squeeze(1)
    w_t = weight[safe].masked_fill(~valid, 0) if weight is not None else valid.to(input.dtype)
    losses = picked * w_t
    if reduction == "none":
        return losses
    return losses.sum() / w_t.sum() if reduction == "mean" else losses.sum()


@public("F.cross_entropy")
def cross_entropy(
    input,
    target,
    weight=None,
    size_average=None,
    ignore_index=-100,
    reduce=None,
    reduction="mean",
    label_smoothing=0.0,
):
    """Cross-entropy of logits (C), (N, C) or (N, C, d1, ...) against class indices (N, d1, ...)
    or class probabilities (input's shape), with class `weight`, `ignore_index` and `label_smoothing`."""
    reduction = reduction_of(size_average, reduce, reduction)
    if not 0.0 <= label_smoothing <= 1.0:
        raise RuntimeError(f"label_smoothing must be between 0.0 and 1.0. Got: {label_smoothing}")
    target, weight = unwrap(target), unwrap(weight)
    if target.is_floating_point():  # (with class probabilities torch promotes the weight)
        return _cross_entropy_probabilities(input, target, weight, reduction, label_smoothing)
    require_one_dtype("cross_entropy", input=input, weight=weight)
    options = {"ignore_index": ignore_index, "reduction": reduction, "label_smoothing": label_smoothing}
    if input.ndim == 1:  # one unbatched example
        out = cross_entropy(input.unsqueeze(0), target.reshape(1), weight, **options)
        return out.reshape(()) if reduction == "none" else out
    if input.ndim > 2:  # classes on dim 1: move them last and flatten the rest into rows
        rows, flat = class_rows(input, target)
        out = cross_entropy(rows, flat, weight, **options)
        return out.reshape(target.shape) if reduction == "none" else out
    return CrossEntropy.apply(input, target, weight, **options)


def _cross_entropy_probabilities(input, target, weight, reduction, label_smoothing):
    classes = input.shape[1] if input.ndim > 1 else input.shape[0]
    if label_smoothing:
        target = target * (1 - label_smoothing) + label_smoothing / classes
    dim = 1 if input.ndim > 1 else 0
    if weight is not None:
        target = target * weight.reshape(classes, *([1] * (input.ndim - 2))) if input.ndim > 1 else target * weight
    terms = input.log_softmax(dim) * target
    # negated after summing, as torch's (a loss of exactly 0 is then -0.0 there too)
    if reduction == "mean":
        return -terms.sum() / (input.numel() / classes)
    return -terms.sum() if reduction == "sum" else -terms.sum(dim)
