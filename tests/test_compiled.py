"""Rule 3 for the compiled formulas (`tinygraph.compiled`): a fused op's hand-written
backward, compiled on its own, equals the same formula run eagerly, which equals the op's
composite (tests/test_fused.py); and `@compiled` compiles only where it should and falls
back to the formula where compiling fails."""

import warnings

import pytest
import torch

import tinygraph as tg
import tinygraph.compiled as C
import tinygraph.nn.functional as F
from tinygraph.ops import elementwise as E
from tinygraph.ops import nn as N
from tinygraph.testing import use_composites


@pytest.fixture
def compile_everything(monkeypatch):
    """Every `@compiled` formula compiled, whatever its size."""
    monkeypatch.setattr(C.settings, "devices", ("cpu", "cuda"))
    monkeypatch.setattr(C.settings, "min_elements", 0)


CASES = {
    "layer_norm": (lambda x, w, b: F.layer_norm(x, (16,), w, b), ((3, 5, 16), (16,), (16,))),
    "layer_norm, 2 dims, no bias": (lambda x, w: F.layer_norm(x, (5, 16), w), ((3, 5, 16), (5, 16))),
    "gelu": (lambda x: F.gelu(x), ((3, 5, 16),)),
    "gelu tanh": (lambda x: F.gelu(x, approximate="tanh"), ((3, 5, 16),)),
    "lstm cell": (lambda *args: sum_of_both(N.LSTMCell.apply(*args)), ((3, 16), (3, 4), (3, 4), (16, 4))),
}


def sum_of_both(h_and_c):
    h, c = h_and_c
    return h * 2 + c


@pytest.mark.parametrize("case", CASES)
def test_compiled_backward_equals_the_formula_and_the_composite(case, compile_everything):
    call, shapes = CASES[case]
    torch.manual_seed(0)
    inputs = [tg.randn(*s, dtype=tg.float64, requires_grad=True) for s in shapes]
    out = call(*inputs)
    v = tg.randn(*out.shape, dtype=tg.float64)
    compiled = tg.grad(out, inputs, v)
    C.settings.devices = ()
    eager = tg.grad(call(*inputs), inputs, v)
    with use_composites():
        composite = tg.grad(call(*inputs), inputs, v)
    for a, b, c in zip(compiled, eager, composite):
        torch.testing.assert_close(a.data, b.data, rtol=1e-12, atol=1e-13)
        torch.testing.assert_close(a.data, c.data, rtol=1e-9, atol=1e-11)


@pytest.fixture
def spy_compile(monkeypatch):
    """torch.compile replaced by a spy that records what it was asked to compile and hands
    back the formula itself: the decisions of `@compiled`, without a compiler."""
    asked = []

    def fake_compile(fn, **kwargs):
        asked.append(fn)
        return fn

    monkeypatch.setattr(torch, "compile", fake_compile)
    monkeypatch.setattr(C.settings, "devices", ("cpu", "cuda"))
    return asked


def test_compiles_large_tensors_once_and_small_ones_never(spy_compile, monkeypatch):
    calls = []

    @C.compiled
    def double(x):
        calls.append(x.shape)
        return x * 2

    monkeypatch.setattr(C.settings, "min_elements", 100)
    double(torch.ones(10))
    assert spy_compile == []  # too small to pay
    double(torch.ones(100))
    double(torch.ones(200))
    assert spy_compile == [double.formula]  # one compiled function; torch.compile makes one kernel per shape
    monkeypatch.setattr(C.settings, "devices", ())  # TINYGRAPH_COMPILE_OPS=0
    assert torch.equal(double(torch.ones(300)), torch.full((300,), 2.0))
    assert len(calls) == 4


def test_stops_compiling_new_shapes_past_the_limit(monkeypatch):
    compiled_calls = []
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: lambda x: compiled_calls.append(x.shape) or fn(x))
    monkeypatch.setattr(C.settings, "devices", ("cpu", "cuda"))
    monkeypatch.setattr(C.settings, "min_elements", 0)
    monkeypatch.setattr(C.settings, "max_shapes", 2)

    @C.compiled
    def double(x):
        return x * 2

    for n in (1, 2, 3, 1):
        assert torch.equal(double(torch.ones(n)), torch.full((n,), 2.0))
    assert compiled_calls == [(1,), (2,), (1,)]  # the third shape ran the plain formula


def test_a_compiler_that_fails_leaves_the_formula(monkeypatch):
    def broken_compile(fn, **kwargs):
        def kernel(*args):
            raise RuntimeError("no C++ compiler")

        return kernel

    monkeypatch.setattr(torch, "compile", broken_compile)
    monkeypatch.setattr(C.settings, "devices", ("cpu", "cuda"))
    monkeypatch.setattr(C.settings, "min_elements", 0)

    @C.compiled
    def double(x):
        return x * 2

    with pytest.warns(UserWarning, match="could not compile .*no C\\+\\+ compiler.*TINYGRAPH_COMPILE_OPS=0"):
        assert torch.equal(double(torch.ones(3)), torch.full((3,), 2.0))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no second attempt, no second warning
        assert torch.equal(double(torch.ones(4)), torch.full((4,), 2.0))


def test_the_switch_chooses_the_devices():
    assert C._devices(None) == ("cuda",)  # by default: the CPU is opt-in
    assert C._devices("1") == C._devices("on") == ("cpu", "cuda")
    assert C._devices("0") == C._devices("off") == ()


def test_the_fused_ops_backwards_are_compiled_formulas():
    for formula in (E.gelu_backward, N.layer_norm_backward, N.lstm_gate_grads):
        assert callable(formula.formula) and formula.formula is not formula
