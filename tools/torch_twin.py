"""A torch.nn twin of a transformer.LanguageModel, run by torch.autograd: the peer that
tools/bench.py and the quality comparisons measure tinygraph against.

The twin mirrors the model's module tree and parameter names, so the tinygraph model's
state_dict loads into it as it is and grads can be compared name by name. Attention
uses torch's scaled_dot_product_attention (as nanoGPT does); the recurrent layers are
written from the same cell equations, and `torch.nn.LSTM` is offered for information.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from transformer import layers as L
from transformer import recurrent as R
from transformer.model import LanguageModel


class Table(nn.Module):
    def __init__(self, weight: torch.Tensor):
        super().__init__()
        self.weight = nn.Parameter(weight.clone())


class Embedding(Table):
    def forward(self, ids):
        return F.embedding(ids, self.weight)


class PositionalEmbedding(Table):
    def forward(self, x):
        return x + self.weight[: x.shape[1]]


class Dense(nn.Module):
    def __init__(self, weight, bias):
        super().__init__()
        self.weight = nn.Parameter(weight.clone())
        self.bias = nn.Parameter(bias.clone()) if bias is not None else None

    def forward(self, x):
        return F.linear(x, self.weight, self.bias)


class LayerNorm(nn.Module):
    def __init__(self, weight, bias, eps):
        super().__init__()
        self.weight = nn.Parameter(weight.clone())
        self.bias = nn.Parameter(bias.clone()) if bias is not None else None
        self.eps = eps

    def forward(self, x):
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, self.eps)


class Attention(nn.Module):
    def __init__(self, ours: L.MultiHeadSelfAttention):
        super().__init__()
        self.heads, self.dropout = ours.heads, ours.dropout
        self.qkv, self.proj = dense(ours.qkv), dense(ours.proj)
        self.resid_dropout = nn.Dropout(ours.resid_dropout.p)

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = (t.view(B, T, self.heads, C // self.heads).transpose(1, 2) for t in self.qkv(x).split(C, -1))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=self.dropout if self.training else 0.0)
        return self.resid_dropout(self.proj(y.transpose(1, 2).reshape(B, T, C)))


class MLP(nn.Module):
    def __init__(self, ours: L.FullyConnected):
        super().__init__()
        self.fc, self.proj, self.dropout = dense(ours.fc), dense(ours.proj), nn.Dropout(ours.dropout.p)

    def forward(self, x):
        return self.dropout(self.proj(F.gelu(self.fc(x))))


class Block(nn.Module):
    def __init__(self, ours: L.Block):
        super().__init__()
        self.ln1, self.attn, self.ln2, self.mlp = norm(ours.ln1), Attention(ours.attn), norm(ours.ln2), MLP(ours.mlp)

    def forward(self, x):
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class Recurrent(nn.Module):
    """RNN or LSTM from the cell equations, parameters named as torch.nn's single-layer ones."""

    def __init__(self, ours: R.RNN | R.LSTM):
        super().__init__()
        self.lstm = isinstance(ours, R.LSTM)
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            value = getattr(ours, name)
            setattr(self, name, nn.Parameter(value.data.clone()) if value is not None else None)

    def forward(self, x):
        xw = x @ self.weight_ih.mT
        if self.bias_ih is not None:
            xw = xw + self.bias_ih + self.bias_hh
        h = c = xw.new_zeros(x.shape[0], self.weight_hh.shape[1])
        outputs = []
        for xw_t in xw.unbind(1):
            gates = xw_t + h @ self.weight_hh.mT
            if self.lstm:
                i, f, g, o = gates.chunk(4, -1)
                c = f.sigmoid() * c + i.sigmoid() * g.tanh()
                h = o.sigmoid() * c.tanh()
            else:
                h = gates.tanh()
            outputs.append(h)
        return torch.stack(outputs, 1)


class TorchLSTM(nn.Module):
    """torch.nn.LSTM with our layer's weights (for information: cuDNN/ATen's fused kernels)."""

    def __init__(self, ours: R.LSTM):
        super().__init__()
        self.lstm = nn.LSTM(ours.input_size, ours.hidden_size, bias=ours.bias_ih is not None, batch_first=True)
        with torch.no_grad():
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                if getattr(ours, name) is not None:
                    getattr(self.lstm, f"{name}_l0").copy_(getattr(ours, name).data)

    def forward(self, x):
        return self.lstm(x)[0]


def dense(ours: L.TemporalDense) -> Dense:
    return Dense(ours.weight.data, ours.bias.data if ours.bias is not None else None)


def norm(ours: L.LayerNorm) -> LayerNorm:
    return LayerNorm(ours.weight.data, ours.bias.data if ours.bias is not None else None, ours.eps)


def twin_layer(layer, use_torch_lstm: bool) -> nn.Module:
    if isinstance(layer, L.Embedding):
        return Embedding(layer.weight.data)
    if isinstance(layer, L.PositionalEmbedding):
        return PositionalEmbedding(layer.weight.data)
    if isinstance(layer, L.Dropout):
        return nn.Dropout(layer.p)
    if isinstance(layer, L.Block):
        return Block(layer)
    if isinstance(layer, L.LayerNorm):
        return norm(layer)
    if isinstance(layer, L.TemporalDense):
        return dense(layer)
    if isinstance(layer, R.LSTM) and use_torch_lstm:
        return TorchLSTM(layer)
    if isinstance(layer, (R.RNN, R.LSTM)):
        return Recurrent(layer)
    raise TypeError(f"No torch twin for {type(layer).__name__}.")


class TwinModel(nn.Module):
    """The same stack as a LanguageModel, in torch.nn, with the same weights (tied ones tied)."""

    def __init__(self, model: LanguageModel, use_torch_lstm: bool = False):
        super().__init__()
        self.layers = nn.ModuleList(twin_layer(layer, use_torch_lstm) for layer in model.layers)
        ours = list(model.layers)
        for i, layer in enumerate(ours):  # tie what the tinygraph model ties
            if isinstance(layer, L.TemporalDense) and layer.weight is ours[0].weight:
                self.layers[i].weight = self.layers[0].weight
        self.to(next(model.parameters()).device)

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
