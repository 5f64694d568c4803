"""Hand-written Triton kernels for the fused ops, on CUDA tensors.

One module per kernel family, each a pair of plain functions on torch.Tensors: a forward
that returns the output and what its backward needs, and a backward from those. Nothing
here records a graph or touches torch.autograd: a tinygraph op calls the forward from its
own forward and the backward from its own backward, and keeps its torch formula as the
reference and as the path for every other device and dtype.

    layer_norm      layer_norm_forward, layer_norm_backward
    gelu            gelu_forward, gelu_backward (exact or tanh; an optional fused bias)
    cross_entropy   cross_entropy_forward, cross_entropy_backward
    attention       attention_forward, attention_backward (flash attention)

The fused ops of tinygraph.ops run these kernels on CUDA tensors when `use(*tensors)` says
so: switched on (`TINYGRAPH_TRITON`, default on; `=0` keeps every op on its torch formula),
not inside a torch.compile (whose inductor writes its own kernels from the formulas), and
`available` for these tensors. Each op checks what its kernel does not cover (dropout,
class weights, a mask that needs a grad...) and takes its torch formula there.

Importing this package does not import triton (seconds, and absent from most CPU set-ups);
importing one of those modules does (`module(name)`), so ask `use` or `available` first.

Triton's interpreter runs the same kernels on CPU tensors (`TRITON_INTERPRET=1`), which is
how the tests check them without a GPU. The variable must be set before triton's first
import (triton decorates its own library then), before a kernel module's import (as
@triton.jit reads it too) and while kernels launch. Under the interpreter the modules pick
the smallest blocks, so that a test's small shapes cross block boundaries, and run matrix
products in float32 (its bfloat16 tl.dot multiplies bit patterns). What the interpreter
does not run, Triton's compiler, tools/compile_kernels.py runs for a GPU target, without one.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import os
from types import ModuleType

import torch

from ..environment import switched_off

DTYPES = (torch.float32, torch.float16, torch.bfloat16)


class Settings:
    """When the fused ops run their Triton kernels; change at will. `on_cpu` lets them run
    on CPU tensors too, under TRITON_INTERPRET=1: the tests' way to drive the ops' kernel
    path without a GPU (slow: the interpreter runs each program in Python)."""

    enabled = not switched_off("TINYGRAPH_TRITON")
    on_cpu = False


settings = Settings()


def use(*tensors: torch.Tensor | None) -> bool:
    """Whether a fused op should run its kernel on these tensors (see the module docstring)."""
    first = next((t for t in tensors if t is not None), None)
    if first is None or (first.device.type == "cpu" and not settings.on_cpu):  # (the common case first)
        return False
    if not settings.enabled or torch.compiler.is_compiling():
        return False
    return available(*tensors)


def module(name: str) -> ModuleType:
    """The kernel module `name` (layer_norm, gelu, cross_entropy, attention), imported once."""
    return importlib.import_module(f"{__name__}.{name}")


def interpreted() -> bool:
    """Whether TRITON_INTERPRET asks for Triton's interpreter (read as triton reads it)."""
    return os.environ.get("TRITON_INTERPRET", "").lower() in ("1", "true", "yes", "on", "y")


def on_interpreter(t: torch.Tensor) -> bool:
    """Whether a kernel launched on `t` runs under the interpreter: a CPU tensor does."""
    return t.device.type == "cpu"


@functools.cache
def _triton_installed() -> bool:
    return importlib.util.find_spec("triton") is not None


def available(*tensors: torch.Tensor | None) -> bool:
    """True when the kernels can run on these tensors: all on one CUDA device of compute
    capability 8.0 or more (Ampere on), or on the CPU under TRITON_INTERPRET=1; every
    floating one float32, float16 or bfloat16 (integer and bool tensors such as targets and
    masks pass); and triton installed. `None`s are skipped."""
    tensors = [t for t in tensors if t is not None]
    if not tensors:
        return False
    device = tensors[0].device
    return (
        ((device.type == "cuda" and _ampere_or_later(device)) or (device.type == "cpu" and interpreted()))
        and all(t.device == device for t in tensors)
        and all(t.dtype in DTYPES for t in tensors if t.is_floating_point())
        and _triton_installed()
    )


@functools.cache
def _ampere_or_later(device: torch.device) -> bool:
    return torch.cuda.get_device_capability(device) >= (8, 0)  # bfloat16 tensor cores, what the blocks assume


@functools.cache
def _multiprocessors(device: torch.device) -> int:
    return torch.cuda.get_device_properties(device).multi_processor_count


def programs(device: torch.device, blocks: int) -> int:
    """How many programs a kernel that strides over `blocks` row blocks launches: one per
    streaming multiprocessor on a GPU (fewer partial sums to add up afterwards); three on
    the CPU, so that the interpreter runs programs with more than one block each."""
    most = _multiprocessors(device) if device.type == "cuda" else 3
    return max(1, min(blocks, most))


def dot_precision(dtype: torch.dtype) -> str | None:
    """The input precision of `tl.dot` on float32 operands: TF32 only where torch's own
    matmuls use it (torch.backends.cuda.matmul.allow_tf32), IEEE float32 otherwise."""
    if dtype != torch.float32:
        return None  # half operands: tensor cores in their own precision, float32 sums
    return "tf32" if torch.backends.cuda.matmul.allow_tf32 else "ieee"
