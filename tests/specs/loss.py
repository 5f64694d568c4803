"""Specs of the losses (tinygraph/ops/loss.py). Where a loss has a kink at input = target
(l1) or at |input - target| = delta (huber), input is drawn on a grid and target off it."""

import numpy as np
from hypothesis import assume
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from tinygraph.testing import Const, Diff, Spec, grid, positive, shapes, shrunk_to_broadcast, values

from .nn import cross_entropy_inputs

REDUCTIONS = ["mean", "sum", "none"]


def off_grid(shape):
    return grid(shape, 0.05)


def probabilities(shape):
    return values(shape, 0.05, 0.95)


def signs(shape):
    return hnp.arrays(np.float64, shape, elements=st.sampled_from([-1.0, 1.0]))


@st.composite
def loss_inputs(
    draw, input=values, target=values, target_grad=True, weight=None, pos_weight=False, options=None, reductions=None
):
    """input, and target (requiring grad or not) of one drawn shape; a reduction; optional
    weights: `weight` "same" (input's shape) or "broadcast" (a shape that broadcasts to it);
    and the loss's own keyword arguments drawn from `options`."""
    shape = draw(shapes)
    x, t = Diff(draw(input(shape))), draw(target(shape))
    t = Diff(t) if target_grad and draw(st.booleans()) else Const(t)
    kwargs = {"reduction": draw(st.sampled_from(reductions or REDUCTIONS))}
    if weight and draw(st.booleans()):
        kwargs["weight"] = Const(draw(values(shape if weight == "same" else draw(shrunk_to_broadcast(shape)), 0.2, 2)))
    if pos_weight and draw(st.booleans()):
        kwargs["pos_weight"] = Const(draw(values(draw(shrunk_to_broadcast(shape)), 0.2, 3)))
    kwargs.update(draw(st.fixed_dictionaries(options or {})))
    return (x, t), kwargs


@st.composite
def nll_inputs(draw):
    (x, t), kw = draw(cross_entropy_inputs())
    assume(t.value.dtype == np.int64)
    kw.pop("label_smoothing", None)
    return (x, t), kw


def _nll_loss(lib, F, x, t, **kw):
    return F.nll_loss(x.log_softmax(1 if x.ndim > 1 else 0), t, **kw)


def loss(name):
    """call(lib, F, input, target, **options): F.<name>(input, target, **options)."""
    return lambda lib, F, x, t, **kw: getattr(F, name)(x, t, **kw)


SPECS = {
    "Huber": [
        Spec(
            loss_inputs(grid, off_grid, weight="same", options={"delta": st.sampled_from([1.0, 0.5, 2.0])}),
            loss("huber_loss"),
        ),
        Spec(loss_inputs(grid, off_grid, options={"beta": st.sampled_from([1.0, 0.5])}), loss("smooth_l1_loss")),
    ],
    "BinaryCrossEntropy": [
        Spec(  # probabilities made by a sigmoid: the call takes any input (torch refuses values outside [0, 1])
            loss_inputs(target=probabilities, weight="broadcast"),
            lambda lib, F, x, t, **kw: F.binary_cross_entropy(x.sigmoid(), t, **kw),
        )
    ],
    "BinaryCrossEntropyWithLogits": [
        Spec(
            loss_inputs(target=probabilities, weight="broadcast", pos_weight=True),
            loss("binary_cross_entropy_with_logits"),
        ),
        Spec(  # large logits: the form stays finite and exact
            loss_inputs(lambda s: values(s, -60, 60), probabilities, pos_weight=True),
            loss("binary_cross_entropy_with_logits"),
        ),
    ],
    "KLDiv": [
        Spec(
            loss_inputs(lambda s: values(s, -3, 0.5), positive, reductions=[*REDUCTIONS, "batchmean"]),
            loss("kl_div"),
        ),
        Spec(
            loss_inputs(
                lambda s: values(s, -3, 0.5),
                lambda s: values(s, -3, 0.5),
                reductions=[*REDUCTIONS, "batchmean"],
                options={"log_target": st.just(True)},
            ),
            loss("kl_div"),
        ),
    ],
    "SoftMargin": [Spec(loss_inputs(target=signs, target_grad=False), loss("soft_margin_loss"))],
    "Gather": [Spec(nll_inputs(), _nll_loss)],
    # compositions of ops (their own specs are elsewhere): checked here as a whole, and fed to the fuzzer
    "Abs": [
        Spec(loss_inputs(grid, off_grid, weight="same"), loss("l1_loss")),
        Spec(loss_inputs(grid, off_grid, options={"beta": st.just(0.0)}), loss("smooth_l1_loss")),
    ],
    "Mul": [Spec(loss_inputs(weight="same"), loss("mse_loss"))],
    "Exp": [
        # Stirling's term starts at target = 1: targets are drawn off the grid, so away from it
        Spec(
            loss_inputs(target=lambda s: off_grid(s).map(np.abs), options={"full": st.booleans()}),
            loss("poisson_nll_loss"),
        ),
        Spec(loss_inputs(positive, positive, options={"log_input": st.just(False)}), loss("poisson_nll_loss")),
    ],
}
