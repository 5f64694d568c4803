"""A language model: the stack of layers a config lists, checked for fit as it is built."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from tinygraph import Tensor, nn

from . import layers as L
from .config import check_layer
from .errors import UserError
from .generation import Sampling, tokens
from .settings import ModelSettings


@dataclass(frozen=True)
class LayerCall:
    """How one layer of the stack was built: `find(type)[0](width, **kwargs)`."""

    type: str
    width: int
    kwargs: dict[str, Any]


class LanguageModel(nn.Module):
    """Token ids (B, T) to next-token logits (B, T, vocab), and the loss when targets are given.

    `config` is a checked config (transformer.config); each [[layers]] table builds
    `repeat` layers as `Class(width, **options)`, each initialised as GPT-2
    (transformer.layers.init), in order; the last of them is the loss.
    """

    def __init__(self, config: dict[str, Any], vocab_size: int):
        super().__init__()
        self.config, self.vocab_size = config, vocab_size
        self.settings = ModelSettings(**config.get("model", {}))
        self.block_size = self.settings.block_size
        self.calls: list[LayerCall] = []
        *stack, loss = self._build(config["layers"])
        self.layers, self.loss = nn.ModuleList(stack), loss
        L.scale_residual_projections(self)

    def _build(self, tables: list[dict[str, Any]]) -> list[nn.Module]:
        built: list[nn.Module] = []
        width = self.vocab_size  # token ids: one feature per token of the vocabulary (the Embedding's rows)
        for i, table in enumerate(tables):
            if i == len(tables) - 1 and width != self.vocab_size:  # the loss takes one logit per token
                raise UserError(
                    f"The layer before the CrossEntropyLoss gives {width} features per position but the vocabulary "
                    f'has {self.vocab_size} tokens; end the stack with a TemporalDense with out = "vocab".'
                )
            cls, _ = check_layer(table, f"layers[{i}]")  # again: a layer's file may have changed since
            declared, where = L.declaration(cls), f"layers[{i}] ({table['type']})"
            for _ in range(table.get("repeat", 1)):
                kwargs = declared.arguments(table, self.settings, self.vocab_size)
                try:
                    layer = cls(width, **kwargs)
                except ValueError as err:
                    raise UserError(f"{where} does not fit: {err}") from None
                L.init_weights(layer)
                if getattr(layer, "tied", False):
                    self._tie(layer, built[0], where)
                self.calls.append(LayerCall(table["type"], width, kwargs))
                built.append(layer)
                width = declared.width_after(kwargs, width)
        return built

    @staticmethod
    def _tie(layer: nn.Module, embedding: nn.Module, where: str) -> None:
        """An output layer that shares the token embedding's weight: one Parameter, two uses."""
        if layer.weight.shape != embedding.weight.shape:
            out, width = layer.weight.shape
            raise UserError(
                f"{where} is tied to the embedding of shape {tuple(embedding.weight.shape)} but maps {width} "
                f'features to {out}; a tied output layer needs the embedding\'s width and out = "vocab".'
            )
        layer.weight = embedding.weight

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

    def forward_cached(self, ids: Tensor, caches: list[Any] | None = None) -> tuple[Tensor, list[Any]]:
        """Logits at the new positions `ids` (B, T), which continue the sequence whose
        layers' caches are `caches` (None: a new sequence), and the caches after them
        (see transformer.layers.incremental); generation calls it once per token."""
        x, after = ids, []
        for layer, cache in zip(self.layers, caches or [None] * len(self.layers)):
            x, cache = L.forward_cached(layer, x, cache)
            after.append(cache)
        return x, after

    def generate(
        self,
        ids: Tensor,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        generator: torch.Generator | None = None,
        use_cache: bool = True,
    ) -> Tensor:
        """Continue each row of `ids` (B, T) by `max_new_tokens` sampled tokens (nanoGPT's
        method): `ids` and the new tokens, (B, T + max_new_tokens). See transformer.generation
        for the sampling, the window past block_size, and `generator` (a CPU one)."""
        sampling = Sampling(temperature, top_k, top_p)
        new = [t[:, None] for t in tokens(self, ids.data, max_new_tokens, sampling, generator, use_cache)]
        return Tensor(torch.cat([ids.data, *new], 1))
