"""The seed project's layers, each a tinygraph Module composed from tinygraph ops.

None of them writes a backward: the engine derives it from the ops they call. Shapes:
tokens are (batch, time) integer ids, activations (batch, time, features). Weights start
as in nanoGPT: normal with std 0.02, biases zero.
"""

from __future__ import annotations

import torch

import tinygraph.nn.functional as F
from tinygraph import Tensor, nn

INIT_STD = 0.02


def normal_parameter(*shape: int, std: float = INIT_STD) -> nn.Parameter:
    return nn.Parameter(torch.randn(shape) * std)


class Embedding(nn.Module):
    """Token ids (B, T) to vectors (B, T, dim)."""

    def __init__(self, vocab_size: int, dim: int):
        super().__init__()
        self.vocab_size, self.dim = vocab_size, dim
        self.weight = normal_parameter(vocab_size, dim)

    def forward(self, ids: Tensor) -> Tensor:
        return F.embedding(ids, self.weight)

    def extra_repr(self) -> str:
        return f"vocab_size={self.vocab_size}, dim={self.dim}"


class PositionalEmbedding(nn.Module):
    """Adds a learned vector per position (up to `block_size` positions)."""

    def __init__(self, block_size: int, dim: int):
        super().__init__()
        self.block_size = block_size
        self.weight = normal_parameter(block_size, dim)

    def forward(self, x: Tensor) -> Tensor:
        T = x.shape[1]
        if T > self.block_size:
            raise ValueError(f"A sequence of {T} tokens is longer than the model's context of {self.block_size}.")
        return x + self.weight[:T]

    def extra_repr(self) -> str:
        return f"block_size={self.block_size}, dim={self.weight.shape[1]}"


class TemporalDense(nn.Module):
    """A linear layer applied at every time step: (B, T, in) to (B, T, out)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True):
        super().__init__()
        self.weight = normal_parameter(out_features, in_features)
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        out_features, in_features = self.weight.shape
        return f"in_features={in_features}, out_features={out_features}, bias={self.bias is not None}"


class LayerNorm(nn.LayerNorm):
    """Layer normalization over the features (optionally without a bias, as nanoGPT)."""

    def __init__(self, dim: int, bias: bool = True):
        super().__init__(dim, bias=bias)


class Dropout(nn.Dropout):
    """Zero features with probability p while training."""


class MultiHeadSelfAttention(nn.Module):
    """Causal self-attention: each position attends to itself and the positions before it."""

    def __init__(self, dim: int, heads: int, dropout: float = 0.0, bias: bool = True):
        super().__init__()
        if dim % heads:
            raise ValueError(f"{heads} heads do not divide the width {dim}; pick a number of heads that does.")
        self.heads, self.dropout = heads, dropout
        self.qkv = TemporalDense(dim, 3 * dim, bias)
        self.proj = TemporalDense(dim, dim, bias)
        self.resid_dropout = Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        B, T, C = x.shape
        heads = (t.reshape(B, T, self.heads, C // self.heads).transpose(1, 2) for t in self.qkv(x).split(C, -1))
        y = F.scaled_dot_product_attention(*heads, is_causal=True, dropout_p=self.dropout if self.training else 0.0)
        return self.resid_dropout(self.proj(y.transpose(1, 2).reshape(B, T, C)))

    def extra_repr(self) -> str:
        return f"heads={self.heads}"


class FullyConnected(nn.Module):
    """The MLP of a block: widen (4x by default), exact GELU, project back, dropout."""

    def __init__(self, dim: int, hidden: int | None = None, dropout: float = 0.0, bias: bool = True):
        super().__init__()
        self.fc = TemporalDense(dim, hidden or 4 * dim, bias)
        self.proj = TemporalDense(hidden or 4 * dim, dim, bias)
        self.dropout = Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.dropout(self.proj(F.gelu(self.fc(x))))


class Block(nn.Module):
    """A pre-LayerNorm Transformer block: x + attention(norm(x)), then x + MLP(norm(x))."""

    def __init__(self, dim: int, heads: int, dropout: float = 0.0, bias: bool = True, mlp_ratio: int = 4):
        super().__init__()
        self.ln1 = LayerNorm(dim, bias)
        self.attn = MultiHeadSelfAttention(dim, heads, dropout, bias)
        self.ln2 = LayerNorm(dim, bias)
        self.mlp = FullyConnected(dim, mlp_ratio * dim, dropout, bias)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))

    def residual_projections(self) -> list[TemporalDense]:
        """The layers that write into the residual stream (nanoGPT scales their init)."""
        return [self.attn.proj, self.mlp.proj]


class CrossEntropyLoss(nn.Module):
    """The mean cross-entropy of logits (B, T, vocab) against next tokens (B, T)."""

    def __init__(self, ignore_index: int = -100):
        super().__init__()
        self.ignore_index = ignore_index

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        return F.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=self.ignore_index
        )
