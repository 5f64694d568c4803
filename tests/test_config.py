"""Configs: every preset builds; every mistake is a UserError naming the layer or key."""

import re

import pytest
import torch

from transformer import config as cfg
from transformer.errors import UserError
from transformer.layers import LAYERS, declaration
from transformer.model import LanguageModel

HEAD = "[model]\nblock_size = 8\n"


def layers(*entries):
    return HEAD + "".join("[[layers]]\n" + "".join(f"{k} = {v}\n" for k, v in e.items()) for e in entries)


EMB = {"type": '"Embedding"', "dim": 8}
LOSS = {"type": '"CrossEntropyLoss"'}
OUT = {"type": '"TemporalDense"', "out": '"vocab"'}


def build(text, vocab=5):
    return LanguageModel(cfg.parse(text, "test"), vocab)


@pytest.mark.parametrize("name", cfg.presets())
def test_every_preset_builds(name):
    model = LanguageModel(cfg.load_preset(name), 65)
    logits, loss = model(
        __import__("tinygraph").zeros(2, 8, dtype=torch.long), __import__("tinygraph").zeros(2, 8, dtype=torch.long)
    )
    assert logits.shape == (2, 8, 65) and loss.item() > 0


def test_presets_match_their_published_recipes():
    baby, char = cfg.load_preset("baby"), cfg.load_preset("shakespeare_char")
    assert LanguageModel(baby, 65).num_parameters() == 804_096  # nanoGPT's 0.80M (with the tied output layer once)
    assert LanguageModel(char, 65).num_parameters() == 10_745_088  # nanoGPT's 10.65M + position embeddings
    assert baby["model"] == {"block_size": 64, "dropout": 0.0, "bias": False}
    assert char["train"]["batch_size"] == 64 and char["model"]["dropout"] == 0.2


def test_a_mixed_transformer_and_lstm_stack_builds():
    text = layers(EMB, {"type": '"Block"', "heads": 2, "repeat": 2}, {"type": '"LSTM"', "hidden": 6}, OUT, LOSS)
    model = build(text)
    assert [type(m).__name__ for m in model.layers] == ["Embedding", "Block", "Block", "LSTM", "TemporalDense"]


@pytest.mark.parametrize("kind", sorted(set(LAYERS) - {"Embedding", "CrossEntropyLoss"}))
def test_a_layer_builds_from_its_required_keys_alone(kind):
    # the check's list of required keys must cover every key the layer's builder reads
    values = {"heads": 2, "hidden": 6, "out": 8, "dim": 8}
    required = [name for name, opt in declaration(LAYERS[kind]).options.items() if opt.required]
    layer = {"type": f'"{kind}"', **{k: values[k] for k in required}}
    build(layers(EMB, layer, OUT, LOSS))


@pytest.mark.parametrize(
    "text,message",
    [
        ("[model\nblock_size = 8", "not valid TOML"),
        (HEAD + "[extra]\n", "unknown section"),
        ("[model]\nblock_sise = 8\n" + layers(EMB, OUT, LOSS)[len(HEAD) :], "unknown key 'block_sise'"),
        ("[model]\nblock_size = 0\n", "block_size = 0 is out of range"),
        ("[model]\ndropout = 1.0\n", "dropout = 1.0 is out of range"),
        ("[train]\nlr = -0.1\n", "lr = -0.1 is out of range"),
        ("[train]\nbatch_size = 0\n", "batch_size = 0 is out of range"),
        (HEAD, "has no [[layers]]"),
        (layers({"type": '"Transformer"'}, LOSS), "unknown layer type 'Transformer'"),
        (layers(EMB, {"type": '"Block"'}, OUT, LOSS), "needs 'heads'"),
        (layers(EMB, {"type": '"Block"', "heads": 2, "width": 4}, OUT, LOSS), "unknown key 'width'"),
        (layers(OUT, EMB, LOSS), "first layer must be an Embedding"),
        (layers(EMB, OUT), "last layer must be a CrossEntropyLoss"),
        (layers(EMB, EMB, OUT, LOSS), "exactly one Embedding"),
        (layers(EMB, {"type": '"Dropout"', "p": -0.5}, OUT, LOSS), "p = -0.5 is out of range"),
    ],
)
def test_config_mistakes_are_named(text, message):
    with pytest.raises(UserError, match=re.escape(message)):
        build(text)


@pytest.mark.parametrize(
    "entries,message",
    [
        (
            (EMB, {"type": '"Block"', "heads": 3}, OUT, LOSS),
            r"layers\[1\] \(Block\) does not fit: 3 heads do not divide the width 8",
        ),
        ((EMB, {"type": '"TemporalDense"', "out": 7}, LOSS), "gives 7 features per position but the vocabulary has 5"),
        (
            (EMB, {"type": '"LSTM"', "hidden": 6}, {**OUT, "tied": "true"}, LOSS),
            r"layers\[2\] \(TemporalDense\) is tied",
        ),
    ],
)
def test_sizes_that_do_not_fit_name_the_layer(entries, message):
    with pytest.raises(UserError, match=message):
        build(layers(*entries))


def test_tied_output_shares_the_embedding_parameter():
    model = build(layers(EMB, {**OUT, "tied": "true", "bias": "false"}, LOSS))
    assert model.layers[-1].weight is model.layers[0].weight
    assert len(list(model.parameters())) == 1 and list(model.state_dict()) == ["layers.0.weight"]
