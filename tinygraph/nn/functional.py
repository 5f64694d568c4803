"""`tinygraph.nn.functional`: torch.nn.functional's names and arguments, on tinygraph Tensors."""

from __future__ import annotations

from collections.abc import Sequence

from ..ops import elementwise as E
from ..ops import nn as N
from ..tensor import Tensor


def linear(input: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """input @ weight.T + bias."""
    return N.Linear.apply(input, weight, bias)


def embedding(input: Tensor, weight: Tensor) -> Tensor:
    """The rows of `weight` at the integer ids in `input`."""
    return N.Embedding.apply(input, weight)


def relu(input: Tensor) -> Tensor:
    return input.relu()


def tanh(input: Tensor) -> Tensor:
    return input.tanh()


def sigmoid(input: Tensor) -> Tensor:
    return input.sigmoid()


def silu(input: Tensor) -> Tensor:
    """x * sigmoid(x), the gate of SwiGLU."""
    return input * input.sigmoid()


def gelu(input: Tensor, approximate: str = "none") -> Tensor:
    """x * Phi(x) (exact, the default), or GPT-2's tanh approximation with approximate='tanh'."""
    return E.Gelu.apply(input, approximate)


def softmax(input: Tensor, dim: int) -> Tensor:
    return input.softmax(dim)


def log_softmax(input: Tensor, dim: int) -> Tensor:
    return input.log_softmax(dim)


def dropout(input: Tensor, p: float = 0.5, training: bool = True) -> Tensor:
    """Zero each element with probability p and scale the rest by 1/(1-p), when training."""
    if not 0 <= p <= 1:
        raise ValueError(f"dropout probability must be between 0 and 1, not {p}.")
    if not training or p == 0:
        return input
    return input * 0 if p == 1 else N.Dropout.apply(input, p)


def layer_norm(
    input: Tensor,
    normalized_shape: Sequence[int] | int,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    eps: float = 1e-5,
) -> Tensor:
    """Normalize over the trailing dims to mean 0 and (biased) variance 1, then scale and shift."""
    shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
    return N.LayerNorm.apply(input, weight, bias, normalized_shape=shape, eps=eps)


def cross_entropy(input: Tensor, target: Tensor, ignore_index: int = -100, reduction: str = "mean") -> Tensor:
    """Cross-entropy of logits (C), (N, C) or (N, C, d1, ...) against class indices.

    `reduction` is 'mean' (over targets that are not `ignore_index`), 'sum' or 'none'.
    """
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"reduction must be 'mean', 'sum' or 'none', not {reduction!r}.")
    if input.ndim == 1:  # one unbatched example
        out = cross_entropy(input.unsqueeze(0), target.reshape(1), ignore_index, reduction)
        return out.reshape(()) if reduction == "none" else out
    if input.ndim > 2:  # classes on dim 1: move them last and flatten the rest into rows
        rows = input.permute(0, *range(2, input.ndim), 1).reshape(-1, input.shape[1])
        out = cross_entropy(rows, target.reshape(-1), ignore_index, reduction)
        return out.reshape(target.shape) if reduction == "none" else out
    return N.CrossEntropy.apply(input, target, ignore_index=ignore_index, reduction=reduction)


def nll_loss(input: Tensor, target: Tensor, ignore_index: int = -100, reduction: str = "mean") -> Tensor:
    """Negative log-likelihood of log-probabilities (N, C) at the target classes."""
    valid = target != ignore_index
    losses = -input.gather(1, target.masked_fill(~valid, 0).unsqueeze(1)).squeeze(1).masked_fill(~valid, 0)
    if reduction == "none":
        return losses
    return losses.sum() / valid.sum() if reduction == "mean" else losses.sum()


def mse_loss(input: Tensor, target: Tensor, reduction: str = "mean") -> Tensor:
    """Squared error, averaged ('mean'), summed ('sum') or per element ('none')."""
    err = (input - target).square()
    return err.mean() if reduction == "mean" else err.sum() if reduction == "sum" else err


def lstm_cell(gates_x: Tensor, h: Tensor, c: Tensor, weight_hh: Tensor) -> tuple[Tensor, Tensor]:
    """One LSTM step: (h, c) from the input's gate terms (B, 4H), the previous h and c (B, H)
    and the hidden weights (4H, H); gates in torch's order (input, forget, cell, output)."""
    return N.LSTMCell.apply(gates_x, h, c, weight_hh)


def scaled_dot_product_attention(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    attn_mask: Tensor | None = None,
    dropout_p: float = 0.0,
    is_causal: bool = False,
    scale: float | None = None,
) -> Tensor:
    """softmax(query @ key^T * scale + mask) @ value over (..., L, E) x (..., S, E) x (..., S, Ev).

    `attn_mask` is boolean (True: may attend) or added to the scores; `is_causal` lets
    position i see positions up to i. The (L, S) weights are not kept for backward.
    """
    mask = attn_mask.data if isinstance(attn_mask, Tensor) else attn_mask
    return N.ScaledDotProductAttention.apply(
        query, key, value, mask, dropout_p=dropout_p, is_causal=is_causal, scale=scale
    )
