"""Faster CPU kernels for formulas, on float32 tensors: hand-written C kernels for the fused
ops' backward formulas, for attention's and cross-entropy's forwards and for the linear layer's
matrix products.

Run eagerly, a fused op's backward formula (GELU's, layer norm's, attention's) is a chain of torch
calls, each a pass over memory, most of them allocating. Here the same formula is one C
loop over the data (the math is at the top of each .c file, next to the loop), built with
the machine's C compiler and called through ctypes: no torch headers, no compiler in the
process, nothing resident beyond a small shared library.

    gelu.c / gelu.py               the backward of GELU, exact and tanh
    layer_norm.c / layer_norm.py   the backward of layer norm (gx, gw, gb; gx with a waiting grad added)
    attention.c / attention.py     attention, one head at a time: the forward (and each row's
                                   logsumexp), the backward (gq, gk, gv)
    cross_entropy.c / .py          cross-entropy, forward (each row's logsumexp kept) and backward
    matmul.c / matmul.py           the linear layer's products: forward, and both grads in one call
    common.h                       what the kernels share: e^x, and splitting a loop among threads
    build.py                       compiling and caching the library

A formula takes its kernel with `@preferred(kernel)`: the kernel, a Python function of the
formula's own arguments, runs where it covers the call and returns NotImplemented where it
does not (another device or dtype, inside a torch.compile, switched off, no compiler), and
the formula runs instead. The formula stays the reference: the tests check each kernel
against it, and the op against its composite, both ways. Inside a torch.compile, whose tracer
cannot follow a ctypes call, the matrix products and attention reach their kernels through
operators (`@operator`: tinygraph::matmul, tinygraph::attention_*) that compiled code calls.

Building: the first covered call compiles every .c file here into one shared library with
the machine's C compiler, in about a third of a second, cached for later processes
(build.py says where and how). Where that fails (no compiler, say) a warning says so once
and the formulas run. `TINYGRAPH_NATIVE=0` switches the kernels off.

Threads: torch's count (`torch.get_num_threads()`), fewer for small elementwise tensors, through the
OpenMP runtime torch has loaded (single-threaded where the library could not join it).
"""

from __future__ import annotations

import ctypes
import functools
import subprocess
import warnings
from collections.abc import Callable
from typing import Any

import torch

from ..environment import switched_off
from . import build


class Settings:
    """When the kernels here run (see the module docstring); change at will."""

    enabled = not switched_off("TINYGRAPH_NATIVE")
    elements_per_thread = 16384  # below this many elements a thread costs more than it saves
    # below this many multiply-adds torch's product (MKL's) is the faster, call for call (matmul.py)
    matmul_products = 2**23


settings = Settings()


def preferred(kernel: Callable) -> Callable:
    """Decorator: run `kernel` in place of the decorated formula wherever it covers the call
    (it returns NotImplemented where it does not). The formula stays reachable as `.formula`,
    the kernel as `.native`."""

    def wrap(formula: Callable) -> Callable:
        @functools.wraps(formula)
        def run(*args: Any) -> Any:
            out = run.native(*args)
            return formula(*args) if out is NotImplemented else out

        run.formula = getattr(formula, "formula", formula)  # the plain formula, under any other wrapper
        run.native = kernel
        return run

    return wrap


def covers(*tensors: Any) -> bool:
    """Whether the kernels may run on these tensors: switched on, not inside a torch.compile
    (its tracer cannot follow a ctypes call), and every tensor (`None`s skipped) a dense float32
    torch.Tensor on the CPU whose memory holds its values (no lazy negation, which `.contiguous()`
    keeps); not a tinygraph Tensor, which a backward building a graph (create_graph) hands over.
    Whether the library could be built is `function`'s to say."""
    if not settings.enabled or torch.compiler.is_compiling():
        return False
    for t in tensors:
        if t is not None and (
            not isinstance(t, torch.Tensor)  # a tinygraph Tensor: a backward that builds a graph
            or t.dtype != torch.float32
            or not t.is_cpu
            or t.layout != torch.strided
            or t.is_nested
            or t.is_neg()
        ):
            return False
    return True


def threads(elements: int) -> int:
    """How many threads a kernel over `elements` elements uses: torch's count, or fewer."""
    return max(1, min(torch.get_num_threads(), elements // settings.elements_per_thread))


def pointer(t: torch.Tensor | None) -> int | None:
    """The address of a contiguous tensor's data (an int, which ctypes passes as a c_void_p), NULL for None."""
    return None if t is None else t.data_ptr()


@functools.cache
def function(name: str, *argtypes: Any, restype: Any = None) -> Callable | None:
    """The C function `name` of the library, typed; None if the library could not be built."""
    lib = library()
    if lib is None:
        return None
    fn = getattr(lib, name)
    fn.argtypes, fn.restype = list(argtypes), restype
    return fn


@functools.cache
def library() -> ctypes.CDLL | None:
    """The kernels' shared library, built if this machine has none yet; None if that failed."""
    try:
        return ctypes.CDLL(str(build.built()))
    except (OSError, RuntimeError, subprocess.SubprocessError) as err:  # RuntimeError: no home folder
        warnings.warn(
            f"tinygraph could not build its C kernels ({build.failure(err)}); the fused ops run their torch "
            "formulas on the CPU instead (slower, same results). Install a C compiler (gcc), point "
            "TINYGRAPH_CACHE at a writable folder if the cache is not, or set TINYGRAPH_NATIVE=0 to skip them.",
            stacklevel=2,
        )
        return None


def reset() -> None:
    """Forget the loaded library and its functions: the next covered call builds or loads it again."""
    library.cache_clear()
    function.cache_clear()


# the operators compiled code calls, tinygraph::*: kept alive here (dropping it would drop them)
_OPERATORS = torch.library.Library("tinygraph", "FRAGMENT")


def operator(schema: str, fake: Callable) -> Callable[[Callable], Any]:
    """Decorator: the function as the operator `tinygraph::<schema>`, which compiled code calls
    like any of torch's (a tracer cannot follow a ctypes call); returns the operator, which
    eager code may call too. `fake` makes outputs of the right shapes for the tracer. Made with
    torch.library's low-level API: its dispatch costs about 3 us a call, where
    `torch.library.custom_op`'s cost about 8, and a compiled baby step makes 56 such calls
    (docs/performance.md)."""
    name = schema.split("(", 1)[0]

    def register(fn: Callable) -> Any:
        _OPERATORS.define(schema)
        _OPERATORS.impl(name, fn, "CompositeExplicitAutograd")
        torch.library.register_fake(f"tinygraph::{name}", fake, lib=_OPERATORS)
        return getattr(torch.ops.tinygraph, name).default

    return register
