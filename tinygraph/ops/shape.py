"""Ops that move values without computing new ones: views, indexing, joins, gathers."""

from __future__ import annotations

import math

import torch

from ..function import Function, public, register
from ..indexing import is_advanced, normalize_index
from ..tensor import Tensor, joinable, memory_order, require_one_dtype, stacked_view, unwrap
from .reduce import normalize_dims


def sizes(args: tuple) -> tuple[int, ...]:
    """Accept both f(2, 3) and f((2, 3)), as torch does."""
    if len(args) == 1 and isinstance(args[0], (tuple, list, torch.Size)):
        return tuple(args[0])
    return tuple(args)


@register("Tensor.reshape tinygraph.reshape")
class Reshape(Function):
    """`reshape`, and `view` with `view=True` (which refuses a copy, as torch's does)."""

    view = True

    @staticmethod
    def call(input, *shape):
        return Reshape.apply(input, sizes(shape))  # a new view even to the same shape, as torch's

    @staticmethod
    def forward(ctx, x, shape, view=False):
        ctx.shape = x.shape
        return x.view(shape) if view else x.reshape(shape)

    @staticmethod
    def backward(ctx, g):
        return g.reshape(ctx.shape)


@public("Tensor.view")
def view(input, *shape):
    """The same memory in another shape; an error where that needs a copy (use reshape)."""
    return Reshape.apply(input, sizes(shape), view=True)


@public("Tensor.view_as")
def view_as(input, other):
    return view(input, other.shape)


@public("Tensor.flatten tinygraph.flatten")
def flatten(input, start_dim=0, end_dim=-1):
    if input.ndim == 0:
        return input.reshape(1)
    start, end = start_dim % input.ndim, end_dim % input.ndim
    if start == end:
        return input  # nothing to merge: torch returns the tensor itself
    return input.reshape(*input.shape[:start], -1, *input.shape[end + 1 :])


@public("Tensor.unflatten tinygraph.unflatten")
def unflatten(input, dim, sizes):
    dim %= input.ndim
    return input.reshape(*input.shape[:dim], *sizes, *input.shape[dim + 1 :])


@public("Tensor.unsqueeze tinygraph.unsqueeze")
def unsqueeze(input, dim):
    dim = normalize_dims(dim, input.ndim + 1)[0]
    return input.reshape(*input.shape[:dim], 1, *input.shape[dim:])


@public("Tensor.squeeze tinygraph.squeeze")
def squeeze(input, dim=None):
    dims = normalize_dims(dim, input.ndim)
    return input.reshape([s for i, s in enumerate(input.shape) if not (i in dims and s == 1)])


@register("Tensor.permute tinygraph.permute")
class Permute(Function):
    view = True

    @staticmethod
    def call(input, *dims):
        return Permute.apply(input, sizes(dims))

    @staticmethod
    def forward(ctx, x, dims):
        ctx.inverse = [0] * len(dims)
        for i, d in enumerate(dims):
            ctx.inverse[d % x.ndim] = i
        return x.permute(dims)

    @staticmethod
    def backward(ctx, g):
        return g.permute(ctx.inverse)


@public("Tensor.transpose Tensor.swapaxes Tensor.swapdims tinygraph.transpose tinygraph.swapaxes tinygraph.swapdims")
def transpose(input, dim0, dim1):
    dims = list(range(input.ndim))
    if input.ndim:
        (dim0,), (dim1,) = normalize_dims(dim0, input.ndim), normalize_dims(dim1, input.ndim)
        dims[dim0], dims[dim1] = dims[dim1], dims[dim0]
    return Permute.apply(input, dims)


@public("Tensor.t tinygraph.t")
def t(input):
    """The transpose of a matrix (vectors and scalars as they are)."""
    if input.ndim > 2:
        raise RuntimeError(f"t() expects a tensor with <= 2 dimensions, but self is {input.ndim}D")
    return transpose(input, 0, 1) if input.ndim == 2 else Permute.apply(input, tuple(range(input.ndim)))  # a view


@public("Tensor.movedim Tensor.moveaxis tinygraph.movedim tinygraph.moveaxis")
def movedim(input, source, destination):
    """Move the dims at `source` to the positions `destination` (ints or sequences)."""
    src = [source] if isinstance(source, int) else list(source)
    dst = [destination] if isinstance(destination, int) else list(destination)
    if len(src) != len(dst):
        raise RuntimeError(
            f"movedim: Invalid source or destination dims: source ({src} dims) should contain the same number of "
            f"dims as destination ({dst} dims)"
        )
    src, dst = [normalize_dims(d, input.ndim)[0] for d in src], [normalize_dims(d, input.ndim)[0] for d in dst]
    rest = iter(d for d in range(input.ndim) if d not in src)
    where = dict(zip(dst, src))
    return Permute.apply(input, [where[i] if i in where else next(rest) for i in range(input.ndim)])


@register("Tensor.expand")
class Expand(Function):
    view = True

    @staticmethod
    def call(input, *size):
        size = sizes(size)
        lead = len(size) - input.ndim  # -1 keeps the size of the dim it stands for
        return Expand.apply(input, tuple(input.shape[i - lead] if s == -1 else s for i, s in enumerate(size)))

    @staticmethod
    def forward(ctx, x, shape):
        return x.expand(shape)

    @staticmethod
    def backward(ctx, g):
        return g  # the engine sums it back to the input's shape


@public("Tensor.expand_as")
def expand_as(input, other):
    return input.expand(other.shape)


@public("Tensor.broadcast_to tinygraph.broadcast_to")
def broadcast_to(input, shape):
    return input.expand(shape)


@register("Tensor.__getitem__")
class GetItem(Function):
    """`x[index]`: basic (ints, slices, None, ...) and advanced (tensors, lists, arrays, masks)."""

    view = True  # basic indexing gives a view of x's memory

    @staticmethod
    def call(input, index):
        return GetItem.apply(input, normalize_index(index, input.device))

    @staticmethod
    def forward(ctx, x, index):
        ctx.shape, ctx.advanced = x.shape, is_advanced(index)
        if ctx.advanced:  # index tensors are saved (and freed after backward), as torch's are
            ctx.save_for_backward(index)
        else:
            ctx.index = index
        return x[index]

    @staticmethod
    def backward(ctx, g):
        index = ctx.saved_tensors[0] if ctx.advanced else ctx.index
        return GetItemBackward.apply(g, ctx.shape, index)


@register
class GetItemBackward(Function):
    """Zeros of `shape` with `g` put at `index`, repeated positions adding up: the backward
    of `x[index]`, an op of its own so that it too can be differentiated (by `g[index]`)."""

    @staticmethod
    def forward(ctx, g, shape, index):
        ctx.save_for_backward(index)
        return add_at(g.new_zeros(shape), index, g)

    @staticmethod
    def backward(ctx, g):
        (index,) = ctx.saved_tensors
        return g[index], None, None


def add_at(out: torch.Tensor, index, values: torch.Tensor) -> torch.Tensor:
    """`out[index] += values` in place (out contiguous), positions that index repeats adding up."""
    if not is_advanced(index):
        out[index] += values
        return out
    # Advanced indices may repeat: find each picked element's flat position, then add.
    flat = torch.arange(out.numel(), device=out.device).view(out.shape)[index]
    values = values.expand(flat.shape)
    return out.view(-1).index_add_(0, flat.reshape(-1), values.reshape(-1)).view(out.shape)


@public("Tensor.narrow tinygraph.narrow")
def narrow(input, dim, start, length):
    (dim,) = normalize_dims(dim, input.ndim)
    start = int(start) % input.shape[dim] if start < 0 else int(start)
    return input[(slice(None),) * dim + (slice(start, start + length),)]


@register("tinygraph.cat tinygraph.concat tinygraph.concatenate")
class Cat(Function):
    @staticmethod
    def call(tensors, dim=0):
        """Join tensors along an existing dim."""
        return Cat.apply(*tensors, dim=dim)

    @staticmethod
    def forward(ctx, *tensors, dim=0):
        ctx.dim, ctx.sizes = dim, [t.shape[dim] for t in tensors]
        return torch.cat(tensors, dim)

    @staticmethod
    def backward(ctx, g):
        return tuple(g.split(ctx.sizes, ctx.dim))


@register("tinygraph.stack")
class Stack(Function):
    @staticmethod
    def call(tensors, dim=0):
        """Join tensors along a new dim."""
        return Stack.apply(*tensors, dim=dim)

    @staticmethod
    def forward(ctx, *tensors, dim=0, order=None):
        ctx.dim = dim
        if order is None:
            return torch.stack(tensors, dim)
        # stacked in memory in `order` (outermost first): each piece permuted to that order,
        # stacked where the new dim lies in it, and the result permuted back (no out=, which
        # torch.compile cannot trace for a strided out)
        dim %= tensors[0].ndim + 1
        pieces = [o if o < dim else o - 1 for o in order if o != dim]
        stacked = torch.stack([t.permute(pieces) for t in tensors], order.index(dim))
        return stacked.permute([order.index(d) for d in range(len(order))])

    @staticmethod
    def backward(ctx, g):
        return tuple(g.unbind(ctx.dim))


@register("Tensor.split tinygraph.split")
class Split(Function):
    """Pieces of `sizes` along `dim`, as one node: its backward joins their grads (no zero
    padding per piece), so splitting a sequence into T steps costs O(T), not O(T^2)."""

    multi_output = True
    view = True

    @staticmethod
    def call(tensor, split_size_or_sections, dim=0):
        """Pieces of the given size (the last may be smaller), or of the listed sizes."""
        n = tensor.shape[dim]
        if isinstance(split_size_or_sections, int):
            step = split_size_or_sections
            pieces = [min(step, n - i) for i in range(0, n, step)] if n else [0]
        else:
            pieces = list(split_size_or_sections)
            if sum(pieces) != n:
                raise RuntimeError(
                    f"split_with_sizes expects split_sizes to sum exactly to {n} (input tensor's size at "
                    f"dimension {dim}), but got split_sizes={pieces}"
                )
        return Split.apply(tensor, pieces, dim)

    @staticmethod
    def forward(ctx, x, pieces, dim):
        ctx.dim = dim
        return tuple(x.split(pieces, dim))

    @staticmethod
    def backward(ctx, *grads):
        return Cat.apply(*grads, dim=ctx.dim)


@public("Tensor.chunk tinygraph.chunk")
def chunk(input, chunks, dim=0):
    return Split.call(input, math.ceil(input.shape[dim] / chunks) or 1, dim)


@register("Tensor.unbind tinygraph.unbind")
class Unbind(Function):
    """The slices along `dim`, that dim removed, as one node (the inverse of stack)."""

    multi_output = True
    view = True

    @staticmethod
    def forward(ctx, x, dim=0):
        ctx.dim, ctx.order = dim, memory_order(x)
        return tuple(x.unbind(dim))

    @staticmethod
    def backward(ctx, *grads):
        # grads that a kernel wrote as slices of one buffer of its own (attention's, for q, k
        # and v) are joined by a view; others are stacked as x lies in memory: unbinding a
        # permuted view (q, k, v of a projection's heads) gets a grad whose way back through
        # the permute is free
        joined = stacked_view(grads, ctx.dim) if joinable(grads[0]) else None
        return joined if joined is not None else Stack.apply(*grads, dim=ctx.dim, order=ctx.order)


@register("Tensor.gather tinygraph.gather")
class Gather(Function):
    @staticmethod
    def call(input, dim, index):
        return Gather.apply(input, dim, unwrap(index))

    @staticmethod
    def forward(ctx, x, dim, index):
        ctx.shape, ctx.dim = x.shape, dim
        ctx.save_for_backward(index)
        return x.gather(dim, index)

    @staticmethod
    def backward(ctx, g):
        (index,) = ctx.saved_tensors
        return g.new_zeros(ctx.shape).scatter_add(ctx.dim, index, g), None, None


def fitted(src, index):
    """The part of `src` that a scatter along `index` reads: its corner of index's shape
    (so a larger src gets zero grads outside it, where torch's backward raises)."""
    if isinstance(src, (int, float)) or src.shape == index.shape or src.ndim != index.ndim:
        return src  # (torch's checks speak for a src of the wrong rank)
    return src[tuple(slice(0, n) for n in index.shape)]


@register("Tensor.scatter_add Tensor.scatter_add_ tinygraph.scatter_add")
class ScatterAdd(Function):
    @staticmethod
    def call(input, dim, index, src):
        index = unwrap(index)
        return ScatterAdd.apply(input, dim, index, fitted(src, index))

    @staticmethod
    def forward(ctx, x, dim, index, src):
        ctx.dim = dim
        ctx.save_for_backward(index)
        return x.scatter_add(dim, index, src)

    @staticmethod
    def backward(ctx, g):
        (index,) = ctx.saved_tensors
        return g, None, None, g.gather(ctx.dim, index)


@register("Tensor.index_select tinygraph.index_select")
class IndexSelect(Function):
    @staticmethod
    def call(input, dim, index):
        return IndexSelect.apply(input, dim, unwrap(index))

    @staticmethod
    def forward(ctx, x, dim, index):
        ctx.shape, ctx.dim = x.shape, dim
        ctx.save_for_backward(index)
        return x.index_select(dim, index)

    @staticmethod
    def backward(ctx, g):
        (index,) = ctx.saved_tensors
        return g.new_zeros(ctx.shape).index_add(ctx.dim, index, g), None, None


@register("Tensor.index_add Tensor.index_add_ tinygraph.index_add")
class IndexAdd(Function):
    @staticmethod
    def call(input, dim, index, source, *, alpha=1):
        return IndexAdd.apply(input, dim, unwrap(index), source if alpha == 1 else source * alpha)

    @staticmethod
    def forward(ctx, x, dim, index, source):
        ctx.dim = dim
        ctx.save_for_backward(index)
        return x.index_add(dim, index, source)

    @staticmethod
    def backward(ctx, g):
        (index,) = ctx.saved_tensors
        return g, None, None, g.index_select(ctx.dim, index)


@register("Tensor.tril Tensor.tril_ tinygraph.tril")
class Tril(Function):
    """The lower triangle (with upper=True: the upper one, `triu`), the rest zeroed; the
    grad is masked the same way."""

    @staticmethod
    def call(input, diagonal=0):
        return Tril.apply(input, diagonal)

    @staticmethod
    def forward(ctx, x, diagonal=0, upper=False):
        ctx.diagonal, ctx.upper = diagonal, upper
        if upper:
            ctx.name = "Triu"
        return x.triu(diagonal) if upper else x.tril(diagonal)

    @staticmethod
    def backward(ctx, g):
        return g.triu(ctx.diagonal) if ctx.upper else g.tril(ctx.diagonal)


@public("Tensor.triu Tensor.triu_ tinygraph.triu")
def triu(input, diagonal=0):
    return Tril.apply(input, diagonal, True)


@register("Tensor.flip tinygraph.flip")
class Flip(Function):
    """The order of the elements reversed along each of `dims`."""

    @staticmethod
    def call(input, *args, dims=None):
        return Flip.apply(input, sizes(args) if dims is None else tuple(dims))

    @staticmethod
    def forward(ctx, x, dims):
        ctx.dims = dims
        return x.flip(dims)

    @staticmethod
    def backward(ctx, g):
        return g.flip(ctx.dims)


@public("Tensor.fliplr tinygraph.fliplr")
def fliplr(input):
    """Reversed left to right (along dim 1)."""
    if input.ndim < 2:
        raise RuntimeError("Input must be >= 2-d.")
    return Flip.apply(input, (1,))


@public("Tensor.flipud tinygraph.flipud")
def flipud(input):
    """Reversed upside down (along dim 0)."""
    if input.ndim < 1:
        raise RuntimeError("Input must be >= 1-d.")
    return Flip.apply(input, (0,))


@register("Tensor.roll tinygraph.roll")
class Roll(Function):
    """The elements shifted along `dims` (of the flattened tensor when dims is None), those
    pushed off the end coming back at the start."""

    @staticmethod
    def forward(ctx, x, shifts, dims=None):
        ctx.dims = dims
        ctx.back = -shifts if isinstance(shifts, int) else tuple(-s for s in shifts)
        return x.roll(shifts, dims)

    @staticmethod
    def backward(ctx, g):
        return g.roll(ctx.back, ctx.dims)


@register("Tensor.repeat")
class Repeat(Function):
    """The tensor tiled `repeats[i]` times along dim i (new leading dims for extra ones); the
    grad of an element is the sum of the grads of its copies."""

    @staticmethod
    def call(input, *repeats):
        return Repeat.apply(input, sizes(repeats))

    @staticmethod
    def forward(ctx, x, repeats):
        ctx.shape, ctx.repeats = x.shape, repeats
        return x.repeat(repeats)

    @staticmethod
    def backward(ctx, g):
        shape = (1,) * (len(ctx.repeats) - len(ctx.shape)) + tuple(ctx.shape)
        split = [n for copies, size in zip(ctx.repeats, shape) for n in (copies, size)]
        return g.reshape(split).sum(tuple(range(0, len(split), 2))).reshape(ctx.shape)


@public("Tensor.tile tinygraph.tile")
def tile(input, dims):
    """`repeat`, with `dims` padded with leading 1s when it is shorter than input's shape."""
    dims = tuple(dims)
    return Repeat.apply(input, (1,) * (input.ndim - len(dims)) + dims)


@public("Tensor.repeat_interleave tinygraph.repeat_interleave")
def repeat_interleave(input, repeats=None, dim=None, *, output_size=None):
    """Each element repeated `repeats` times (an int, or a tensor of one count per element)
    along `dim` (of the flattened tensor when dim is None): torch's own composition, an
    `index_select`. With only a tensor of counts, the indices that repeat each i counts[i] times."""
    if repeats is None:
        return Tensor._make(torch.repeat_interleave(unwrap(input), output_size=output_size), None)
    if dim is None:
        input, dim = input.reshape(-1), 0
    positions = torch.arange(input.shape[dim], device=input.device)
    repeats = unwrap(repeats)
    if isinstance(repeats, torch.Tensor):
        repeats = repeats.to(input.device)
    return IndexSelect.apply(input, dim, positions.repeat_interleave(repeats, output_size=output_size))


@register("Tensor.diagonal tinygraph.diagonal")
class Diagonal(Function):
    """The diagonal of the (dim1, dim2) planes as the last dim, `offset` above (> 0) or
    below (< 0) the main one: a view, as torch's."""

    view = True

    @staticmethod
    def forward(ctx, x, offset=0, dim1=0, dim2=1):
        ctx.shape, ctx.where = x.shape, (offset, dim1, dim2)
        return x.diagonal(offset, dim1, dim2)

    @staticmethod
    def backward(ctx, g):
        return g.new_zeros(ctx.shape).diagonal_scatter(g, *ctx.where)


@register("Tensor.diagonal_scatter tinygraph.diagonal_scatter")
class DiagonalScatter(Function):
    """`input` with `src` written on its diagonal (as `diagonal` reads it): the backward of `diagonal`."""

    @staticmethod
    def forward(ctx, x, src, offset=0, dim1=0, dim2=1):
        ctx.src_shape, ctx.where = src.shape, (offset, dim1, dim2)
        return x.diagonal_scatter(src, offset, dim1, dim2)

    @staticmethod
    def backward(ctx, g):
        dx, dsrc = ctx.needs_input_grad[:2]
        gx = g.diagonal_scatter(g.new_zeros(ctx.src_shape), *ctx.where) if dx else None
        return gx, (g.diagonal(*ctx.where) if dsrc else None)


@register("Tensor.diag_embed tinygraph.diag_embed")
class DiagEmbed(Function):
    """Matrices (in dims dim1, dim2) with the last dim of input on their `offset` diagonal, zeros elsewhere."""

    @staticmethod
    def forward(ctx, x, offset=0, dim1=-2, dim2=-1):
        ctx.where = (offset, dim1, dim2)
        return x.diag_embed(offset, dim1, dim2)

    @staticmethod
    def backward(ctx, g):
        return g.diagonal(*ctx.where)


@public("Tensor.diag tinygraph.diag")
def diag(input, diagonal=0):
    """A vector to the square matrix with it on its `diagonal`; a matrix to (a copy of) that diagonal."""
    if input.ndim == 1:
        return DiagEmbed.apply(input, diagonal, 0, 1)
    if input.ndim == 2:
        return Diagonal.apply(input, diagonal, 0, 1).clone()
    raise RuntimeError(f"diag(): Supports 1D or 2D tensors. Got {input.ndim}D")


@public("tinygraph.meshgrid")
def meshgrid(*tensors, indexing="ij"):
    """Coordinate grids: output i holds tensors[i] along its own dim, repeated along the
    others (views, by expand). indexing='xy' swaps the first two dims, as numpy's does."""
    if len(tensors) == 1 and isinstance(tensors[0], (list, tuple)):
        tensors = tuple(tensors[0])
    if indexing not in ("ij", "xy"):
        raise RuntimeError(f'torch.meshgrid: indexing must be one of "xy" or "ij", but received: {indexing}')
    for t in tensors:
        if t.ndim > 1:
            raise RuntimeError(f"torch.meshgrid: Expected 0D or 1D tensor in the tensor list but got: {t.ndim}D")
    require_one_dtype("meshgrid", **{f"tensors[{i}]": t for i, t in enumerate(tensors)})
    axis = list(range(len(tensors)))
    if indexing == "xy" and len(tensors) > 1:
        axis[0], axis[1] = 1, 0
    shape = [0] * len(tensors)
    for t, a in zip(tensors, axis):
        shape[a] = t.numel()
    return tuple(
        t.reshape([-1 if i == a else 1 for i in range(len(tensors))]).expand(shape) for t, a in zip(tensors, axis)
    )
