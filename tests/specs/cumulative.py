"""Specs of the cumulative ops (tinygraph/ops/cumulative.py)."""

import torch
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from tinygraph.testing import Diff, Spec, grid, shapes, values

from .reduce import with_zeros

small_shapes = hnp.array_shapes(min_dims=0, max_dims=2, min_side=1, max_side=4)


@st.composite
def along_inputs(draw, elements=values, shapes=shapes):
    """An input of any shape (0-dim too) and a dim of it, negative or not."""
    shape = draw(shapes)
    rank = max(len(shape), 1)
    return (Diff(draw(elements(shape))),), {"dim": draw(st.integers(-rank, rank - 1))}


SPECS = {
    "Cumsum": [
        Spec(along_inputs(), lambda lib, F, x, dim: x.cumsum(dim)),
        Spec(along_inputs(), lambda lib, F, x, dim: lib.cumsum(x, dim=dim) * x),
        Spec(along_inputs(), lambda lib, F, x, dim: x.cumsum(dim, dtype=torch.float32), finite_differences=False),
    ],
    "Cumprod": [
        # (second order differentiates the composite, an (n, n) table per row: small shapes)
        Spec(along_inputs(shapes=small_shapes), lambda lib, F, x, dim: x.cumprod(dim)),
        # zeros: exact grads, as torch's (a polynomial: finite differences are exact there too)
        Spec(along_inputs(with_zeros, small_shapes), lambda lib, F, x, dim: lib.cumprod(x, dim) * x),
    ],
    "LogCumSumExp": [
        Spec(along_inputs(), lambda lib, F, x, dim: x.logcumsumexp(dim)),
        Spec(
            along_inputs(), lambda lib, F, x, dim: lib.logcumsumexp(x * 30, dim)
        ),  # where exp would overflow a float32
    ],
    "PickAlongDim": [
        Spec(along_inputs(grid), lambda lib, F, x, dim: x.cummax(dim).values),
        Spec(along_inputs(grid), lambda lib, F, x, dim: lib.cummin(x, dim)[0] * x),
        # ties: the grad goes to torch's index (not a derivative: no finite differences)
        Spec(along_inputs(with_zeros), lambda lib, F, x, dim: x.cummax(dim)[0], finite_differences=False),
    ],
}
