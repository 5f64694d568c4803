"""Specs of the elementwise math ops (tinygraph/ops/math.py). Each op's spec sums every
spelling of it (its function under each of torch's names, its in-place method on a copy,
its operator), so one gradcheck covers them all. Where a result jumps (rounding, fmod) the
values are drawn away from the jumps: numerators from `grid(s, 0.05)`, (2k+1)/20, over
denominators from `odd_tenths`, p/10 with p odd, never have a quotient within 1/46 of an
integer."""

import numpy as np
import torch
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from tinygraph.testing import (
    Diff,
    Spec,
    away_from_zero,
    binary,
    binary_inputs,
    grid,
    positive,
    shapes,
    shrunk_to_broadcast,
    unary,
    values,
)


def odd_tenths(shape):
    """±0.3, ±0.5, ..., ±2.3: denominators whose quotients stay away from integers (see above)."""
    choices = [sign * p / 10 for p in range(3, 24, 2) for sign in (1, -1)]
    return hnp.arrays(np.float64, shape, elements=st.sampled_from(choices))


def spellings(*names, operator=None, in_place=True):
    """lib.name(*args) for each of torch's names, plus the in-place method on a copy of the
    first input (broadcast to the result's shape; the plain method if not `in_place`), plus
    `operator(*args)` if given."""

    def call(lib, F, *args, **kwargs):
        first, *rest = args
        copy = first + sum(0 * r for r in rest)  # a fresh tensor of the result's shape
        out = getattr(copy, names[0] + "_" * in_place)(*rest, **kwargs)
        for name in names:
            out = out + getattr(lib, name)(*args, **kwargs)
        return out if operator is None else out + operator(*args)

    return call


def right_scalar(spec):
    """Only the second input may be a Python number (torch's fmod and copysign take none first)."""
    spec.inputs = spec.inputs.filter(lambda drawn: not isinstance(drawn[0][0], float))
    return spec


def piecewise_constant(call):
    """`call` times its input: a piecewise-constant op's (zero) grad then meets a nonzero one."""
    return lambda lib, F, x, **kw: call(lib, F, x, **kw) * x


@st.composite
def lerp_inputs(draw):
    shapes3 = draw(hnp.mutually_broadcastable_shapes(num_shapes=3, max_dims=3, max_side=3)).input_shapes
    a, b = Diff(draw(values(shapes3[0]))), Diff(draw(values(shapes3[1])))
    weight = Diff(draw(values(shapes3[2], -0.5, 1.5))) if draw(st.booleans()) else draw(st.floats(-0.5, 1.5))
    return (a, b, weight), {}


@st.composite
def clamp_inputs(draw, bounds=2):
    """x and `bounds` tensor bounds (lo, hi; or one) that broadcast to x's shape, on grids 0.02
    and 0.06 off x's: no ties, and lo > hi at times. (torch's own backward fails when two
    tensor bounds broadcast x to a larger shape; tinygraph's does not.)"""
    shape = draw(shapes)
    drawn = [shape] + [draw(shrunk_to_broadcast(shape)) for _ in range(bounds)]
    return tuple(Diff(draw(grid(s, offset))) for s, offset in zip(drawn, (0.0, 0.02, 0.06))), {}


@st.composite
def clamp_number_inputs(draw):
    return (Diff(draw(grid(draw(shapes)))), draw(st.integers(-20, 20)) / 10 + 0.05), {}


@st.composite
def rounded_div_inputs(draw):
    args, _ = draw(_quotients())
    return args, {"rounding_mode": draw(st.sampled_from(["trunc", "floor"]))}


def _quotients():
    return binary_inputs(left=_between_steps, right=odd_tenths)


def _div_floor_torch(lib, F, a, b):
    return 3 * torch.div(a, b, rounding_mode="floor")  # torch's // has no derivative (see RoundedDiv)


def _unary(names, elements=values, **kw):
    return unary(spellings(*names.split()), elements=elements, **kw)


def _inverse_hyperbolic(names, elements=values):
    """torch has no derivative for asinh_, acosh_ and atanh_ in place: its side calls them out of place."""
    return _unary(names, elements, torch_call=spellings(*names.split(), in_place=False))


def _remainder_torch(lib, F, a, b):
    """torch has no derivative for remainder(number, tensor): its side makes the number a tensor."""
    a = torch.tensor(a, dtype=b.dtype) if isinstance(a, float) else a
    return spellings("remainder", operator=lambda a, b: a % b)(lib, F, a, b)


def _in(lo, hi):
    return lambda s: values(s, lo, hi)


def _between_steps(shape):
    """k/10 + 0.05: never an integer nor a half, where rounding jumps."""
    return grid(shape, 0.05)


def _rounding(names):
    return unary(piecewise_constant(spellings(*names.split())), elements=_between_steps)


SPECS = {
    "Sin": [_unary("sin")],
    "Cos": [_unary("cos")],
    "Tan": [_unary("tan", _in(-1.2, 1.2))],
    "Asin": [_unary("asin arcsin", _in(-0.9, 0.9))],
    "Acos": [_unary("acos arccos", _in(-0.9, 0.9))],
    "Atan": [_unary("atan arctan")],
    "Sinh": [_unary("sinh")],
    "Cosh": [_unary("cosh")],
    "Asinh": [_inverse_hyperbolic("asinh arcsinh")],
    "Acosh": [_inverse_hyperbolic("acosh arccosh", _in(1.2, 3.0))],
    "Atanh": [_inverse_hyperbolic("atanh arctanh", _in(-0.9, 0.9))],
    "Deg2rad": [_unary("deg2rad")],
    "Rad2deg": [_unary("rad2deg")],
    "Log2": [_unary("log2", positive)],
    "Log10": [_unary("log10", positive)],
    "Log1p": [_unary("log1p", _in(-0.7, 2.0))],
    "Expm1": [_unary("expm1")],
    "Exp2": [_unary("exp2")],
    "Reciprocal": [_unary("reciprocal", away_from_zero)],
    "Erfc": [_unary("erfc")],
    "Erfinv": [_unary("erfinv", _in(-0.9, 0.9))],
    "Floor": [_rounding("floor")],
    "Ceil": [_rounding("ceil")],
    "Trunc": [_rounding("trunc fix")],
    "Frac": [unary(spellings("frac"), elements=_between_steps)],
    "Sgn": [_rounding("sgn")],
    "Round": [
        _rounding("round"),
        unary(piecewise_constant(lambda lib, F, x: x.round(decimals=1)), elements=lambda s: grid(s, 0.02)),
        unary(
            lambda lib, F, x: lib.round(x * 10, decimals=-1) + (x * 1).round_(decimals=1),
            elements=lambda s: grid(s, 0.02),
        ),
    ],
    "Atan2": [binary(spellings("atan2", "arctan2"), left=away_from_zero, scalars=False)],
    "Hypot": [binary(spellings("hypot"), left=away_from_zero, scalars=False)],
    "Logaddexp": [
        binary(lambda lib, F, a, b: lib.logaddexp(a, b) + a.logaddexp(b), scalars=False),
        binary(lambda lib, F, a, b: lib.logaddexp(a * 300, b * 300), scalars=False),  # where exp(a) overflows
    ],
    "Logaddexp2": [binary(lambda lib, F, a, b: lib.logaddexp2(a, b) + a.logaddexp2(b), scalars=False)],
    "Fmod": [right_scalar(Spec(_quotients(), spellings("fmod")))],
    "Remainder": [Spec(_quotients(), spellings("remainder", operator=lambda a, b: a % b), torch_call=_remainder_torch)],
    "Copysign": [
        right_scalar(binary(spellings("copysign"), left=away_from_zero, right=away_from_zero)),
        # the sign of a zero: b * 0 is -0.0 where b < 0
        binary(
            lambda lib, F, a, b: a.copysign(b * 0) - a.copysign(-(b * 0)),
            left=away_from_zero,
            right=away_from_zero,
            scalars=False,
        ),
    ],
    "Lerp": [Spec(lerp_inputs(), spellings("lerp"))],
    "RoundedDiv": [
        Spec(_quotients(), spellings("floor_divide", operator=lambda a, b: a // b), torch_call=_div_floor_torch),
        Spec(rounded_div_inputs(), spellings("div", "divide")),
    ],
    "Div": [
        binary(spellings("div", "divide", operator=lambda a, b: a / b), right=lambda s: away_from_zero(s, 0.5)),
        binary(spellings("true_divide"), right=lambda s: away_from_zero(s, 0.5), scalars=False),
    ],
    "Clamp": [
        Spec(clamp_inputs(), spellings("clamp", "clip")),
        Spec(clamp_inputs(bounds=1), spellings("clamp_min")),
        Spec(clamp_inputs(bounds=1), spellings("clamp_max")),
        Spec(clamp_number_inputs(), spellings("clamp_min")),
        Spec(clamp_number_inputs(), spellings("clamp_max")),
    ],
}
