"""A trained run, used from Python in two lines, as a Hugging Face checkpoint is:

    import transformer

    m = transformer.load("runs/baby-20261128-120000")        # its best weights
    print(m.generate("ROMEO:", max_new_tokens=100, seed=1))   # the new text
    for piece in m.generate("JULIET:", stream=True):          # or piece by piece, as it is made
        print(piece, end="", flush=True)
    print(m.score("To be, or not to be"))                     # loss and bits per character

`python -m transformer.sample` and `python -m transformer.test` are thin wrappers of this.
A bad argument or run directory is a transformer.UserError with a one-line message.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from tinygraph import Tensor

from .cli import pick_device
from .config import check_section
from .data import IGNORE_INDEX, Tokenizer, encode_seed, sweep, without_unknown
from .errors import UserError
from .generation import Sampling, inference, tokens
from .model import LanguageModel
from .rundir import BEST, CHECKPOINT, read_run
from .settings import SampleSettings, options

WEIGHTS = {"best": BEST, "checkpoint": CHECKPOINT}


def load(run_dir: str | Path, device: str = "auto", weights: str = "best") -> TrainedModel:
    """The model a training run saved in `run_dir`: its best weights, or with
    `weights="checkpoint"` its latest; on `device` ("auto": cuda, then mps, then cpu)."""
    if weights not in WEIGHTS:
        raise UserError(f"weights={weights!r} names no weights of a run; give 'best' or 'checkpoint'.")
    run = read_run(run_dir, pick_device(device), WEIGHTS[weights])
    run.model.eval()
    return TrainedModel(run.path, run.info, run.tokenizer, run.model)


@dataclass(frozen=True)
class Score:
    """How well a model predicts a text: every token after the first predicted once, in order."""

    loss: float  # mean cross-entropy per token, in nats
    tokens: int  # tokens predicted
    characters: int  # the characters those tokens hold

    @property
    def bits_per_token(self) -> float:
        return self.loss / math.log(2)

    @property
    def bits_per_char(self) -> float:
        return self.loss * self.tokens / math.log(2) / max(1, self.characters)

    def __str__(self) -> str:
        return (
            f"{self.tokens:,} tokens, loss {self.loss:.4f} nats per token, {self.bits_per_char:.4f} bits per character"
        )


@dataclass
class TrainedModel:
    """A trained run, ready to use: `generate` and `score` text.

    `config` is the run's config (its [model] and [train] settings and its layers),
    `info` all of its config.json, `tokenizer` its vocabulary, `model` the tinygraph
    LanguageModel itself."""

    path: Path
    info: dict[str, Any]
    tokenizer: Tokenizer
    model: LanguageModel

    @property
    def config(self) -> dict[str, Any]:
        return self.info["config"]

    @property
    def device(self) -> torch.device:
        return next(iter(self.model.parameters())).device

    def generate(
        self,
        prompt: str,
        max_new_tokens: int = 200,
        temperature: float = 0.8,
        top_k: int | None = None,
        top_p: float | None = None,
        seed: int | None = None,
        stream: bool = False,
        use_cache: bool = True,
    ) -> str | Iterator[str]:
        """The text that continues `prompt`: `max_new_tokens` tokens, as one str, or with
        `stream=True` an iterator of the tokens' text as each is made.

        `temperature` 0 takes the likeliest token each time (greedy); `top_k` samples
        among the k likeliest tokens, `top_p` among the likeliest whose probabilities
        reach p. The same `seed` gives the same text, streamed or not, cached or not
        (None: a new draw each call). `use_cache=False` recomputes the whole context for
        every token, as nanoGPT does; the text is the same, only slower."""
        given = {"max_new_tokens": max_new_tokens, **({"seed": seed} if seed is not None else {})}
        check_section(given, options(SampleSettings), "generate()")
        sampling = Sampling(temperature, top_k, top_p)
        ids = torch.tensor([encode_seed(prompt, self.tokenizer)], device=self.device)
        new = tokens(self.model, ids, max_new_tokens, sampling, generator(seed), use_cache)
        pieces = (self.tokenizer.decode(token) for token in new)
        return pieces if stream else "".join(pieces)

    def score(self, text: str, batch_size: int = 16) -> Score:
        """The model's loss on `text`, as transformer.test reports it: each token after the
        first predicted once, from as much of the text before it as the context holds.
        Tokens the vocabulary lacks are left out, with a warning."""
        text = without_unknown(text, self.tokenizer, "The text")
        data = torch.tensor(self.tokenizer.encode(text), dtype=torch.long)
        if len(data) < 2:
            raise UserError("The text to score holds fewer than two tokens; give a longer text.")
        total, count = 0.0, 0
        with inference(self.model):
            for x, y in sweep(data, batch_size, self.model.block_size):
                _, loss = self.model(Tensor(x.to(self.device)), Tensor(y.to(self.device)))
                n = int((y != IGNORE_INDEX).sum())
                total, count = total + loss.item() * n, count + n
        return Score(total / count, count, len(text) - len(self.tokenizer.split(text)[0]))

    def __repr__(self) -> str:
        return (
            f"TrainedModel({str(self.path)!r}: {self.model.num_parameters() / 1e6:.2f}M parameters, "
            f"{self.tokenizer.kind} vocabulary of {len(self.tokenizer)}, context {self.model.block_size}, on {self.device})"
        )


def generator(seed: int | None) -> torch.Generator:
    """A CPU generator seeded with `seed`, or from the system's entropy for None."""
    gen = torch.Generator()
    if seed is None:
        gen.seed()
        return gen
    return gen.manual_seed(check_seed(seed))


def check_seed(seed: int) -> int:
    if not -(2**63) <= seed < 2**64:  # what a torch generator takes
        raise UserError(f"seed = {seed} does not fit in 64 bits; give a seed from 0 to {2**64 - 1}.")
    return seed
