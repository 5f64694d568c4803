"""Specs of the writes (tinygraph/ops/write.py): `x[i] = v`, fill_, copy_, and writes
through views, each on a copy (`x * 1`) of a drawn input so that grads flow through it."""

import torch
from hypothesis import strategies as st

from tinygraph.testing import Diff, Spec, nonscalar_shapes, shrunk_to_broadcast, values

from .shape import advanced_index, as_torch, basic_index


def _setitem(t, index, value):
    t[index] = value
    return t


def _index_put(lib, F, x, index, v, accumulate=False, method="index_put"):
    """torch's index_put: the index as a tuple of tensors (a whole dim as an arange)."""
    index = index if isinstance(index, tuple) else (index,)
    arange = lib.arange(x.shape[0]).reshape(-1, 1)  # [:, ids] as [arange column, ids]
    index = tuple(arange if isinstance(i, slice) else i for i in index)
    return getattr(x, method)(index, v, accumulate=accumulate)


@st.composite
def region_inputs(draw, advanced=False, unique=True):
    """x, an index into it, and a value that broadcasts to the indexed region."""
    shape = draw(nonscalar_shapes)
    index = draw(advanced_index(shape, unique)) if advanced else draw(basic_index(shape))
    region = tuple(torch.zeros(shape)[as_torch(index)].shape)
    value = Diff(draw(values(draw(shrunk_to_broadcast(region)))))
    return (Diff(draw(values(shape))), index, value), {}


@st.composite
def two_inputs(draw):
    shape = draw(nonscalar_shapes)
    return (Diff(draw(values(shape))), Diff(draw(values(draw(shrunk_to_broadcast(shape)))))), {}


def _through_view(lib, F, x, y):
    """A write through a view changes its base: both must carry the new history."""
    base = x * 1
    view = base[0]
    view.mul_(y[0] if y.ndim == x.ndim else y)
    return base * 2, view


SPECS = {
    "CopySlices": [
        Spec(region_inputs(), lambda lib, F, x, index, v: _setitem(x * 1, index, v)),
        Spec(two_inputs(), _through_view),
        Spec(two_inputs(), lambda lib, F, x, y: _setitem(x * 1, (Ellipsis, slice(0, 1)), y.sum() * 3)),
    ],
    "IndexPut": [
        Spec(region_inputs(advanced=True), lambda lib, F, x, index, v: _setitem(x * 1, index, v)),
        Spec(  # a repeated index: one write wins, but torch sends every copy's grad to the value
            region_inputs(advanced=True, unique=False),
            lambda lib, F, x, index, v: _setitem(x * 1, index, v),
            finite_differences=False,
        ),
        Spec(region_inputs(advanced=True), _index_put),
        Spec(  # accumulate: repeated positions add up
            region_inputs(advanced=True, unique=False),
            lambda lib, F, x, index, v: _index_put(lib, F, x, index, v, accumulate=True),
        ),
        Spec(
            region_inputs(advanced=True, unique=False),
            lambda lib, F, x, index, v: _index_put(lib, F, x * 1, index, v, True, "index_put_") * x,
        ),
    ],
    "Fill": [
        Spec(two_inputs(), lambda lib, F, x, y: (x * 1).fill_(2.5) + x),
        Spec(two_inputs(), lambda lib, F, x, y: (x * 1).fill_(y.sum()) * x),
        Spec(two_inputs(), lambda lib, F, x, y: (x * 1).zero_() + y),
    ],
    "Copy": [Spec(two_inputs(), lambda lib, F, x, y: (x * 1).copy_(y) * x)],
}
