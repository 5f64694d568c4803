"""Elementwise math: trigonometric and hyperbolic functions, logarithms and exponentials,
rounding, division with rounding, remainders, and the two-input functions.

Most ops here are rows of two tables, in the manner of PyTorch's derivatives.yaml: an op
is torch's function of the same name plus one formula per input, the grad of that input
given the output's grad `g`. A formula names what it needs: the input (`x`; `a` and `b`
for two inputs) and/or the output (`out`), and those are exactly what the op saves.
Each row still becomes a class of its own, so the registry, the specs and viz see every
op by name. The ops whose forward takes options (round, lerp, div's rounding) are classes.
"""

from __future__ import annotations

import inspect
import math

import torch

from ..function import Function, public, register
from .elementwise import Clamp, Div, zero_where

LN2, LN10 = math.log(2), math.log(10)
DEGREE = math.pi / 180


def zero(g):
    """The grad of a piecewise-constant result (rounding, sign), as torch defines it: zeros,
    whatever flows in."""
    return g.new_zeros(g.shape)


def names(*torch_names: str) -> str:
    """The public names of elementwise ops torch provides as a function, a method and an in-place method."""
    return " ".join(f"Tensor.{n} Tensor.{n}_ tinygraph.{n}" for n in torch_names)


# op: (its torch names, the first the function that computes it; the grad of x)
UNARY = {
    "Sin": ("sin", lambda g, x: g * x.cos()),
    "Cos": ("cos", lambda g, x: -g * x.sin()),
    "Tan": ("tan", lambda g, out: g * (1 + out * out)),
    "Asin": ("asin arcsin", lambda g, x: g * (1 - x * x).rsqrt()),
    "Acos": ("acos arccos", lambda g, x: -g * (1 - x * x).rsqrt()),
    "Atan": ("atan arctan", lambda g, x: g / (x * x + 1)),
    "Sinh": ("sinh", lambda g, x: g * x.cosh()),
    "Cosh": ("cosh", lambda g, x: g * x.sinh()),
    "Asinh": ("asinh arcsinh", lambda g, x: g * (x * x + 1).rsqrt()),
    "Acosh": ("acosh arccosh", lambda g, x: g * (x * x - 1).rsqrt()),
    "Atanh": ("atanh arctanh", lambda g, x: g / (1 - x * x)),
    "Deg2rad": ("deg2rad", lambda g: g * DEGREE),
    "Rad2deg": ("rad2deg", lambda g: g / DEGREE),
    "Log2": ("log2", lambda g, x: g / (x * LN2)),
    "Log10": ("log10", lambda g, x: g / (x * LN10)),
    "Log1p": ("log1p", lambda g, x: g / (x + 1)),
    "Expm1": ("expm1", lambda g, out: g * (out + 1)),
    "Exp2": ("exp2", lambda g, out: g * out * LN2),
    "Reciprocal": ("reciprocal", lambda g, out: -g * (out * out)),  # torch's grouping (0 * inf is nan)
    "Erfc": ("erfc", lambda g, x: g * (-2 / math.sqrt(math.pi)) * (-x * x).exp()),
    "Erfinv": ("erfinv", lambda g, out: g * (math.sqrt(math.pi) / 2) * (out * out).exp()),
    "Floor": ("floor", zero),
    "Ceil": ("ceil", zero),
    "Trunc": ("trunc fix", zero),
    "Frac": ("frac", lambda g: g),
    "Sgn": ("sgn", zero),  # sign, for real tensors
}


def _inverse_square_norm(a, b):
    """1 / (a^2 + b^2), taken as 0 where a^2 + b^2 is 0 (at the origin, or where the squares
    underflow: a = 0, b = 5e-324), as torch's (the formula's 0 / 0 would be nan there)."""
    norm = a * a + b * b
    return zero_where(norm.reciprocal(), norm == 0)


# op: (its public names, the torch function, the grad of a, the grad of b)
BINARY = {
    "Atan2": (
        names("atan2", "arctan2"),
        torch.atan2,
        lambda g, a, b: g * b * _inverse_square_norm(a, b),
        lambda g, a, b: -g * a * _inverse_square_norm(a, b),
    ),
    "Hypot": (names("hypot"), torch.hypot, lambda g, a, out: g * a / out, lambda g, b, out: g * b / out),
    "Logaddexp": (
        "Tensor.logaddexp tinygraph.logaddexp",
        torch.logaddexp,
        lambda g, a, b: g / (1 + (b - a).exp()),
        lambda g, a, b: g / (1 + (a - b).exp()),
    ),
    "Logaddexp2": (
        "Tensor.logaddexp2 tinygraph.logaddexp2",
        torch.logaddexp2,
        lambda g, a, b: g / (1 + (b - a).exp2()),
        lambda g, a, b: g / (1 + (a - b).exp2()),
    ),
    # a - trunc(a / b) * b, and a - floor(a / b) * b (Python's %): the quotient's grad is zero
    "Fmod": (names("fmod"), torch.fmod, lambda g: g, lambda g, a, b: -g * a.div(b, rounding_mode="trunc")),
    "Remainder": (
        names("remainder") + " Tensor.__mod__ Tensor.__rmod__ Tensor.__imod__",
        torch.remainder,
        lambda g: g,
        lambda g, a, b: -g * (a // b),
    ),
    # |a| with b's sign: d/da is out / a, taken as 0 at a = 0 (as torch); b only picks a sign
    "Copysign": (names("copysign"), torch.copysign, lambda g, a, out: g * zero_where(out / a, a == 0), zero),
}


def _table_op(name: str, provides: str, function, grads, inputs: tuple[str, ...], torch_inputs: str) -> None:
    """Register op `name`: out = function(*inputs), and grads[i](g, ...) the grad of input i,
    given the values its parameters name (inputs and `out`), which are all the op saves."""
    position = {n: i for i, n in enumerate((*inputs, "out"))}
    uses = [tuple(position[n] for n in list(inspect.signature(grad).parameters)[1:]) for grad in grads]

    def forward(ctx, *args):
        out = function(*args)
        # only what the wanted grads read, as torch (a % b keeps nothing, and so can run
        # backward again, when only a needs a grad)
        kept = {i for used, need in zip(uses, ctx.needs_input_grad) if need for i in used}
        if kept:
            ctx.save_for_backward(*(v if i in kept else None for i, v in enumerate((*args, out))))
        return out

    def backward(ctx, g):
        values = ctx.saved_tensors
        return tuple(
            grad(g, *(values[i] for i in used)) if need else None
            for grad, used, need in zip(grads, uses, ctx.needs_input_grad)
        )

    # torch's parameter names, for the sentence an unknown keyword argument gets
    forward.__signature__ = inspect.Signature(
        [inspect.Parameter(n, inspect.Parameter.POSITIONAL_ONLY) for n in ("ctx", *torch_inputs.split())]
    )
    doc = f"torch.{function.__name__}, elementwise, with its derivative from the table in {__name__}."
    attributes = {"forward": staticmethod(forward), "backward": staticmethod(backward), "__doc__": doc}
    register(provides)(type(name, (Function,), {"__module__": __name__, "__qualname__": name, **attributes}))


for _name, (_torch_names, _grad) in UNARY.items():
    _function = getattr(torch, _torch_names.split()[0])
    _table_op(_name, names(*_torch_names.split()), _function, (_grad,), ("x",), "input")
for _name, (_provides, _function, *_grads) in BINARY.items():
    _table_op(_name, _provides, _function, _grads, ("a", "b"), "input other")


@register("Tensor.round Tensor.round_ tinygraph.round")
class Round(Function):
    """Round half to even, to `decimals` decimal places (negative: to tens, hundreds...).
    Its grad is zero, as torch defines it."""

    @staticmethod
    def call(input, *, decimals=None):
        return Round.apply(input, decimals)

    @staticmethod
    def forward(ctx, x, decimals):
        return x.round() if decimals is None else x.round(decimals=decimals)  # (integers take no decimals)

    @staticmethod
    def backward(ctx, g):
        return zero(g), None


@register("Tensor.lerp Tensor.lerp_ tinygraph.lerp")
class Lerp(Function):
    """input + weight * (end - input); `weight` a number or a tensor."""

    @staticmethod
    def forward(ctx, a, b, weight):
        dw = ctx.needs_input_grad[2]
        ctx.save_for_backward(a if dw else None, b if dw else None, weight)
        return torch.lerp(a, b, weight)

    @staticmethod
    def backward(ctx, g):
        a, b, w = ctx.saved_tensors
        da, db, dw = ctx.needs_input_grad
        return (g * (1 - w) if da else None), (g * w if db else None), (g * (b - a) if dw else None)


@register(
    "Tensor.floor_divide Tensor.floor_divide_ Tensor.__floordiv__ Tensor.__rfloordiv__ Tensor.__ifloordiv__ "
    "tinygraph.floor_divide"
)
class RoundedDiv(Function):
    """input / other rounded toward zero ("trunc") or down ("floor": `//`, floor_divide);
    integers stay integers. Its grad is zero, as torch defines it for div's rounding modes
    (torch has no derivative for floor_divide at all; here it is the same as div's)."""

    @staticmethod
    def call(input, other):
        return RoundedDiv.apply(input, other, "floor")

    @staticmethod
    def forward(ctx, a, b, rounding_mode):
        return torch.div(a, b, rounding_mode=rounding_mode)

    @staticmethod
    def backward(ctx, g):
        da, db, _ = ctx.needs_input_grad
        return (zero(g) if da else None), (zero(g) if db else None), None


@public("Tensor.div Tensor.div_ Tensor.divide Tensor.divide_ tinygraph.div tinygraph.divide")
def div(input, other, *, rounding_mode=None):
    """input / other; rounding_mode "trunc" or "floor" rounds the quotient (see RoundedDiv)."""
    if rounding_mode is None:
        return Div.apply(input, other)
    if rounding_mode not in ("trunc", "floor"):
        raise RuntimeError(
            f"div expected rounding_mode to be one of None, 'trunc', or 'floor' but found {rounding_mode!r}."
        )
    return RoundedDiv.apply(input, other, rounding_mode)


@public("Tensor.clamp_min Tensor.clamp_min_ tinygraph.clamp_min")
def clamp_min(input, min):
    """input, raised to at least `min` (a number or a tensor) elementwise."""
    return Clamp.apply(input, _bound(min, "clamp_min"), None)


@public("Tensor.clamp_max Tensor.clamp_max_ tinygraph.clamp_max")
def clamp_max(input, max):
    """input, lowered to at most `max` (a number or a tensor) elementwise."""
    return Clamp.apply(input, None, _bound(max, "clamp_max"))


def _bound(value, name):
    if value is None:
        raise TypeError(f"{name}() takes a number or a tensor as its bound, not None.")
    return value
