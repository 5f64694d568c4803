"""Changes in place, tracked as torch tracks them.

Under no_grad (or when nothing involved requires grad) an in-place method simply
changes `.data` in place: `with no_grad(): w -= lr * w.grad` updates the parameter
itself, which stays the same leaf. Otherwise the change is recorded:

- `x.add_(y)` computes `x.add(y)` from a copy of x's old value (an op may have saved
  it), writes the result into x's memory, and makes x the output of that op ("rebases"
  it): later ops see the new value, backward sends grads through the op to x's old
  graph and to y.
- a leaf that requires grad refuses (its grad would lose its meaning), as in torch.
- `buf[i] = y` writes y into a region of buf; buf becomes the output of a `CopySlices`
  node, whose backward sends the region's grad to y and the rest to buf's old graph.
- a view (`v = x[0]`, `x.t()`, `x.reshape(...)`) shares its base's memory: writing
  through the view rebases the base with `CopySlices`, and any view whose memory
  changed since its graph was made (a version counter says so) gets a graph regenerated
  from its base the next time an op uses it, so it sees the base's new history. (Until
  that use, its `grad_fn` and `requires_grad` still show the old history, where torch's
  show the new one at once: keeping no list of every view of every tensor is the price.)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from . import grad_mode
from .function import OPS
from .tensor import Tensor, is_grad_needed, unwrap


def in_place(fn: Callable, name: str | None = None) -> Callable:
    """The in-place form `x.name_(...)` of an out-of-place function `name(x, ...)`. The write
    itself is torch's own in-place method `name` on the data, where torch has one (with
    torch's checks of shapes, dtypes and overlapping memory); when it must be recorded, `fn`
    records it."""
    write_in_place = getattr(torch.Tensor, name, None) if name else None

    def write(self: Tensor, args: tuple, kwargs: dict) -> None:
        if write_in_place is None:
            with grad_mode.no_grad():
                commit_data(self, fn(self, *args, **kwargs))
        else:
            write_in_place(self.data, *unwrap(args), **unwrap(kwargs))

    def method(self: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        if self._base is not None and grad_mode.local.state.enabled:
            bring_up_to_date(self)  # its base may have come to require grad since it was made
        if not is_tracked(self, *args, *kwargs.values()):
            write(self, args, kwargs)
            return self
        check_writable(self)
        # computed from a copy: backward may need the old value, which the write destroys
        old = Tensor._make(self.data.clone(), self.grad_fn, self._slot)
        old.requires_grad = self.requires_grad
        # (an argument that is self itself stays self: its value is saved by reference, and the
        # write makes it stale, so backward refuses, as torch's does for x.mul_(x))
        commit(self, fn(old, *args, **kwargs), lambda: write(self, args, kwargs))
        return self

    return method


def is_tracked(t: Tensor, *values: Any) -> bool:
    """Must a write into t be recorded? (recording on, and t, its base or a value requires grad)"""
    return is_grad_needed(t, *values) or (
        t._base is not None and t._base.requires_grad and grad_mode.local.state.enabled
    )


def check_writable(t: Tensor) -> None:
    """Refuse what torch refuses: writing into a leaf that requires grad, a view of one, one
    of the views an op with several outputs made (split, chunk, unbind), or a view made
    while nothing was recorded."""
    if t._base is not None and t._view_kind == "multi":
        raise RuntimeError(
            "This tensor is one of the views an op with several outputs made (split, chunk, unbind), and such "
            "views cannot be changed in place while grads are recorded; use the out-of-place op, or change a clone()."
        )
    if t._base is not None and t._view_kind == "no_grad":
        raise RuntimeError(
            "This view was made under no_grad() and is being changed in place while grads are recorded, which "
            "is ambiguous; make the view outside no_grad(), or change a clone()."
        )
    if t._base is not None:
        if t._base.grad_fn is None and t._base.requires_grad:
            raise RuntimeError(
                "A view of a leaf tensor that requires grad is being changed in place; do it under "
                "tinygraph.no_grad() (an update), or change a clone."
            )
        bring_up_to_date(t)
    elif t.grad_fn is None and t.requires_grad:
        raise RuntimeError(
            "A leaf tensor that requires grad is being changed in place; do it under tinygraph.no_grad() "
            "(an update, as optimizers do), or use the out-of-place op."
        )


def commit_data(t: Tensor, new: Any) -> None:
    """Put `new` (broadcast to t's shape, cast to its dtype, as torch's in-place ops do) into t's memory."""
    data = unwrap(new)
    _check_fits(t, data)
    t.data.copy_(data)


def _check_fits(t: Tensor, data: torch.Tensor) -> None:
    if torch.broadcast_shapes(data.shape, t.shape) != t.shape:
        raise RuntimeError(
            f"output with shape {list(t.shape)} doesn't match the broadcast shape "
            f"{list(torch.broadcast_shapes(data.shape, t.shape))}"
        )
    if not torch.can_cast(data.dtype, t.dtype):
        raise RuntimeError(f"result type {_name(data.dtype)} can't be cast to the desired output type {_name(t.dtype)}")


def _name(dtype: torch.dtype) -> str:
    return {torch.float32: "Float", torch.float64: "Double", torch.int64: "Long", torch.int32: "Int"}.get(
        dtype, str(dtype).removeprefix("torch.")
    )


def commit(t: Tensor, new: Tensor, write: Callable[[], None] | None = None) -> None:
    """Write `new` (recorded) into t's memory, or let `write` do it, and make t's graph end in it."""
    _check_fits(t, new.data)
    if new.shape != t.shape:
        new = new.expand(t.shape)
    if new.dtype != t.dtype:
        new = new.to(t.dtype)
    if write is not None:
        write()
    else:
        t.data.copy_(new.data)
    _saved_output_is(new, t.data)
    if t._base is None:
        rebase(t, new)
        return
    base = t._base
    rebase(base, OPS["CopySlices"].apply(base, new, region_index(base.data, t.data)))
    refresh(t)


def _saved_output_is(new: Tensor, data: torch.Tensor) -> None:
    """An op that saved its own output (exp, tanh) now keeps the written tensor itself, as
    torch's in-place ops do: a later change of it in place is then caught at backward."""
    node = new.grad_fn
    if node is None or not node._saved or torch.compiler.is_compiling():
        return
    was_output = [v is new.data for v in node._saved]
    node._saved = tuple(data if out else v for v, out in zip(node._saved, was_output))
    node._versions = [data._version if out else version for out, version in zip(was_output, node._versions)]


def rebase(t: Tensor, new: Tensor) -> None:
    t.grad_fn, t._slot, t.requires_grad = new.grad_fn, new._slot, new.requires_grad


def bring_up_to_date(t: Tensor) -> None:
    """A view whose memory was written since its graph was made gets its graph regenerated
    (torch refuses that for the kinds of views it refuses to write into; so does this)."""
    if t.data._version == t._version:
        return
    if t._view_kind is not None and t._base.requires_grad and grad_mode.local.state.enabled:
        made = "by an op with several outputs (split, chunk, unbind)" if t._view_kind == "multi" else "under no_grad()"
        raise RuntimeError(
            f"This view was made {made}, and its base (or another view of it) has since been changed in "
            "place, so its history cannot be brought up to date; make it again after the change, or clone() it first."
        )
    refresh(t)


def refresh(t: Tensor) -> None:
    """Make the view t's graph: its elements picked from its base, as the base is now."""
    base = t._base
    if base.requires_grad and grad_mode.local.state.enabled:
        rebase(t, base.reshape(-1)[region_index(base.data, t.data)])
    t._version = t.data._version


def region_index(base: torch.Tensor, view: torch.Tensor) -> torch.Tensor:
    """For each element of `view` (which shares `base`'s memory), its position in base.flatten()."""
    offset = view.storage_offset() - base.storage_offset()
    if base.is_contiguous():  # a memory position is a flat position: O(view) arithmetic
        index = torch.tensor(offset, device=base.device)
        for size, stride in zip(view.shape, view.stride()):
            index = index.unsqueeze(-1) + torch.arange(size, device=base.device) * stride
        return index
    positions = torch.empty_strided(base.shape, base.stride(), dtype=torch.long, device=base.device)
    positions.copy_(torch.arange(base.numel(), device=base.device).view(base.shape))
    return positions.as_strided(view.shape, view.stride(), offset)
