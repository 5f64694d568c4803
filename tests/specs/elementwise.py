"""Specs of the elementwise ops (tinygraph/ops/elementwise.py)."""

import numpy as np
import torch
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from tinygraph.testing import (
    Const,
    Diff,
    Spec,
    away_from_zero,
    binary,
    grid,
    positive,
    shapes,
    shrunk_to_broadcast,
    unary,
    values,
)


@st.composite
def clamp_inputs(draw):
    shape = draw(shapes)
    lo, hi = sorted(draw(st.lists(st.integers(-20, 20), min_size=2, max_size=2, unique=True)))
    which = draw(st.sampled_from(["both", "min", "max"]))
    bounds = {"min": lo / 10 + 0.05 if which != "max" else None, "max": hi / 10 + 0.05 if which != "min" else None}
    return (Diff(draw(grid(shape))),), bounds


@st.composite
def where_inputs(draw):
    shapes3 = draw(hnp.mutually_broadcastable_shapes(num_shapes=3, max_dims=3, max_side=3)).input_shapes
    cond = Const(draw(hnp.arrays(np.bool_, shapes3[0])))
    a, b = Diff(draw(values(shapes3[1]))), Diff(draw(values(shapes3[2])))
    if draw(st.booleans()):
        b = draw(st.floats(-2, 2))
    return (cond, a, b), {}


@st.composite
def masked_fill_inputs(draw, tensor_value=False):
    shape = draw(shapes)
    mask = Const(draw(hnp.arrays(np.bool_, draw(shrunk_to_broadcast(shape)))))
    value = Diff(draw(values(()))) if tensor_value else draw(st.floats(-3, 3))
    return (Diff(draw(values(shape))), mask, value), {}


@st.composite
def fitting_inputs(draw):
    """a, and b that broadcasts to a's shape (as an in-place op's other operand must)."""
    shape = draw(shapes)
    return (Diff(draw(values(shape))), Diff(draw(values(draw(shrunk_to_broadcast(shape)))))), {}


def in_place(method):
    """a's copy changed in place by `method` (so the in-place form of the op is checked too)."""
    return Spec(fitting_inputs(), lambda lib, F, a, b: getattr(a * 1, method)(b))


SPECS = {
    "Add": [
        binary(lambda lib, F, a, b: a + b),
        binary(lambda lib, F, a, b: lib.add(a, b, alpha=-1.5), scalars=False),
        in_place("add_"),
    ],
    "Sub": [binary(lambda lib, F, a, b: a - b), in_place("__isub__")],
    "Mul": [binary(lambda lib, F, a, b: a * b), in_place("mul_")],
    "Div": [binary(lambda lib, F, a, b: a / b, right=lambda s: away_from_zero(s, 0.5))],
    "Pow": [
        binary(lambda lib, F, a, b: a**b, left=positive, right=lambda s: values(s, -2, 2)),
        unary(lambda lib, F, x: x**2),
        unary(lambda lib, F, x: x**-1.5, elements=positive),
        unary(lambda lib, F, x: 2.5**x),
    ],
    "Neg": [unary(lambda lib, F, x: -x)],
    "Exp": [unary(lambda lib, F, x: x.exp()), unary(lambda lib, F, x: (x * 1).exp_())],
    "Log": [unary(lambda lib, F, x: x.log(), elements=positive)],
    "Sqrt": [unary(lambda lib, F, x: x.sqrt(), elements=positive)],
    "Rsqrt": [unary(lambda lib, F, x: x.rsqrt(), elements=positive)],
    "Abs": [unary(lambda lib, F, x: x.abs(), elements=lambda s: grid(s, 0.05))],
    "Sign": [unary(lambda lib, F, x: x.sign() * x, elements=lambda s: grid(s, 0.05))],
    "Tanh": [unary(lambda lib, F, x: x.tanh())],
    "Sigmoid": [unary(lambda lib, F, x: x.sigmoid())],
    "Relu": [unary(lambda lib, F, x: x.relu(), elements=lambda s: grid(s, 0.05))],
    "Erf": [unary(lambda lib, F, x: x.erf())],
    "Gelu": [unary(lambda lib, F, x: F.gelu(x)), unary(lambda lib, F, x: F.gelu(x, approximate="tanh"))],
    "Maximum": [
        binary(lambda lib, F, a, b: a.maximum(b), left=grid, right=lambda s: grid(s, 0.05), scalars=False),
        binary(lambda lib, F, a, b: lib.minimum(a, b), left=grid, right=lambda s: grid(s, 0.05), scalars=False),
    ],
    "Clamp": [Spec(clamp_inputs(), lambda lib, F, x, **kw: x.clamp(**kw))],
    "Where": [Spec(where_inputs(), lambda lib, F, c, a, b: lib.where(c, a, b))],
    "MaskedFill": [
        Spec(masked_fill_inputs(), lambda lib, F, x, m, v: x.masked_fill(m, v)),
        Spec(masked_fill_inputs(tensor_value=True), lambda lib, F, x, m, v: x.masked_fill(m, v)),
    ],
    "Cast": [
        unary(lambda lib, F, x: (x.to(torch.float32) * 3).to(torch.float64), tolerances={"eps": 1e-3, "atol": 1e-3}),
    ],
    "Clone": [unary(lambda lib, F, x: x.clone() * 2), unary(lambda lib, F, x: x.mT.contiguous() if x.ndim > 1 else x)],
}
