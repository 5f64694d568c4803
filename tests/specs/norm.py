"""Specs of the norms (tinygraph/ops/norm.py)."""

import math

import numpy as np
from hypothesis import assume
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from tinygraph.testing import Diff, Spec, dims_of, nonscalar_shapes, shapes

ORDS = [2, 1, 3, 0.5, 1.5, -1, 0, math.inf, -math.inf]


def distinct_magnitudes(shape):
    """Nonzero values whose magnitudes all differ (no ties for inf norms, no kinks at 0)."""
    n = int(np.prod(shape))
    magnitudes = st.lists(st.integers(1, 80), min_size=n, max_size=n, unique=True)
    signs = hnp.arrays(np.float64, shape, elements=st.sampled_from([-1.0, 1.0]))
    return st.tuples(magnitudes, signs).map(lambda t: np.reshape(np.array(t[0]) / 20 + 0.025, shape) * t[1])


@st.composite
def vector_norm_inputs(draw):
    shape = draw(shapes)
    x = Diff(draw(distinct_magnitudes(shape)))
    kwargs = {"ord": draw(st.sampled_from(ORDS)), "dim": draw(dims_of(len(shape))), "keepdim": draw(st.booleans())}
    return (x,), kwargs


@st.composite
def matrix_norm_inputs(draw):
    shape = draw(hnp.array_shapes(min_dims=2, max_dims=3, max_side=4))
    dims = tuple(draw(st.permutations(range(-len(shape), 0)))[:2])
    ord = draw(st.sampled_from(["fro", 1, -1, math.inf, -math.inf]))
    x = draw(distinct_magnitudes(shape))
    if ord != "fro":  # the largest (smallest) column or row sum must be unique: no kink
        summed, over = (dims[0], dims[1]) if abs(ord) == 1 else (dims[1], dims[0])
        sums = np.sort(np.moveaxis(np.abs(x).sum(summed, keepdims=True), over, -1), -1)
        assume(sums.shape[-1] == 1 or np.diff(sums, axis=-1)[..., 0 if ord < 0 else -1].min() > 1e-3)
    return (Diff(x),), {"ord": ord, "dim": dims, "keepdim": draw(st.booleans())}


@st.composite
def norm_inputs(draw):
    """torch.norm's spellings: p a number or 'fro', dim an int, a tuple or None."""
    shape = draw(nonscalar_shapes)
    p = draw(st.sampled_from(["fro", 2, 1, 3, math.inf]))
    dim = draw(dims_of(len(shape), allow_tuple=p != "fro" or len(shape) <= 2))
    return (Diff(draw(distinct_magnitudes(shape))),), {"p": p, "dim": dim, "keepdim": draw(st.booleans())}


def _linalg_norm(lib, F, x, ord, dim, keepdim):
    if isinstance(ord, str) or x.ndim > 2:  # torch's choice: a matrix norm over two dims, else a vector norm
        return lib.linalg.norm(x, ord, dim, keepdim)
    return lib.linalg.norm(x.reshape(-1), None if ord == -math.inf else ord, keepdim=keepdim)


SPECS = {
    "VectorNorm": [
        Spec(vector_norm_inputs(), lambda lib, F, x, **kw: lib.linalg.vector_norm(x, **kw)),
        Spec(norm_inputs(), lambda lib, F, x, **kw: x.norm(**kw)),
        Spec(norm_inputs(), lambda lib, F, x, p, dim, keepdim: lib.norm(x, p, dim, keepdim)),
        Spec(matrix_norm_inputs(), lambda lib, F, x, **kw: lib.linalg.matrix_norm(x, **kw)),
        Spec(matrix_norm_inputs(), _linalg_norm),
        # at 0, torch's grad (0), which is not a derivative
        Spec(
            vector_norm_inputs(),
            lambda lib, F, x, **kw: lib.linalg.vector_norm(x * 0, **kw) + x.sum(),
            finite_differences=False,
        ),
    ],
}
