"""The Transformer's layers: causal self-attention, the MLP, and the block of both.
None writes a backward: the engine derives it from the ops they call."""

from __future__ import annotations

from typing import Annotated

import torch

import tinygraph.nn.functional as F
from tinygraph import Tensor, cat, nn

from ..options import PositiveInt, at_least
from .basic import Linear
from .registry import layer

Heads = Annotated[PositiveInt, "attention heads (they must divide the width)"]


@layer
class MultiHeadSelfAttention(nn.Module):
    """Causal self-attention: each position attends to itself and the positions before it."""

    def __init__(self, dim: int, heads: Heads, dropout: float = 0.0, bias: bool = True):
        super().__init__()
        if dim % heads:
            raise ValueError(f"{heads} heads do not divide the width {dim}; pick a number of heads that does.")
        self.heads, self.dropout = heads, dropout
        self.qkv = Linear(dim, 3 * dim, bias)
        self.proj = Linear(dim, dim, bias)
        self.resid_dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        # (B, T, 3C) -> (B, T, 3, heads, head width): the heads as the fused op takes them
        qkv = self.qkv(x).unflatten(-1, (3, self.heads, x.shape[-1] // self.heads))
        y = F.attention_qkvpacked(qkv, dropout_p=self.dropout if self.training else 0.0, is_causal=True)
        return self.resid_dropout(self.proj(y.flatten(-2)))

    def forward_cached(self, x: Tensor, cache: tuple[Tensor, Tensor] | None) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """The output at the positions of x, which follow those whose keys and values
        `cache` holds (B, heads, S, head width each), and the keys and values of all of them."""
        B, T, C = x.shape
        # (B, T, 3C) -> (3, B, heads, T, head width): q, k and v as views, three ops in all
        q, k, v = self.qkv(x).unflatten(-1, (3, self.heads, C // self.heads)).permute(2, 0, 3, 1, 4).unbind(0)
        mask = None
        if cache is not None:
            past = cache[0].shape[2]
            k, v = cat([cache[0], k], 2), cat([cache[1], v], 2)
            if T > 1:  # new position i sees the past and the new positions up to i
                mask = torch.ones(T, past + T, dtype=torch.bool, device=k.device).tril(past)
        y = F.scaled_dot_product_attention(
            q, k, v, mask, is_causal=cache is None, dropout_p=self.dropout if self.training else 0.0
        )
        return self.resid_dropout(self.proj(y.transpose(1, 2).reshape(B, T, C))), (k, v)

    def extra_repr(self) -> str:
        return f"heads={self.heads}"


@layer
class FullyConnected(nn.Module):
    """The MLP of a block: widen (4x by default), exact GELU, project back, dropout."""

    positionwise = True  # (see incremental.py)

    def __init__(
        self,
        dim: int,
        hidden: Annotated[int | None, at_least(1), "the hidden width (default: 4 times the width)"] = None,
        dropout: float = 0.0,
        bias: bool = True,
    ):
        super().__init__()
        self.fc = Linear(dim, hidden or 4 * dim, bias)
        self.proj = Linear(hidden or 4 * dim, dim, bias)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.dropout(self.proj(F.gelu(self.fc(x))))


@layer
class Block(nn.Module):
    """A pre-LayerNorm Transformer block: x + attention(norm(x)), then x + MLP(norm(x))."""

    def __init__(
        self,
        dim: int,
        heads: Heads,
        dropout: float = 0.0,
        bias: bool = True,
        mlp_ratio: Annotated[PositiveInt, "the MLP's hidden width, in multiples of the width"] = 4,
    ):
        super().__init__()
        self.ln1 = nn.LayerNorm(dim, bias=bias)
        self.attn = MultiHeadSelfAttention(dim, heads, dropout, bias)
        self.ln2 = nn.LayerNorm(dim, bias=bias)
        self.mlp = FullyConnected(dim, mlp_ratio * dim, dropout, bias)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))

    def forward_cached(self, x: Tensor, cache: tuple[Tensor, Tensor] | None) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """forward at new positions, with its attention's cache (see incremental.py)."""
        attended, cache = self.attn.forward_cached(self.ln1(x), cache)
        x = x + attended
        return x + self.mlp(self.ln2(x)), cache

    def residual_projections(self) -> list[nn.Linear]:
        """The layers that write into the residual stream (their init is scaled down)."""
        return [self.attn.proj, self.mlp.proj]
