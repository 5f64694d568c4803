"""Switches that say whether ops are recorded, and whether backward hunts for NaN/Inf.

Every switch is per thread, as torch's are: a thread starts with recording on, and
`no_grad()` in one thread does not stop another from recording. The state is a plain
object held by a `threading.local`, so torch.compile guards on its fields (it reads
`local.state.enabled` in the calling thread) and recompiles when they change.
"""

from __future__ import annotations

import contextlib
import copy
import threading
from typing import Any

import torch


class _State:
    """One thread's switches."""

    def __init__(self) -> None:
        self.enabled = True  # record ops on the tape
        self.inference = False  # inside inference_mode()
        self.anomaly = False  # keep forward stacks and check every backward grad for NaN/Inf
        self.anomaly_forward = False  # ... and every op's output (detect_anomaly(check_forward=True))
        self.observer: Any = None  # something watching ops, modules and backward (tinygraph.viz.Trace)
        self.autocast: torch.dtype | None = None  # the low-precision dtype of matrix products in autocast
        self.autocast_device = ""  # the device type autocast applies to
        self.composites = False  # fused ops run their composite instead (tinygraph.testing)


class _Local(threading.local):
    def __init__(self) -> None:
        self.state = _State()


local = _Local()


def is_grad_enabled() -> bool:
    """True when ops are being recorded for backward (in this thread)."""
    return local.state.enabled


def is_inference_mode_enabled() -> bool:
    return local.state.inference


class _Switch(contextlib.ContextDecorator):
    """Set some fields of this thread's state for a block (`with`) or a function (decorator)."""

    def values(self) -> dict[str, Any]:
        raise NotImplementedError

    def _recreate_cm(self) -> _Switch:
        # as a decorator, each call gets its own copy: calls in several threads don't share state
        fresh = copy.copy(self)
        fresh.__dict__.pop("saved", None)
        return fresh

    def __enter__(self) -> None:
        state = local.state
        new = self.values()
        self.__dict__.setdefault("saved", []).append({k: getattr(state, k) for k in new})
        for k, v in new.items():
            setattr(state, k, v)

    def __exit__(self, *exc: object) -> None:
        state = local.state
        for k, v in self.saved.pop().items():
            setattr(state, k, v)


class no_grad(_Switch):
    """Record nothing inside: for evaluation, sampling and optimizer updates."""

    def values(self) -> dict[str, Any]:
        return {"enabled": False}


class enable_grad(_Switch):
    """Record ops again inside a `no_grad` region."""

    def values(self) -> dict[str, Any]:
        return {"enabled": True}


class inference_mode(_Switch):
    """Like `no_grad` (nothing is recorded), for code that only evaluates; `mode=False` does nothing."""

    def __init__(self, mode: bool = True) -> None:
        self.mode = mode

    def values(self) -> dict[str, Any]:
        return {"enabled": False, "inference": True} if self.mode else {}


class set_grad_enabled(_Switch):
    """Turn recording on or off. Called as a plain function it switches at once, as
    torch's does (`tg.set_grad_enabled(False)`); as a context manager or decorator it
    switches for the block and then restores the previous mode."""

    def __init__(self, mode: bool) -> None:
        self.mode = bool(mode)
        self.prev = local.state.enabled
        local.state.enabled = self.mode

    def __call__(self, fn: Any) -> Any:
        local.state.enabled = self.prev  # as a decorator: switch only while fn runs
        return super().__call__(fn)

    def values(self) -> dict[str, Any]:
        return {"enabled": self.mode}

    def __exit__(self, *exc: object) -> None:
        super().__exit__(*exc)
        local.state.enabled = self.prev


class detect_anomaly(_Switch):
    """Make backward stop at the first op whose grad holds NaN or Inf.

    The error names the op and shows where in your code its forward was called. With
    `check_forward=True` the forward stops too, at the first op that makes NaN or Inf out
    of finite inputs (off by default: masking with -inf is a legitimate forward). It
    costs a stack capture per op and a check per tensor, so use it to debug, not to train.
    """

    def __init__(self, check_forward: bool = False) -> None:
        self.check_forward = check_forward

    def values(self) -> dict[str, Any]:
        return {"anomaly": True, "anomaly_forward": self.check_forward}


class autocast(_Switch):
    """Mixed precision, with torch.autocast's arguments: inside, matrix products (linear,
    matmul, attention) on `device_type` run in `dtype` (torch's default for that device
    type: bfloat16 on the CPU, float16 on CUDA) while layer norm, softmax and
    cross-entropy run in float32.

    Parameters stay float32 (the master weights); the casts are recorded ops, so grads
    come back to each parameter in its own dtype. Like torch.autocast, for the forward
    pass: run backward outside it.
    """

    def __init__(self, device_type: str, dtype: torch.dtype | None = None, enabled: bool = True) -> None:
        if not isinstance(device_type, str):
            raise TypeError(
                f"autocast takes the device type first, as torch.autocast does, not {device_type!r}: "
                "write tinygraph.autocast('cuda', dtype=torch.bfloat16)."
            )
        self.device_type = torch.device(device_type).type
        self.dtype = dtype or torch.get_autocast_dtype(self.device_type)
        self.enabled = enabled

    def values(self) -> dict[str, Any]:
        if not self.enabled:
            return {"autocast": None}
        return {"autocast": self.dtype, "autocast_device": self.device_type}
