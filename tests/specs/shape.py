"""Specs of the ops that move values (tinygraph/ops/shape.py)."""

import numpy as np
import torch
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from tinygraph.testing import Const, Diff, Spec, nonscalar_shapes, shapes, shrunk_to_broadcast, values


@st.composite
def reshape_inputs(draw):
    shape = draw(shapes)
    n = int(np.prod(shape))
    targets = [(-1,), (n, 1), (1, n), tuple(reversed(shape)), (1, *shape), *([()] if n == 1 else [])]
    target = draw(st.sampled_from(targets))
    return (Diff(draw(values(shape))),), {"shape": target}


@st.composite
def permute_inputs(draw):
    shape = draw(nonscalar_shapes)
    return (Diff(draw(values(shape))),), {"dims": tuple(draw(st.permutations(range(len(shape)))))}


@st.composite
def expand_inputs(draw):
    target = draw(nonscalar_shapes)
    return (Diff(draw(values(draw(shrunk_to_broadcast(target))))),), {"shape": target}


@st.composite
def basic_index(draw, shape):
    parts = []
    for size in shape:
        kind = draw(st.sampled_from(["slice", "int", "all"]))
        if kind == "int":
            parts.append(draw(st.integers(-size, size - 1)))
        elif kind == "slice":
            start = draw(st.integers(0, size - 1))
            parts.append(slice(start, draw(st.integers(start + 1, size)), draw(st.integers(1, 2))))
        else:
            parts.append(slice(None))
    if parts and draw(st.booleans()):
        parts.insert(draw(st.integers(0, len(parts))), None)
    if len(parts) > 1 and draw(st.booleans()):
        parts = [Ellipsis, *parts[len(parts) // 2 :]]
    return tuple(parts)


@st.composite
def advanced_index(draw, shape, unique=False):
    """Repeated ids (whose grads must add up; `unique`: no repeats), ids on the second dim, or a boolean mask."""
    kind = draw(st.sampled_from(["ints", "ints_dim1", "mask"]))
    if kind == "ints":
        ids = st.lists(st.integers(0, shape[0] - 1), min_size=1, max_size=5, unique=unique)
        return Const(np.array(draw(ids)))
    if kind == "ints_dim1" and len(shape) > 1:
        ids = st.lists(st.integers(0, shape[1] - 1), min_size=1, max_size=4, unique=unique)
        return (slice(None), Const(np.array(draw(ids))))
    return Const(draw(hnp.arrays(np.bool_, shape[:1])))


@st.composite
def getitem_inputs(draw, kinds=("basic", "advanced")):
    shape = draw(nonscalar_shapes)
    kind = draw(st.sampled_from(kinds))
    index = draw(basic_index(shape)) if kind == "basic" else draw(advanced_index(shape))
    return (Diff(draw(values(shape))), index), {}


@st.composite
def numpy_index_inputs(draw):
    """Indices as a user writes them: numpy int arrays, Python lists, numpy ints."""
    shape = draw(nonscalar_shapes)
    ids = draw(st.lists(st.integers(0, shape[0] - 1), min_size=1, max_size=5))
    kind = draw(st.sampled_from(["numpy", "list", "numpy_int"]))
    index = {"numpy": np.array(ids), "list": ids, "numpy_int": np.int64(ids[0])}[kind]
    return (Diff(draw(values(shape))), index), {}


def _getitem_backward_torch(lib, F, g, shape, index):
    # torch reference: the VJP of x[index], kept differentiable in g
    x = torch.zeros(shape, dtype=g.dtype, device=g.device, requires_grad=True)
    return torch.autograd.grad((x[index] * g).sum(), x, create_graph=True)[0]


def _getitem_backward_tg(lib, F, g, shape, index):
    from tinygraph.ops.shape import GetItemBackward

    return GetItemBackward.apply(g, torch.Size(shape), index.data if hasattr(index, "data") else _parts(index))


def _parts(index):
    return tuple(p.data if hasattr(p, "data") else p for p in index) if isinstance(index, tuple) else index


def as_torch(index):
    """A drawn index (Consts inside) as torch takes it."""
    if isinstance(index, tuple):
        return tuple(torch.as_tensor(p.value) if isinstance(p, Const) else p for p in index)
    return torch.as_tensor(index.value) if isinstance(index, Const) else index


@st.composite
def getitem_backward_inputs(draw):
    (x, index), _ = draw(getitem_inputs())
    probe = torch.zeros(x.value.shape)[as_torch(index)]
    return (Diff(draw(values(tuple(probe.shape)))), x.value.shape, index), {}


@st.composite
def join_inputs(draw, same_shape):
    shape = list(draw(nonscalar_shapes))
    dim = draw(st.integers(-len(shape), len(shape) - 1))
    parts = []
    for _ in range(draw(st.integers(1, 3))):
        if not same_shape:
            shape[dim] = draw(st.integers(1, 3))
        parts.append(Diff(draw(values(tuple(shape)))))
    return tuple(parts), {"dim": dim}


@st.composite
def gather_inputs(draw):
    shape = draw(nonscalar_shapes)
    dim = draw(st.integers(0, len(shape) - 1))
    index_shape = tuple(draw(st.integers(1, 4)) if d == dim else draw(st.integers(1, s)) for d, s in enumerate(shape))
    index = draw(hnp.arrays(np.int64, index_shape, elements=st.integers(0, shape[dim] - 1)))
    return (Diff(draw(values(shape))), dim, Const(index)), {}


@st.composite
def scatter_add_inputs(draw):
    (x, dim, index), _ = draw(gather_inputs())
    shape_ok = all(i <= s for d, (i, s) in enumerate(zip(index.value.shape, x.value.shape)) if d != dim)
    if not shape_ok:  # shrink the index to fit
        index = Const(index.value[tuple(slice(0, s) if d != dim else slice(None) for d, s in enumerate(x.value.shape))])
    return (x, dim, index, Diff(draw(values(index.value.shape)))), {}


@st.composite
def index_select_inputs(draw, add=False):
    shape = draw(nonscalar_shapes)
    dim = draw(st.integers(0, len(shape) - 1))
    index = np.array(draw(st.lists(st.integers(0, shape[dim] - 1), min_size=1, max_size=5)))
    if not add:
        return (Diff(draw(values(shape))), dim, Const(index)), {}
    source_shape = tuple(len(index) if d == dim else s for d, s in enumerate(shape))
    return (Diff(draw(values(shape))), dim, Const(index), Diff(draw(values(source_shape)))), {}


@st.composite
def matrix_inputs(draw):
    shape = draw(st.lists(st.integers(1, 4), min_size=2, max_size=3).map(tuple))
    return (Diff(draw(values(shape))),), {"diagonal": draw(st.integers(-2, 2))}


@st.composite
def flip_inputs(draw):
    shape = draw(shapes)
    dims = (
        draw(
            st.lists(st.integers(-len(shape), len(shape) - 1), max_size=len(shape), unique_by=lambda d: d % len(shape))
        )
        if shape
        else []
    )
    return (Diff(draw(values(shape))),), {"dims": tuple(dims)}


@st.composite
def roll_inputs(draw):
    shape = draw(nonscalar_shapes)
    if draw(st.booleans()):
        return (Diff(draw(values(shape))),), {"shifts": draw(st.integers(-5, 5)), "dims": None}
    dims = draw(st.lists(st.integers(-len(shape), len(shape) - 1), min_size=1, max_size=len(shape)))
    shifts = draw(st.lists(st.integers(-5, 5), min_size=len(dims), max_size=len(dims)))
    if len(dims) == 1 and draw(st.booleans()):
        return (Diff(draw(values(shape))),), {"shifts": shifts[0], "dims": dims[0]}
    return (Diff(draw(values(shape))),), {"shifts": tuple(shifts), "dims": tuple(dims)}


@st.composite
def repeat_inputs(draw):
    shape = draw(shapes)
    extra = draw(st.integers(0 if shape else 1, 2))
    return (Diff(draw(values(shape))),), {"repeats": tuple(draw(st.integers(1, 3)) for _ in range(len(shape) + extra))}


@st.composite
def repeat_interleave_inputs(draw):
    shape = draw(shapes)
    dim = draw(st.one_of(st.none(), st.integers(-len(shape), len(shape) - 1))) if shape else None
    n = int(np.prod(shape)) if dim is None else shape[dim]
    if draw(st.booleans()):
        repeats = draw(st.integers(0, 3))
    else:
        repeats = Const(
            draw(hnp.arrays(np.int64, (n,) if n > 1 or draw(st.booleans()) else (), elements=st.integers(0, 3)))
        )
    return (Diff(draw(values(shape))), repeats), {"dim": dim}


@st.composite
def diagonal_inputs(draw, scatter=False):
    shape = draw(hnp.array_shapes(min_dims=2, max_dims=3, max_side=4))
    dim1, dim2 = draw(st.permutations(range(-len(shape), 0)))[:2]
    offset = draw(st.integers(-2, 2))
    args = [Diff(draw(values(shape)))]
    if scatter:
        args.append(Diff(draw(values(tuple(np.zeros(shape).diagonal(offset, dim1, dim2).shape)))))
    return tuple(args), {"offset": offset, "dim1": dim1, "dim2": dim2}


@st.composite
def diag_embed_inputs(draw):
    shape = draw(nonscalar_shapes)
    dims = draw(st.permutations(range(-len(shape) - 1, 0)))[:2]
    return (Diff(draw(values(shape))),), {"offset": draw(st.integers(-2, 2)), "dim1": dims[0], "dim2": dims[1]}


@st.composite
def diag_inputs(draw):
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=2, max_side=4))
    return (Diff(draw(values(shape))),), {"diagonal": draw(st.integers(-2, 2))}


@st.composite
def meshgrid_inputs(draw):
    n = draw(st.integers(1, 3))
    return tuple(Diff(draw(values(draw(st.sampled_from([(), (1,), (2,), (3,)]))))) for _ in range(n)), {
        "indexing": draw(st.sampled_from(["ij", "xy"]))
    }


def _meshgrid(lib, F, *xs, indexing):
    grids = lib.meshgrid(*xs, indexing=indexing)
    return [g * (i + 1) for i, g in enumerate(grids)]


def _larger_src(call):
    """torch's scatter_add backward refuses a src larger than the index; tinygraph sends
    zeros to the part not read. torch is given the part that is read."""

    def torch_call(lib, F, x, dim, index, src):
        return call(lib, F, x, dim, index, src[tuple(slice(0, n) for n in index.shape)])

    return torch_call


def _scatter_add(lib, F, x, dim, index, src):
    return lib.scatter_add(x, dim, index, src)


@st.composite
def larger_src_inputs(draw):
    (x, dim, index, src), _ = draw(scatter_add_inputs())
    return (x, dim, index, Diff(draw(values(tuple(s + draw(st.integers(0, 1)) for s in src.value.shape))))), {}


SPECS = {
    "Reshape": [
        Spec(reshape_inputs(), lambda lib, F, x, shape: x.reshape(shape)),
        Spec(reshape_inputs(), lambda lib, F, x, shape: x.view(shape)),
        Spec(permute_inputs(), lambda lib, F, x, dims: x.flatten().unsqueeze(0).squeeze()),
        Spec(permute_inputs(), lambda lib, F, x, dims: x.unflatten(0, (1, x.shape[0])).view_as(x)),
    ],
    "Permute": [
        Spec(permute_inputs(), lambda lib, F, x, dims: x.permute(dims)),
        Spec(permute_inputs(), lambda lib, F, x, dims: x.transpose(0, -1).mT if x.ndim > 1 else x.t()),
        Spec(permute_inputs(), lambda lib, F, x, dims: lib.movedim(x, 0, -1)),
        Spec(permute_inputs(), lambda lib, F, x, dims: x.T if x.ndim <= 2 else x.mT),
    ],
    "Expand": [
        Spec(expand_inputs(), lambda lib, F, x, shape: x.expand(shape)),
        Spec(
            expand_inputs(),
            lambda lib, F, x, shape: x.expand(*(-1 if i >= len(shape) - x.ndim else s for i, s in enumerate(shape)))[
                :1
            ],
        ),
    ],
    "GetItem": [
        Spec(getitem_inputs(), lambda lib, F, x, index: x[index]),
        Spec(numpy_index_inputs(), lambda lib, F, x, index: x[index]),
        Spec(join_inputs(same_shape=True), lambda lib, F, *xs, dim: xs[0].narrow(dim, 0, 1)),
    ],
    "Split": [
        Spec(join_inputs(same_shape=True), lambda lib, F, *xs, dim: xs[0].split(2, dim)),
        Spec(join_inputs(same_shape=True), lambda lib, F, *xs, dim: xs[0].chunk(3, dim)[-1]),  # unused pieces
    ],
    "Unbind": [Spec(join_inputs(same_shape=True), lambda lib, F, *xs, dim: xs[0].unbind(dim)[::2])],
    "GetItemBackward": [
        Spec(getitem_backward_inputs(), _getitem_backward_tg, torch_call=_getitem_backward_torch),
    ],
    "Cat": [Spec(join_inputs(same_shape=False), lambda lib, F, *xs, dim: lib.cat(xs, dim))],
    "Stack": [Spec(join_inputs(same_shape=True), lambda lib, F, *xs, dim: lib.stack(xs, dim))],
    "Gather": [Spec(gather_inputs(), lambda lib, F, x, dim, index: x.gather(dim, index))],
    "ScatterAdd": [
        Spec(scatter_add_inputs(), lambda lib, F, x, dim, index, src: x.scatter_add(dim, index, src)),
        Spec(larger_src_inputs(), _scatter_add, torch_call=_larger_src(_scatter_add)),
    ],
    "IndexSelect": [
        Spec(index_select_inputs(), lambda lib, F, x, dim, index: x.index_select(dim, index)),
        Spec(repeat_interleave_inputs(), lambda lib, F, x, repeats, dim: x.repeat_interleave(repeats, dim)),
        Spec(repeat_interleave_inputs(), lambda lib, F, x, repeats, dim: lib.repeat_interleave(x, repeats, dim=dim)),
    ],
    "IndexAdd": [Spec(index_select_inputs(add=True), lambda lib, F, x, dim, index, src: x.index_add(dim, index, src))],
    "Tril": [
        Spec(matrix_inputs(), lambda lib, F, x, diagonal: x.tril(diagonal)),
        Spec(matrix_inputs(), lambda lib, F, x, diagonal: lib.triu(x, diagonal) * 3 + x),
    ],
    "Flip": [
        Spec(flip_inputs(), lambda lib, F, x, dims: x.flip(dims)),
        Spec(flip_inputs(), lambda lib, F, x, dims: (x.flip(*dims) if dims else x * 2) * x),
        Spec(flip_inputs(), lambda lib, F, x, dims: lib.flip(x, dims=dims)),
        Spec(diag_inputs(), lambda lib, F, x, diagonal: x.flipud() if x.ndim == 1 else lib.fliplr(x)),
    ],
    "Roll": [
        Spec(roll_inputs(), lambda lib, F, x, shifts, dims: x.roll(shifts, dims)),
        Spec(roll_inputs(), lambda lib, F, x, shifts, dims: lib.roll(x, shifts=shifts, dims=dims) * x),
    ],
    "Repeat": [
        Spec(repeat_inputs(), lambda lib, F, x, repeats: x.repeat(repeats)),
        Spec(repeat_inputs(), lambda lib, F, x, repeats: x.repeat(*repeats)),
        Spec(repeat_inputs(), lambda lib, F, x, repeats: lib.tile(x, repeats[1:]) * 2),
    ],
    "Diagonal": [
        Spec(diagonal_inputs(), lambda lib, F, x, **kw: x.diagonal(**kw)),
        Spec(diagonal_inputs(), lambda lib, F, x, **kw: lib.diagonal(x, kw["offset"]) * 3 + x.sum()),
        Spec(diag_inputs(), lambda lib, F, x, diagonal: lib.diag(x, diagonal) if x.ndim == 2 else x.diag()),
    ],
    "DiagonalScatter": [
        Spec(diagonal_inputs(scatter=True), lambda lib, F, x, src, **kw: x.diagonal_scatter(src, **kw)),
        Spec(diagonal_inputs(scatter=True), lambda lib, F, x, src, **kw: lib.diagonal_scatter(x, src, **kw) * x),
    ],
    "DiagEmbed": [
        Spec(diag_embed_inputs(), lambda lib, F, x, **kw: x.diag_embed(**kw)),
        Spec(diag_embed_inputs(), lambda lib, F, x, offset, **kw: lib.diag_embed(x, offset)),
        Spec(diag_inputs(), lambda lib, F, x, diagonal: lib.diag(x, diagonal) if x.ndim == 1 else x.diag()),
    ],
}
SPECS["Expand"].append(Spec(meshgrid_inputs(), _meshgrid))
