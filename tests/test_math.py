"""The elementwise math ops (tinygraph/ops/math.py) where the per-op specs do not reach:
integer and bool tensors (torch's result dtypes and errors, no grad), every operator and
its reflected and in-place forms, values and grads at the edges of each domain, and the
two places where tinygraph gives a grad that torch's autograd does not implement."""

import operator

import pytest
import torch

import tinygraph as tg

TENSORS = {
    "int64": torch.tensor([7, -7, 3, 0, -1]),
    "int32": torch.tensor([5, -2, 1, 4, -8], dtype=torch.int32),
    "uint8": torch.tensor([200, 1, 3, 0, 255], dtype=torch.uint8),
    "bool": torch.tensor([True, False, True, False, True]),
    "float32": torch.tensor([1.5, -2.5, 3.0, 0.0, -0.0]),
}
NUMBERS = [3, -2, True, 1.5]


def by_name(name):
    """`lib.name(*args)`, with lib torch or tinygraph."""
    return lambda lib, *args: getattr(lib, name)(*args)


BINARY = {
    "//": lambda lib, a, b: a // b,
    "%": lambda lib, a, b: a % b,
    "/": lambda lib, a, b: a / b,
    "&": lambda lib, a, b: a & b,
    "|": lambda lib, a, b: a | b,
    "^": lambda lib, a, b: a ^ b,
    "<<": lambda lib, a, b: a << b,
    ">>": lambda lib, a, b: a >> b,
    "div trunc": lambda lib, a, b: lib.div(a, b, rounding_mode="trunc"),
    "div floor": lambda lib, a, b: lib.div(a, b, rounding_mode="floor"),
    **{
        name: by_name(name)
        for name in (
            "floor_divide remainder fmod true_divide copysign atan2 hypot logaddexp bitwise_and bitwise_or "
            "bitwise_xor bitwise_left_shift bitwise_right_shift"
        ).split()
    },
}
IN_PLACE = {
    "//=": operator.ifloordiv,
    "%=": operator.imod,
    "/=": operator.itruediv,
    "&=": operator.iand,
    "|=": operator.ior,
    "^=": operator.ixor,
    "<<=": operator.ilshift,
    ">>=": operator.irshift,
    "div_ floor": lambda a, b: a.div_(b, rounding_mode="floor"),
    "fmod_": lambda a, b: a.fmod_(b),
    "bitwise_left_shift_": lambda a, b: a.bitwise_left_shift_(b),
}
UNARY = {
    "~": lambda lib, a: ~a,
    **{
        name: by_name(name)
        for name in "bitwise_not floor ceil round trunc fix frac sign sgn signbit sin acosh exp2 reciprocal".split()
    },
    "round decimals": lambda lib, a: lib.round(a, decimals=1),
}


def outcome(fn, *args):
    """What fn gives: a torch.Tensor, or the type of the exception it raises."""
    try:
        out = fn(*args)
    except Exception as err:
        return type(err)
    assert not (isinstance(out, tg.Tensor) and out.requires_grad), "an op on integers recorded a grad"
    return out.data if isinstance(out, tg.Tensor) else out


def agree(ours, theirs) -> bool:
    """The same exception (or a subclass: an in-place bitwise op with a float operand raises
    torch's NotImplementedError, a RuntimeError, before the cast check that raises torch's
    RuntimeError), or the same dtype and values (to an ulp: `3 / x` is 3 * (1 / x) in torch,
    which torch.div(3, x) is not; tinygraph computes both as the operator does)."""
    if isinstance(ours, type) or isinstance(theirs, type):
        return isinstance(ours, type) and isinstance(theirs, type) and issubclass(ours, theirs)
    return ours.dtype == theirs.dtype and torch.allclose(ours.double(), theirs.double(), rtol=1e-6, equal_nan=True)


def as_lib(lib, t):
    return tg.tensor(t) if lib is tg and isinstance(t, torch.Tensor) else t


def mismatches(fn, cases, with_lib=True):
    found = []
    for label, args in cases:
        ours = outcome(fn, *((tg,) if with_lib else ()), *(as_lib(tg, a) for a in args))
        theirs = outcome(fn, *((torch,) if with_lib else ()), *args)
        if not agree(ours, theirs):
            found.append(f"{label}: ours {ours}, torch's {theirs}")
    return found


def binary_cases():
    for an, a in TENSORS.items():
        for bn, b in TENSORS.items():
            yield f"{an}, {bn}", (a, b)
        for n in NUMBERS:
            yield f"{an}, {n!r}", (a, n)
            yield f"{n!r}, {an}", (n, a)


@pytest.mark.parametrize("name", sorted(BINARY))
def test_binary_ops_on_every_dtype_give_torchs_dtypes_values_and_errors(name):
    assert not mismatches(BINARY[name], binary_cases())


@pytest.mark.parametrize("name", sorted(IN_PLACE))
def test_in_place_forms_on_every_dtype_give_torchs_dtypes_values_and_errors(name):
    def run(a, b):
        a = a.clone()
        out = IN_PLACE[name](a, b)
        assert out is a, "an in-place form returned another tensor"
        return a

    cases = [(label, args) for label, args in binary_cases() if not isinstance(args[0], (int, float))]
    assert not mismatches(run, cases, with_lib=False)


@pytest.mark.parametrize("name", sorted(UNARY))
def test_unary_ops_on_every_dtype_give_torchs_dtypes_values_and_errors(name):
    assert not mismatches(UNARY[name], [(n, (t,)) for n, t in TENSORS.items()])


def test_invert_of_a_float_tensor_is_torchs_type_error():
    with pytest.raises(TypeError, match="integer and Boolean"):
        ~tg.tensor([1.0])


def test_wrong_arguments_are_torchs_errors_or_sentences():
    x = tg.tensor([1.5, -2.0])
    with pytest.raises(RuntimeError, match="rounding_mode"):
        tg.div(x, 2, rounding_mode="round")
    with pytest.raises(TypeError, match=r"tinygraph\.sin\(\).*'out'"):
        tg.sin(x, out=x)
    with pytest.raises(TypeError, match="must be Tensor"):  # torch's atan2 takes no number
        tg.atan2(x, 2.0)
    with pytest.raises(TypeError, match="bound"):
        x.clamp_min(None)
    with pytest.raises(RuntimeError):  # as torch's
        x.clamp()


# ---- values and grads at the edges of each domain: torch's, NaN and Inf included -----------------------------

EDGES = {
    "asin, acos at ±1": (lambda lib, x: x.asin() + lib.acos(x), [1.0, -1.0, 0.5]),
    "acosh at 1 and below": (lambda lib, x: x.acosh(), [1.0, 0.5, 2.0]),
    "atanh at ±1": (lambda lib, x: x.atanh(), [1.0, -1.0, 0.0]),
    "log2, log10, log1p at their poles": (lambda lib, x: x.log2() + x.log10() + (x - 1).log1p(), [0.0, -1.0, 1.0]),
    "reciprocal of ±0": (lambda lib, x: (x * 0).reciprocal() + (-x * 0).reciprocal(), [1.0, -1.0]),
    "tan, exp2, expm1 overflow": (
        lambda lib, x: x.exp2() + x.expm1() + lib.tan(x),
        [2000.0, -2000.0, 1.5707963267948966],
    ),
    "fmod and remainder by 0": (lambda lib, x: x.fmod(x * 0) + (x % (x * 0)), [1.0, -2.0]),
    "copysign at ±0": (lambda lib, x: (x * 0).copysign(x) + x.copysign(-x * 0), [1.0, -2.0]),
    "hypot and atan2 at the origin": (lambda lib, x: (x * 0).hypot(x * 0) + lib.atan2(x * 0, -x * 0), [1.0, -1.0]),
    "logaddexp of infinities": (lambda lib, x: (x / 0).logaddexp(x / 0) + (x / 0).logaddexp2(x), [1.0, -1.0]),
    "rounding NaN and Inf": (lambda lib, x: (x / 0).floor() + (x / 0).round() + (x / 0).frac(), [1.0, 0.0, -1.0]),
    "div rounded by 0": (
        lambda lib, x: lib.div(x, x * 0, rounding_mode="floor") + x.div(0.0, rounding_mode="trunc"),
        [1.5, 0.0],
    ),
    "lerp with weights out of [0, 1]": (lambda lib, x: x.lerp(x * 2 + 1, x * 3), [1.0, -1.0, 0.0]),
    "clamp with NaN bounds": (lambda lib, x: x.clamp(x / 0 * 0, x) + x.clamp_min(x * 0 / 0), [1.0, -1.0]),
}


@pytest.mark.parametrize("case", sorted(EDGES))
def test_values_and_grads_at_the_edges_are_torchs(case):
    fn, values = EDGES[case]
    x, xt = tg.tensor(values, dtype=tg.float64, requires_grad=True), torch.tensor(values, dtype=torch.float64)
    xt.requires_grad_()
    out, outt = fn(tg, x), fn(torch, xt)
    torch.testing.assert_close(out.data, outt.detach(), equal_nan=True)
    g = torch.linspace(0.5, 1.5, out.numel(), dtype=torch.float64).reshape(out.shape)
    out.backward(g)
    outt.backward(g)
    torch.testing.assert_close(x.grad.data, xt.grad, equal_nan=True)


# ---- where torch's autograd has no derivative, tinygraph gives the one torch defines for the same values ----------


def test_floor_division_has_the_zero_grad_of_div_with_rounding_mode_floor():
    a = tg.tensor([1.5, -2.5], requires_grad=True)
    b = tg.tensor([0.7, 0.3], requires_grad=True)
    out = a // b + tg.floor_divide(2.0, b) + a.clone().floor_divide_(b)
    assert out.requires_grad  # as torch's (whose backward then raises "not implemented")
    out.sum().backward()
    assert a.grad.tolist() == [0.0, 0.0] and b.grad.tolist() == [0.0, 0.0]


def test_a_number_modulo_a_tensor_has_the_grad_of_a_tensor_modulo_a_tensor():
    b, bt = tg.tensor([0.7, -0.3, 1.1], requires_grad=True), torch.tensor([0.7, -0.3, 1.1], requires_grad=True)
    (2.5 % b).sum().backward()
    torch.remainder(torch.tensor(2.5), bt).sum().backward()  # torch: no derivative for remainder(number, tensor)
    torch.testing.assert_close(b.grad.data, bt.grad)


def test_clamp_with_two_tensor_bounds_that_broadcast_the_input():
    """torch's backward fails here ("output with shape [] doesn't match the broadcast shape");
    the grads are those of clamp_max(clamp_min(x, lo), hi), which is the same function."""
    x, xt = tg.tensor(0.5, requires_grad=True), torch.tensor(0.5, requires_grad=True)
    lo, lot = tg.tensor([0.2, 0.7, 0.9], requires_grad=True), torch.tensor([0.2, 0.7, 0.9], requires_grad=True)
    hi, hit = tg.tensor([0.6, 1.0, 0.3], requires_grad=True), torch.tensor([0.6, 1.0, 0.3], requires_grad=True)
    out, outt = x.clamp(lo, hi), torch.clamp_max(torch.clamp_min(xt, lot), hit)
    torch.testing.assert_close(out.data, outt.detach())
    out.sum().backward()
    outt.sum().backward()
    for ours, theirs in ((x, xt), (lo, lot), (hi, hit)):
        torch.testing.assert_close(ours.grad.data, theirs.grad)
