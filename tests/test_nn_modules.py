"""tinygraph.nn's activation, loss and shape modules against torch.nn's: built with the same
constructor arguments, they print the same, and on the same float64 inputs (and parameters)
they give the same outputs, input grads and parameter grads."""

import pytest
import torch

import tinygraph as tg

torch.manual_seed(0)


def floats(*shape, lo=-3.0, hi=3.0):
    return torch.rand(shape, dtype=torch.float64) * (hi - lo) + lo


def probabilities(*shape):
    return floats(*shape, lo=0.05, hi=0.95)


def classes(n, c):
    return torch.randint(0, c, (n,))


X = floats(3, 4)
LOGITS, TARGETS, CLASS_WEIGHTS = floats(5, 3), classes(5, 3), floats(3, lo=0.2, hi=2.0)

# name, constructor arguments (positional, keyword), inputs (the first floating one gets a grad)
ACTIVATIONS = [
    ("ReLU", (), {}, [X]),
    ("ReLU", (True,), {}, [X]),
    ("ReLU6", (), {"inplace": True}, [X * 3]),
    ("LeakyReLU", (0.2,), {}, [X]),
    ("LeakyReLU", (), {"inplace": True}, [X]),
    ("PReLU", (), {}, [X]),
    ("PReLU", (4,), {"init": 0.1}, [floats(2, 4, 3)]),
    ("ELU", (0.5,), {}, [X]),
    ("ELU", (), {"inplace": True}, [X]),
    ("CELU", (2.0, True), {}, [X]),
    ("SELU", (), {}, [X]),
    ("SiLU", (), {}, [X]),
    ("SiLU", (True,), {}, [X]),
    ("Mish", (), {"inplace": True}, [X]),
    ("GELU", (), {}, [X]),
    ("GELU", ("tanh",), {}, [X]),
    ("Hardsigmoid", (), {}, [X * 2]),
    ("Hardswish", (True,), {}, [X * 2]),
    ("Hardtanh", (-0.5, 1.5), {}, [X]),
    ("Hardtanh", (), {"min_value": -2.0, "inplace": True}, [X]),
    ("Threshold", (0.1, 20.0), {}, [X]),
    ("Threshold", (0.1, 20.0, True), {}, [X]),
    ("Softplus", (2.0, 3.0), {}, [X]),
    ("Hardshrink", (), {}, [X]),
    ("Softshrink", (1.0,), {}, [X]),
    ("Tanh", (), {}, [X]),
    ("Sigmoid", (), {}, [X]),
    ("LogSigmoid", (), {}, [X * 10]),
    ("Softsign", (), {}, [X]),
    ("Tanhshrink", (), {}, [X]),
    ("Softmax", (1,), {}, [X]),
    ("LogSoftmax", (), {"dim": -1}, [X]),
    ("Softmin", (0,), {}, [X]),
    ("GLU", (), {}, [X]),
    ("GLU", (0,), {}, [floats(4, 3)]),
]
LAYERS = [
    ("Identity", (3, "ignored"), {"also": True}, [X]),
    ("Flatten", (), {}, [floats(2, 3, 4)]),
    ("Flatten", (0, -2), {}, [floats(2, 3, 4)]),
    ("Unflatten", (1, (2, 2)), {}, [X]),
    ("RMSNorm", (4,), {}, [X]),
    ("RMSNorm", ([3, 4],), {"eps": 1e-3, "elementwise_affine": False}, [floats(2, 3, 4)]),
]
LOSSES = [
    ("L1Loss", (), {}, [X, floats(3, 4)]),
    ("L1Loss", (None, None, "sum"), {}, [X, floats(3, 4)]),
    ("MSELoss", (), {"reduction": "none"}, [X, floats(3, 4)]),
    ("MSELoss", (False,), {}, [X, floats(3, 4)]),  # size_average=False: torch's legacy 'sum'
    ("SmoothL1Loss", (), {"beta": 0.5}, [X, floats(3, 4)]),
    ("HuberLoss", ("sum", 2.0), {}, [X, floats(3, 4)]),
    ("SoftMarginLoss", (), {}, [X, floats(3, 4).sign()]),
    ("KLDivLoss", (), {"reduction": "batchmean"}, [X.log_softmax(1), probabilities(3, 4)]),
    ("KLDivLoss", (), {"log_target": True}, [X.log_softmax(1), floats(3, 4, lo=-2, hi=0)]),
    ("PoissonNLLLoss", (), {}, [X, probabilities(3, 4) * 5]),
    ("PoissonNLLLoss", (False, True), {"eps": 1e-6}, [X.abs() + 0.1, probabilities(3, 4) * 5]),
    ("BCELoss", (), {}, [probabilities(3, 4), probabilities(3, 4)]),
    ("BCELoss", (floats(4, lo=0.2, hi=2.0),), {"reduction": "sum"}, [probabilities(3, 4), probabilities(3, 4)]),
    ("BCEWithLogitsLoss", (), {}, [X, probabilities(3, 4)]),
    ("BCEWithLogitsLoss", (), {"pos_weight": floats(4, lo=0.5, hi=3.0)}, [X, probabilities(3, 4)]),
    ("NLLLoss", (CLASS_WEIGHTS,), {"ignore_index": 1}, [LOGITS.log_softmax(1), TARGETS]),
    ("CrossEntropyLoss", (), {}, [LOGITS, TARGETS]),
    ("CrossEntropyLoss", (CLASS_WEIGHTS,), {"label_smoothing": 0.1, "reduction": "sum"}, [LOGITS, TARGETS]),
    ("CrossEntropyLoss", (), {}, [LOGITS, LOGITS.softmax(1)]),  # class probabilities
]
CASES = ACTIVATIONS + LAYERS + LOSSES


def as_tinygraph(value):
    if isinstance(value, torch.Tensor):
        return tg.Tensor(value.clone())
    if isinstance(value, (tuple, list)):
        return type(value)(as_tinygraph(v) for v in value)
    return value


@pytest.mark.filterwarnings("ignore:size_average and reduce args will be deprecated")
@pytest.mark.parametrize("name,args,kwargs,inputs", CASES, ids=[c[0] for c in CASES])
def test_module_matches_torch_nn(name, args, kwargs, inputs):
    ours = getattr(tg.nn, name)(*as_tinygraph(args), **as_tinygraph(kwargs))
    theirs = getattr(torch.nn, name)(*args, **kwargs)
    assert repr(ours) == repr(theirs)
    ours.to(torch.float64)
    theirs.double()
    with tg.no_grad():  # parameters away from their initial ones and zeros
        for p in ours.parameters():
            p.data.add_(torch.rand_like(p.data))
    theirs.load_state_dict(ours.state_dict())

    # inputs as non-leaves (x * 1), so that in-place modules may change them
    leaf, leaf_t = tg.Tensor(inputs[0].clone(), requires_grad=True), inputs[0].clone().requires_grad_()
    out = ours(leaf * 1, *as_tinygraph(inputs[1:]))
    out_t = theirs(leaf_t * 1, *inputs[1:])
    torch.testing.assert_close(out.data, out_t.detach(), rtol=1e-10, atol=1e-12)
    g = torch.randn_like(out_t)
    out.backward(tg.Tensor(g))
    out_t.backward(g)
    torch.testing.assert_close(leaf.grad.data, leaf_t.grad, rtol=1e-9, atol=1e-10)
    for (pname, p), p_t in zip(ours.named_parameters(), theirs.parameters()):
        torch.testing.assert_close(p.grad.data, p_t.grad, rtol=1e-9, atol=1e-10, msg=pname)


def test_loss_weights_are_buffers_as_in_torch():
    loss = tg.nn.CrossEntropyLoss(weight=torch.ones(3))
    assert list(loss.state_dict()) == list(torch.nn.CrossEntropyLoss(weight=torch.ones(3)).state_dict()) == ["weight"]
    assert list(tg.nn.BCEWithLogitsLoss(pos_weight=tg.ones(2)).state_dict()) == ["pos_weight"]
    loss.to(torch.float64)
    assert loss.weight.dtype == torch.float64


def test_unknown_reductions_are_refused_when_called_as_in_torch():
    loss = tg.nn.MSELoss(reduction="average")  # torch builds it too, and refuses at the call
    with pytest.raises(ValueError, match="average is not a valid value for reduction"):
        loss(tg.randn(2), tg.randn(2))
