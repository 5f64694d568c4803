"""Model and training configs: TOML files (the presets ship in `transformer/presets/`),
checked key by key so that a typo or a value out of range is a clear error.

A config has three parts:
  [model]   block_size (context length), dropout, bias: defaults the layers share
  [train]   training settings (batch_size, lr, max_iters...), overridable by flags
  [[layers]] the stack, first an Embedding, last a CrossEntropyLoss; each entry has a
            `type`, its options, and `repeat` (how many copies in a row).
"""

from __future__ import annotations

import copy
import tomllib
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

from .errors import UserError


def _int(lo: int) -> Callable[[Any], bool]:
    return lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= lo


def _number(lo: float, hi: float = float("inf"), hi_open: bool = False) -> Callable[[Any], bool]:
    ok = lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)  # noqa: E731
    return lambda v: ok(v) and lo <= v and (v < hi if hi_open else v <= hi)


_bool = lambda v: isinstance(v, bool)  # noqa: E731
_probability = _number(0.0, 1.0, hi_open=True)

# key: (check, what the value must be) for the error message
MODEL_KEYS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "block_size": (_int(1), "a positive integer"),
    "dropout": (_probability, "a number in [0, 1)"),
    "bias": (_bool, "true or false"),
}
TRAIN_KEYS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "batch_size": (_int(1), "a positive integer"),
    "max_iters": (_int(0), "an integer of at least 0"),
    "lr": (_number(1e-12), "a positive number"),
    "min_lr": (_number(0.0), "a number of at least 0"),
    "warmup_iters": (_int(0), "an integer of at least 0"),
    "weight_decay": (_number(0.0), "a number of at least 0"),
    "beta1": (_probability, "a number in [0, 1)"),
    "beta2": (_probability, "a number in [0, 1)"),
    "grad_clip": (_number(0.0), "a number of at least 0 (0 turns clipping off)"),
    "eval_interval": (_int(1), "a positive integer"),
    "eval_iters": (_int(1), "a positive integer"),
    "patience": (_int(0), "an integer of at least 0 (0 turns the plateau decay off)"),
    "decay_factor": (_number(1e-9, 1.0, hi_open=True), "a number in (0, 1)"),
    "sample_chars": (_int(0), "an integer of at least 0"),
    "grad_accum": (_int(1), "a positive integer"),
}
_layer_common = {"type": (lambda v: isinstance(v, str), "a layer name"), "repeat": (_int(1), "a positive integer")}
_heads = (_int(1), "a positive integer")
_hidden = (_int(1), "a positive integer")
LAYER_KEYS: dict[str, dict[str, tuple[Callable[[Any], bool], str]]] = {
    "Embedding": {"dim": (_int(1), "a positive integer")},
    "PositionalEmbedding": {},
    "Dropout": {"p": (_probability, "a number in [0, 1)")},
    "Block": {
        "heads": _heads,
        "mlp_ratio": (_int(1), "a positive integer"),
        "dropout": MODEL_KEYS["dropout"],
        "bias": MODEL_KEYS["bias"],
    },
    "MultiHeadSelfAttention": {"heads": _heads, "dropout": MODEL_KEYS["dropout"], "bias": MODEL_KEYS["bias"]},
    "FullyConnected": {"hidden": _hidden, "dropout": MODEL_KEYS["dropout"], "bias": MODEL_KEYS["bias"]},
    "LayerNorm": {"bias": MODEL_KEYS["bias"]},
    "TemporalDense": {
        "out": (lambda v: v == "vocab" or _int(1)(v), 'a positive integer or "vocab"'),
        "bias": MODEL_KEYS["bias"],
        "tied": (_bool, "true or false"),
    },
    "RNN": {"hidden": _hidden, "bias": MODEL_KEYS["bias"]},
    "LSTM": {"hidden": _hidden, "bias": MODEL_KEYS["bias"]},
    "GRU": {"hidden": _hidden, "bias": MODEL_KEYS["bias"]},
    "CrossEntropyLoss": {},
}
REQUIRED = {
    "Embedding": ["dim"],
    "Block": ["heads"],
    "MultiHeadSelfAttention": ["heads"],
    "RNN": ["hidden"],
    "LSTM": ["hidden"],
    "GRU": ["hidden"],
    "TemporalDense": ["out"],
}


def presets() -> list[str]:
    """The names of the shipped presets."""
    return sorted(p.name.removesuffix(".toml") for p in _presets_dir().iterdir() if p.name.endswith(".toml"))


def _presets_dir():
    return resources.files("transformer").joinpath("presets")


def load_preset(name: str) -> dict[str, Any]:
    if name not in presets():
        raise UserError(f"There is no preset named {name!r}; choose one of: {', '.join(presets())}.")
    text = _presets_dir().joinpath(f"{name}.toml").read_text()
    return parse(text, f"preset {name}")


def load_file(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise UserError(
            f"The config file {path} does not exist; give the path of a TOML file (see transformer/presets/)."
        )
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise UserError(
            f"The config file {path} cannot be read as UTF-8 text ({err}); give a TOML text file."
        ) from None
    return parse(text, str(path))


def parse(text: str, source: str) -> dict[str, Any]:
    """Parse and check a config; every problem is a UserError naming the key or layer."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise UserError(f"{source} is not valid TOML ({err}); fix the syntax.") from None
    unknown = set(raw) - {"model", "train", "layers"}
    if unknown:
        raise UserError(
            f"{source}: unknown section(s) {', '.join(sorted(unknown))}; the sections are [model], [train] and [[layers]]."
        )
    config = {
        "model": dict(raw.get("model", {})),
        "train": dict(raw.get("train", {})),
        "layers": list(raw.get("layers", [])),
    }
    check_section(config["model"], MODEL_KEYS, f"{source} [model]")
    check_section(config["train"], TRAIN_KEYS, f"{source} [train]")
    check_layers(config["layers"], source)
    return config


def check_section(values: dict[str, Any], keys: dict, where: str) -> None:
    for key, value in values.items():
        if key not in keys:
            raise UserError(f"{where}: unknown key {key!r}; the known keys are {', '.join(sorted(keys))}.")
        check, what = keys[key]
        if not check(value):
            raise UserError(f"{where}: {key} = {value!r} is out of range; it must be {what}.")


def check_layers(layers: list[Any], source: str) -> None:
    if not layers:
        raise UserError(
            f"{source} has no [[layers]]; list the model's layers, first an Embedding, last a CrossEntropyLoss."
        )
    for i, layer in enumerate(layers):
        kind = layer.get("type") if isinstance(layer, dict) else None
        where = f"{source} layers[{i}]"
        if kind not in LAYER_KEYS:
            raise UserError(f"{where}: unknown layer type {kind!r}; the layers are {', '.join(LAYER_KEYS)}.")
        check_section(layer, {**_layer_common, **LAYER_KEYS[kind]}, f"{where} ({kind})")
        for key in REQUIRED.get(kind, []):
            if key not in layer:
                raise UserError(f"{where} ({kind}) needs {key!r}; add `{key} = ...` to it.")
    if layers[0]["type"] != "Embedding":
        raise UserError(
            f"{source}: the first layer must be an Embedding (it turns token ids into vectors), not {layers[0]['type']}."
        )
    if layers[-1]["type"] != "CrossEntropyLoss":
        raise UserError(f"{source}: the last layer must be a CrossEntropyLoss, not {layers[-1]['type']}.")
    for kind in ("Embedding", "CrossEntropyLoss"):
        if (
            sum(layer["type"] == kind for layer in layers) != 1
            or layers[0 if kind == "Embedding" else -1].get("repeat", 1) != 1
        ):
            raise UserError(f"{source}: a model has exactly one {kind}; remove the others (and any repeat).")


def merged(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """A copy of `base` with the [model]/[train] values of `override` on top."""
    out = copy.deepcopy(base)
    for section in ("model", "train"):
        out[section].update({k: v for k, v in override.get(section, {}).items() if v is not None})
    return out
