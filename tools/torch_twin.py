"""A torch.nn twin of a transformer.LanguageModel, run by torch.autograd: the peer that
tools/bench.py and the quality comparisons measure tinygraph against.

Each built-in layer has a twin here under its name, written independently in torch.nn
and built with the very arguments the model built its layer with (`model.calls`: the
layer's declared options, resolved), so the twin takes the same constructor, mirrors the
parameter names, and the tinygraph model's weights load into it name by name. Attention
is nanoGPT's: heads by split, view and transpose (torch's faster way: its unbind's grad
would be stacked contiguous and copied once more on the way back) and torch's
scaled_dot_product_attention; the recurrent layers are
written from the same cell equations, and `torch.nn.LSTM` is offered for information.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from transformer.model import LanguageModel


class Embedding(nn.Embedding):
    def __init__(self, vocab_size, dim):
        super().__init__(vocab_size, dim)


class PositionalEmbedding(nn.Module):
    def __init__(self, dim, block_size):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(block_size, dim))

    def forward(self, x):
        return x + self.weight[: x.shape[1]]


class TemporalDense(nn.Linear):
    def __init__(self, width, out, bias=True, tied=False):
        super().__init__(width, out, bias)


class LayerNorm(nn.LayerNorm):
    def __init__(self, width, bias=True):
        super().__init__(width, bias=bias)


class Dropout(nn.Dropout):
    def __init__(self, width, p=0.0):
        super().__init__(p)


class MultiHeadSelfAttention(nn.Module):
    def __init__(self, dim, heads, dropout=0.0, bias=True):
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.qkv, self.proj = nn.Linear(dim, 3 * dim, bias), nn.Linear(dim, dim, bias)
        self.resid_dropout = nn.Dropout(dropout)

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = (t.view(B, T, self.heads, C // self.heads).transpose(1, 2) for t in self.qkv(x).split(C, -1))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=self.dropout if self.training else 0.0)
        return self.resid_dropout(self.proj(y.transpose(1, 2).reshape(B, T, C)))


class FullyConnected(nn.Module):
    def __init__(self, dim, hidden=None, dropout=0.0, bias=True):
        super().__init__()
        self.fc, self.proj = nn.Linear(dim, hidden or 4 * dim, bias), nn.Linear(hidden or 4 * dim, dim, bias)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x):
        return self.dropout(self.proj(F.gelu(self.fc(x))))


class Block(nn.Module):
    def __init__(self, dim, heads, dropout=0.0, bias=True, mlp_ratio=4):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(dim, bias=bias), nn.LayerNorm(dim, bias=bias)
        self.attn = MultiHeadSelfAttention(dim, heads, dropout, bias)
        self.mlp = FullyConnected(dim, mlp_ratio * dim, dropout, bias)

    def forward(self, x):
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class Recurrent(nn.Module):
    """The recurrent layers from their cell equations, parameters named as torch.nn's
    single-layer ones without the `_l0`; `cell(x_w, h_w, state)` is one step."""

    gates = 1

    def __init__(self, input_size, hidden, bias=True):
        super().__init__()
        rows = self.gates * hidden
        self.weight_ih, self.weight_hh = (
            nn.Parameter(torch.empty(rows, input_size)),
            nn.Parameter(torch.empty(rows, hidden)),
        )
        self.bias_ih = nn.Parameter(torch.empty(rows)) if bias else None
        self.bias_hh = nn.Parameter(torch.empty(rows)) if bias else None

    def forward(self, x):
        xw = F.linear(x, self.weight_ih, self.bias_ih)
        h = xw.new_zeros(x.shape[0], self.weight_hh.shape[1])
        state, outputs = (h, h), []
        for xw_t in xw.unbind(1):
            state = self.cell(xw_t, F.linear(state[0], self.weight_hh, self.bias_hh), state)
            outputs.append(state[0])
        return torch.stack(outputs, 1)


class RNN(Recurrent):
    def cell(self, xw, hw, state):
        h = (xw + hw).tanh()
        return h, h


class LSTM(Recurrent):
    gates = 4

    def __init__(self, input_size, hidden, bias=True, unroll=False):  # unroll: how tinygraph records it; the same math
        super().__init__(input_size, hidden, bias)

    def cell(self, xw, hw, state):
        i, f, g, o = (xw + hw).chunk(4, -1)
        c = f.sigmoid() * state[1] + i.sigmoid() * g.tanh()
        return o.sigmoid() * c.tanh(), c


class GRU(Recurrent):
    gates = 3

    def cell(self, xw, hw, state):
        x_r, x_z, x_n = xw.chunk(3, -1)
        h_r, h_z, h_n = hw.chunk(3, -1)
        r, z = (x_r + h_r).sigmoid(), (x_z + h_z).sigmoid()
        h = (1 - z) * (x_n + r * h_n).tanh() + z * state[0]
        return h, h


class TorchLSTM(nn.Module):
    """torch.nn.LSTM (for information: cuDNN/ATen's fused kernels), parameters named as ours."""

    def __init__(self, input_size, hidden, bias=True, unroll=False):  # unroll: tinygraph's recording only
        super().__init__()
        self.lstm = nn.LSTM(input_size, hidden, bias=bias, batch_first=True)
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):  # ours' names, the same tensors
            if hasattr(self.lstm, f"{name}_l0"):
                setattr(self, name, getattr(self.lstm, f"{name}_l0"))

    def forward(self, x):
        return self.lstm(x)[0]


TWINS: dict[str, type[nn.Module]] = {
    cls.__name__: cls
    for cls in (Embedding, PositionalEmbedding, TemporalDense, LayerNorm, Dropout, MultiHeadSelfAttention,
                FullyConnected, Block, RNN, LSTM, GRU)
}  # fmt: skip


class TwinModel(nn.Module):
    """The same stack as a LanguageModel, in torch.nn, with the same weights (tied ones tied)."""

    def __init__(self, model: LanguageModel, use_torch_lstm: bool = False):
        super().__init__()
        twins = {**TWINS, **({"LSTM": TorchLSTM} if use_torch_lstm else {})}
        missing = sorted({call.type for call in model.calls[:-1]} - set(twins))
        if missing:
            raise TypeError(f"No torch twin for {', '.join(missing)}; write one in tools/torch_twin.py.")
        self.layers = nn.ModuleList(twins[call.type](call.width, **call.kwargs) for call in model.calls[:-1])
        for twin, call in zip(self.layers, model.calls):  # tie what the tinygraph model ties
            if call.kwargs.get("tied"):
                twin.weight = self.layers[0].weight
        ours = dict(model.named_parameters())
        first = next(iter(ours.values()))
        self.to(first.device, first.dtype)
        with torch.no_grad():
            for name, theirs in self.named_parameters():
                theirs.copy_(ours[name].data)

    def forward(self, ids, targets=None):
        x = ids
        for layer in self.layers:
            x = layer(x)
        loss = F.cross_entropy(x.reshape(-1, x.shape[-1]), targets.reshape(-1)) if targets is not None else None
        return x, loss

    def optimizer_groups(self, weight_decay: float):
        params = list(self.parameters())
        return [
            {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
        ]


def matching_parameters(model: LanguageModel, twin: TwinModel) -> list[tuple[str, object, torch.nn.Parameter]]:
    """(name, tinygraph parameter, torch parameter) for every parameter, by shared name."""
    theirs = dict(twin.named_parameters())
    return [(name, p, theirs[name]) for name, p in model.named_parameters()]
