"""torch's values, grads and NaN/Inf patterns at the edges of the activations, losses and
normalizations: kinks, bounds, zero vectors, saturated logits, zero targets. (The specs draw
away from these points, where finite differences cannot check a grad.)"""

import math

import pytest
import torch

import tinygraph as tg

X = [0.0, 1.0, -1.0, 2.0, -3.0, 3.0]  # kinks at 0, +-1, +-3


def target(lib, values):
    return lib.tensor(values, dtype=torch.float64)


EDGES = {
    "silu, mish, softplus of large inputs": lambda lib, F, x: F.silu(x * 300) + F.mish(x * 300) + F.softplus(x * 30),
    "softplus at beta * x = threshold": lambda lib, F, x: F.softplus(x, beta=2.0, threshold=2.0),
    "logsigmoid of large inputs": lambda lib, F, x: F.logsigmoid(x * 1000),
    "leaky_relu and prelu at 0": lambda lib, F, x: F.leaky_relu(x, 0.2) + F.prelu(x, target(lib, [0.3])),
    "elu, selu, celu at 0": lambda lib, F, x: F.elu(x, 0.5) + F.selu(x) + F.celu(x, 2.0),
    "elu of large inputs": lambda lib, F, x: F.elu(x * 1000),
    "hardtanh and relu6 at their bounds": lambda lib, F, x: F.hardtanh(x) + F.relu6(x * 6),
    "hardsigmoid and hardswish at +-3": lambda lib, F, x: F.hardsigmoid(x) + F.hardswish(x),
    "threshold at the threshold": lambda lib, F, x: F.threshold(x, 1.0, 5.0),
    "hardshrink and softshrink at lambd": lambda lib, F, x: F.hardshrink(x, 1.0) + F.softshrink(x, 1.0),
    "normalize of a zero vector": lambda lib, F, x: F.normalize((x * 0).reshape(2, 3)) + F.normalize(x.reshape(2, 3)),
    "normalize with p = inf, ties": lambda lib, F, x: F.normalize(x.clamp(-1, 1), p=math.inf, dim=0),
    "normalize with p = 1 at 0": lambda lib, F, x: F.normalize(x, p=1, dim=0),
    "cosine_similarity of a zero vector": lambda lib, F, x: F.cosine_similarity((x * 0).reshape(2, 3), x.reshape(2, 3)),
    "cosine_similarity of tiny vectors": lambda lib, F, x: F.cosine_similarity(x * 1e-9, x * x - 1, dim=0),
    "rms_norm of a zero vector": lambda lib, F, x: F.rms_norm((x * 0).reshape(2, 3), (3,)),
    "l1 and smooth_l1 where input = target": lambda lib, F, x: (
        F.l1_loss(x, target(lib, X)) + F.smooth_l1_loss(x, target(lib, X))
    ),
    "huber at |input - target| = delta": lambda lib, F, x: F.huber_loss(x, x.detach() * 0, delta=1.0),
    "binary_cross_entropy at 0 and 1": lambda lib, F, x: F.binary_cross_entropy(
        x.clamp(0, 1), target(lib, [0.5, 0.5, 0.0, 1.0, 0.0, 1.0])
    ),
    "binary_cross_entropy_with_logits of saturated logits": lambda lib, F, x: F.binary_cross_entropy_with_logits(
        x * 1000, target(lib, [0.5, 0.0, 1.0, 1.0, 0.0, 1.0]), pos_weight=target(lib, [2.0])
    ),
    "kl_div with zero targets": lambda lib, F, x: F.kl_div(x, x * x, reduction="sum"),
    "soft_margin of saturated margins": lambda lib, F, x: F.soft_margin_loss(x * 1000, x.detach().sign()),
}


@pytest.mark.parametrize("case", sorted(EDGES))
def test_values_and_grads_at_the_edges_are_torchs(case):
    x = tg.tensor(X, dtype=torch.float64, requires_grad=True)
    x_t = torch.tensor(X, dtype=torch.float64, requires_grad=True)
    out, out_t = EDGES[case](tg, tg.nn.functional, x), EDGES[case](torch, torch.nn.functional, x_t)
    torch.testing.assert_close(out.data, out_t.detach(), equal_nan=True)
    g = torch.linspace(-1, 2, out_t.numel(), dtype=torch.float64).reshape(out_t.shape)
    out.backward(tg.Tensor(g))
    out_t.backward(g)
    torch.testing.assert_close(x.grad.data, x_t.grad, equal_nan=True)


def test_second_order_through_elu_of_large_inputs_is_finite():
    # the unused branch's exp must not overflow: 0 * inf would poison the second derivative
    x = tg.tensor([800.0, -800.0, 1.0], dtype=torch.float64, requires_grad=True)
    (g,) = tg.grad(tg.nn.functional.elu(x).sum(), x, create_graph=True)
    (h,) = tg.grad(g.sum(), x)
    assert torch.isfinite(h.data).all()


def test_one_hot_has_torchs_values_and_dtype_and_no_grad():
    ids = torch.tensor([[0, 2], [1, 0]])
    for classes in (-1, 4):
        ours = tg.nn.functional.one_hot(tg.Tensor(ids), classes)
        assert torch.equal(ours.data, torch.nn.functional.one_hot(ids, classes)) and not ours.requires_grad
    with pytest.raises(RuntimeError):
        tg.nn.functional.one_hot(tg.tensor([0.0, 1.0]))


def test_wrong_arguments_raise_torchs_exceptions():
    F, x = tg.nn.functional, tg.randn(3, 4)
    with pytest.raises(ValueError, match="min_val cannot be greater than max_val"):
        F.hardtanh(x, 1.0, -1.0)
    with pytest.raises(RuntimeError, match="Halving dimension must be even"):
        F.glu(x, 0)
    with pytest.raises(RuntimeError, match="alpha cannot be 0"):
        F.celu(x, 0.0)
    with pytest.raises(RuntimeError, match="delta"):
        F.huber_loss(x, x, delta=0.0)
    with pytest.raises(ValueError, match="different to the input size"):
        F.binary_cross_entropy(x.sigmoid(), tg.rand(4))
    with pytest.raises(ValueError, match="must be the same as input size"):
        F.binary_cross_entropy_with_logits(x, tg.rand(4))
    with pytest.raises(RuntimeError, match="between 0 and 1"):
        F.binary_cross_entropy(x, x.sigmoid())
    with pytest.raises(ValueError, match="not a valid value for reduction"):
        F.l1_loss(x, x, reduction="average")
    with pytest.raises(RuntimeError, match="expected input with shape"):
        F.rms_norm(x, (3,))
    with pytest.raises(TypeError, match="out="):
        F.normalize(x, out=x)


def test_legacy_size_average_and_reduce_mean_what_they_mean_in_torch():
    x, t = tg.randn(3, 4), tg.randn(3, 4)
    with pytest.warns(UserWarning, match="reduction='sum'"):
        assert torch.equal(tg.nn.functional.mse_loss(x, t, False).data, ((x - t) ** 2).sum().data)
    with pytest.warns(UserWarning, match="reduction='none'"):
        assert tg.nn.functional.l1_loss(x, t, reduce=False).shape == (3, 4)
