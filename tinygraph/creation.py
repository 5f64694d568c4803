"""Making tensors: `tensor()` from data, and torch's factory functions returning leaves."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from .tensor import Tensor, _to_torch


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
arange = _factory(torch.arange)
linspace = _factory(torch.linspace)
eye = _factory(torch.eye)
zeros_like = _like_factory(torch.zeros_like)
ones_like = _like_factory(torch.ones_like)
full_like = _like_factory(torch.full_like)
empty_like = _like_factory(torch.empty_like)
randn_like = _like_factory(torch.randn_like)
rand_like = _like_factory(torch.rand_like)
