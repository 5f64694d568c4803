"""Learning-rate schedules: warmup then cosine decay (nanoGPT's), and reduce-on-plateau
(the seed project's: multiply by a factor when validation loss stops improving)."""

from __future__ import annotations

import math
from typing import Any

import torch

from .optimizer import Optimizer


def set_lr(group: dict[str, Any], value: float) -> None:
    """Set a group's lr; a tensor lr (as a compiled step needs) is filled in place."""
    if isinstance(group["lr"], torch.Tensor):
        group["lr"].fill_(value)
    else:
        group["lr"] = value


def warmup_cosine(step: int, warmup_iters: int, decay_iters: int, min_ratio: float) -> float:
    """The fraction of the base learning rate at `step`: linear warmup from 0 over
    `warmup_iters`, cosine down to `min_ratio` at `decay_iters`, flat after."""
    if step < warmup_iters:
        return (step + 1) / (warmup_iters + 1)
    if step >= decay_iters:
        return min_ratio
    progress = (step - warmup_iters) / max(1, decay_iters - warmup_iters)
    return min_ratio + 0.5 * (1 + math.cos(math.pi * progress)) * (1 - min_ratio)


class WarmupCosineLR:
    """Set each group's lr to base_lr * warmup_cosine(step) * scale at every `step()`.

    `scale` starts at 1; a ReduceLROnPlateau given this schedule lowers it.
    """

    def __init__(self, optimizer: Optimizer, warmup_iters: int, decay_iters: int, min_lr: float):
        self.optimizer = optimizer
        self.warmup_iters, self.decay_iters = warmup_iters, decay_iters
        self.base_lrs = [float(g.setdefault("initial_lr", float(g["lr"]))) for g in optimizer.param_groups]
        self.min_ratio = min_lr / self.base_lrs[0] if self.base_lrs[0] else 0.0
        self.last_step, self.scale = 0, 1.0
        self._apply()

    def _apply(self) -> None:
        factor = warmup_cosine(self.last_step, self.warmup_iters, self.decay_iters, self.min_ratio) * self.scale
        for group, base in zip(self.optimizer.param_groups, self.base_lrs):
            set_lr(group, base * factor)

    def step(self) -> None:
        self.last_step += 1
        self._apply()

    def get_last_lr(self) -> list[float]:
        return [float(g["lr"]) for g in self.optimizer.param_groups]

    def state_dict(self) -> dict[str, Any]:
        return {"last_step": self.last_step, "scale": self.scale, "base_lrs": self.base_lrs}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.last_step, self.scale, self.base_lrs = state["last_step"], state["scale"], list(state["base_lrs"])
        self._apply()


class ReduceLROnPlateau:
    """Multiply the learning rate by `factor` once the metric has not improved (by more
    than `threshold`, relatively) for `patience` evaluations in a row.

    With `schedule` it lowers that schedule's scale; otherwise the groups' lr directly.
    """

    def __init__(self, optimizer: Optimizer, mode: str = "min", factor: float = 0.1, patience: int = 10,
                 threshold: float = 1e-4, min_lr: float = 0.0, schedule: WarmupCosineLR | None = None):  # fmt: skip
        if not 0 < factor < 1:
            raise ValueError(f"ReduceLROnPlateau factor must be between 0 and 1, not {factor}.")
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', not {mode!r}.")
        self.optimizer, self.mode, self.factor, self.patience = optimizer, mode, factor, patience
        self.threshold, self.min_lr, self.schedule = threshold, min_lr, schedule
        self.best: float | None = None
        self.num_bad_epochs = 0

    def _improves(self, metric: float) -> bool:
        if self.best is None:
            return True
        if self.mode == "min":
            return metric < self.best * (1 - self.threshold)
        return metric > self.best * (1 + self.threshold)

    def step(self, metric: float) -> bool:
        """Record one evaluation; return True when it lowered the learning rate."""
        if self._improves(metric):
            self.best, self.num_bad_epochs = metric, 0
            return False
        self.num_bad_epochs += 1
        if self.num_bad_epochs <= self.patience:
            return False
        self.num_bad_epochs = 0
        if self.schedule is not None:
            self.schedule.scale *= self.factor
            self.schedule._apply()
        else:
            for group in self.optimizer.param_groups:
                set_lr(group, max(float(group["lr"]) * self.factor, self.min_lr))
        return True

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "num_bad_epochs": self.num_bad_epochs}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.num_bad_epochs = state["best"], state["num_bad_epochs"]
