"""The linear layer's three matrix products as one C loop nest (matmul.c); the formulas are
tinygraph.ops.nn.linear_product (the forward, and the grad of x) and linear_weight_grad.

Why not torch's product: torch's `mm` on the CPU is MKL's sgemm, which on AMD processors
keeps to generic or AVX2 code. On the AVX-512 machine tinygraph is benchmarked on, at a
small language model's shapes (768 x 128 x 512, say) this loop is up to 20% faster than MKL
and level with or faster than oneDNN (torch's other library, whose code would cost every
process 8 MB more); at larger ones it is level with MKL and 5-10% behind oneDNN
(docs/performance.md). It runs only where it was measured to pay: on AVX-512 machines,
for products of at least `settings.matmul_products` multiply-adds (below that a call costs
more than it saves).

Unlike the other kernels here it also runs inside a torch.compile (the compiled training
step): there it enters the graph as one custom op, `tinygraph::matmul`, which the compiled
code calls like any of torch's (its tracer cannot follow ctypes itself).
"""

from __future__ import annotations

import ctypes
import functools

import torch

from . import covers, function, library, operator, pointer, settings

# whether torch found AVX-512 here: what a tracer can read, where it cannot ask the library
# whether it was built for AVX-512 (`_tuned`; the custom op asks that when it runs). The two
# can differ (ATEN_CPU_CAPABILITY=avx2 lowers torch's, not the compiler's): then eager steps
# run the loop and compiled ones torch's product.
AVX512 = torch.backends.cpu.get_cpu_capability() == "AVX512"


def linear(x, weight, bias=None):
    """x @ weight.mT + bias; NotImplemented where the formula should run."""
    if not (
        weight.ndim == 2
        and x.ndim >= 1
        and x.numel() * weight.shape[0] >= settings.matmul_products  # (first of the costlier checks)
        and x.shape[-1] == weight.shape[1]  # (a mismatch: the formula says so in torch's words)
        and (bias is None or bias.shape == weight.shape[:1])  # (others broadcast: the formula's)
        and _runs_on(x, weight, bias)
    ):
        return NotImplemented
    out = _product(_rows(x), weight.mT, bias)
    return out if x.ndim == 2 else out.reshape(*x.shape[:-1], weight.shape[0])


def weight_grad(g, x):
    """g.mT @ x over every row of g and x (the leading dims flattened); NotImplemented where the formula should run."""
    if not (
        g.ndim >= 1
        and x.ndim >= 1
        and g.numel() * x.shape[-1] >= settings.matmul_products
        and g.shape[:-1] == x.shape[:-1]
        and _runs_on(g, x)
    ):
        return NotImplemented
    return _product(_rows(g).mT, _rows(x))


def linear_grads(g, x, weight, dx, dw):
    """(g @ weight, g.mT @ x over every row): the linear layer's grads of x and of its weight,
    None where not wanted, as one call of the loop (one call's Python, not two);
    NotImplemented where the formula should run."""
    if not (
        weight is not None
        and weight.ndim == 2
        and g.ndim >= 1
        and g.numel() * weight.shape[1] >= settings.matmul_products
        and g.shape[-1] == weight.shape[0]
        and (x is not None and x.shape == (*g.shape[:-1], weight.shape[1]) if dw else dx)
        and covers(g, x, weight)  # (and not inside a torch.compile: there the two products are traced)
        and _tuned()
    ):
        return NotImplemented
    rows, x_rows = _rows(g), _rows(x) if dw else None
    (M, N), K = rows.shape, weight.shape[1]
    gx, gw = rows.new_empty(M, K) if dx else None, rows.new_empty(N, K) if dw else None
    kernel = function("linear_grads_f32", *_GRADS, restype=ctypes.c_int)
    x_strides = x_rows.stride() if dw else (0, 0)
    args = (pointer(rows), *rows.stride(), pointer(x_rows), *x_strides, pointer(weight), *weight.stride())
    if kernel(*args, pointer(gx), pointer(gw), M, N, K, torch.get_num_threads()):
        raise MemoryError(
            "the linear layer's backward could not allocate a copy of an operand; free some memory, or set "
            "TINYGRAPH_NATIVE=0 to run torch's products instead."
        )
    return (gx.view(*g.shape[:-1], K) if dx else None), gw


def _runs_on(*tensors):
    """Whether the loop takes these tensors: `covers` them, on a machine it was tuned for; inside
    a torch.compile, what the tracer can ask (the op the loop enters compiled code as asks
    the rest when it runs)."""
    if torch.compiler.is_compiling():
        return (
            settings.enabled
            and AVX512
            and all(
                t is None or (isinstance(t, torch.Tensor) and t.dtype == torch.float32 and t.is_cpu) for t in tensors
            )
        )
    return covers(*tensors) and _tuned()


def _rows(t):
    """t as a matrix of its last dim's rows (t is not empty: it is above the threshold)."""
    return t if t.ndim == 2 else t.reshape(-1, t.shape[-1])


# matmul_f32's: a and its strides, b and its strides, bias and its stride, c, M, N, K, threads
_ARGTYPES = (
    ctypes.c_void_p, *[ctypes.c_int64] * 2, ctypes.c_void_p, *[ctypes.c_int64] * 2, ctypes.c_void_p, ctypes.c_int64,
    ctypes.c_void_p, *[ctypes.c_int64] * 3, ctypes.c_int,
)  # fmt: skip

# linear_grads_f32's: g, x and weight, each with its strides; gx, gw; M, N, K, threads
_GRADS = (*[ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64] * 3, ctypes.c_void_p, ctypes.c_void_p,
          *[ctypes.c_int64] * 3, ctypes.c_int)  # fmt: skip


def _product(a, b, bias=None):
    """a @ b + bias for 2-d torch.Tensors a and b, through the C loop (inside a torch.compile,
    through the custom op that calls it)."""
    if torch.compiler.is_compiling():
        return traced_product(a, b, bias)
    (m, k), n = a.shape, b.shape[1]
    kernel = function("matmul_f32", *_ARGTYPES, restype=ctypes.c_int)
    out = a.new_empty(m, n)
    sbias = 0 if bias is None else bias.stride(0)
    args = (pointer(a), *a.stride(), pointer(b), *b.stride(), pointer(bias), sbias, pointer(out), m, n, k)
    if kernel(*args, torch.get_num_threads()):
        raise MemoryError(
            f"the linear layer's product could not allocate {k * n * 4 // 2**20 + 1} MB for a copy of its right operand; "
            "free some memory, or set TINYGRAPH_NATIVE=0 to run torch's product instead."
        )
    return out


def _fake_product(a, b, bias):
    torch._check(
        _fits(a, b, bias), lambda: "tinygraph::matmul takes a (M, K) @ (K, N) product and a bias of shape (N,)."
    )
    return a.new_empty(a.shape[0], b.shape[1])


@operator("matmul(Tensor a, Tensor b, Tensor? bias) -> Tensor", _fake_product)
def traced_product(a, b, bias):
    """The C loop as one opaque op that compiled code calls (its tracer cannot follow ctypes);
    torch's product, with its checks and errors, where the loop does not cover the call after
    all. tinygraph's own op: no torch.autograd formula (tinygraph hands it no tensor that
    requires torch's grad)."""
    if _fits(a, b, bias) and covers(a, b, bias) and _tuned():
        return _product(a, b, bias)
    return a @ b if bias is None else torch.addmm(bias, a, b)


def _fits(a, b, bias):
    return a.ndim == b.ndim == 2 and a.shape[1] == b.shape[0] and (bias is None or bias.shape == b.shape[1:])


def _tuned() -> bool:
    """Whether the library was built for a machine where the loop's block sizes were measured (AVX-512)."""
    lib = library()
    return lib is not None and _tuned_library(lib)


@functools.cache
def _tuned_library(lib: ctypes.CDLL) -> bool:
    return bool(lib.matmul_tuned())  # (int matmul_tuned(void): ctypes' default types)
