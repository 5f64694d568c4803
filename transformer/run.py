"""What the command lines share: choosing a device, reading a run directory back."""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from . import checkpoint as ckpt
from .data import Tokenizer
from .errors import UserError
from .model import LanguageModel


def pick_device(name: str) -> torch.device:
    """'auto' is cuda, then mps, then cpu; an unknown or absent device is a clear error."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if torch.backends.mps.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"Unknown device {name!r}; use auto, cpu, cuda, cuda:N or mps.") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(
                f"--device {name} asks for CUDA, but no CUDA device is available here; use --device cpu or auto."
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UserError(
                f"--device {name}: there are only {torch.cuda.device_count()} CUDA devices; pick one of 0..{torch.cuda.device_count() - 1}."
            )
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise UserError("--device mps asks for Apple's GPU, but MPS is not available here; use --device cpu or auto.")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise UserError(f"Device type {device.type!r} is not supported; use auto, cpu, cuda, cuda:N or mps.")
    return device


@dataclass
class Run:
    """A trained run read back from its directory."""

    path: Path
    info: dict[str, Any]  # config.json
    tokenizer: Tokenizer
    model: LanguageModel


def read_run(path: str | Path, device: torch.device, weights: str = ckpt.BEST) -> Run:
    """Build the run's model from its config and load its weights (the best, by default)."""
    path = Path(path)
    if not path.is_dir():
        raise UserError(
            f"The run directory {path} does not exist; give a directory a training run wrote (under runs/)."
        )
    info = ckpt.read_json(path / ckpt.CONFIG, "run config")
    tokenizer_path = path / ckpt.TOKENIZER
    if not tokenizer_path.is_file():
        raise UserError(f"{tokenizer_path} is missing, so {path} is not a complete run directory.")
    tokenizer = Tokenizer.from_json(tokenizer_path.read_text(encoding="utf-8"))
    model = build_model(info["config"], len(tokenizer), info.get("dtype"), device)
    tensors, _ = ckpt.load_tensors(path / weights)
    ckpt.load_weights(model, tensors, path / weights)
    return Run(path, info, tokenizer, model)


def build_model(config: dict[str, Any], vocab_size: int, dtype: str | None, device: torch.device) -> LanguageModel:
    """The model a config describes, in float64 when the run trains in it (else float32), on `device`."""
    model = LanguageModel(config, vocab_size)
    if dtype == "float64":
        model.to(torch.float64)
    return model.to(device)


def command(body: Callable[[], int | None]) -> int:
    """Run a command line's body: warnings and UserErrors as one line on stderr, exit code 2
    for a UserError, else what the body returns (0 by default)."""
    one_line_warnings()
    try:
        return body() or 0
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


def one_line_warnings() -> None:
    """Show warnings as one line on stderr, as the command lines' errors are."""

    def show(message: Any, category: Any, filename: str, lineno: int, file: Any = None, line: Any = None) -> None:
        print(f"warning: {message}", file=sys.stderr)

    warnings.showwarning = show
