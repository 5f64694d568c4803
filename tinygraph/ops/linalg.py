"""Matrix products."""

from __future__ import annotations

from ..function import Function, public, register
from ..tensor import Tensor


def _as_tensor(value):
    return value if isinstance(value, Tensor) else Tensor._make(value, None)


@register("Tensor.matmul Tensor.__matmul__ Tensor.__rmatmul__ tinygraph.matmul")
class MatMul(Function):
    """`a @ b`, batch dims broadcasting. 1-D operands gain a dim that is then dropped, as in torch."""

    autocast = "low"

    @staticmethod
    def call(input, other):
        a, b = _as_tensor(input), _as_tensor(other)
        if a.ndim == 0 or b.ndim == 0:
            raise RuntimeError(f"both arguments to matmul need to be at least 1D, but they are {a.ndim}D and {b.ndim}D")
        if a.ndim == 1 and b.ndim == 1:
            if a.shape != b.shape:
                raise RuntimeError(
                    f"inconsistent tensor size, expected tensor [{a.shape[0]}] and src [{b.shape[0]}] to have the "
                    f"same number of elements, but got {a.shape[0]} and {b.shape[0]} elements respectively"
                )
            return MatMul.apply(a.unsqueeze(0), b.unsqueeze(-1)).reshape(())
        if a.ndim == 1:
            return MatMul.apply(a.unsqueeze(0), b).squeeze(-2)
        if b.ndim == 1:
            return MatMul.apply(a, b.unsqueeze(-1)).squeeze(-1)
        return MatMul.apply(a, b)

    @staticmethod
    def forward(ctx, a, b):
        da, db = ctx.needs_input_grad
        ctx.fold = b.ndim == 2 and a.ndim > 2
        ctx.save_for_backward(b if da else None, a if db else None)
        return a @ b

    @staticmethod
    def backward(ctx, g):
        b, a = ctx.saved_tensors
        ga = g @ b.mT if b is not None else None
        if a is None:
            gb = None
        elif ctx.fold:  # a shared 2-D weight: fold the batch into rows, no grad per batch
            gb = a.reshape(-1, a.shape[-1]).mT @ g.reshape(-1, g.shape[-1])
        else:
            gb = a.mT @ g
        return ga, gb


def _check_dims(name: str, want: int, *tensors) -> None:
    for t in tensors:
        if t.ndim != want:
            raise RuntimeError(f"{name}: expected {want}-D tensors, but got a {t.ndim}-D tensor")


@public("Tensor.mm tinygraph.mm")
def mm(input, mat2):
    """The product of two matrices."""
    _check_dims("mm", 2, input, mat2)
    return MatMul.apply(input, mat2)


@public("Tensor.bmm tinygraph.bmm")
def bmm(input, mat2):
    """Batched matrix products: (b, n, m) @ (b, m, p)."""
    _check_dims("bmm", 3, input, mat2)
    if input.shape[0] != mat2.shape[0]:
        raise RuntimeError(f"bmm: batch sizes differ: {input.shape[0]} and {mat2.shape[0]}")
    return MatMul.apply(input, mat2)


@public("Tensor.dot tinygraph.dot")
def dot(input, tensor):
    """The dot product of two vectors of the same length."""
    _check_dims("dot", 1, input, tensor)
    return MatMul.call(input, tensor)


@public("Tensor.outer Tensor.ger tinygraph.outer tinygraph.ger")
def outer(input, vec2):
    """The outer product of two vectors: (n,) and (m,) to (n, m)."""
    _check_dims("outer", 1, input, vec2)
    return input.reshape(-1, 1) * vec2.reshape(1, -1)
