"""The basic layers: tinygraph.nn's modules with the stack's constructor (`width` first,
then options) and GPT-2's initialisation. Shapes: tokens are (batch, time) integer ids,
activations (batch, time, features)."""

from __future__ import annotations

from typing import Annotated

import tinygraph.nn.functional as F
from tinygraph import Tensor, nn

from ..data import IGNORE_INDEX
from ..options import FromModel, PositiveInt, Probability, Vocab, at_least
from .init import INIT_STD, init_linear
from .registry import layer


class Linear(nn.Linear):
    """nn.Linear with GPT-2's initialisation (weight normal(0, 0.02), bias zero)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True):
        super().__init__(in_features, out_features, bias, device="meta")  # shapes only: torch's init would draw
        init_linear(self)


@layer
class Embedding(nn.Embedding):
    """Token ids (B, T) to vectors (B, T, dim); the first layer of every model."""

    out_width = "dim"
    positionwise = True  # (see incremental.py)

    def __init__(self, vocab_size: int, dim: Annotated[PositiveInt, "the vectors' width"]):
        super().__init__(vocab_size, dim)
        self.weight.data.mul_(INIT_STD)  # torch draws normal(0, 1)


@layer
class PositionalEmbedding(nn.Embedding):
    """Adds a learned vector per position (up to the model's block_size positions)."""

    def __init__(self, dim: int, block_size: int):
        super().__init__(block_size, dim)
        self.weight.data.mul_(INIT_STD)
        self.block_size = block_size

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_cached(x, 0)[0]

    def forward_cached(self, x: Tensor, cache: int | None) -> tuple[Tensor, int]:
        """x at positions `cache` (how many came before) onwards, plus their vectors."""
        start, end = cache or 0, (cache or 0) + x.shape[1]
        if end > self.block_size:
            raise ValueError(f"A sequence of {end} tokens is longer than the model's context of {self.block_size}.")
        return x + self.weight[start:end], end


@layer
class TemporalDense(Linear):
    """A linear layer applied at every time step: (B, T, width) to (B, T, out)."""

    out_width = "out"
    positionwise = True

    def __init__(
        self,
        width: int,
        out: Annotated[int | Vocab, at_least(1), 'features out; "vocab": one per token (the output layer)'],
        bias: bool = True,
        tied: Annotated[
            bool, "share the token embedding's weight (the model ties them; the shapes must match)"
        ] = False,
    ):
        super().__init__(width, out, bias)
        self.tied = tied


@layer
class LayerNorm(nn.LayerNorm):
    """Layer normalization over the features (optionally without a bias, as nanoGPT)."""

    positionwise = True

    def __init__(self, width: int, bias: bool = True):
        super().__init__(width, bias=bias)


@layer
class Dropout(nn.Dropout):
    """Zero features with probability p while training."""

    positionwise = True

    def __init__(self, width: int, p: Annotated[Probability, FromModel("dropout"), "probability of zeroing"] = 0.5):
        super().__init__(p)


@layer
class CrossEntropyLoss(nn.Module):
    """The mean cross-entropy of logits (B, T, vocab) against next tokens (B, T), targets
    of IGNORE_INDEX left out; the last layer of every model."""

    def __init__(self, vocab_size: int):
        super().__init__()

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=IGNORE_INDEX)
