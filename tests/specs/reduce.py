"""Specs of the reductions (tinygraph/ops/reduce.py)."""

import numpy as np
import torch
from hypothesis import assume
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from tinygraph.testing import Diff, Spec, grid, reduction, reduction_inputs, shapes, values


@st.composite
def var_inputs(draw, elements=values, at_least=1):
    """`at_least`: elements per reduced group beyond the correction (std's grad needs two distinct ones)."""
    (x,), kw = draw(reduction_inputs(elements))
    correction = draw(st.sampled_from([0, 1]))
    dims = range(x.value.ndim) if kw["dim"] is None else np.atleast_1d(kw["dim"])
    assume(int(np.prod([x.value.shape[d] for d in dims])) >= correction + at_least)
    return (x,), {**kw, "correction": correction}


@st.composite
def dim_inputs(draw, elements=grid):
    """An input of any shape (0-dim too) and one dim of it."""
    shape = draw(shapes)
    rank = max(len(shape), 1)
    return (Diff(draw(elements(shape))),), {"dim": draw(st.integers(-rank, rank - 1)), "keepdim": draw(st.booleans())}


def with_zeros(shape):
    """Values with many exact zeros (and ones, and repeats): where products need care."""
    return hnp.arrays(np.float64, shape, elements=st.sampled_from([0.0, 0.0, 1.0, -0.5, 1.5, -2.0]))


def not_tiny(shape):
    """Values in [-2, 2], none smaller in size than 1e-3: torch's double backward of prod
    divides by the input and is wrong for the tiniest floats (5e219 for an exact -2.4 at an
    element of 2e-240; ours is exact), so there torch is no oracle."""
    return hnp.arrays(np.float64, shape, elements=st.floats(-2, 2).filter(lambda v: abs(v) >= 1e-3))


def _unbiased(lib, F, x, dim, keepdim, correction):
    # torch's older spellings: unbiased in the place of dim (all dims), or after dim
    return x.std(bool(correction)) if dim is None else x.std(dim, bool(correction), keepdim)


SPECS = {
    "Sum": [
        reduction(lambda lib, F, x, **kw: x.sum(**kw)),
        reduction(lambda lib, F, x, dim, keepdim: lib.sum(x, axis=dim, keepdims=keepdim)),
        reduction(lambda lib, F, x, **kw: x.sum(**kw, dtype=torch.float32), finite_differences=False),
    ],
    "Mean": [
        reduction(lambda lib, F, x, **kw: x.mean(**kw)),
        reduction(lambda lib, F, x, dim, keepdim: x.mean(axis=dim, keepdims=keepdim, dtype=torch.float64)),
    ],
    "Var": [
        Spec(var_inputs(), lambda lib, F, x, **kw: x.var(**kw)),
        Spec(var_inputs(), lambda lib, F, x, **kw: lib.var_mean(x, **kw)),
    ],
    "Std": [
        Spec(var_inputs(grid, at_least=2), lambda lib, F, x, **kw: x.std(**kw), tolerances={"atol": 1e-4}),
        Spec(var_inputs(grid, at_least=2), lambda lib, F, x, **kw: lib.std_mean(x, **kw), tolerances={"atol": 1e-4}),
        Spec(var_inputs(grid, at_least=2), _unbiased, tolerances={"atol": 1e-4}),
    ],
    "Prod": [
        Spec(dim_inputs(not_tiny), lambda lib, F, x, dim, keepdim: x.prod(dim, keepdim)),
        Spec(dim_inputs(with_zeros), lambda lib, F, x, dim, keepdim: lib.prod(x, dim, keepdim=keepdim)),
        Spec(dim_inputs(with_zeros), lambda lib, F, x, dim, keepdim: x.prod()),
        # (dtype= in float32 rounds differently from torch's formula, out/x: the integer dtypes are tested apart)
        Spec(dim_inputs(not_tiny), lambda lib, F, x, dim, keepdim: x.prod(dim, dtype=torch.float64)),
    ],
    "PickAlongDim": [
        Spec(dim_inputs(), lambda lib, F, x, dim, keepdim: x.max(dim, keepdim).values),
        Spec(dim_inputs(), lambda lib, F, x, dim, keepdim: lib.min(x, dim, keepdim).values),
        Spec(dim_inputs(), lambda lib, F, x, dim, keepdim: x.median(dim, keepdim).values),
        Spec(dim_inputs(), lambda lib, F, x, dim, keepdim: lib.nanmedian(x, dim=dim, keepdim=keepdim)[0]),
        Spec(dim_inputs(), lambda lib, F, x, dim, keepdim: x.mode(dim, keepdim).values),
        Spec(dim_inputs(), lambda lib, F, x, dim, keepdim: x.kthvalue(1 + x.shape[dim] // 2 if x.ndim else 1, dim)[0]),
    ],
    "PickFromAll": [
        Spec(dim_inputs(), lambda lib, F, x, dim, keepdim: x.max()),
        Spec(dim_inputs(), lambda lib, F, x, dim, keepdim: lib.min(x)),
        Spec(dim_inputs(), lambda lib, F, x, dim, keepdim: x.median()),
        Spec(dim_inputs(), lambda lib, F, x, dim, keepdim: lib.nanmedian(x)),
        # ties share the grad evenly (not a derivative: no finite differences)
        Spec(dim_inputs(with_zeros), lambda lib, F, x, dim, keepdim: x.max() + x.median(), finite_differences=False),
    ],
    "Amax": [
        reduction(lambda lib, F, x, dim, keepdim: x.amax(dim, keepdim), elements=grid, allow_none=False),
        reduction(lambda lib, F, x, dim, keepdim: lib.amin(x, dim, keepdim), elements=grid, allow_none=False),
        Spec(dim_inputs(with_zeros), lambda lib, F, x, dim, keepdim: x.amax(dim, keepdim), finite_differences=False),
    ],
    "Aminmax": [
        Spec(dim_inputs(), lambda lib, F, x, dim, keepdim: lib.aminmax(x, dim=dim, keepdim=keepdim)),
        Spec(dim_inputs(), lambda lib, F, x, dim, keepdim: x.aminmax(keepdim=keepdim).min),
    ],
    "LogSumExp": [
        reduction(lambda lib, F, x, dim, keepdim: x.logsumexp(dim, keepdim), allow_none=False),
        reduction(lambda lib, F, x, dim, keepdim: x.logsumexp(axis=dim, keepdims=keepdim), allow_none=False),
    ],
}
