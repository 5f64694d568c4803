"""Every registered op, under hypothesis: (1) gradcheck against float64 finite differences,
(2) forward values and input grads equal torch.autograd's on the same inputs, with a
random output grad, (3) gradgradcheck where the backward is differentiable."""

import numpy as np
import pytest
import torch
import torch.nn.functional as torch_F
from hypothesis import given
from hypothesis import strategies as st
from op_specs import SPECS, Const, Diff

import tinygraph
import tinygraph.nn.functional as tg_F

CASES = [(name, i, spec) for name, specs in SPECS.items() for i, spec in enumerate(specs)]


def test_every_registered_op_has_a_spec():
    missing = sorted(set(tinygraph.OPS) - set(SPECS))
    assert not missing, f"ops without a hypothesis spec in tests/op_specs.py: {missing}"
    unknown = sorted(set(SPECS) - set(tinygraph.OPS))
    assert not unknown, f"specs for ops that are not registered: {unknown}"


def materialize(value, lib, device):
    """Turn a drawn argument into tinygraph or torch tensors on `device`."""
    if isinstance(value, Diff):
        data = torch.tensor(value.value, dtype=torch.float64, device=device)
        return tinygraph.Tensor(data, requires_grad=True) if lib is tinygraph else data.requires_grad_()
    if isinstance(value, Const):
        data = torch.as_tensor(np.asarray(value.value), device=device)
        return tinygraph.Tensor(data) if lib is tinygraph else data
    if isinstance(value, tuple):
        return tuple(materialize(v, lib, device) for v in value)
    return value


def outputs(result):
    return [r for r in (result if isinstance(result, (tuple, list)) else (result,)) if r.is_floating_point()]


def check_case(spec, args, kwargs, device, seed):
    """The three checks on one drawn input."""
    tg_args = materialize(tuple(args), tinygraph, device)
    torch_args = materialize(tuple(args), torch, device)

    def tg_fn(*a):
        return spec.call(tinygraph, tg_F, *a, **kwargs)

    # (1) finite differences
    tinygraph.gradcheck(tg_fn, tg_args, **spec.tolerances)

    # (2) torch.autograd on the same inputs, random output grads
    tg_out = outputs(tg_fn(*tg_args))
    torch_out = outputs((spec.torch_call or spec.call)(torch, torch_F, *torch_args, **kwargs))
    assert len(tg_out) == len(torch_out)
    for a, b in zip(tg_out, torch_out):
        assert a.shape == b.shape and a.dtype == b.dtype
        torch.testing.assert_close(a.data, b.detach(), rtol=1e-10, atol=1e-12, equal_nan=True)
    gen = torch.Generator().manual_seed(seed)
    vs = [torch.randn(o.shape, generator=gen, dtype=o.dtype).to(device) for o in torch_out]
    tg_leaves = [a for a in tg_args if isinstance(a, tinygraph.Tensor) and a.requires_grad]
    torch_leaves = [a for a in torch_args if isinstance(a, torch.Tensor) and a.requires_grad]
    live = [k for k, o in enumerate(torch_out) if o.requires_grad]
    if live:
        tinygraph.backward([tg_out[k] for k in live], [vs[k] for k in live])
        torch.autograd.backward([torch_out[k] for k in live], [vs[k] for k in live])
    for a, b in zip(tg_leaves, torch_leaves):
        if b.grad is None:
            assert a.grad is None or not a.grad.data.any()
        else:
            torch.testing.assert_close(a.grad.data, b.grad, rtol=1e-9, atol=1e-10)

    # (3) second order
    if spec.second_order:
        for a in tg_leaves:
            a.grad = None
        tinygraph.gradgradcheck(tg_fn, tg_args, **spec.tolerances)


def check_spec(spec, device="cpu"):
    """Run the three checks on hypothesis-drawn inputs of one spec, as the suite does."""

    @given(data=st.data())
    def check(data):
        args, kwargs = data.draw(spec.inputs)
        check_case(spec, args, kwargs, device, data.draw(st.integers(0, 2**31)))

    check()


@pytest.mark.parametrize("name,i,spec", CASES, ids=[f"{n}-{i}" for n, i, _ in CASES])
def test_op(name, i, spec, device):
    check_spec(spec, device)
