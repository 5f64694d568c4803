"""Specs of sorting, selecting and scattering (tinygraph/ops/select.py)."""

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from tinygraph.testing import Const, Diff, Spec, away_from_zero, grid, nonscalar_shapes, shapes, values

from .cumulative import along_inputs
from .reduce import with_zeros


@st.composite
def topk_inputs(draw):
    (x,), kw = draw(along_inputs(grid))
    size = x.value.shape[kw["dim"]] if x.value.ndim else 1
    return (x,), {**kw, "k": draw(st.integers(1, size)), "largest": draw(st.booleans())}


@st.composite
def masked_select_inputs(draw):
    x_shape, mask_shape = draw(hnp.mutually_broadcastable_shapes(num_shapes=2, max_dims=3, max_side=3)).input_shapes
    return (Diff(draw(values(x_shape))), Const(draw(hnp.arrays(np.bool_, mask_shape)))), {}


@st.composite
def take_inputs(draw):
    shape = draw(shapes)
    n = int(np.prod(shape))
    index = draw(hnp.arrays(np.int64, draw(shapes), elements=st.integers(-n, n - 1)))
    return (Diff(draw(values(shape))), Const(index)), {}


@st.composite
def take_along_dim_inputs(draw):
    """Input and indices broadcast against each other but along `dim` (or flat positions: dim None)."""
    shape = draw(nonscalar_shapes)
    if draw(st.booleans()):
        n = int(np.prod(shape))
        index = draw(hnp.arrays(np.int64, draw(shapes), elements=st.integers(0, n - 1)))
        return (Diff(draw(values(shape))), Const(index)), {"dim": None}
    dim = draw(st.integers(-len(shape), len(shape) - 1))
    x_shape = tuple(1 if draw(st.booleans()) else s for s in shape)
    index_shape = [1 if draw(st.booleans()) else s for s in shape]
    index_shape[dim] = draw(st.integers(1, 4))
    index = draw(hnp.arrays(np.int64, tuple(index_shape), elements=st.integers(0, x_shape[dim] - 1)))
    return (Diff(draw(values(x_shape))), Const(index)), {"dim": dim}


@st.composite
def index_fill_inputs(draw):
    shape = draw(nonscalar_shapes)
    dim = draw(st.integers(-len(shape), len(shape) - 1))
    index = np.array(draw(st.lists(st.integers(0, shape[dim] - 1), min_size=1, max_size=4)))  # repeats too
    value = Diff(draw(values(()))) if draw(st.booleans()) else draw(st.floats(-2, 2))
    return (Diff(draw(values(shape))), dim, Const(index), value), {}


@st.composite
def scatter_inputs(draw, distinct_places=True, elements=values):
    """x, a dim, an index no larger than x (but along dim) and a src at least as large as the
    index. `distinct_places`: no place written twice (scatter's result would depend on the order)."""
    shape = draw(nonscalar_shapes)
    dim = draw(st.integers(0, len(shape) - 1))
    index_shape = [draw(st.integers(1, s)) for s in shape]
    if distinct_places:
        index_shape[dim] = draw(st.integers(1, shape[dim]))
        keys = draw(
            hnp.arrays(np.float64, (*index_shape[:dim], shape[dim], *index_shape[dim + 1 :]), elements=st.floats(0, 1))
        )
        index = np.take(np.argsort(keys, axis=dim, kind="stable"), range(index_shape[dim]), axis=dim)
    else:
        index_shape[dim] = draw(st.integers(1, 4))
        index = draw(hnp.arrays(np.int64, tuple(index_shape), elements=st.integers(0, shape[dim] - 1)))
    src_shape = tuple(s + draw(st.integers(0, 1)) for s in index.shape)  # src may be larger than index
    if elements is None:  # every value of x and src distinct from all the others (no ties)
        both = draw(grid((int(np.prod(shape)) + int(np.prod(src_shape)),)))
        x, src = both[: int(np.prod(shape))].reshape(shape), both[int(np.prod(shape)) :].reshape(src_shape)
    else:
        x, src = draw(elements(shape)), draw(elements(src_shape))
    return (Diff(x), dim, Const(index), Diff(src)), {}


@st.composite
def scatter_reduce_inputs(draw, reduces=("sum", "mean", "prod", "amax", "amin"), elements=values):
    reduce = draw(st.sampled_from(reduces))
    if reduce in ("amax", "amin"):
        elements = None
    elif reduce == "prod" and elements is values:
        elements = away_from_zero
    args, _ = draw(scatter_inputs(distinct_places=False, elements=elements))
    return args, {"reduce": reduce, "include_self": draw(st.booleans())}


def _scatter_value(lib, F, x, dim, index, src):
    return lib.scatter(x, dim, index, value=1.5) * src.sum()


def _scatter_add(lib, F, x, dim, index, src):
    return x.scatter(dim, index, src, reduce="add")  # torch's deprecated form: scatter_reduce's sum


def scatter_spec(inputs, call, **kw):
    """A spec whose src may be larger than its index: torch's backward refuses that (tinygraph
    gives zeros to the part not read), so torch is given the part that is read."""

    def torch_call(lib, F, x, dim, index, src, **kwargs):
        if call is _scatter_add:  # torch has no backward for reduce=
            return x.scatter_reduce(dim, index, src[tuple(slice(0, n) for n in index.shape)], "sum")
        return call(lib, F, x, dim, index, src[tuple(slice(0, n) for n in index.shape)], **kwargs)

    return Spec(inputs, call, torch_call=torch_call, **kw)


SPECS = {
    "PickAlongDim": [
        Spec(along_inputs(grid), lambda lib, F, x, dim: x.sort(dim).values),
        Spec(along_inputs(grid), lambda lib, F, x, dim: lib.sort(x, dim, descending=True)[0] * x),
        # ties: stable keeps their order, and the grads follow the indices (not a derivative)
        Spec(
            along_inputs(with_zeros), lambda lib, F, x, dim: x.sort(dim=dim, stable=True)[0], finite_differences=False
        ),
        Spec(along_inputs(grid), lambda lib, F, x, dim: x.msort() if x.ndim else x * 1),
        Spec(topk_inputs(), lambda lib, F, x, **kw: x.topk(**kw).values),
        Spec(topk_inputs(), lambda lib, F, x, dim, k, largest: lib.topk(x, k, dim, largest, sorted=False)[0].sum(dim)),
    ],
    "GetItem": [
        Spec(masked_select_inputs(), lambda lib, F, x, mask: x.masked_select(mask)),
        Spec(masked_select_inputs(), lambda lib, F, x, mask: lib.masked_select(x, mask) * 2),
        Spec(take_inputs(), lambda lib, F, x, index: x.take(index)),
        Spec(take_inputs(), lambda lib, F, x, index: lib.take(x, index)),
    ],
    "Gather": [
        Spec(take_along_dim_inputs(), lambda lib, F, x, index, dim: x.take_along_dim(index, dim)),
        Spec(take_along_dim_inputs(), lambda lib, F, x, index, dim: lib.take_along_dim(x, index, dim=dim)),
    ],
    "IndexFill": [
        Spec(index_fill_inputs(), lambda lib, F, x, dim, index, value: x.index_fill(dim, index, value)),
        Spec(index_fill_inputs(), lambda lib, F, x, dim, index, value: (x * 1).index_fill_(dim, index, value) * x),
    ],
    "Scatter": [
        scatter_spec(scatter_inputs(), lambda lib, F, x, dim, index, src: x.scatter(dim, index, src)),
        scatter_spec(scatter_inputs(), lambda lib, F, x, dim, index, src: (x * 1).scatter_(dim, index, src) * x),
        Spec(scatter_inputs(), _scatter_value),
    ],
    "ScatterReduce": [
        scatter_spec(
            scatter_reduce_inputs(), lambda lib, F, x, dim, index, src, **kw: x.scatter_reduce(dim, index, src, **kw)
        ),
        scatter_spec(
            scatter_reduce_inputs(),
            lambda lib, F, x, dim, index, src, **kw: (x * 1).scatter_reduce_(dim, index, src, **kw) * x,
        ),
        scatter_spec(scatter_inputs(distinct_places=False), _scatter_add),
        # zeros in a product: exact first-order grads (second order: torch's error when two zeros meet)
        scatter_spec(
            scatter_reduce_inputs(("prod",), with_zeros),
            lambda lib, F, x, dim, index, src, **kw: lib.scatter_reduce(x, dim, index, src, **kw),
            second_order=False,
        ),
    ],
}
