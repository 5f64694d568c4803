"""Text in, token ids out: the corpus, the tokenizers, the train/validation split, batches.

The default corpus ships with Python itself (the documentation topics in the standard
library's `pydoc_data`), so training works on every install without a download.
"""

from __future__ import annotations

import json
import re
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .errors import UserError

DEFAULT_CORPUS = "pydoc"  # the name under which the embedded corpus is recorded
IGNORE_INDEX = -100  # a target the loss leaves out
DATA_DIR = Path("data")


def default_corpus() -> str:
    """Python's own documentation topics (about 465,000 characters), in a stable order."""
    from pydoc_data.topics import topics

    return "\n\n".join(topics[name] for name in sorted(topics))


def resolve_corpus(path: str | None) -> Path | None:
    """The file to read: the path as given, else a bare name looked up in `data/`."""
    if path is None or path == DEFAULT_CORPUS:
        return None
    given = Path(path)
    if given.exists() or given.parent != Path("."):
        return given
    return DATA_DIR / given if (DATA_DIR / given).exists() else given


def read_corpus(path: str | None) -> str:
    """The corpus text; every way a file can be unusable is a UserError that says what to do."""
    resolved = resolve_corpus(path)
    if resolved is None:
        return default_corpus()
    if not resolved.exists():
        raise UserError(
            f"The corpus {path} does not exist; give the path of a UTF-8 text file, or a file name in data/."
        )
    if resolved.is_dir():
        raise UserError(f"The corpus {path} is a directory; give one UTF-8 text file.")
    try:
        raw = resolved.read_bytes()
    except OSError as err:
        raise UserError(f"The corpus {path} cannot be read ({err.strerror}); check its permissions.") from None
    if not raw.strip():
        raise UserError(f"The corpus {path} is empty; give a text file with some text in it.")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise UserError(
            f"The corpus {path} is not UTF-8 text (is it a binary file?); give a UTF-8 text file."
        ) from None
    if "\x00" in text:
        raise UserError(f"The corpus {path} holds NUL bytes, so it is binary, not text; give a UTF-8 text file.")
    return text


class Tokenizer:
    """Text to ids and back, over a sorted vocabulary (stable across runs, saved with the model)."""

    kind = ""

    def __init__(self, vocab: list[str]):
        self.vocab = list(vocab)
        self.index = {token: i for i, token in enumerate(self.vocab)}

    @classmethod
    def learn(cls, text: str) -> Tokenizer:
        return cls(sorted(set(cls.split(text))))

    @staticmethod
    def split(text: str) -> list[str]:
        raise NotImplementedError

    def __len__(self) -> int:
        return len(self.vocab)

    def encode(self, text: str) -> list[int]:
        return [self.index[t] for t in self.split(text)]

    def decode(self, ids: Any) -> str:
        return "".join(self.vocab[i] for i in (ids.tolist() if hasattr(ids, "tolist") else ids))

    def unknown(self, text: str) -> Counter:
        """The tokens of `text` that are not in the vocabulary, with their counts."""
        return Counter(t for t in self.split(text) if t not in self.index)

    def to_json(self) -> str:
        return json.dumps({"kind": self.kind, "vocab": self.vocab}, ensure_ascii=False)

    @staticmethod
    def from_json(text: str) -> Tokenizer:
        data = json.loads(text)
        kinds = {cls.kind: cls for cls in (CharTokenizer, WordTokenizer)}
        if not isinstance(data, dict) or data.get("kind") not in kinds or not isinstance(data.get("vocab"), list):
            raise UserError("The tokenizer file is not one this program wrote; train the run again.")
        return kinds[data["kind"]](data["vocab"])


class CharTokenizer(Tokenizer):
    """One token per character."""

    kind = "char"

    @staticmethod
    def split(text: str) -> list[str]:
        return list(text)


class WordTokenizer(Tokenizer):
    """The seed project's word level: each word, each whitespace character and each
    punctuation mark is a token."""

    kind = "word"

    @staticmethod
    def split(text: str) -> list[str]:
        return re.findall(r"\w+|\s|[^\w\s]", text)


TOKENIZERS = {"char": CharTokenizer, "word": WordTokenizer}


def without_unknown(text: str, tokenizer: Tokenizer, what: str) -> str:
    """The stated policy for text with tokens the model never saw: warn, naming them and
    how many there are, and leave them out."""
    unknown = tokenizer.unknown(text)
    if not unknown:
        return text
    shown = ", ".join(f"{t!r} x{n}" for t, n in unknown.most_common(10))
    count, kinds = sum(unknown.values()), len(unknown)
    warnings.warn(
        f"{what} holds {count} occurrence{'s' * (count != 1)} of {kinds} token{'s' * (kinds != 1)} the model's "
        f"vocabulary lacks ({shown}{', ...' if kinds > 10 else ''}); {'they are' if count != 1 else 'it is'} left out.",
        stacklevel=2,
    )
    return "".join(t for t in tokenizer.split(text) if t not in unknown)


def encode_seed(text: str, tokenizer: Tokenizer) -> list[int]:
    """The text to continue (a prompt, a seed text) to ids; a token the model never saw is
    an error (a sample must start from known text)."""
    if not isinstance(text, str):
        raise UserError(f"The text to continue must be a str, not {type(text).__name__}.")
    unknown = tokenizer.unknown(text)
    if unknown:
        raise UserError(
            f"The text to continue holds {', '.join(repr(t) for t in sorted(unknown))}, which the model never saw; "
            "use only text from its vocabulary."
        )
    ids = tokenizer.encode(text)
    if not ids:
        raise UserError("The text to continue is empty; give at least one character.")
    return ids


@dataclass
class Splits:
    train: torch.Tensor
    val: torch.Tensor


def split(text: str, tokenizer: Tokenizer, block_size: int) -> Splits:
    """The first 90% of the characters train, the last 10% validate.

    A corpus shorter than one context window (block_size + 1 tokens) is an error. When
    the validation tenth is shorter than that, validation uses the corpus' last window,
    which overlaps the training text (a warning says so).
    """
    ids = torch.tensor(tokenizer.encode(text), dtype=torch.long)
    need = block_size + 1
    if len(ids) < need:
        raise UserError(
            f"The corpus holds {len(ids)} tokens, fewer than one context window plus one ({need}); "
            "use a longer text or a smaller --block-size."
        )
    cut = len(tokenizer.encode(text[: int(len(text) * 0.9)]))
    train, val = ids[:cut], ids[cut:]
    if len(train) < need or len(val) < need:
        warnings.warn(
            f"The corpus ({len(ids)} tokens) is too short for separate training and validation windows of "
            f"{need} tokens; validation uses its last window, which overlaps the training text.",
            stacklevel=2,
        )
        train = train if len(train) >= need else ids
        val = ids[-need:]
    return Splits(train, val)


def get_batch(
    data: torch.Tensor, batch_size: int, block_size: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """`batch_size` random windows: inputs (B, T) and the next tokens as targets (B, T)."""
    starts = torch.randint(len(data) - block_size, (batch_size,), generator=generator)
    x = torch.stack([data[s : s + block_size] for s in starts.tolist()])
    y = torch.stack([data[s + 1 : s + 1 + block_size] for s in starts.tolist()])
    return x, y


def sweep(data: torch.Tensor, batch_size: int, block_size: int):
    """Every token of `data` predicted exactly once, in order, for a deterministic loss:
    windows side by side, the last one moved back to end on the last token, its targets
    that an earlier window already counted set to IGNORE_INDEX."""
    n = len(data) - 1  # (input, next token) pairs
    T = min(block_size, n)
    starts = list(range(0, n - T + 1, T))
    if starts[-1] + T < n:
        starts.append(n - T)
    windows, covered = [], 0
    for s in starts:
        y = data[s + 1 : s + 1 + T].clone()
        y[: max(0, covered - s)] = IGNORE_INDEX
        covered = s + T
        windows.append((data[s : s + T], y))
    for b in range(0, len(windows), batch_size):
        xs, ys = zip(*windows[b : b + batch_size])
        yield torch.stack(xs), torch.stack(ys)
