"""Making tensors: `tensor()` from data, torch's factory functions returning leaves, and
the `new_*` methods (a constant with another tensor's dtype and device)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from .function import public
from .tensor import Tensor, _to_torch, unwrap


def tensor(data: Any, dtype: torch.dtype | None = None, device: Any = None, requires_grad: bool = False) -> Tensor:
    """A new leaf from a number, a (nested) list, a numpy array or a torch.Tensor (copied)."""
    return Tensor(_to_torch(data, dtype, device), requires_grad=requires_grad)


def _factory(make: Callable[..., torch.Tensor]) -> Callable[..., Tensor]:
    def factory(*args: Any, requires_grad: bool = False, **kwargs: Any) -> Tensor:
        return Tensor(make(*args, **kwargs), requires_grad=requires_grad)

    factory.__name__ = factory.__qualname__ = make.__name__
    factory.__doc__ = f"torch.{make.__name__} (same arguments), as a tinygraph leaf; `requires_grad` as in torch."
    return factory


def _like_factory(make: Callable[..., torch.Tensor]) -> Callable[..., Tensor]:
    def factory(input: Tensor, *args: Any, requires_grad: bool = False, **kwargs: Any) -> Tensor:
        return Tensor(make(input.data, *args, **kwargs), requires_grad=requires_grad)

    factory.__name__ = factory.__qualname__ = make.__name__
    factory.__doc__ = f"torch.{make.__name__} of a tinygraph Tensor's shape, dtype and device, as a new leaf."
    return factory


zeros = _factory(torch.zeros)
ones = _factory(torch.ones)
full = _factory(torch.full)
empty = _factory(torch.empty)
randn = _factory(torch.randn)
rand = _factory(torch.rand)
randint = _factory(torch.randint)
randperm = _factory(torch.randperm)
arange = _factory(torch.arange)
linspace = _factory(torch.linspace)
eye = _factory(torch.eye)
zeros_like = _like_factory(torch.zeros_like)
ones_like = _like_factory(torch.ones_like)
full_like = _like_factory(torch.full_like)
empty_like = _like_factory(torch.empty_like)
randn_like = _like_factory(torch.randn_like)
rand_like = _like_factory(torch.rand_like)


def _new(name: str) -> Callable[..., Tensor]:
    method = getattr(torch.Tensor, name)

    def new(input: Tensor, *args: Any, requires_grad: bool = False, **kwargs: Any) -> Tensor:
        return Tensor(method(input.data, *unwrap(args), **kwargs), requires_grad=requires_grad)

    new.__doc__ = f"torch.Tensor.{name}: a new leaf with this tensor's dtype and device (unless given)."
    return new


for _name in ("new_zeros", "new_ones", "new_full", "new_empty", "new_tensor"):
    public(f"Tensor.{_name}")(_new(_name))
