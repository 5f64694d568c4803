"""Check hand-written grads against central finite differences, in float64.

`gradcheck` compares the whole Jacobian, row by row (each row is one backward with a
one-hot output grad), and also one vector-Jacobian product with a random output grad:
a backward that is wrong only for grads other than 0 and 1 (say it squares `g`) passes
one-hot rows but not that. `gradgradcheck` runs `gradcheck` on the backward itself.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from .autograd import grad
from .grad_mode import enable_grad
from .tensor import Tensor


class GradcheckError(RuntimeError):
    """Analytic and numeric grads disagree; the message lists the worst entries."""


def _outputs(result: Any) -> list[Tensor]:
    items = result if isinstance(result, (tuple, list)) else (result,)
    return [t for t in items if isinstance(t, Tensor) and t.is_floating_point()]


def _flat(tensors: Sequence[Any]) -> torch.Tensor:
    parts = [t.data.reshape(-1) if isinstance(t, Tensor) else t.reshape(-1) for t in tensors]
    return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.float64)


def _numeric_jacobian(fn: Callable, inputs: tuple, wrt: list[int], eps: float) -> torch.Tensor:
    """d outputs / d inputs by central differences: one column per input element."""
    columns = []
    with enable_grad():  # gradgradcheck's function calls grad() inside
        for i in wrt:
            flat = inputs[i].data.view(-1)
            for j in range(flat.numel()):
                orig = flat[j].item()
                flat[j] = orig + eps
                plus = _flat(_outputs(fn(*inputs)))
                flat[j] = orig - eps
                minus = _flat(_outputs(fn(*inputs)))
                flat[j] = orig
                columns.append((plus - minus) / (2 * eps))
    return torch.stack(columns, 1) if columns else torch.zeros(0, 0, dtype=torch.float64)


def _vjp(outputs: list[Tensor], inputs: tuple, wrt: list[int], v: torch.Tensor) -> torch.Tensor:
    """v^T J, analytically: one backward with output grad v."""
    live = [(o, chunk) for o, chunk in zip(outputs, v.split([o.numel() for o in outputs])) if o.requires_grad]
    if not live:
        return torch.zeros(sum(inputs[i].numel() for i in wrt), dtype=v.dtype, device=v.device)
    grads = grad(
        [o for o, _ in live],
        [inputs[i] for i in wrt],
        [chunk.reshape(o.shape) for o, chunk in live],
        retain_graph=True,
        allow_unused=True,
    )
    return _flat([g if g is not None else torch.zeros_like(inputs[i].data) for g, i in zip(grads, wrt)])


def _report(name: str, analytic: torch.Tensor, numeric: torch.Tensor, atol: float, rtol: float) -> str | None:
    bad = (analytic - numeric).abs() > atol + rtol * numeric.abs()
    if not bad.any():
        return None
    err = ((analytic - numeric).abs() * bad).reshape(-1)
    worst = err.topk(min(5, int(bad.sum()))).indices
    rows = [
        f"  {name}[{tuple(int(k) for k in torch.unravel_index(w, analytic.shape))}]: "
        f"analytic {analytic.reshape(-1)[w].item():.6g}, numeric {numeric.reshape(-1)[w].item():.6g}"
        for w in worst
    ]
    return f"{int(bad.sum())} of {bad.numel()} entries of the {name} differ; the worst:\n" + "\n".join(rows)


def gradcheck(
    fn: Callable[..., Any],
    inputs: Tensor | Sequence[Any],
    eps: float = 1e-6,
    atol: float = 1e-5,
    rtol: float = 1e-3,
    fast_mode: bool = False,
    seed: int = 0,
) -> bool:
    """Raise GradcheckError unless fn's analytic grads match finite differences.

    `inputs` are passed to `fn` as they are; the float64 Tensors among them that require
    grad are checked. `fast_mode` compares a single random projection u^T J v instead
    of the whole Jacobian (much cheaper for large inputs).
    """
    inputs = (inputs,) if isinstance(inputs, Tensor) else tuple(inputs)
    wrt = [i for i, x in enumerate(inputs) if isinstance(x, Tensor) and x.requires_grad]
    for i in wrt:
        if inputs[i].dtype != torch.float64:
            raise ValueError(f"gradcheck needs float64 inputs; input {i} is {inputs[i].dtype}. Use .double().")
        inputs[i].data = inputs[i].data.contiguous()
    with enable_grad():
        outputs = _outputs(fn(*inputs))
    n_out = sum(o.numel() for o in outputs)
    if not wrt or not n_out:
        return True  # nothing to differentiate
    gen = torch.Generator().manual_seed(seed)
    device = inputs[wrt[0]].device
    v = torch.randn(n_out, generator=gen, dtype=torch.float64).to(device)  # never all ones

    if fast_mode:
        u = torch.randn(sum(inputs[i].numel() for i in wrt), generator=gen, dtype=torch.float64).to(device)
        analytic = (_vjp(outputs, inputs, wrt, v) * u).sum()
        offsets = u.split([inputs[i].numel() for i in wrt])

        def along_u(sign: float) -> torch.Tensor:
            for i, du in zip(wrt, offsets):
                inputs[i].data.view(-1).add_(sign * eps * du)
            with enable_grad():
                value = (_flat(_outputs(fn(*inputs))) * v).sum()
            for i, du in zip(wrt, offsets):
                inputs[i].data.view(-1).sub_(sign * eps * du)
            return value

        numeric = (along_u(1.0) - along_u(-1.0)) / (2 * eps)
        problem = _report("projection u^T J v", analytic.reshape(1), numeric.reshape(1), atol, rtol)
    else:
        # analytic first: the finite differences change the inputs in place, which the
        # graph's saved tensors would (rightly) refuse afterwards
        one_hot = torch.eye(n_out, dtype=torch.float64, device=device)
        analytic = torch.stack([_vjp(outputs, inputs, wrt, one_hot[k]) for k in range(n_out)])
        vjp = _vjp(outputs, inputs, wrt, v)
        jacobian = _numeric_jacobian(fn, inputs, wrt, eps)
        problem = _report("Jacobian", analytic, jacobian.reshape(analytic.shape), atol, rtol) or _report(
            "vector-Jacobian product", vjp, v @ jacobian.reshape(analytic.shape), atol, rtol
        )
    if problem:
        raise GradcheckError(f"gradcheck failed for {getattr(fn, '__name__', fn)}: {problem}")
    return True


def gradgradcheck(
    fn: Callable[..., Any],
    inputs: Tensor | Sequence[Any],
    grad_outputs: Sequence[Tensor] | None = None,
    eps: float = 1e-6,
    atol: float = 1e-5,
    rtol: float = 1e-3,
    fast_mode: bool = False,
    seed: int = 0,
) -> bool:
    """Check second-order grads: gradcheck of (inputs, v) -> v^T J(inputs), built with
    create_graph=True. `grad_outputs` (v) are random unless given."""
    inputs = (inputs,) if isinstance(inputs, Tensor) else tuple(inputs)
    wrt = [i for i, x in enumerate(inputs) if isinstance(x, Tensor) and x.requires_grad]
    with enable_grad():
        outputs = [o for o in _outputs(fn(*inputs)) if o.requires_grad]
    if grad_outputs is None:
        gen = torch.Generator().manual_seed(seed + 1)
        grad_outputs = [
            Tensor(torch.randn(o.shape, generator=gen, dtype=torch.float64).to(o.device), requires_grad=True)
            for o in outputs
        ]
    n = len(inputs)

    def first_order(*args: Any) -> tuple[Tensor, ...]:
        outs = [o for o in _outputs(fn(*args[:n])) if o.requires_grad]
        grads = grad(outs, [args[i] for i in wrt], list(args[n:]), create_graph=True, allow_unused=True)
        return tuple(g if g is not None else Tensor(torch.zeros_like(args[i].data)) for g, i in zip(grads, wrt))

    first_order.__name__ = f"backward of {getattr(fn, '__name__', fn)}"
    return gradcheck(first_order, (*inputs, *grad_outputs), eps, atol, rtol, fast_mode, seed)
