"""What the command lines share: their name, choosing a device, one-line errors and warnings."""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from .errors import UserError


def program(module: str) -> str:
    """The command's name in its usage line: the console command it was started as
    (tinygraph-train, pyproject.toml's [project.scripts]), else `python -m module`."""
    name = Path(sys.argv[0]).stem
    return name if name.startswith("tinygraph-") else f"python -m {module}"


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
