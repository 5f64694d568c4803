"""Generating text: how the next token is drawn from the logits (temperature, top-k,
top-p), and the loop that makes tokens one at a time, from the layers' caches or by
recomputing the context.

The context window. A model sees at most `block_size` tokens; once the text is longer,
the window moves forward in strides of a quarter of block_size (at least one token), so
the model always sees between three quarters of its context and all of it. The window's
start depends on the text's length alone (`window_start`), and each time it moves the
caches are built again from the tokens in the new window, in one forward pass over
them: cached and recomputed generation see the same tokens at the same positions, and
make the same text. (A window moving by one token at every step, as nanoGPT's does,
shifts every token's position at every step: each step past block_size would rebuild
the cache, and caching would be no faster than recomputing there.)

Sampling runs on the CPU in float64, with a CPU generator: the same seed draws the same
text on any device, and a temperature as small as 1e-300 is still greedy, not NaN.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

import tinygraph as tg
from tinygraph import Tensor

from .config import check_section
from .errors import UserError
from .settings import SampleSettings, options

WINDOW_STRIDE = 4  # the window moves by block_size // WINDOW_STRIDE tokens


def window_start(length: int, block_size: int) -> int:
    """The first token of the window the model reads in a text of `length` tokens."""
    if length <= block_size:
        return 0
    stride = max(1, block_size // WINDOW_STRIDE)
    return math.ceil((length - block_size) / stride) * stride


@dataclass(frozen=True)
class Sampling:
    """How the next token is drawn: `temperature` 0 takes the likeliest (greedy); `top_k`
    keeps the k likeliest tokens, `top_p` the likeliest whose probabilities reach p."""

    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None

    def __post_init__(self) -> None:
        check_section(vars(self), options(SampleSettings), "sampling")

    def pick(self, logits: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """The next token of each row of `logits` (B, vocab)."""
        logits = logits.detach().to("cpu", torch.float64)
        if not torch.isfinite(logits).all():
            raise UserError("The model's output holds NaN or Inf, so nothing can be sampled; its weights are broken.")
        if self.temperature == 0:
            return logits.argmax(-1)
        # the likeliest token at 0 before dividing: no overflow, and a tiny temperature is greedy
        z = (logits - logits.amax(-1, keepdim=True)) / self.temperature
        if self.top_k is not None and self.top_k < z.shape[-1]:
            z = z.masked_fill(z < z.topk(self.top_k).values[:, -1:], -math.inf)
        p = z.softmax(-1)
        if self.top_p is not None and self.top_p < 1:
            ranked, order = p.sort(-1, descending=True)
            enough_before = ranked.cumsum(-1) - ranked >= self.top_p  # the likelier tokens already reach top_p
            p = p.scatter(-1, order, ranked.masked_fill(enough_before, 0))
        return torch.multinomial(p, 1, generator=generator)[:, 0]


def tokens(
    model: Any,
    ids: torch.Tensor,
    max_new_tokens: int,
    sampling: Sampling,
    generator: torch.Generator | None = None,
    use_cache: bool = True,
) -> Iterator[torch.Tensor]:
    """The tokens that continue each row of `ids` (B, T), one (B,) tensor at a time.

    With `use_cache` each token runs the model on one position (`model.forward_cached`);
    without, on the whole window. The model runs in eval mode and without grads during
    each step only: between steps, the caller's modes are as it left them."""
    seq, start, caches = ids, -1, None
    for _ in range(max_new_tokens):
        window = window_start(seq.shape[1], model.block_size)
        with inference(model):
            if not use_cache:
                logits, _ = model(Tensor(seq[:, window:]))
            elif window != start:  # the first token, or the window moved: build the caches over it
                logits, caches = model.forward_cached(Tensor(seq[:, window:]), None)
            else:
                logits, caches = model.forward_cached(Tensor(seq[:, -1:]), caches)
        start = window
        token = sampling.pick(logits.data[:, -1], generator).to(seq.device)
        seq = torch.cat([seq, token[:, None]], 1)
        yield token


@contextlib.contextmanager
def inference(model: Any) -> Iterator[None]:
    """Run `model` in eval mode and without grads inside; then as it was."""
    was_training = model.training
    model.eval()
    try:
        with tg.no_grad():
            yield
    finally:
        model.train(was_training)
