"""Gradient flow during training: how large each module's grads are, and how much each
update moves its weights, measured on the step before each evaluation and drawn as a
heat map of modules by steps (grad_flow.png), where an exploding or a dying layer shows
at a glance.

A module here is one that owns parameters (`layers.3.attn.qkv`, `layers.3.ln1`); a weight
shared by two modules (a tied output layer) counts in the first. The grad norms are the
raw ones, before clipping scales them all alike; the update-to-weight ratio is
|w_after - w_before| / |w_before| per module (about 1e-3 is the usual healthy figure). Only
the measured steps do any of this: every other step runs as if it did not exist.
"""

from __future__ import annotations

import io
import math
from collections import defaultdict
from typing import Any

import torch

from tinygraph import nn


def modules(model: nn.Module) -> dict[str, list[torch.Tensor]]:
    """Each module that owns parameters, by path, with their tensors, in model order."""
    owned: dict[str, list[torch.Tensor]] = defaultdict(list)
    for name, p in model.named_parameters():
        owned[name.rpartition(".")[0] or "(model)"].append(p)
    return dict(owned)


def _norm(tensors: list[torch.Tensor]) -> float:
    return math.sqrt(sum(float(torch.linalg.vector_norm(t.float()) ** 2) for t in tensors))


class Probe:
    """Taken between a step's backward (and clipping) and its update: notes the grads'
    norms and the weights; `after_update()` gives both measures, by module."""

    def __init__(self, model: nn.Module, raw_norm: float):
        self.groups = modules(model)
        grads = {path: _norm([p.grad.data for p in ps if p.grad is not None]) for path, ps in self.groups.items()}
        clipped = math.sqrt(sum(g * g for g in grads.values()))
        unclip = raw_norm / clipped if clipped > 0 else 1.0  # clipping scales every grad by the same factor
        self.grad_norms = {path: g * unclip for path, g in grads.items()}
        self.before = {path: [p.data.clone() for p in ps] for path, ps in self.groups.items()}

    def after_update(self) -> dict[str, dict[str, float]]:
        ratios = {}
        for path, params in self.groups.items():
            moved = _norm([p.data - old for p, old in zip(params, self.before[path])])
            ratios[path] = moved / max(_norm(self.before[path]), 1e-30)
        return {"grad_norms": self.grad_norms, "update_ratios": ratios}


def heat_map(records: list[dict[str, Any]], title: str, kinds: dict[str, str] | None = None) -> bytes | None:
    """grad_flow.png from the evaluations' records (None before any has the measures):
    the grad norm and the update-to-weight ratio of every module at every measured step;
    `kinds` names each module's class beside its path."""
    measured = [r for r in records if r.get("grad_norms")]
    if not measured:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = list(measured[-1]["grad_norms"])
    steps = [r["step"] for r in measured]
    fig, axes = plt.subplots(1, 2, figsize=(12, 1.2 + 0.22 * len(paths)), sharey=True)
    for ax, key, label in zip(axes, ("grad_norms", "update_ratios"), ("grad norm", "update / weight")):
        values = torch.tensor([[r[key].get(p, math.nan) for r in measured] for p in paths], dtype=torch.float64)
        image = ax.imshow(
            values.clamp_min(1e-30).log10().numpy(), aspect="auto", cmap="viridis", interpolation="nearest"
        )
        ax.set_xticks(range(len(steps)), [str(s) for s in steps], rotation=90 if len(steps) > 12 else 0, fontsize=8)
        ax.set_xlabel("step")
        ax.set_title(f"log10 {label}")
        fig.colorbar(image, ax=ax, fraction=0.04, pad=0.02)
    labels = [f"{path} ({kinds[path]})" if kinds and path in kinds else path for path in paths]
    axes[0].set_yticks(range(len(paths)), labels, fontsize=8)
    fig.suptitle(f"{title}: gradient flow per module")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()
