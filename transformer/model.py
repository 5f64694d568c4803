"""A language model: the stack of layers a config lists, checked for fit as it is built."""

from __future__ import annotations

import math
from typing import Any

import torch

import tinygraph as tg
from tinygraph import Tensor, nn

from . import layers as L
from . import recurrent as R
from .errors import UserError


def _block(o: dict, width: int, model: dict) -> nn.Module:
    return L.Block(
        width, o["heads"], o.get("dropout", model["dropout"]), o.get("bias", model["bias"]), o.get("mlp_ratio", 4)
    )


def _attention(o: dict, width: int, model: dict) -> nn.Module:
    return L.MultiHeadSelfAttention(width, o["heads"], o.get("dropout", model["dropout"]), o.get("bias", model["bias"]))


def _mlp(o: dict, width: int, model: dict) -> nn.Module:
    return L.FullyConnected(width, o.get("hidden"), o.get("dropout", model["dropout"]), o.get("bias", model["bias"]))


# type -> (build(options, input width, [model] settings), output width(options, input width))
BUILDERS: dict[str, tuple[Any, Any]] = {
    "PositionalEmbedding": (lambda o, w, m: L.PositionalEmbedding(m["block_size"], w), lambda o, w: w),
    "Dropout": (lambda o, w, m: L.Dropout(o.get("p", m["dropout"])), lambda o, w: w),
    "Block": (_block, lambda o, w: w),
    "MultiHeadSelfAttention": (_attention, lambda o, w: w),
    "FullyConnected": (_mlp, lambda o, w: w),
    "LayerNorm": (lambda o, w, m: L.LayerNorm(w, o.get("bias", m["bias"])), lambda o, w: w),
    "RNN": (lambda o, w, m: R.RNN(w, o["hidden"], o.get("bias", m["bias"])), lambda o, w: o["hidden"]),
    "LSTM": (lambda o, w, m: R.LSTM(w, o["hidden"], o.get("bias", m["bias"])), lambda o, w: o["hidden"]),
    "GRU": (lambda o, w, m: R.GRU(w, o["hidden"], o.get("bias", m["bias"])), lambda o, w: o["hidden"]),
}
MODEL_DEFAULTS = {"block_size": 64, "dropout": 0.0, "bias": True}


class LanguageModel(nn.Module):
    """Token ids (B, T) to next-token logits (B, T, vocab), and the loss when targets are given."""

    def __init__(self, config: dict[str, Any], vocab_size: int):
        super().__init__()
        self.config, self.vocab_size = config, vocab_size
        self.model_settings = {**MODEL_DEFAULTS, **config.get("model", {})}
        self.block_size = self.model_settings["block_size"]
        self.layers = nn.ModuleList(self._build(config["layers"]))
        self.loss = L.CrossEntropyLoss()
        self._init_residual_projections()

    def _build(self, specs: list[dict[str, Any]]) -> list[nn.Module]:
        embedding = L.Embedding(self.vocab_size, specs[0]["dim"])
        built: list[nn.Module] = [embedding]
        width = embedding.dim
        for i, spec in enumerate(specs[1:-1], start=1):
            kind, where = spec["type"], f"layers[{i}] ({spec['type']})"
            for _ in range(spec.get("repeat", 1)):
                try:
                    if kind == "TemporalDense":
                        layer, width = self._dense(spec, width, embedding, where)
                    else:
                        build, out_width = BUILDERS[kind]
                        layer, width = build(spec, width, self.model_settings), out_width(spec, width)
                except ValueError as err:
                    raise UserError(f"{where} does not fit: {err}") from None
                built.append(layer)
        if width != self.vocab_size:
            raise UserError(
                f"The layer before the CrossEntropyLoss gives {width} features per position but the vocabulary "
                f'has {self.vocab_size} tokens; end the stack with a TemporalDense with out = "vocab".'
            )
        return built

    def _dense(self, spec: dict, width: int, embedding: L.Embedding, where: str) -> tuple[nn.Module, int]:
        out = self.vocab_size if spec["out"] == "vocab" else spec["out"]
        dense = L.TemporalDense(width, out, spec.get("bias", self.model_settings["bias"]))
        if spec.get("tied", False):
            if (out, width) != tuple(embedding.weight.shape):
                raise UserError(
                    f"{where} is tied to the embedding of shape {tuple(embedding.weight.shape)} but maps {width} "
                    f'features to {out}; a tied output layer needs the embedding\'s width and out = "vocab".'
                )
            dense.weight = embedding.weight  # one Parameter, two uses
        return dense, out

    def _init_residual_projections(self) -> None:
        # nanoGPT: the layers writing into the residual stream start smaller, by sqrt(2 * blocks)
        blocks = [m for m in self.modules() if isinstance(m, L.Block)]
        for block in blocks:
            for proj in block.residual_projections():
                proj.weight.data.normal_(0.0, L.INIT_STD / math.sqrt(2 * len(blocks)))

    def forward(self, ids: Tensor, targets: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        x = ids
        for layer in self.layers:
            x = layer(x)
        return x, (self.loss(x, targets) if targets is not None else None)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def optimizer_groups(self, weight_decay: float) -> list[dict[str, Any]]:
        """AdamW groups as nanoGPT's: matrices and embeddings decay; biases and norms don't."""
        params = list(self.parameters())
        return [
            {"params": [p for p in params if p.ndim >= 2], "weight_decay": weight_decay},
            {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
        ]

    @tg.no_grad()
    def generate(
        self,
        ids: Tensor,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Continue each row of `ids` (B, T) by sampling `max_new_tokens` tokens, one at a time.

        The context is cropped to the last `block_size` tokens; `temperature` below 1
        sharpens the distribution, `top_k` keeps only the k likeliest tokens.
        """
        if temperature <= 0:
            raise UserError(f"The temperature must be positive, not {temperature}; 1.0 samples as trained.")
        was_training = self.training
        self.eval()
        out = ids.data
        for _ in range(max_new_tokens):
            logits, _ = self(Tensor(out[:, -self.block_size :]))
            logits = logits.data[:, -1, :].float() / temperature
            if top_k is not None and top_k < logits.shape[-1]:
                kth = logits.topk(top_k).values[:, -1:]
                logits = logits.masked_fill(logits < kth, float("-inf"))
            nxt = torch.multinomial(logits.softmax(-1), 1, generator=generator)
            out = torch.cat([out, nxt.to(out.device)], 1)
        self.train(was_training)
        return Tensor(out)
