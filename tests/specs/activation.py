"""Specs of the activations (tinygraph/ops/activation.py). Inputs on kinks are drawn on a
grid that keeps them 0.05 away; the in-place forms change a copy (`x * 1`), as a layer would."""

from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from tinygraph.testing import Diff, Spec, away_from_zero, grid, shapes, unary, values


@st.composite
def with_options(draw, options, elements=values):
    """One input of any drawn shape and the op's keyword arguments."""
    shape = draw(shapes)
    return (Diff(draw(elements(shape))),), draw(st.fixed_dictionaries(options))


def off_grid(shape):
    return grid(shape, 0.05)


@st.composite
def prelu_inputs(draw):
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=4, max_side=3))
    channels = shape[1] if len(shape) >= 2 and draw(st.booleans()) else 1
    return (Diff(draw(off_grid(shape))), Diff(draw(values((channels,), 0.0, 0.5)))), {}


@st.composite
def glu_inputs(draw):
    shape = list(draw(hnp.array_shapes(min_dims=1, max_dims=3, max_side=3)))
    dim = draw(st.integers(-len(shape), len(shape) - 1))
    shape[dim] *= 2
    return (Diff(draw(values(tuple(shape)))),), {"dim": dim}


@st.composite
def softmin_inputs(draw):
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=3, max_side=4))
    return (Diff(draw(values(shape))),), {"dim": draw(st.integers(-len(shape), len(shape) - 1))}


SLOPES = st.sampled_from([0.01, 0.2, -0.5])
ALPHAS = st.sampled_from([1.0, 0.5, 2.0])  # celu: exact in float32, where torch's backward rounds 1/alpha

SPECS = {
    "Silu": [unary(lambda lib, F, x: F.silu(x)), unary(lambda lib, F, x: F.silu(x * 1, inplace=True))],
    "Softplus": [
        unary(lambda lib, F, x: F.softplus(x)),
        # the switch to the identity at beta * x = threshold falls between grid points
        Spec(
            with_options({"beta": st.sampled_from([2.0, -1.0]), "threshold": st.just(1.0)}, off_grid),
            lambda lib, F, x, **kw: F.softplus(x, **kw),
        ),
    ],
    "LeakyRelu": [
        Spec(with_options({"negative_slope": SLOPES}, off_grid), lambda lib, F, x, **kw: F.leaky_relu(x, **kw)),
        unary(lambda lib, F, x: F.leaky_relu(x * 1, 0.2, inplace=True), elements=off_grid),
        unary(lambda lib, F, x: F.leaky_relu_(x * 1), elements=off_grid),
    ],
    "Elu": [
        Spec(with_options({"alpha": ALPHAS}, off_grid), lambda lib, F, x, **kw: F.elu(x, **kw)),
        unary(lambda lib, F, x: F.selu(x), elements=off_grid),
        Spec(with_options({"alpha": ALPHAS}, off_grid), lambda lib, F, x, **kw: F.celu(x, **kw)),
        unary(lambda lib, F, x: lib.selu(x * 3) + lib.celu(x, 0.5), elements=off_grid),
        unary(
            lambda lib, F, x: F.elu(x * 1, inplace=True) + F.selu_(x * 1) + F.celu(x * 1, 2.0, True), elements=off_grid
        ),
        unary(lambda lib, F, x: F.elu(x, alpha=0.5), elements=lambda s: away_from_zero(s, 1.0, 800.0)),  # no overflow
    ],
    "LogSigmoid": [
        unary(lambda lib, F, x: F.logsigmoid(x)),
        unary(lambda lib, F, x: F.logsigmoid(x), elements=lambda s: values(s, -40.0, 40.0)),
    ],
    "Hardtanh": [
        Spec(
            with_options({"min_val": st.sampled_from([-1.0, -0.5]), "max_val": st.sampled_from([1.0, 1.5])}, off_grid),
            lambda lib, F, x, **kw: F.hardtanh(x, **kw),
        ),
        unary(lambda lib, F, x: F.relu6(x * 3), elements=off_grid),
        unary(lambda lib, F, x: F.hardtanh_(x * 1) + F.relu6(x * 3, inplace=True), elements=off_grid),
    ],
    "Hardsigmoid": [
        unary(lambda lib, F, x: F.hardsigmoid(x * 2), elements=off_grid),
        unary(lambda lib, F, x: F.hardsigmoid(x * 2, inplace=True), elements=off_grid),
    ],
    "Hardswish": [
        unary(lambda lib, F, x: F.hardswish(x * 2), elements=off_grid),
        unary(lambda lib, F, x: F.hardswish(x * 2, inplace=True), elements=off_grid),
    ],
    "Mish": [
        unary(lambda lib, F, x: F.mish(x), elements=lambda s: values(s, -5.0, 5.0)),
        unary(lambda lib, F, x: F.mish(x * 1, inplace=True)),
    ],
    "Threshold": [
        unary(lambda lib, F, x: F.threshold(x, 0.5, -1.0), elements=off_grid),
        unary(lambda lib, F, x: lib.threshold(x, -0.5, 2.0) + F.threshold_(x * 1, 0.0, 0.5), elements=off_grid),
    ],
    "Hardshrink": [
        Spec(
            with_options({"lambd": st.sampled_from([0.5, 1.0])}, off_grid),
            lambda lib, F, x, **kw: F.hardshrink(x, **kw),
        ),
        unary(lambda lib, F, x: x.hardshrink() + lib.hardshrink(x, 1.0), elements=off_grid),
        Spec(
            with_options({"lambd": st.sampled_from([0.5, 1.0])}, off_grid),
            lambda lib, F, x, **kw: F.softshrink(x, **kw),
        ),
    ],
    "Prelu": [Spec(prelu_inputs(), lambda lib, F, x, w: F.prelu(x, w))],
    # compositions of ops (their own specs are elsewhere): checked here as a whole, and fed to the fuzzer
    "Abs": [unary(lambda lib, F, x: F.softsign(x), elements=off_grid)],
    "Tanh": [unary(lambda lib, F, x: F.tanhshrink(x))],
    "Softmax": [Spec(softmin_inputs(), lambda lib, F, x, dim: F.softmin(x, dim))],
    "Sigmoid": [Spec(glu_inputs(), lambda lib, F, x, dim: F.glu(x, dim))],
}
