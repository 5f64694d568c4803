"""Specs of the reductions (tinygraph/ops/reduce.py)."""

import numpy as np
from hypothesis import assume
from hypothesis import strategies as st

from tinygraph.testing import Diff, Spec, grid, nonscalar_shapes, reduction, reduction_inputs, values


@st.composite
def var_inputs(draw, elements=values, at_least=1):
    """`at_least`: elements per reduced group beyond the correction (std's grad needs two distinct ones)."""
    (x,), kw = draw(reduction_inputs(elements))
    correction = draw(st.sampled_from([0, 1]))
    dims = range(x.value.ndim) if kw["dim"] is None else np.atleast_1d(kw["dim"])
    assume(int(np.prod([x.value.shape[d] for d in dims])) >= correction + at_least)
    return (x,), {**kw, "correction": correction}


@st.composite
def maxdim_inputs(draw):
    shape = draw(nonscalar_shapes)
    return (Diff(draw(grid(shape))),), {
        "dim": draw(st.integers(-len(shape), len(shape) - 1)),
        "keepdim": draw(st.booleans()),
    }


SPECS = {
    "Sum": [reduction(lambda lib, F, x, **kw: x.sum(**kw))],
    "Mean": [reduction(lambda lib, F, x, **kw: x.mean(**kw))],
    "Var": [Spec(var_inputs(), lambda lib, F, x, **kw: x.var(**kw))],
    "Std": [Spec(var_inputs(grid, at_least=2), lambda lib, F, x, **kw: x.std(**kw), tolerances={"atol": 1e-4})],
    "MaxDim": [
        Spec(maxdim_inputs(), lambda lib, F, x, dim, keepdim: x.max(dim, keepdim).values),
        Spec(maxdim_inputs(), lambda lib, F, x, dim, keepdim: lib.min(x, dim, keepdim).values),
    ],
    "Amax": [
        reduction(lambda lib, F, x, dim, keepdim: x.amax(dim, keepdim), elements=grid, allow_none=False),
        reduction(lambda lib, F, x, dim, keepdim: lib.amin(x, dim, keepdim), elements=grid, allow_none=False),
        Spec(maxdim_inputs(), lambda lib, F, x, dim, keepdim: x.max()),
    ],
    "LogSumExp": [reduction(lambda lib, F, x, dim, keepdim: x.logsumexp(dim, keepdim), allow_none=False)],
}
