"""Specs of the matrix products (tinygraph/ops/linalg.py)."""

from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from tinygraph.testing import Diff, Spec, values


@st.composite
def matmul_inputs(draw):
    n, k, m = (draw(st.integers(1, 3)) for _ in range(3))
    batch_a, batch_b = draw(hnp.mutually_broadcastable_shapes(num_shapes=2, max_dims=2, max_side=2)).input_shapes
    kind = draw(st.sampled_from(["batched", "vector_left", "vector_right", "dot", "shared_weight"]))
    a_shape = {"vector_left": (k,), "dot": (k,)}.get(kind, (*batch_a, n, k))
    b_shape = {"vector_right": (k,), "dot": (k,), "shared_weight": (k, m)}.get(kind, (*batch_b, k, m))
    return (Diff(draw(values(a_shape))), Diff(draw(values(b_shape)))), {}


@st.composite
def pair_inputs(draw, a_shape, b_shape):
    dims = {name: draw(st.integers(1, 3)) for name in "bnkm"}
    return (
        Diff(draw(values(tuple(dims[c] for c in a_shape)))),
        Diff(draw(values(tuple(dims[c] for c in b_shape)))),
    ), {}


SPECS = {
    "MatMul": [
        Spec(matmul_inputs(), lambda lib, F, a, b: a @ b),
        Spec(pair_inputs("nk", "km"), lambda lib, F, a, b: lib.mm(a, b)),
        Spec(pair_inputs("bnk", "bkm"), lambda lib, F, a, b: lib.bmm(a, b)),
        Spec(pair_inputs("k", "k"), lambda lib, F, a, b: lib.dot(a, b)),
    ],
    "Mul": [Spec(pair_inputs("n", "m"), lambda lib, F, a, b: lib.outer(a, b))],
}
