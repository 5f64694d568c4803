"""Every setting, once: its type, default, allowed range and help.

A config's [model] and [train] tables are checked against `ModelSettings` and
`TrainSettings`, and take their defaults from them; the command line's flags (and
their --help) are made from these classes and `RunSettings`; README's settings table
is `python -m transformer.settings`. The code reads them typed: `TrainSettings(**config["train"]).lr`.
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from dataclasses import dataclass, field
from functools import cache
from typing import Any, Literal

from .data import DEFAULT_CORPUS, TOKENIZERS
from .options import Fraction, Int64, Option, Positive, Range, alternatives, at_least, option


def setting(default: Any, help: str, range: Range | None = None, **meta: Any) -> Any:
    """A dataclass field with what a setting is besides its type: its help and range, and
    `group` (its --help section), `finetune` (its default under --init-from), `resume=False`
    (a run setting that --resume cannot change), `per_layer` (a [model] setting a layer's
    table may set for itself), `metavar` and `default_text` (for --help)."""
    return field(default=default, metadata={"help": help, "range": range, **meta})


@dataclass(frozen=True)
class ModelSettings:
    """[model]: what the whole model shares."""

    block_size: int = setting(64, "context length in tokens", at_least(1))
    dropout: float = setting(0.0, "dropout probability of every layer that has one", Fraction, per_layer=True)
    bias: bool = setting(True, "biases in the linear layers and LayerNorms", per_layer=True)


@dataclass(frozen=True)
class TrainSettings:
    """[train]: the optimization, its schedule and the evaluations."""

    batch_size: int = setting(12, "sequences per step (per process under torchrun)", at_least(1))
    max_iters: int = setting(2000, "training steps", at_least(0), finetune=500)
    lr: float = setting(1e-3, "peak learning rate (after warmup)", Positive, finetune=3e-4)
    min_lr: float = setting(1e-4, "learning rate at the end of the cosine decay", at_least(0), finetune=3e-5)
    warmup_iters: int = setting(100, "steps of linear warmup", at_least(0), finetune=0)
    weight_decay: float = setting(0.1, "AdamW weight decay of matrices (biases and norms take none)", at_least(0))
    beta1: float = setting(0.9, "AdamW's decay rate of the grads' mean", Fraction)
    beta2: float = setting(0.99, "AdamW's decay rate of the grads' square", Fraction)
    grad_clip: float = setting(1.0, "clip the grads' joint norm to this (0: off)", at_least(0))
    patience: int = setting(
        0,
        "evaluations without a better validation loss before the lr is multiplied by decay_factor (0: off)",
        at_least(0),
    )
    decay_factor: float = setting(0.5, "what patience multiplies the lr by", Range(0, 1, lo_open=True, hi_open=True))
    grad_accum: int = setting(1, "micro-batches of batch_size per step, their grads added up", at_least(1))
    eval_interval: int = setting(
        250, "steps between evaluations (losses, a sample, checkpoints)", at_least(1), group="evaluation", finetune=100
    )
    eval_iters: int = setting(20, "batches per loss estimate", at_least(1), group="evaluation")
    sample_chars: int = setting(200, "tokens generated at each evaluation", at_least(0), group="evaluation")


@dataclass(frozen=True)
class CommandSettings:
    """What every command line has."""

    seed: int = setting(
        1337, "random seed of what is drawn: initial weights, batches, dropout, samples", Int64, resume=False
    )
    device: str = setting("auto", "auto (cuda, then mps, then cpu), cpu, cuda, cuda:N or mps")


@dataclass(frozen=True)
class RunSettings(CommandSettings):
    """The training command line's own flags: what to train, on what, where and how."""

    preset: str = setting(
        "baby", "a shipped model and training recipe (see transformer/presets/)", group="model", resume=False
    )
    config: str | None = setting(
        None, "a TOML config file instead of a preset", group="model", metavar="FILE", resume=False
    )
    init_from: str | None = setting(
        None,
        "fine-tune: start from a trained run's best weights and vocabulary, with the fine-tuning defaults",
        group="model",
        metavar="RUN_DIR",
    )
    tokenizer: Literal[tuple(TOKENIZERS)] = setting(  # type: ignore[valid-type]
        "char",
        "char: one token per character; word: words, spaces and punctuation marks",
        group="model",
        resume=False,
    )
    corpus: str = setting(
        DEFAULT_CORPUS,
        f"a UTF-8 text file; a bare name is also looked for in data/ ({DEFAULT_CORPUS}: Python's own documentation)",
    )
    out_dir: str | None = setting(
        None,
        "the run directory to create",
        default_text="runs/<preset or config>-<date>-<time>",
        metavar="DIR",
        resume=False,
    )
    resume: str | None = setting(
        None, "continue a run from its latest checkpoint, in its own directory", metavar="RUN_DIR"
    )
    dtype: Literal["float32", "bfloat16", "float64"] = setting(
        "float32", "bfloat16: mixed precision (float32 weights, bfloat16 matrix products)", resume=False
    )
    compile: bool = setting(
        False,
        "the fast path: compile the training step with torch.compile (on CUDA with the update, in a CUDA "
        "graph; on the CPU the update runs torch's fused Adam kernel as it is); the first steps are slow while "
        "it compiles",
    )
    dist_backend: Literal["auto", "nccl", "gloo"] = setting(
        "auto", "under torchrun: torch.distributed's backend (auto: nccl on CUDA GPUs, gloo on CPUs)"
    )
    on_nan: Literal["stop", "skip"] = setting(
        "stop",
        "when a step's loss or grads hold NaN or Inf: stop (keeping the last good checkpoint and naming the op "
        "that made them) or skip that step's update",
    )
    no_progress: bool = setting(False, "no progress bar (for logs)")
    tensorboard: bool = setting(
        False, "also write the metrics as TensorBoard events, in RUN_DIR/tensorboard (needs the tensorboard package)"
    )
    print_config: bool = setting(False, "print the config this command would train with (TOML), and exit")


@dataclass(frozen=True)
class SampleSettings(CommandSettings):
    """How transformer.test, transformer.sample, transformer.load(...).generate() and the
    evaluations during training sample."""

    seed_text: str | None = setting(
        None, "the text to continue", default_text="a newline, or the vocabulary's first token", metavar="TEXT"
    )
    seed_file: str | None = setting(None, "continue the text of this file (-: standard input)", metavar="FILE")
    max_new_tokens: int = setting(500, "tokens to generate", at_least(0), aliases=("--n-chars",))
    temperature: float = setting(
        0.8, "0 takes the likeliest token (greedy); below 1 is more conservative, above 1 more surprising", at_least(0)
    )
    top_k: int | None = setting(None, "sample among the k likeliest tokens only", at_least(1), default_text="all")
    top_p: float | None = setting(
        None,
        "sample among the likeliest tokens whose probabilities add up to p (nucleus sampling)",
        Range(0, 1, lo_open=True),
        default_text="1: all",
        metavar="P",
    )
    num_samples: int = setting(1, "samples, the i-th drawn with seed + i", at_least(1))
    checkpoint: Literal["best", "checkpoint"] = setting("best", "the best weights or the latest")


SECTIONS = {"model": ModelSettings, "train": TrainSettings}  # a config's tables of settings
GROUPS = {ModelSettings: "model", TrainSettings: "training", RunSettings: "run", SampleSettings: "sampling"}
GROUP_ORDER = ["model", "training", "evaluation", "run", "sampling"]  # of --help


@cache
def options(cls: type) -> dict[str, Option]:
    """The settings of a settings class, by name."""
    hints = typing.get_type_hints(cls)
    return {
        f.name: dataclasses.replace(
            option(f.name, hints[f.name], f.default), range=f.metadata["range"], help=f.metadata["help"]
        )
        for f in dataclasses.fields(cls)
    }


def meta(cls: type, name: str) -> Any:
    """A setting's metadata (help, range, group, finetune, per_layer...)."""
    return next(f.metadata for f in dataclasses.fields(cls) if f.name == name)


def defaults(cls: type, mode: str | None = None) -> dict[str, Any]:
    """Every setting's default; with a `mode` ("finetune"), the settings that have a default of their own in it."""
    if mode:
        return {f.name: f.metadata[mode] for f in dataclasses.fields(cls) if mode in f.metadata}
    return {f.name: f.default for f in dataclasses.fields(cls)}


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_flags(
    parser: argparse.ArgumentParser,
    classes: list[type],
    notes: dict[str, str] | None = None,
    defaults: dict[str, Any] | None = None,
) -> None:
    """One flag per setting of each class, grouped as GROUP_ORDER lists them, its help
    ending with its default (the command's own where `defaults` has one) and `notes[name]`.

    A flag not given is absent from the parsed namespace (argparse.SUPPRESS), so that
    `given(args, cls)` tells a setting chosen on the command line from a default."""
    flags = [(meta(cls, name).get("group", GROUPS[cls]), cls, name) for cls in classes for name in options(cls)]
    groups = {title: parser.add_argument_group(title) for title in GROUP_ORDER if any(f[0] == title for f in flags)}
    for title, cls, name in sorted(flags, key=lambda f: GROUP_ORDER.index(f[0])):
        opt, data = options(cls)[name], meta(cls, name)
        kwargs: dict[str, Any] = {"default": argparse.SUPPRESS, "dest": name, "help": opt.help}
        if (opt.default is not None and opt.default is not False) or "default_text" in data:  # not: "not given"
            text = data.get("default_text") or shown((defaults or {}).get(name, opt.default))
            kwargs["help"] += f" (default: {text}{(notes or {}).get(name, '')})"
        if opt.type is bool:
            kwargs["action"] = "store_true" if opt.default is False else argparse.BooleanOptionalAction
        elif typing.get_origin(opt.type) is Literal:
            kwargs["choices"] = typing.get_args(opt.type)
        else:
            kinds = [t for t in alternatives(opt.type) if t is not type(None)]
            kwargs["type"] = kinds[0] if kinds[0] in (int, float) else str
            kwargs["metavar"] = data.get("metavar", name.upper())
        groups[title].add_argument(flag(name), *data.get("aliases", ()), **kwargs)


def shown(value: Any) -> str:
    """A default as --help and README show it."""
    if value is None:
        return "none"
    return str(value).lower() if isinstance(value, bool) else f"{value:g}" if isinstance(value, float) else str(value)


def given(args: argparse.Namespace, cls: type) -> dict[str, Any]:
    """The settings of `cls` that the command line set."""
    return {name: getattr(args, name) for name in options(cls) if hasattr(args, name)}


def default_notes() -> dict[str, str]:
    """What each [model] or [train] setting's default becomes in the default preset and when
    fine-tuning, as --help and README say it: "; baby preset: 0.002; fine-tuning: 0.0003",
    or "" where neither differs."""
    from .config import load_preset  # (config imports this module)

    preset, notes = load_preset(RunSettings.preset), {}
    for section, cls in SECTIONS.items():
        for name in options(cls):
            value, finetune = preset[section].get(name, getattr(cls, name)), meta(cls, name).get("finetune")
            notes[name] = f"; {RunSettings.preset} preset: {shown(value)}" if value != getattr(cls, name) else ""
            notes[name] += f"; fine-tuning: {shown(finetune)}" if finetune is not None else ""
    return notes


def markdown_table() -> str:
    """README's table of the [model] and [train] settings."""
    notes, lines = default_notes(), []
    for section, cls in SECTIONS.items():
        lines += ["", f"| [{section}] | default | what it is |", "|---|---|---|"]
        for name, opt in options(cls).items():
            note = f" ({notes[name][2:]})" if notes[name] else ""
            lines.append(f"| `{name}`, `{flag(name)}` | {shown(opt.default)}{note} | {opt.help}; {opt.describe()} |")
    return "\n".join(lines[1:])


if __name__ == "__main__":
    print(markdown_table())
