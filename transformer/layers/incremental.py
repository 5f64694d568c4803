"""Running a stack one position at a time, as generation does: each layer continues the
sequence from a cache of what it computed for the positions before, so that a new token
costs one position, not the whole context.

A layer says how in its class:
- `positionwise = True`: its output at a position depends on its input there alone
  (Embedding, LayerNorm, TemporalDense, Dropout, the MLP): it runs on the new positions
  and keeps nothing;
- `forward_cached(x, cache) -> (y, cache)`: `y` is its output at the positions of `x`
  (B, T, width), which follow those `cache` holds (None: none yet), and the cache after
  them: attention keeps the keys and values, a recurrent layer its hidden state, the
  position embedding the number of positions so far.

A layer that says neither (one of your own, say) still works: its cache is its input so
far, and it runs on all of it, keeping its output at the new positions (the full
recomputation, for that layer alone). That needs, as training a language model already
does, an output at position t that depends only on the positions up to t.
"""

from __future__ import annotations

from typing import Any

from tinygraph import Tensor, cat, nn


def forward_cached(layer: nn.Module, x: Tensor, cache: Any) -> tuple[Tensor, Any]:
    """`layer`'s output at the new positions `x` (B, T, ...), and its cache after them."""
    if hasattr(layer, "forward_cached"):
        return layer.forward_cached(x, cache)
    if getattr(layer, "positionwise", False):
        return layer(x), None
    inputs = x if cache is None else cat([cache, x], 1)
    return layer(inputs)[:, -x.shape[1] :], inputs
