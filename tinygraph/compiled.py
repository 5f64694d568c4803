"""A fused op's formula as one kernel: `torch.compile` of that one function, once per
shape and dtype.

Run eagerly, a hand-written backward such as layer norm's is a dozen torch calls, each a
pass over memory; compiled, inductor fuses its elementwise steps and reductions into a
loop or two (on the CPU, C++ it writes and builds; on a GPU, Triton). `@compiled` wraps
such a formula, a pure function of torch.Tensors and plain values (which it specializes
on), and decides per call:

- compiled where it pays: on a device it is switched on for (`TINYGRAPH_COMPILE_OPS`: by
  default CUDA only; `=1` for the CPU too, `=0` for neither), the largest tensor argument at
  least `min_elements` big
  (a compiled call costs ~15 µs more than an eager one: tiny tensors lose), and among the
  first `max_shapes` shapes of the call (a new shape is a new compilation, seconds: the
  growing contexts of generation, say, must not start one per length);
- the formula itself everywhere else: inside a torch.compile already (the whole training
  step's: there the formula is traced inline), and for good once compiling it failed
  (no C++ compiler, say; a warning says so).

On the CPU it is opt-in: there it makes eager steps faster but costs the process about
200 MB of resident memory (dynamo and inductor, loaded and compiling), more than a small
model's whole training memory (docs/performance.md has the measurements).

The formula stays the reference: the tests run every wrapped formula both ways and check
the two against each other and against the op's composite.
"""

from __future__ import annotations

import functools
import os
import warnings
from collections.abc import Callable
from typing import Any

import torch

from .environment import OFF


def _devices(switch: str | None) -> tuple[str, ...]:
    if switch is None:
        return ("cuda",)
    return () if switch.lower() in OFF else ("cpu", "cuda")


class Settings:
    """When `@compiled` formulas run compiled (see the module docstring); change at will."""

    devices = _devices(os.environ.get("TINYGRAPH_COMPILE_OPS"))
    min_elements = 32768
    max_shapes = 8


settings = Settings()


def compiled(formula: Callable) -> Callable:
    """Decorator: run `formula` as one compiled kernel where that pays (module docstring).
    The plain formula stays reachable as `.formula`."""
    kernel = None
    shapes: set = set()
    failed = False

    @functools.wraps(formula)
    def run(*args: Any) -> Any:
        nonlocal kernel, failed
        if failed or torch.compiler.is_compiling():
            return formula(*args)
        tensors = [a for a in args if isinstance(a, torch.Tensor)]
        if not tensors or tensors[0].device.type not in settings.devices:
            return formula(*args)
        if max(t.numel() for t in tensors) < settings.min_elements:
            return formula(*args)
        key = tuple((a.shape, a.dtype, a.device) if isinstance(a, torch.Tensor) else a for a in args)
        if key not in shapes:
            if len(shapes) >= settings.max_shapes:
                return formula(*args)
            shapes.add(key)
        if kernel is None:
            kernel = torch.compile(formula, dynamic=False, fullgraph=True)
        try:
            return kernel(*args)
        except Exception as err:  # a compiler that fails: the formula decides whether it was the compiler's fault
            out = formula(*args)
            failed = True
            warnings.warn(
                f"tinygraph could not compile {formula.__qualname__} ({type(err).__name__}: {err}); it runs "
                "uncompiled from now on (slower, same results). Set TINYGRAPH_COMPILE_OPS=0 to skip compiling.",
                stacklevel=2,
            )
            return out

    run.formula = formula
    return run
