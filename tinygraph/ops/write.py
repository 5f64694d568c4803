"""Ops that write into a tensor: `x[i] = v`, `fill_`, `copy_`, `zero_`, and the records
the in-place machinery (tinygraph/inplace.py) leaves when a write goes through a view."""

from __future__ import annotations

from typing import Any

import torch

from .. import grad_mode
from ..function import Function, public, register
from ..indexing import is_advanced, normalize_index
from ..inplace import bring_up_to_date, check_writable, commit, is_tracked, rebase, refresh, region_index
from ..tensor import Tensor, require_one_dtype, unwrap
from .shape import add_at


@public("Tensor.__setitem__")
def setitem(self: Tensor, index: Any, value: Any) -> None:
    """`x[index] = value`: tracked when x or value requires grad (x's history continues)."""
    index = normalize_index(index, self.device)
    if self._base is not None and grad_mode.local.state.enabled:
        bring_up_to_date(self)
    if not is_tracked(self, value):
        self.data[index] = unwrap(value)
        return
    check_writable(self)

    def write() -> None:  # torch's own setitem does the write (and checks shapes and overlaps)
        self.data[index] = unwrap(value)

    if is_advanced(index):
        commit(self, IndexPut.apply(self, value, index), write)
        return
    region = self.data[index]  # a view of the written elements
    if not isinstance(value, Tensor):
        value = Tensor(torch.as_tensor(value, dtype=self.dtype, device=self.device))
    value = value.to(self.dtype).expand(region.shape)
    write()
    base = self._base if self._base is not None else self
    rebase(base, CopySlices.apply(base, value, region_index(base.data, region)))
    if base is not self:
        refresh(self)


@register
class CopySlices(Function):
    """Records a write of `value` into the elements of `base` at flat positions `index`
    (the write itself was made through a view). Backward: the region's grad goes to the
    value, the rest to the base's old graph."""

    @staticmethod
    def forward(ctx, base, value, index):
        ctx._index = index  # made by the engine, never seen by the user: nothing can change it
        return base

    @staticmethod
    def backward(ctx, g):
        index = ctx._index
        written = torch.zeros(g.numel(), dtype=torch.bool, device=g.device).index_fill_(0, index.reshape(-1), True)
        return g.masked_fill(written.view(g.shape), 0), g.reshape(-1)[index], None


@register("Tensor.index_put Tensor.index_put_ tinygraph.index_put")
class IndexPut(Function):
    """`x` with `value` put at an advanced `index` (out of place; `x[index] = value` writes it
    back), or with accumulate=True added there, positions that index repeats adding up."""

    @staticmethod
    def call(input, indices, values, accumulate=False):
        """torch's index_put: `indices` a tuple of index tensors, as in `input[indices] = values`."""
        for i, index in enumerate(indices):
            if not isinstance(index, (Tensor, torch.Tensor)):
                raise TypeError(f"expected Tensor as element {i} in argument 0, but got {type(index).__name__}")
        return IndexPut.apply(input, values, normalize_index(tuple(indices), input.device), accumulate)

    @staticmethod
    def forward(ctx, x, value, index, accumulate=False):
        if not _fills_a_mask(x, value, index, accumulate):
            require_one_dtype("index_put", destination=x, values=value)
        ctx.accumulate, ctx.value_dims = accumulate, getattr(value, "ndim", 0)
        ctx.save_for_backward(index)
        if accumulate:
            value = torch.as_tensor(value, dtype=x.dtype, device=x.device)
            return add_at(x.clone(memory_format=torch.contiguous_format), index, value)
        out = x.clone()
        out[index] = value
        return out

    @staticmethod
    def backward(ctx, g):
        (index,) = ctx.saved_tensors
        g_value = g[index]
        if g_value.ndim < ctx.value_dims:  # a value with leading 1s beyond the region's dims (torch drops them)
            g_value = g_value.reshape((1,) * (ctx.value_dims - g_value.ndim) + tuple(g_value.shape))
        return (g if ctx.accumulate else IndexPut.apply(g, 0.0, index)), g_value, None, None


def _fills_a_mask(x, value, index, accumulate):
    """Does torch's index_put take masked_fill_ here (which casts the value to x's dtype)?
    It does for one element put, not added, at a single boolean mask, the value on the CPU."""
    tensors = [p for p in (index if isinstance(index, tuple) else (index,)) if isinstance(p, torch.Tensor)]
    one_value = not isinstance(value, torch.Tensor) or (value.numel() == 1 and value.device.type == "cpu")
    return not accumulate and one_value and len(tensors) == 1 and tensors[0].dtype == torch.bool


@register("tinygraph.fill Tensor.fill_")
class Fill(Function):
    """Every element set to `value` (a number, or a 0-dim tensor whose grad is the sum of g)."""

    @staticmethod
    def forward(ctx, x, value):
        return torch.full_like(x, value) if not isinstance(value, torch.Tensor) else value.expand_as(x).clone()

    @staticmethod
    def backward(ctx, g):
        return g.new_zeros(g.shape), (g.sum() if ctx.needs_input_grad[1] else None)


@register("tinygraph.copy Tensor.copy_")
class Copy(Function):
    """`x.copy_(src)`: src (broadcast, cast) replaces x's values; x's old value gets a zero grad."""

    @staticmethod
    def forward(ctx, x, src):
        return src.to(x.dtype).expand_as(x).clone()

    @staticmethod
    def backward(ctx, g):
        return g.new_zeros(g.shape), g


@public("Tensor.zero_")
def zero(input: Tensor) -> Tensor:
    """Zeros of input's shape (as `x.zero_()`, in place)."""
    return Fill.apply(input, 0)
