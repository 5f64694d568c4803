"""Sizes that cannot fit: an allocation that fails, turned into a UserError that says what
to make smaller, and the machine's memory, which what grows slowly (a stack's repeated
layers, a generated text) is checked against before it starts."""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator

import torch

from .errors import UserError

A_MODULE = 1024  # bytes: about what a layer without weights takes (a Python object and its dicts)


@contextlib.contextmanager
def fits(what: str, change: str) -> Iterator[None]:
    """Run the body; an allocation too large for the machine (or for torch's 64-bit sizes)
    becomes a UserError: '{what} needs more memory than there is (...); {change}.'"""
    try:
        yield
    except (RuntimeError, MemoryError, TypeError, ValueError) as err:
        if not too_large(err):
            raise
        raise UserError(f"{what} needs more memory than there is ({_asked(err)}); {change}.") from None


def too_large(err: BaseException) -> bool:
    """Whether an exception says that an allocation failed or a size overflowed."""
    if isinstance(err, (MemoryError, torch.OutOfMemoryError)):
        return True
    text = str(err)
    if isinstance(err, RuntimeError):
        return any(s in text for s in ("can't allocate memory", "out of memory", "Storage size calculation overflowed"))
    return "Overflow when unpacking long" in text  # a size beyond 64 bits, as torch reads its arguments


def _asked(err: BaseException) -> str:
    asked = re.search(r"allocate (\d+) bytes", str(err))
    if asked:
        return f"it asked for {gigabytes(int(asked.group(1)))}"
    asked = re.search(r"[Tt]ried to allocate ([\d.]+ \w+)", str(err))
    return f"it asked for {asked.group(1)}" if asked else "a size beyond any machine's"


def check_room(need: int, what: str, change: str) -> None:
    """Refuse, before it starts, what would need more than this machine's memory (`need`
    bytes): something that grows slowly (copies of a layer, tokens of a text) would fill
    the memory rather than fail."""
    have = physical()
    if have is not None and need > have:
        raise UserError(f"{what} would need {gigabytes(need)}, more than this machine's {gigabytes(have)}; {change}.")


def gigabytes(n: float) -> str:
    return f"{n / 2**30:,.1f} GiB"


def physical() -> int | None:
    """This machine's memory in bytes (None where the system does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # (Windows has no sysconf)
        return None
