"""tools/grad_flow.py: the grad it measures at each position equals torch.autograd's on
the torch twin of the model, and the tool runs end to end on a tiny corpus (models trained
for a step, and a trained run read back with --from)."""

import json
import math
import sys
from pathlib import Path

import pytest
import torch
from configs import tiny_config

from transformer import config as cfg
from transformer import train
from transformer.model import LanguageModel

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))

import grad_flow  # noqa: E402
from torch_twin import TwinModel  # noqa: E402

TEXT = "the quick brown fox jumps over the lazy dog; pack my box with five dozen liquor jugs. " * 30


def torch_flow(model: LanguageModel, windows: torch.Tensor) -> list[float]:
    """The same measure, by torch.autograd on the twin: the independent oracle."""
    twin = TwinModel(model).eval()
    h = twin.layers[0](windows[:, :-1])
    x = h
    for layer in twin.layers[1:]:
        x = layer(x)
    last = torch.nn.functional.cross_entropy(x[:, -1], windows[:, -1], reduction="sum")
    (grad,) = torch.autograd.grad(last, h)
    return torch.linalg.vector_norm(grad.double(), dim=-1).mean(0).flip(0).tolist()


def small_rnn() -> dict:
    config = cfg.load_preset("rnn")
    config["layers"][0]["dim"], config["layers"][1]["hidden"] = 8, 12
    return config


@pytest.mark.parametrize("config", [small_rnn(), cfg.parse(tiny_config(blocks=2), "tiny")], ids=["rnn", "transformer"])
def test_the_measured_grads_equal_torch_autograds(config):
    torch.manual_seed(0)
    model = LanguageModel(config, 11)
    windows = torch.randint(0, 11, (3, 9))
    ours, loss = grad_flow.flow(model, windows)
    assert ours == pytest.approx(torch_flow(model, windows), rel=1e-4, abs=1e-12)
    assert len(ours) == 8 and loss > 0 and model.training  # the model is left in training mode
    if config["layers"][1]["type"] == "RNN":
        assert ours[7] < ours[1] / 10  # a tanh RNN: the grad fades going back


def test_the_tool_compares_rnn_lstm_gru_and_a_transformer_on_a_tiny_corpus(tmp_path, capsys):
    (tmp_path / "corpus.txt").write_text(TEXT)
    args = ["--corpus", str(tmp_path / "corpus.txt"), "--steps", "1", "--context", "8", "--batch-size", "2"]
    assert grad_flow.main([*args, "--probe", "2", "--out", str(tmp_path / "flow.png")]) == 0
    assert (tmp_path / "flow.png").read_bytes().startswith(b"\x89PNG")
    numbers = json.loads((tmp_path / "flow.json").read_text())
    assert [(m["name"], m["kind"]) for m in numbers["models"]] == [
        ("rnn", "RNN"),
        ("lstm", "LSTM"),
        ("gru", "GRU"),
        ("baby", "Transformer"),
    ]
    for m in numbers["models"]:
        assert len(m["init"]) == len(m["trained"]) == 8
        assert all(math.isfinite(v) and v > 0 for v in m["init"] + m["trained"])
        assert m["init"] != m["trained"]  # one step of training changed the model
    assert "Wrote" in capsys.readouterr().out


def test_a_trained_run_is_read_with_from(tmp_path, capsys):
    (tmp_path / "tiny.toml").write_text(tiny_config(max_iters=1))
    (tmp_path / "corpus.txt").write_text(TEXT)
    files = ["--config", str(tmp_path / "tiny.toml"), "--corpus", str(tmp_path / "corpus.txt")]
    assert train.main([*files, "--no-progress", "--device", "cpu", "--out-dir", str(tmp_path / "run")]) == 0
    args = ["--from", str(tmp_path / "run"), "--corpus", str(tmp_path / "corpus.txt"), "--probe", "2"]
    assert grad_flow.main([*args, "--out", str(tmp_path / "out" / "flow.png")]) == 0
    (model,) = json.loads((tmp_path / "out" / "flow.json").read_text())["models"]
    assert model["name"] == "run" and model["kind"] == "Transformer" and len(model["init"]) == 16


def test_a_missing_corpus_is_one_clear_line(tmp_path, capsys):
    assert grad_flow.main(["--corpus", str(tmp_path / "nope.txt"), "--out", str(tmp_path / "f.png")]) == 2
    assert (
        capsys.readouterr().err
        == f"error: The corpus {tmp_path / 'nope.txt'} does not exist; give the path of a UTF-8 text file.\n"
    )
    assert not (tmp_path / "f.png").exists()
