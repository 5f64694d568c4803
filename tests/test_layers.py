"""Each transformer layer against a torch.nn twin holding the same weights, run by
torch.autograd in float64: equal outputs, equal input grads, equal parameter grads."""

import inspect
import json
import sys
from pathlib import Path

import pytest
import torch
import torch.nn as tnn

import tinygraph as tg
from transformer import layers as L
from transformer.config import parse
from transformer.model import LanguageModel

ROOT = Path(__file__).resolve().parent.parent

B, T, C = 2, 5, 8


def copy_weights(ours, theirs, mapping):
    """mapping: our parameter name -> their parameter name."""
    ours.to(torch.float64)
    theirs.double()
    own = dict(ours.named_parameters())
    assert set(own) == set(mapping), f"unmapped parameters: {set(own) ^ set(mapping)}"
    with torch.no_grad():
        for mine, their_name in mapping.items():
            theirs.get_parameter(their_name).copy_(own[mine].data)


def compare(ours, theirs, mapping, x, their_forward=None, out_grad=True):
    """Run both on x (float input gets a grad too) and compare outputs and all grads."""
    copy_weights(ours, theirs, mapping)
    is_float = x.is_floating_point()
    x = x.double() if is_float else x
    x_tg = tg.Tensor(x.clone(), requires_grad=is_float)
    x_t = x.clone().requires_grad_(is_float)
    out = ours(x_tg)
    out_t = (their_forward or theirs)(x_t)
    torch.testing.assert_close(out.data, out_t.detach(), rtol=1e-10, atol=1e-10)
    g = torch.randn_like(out_t)
    out.backward(tg.Tensor(g))
    out_t.backward(g)
    if is_float:
        torch.testing.assert_close(x_tg.grad.data, x_t.grad, rtol=1e-9, atol=1e-10)
    own = dict(ours.named_parameters())
    for mine, their_name in mapping.items():
        torch.testing.assert_close(own[mine].grad.data, theirs.get_parameter(their_name).grad, rtol=1e-9, atol=1e-10)


def test_embedding():
    ours, theirs = L.Embedding(11, C), tnn.Embedding(11, C)
    compare(ours, theirs, {"weight": "weight"}, torch.randint(0, 11, (B, T)))


def test_positional_embedding():
    ours = L.PositionalEmbedding(block_size=7, dim=C)
    theirs = tnn.Embedding(7, C)
    compare(ours, theirs, {"weight": "weight"}, torch.randn(B, T, C), lambda x: x + theirs(torch.arange(T)))


@pytest.mark.parametrize("bias", [True, False])
def test_temporal_dense(bias):
    ours, theirs = L.TemporalDense(C, 3, bias), tnn.Linear(C, 3, bias)
    mapping = {"weight": "weight", **({"bias": "bias"} if bias else {})}
    compare(ours, theirs, mapping, torch.randn(B, T, C))


@pytest.mark.parametrize("bias", [True, False])
def test_layer_norm(bias):
    ours, theirs = L.LayerNorm(C, bias), tnn.LayerNorm(C, bias=bias)
    with torch.no_grad():
        theirs.weight.uniform_()
    mapping = {"weight": "weight", **({"bias": "bias"} if bias else {})}
    ours.weight.data.copy_(theirs.weight.detach())
    compare(ours, theirs, mapping, torch.randn(B, T, C))


def test_multi_head_self_attention_matches_torch_multihead_attention():
    ours = L.MultiHeadSelfAttention(C, heads=2)
    theirs = tnn.MultiheadAttention(C, 2, batch_first=True)
    mask = torch.ones(T, T, dtype=torch.bool).triu(1)  # True: may not attend
    mapping = {
        "qkv.weight": "in_proj_weight",
        "qkv.bias": "in_proj_bias",
        "proj.weight": "out_proj.weight",
        "proj.bias": "out_proj.bias",
    }
    compare(
        ours, theirs, mapping, torch.randn(B, T, C), lambda x: theirs(x, x, x, attn_mask=mask, need_weights=False)[0]
    )


def _torch_mlp():
    return tnn.Sequential(tnn.Linear(C, 4 * C), tnn.GELU(), tnn.Linear(4 * C, C))


MLP_MAPPING = {"fc.weight": "0.weight", "fc.bias": "0.bias", "proj.weight": "2.weight", "proj.bias": "2.bias"}


def test_fully_connected():
    compare(L.FullyConnected(C), _torch_mlp(), MLP_MAPPING, torch.randn(B, T, C))


def test_block_matches_a_torch_pre_layernorm_block():
    ours = L.Block(C, heads=4)
    theirs = tnn.ModuleDict(
        {
            "ln1": tnn.LayerNorm(C),
            "attn": tnn.MultiheadAttention(C, 4, batch_first=True),
            "ln2": tnn.LayerNorm(C),
            "mlp": _torch_mlp(),
        }
    )
    mask = torch.ones(T, T, dtype=torch.bool).triu(1)

    def forward(x):
        h = theirs["ln1"](x)
        x = x + theirs["attn"](h, h, h, attn_mask=mask, need_weights=False)[0]
        return x + theirs["mlp"](theirs["ln2"](x))

    mapping = {
        "ln1.weight": "ln1.weight",
        "ln1.bias": "ln1.bias",
        "ln2.weight": "ln2.weight",
        "ln2.bias": "ln2.bias",
        "attn.qkv.weight": "attn.in_proj_weight",
        "attn.qkv.bias": "attn.in_proj_bias",
        "attn.proj.weight": "attn.out_proj.weight",
        "attn.proj.bias": "attn.out_proj.bias",
        **{f"mlp.{k}": f"mlp.{v}" for k, v in MLP_MAPPING.items()},
    }
    compare(ours, theirs, mapping, torch.randn(B, T, C), forward)


def test_dropout_is_the_identity_in_eval_and_scales_in_training():
    layer = L.Dropout(C, p=0.25)
    x = tg.ones(4000, dtype=tg.float64)
    kept = layer(x).data
    assert set(kept.unique().tolist()) <= {0.0, 1 / 0.75} and 0.2 < (kept == 0).double().mean() < 0.3
    assert layer.eval()(x) is x


def test_cross_entropy_loss():
    ours, theirs = L.CrossEntropyLoss(11), tnn.CrossEntropyLoss()
    logits = torch.randn(B, T, 11, dtype=torch.float64)
    targets = torch.randint(0, 11, (B, T))
    x_tg = tg.Tensor(logits.clone(), requires_grad=True)
    x_t = logits.clone().requires_grad_()
    loss, loss_t = ours(x_tg, tg.Tensor(targets)), theirs(x_t.reshape(-1, 11), targets.reshape(-1))
    loss.backward()
    loss_t.backward()
    torch.testing.assert_close(loss.data, loss_t.detach())
    torch.testing.assert_close(x_tg.grad.data, x_t.grad)


RECURRENT_MAPPING = {
    "weight_ih": "weight_ih_l0",
    "weight_hh": "weight_hh_l0",
    "bias_ih": "bias_ih_l0",
    "bias_hh": "bias_hh_l0",
}


@pytest.mark.parametrize(
    "ours_cls,theirs_cls", [(L.RNN, tnn.RNN), (L.LSTM, tnn.LSTM), (L.GRU, tnn.GRU)], ids=["RNN", "LSTM", "GRU"]
)
def test_recurrent_layers_over_60_timesteps(ours_cls, theirs_cls):
    ours = ours_cls(C, 6)
    theirs = theirs_cls(C, 6, batch_first=True)
    compare(ours, theirs, RECURRENT_MAPPING, torch.randn(B, 60, C), lambda x: theirs(x)[0])


@pytest.mark.parametrize("unroll", [False, True])
@pytest.mark.parametrize("bias", [True, False])
def test_an_lstm_trains_under_bfloat16_autocast(unroll, bias):
    # the recurrence runs in float32 there (its input terms come in bfloat16)
    layer = L.LSTM(C, 6, bias=bias, unroll=unroll)
    x = tg.randn(B, 5, C, requires_grad=True)
    with tg.autocast("cpu", dtype=torch.bfloat16):
        out = layer(x)
    out.sum().backward()
    assert out.dtype == torch.float32 and x.grad is not None and layer.weight_hh.grad is not None


@pytest.mark.parametrize("unroll", [False, True])
def test_an_lstm_runs_the_same_unrolled_or_fused(unroll):
    ours = L.LSTM(C, 6, unroll=unroll)
    theirs = tnn.LSTM(C, 6, batch_first=True)
    compare(ours, theirs, RECURRENT_MAPPING, torch.randn(B, 7, C), lambda x: theirs(x)[0])


def test_every_built_in_layer_has_a_torch_twin_built_from_the_same_options():
    sys.path.insert(0, str(ROOT))
    from tools.torch_twin import TWINS, TwinModel, matching_parameters

    for name, cls in L.LAYERS.items():
        if name != "CrossEntropyLoss":
            assert list(inspect.signature(TWINS[name]).parameters)[1:] == list(L.declaration(cls).options) + list(
                L.declaration(cls).given
            ), name
    text = "[model]\nblock_size = 8\ndropout = 0.0\n" + "".join(
        f"[[layers]]\ntype = {json.dumps(kind)}\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in options.items())
        for kind, options in [("Embedding", {"dim": 8}), ("PositionalEmbedding", {}), ("Block", {"heads": 2}),
                              ("MultiHeadSelfAttention", {"heads": 2}), ("FullyConnected", {"hidden": 12}),
                              ("LayerNorm", {}), ("Dropout", {}), ("GRU", {"hidden": 6}), ("RNN", {"hidden": 7}),
                              ("LSTM", {"hidden": 8}), ("TemporalDense", {"out": "vocab", "tied": True}),
                              ("CrossEntropyLoss", {})]
    )  # fmt: skip
    assert {kind for kind in L.LAYERS} <= set(text.replace('"', " ").split())  # every layer is in the stack
    torch.manual_seed(0)
    model = LanguageModel(parse(text, "all.toml"), 11).to(torch.float64)
    twin = TwinModel(model)
    x, y = torch.randint(0, 11, (2, 8)), torch.randint(0, 11, (2, 8))
    _, loss = model(tg.Tensor(x), tg.Tensor(y))
    loss.backward()
    _, loss_t = twin(x, y)
    loss_t.backward()
    torch.testing.assert_close(loss.data, loss_t.detach())
    for name, ours, theirs in matching_parameters(model, twin):
        torch.testing.assert_close(ours.grad.data, theirs.grad, msg=name)
