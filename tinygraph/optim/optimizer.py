"""Optimizers with torch.optim's names, arguments and update formulas.

An update is not autograd: it runs on the parameters' `.data` with torch's foreach
kernels (one kernel per step for all tensors, not one per parameter), and Adam and AdamW
with torch's fused kernel where it serves (one pass over each tensor instead of a dozen).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from ..tensor import Tensor


class Optimizer:
    """Holds parameter groups (dicts of params and hyperparameters) and per-parameter state.

    A group's `lr` may be a 0-dim tensor instead of a number: a compiled training step
    then reads it without recompiling when a schedule changes it.
    """

    def __init__(self, params: Iterable[Any], defaults: dict[str, Any]):
        self.defaults = defaults
        groups = list(params)
        if not groups:
            raise ValueError("The optimizer got an empty parameter list; pass model.parameters().")
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        self.param_groups: list[dict[str, Any]] = []
        for group in groups:
            params = list(group["params"])
            for p in params:
                if not isinstance(p, Tensor) or not p.requires_grad:
                    raise ValueError("Optimizers take tinygraph Tensors that require grad (a model's parameters()).")
            self.param_groups.append({**defaults, **group, "params": params})
        self.state: dict[Tensor, dict[str, Any]] = {}
        self._create_state()

    def _create_state(self) -> None:
        """Create the per-parameter state that must exist before the first step (none here)."""

    def zero_grad(self, set_to_none: bool = True) -> None:
        for group in self.param_groups:
            for p in group["params"]:
                if set_to_none:
                    p.grad = None
                elif p.grad is not None:
                    p.grad.data.zero_()

    def _with_grads(self, group: dict[str, Any]) -> list[Tensor]:
        return [p for p in group["params"] if p.grad is not None]

    def step(self) -> None:
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        """{'state': {index: {name: value}}, 'param_groups': [...]}, as torch's, parameters by index."""
        index = {p: i for i, p in enumerate(p for g in self.param_groups for p in g["params"])}
        groups = [
            {**{k: v for k, v in g.items() if k != "params"}, "params": [index[p] for p in g["params"]]}
            for g in self.param_groups
        ]
        return {"state": {index[p]: dict(s) for p, s in self.state.items()}, "param_groups": groups}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore what `state_dict()` gave, checking that the groups have the same sizes."""
        groups = state_dict["param_groups"]
        if [len(g["params"]) for g in groups] != [len(g["params"]) for g in self.param_groups]:
            raise ValueError(
                "The optimizer state does not fit these parameter groups (their sizes differ); "
                "it was saved for another model."
            )
        params = [p for g in self.param_groups for p in g["params"]]
        self.state = {}
        for i, s in state_dict["state"].items():
            p = params[int(i)]
            # copies, as torch makes: the source optimizer may keep updating its own tensors
            self.state[p] = {k: v.to(p.device, copy=True) if isinstance(v, torch.Tensor) else v for k, v in s.items()}
            for k, v in self.state[p].items():
                if isinstance(v, torch.Tensor) and v.shape not in (p.shape, torch.Size()):
                    raise ValueError(
                        f"Optimizer state {k} of parameter {i} has shape {tuple(v.shape)}, not {tuple(p.shape)}."
                    )
        for group, saved in zip(self.param_groups, groups):
            group.update({k: v for k, v in saved.items() if k != "params"})
        self._create_state()  # for parameters the saved state has none for


class SGD(Optimizer):
    """Stochastic gradient descent with optional momentum (torch's form), Nesterov and L2 decay."""

    def __init__(self, params: Iterable[Any], lr: float = 1e-3, momentum: float = 0.0, dampening: float = 0.0,
                 weight_decay: float = 0.0, nesterov: bool = False):  # fmt: skip
        _check(lr=lr, momentum=momentum, weight_decay=weight_decay)
        super().__init__(
            params, dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay, nesterov=nesterov)
        )

    def step(self) -> None:
        for group in self.param_groups:
            params = self._with_grads(group)
            if not params:
                continue
            grads = [p.grad.data for p in params]
            if group["weight_decay"]:
                grads = torch._foreach_add(grads, [p.data for p in params], alpha=group["weight_decay"])
            if group["momentum"]:
                bufs = []
                for p, g in zip(params, grads):
                    state = self.state.setdefault(p, {})
                    if "momentum_buffer" not in state:
                        state["momentum_buffer"] = g.clone()
                    else:
                        state["momentum_buffer"].mul_(group["momentum"]).add_(g, alpha=1 - group["dampening"])
                    bufs.append(state["momentum_buffer"])
                grads = torch._foreach_add(grads, bufs, alpha=group["momentum"]) if group["nesterov"] else bufs
            torch._foreach_sub_([p.data for p in params], torch._foreach_mul(grads, group["lr"]))


class Adam(Optimizer):
    """Adam with bias correction. `weight_decay` is L2 (added to the grad); see AdamW."""

    decoupled = False

    def __init__(self, params: Iterable[Any], lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0):  # fmt: skip
        _check(lr=lr, eps=eps, weight_decay=weight_decay, beta1=betas[0], beta2=betas[1])
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay))

    def step(self) -> None:
        for group in self.param_groups:
            params = self._with_grads(group)
            if not params:
                continue
            lr, (beta1, beta2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
            data = [p.data for p in params]
            grads = [p.grad.data for p in params]
            states = [self._state(p) for p in params]
            m, v = [s["exp_avg"] for s in states], [s["exp_avg_sq"] for s in states]
            steps = [s["step"] for s in states]
            if _one_pass(data, grads):  # torch's fused Adam: every tensor read and written once
                torch._foreach_add_(steps, 1)
                update = torch._fused_adamw_ if self.decoupled else torch._fused_adam_
                grads = [g.contiguous() for g in grads]  # it walks each grad in its parameter's layout
                update(data, grads, m, v, [], steps, lr=lr, beta1=beta1, beta2=beta2, weight_decay=wd, eps=eps,
                       amsgrad=False, maximize=False)  # fmt: skip
                continue
            if wd and self.decoupled:
                torch._foreach_mul_(data, 1 - lr * wd)
            elif wd:
                grads = torch._foreach_add(grads, data, alpha=wd)
            torch._foreach_lerp_(m, grads, 1 - beta1)
            torch._foreach_mul_(v, beta2)
            torch._foreach_addcmul_(v, grads, grads, value=1 - beta2)
            # Step counts are 0-dim tensors and the bias corrections tensor ops: no Python number
            # comes back from the device, so the update compiles and can be captured in a CUDA graph.
            # The corrections are in the parameter's precision (float32 at least), as torch's: a
            # compiled update evaluates them beside every vector of elements, where float64 powers
            # made it 40% slower than torch.compile's
            torch._foreach_add_(steps, 1)
            counts = [t.to(torch.promote_types(d.dtype, torch.float32)) for t, d in zip(steps, data)]
            correction2 = torch._foreach_pow(beta2, counts)  # then sqrt(1 - beta2^t)
            torch._foreach_neg_(correction2)
            torch._foreach_add_(correction2, 1)
            torch._foreach_sqrt_(correction2)
            step_size = torch._foreach_pow(beta1, counts)  # then -lr / (1 - beta1^t)
            torch._foreach_sub_(step_size, 1)
            torch._foreach_reciprocal_(step_size)
            torch._foreach_mul_(step_size, lr)
            denom = torch._foreach_sqrt(v)
            torch._foreach_div_(denom, correction2)
            torch._foreach_add_(denom, eps)
            torch._foreach_div_(denom, step_size)
            torch._foreach_addcdiv_(data, m, denom)  # p -= lr / (1 - beta1^t) * m / denom

    def _create_state(self) -> None:
        # torch creates the moments at the first step; here they exist from the start, so that
        # a compiled step is traced once: state created inside it changes what the trace
        # depends on, and the second step would compile the whole step again (twice the
        # compile time, and ~30 MB more peak memory for the baby model)
        for group in self.param_groups:
            for p in group["params"]:
                self._state(p)

    def _state(self, p: Tensor) -> dict[str, Any]:
        state = self.state.get(p)
        if state is None:
            state = self.state[p] = {
                "step": torch.zeros((), dtype=torch.float64, device=p.device),
                "exp_avg": torch.zeros_like(p.data),
                "exp_avg_sq": torch.zeros_like(p.data),
            }
        elif state["exp_avg"].dtype != p.data.dtype or state["exp_avg"].device != p.data.device:
            # the parameter was cast or moved since (model.to(...) after the optimizer was built):
            # its moments follow it, as they would have been made had the first step come first
            state.update(
                step=state["step"].to(p.data.device),
                exp_avg=state["exp_avg"].to(p.data),
                exp_avg_sq=state["exp_avg_sq"].to(p.data),
            )
        return state


class AdamW(Adam):
    """Adam with decoupled weight decay: p -= lr * wd * p, apart from the Adam update.

    Give it parameter groups to keep biases, norms and other 1-D weights undecayed:
    `AdamW([{'params': matrices, 'weight_decay': 0.1}, {'params': vectors, 'weight_decay': 0.0}])`.
    """

    decoupled = True

    def __init__(self, params: Iterable[Any], lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 1e-2):  # fmt: skip
        super().__init__(params, lr, betas, eps, weight_decay)


def _one_pass(data: list[torch.Tensor], grads: list[torch.Tensor]) -> bool:
    """Whether torch's fused Adam kernel serves: eager (a compiled step fuses the foreach
    formula itself), CPU tensors (its CUDA kernel wants float32 step counts, and is
    untested here), contiguous parameters, and grads of their parameter's dtype. Its update
    is the foreach formula's, to float rounding."""
    return (
        not torch.compiler.is_compiling()
        and all(t.device.type == "cpu" and t.is_contiguous() for t in data)
        and all(p.dtype == g.dtype and p.dtype.is_floating_point for p, g in zip(data, grads))
    )


def _check(**values: float) -> None:
    for name, value in values.items():
        if value < 0 or (name.startswith("beta") and value >= 1):
            allowed = "in [0, 1)" if name.startswith("beta") else "at least 0"
            raise ValueError(f"Optimizer {name} must be {allowed}, not {value}.")
