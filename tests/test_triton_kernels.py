"""Rule 3 for the Triton kernels: each one equals its fused op's composite, in value and in
every grad (torch.autograd of the composite in float32 is the oracle; bfloat16 and float16
inputs are compared with the float32 composite of the same rounded values).

Where a GPU is present the kernels run compiled, on CUDA. Elsewhere they run on the CPU
under Triton's interpreter, which has to be chosen before triton's first import (triton
decorates its own library then) and stay chosen while kernels launch. So this file imports
triton with TRITON_INTERPRET=1, loads its own copies of the kernel modules (@triton.jit
reads the variable at import too), and sets the variable only while its own tests run: the
rest of the suite never sees it. It is never set where a GPU is present, since triton's
library, interpreted, would break torch.compile's GPU kernels in the same process.

Shapes are tiny (the interpreter runs each program in Python) and chosen against the
interpreter's 16-wide blocks: non-powers of two, masked tails, several blocks per row and
per program. The interpreter runs none of Triton's compiler, so one more test compiles
every kernel for Hopper (sm_90) without a GPU, in a process of its own. Skipped where
triton is not installed.
"""

import importlib.util
import math
import os
import subprocess
import sys
from contextlib import contextmanager, nullcontext
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import tinygraph as tg
import tinygraph.kernels as kernels
from tinygraph.ops import elementwise as E
from tinygraph.ops import nn as N
from tinygraph.testing import use_composites

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
ROOT = Path(__file__).resolve().parent.parent


@contextmanager
def interpreter():
    """TRITON_INTERPRET=1 within, what it was after."""
    saved = os.environ.get("TRITON_INTERPRET")
    os.environ["TRITON_INTERPRET"] = "1"
    try:
        yield
    finally:
        if saved is None:
            del os.environ["TRITON_INTERPRET"]
        else:
            os.environ["TRITON_INTERPRET"] = saved


def interpreted_on_cpu():
    return interpreter() if DEVICE == "cpu" else nullcontext()


if DEVICE == "cpu" and "triton" in sys.modules and not kernels.interpreted():
    pytest.skip(
        "triton was imported before this file could choose its interpreter; run this file in a pytest of its own.",
        allow_module_level=True,
    )


def _load_kernel_modules():
    """Fresh copies of the kernel modules, their kernels made under this process's mode."""
    modules = {}
    for name in ("layer_norm", "gelu", "cross_entropy", "attention"):
        spec = importlib.util.find_spec(f"tinygraph.kernels.{name}")
        modules[name] = module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    return SimpleNamespace(**modules)


with interpreted_on_cpu():
    pytest.importorskip("triton")
    K = _load_kernel_modules()


@pytest.fixture(autouse=True, scope="module")
def _interpreter_while_these_tests_run():
    with interpreted_on_cpu():
        yield


def assert_near(actual, expected, dtype):
    """float32: within float32 rounding of the composite. Half dtypes: within 1.5 roundings
    of the dtype in norm (inputs are rounded alike; the kernel rounds its result, and so do
    its half-precision matrix products, and the interpreter rounds toward zero)."""
    assert actual.dtype == dtype and actual.shape == expected.shape
    actual = actual.cpu().float()
    if dtype == torch.float32:
        torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-5)
    else:
        assert actual.isfinite().all()
        assert (actual - expected).norm() <= 1.5 * torch.finfo(dtype).eps * expected.norm()


def leaves(*tensors):
    """float32 copies that torch.autograd differentiates the composite by."""
    return [t.detach().cpu().float().requires_grad_() if t is not None else None for t in tensors]


@contextmanager
def untouched(*tensors):
    """No kernel writes into its inputs."""
    copies = [t.clone() for t in tensors]
    yield
    for t, copy in zip(tensors, copies):
        assert torch.equal(t, copy), "a kernel modified one of its inputs"


def test_available_only_where_the_kernels_run(monkeypatch):
    x, ids = torch.randn(3), torch.arange(3)
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    assert not kernels.available(x)  # a CPU tensor needs the interpreter
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert kernels.available(x, ids, None, x.bfloat16(), x.half())
    assert not kernels.available(x.double())
    assert not kernels.available(x, torch.empty(3, device="meta"))
    assert not kernels.available(None)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("affine", ["weight and bias", "weight", "none"])
def test_layer_norm(dtype, affine):
    torch.manual_seed(0)
    x = (torch.randn(7, 3, 50) * 3 + 1).to(dtype).transpose(0, 1)  # 21 rows of 50, not contiguous
    w = torch.randn(50).to(dtype) if affine != "none" else None
    b = torch.randn(50).to(dtype) if affine == "weight and bias" else None
    g = torch.randn(x.shape).to(dtype)
    has_grad = (w is not None, b is not None)
    on = [t.to(DEVICE) if t is not None else None for t in (x, w, b, g)]
    with untouched(*[t for t in on if t is not None]):
        y, mean, rstd = K.layer_norm.layer_norm_forward(*on[:3], eps=1e-5)
        gx, gw, gb = K.layer_norm.layer_norm_backward(on[3], on[0], mean, rstd, on[1], (True, *has_grad))
    x_, w_, b_ = leaves(x, w, b)
    ref = N.layer_norm_composite(x_, w_, b_, normalized_shape=(50,), eps=1e-5)
    ref.backward(g.float())
    assert_near(y, ref.detach(), dtype)
    torch.testing.assert_close(mean.cpu(), x_.detach().mean(-1), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(rstd.cpu(), (x_.detach().var(-1, correction=0) + 1e-5).rsqrt(), rtol=1e-4, atol=1e-5)
    assert_near(gx, x_.grad, dtype)
    for grad, leaf in zip((gw, gb), (w_, b_)):
        if leaf is None:
            assert grad is None
        else:
            assert_near(grad, leaf.grad, dtype)
    _, gw, gb = K.layer_norm.layer_norm_backward(on[3], on[0], mean, rstd, on[1], (True, False, False))
    assert gw is None and gb is None  # not asked for


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("approximate", ["none", "tanh"])
@pytest.mark.parametrize("with_bias", [True, False], ids=["bias", "no-bias"])
def test_gelu(dtype, approximate, with_bias):
    torch.manual_seed(0)
    x = torch.randn(3, 5, 37) * 3
    x[0, 0, :6] = torch.tensor([-30.0, -8.0, -1e-30, 0.0, 8.0, 30.0])  # saturated tails and zero
    x, g = x.to(dtype), torch.randn(x.shape).to(dtype)
    b = torch.randn(37).to(dtype) if with_bias else None
    on = [t.to(DEVICE) if t is not None else None for t in (x, b, g)]
    with untouched(*[t for t in on if t is not None]):
        y = K.gelu.gelu_forward(on[0], approximate, bias=on[1])
        gx, gb = K.gelu.gelu_backward(on[2], on[0], approximate, bias=on[1])
    x_, b_ = leaves(x, b)
    ref = E.gelu_composite(x_ + b_ if with_bias else x_, approximate)
    ref.backward(g.float())
    assert_near(y, ref.detach(), dtype)
    assert_near(gx, x_.grad, dtype)
    if with_bias:
        assert_near(gb, b_.grad, dtype)
    else:
        assert gb is None


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy(dtype, reduction):
    torch.manual_seed(0)
    logits = (torch.randn(9, 40) * 4).to(dtype)[:, :37]  # 37 classes in rows 40 apart: 3 chunks, a tail
    target = torch.randint(0, 37, (9,))
    target[[2, 5]] = -100
    target[7] = 36
    grad = torch.randn(9 if reduction == "none" else ()).to(dtype)
    on = [t.to(DEVICE) for t in (logits, target, grad)]
    with untouched(*on):
        loss, lse = K.cross_entropy.cross_entropy_forward(on[0], on[1], reduction=reduction)
        gx = K.cross_entropy.cross_entropy_backward(on[2], on[0], on[1], lse, reduction=reduction)
    (x_,) = leaves(logits)
    ref = N.cross_entropy_composite(x_, target, reduction=reduction)
    ref.backward(grad.float())
    assert_near(loss, ref.detach(), dtype)
    torch.testing.assert_close(lse.cpu(), x_.detach().logsumexp(1), rtol=1e-5, atol=1e-5)
    assert_near(gx, x_.grad, dtype)
    assert not gx[[2, 5]].any()


def test_cross_entropy_ignore_index_and_bad_targets():
    logits = torch.randn(4, 21, device=DEVICE)
    target = torch.tensor([3, 3, 0, 20], device=DEVICE)
    loss, _ = K.cross_entropy.cross_entropy_forward(logits, target, ignore_index=3, reduction="none")
    torch.testing.assert_close(
        loss.cpu(), N.cross_entropy_composite(logits, target, ignore_index=3, reduction="none").cpu()
    )
    everything_ignored = torch.full((4,), 3, device=DEVICE)
    loss, lse = K.cross_entropy.cross_entropy_forward(logits, everything_ignored, ignore_index=3)
    assert loss.isnan()  # 0 / 0, as torch
    assert not K.cross_entropy.cross_entropy_backward(
        torch.tensor(1.0, device=DEVICE), logits, everything_ignored, lse, 3
    ).any()
    out_of_range = torch.tensor([0, 21, -1, -100], device=DEVICE)
    loss, _ = K.cross_entropy.cross_entropy_forward(logits, out_of_range, reduction="none")
    assert loss[0].isfinite() and loss[1:3].isnan().all() and loss[3] == 0


ATTENTION_CASES = {
    # name: (L, S, E, Ev, is_causal, mask, scale, dtype)
    "plain": (20, 20, 16, 16, False, None, None, torch.float32),
    "causal, more queries than keys": (37, 21, 12, 12, True, None, None, torch.float32),
    "causal, fewer queries than keys": (21, 37, 12, 20, True, None, 0.3, torch.float32),
    "bool mask": (19, 33, 12, 12, False, "bool (L, S)", None, torch.float32),
    "float mask, causal": (19, 33, 12, 12, True, "float (H, 1, S)", None, torch.float32),
    "bfloat16 causal": (37, 21, 12, 12, True, None, None, torch.bfloat16),
    "bfloat16 bool mask": (19, 33, 16, 16, False, "bool (B, 1, L, S)", None, torch.bfloat16),
    "float16 float mask": (19, 33, 12, 12, False, "float (H, 1, S)", None, torch.float16),
}


def _attention_mask(kind, B, H, L, S):
    if kind is None:
        return None
    if kind.startswith("bool"):
        mask = torch.rand(B, 1, L, S) > 0.4 if "B" in kind else torch.rand(L, S) > 0.4
        mask[..., 5] = True  # every row attends somewhere: a row with no key is NaN
        return mask
    return (
        torch.randn(H, 1, S).masked_fill(torch.rand(H, 1, S) < 0.2, float("-inf")).index_fill(-1, torch.tensor([0]), 0)
    )


@pytest.mark.parametrize("case", ATTENTION_CASES)
def test_attention(case):
    L, S, Ed, Ev, is_causal, mask_kind, scale, dtype = ATTENTION_CASES[case]
    torch.manual_seed(0)
    B, H = 2, 3
    q = torch.randn(B, L, H, Ed).to(dtype).transpose(1, 2)  # heads split from rows, as attention layers make them
    key, v = torch.randn(B, H, S, Ed).to(dtype), torch.randn(B, H, S, Ev).to(dtype)
    mask = _attention_mask(mask_kind, B, H, L, S)
    g = torch.randn(B, H, L, Ev).to(dtype)
    on = [t.to(DEVICE) if t is not None else None for t in (q, key, v, mask, g)]
    kw = dict(is_causal=is_causal, scale=scale)
    with untouched(*[t for t in on if t is not None]):
        out, lse = K.attention.attention_forward(*on[:4], **kw)
        gq, gk, gv = K.attention.attention_backward(on[4], *on[:3], out, lse, on[3], **kw)
    q_, key_, v_ = leaves(q, key, v)
    ref = N.attention_composite(q_, key_, v_, mask, **kw)
    ref.backward(g.float())
    assert_near(out, ref.detach(), dtype)
    assert_near(gq, q_.grad, dtype)
    assert_near(gk, key_.grad, dtype)
    assert_near(gv, v_.grad, dtype)
    scores = (q_ @ key_.mT).detach() * (scale or 1 / math.sqrt(Ed))
    if is_causal:
        scores = scores.masked_fill(torch.ones(L, S, dtype=torch.bool).triu(1), float("-inf"))
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else scores + mask
    torch.testing.assert_close(lse.cpu(), scores.logsumexp(-1), rtol=1e-4, atol=1e-4)


def test_attention_of_3d_inputs():
    q, key, v = (torch.randn(2, 21, 12, device=DEVICE) for _ in range(3))
    out, lse = K.attention.attention_forward(q, key, v, is_causal=True)
    assert out.shape == (2, 21, 12) and lse.shape == (2, 21)
    ref = N.attention_composite(q, key, v, is_causal=True)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)
    gq, gk, gv = K.attention.attention_backward(torch.ones_like(out), q, key, v, out, lse, is_causal=True)
    assert gq.shape == gk.shape == gv.shape == (2, 21, 12)


@pytest.mark.slow
def test_kernels_compile_for_hopper():
    """The compiled path the interpreter never takes (tensor-core products of half inputs,
    GPU blocks) goes through Triton's compiler down to a cubin, within shared memory."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    tool = [sys.executable, "tools/compile_kernels.py", "--quick", "--arch", "90"]
    result = subprocess.run(tool, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"{result.stdout[-3000:]}\n{result.stderr[-5000:]}"


# ---- the engine's kernel path: each fused op, run through tinygraph, takes its kernel and
# equals its composite (values, grads, and second order, which the engine takes from the
# composite). On the CPU, `kernels.settings.on_cpu` sends CPU tensors to the interpreter.
MASK = torch.rand(17, 21, generator=torch.Generator().manual_seed(0)) > 0.4
MASK[:, 0] = True  # every query attends somewhere


ENGINE_CASES = {
    # name: (the public call, its inputs (float ones get grads), the op it must record)
    "layer_norm": (
        lambda x, w, b: tg.nn.functional.layer_norm(x, (5, 9), w, b),
        ((3, 7, 5, 9), (5, 9), (5, 9)),
        "LayerNorm",
    ),
    "gelu": (lambda x: tg.nn.functional.gelu(x), ((4, 37),), "Gelu"),
    "gelu tanh": (lambda x: tg.nn.functional.gelu(x, approximate="tanh"), ((4, 37),), "Gelu"),
    "cross_entropy": (
        lambda x: tg.nn.functional.cross_entropy(x, torch.tensor([3, -100, 0, 36, 5], device=DEVICE)),
        ((5, 37),),
        "CrossEntropy",
    ),
    "cross_entropy sum": (
        lambda x: tg.nn.functional.cross_entropy(x, torch.tensor([3, 1, 0], device=DEVICE), reduction="sum"),
        ((3, 21),),
        "CrossEntropy",
    ),
    "attention causal": (
        lambda q, k, v: tg.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True),
        ((2, 3, 19, 12), (2, 3, 19, 12), (2, 3, 19, 12)),
        "ScaledDotProductAttention",
    ),
    "attention bool mask": (
        lambda q, k, v: tg.nn.functional.scaled_dot_product_attention(q, k, v, tg.Tensor(MASK.to(DEVICE))),
        ((1, 2, 17, 12), (1, 2, 21, 12), (1, 2, 21, 16)),
        "ScaledDotProductAttention",
    ),
}


@pytest.fixture
def kernels_on_cpu(monkeypatch):
    monkeypatch.setattr(kernels.settings, "on_cpu", True)
    monkeypatch.setattr(kernels.settings, "enabled", True)


@pytest.mark.parametrize("case", ENGINE_CASES)
def test_fused_op_runs_its_kernel_and_equals_its_composite(case, kernels_on_cpu):
    call, shapes, op = ENGINE_CASES[case]
    torch.manual_seed(0)
    inputs = [tg.Tensor((torch.randn(s) * 2).to(DEVICE)).requires_grad_() for s in shapes]
    out = call(*inputs)
    assert out.grad_fn.name == op and out.grad_fn.kernel, "the op did not take its kernel"
    v = torch.randn(out.shape, device=DEVICE)
    grads = tg.grad(out, inputs, v)
    with use_composites():
        ref = call(*inputs)
    ref_grads = tg.grad(ref, inputs, v, create_graph=True)
    torch.testing.assert_close(out.data, ref.data, rtol=1e-4, atol=1e-5)
    for a, b in zip(grads, ref_grads):
        torch.testing.assert_close(a.data, b.data, rtol=1e-4, atol=1e-5)
    # second order: under create_graph the engine differentiates the composite, kernel or not
    (first,) = tg.grad(call(*inputs), inputs[:1], v, create_graph=True)
    (second,) = tg.grad((first * first).sum(), inputs[:1])
    (ref_second,) = tg.grad((ref_grads[0] * ref_grads[0]).sum(), inputs[:1])
    torch.testing.assert_close(second.data, ref_second.data, rtol=1e-4, atol=1e-5)


def test_ops_keep_their_formula_where_the_kernels_do_not_serve(kernels_on_cpu, monkeypatch):
    x = tg.Tensor(torch.randn(4, 8, device=DEVICE)).requires_grad_()
    assert tg.nn.functional.gelu(x).grad_fn.kernel
    assert not tg.nn.functional.gelu(x.double()).grad_fn.kernel  # float64: the torch formula
    weight = torch.ones(8, device=DEVICE)
    assert not tg.nn.functional.cross_entropy(x, torch.tensor([1, 2, 3, 4], device=DEVICE), weight).grad_fn.kernel
    q = tg.Tensor(torch.randn(1, 2, 5, 4, device=DEVICE)).requires_grad_()
    bias = tg.Tensor(torch.randn(5, 5, device=DEVICE)).requires_grad_()  # a mask that needs its grad
    assert not tg.nn.functional.scaled_dot_product_attention(q, q, q, bias).grad_fn.kernel
    monkeypatch.setattr(kernels.settings, "enabled", False)  # the switch (TINYGRAPH_TRITON=0)
    assert not tg.nn.functional.gelu(x).grad_fn.kernel
    monkeypatch.setattr(kernels.settings, "enabled", True)
    monkeypatch.setattr(kernels.settings, "on_cpu", False)
    assert tg.nn.functional.gelu(x).grad_fn.kernel == (DEVICE == "cuda")  # CPU tensors: the formula
