"""torch-style top-level functions (`tinygraph.exp(x)`, `tinygraph.cat([...])`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .ops import shape as S
from .tensor import Tensor, _unwrap


def _as_function(name: str):
    method = getattr(Tensor, name)

    def function(input: Tensor, *args: Any, **kwargs: Any) -> Any:
        return method(input, *args, **kwargs)

    function.__name__ = function.__qualname__ = name
    function.__doc__ = method.__doc__ or f"`tinygraph.{name}(x, ...)` is `x.{name}(...)`."
    return function


_METHODS = (
    "add sub mul div pow neg square exp log sqrt rsqrt abs sign tanh sigmoid relu erf maximum minimum "
    "clamp clip masked_fill softmax log_softmax sum mean var std max min amax amin logsumexp argmax "
    "argmin reshape flatten unflatten unsqueeze squeeze permute transpose swapaxes t narrow split "
    "chunk unbind gather scatter_add index_select index_add matmul broadcast_to isfinite tril triu "
    "logical_not clone"
).split()
globals().update({name: _as_function(name) for name in _METHODS})


def where(condition: Any, input: Any, other: Any) -> Tensor:
    """`input` where `condition` holds, else `other`; either may be a number."""
    from .ops.elementwise import Where

    return Where.apply(_unwrap(condition), input, other)


def cat(tensors: Sequence[Tensor], dim: int = 0) -> Tensor:
    """Join tensors along an existing dim."""
    return S.Cat.apply(*tensors, dim=dim)


concat = cat


def stack(tensors: Sequence[Tensor], dim: int = 0) -> Tensor:
    """Join tensors along a new dim."""
    return S.Stack.apply(*tensors, dim=dim)


__all__ = [*_METHODS, "where", "cat", "concat", "stack"]
