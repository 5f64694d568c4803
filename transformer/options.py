"""Typed options: what a setting or a layer's argument accepts (type, default, allowed
range, one line of help), checked alike wherever a value comes from (a TOML file, a flag).

Settings declare theirs as dataclass fields (settings.py). A layer's options are its
constructor's keyword arguments, read from its signature; `Annotated` adds a range and a
line of help to a type:

    def __init__(self, width: int, heads: Annotated[int, at_least(1), "attention heads"], bias: bool = True)

An argument without an annotation takes the type of its default.
"""

from __future__ import annotations

import inspect
import math
import types
import typing
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Union

REQUIRED: Any = inspect.Parameter.empty  # the default of an option that has none


@dataclass(frozen=True)
class Range:
    """lo <= value <= hi, either end open; the bounds of a number or an integer."""

    lo: float = -float("inf")
    hi: float = float("inf")
    lo_open: bool = False
    hi_open: bool = False

    def __contains__(self, value: float) -> bool:
        if not _finite(value):  # no setting means anything at infinity, or at NaN
            return False
        above = value > self.lo if self.lo_open else value >= self.lo
        below = value < self.hi if self.hi_open else value <= self.hi
        return above and below

    def describe(self, integer: bool) -> str:
        lo, hi = (_bound(b, integer) for b in (self.lo, self.hi))
        if integer and self.hi == float("inf"):
            return (
                "a positive integer"
                if (self.lo, self.lo_open) in ((1, False), (0, True))
                else f"an integer of at least {lo}"
            )
        if self.hi == float("inf"):
            if self.lo_open:
                return "a positive number" if self.lo == 0 else f"a number above {lo}"
            return f"a number of at least {lo}"
        kind = "an integer" if integer else "a number"
        return f"{kind} in {'(' if self.lo_open else '['}{lo}, {hi}{')' if self.hi_open else ']'}"


def _bound(value: float, integer: bool) -> str:
    return str(int(value)) if integer and math.isfinite(value) else f"{value:g}"


def _finite(value: float) -> bool:
    try:
        return math.isfinite(value)
    except OverflowError:  # an integer beyond any float
        return False


def at_least(lo: float) -> Range:
    return Range(lo)


Positive = Range(0, lo_open=True)
Fraction = Range(0, 1, hi_open=True)  # a probability of dropping: 1 would drop everything

Int64 = Range(-(2**63), 2**63 - 1)  # what torch's random generators take as a seed

PositiveInt = Annotated[int, at_least(1)]
Probability = Annotated[float, Fraction]
Vocab = Literal["vocab"]  # in a layer's option, `int | Vocab`: "vocab" stands for the vocabulary's size


@dataclass(frozen=True)
class FromModel:
    """Marks a layer argument whose default is a [model] setting (named differently from it)."""

    setting: str


@dataclass(frozen=True)
class Option:
    """One setting or layer argument."""

    name: str
    type: Any = Any  # int, float, bool, str, a Literal, a union of those, or Any
    default: Any = REQUIRED
    range: Range | None = None
    help: str = ""
    from_model: str | None = None  # the [model] setting it defaults to, in a layer

    @property
    def required(self) -> bool:
        return self.default is REQUIRED and self.from_model is None

    def problem(self, value: Any) -> str | None:
        """None when `value` is acceptable, else what it must be (for 'it must be ...')."""
        if _accepts(self.type, value) and (self.range is None or not _is_number(value) or value in self.range):
            return None
        return self.describe()

    def describe(self) -> str:
        """What a value must be: 'a positive integer', 'true or false', "one of 'a', 'b'"..."""
        kinds = [t for t in alternatives(self.type) if t is not type(None)]
        words = [_describe(t, self.range) for t in kinds]
        literals = [repr(v) for t in kinds if typing.get_origin(t) is Literal for v in typing.get_args(t)]
        words = [w for w in words if w] + ([f"one of {', '.join(literals)}"] if len(literals) > 1 else literals)
        return " or ".join(words) or "any value"


def alternatives(tp: Any) -> tuple[Any, ...]:
    """The types of a union (int | None: int, NoneType), or the type itself."""
    return typing.get_args(tp) if typing.get_origin(tp) in (Union, types.UnionType) else (tp,)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _accepts(tp: Any, value: Any) -> bool:
    if tp is Any:
        return True
    if typing.get_origin(tp) in (Union, types.UnionType):
        return any(_accepts(t, value) for t in typing.get_args(tp))
    if typing.get_origin(tp) is Literal:
        return any(value == v and type(value) is type(v) for v in typing.get_args(tp))
    if tp is float:
        return _is_number(value) and _finite(value)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, tp) if isinstance(tp, type) else True


def _describe(tp: Any, rng: Range | None) -> str:
    if typing.get_origin(tp) is Literal:
        return ""  # listed together by describe()
    if tp is bool:
        return "true or false"
    if tp in (int, float):
        return rng.describe(tp is int) if rng else ("an integer" if tp is int else "a number")
    if tp is str:
        return "a string"
    if tp is dict:
        return "a table"
    return "any value" if tp is Any else f"a {getattr(tp, '__name__', tp)}"


def option(name: str, annotation: Any, default: Any) -> Option:
    """An Option from a type annotation (Annotated with a Range, a help line, FromModel)."""
    rng, help, from_model = None, "", None
    if typing.get_origin(annotation) is Annotated:
        annotation, *extras = typing.get_args(annotation)
        for extra in extras:
            if isinstance(extra, Range):
                rng = extra
            elif isinstance(extra, str):
                help = extra
            elif isinstance(extra, FromModel):
                from_model = extra.setting
    if annotation is REQUIRED or isinstance(annotation, str):  # none, or one that did not resolve
        annotation = type(default) if default not in (REQUIRED, None) else Any
    return Option(name, annotation, default, rng, help, from_model)


def signature_options(function: Any, skip: int) -> tuple[dict[str, Option], bool]:
    """The keyword options of a function (a class: its constructor) after its first `skip`
    arguments, and whether it also takes any other keyword (**kwargs)."""
    signature = inspect.signature(function)
    try:
        hints = typing.get_type_hints(
            function.__init__ if isinstance(function, type) else function, include_extras=True
        )
    except Exception:  # an annotation that does not resolve (a user's forward reference): types unknown
        hints = {}
    params = list(signature.parameters.values())[skip:]
    options = {
        p.name: option(p.name, hints.get(p.name, p.annotation), p.default)
        for p in params
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    }
    return options, any(p.kind is p.VAR_KEYWORD for p in params)
