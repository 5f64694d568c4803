"""Every registered op, under hypothesis, through `tinygraph.testing.check`: (1) gradcheck
against float64 finite differences, (2) forward values, input grads and requires_grad equal
torch.autograd's on the same inputs, with a random output grad, (3) the engine's invariants
after that backward, (4) gradgradcheck where the backward is differentiable."""

import pytest
from specs import SPECS

import tinygraph
from tinygraph.testing import check

CASES = [(name, i, spec) for name, specs in SPECS.items() for i, spec in enumerate(specs)]


def test_every_registered_op_has_a_spec():
    missing = sorted(set(tinygraph.OPS) - set(SPECS))
    assert not missing, f"ops without a hypothesis spec in tests/specs/: {missing}"
    unknown = sorted(set(SPECS) - set(tinygraph.OPS))
    assert not unknown, f"specs for ops that are not registered: {unknown}"


@pytest.mark.parametrize("name,i,spec", CASES, ids=[f"{n}-{i}" for n, i, _ in CASES])
def test_op(name, i, spec, device):
    check(spec, device)
