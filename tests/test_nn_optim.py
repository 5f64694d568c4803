"""tinygraph.nn and tinygraph.optim against torch.nn and torch.optim: same names, same numbers."""

import math

import pytest
import torch

import tinygraph as tg
from tinygraph import nn
from tinygraph.nn.utils import clip_grad_norm_
from tinygraph.optim import SGD, Adam, AdamW, optimizer
from tinygraph.optim.lr_scheduler import ReduceLROnPlateau, WarmupCosineLR, warmup_cosine


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(4, 8), nn.GELU(), nn.Dropout(0.5), nn.Linear(8, 3))
        self.norm = nn.LayerNorm(3)
        self.register_buffer("steps", tg.zeros(1))

    def forward(self, x):
        return self.norm(self.body(x))


def test_module_tree_parameters_and_names():
    net = Net()
    names = [n for n, _ in net.named_parameters()]
    assert names == ["body.0.weight", "body.0.bias", "body.3.weight", "body.3.bias", "norm.weight", "norm.bias"]
    assert [type(m).__name__ for m in net.modules()] == [
        "Net",
        "Sequential",
        "Linear",
        "GELU",
        "Dropout",
        "Linear",
        "LayerNorm",
    ]
    assert all(isinstance(p, nn.Parameter) and p.requires_grad for p in net.parameters())
    assert "steps" in net.state_dict() and "(0): Linear(in_features=4, out_features=8, bias=True)" in repr(net)


def test_train_eval_and_zero_grad():
    net = Net()
    assert net.eval() is net and not net.body[2].training
    net.train()
    assert net.body[2].training
    net(tg.randn(2, 4)).sum().backward()
    assert all(p.grad is not None for p in net.parameters())
    net.zero_grad()
    assert all(p.grad is None for p in net.parameters())


def test_state_dict_round_trip_and_strict_errors():
    a, b = Net(), Net()
    b.load_state_dict(a.state_dict())
    x = tg.randn(2, 4)
    a.eval(), b.eval()
    assert torch.equal(a(x).data, b(x).data)
    state = a.state_dict()
    state.pop("norm.bias")
    state["extra"] = torch.zeros(1)
    with pytest.raises(KeyError, match=r"missing: norm\.bias; unexpected: extra"):
        b.load_state_dict(state)
    assert b.load_state_dict(state, strict=False) == (["norm.bias"], ["extra"])
    with pytest.raises(ValueError, match=r"body\.0\.weight has shape"):
        b.load_state_dict({**a.state_dict(), "body.0.weight": torch.zeros(3, 3)})


def test_module_to_casts_parameters_buffers_and_grads():
    net = Net()
    net(tg.randn(2, 4)).sum().backward()
    net.to(torch.float64)
    assert all(p.dtype == torch.float64 and p.grad.dtype == torch.float64 for p in net.parameters())
    assert net.steps.dtype == torch.float64


def test_linear_and_embedding_match_torch_defaults_in_shape_and_scale():
    torch.manual_seed(0)
    lin = nn.Linear(100, 50)
    assert lin.weight.shape == (50, 100) and lin.weight.data.abs().max() <= 0.1
    assert nn.Embedding(10, 3).weight.shape == (10, 3)


def _twins(seed=0):
    torch.manual_seed(seed)
    ours = [tg.randn(3, 4, dtype=tg.float64, requires_grad=True), tg.randn(4, dtype=tg.float64, requires_grad=True)]
    theirs = [p.data.clone().requires_grad_() for p in ours]
    return ours, theirs


@pytest.mark.parametrize(
    "make,make_torch",
    [
        (lambda ps: SGD(ps, lr=0.1), lambda ps: torch.optim.SGD(ps, lr=0.1)),
        (
            lambda ps: SGD(ps, lr=0.1, momentum=0.9, weight_decay=0.01),
            lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, weight_decay=0.01),
        ),
        (
            lambda ps: SGD(ps, lr=0.1, momentum=0.9, nesterov=True),
            lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, nesterov=True),
        ),
        (lambda ps: Adam(ps, lr=0.01, weight_decay=0.1), lambda ps: torch.optim.Adam(ps, lr=0.01, weight_decay=0.1)),
        (
            lambda ps: AdamW(
                [{"params": ps[:1]}, {"params": ps[1:], "weight_decay": 0.0}],
                lr=0.01,
                betas=(0.9, 0.99),
                weight_decay=0.1,
            ),
            lambda ps: torch.optim.AdamW(
                [{"params": ps[:1]}, {"params": ps[1:], "weight_decay": 0.0}],
                lr=0.01,
                betas=(0.9, 0.99),
                weight_decay=0.1,
            ),
        ),
    ],
    ids=["sgd", "sgd-momentum-decay", "sgd-nesterov", "adam-l2", "adamw-groups"],
)
@pytest.mark.parametrize("one_pass", [True, False], ids=["fused", "foreach"])
def test_optimizers_follow_torch_step_by_step(make, make_torch, one_pass, monkeypatch):
    if not one_pass:  # the formula a compiled step and the GPU run
        monkeypatch.setattr(optimizer, "_one_pass", lambda data, grads: False)
    ours, theirs = _twins()
    opt, opt_t = make(ours), make_torch(theirs)
    for _ in range(6):
        # a grad laid out unlike its parameter (as a conv weight's is): the update must not care
        g = torch.randn(4, 3, dtype=torch.float64).mT, torch.randn(4, dtype=torch.float64)
        for p, q, gi in zip(ours, theirs, g):
            p.grad, q.grad = tg.Tensor(gi.clone()), gi.clone()
        opt.step()
        opt_t.step()
        for p, q in zip(ours, theirs):
            torch.testing.assert_close(p.data, q.detach(), rtol=1e-12, atol=1e-12)


def test_optimizer_state_dict_round_trip_continues_identically():
    ours, _ = _twins()
    opt = AdamW(ours, lr=0.01)
    grads = [torch.randn(3, 4, dtype=torch.float64), torch.randn(4, dtype=torch.float64)]
    for p, g in zip(ours, grads):
        p.grad = tg.Tensor(g)
    opt.step()
    copies = [tg.Tensor(p.data.clone(), requires_grad=True) for p in ours]
    opt2 = AdamW(copies, lr=0.5)
    opt2.load_state_dict(opt.state_dict())
    assert opt2.param_groups[0]["lr"] == 0.01
    for p, q, g in zip(ours, copies, grads):
        p.grad, q.grad = tg.Tensor(g), tg.Tensor(g.clone())
    opt.step()
    opt2.step()
    assert all(torch.equal(p.data, q.data) for p, q in zip(ours, copies))
    with pytest.raises(ValueError, match="another model"):
        AdamW(copies[:1]).load_state_dict(opt.state_dict())


@pytest.mark.parametrize("Opt", [Adam, AdamW])
def test_adam_follows_a_model_cast_after_it_was_built(Opt):
    # Adam makes its moments when built (so that a compiled step is traced once); a model cast
    # or moved afterwards (as torch allows, whose moments come with the first step) takes them along
    torch.manual_seed(0)
    x = torch.randn(4, 3, dtype=torch.float64)
    steps = []
    for cast_first in (False, True):
        torch.manual_seed(1)
        lin = tg.nn.Linear(3, 2)
        if cast_first:
            lin.to(torch.float64)
        opt = Opt(lin.parameters(), lr=0.1)
        lin.to(torch.float64)
        for _ in range(2):
            lin(tg.Tensor(x)).square().sum().backward()
            opt.step()
            opt.zero_grad()
        steps.append([p.data for p in lin.parameters()])
        assert all(s["exp_avg"].dtype == torch.float64 for s in opt.state.values())
    for a, b in zip(*steps):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_optimizer_argument_errors():
    p = tg.randn(2, requires_grad=True)
    with pytest.raises(ValueError, match="lr must be at least 0"):
        AdamW([p], lr=-1)
    with pytest.raises(ValueError, match="beta2 must be in"):
        Adam([p], betas=(0.9, 1.0))
    with pytest.raises(ValueError, match="empty parameter list"):
        SGD([], lr=0.1)


def test_clip_grad_norm_matches_torch():
    ours, theirs = _twins(1)
    for p, q in zip(ours, theirs):
        g = torch.randn(p.shape, dtype=torch.float64) * 10
        p.grad, q.grad = tg.Tensor(g.clone()), g.clone()
    norm = clip_grad_norm_(ours, 1.0)
    norm_t = torch.nn.utils.clip_grad_norm_(theirs, 1.0)
    torch.testing.assert_close(norm.data, norm_t)
    for p, q in zip(ours, theirs):
        torch.testing.assert_close(p.grad.data, q.grad)


def test_warmup_cosine_is_nanogpts_schedule():
    lr, min_lr = 1e-3, 1e-4
    ours = [lr * warmup_cosine(it, 100, 2000, min_lr / lr) for it in (0, 99, 100, 1050, 2000, 2500)]
    nanogpt = [
        lr * 1 / 101,
        lr * 100 / 101,
        lr,
        min_lr + 0.5 * (1 + math.cos(math.pi * 0.5)) * (lr - min_lr),
        min_lr,
        min_lr,
    ]
    assert ours == pytest.approx(nanogpt)
    p = tg.randn(2, requires_grad=True)
    opt = AdamW([p], lr=lr)
    schedule = WarmupCosineLR(opt, 100, 2000, min_lr)
    for _ in range(100):
        schedule.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(lr)


def test_reduce_on_plateau_multiplies_after_patience():
    p = tg.randn(2, requires_grad=True)
    opt = SGD([p], lr=1.0)
    plateau = ReduceLROnPlateau(opt, factor=0.5, patience=2)
    lowered = [plateau.step(v) for v in [3.0, 2.0, 2.5, 2.4, 2.3, 1.0, 1.5, 1.5, 1.5]]
    assert lowered == [False, False, False, False, True, False, False, False, True]
    assert opt.param_groups[0]["lr"] == 0.25
    schedule = WarmupCosineLR(opt, 0, 10, 0.0)
    combined = ReduceLROnPlateau(opt, factor=0.1, patience=0, schedule=schedule)
    combined.step(1.0)
    combined.step(2.0)
    assert schedule.scale == pytest.approx(0.1) and opt.param_groups[0]["lr"] == pytest.approx(
        schedule.base_lrs[0] * 0.1
    )
