"""Switches that say whether ops are recorded, and whether backward hunts for NaN/Inf."""

from __future__ import annotations

import contextlib
from typing import Any

import torch


class _State:
    enabled = True  # record ops on the tape
    anomaly = False  # keep forward stacks and check every backward grad for NaN/Inf
    anomaly_forward = False  # ... and every op's output (detect_anomaly(check_forward=True))
    observer = None  # something watching ops, modules and backward (tinygraph.viz.Trace)
    autocast = None  # the low-precision dtype of matrix products inside tinygraph.autocast


state = _State()


def is_grad_enabled() -> bool:
    """True when ops are being recorded for backward."""
    return state.enabled


class set_grad_enabled(contextlib.ContextDecorator):
    """Turn recording on or off for a block or a function (`with` or as a decorator)."""

    def __init__(self, mode: bool):
        self.mode = bool(mode)
        self.prev: list[bool] = []

    def __enter__(self) -> None:
        self.prev.append(state.enabled)
        state.enabled = self.mode

    def __exit__(self, *exc: object) -> None:
        state.enabled = self.prev.pop()


class no_grad(set_grad_enabled):
    """Record nothing inside: for evaluation, sampling and optimizer updates."""

    def __init__(self) -> None:
        super().__init__(False)


class enable_grad(set_grad_enabled):
    """Record ops again inside a `no_grad` region."""

    def __init__(self) -> None:
        super().__init__(True)


class detect_anomaly(contextlib.ContextDecorator):
    """Make backward stop at the first op whose grad holds NaN or Inf.

    The error names the op and shows where in your code its forward was called. With
    `check_forward=True` the forward stops too, at the first op that makes NaN or Inf out
    of finite inputs (off by default: masking with -inf is a legitimate forward). It
    costs a stack capture per op and a check per tensor, so use it to debug, not to train.
    """

    def __init__(self, check_forward: bool = False) -> None:
        self.check_forward = check_forward
        self.prev: list[tuple[bool, bool]] = []

    def __enter__(self) -> None:
        self.prev.append((state.anomaly, state.anomaly_forward))
        state.anomaly, state.anomaly_forward = True, self.check_forward

    def __exit__(self, *exc: object) -> None:
        state.anomaly, state.anomaly_forward = self.prev.pop()


class autocast(contextlib.ContextDecorator):
    """Mixed precision: inside, matrix products (linear, matmul, attention) run in `dtype`
    (bfloat16 by default) while layer norm, softmax and cross-entropy run in float32.

    Parameters stay float32 (the master weights); the casts are recorded ops, so grads
    come back to each parameter in its own dtype. Like torch.autocast, for the forward
    pass: run backward outside it.
    """

    def __init__(self, dtype: Any = None, enabled: bool = True):
        self.dtype = (dtype or torch.bfloat16) if enabled else None
        self.prev: list[Any] = []

    def __enter__(self) -> None:
        self.prev.append(state.autocast)
        state.autocast = self.dtype

    def __exit__(self, *exc: object) -> None:
        state.autocast = self.prev.pop()
