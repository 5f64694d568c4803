"""Recurrent layers, unrolled over time with tinygraph ops (backprop through time is
just the engine walking the unrolled graph; the LSTM runs its whole sequence as one fused
op unless `unroll = true`). Weights follow torch.nn.RNN / LSTM / GRU's
names, layout and uniform(+-1/sqrt(hidden)) init, so their weights load into each other."""

from __future__ import annotations

import math
from typing import Annotated, Any

import torch

import tinygraph.nn.functional as F
from tinygraph import Tensor, nn, stack
from tinygraph.ops.nn import LSTMSequence

from ..options import PositiveInt
from .registry import layer


class Recurrent(nn.Module):
    """What every recurrent layer has: input and hidden weights (and biases) per gate."""

    gates = 1  # rows of weight_ih per hidden unit
    out_width = "hidden"

    def __init__(
        self, input_size: int, hidden: Annotated[PositiveInt, "hidden units (the output width)"], bias: bool = True
    ):
        super().__init__()
        self.input_size, self.hidden_size = input_size, hidden
        bound = 1 / math.sqrt(hidden)
        uniform = lambda *shape: nn.Parameter(torch.empty(shape).uniform_(-bound, bound))  # noqa: E731
        self.weight_ih = uniform(self.gates * hidden, input_size)
        self.weight_hh = uniform(self.gates * hidden, hidden)
        self.bias_ih = uniform(self.gates * hidden) if bias else None
        self.bias_hh = uniform(self.gates * hidden) if bias else None

    def forward(self, x: Tensor, state: Any = None) -> Tensor:
        """The hidden state at every step of x, from `state` (zeros by default). Each cell's
        `forward_cached(x, state)` also returns the state after the last step, which
        generation carries from token to token (see incremental.py)."""
        return self.forward_cached(x, state)[0]

    def _input_terms(self, x: Tensor) -> Tensor:
        # the input's contribution at every step at once: one matrix product, not T (with
        # both biases, added together first: one pass over the (B, T, gates) terms, not two)
        bias = self.bias_ih + self.bias_hh if self.bias_ih is not None else None
        return F.linear(x, self.weight_ih, bias)

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}, bias={self.bias_ih is not None}"


@layer
class RNN(Recurrent):
    """h_t = tanh(W_ih x_t + b_ih + W_hh h_(t-1) + b_hh), over (B, T, input) to (B, T, hidden)."""

    def forward_cached(self, x: Tensor, h: Tensor | None) -> tuple[Tensor, Tensor]:
        xw = self._input_terms(x)
        h = h if h is not None else xw.new_zeros(x.shape[0], self.hidden_size)
        w_hh, outputs = self.weight_hh.mT, []  # transposed once, not at every step
        for xw_t in xw.unbind(1):
            h = (xw_t + h @ w_hh).tanh()
            outputs.append(h)
        return stack(outputs, 1), h


@layer
class LSTM(Recurrent):
    """The LSTM cell (input, forget, cell and output gates, in torch's order), over
    (B, T, input) to (B, T, hidden)."""

    gates = 4

    def __init__(
        self,
        input_size: int,
        hidden: Annotated[PositiveInt, "hidden units (the output width)"],
        bias: bool = True,
        unroll: Annotated[
            bool, "one LSTMCell node per step, to watch backprop through time in the graph (slower)"
        ] = False,
    ):
        super().__init__(input_size, hidden, bias)
        self.unroll = unroll

    def forward_cached(self, x: Tensor, state: tuple[Tensor, Tensor] | None) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        xw = self._input_terms(x)
        zeros = xw.new_zeros(x.shape[0], self.hidden_size)
        h, c = state if state is not None else (zeros, zeros)
        if not self.unroll:  # the whole sequence as one fused node, as torch.nn.LSTM
            out, h, c = LSTMSequence.apply(xw, h, c, self.weight_hh)
            return out, (h, c)
        outputs = []
        for xw_t in xw.unbind(1):
            h, c = F.lstm_cell(xw_t, h, c, self.weight_hh)  # one fused op per step (its composite: the gates)
            outputs.append(h)
        return stack(outputs, 1), (h, c)

    def extra_repr(self) -> str:
        return super().extra_repr() + (", unroll=True" if self.unroll else "")


@layer
class GRU(Recurrent):
    """The gated recurrent unit (reset, update and new gates, in torch's order), over
    (B, T, input) to (B, T, hidden): h = (1 - z) * n + z * h_prev."""

    gates = 3

    def forward_cached(self, x: Tensor, h: Tensor | None) -> tuple[Tensor, Tensor]:
        xw = x @ self.weight_ih.mT  # the input terms of every step in one product
        if self.bias_ih is not None:
            xw = xw + self.bias_ih
        h = h if h is not None else xw.new_zeros(x.shape[0], self.hidden_size)
        w_hh, outputs = self.weight_hh.mT, []  # transposed once, not at every step
        for xw_t in xw.unbind(1):
            hw = h @ w_hh
            if self.bias_hh is not None:
                hw = hw + self.bias_hh  # kept apart: the reset gate scales it in n
            x_r, x_z, x_n = xw_t.chunk(3, -1)
            h_r, h_z, h_n = hw.chunk(3, -1)
            r = (x_r + h_r).sigmoid()
            z = (x_z + h_z).sigmoid()
            n = (x_n + r * h_n).tanh()
            h = (1 - z) * n + z * h
            outputs.append(h)
        return stack(outputs, 1), h
