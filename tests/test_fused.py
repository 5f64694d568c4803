"""Rule 3: each fused op (one node, a hand-written backward) equals the composition of
primitive ops it replaces, in value and in every input's grad. Every op that names a
`composite` is checked on every one of its specs, found through the registry."""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from specs import SPECS
from specs.nn import attention_inputs, dropout_inputs

import tinygraph as tg
import tinygraph.nn.functional as F
from tinygraph.ops import elementwise as E
from tinygraph.ops import nn as N
from tinygraph.testing import Diff, check_composite_case, materialize

FUSED = [(name, i, spec) for name, op in sorted(tg.OPS.items()) if op.composite for i, spec in enumerate(SPECS[name])]


def test_there_are_fused_ops_to_check():
    fused = {"LayerNorm", "RMSNorm", "Normalize", "CosineSimilarity", "CrossEntropy", "ScaledDotProductAttention"}
    assert fused | {"Gelu", "LSTMCell"} <= {n for n, _, _ in FUSED}


@pytest.mark.parametrize("name,i,spec", FUSED, ids=[f"{n}-{i}" for n, i, _ in FUSED])
def test_fused_op_equals_its_composite(name, i, spec, device):
    @given(data=st.data())
    def run(data):
        args, kwargs = data.draw(spec.inputs)
        check_composite_case(spec, args, kwargs, device, data.draw(st.integers(0, 2**31)))

    run()


def assert_same_values_and_grads(op, fused, composite, args, device):
    tg_args = materialize(tuple(args), tg, device)
    leaves = [a for a in tg_args if isinstance(a, tg.Tensor) and a.requires_grad]
    out = fused(*tg_args)
    assert out.grad_fn.fn is op  # one node, the fused op's
    v = tg.randn(out.shape, dtype=out.dtype, device=device)
    fused_grads = tg.grad(out, leaves, v, allow_unused=True)
    ref = composite(*tg_args)
    ref_grads = tg.grad(ref, leaves, v, allow_unused=True)
    torch.testing.assert_close(out.data, ref.data, rtol=1e-10, atol=1e-12)
    for a, b in zip(fused_grads, ref_grads):
        if b is None:
            assert a is None or not a.data.any()
        else:
            torch.testing.assert_close(a.data, b.data, rtol=1e-9, atol=1e-11)


@given(data=st.data(), seed=st.integers(0, 2**16), p=st.sampled_from([0.1, 0.5]))
def test_attention_dropout_equals_dropped_softmax(device, data, seed, p):
    args, kw = data.draw(attention_inputs())
    kw.pop("scale", None)

    def fused(q, k, v, m=None):
        torch.manual_seed(seed)
        return F.scaled_dot_product_attention(q, k, v, m, dropout_p=p, **kw)

    def composed(q, k, v, m=None):
        s = (q @ k.mT) * (q.shape[-1] ** -0.5)
        if kw["is_causal"]:
            s = s.masked_fill(torch.ones(s.shape[-2:], dtype=torch.bool, device=device).triu(1), float("-inf"))
        if m is not None:
            s = s.masked_fill(~m, float("-inf")) if m.dtype == torch.bool else s + m
        weights = s.softmax(-1)
        torch.manual_seed(seed)  # the fused forward's one rand_like, drawn the same way
        keep = torch.rand(weights.shape, dtype=weights.dtype, device=device) >= p
        return (weights * tg.Tensor(keep) / (1 - p)) @ v

    assert_same_values_and_grads(N.ScaledDotProductAttention, fused, composed, args, device)


@given(data=st.data())
def test_dropout_equals_mask_and_scale(device, data):
    (x,), kw = data.draw(dropout_inputs())

    def fused(x):
        torch.manual_seed(kw["seed"])
        return F.dropout(x, kw["p"])

    def composed(x):
        torch.manual_seed(kw["seed"])
        keep = torch.rand(x.shape, dtype=x.dtype, device=device) >= kw["p"]
        return x * tg.Tensor(keep) / (1 - kw["p"])

    assert_same_values_and_grads(N.Dropout, fused, composed, (x,), device)


@pytest.mark.parametrize("p", [0.0, 1.0])
def test_dropout_edge_probabilities(p):
    x = tg.randn(4, requires_grad=True)
    out = F.dropout(x, p)
    assert torch.equal(out.data, x.data if p == 0 else torch.zeros(4))
    assert F.dropout(x, 0.5, training=False) is x
    with pytest.raises(ValueError, match="between 0 and 1"):
        F.dropout(x, 1.5)


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu_grad_near_zero(device, approximate):
    # the C kernel takes Phi(x) as gelu(x)/x; the grad must not break where gelu(x) underflows
    tiny = torch.finfo(torch.float64).tiny
    x = Diff(torch.tensor([0.0, 5e-324, -5e-324, tiny, -tiny, 3 * tiny], dtype=torch.float64).numpy())
    assert_same_values_and_grads(
        E.Gelu, lambda x: F.gelu(x, approximate), lambda x: E.gelu_composite(x, approximate), (x,), device
    )
