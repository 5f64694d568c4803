"""Small model configs for the tests, as the TOML text a user would write."""

from pathlib import Path


def run_files(folder: Path, config: str, corpus: str) -> Path:
    """`folder` with the config as c.toml and the corpus as corpus.txt, what a run reads."""
    (folder / "c.toml").write_text(config)
    (folder / "corpus.txt").write_text(corpus)
    return folder


def tiny_config(
    *,
    dim: int = 16,
    blocks: int = 1,
    lstm: int | None = None,
    tied: bool = True,
    block_size: int = 16,
    dropout: float = 0.0,
    **train: int,
) -> str:
    """Embedding, position embedding, `blocks` Transformer blocks, an optional LSTM, a
    LayerNorm and the output layer; `train` sets [train] keys (small defaults below)."""
    settings = {
        "batch_size": 4,
        "max_iters": 6,
        "eval_interval": 3,
        "eval_iters": 1,
        "warmup_iters": 2,
        "sample_chars": 0,
        **train,
    }
    layers = [
        {"type": "Embedding", "dim": dim},
        {"type": "PositionalEmbedding"},
        {"type": "Block", "heads": 2, "repeat": blocks},
        *([{"type": "LSTM", "hidden": lstm}] if lstm else []),
        {"type": "LayerNorm"},
        {"type": "TemporalDense", "out": "vocab", "tied": tied and not lstm},
        {"type": "CrossEntropyLoss"},
    ]
    text = f"[model]\nblock_size = {block_size}\ndropout = {dropout}\n[train]\n"
    text += "".join(f"{k} = {v}\n" for k, v in settings.items())
    for layer in layers:
        text += "[[layers]]\n" + "".join(f"{k} = {_toml(v)}\n" for k, v in layer.items())
    return text


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return f'"{value}"' if isinstance(value, str) else str(value)
