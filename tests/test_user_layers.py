"""Layers of the user's own, named in a config by file or module, and new built-in layers:
each is one class, and everything else (checks, building, init, errors, the run
directory, the commands, drawing, the tables) comes from it."""

import json
import re
import sys
from pathlib import Path
from typing import Annotated

import pytest
import torch

import tinygraph as tg
from tinygraph import nn
from transformer import config as cfg
from transformer import layers as L
from transformer import sample, settings, test, train
from transformer.errors import UserError
from transformer.model import LanguageModel
from transformer.options import Range

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
import viz_graph  # noqa: E402

LAYER_FILE = '''
import torch
from tinygraph import nn


class RMSNorm(nn.Module):
    """Root-mean-square normalization: no mean subtracted, no bias."""

    def __init__(self, width: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(width))

    def forward(self, x):
        return x * (x * x).mean(-1, keepdim=True).add(self.eps).rsqrt() * self.weight


class GatedMLP(nn.Module):
    """x + down(silu(gate(x)) * up(x)): a residual SwiGLU, asking for [model]'s dropout and bias."""

    def __init__(self, width: int, hidden: int, dropout: float = 0.5, bias: bool = False):
        super().__init__()
        self.got = {"dropout": dropout, "bias": bias}
        self.gate, self.up = nn.Linear(width, hidden, bias), nn.Linear(width, hidden, bias)
        self.down = nn.Linear(hidden, width, bias)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x):
        g = self.gate(x)
        return x + self.dropout(self.down(g * g.sigmoid() * self.up(x)))

    def residual_projections(self):
        return [self.down]


class Project(nn.Module):
    """Changes the width: it says which option gives the new one."""

    out_width = "out"

    def __init__(self, width: int, out: int):
        super().__init__()
        self.linear = nn.Linear(width, out)

    def forward(self, x):
        return self.linear(x)
'''


def stack(*middle: str) -> str:
    """A small config: an embedding, position embeddings, the given [[layers]] tables, the
    output layer and the loss."""
    head = "[model]\nblock_size = 16\ndropout = 0.1\n[train]\nbatch_size = 4\nmax_iters = 2\neval_interval = 2\n"
    head += "eval_iters = 1\nsample_chars = 0\n"
    tables = ['type = "Embedding"\ndim = 16', 'type = "PositionalEmbedding"', *middle, 'type = "TemporalDense"\nout = "vocab"',
              'type = "CrossEntropyLoss"']  # fmt: skip
    return head + "".join(f"[[layers]]\n{t}\n" for t in tables)


MINE = stack(
    'type = "Block"\nheads = 2',
    'type = "my_layers.py:GatedMLP"\nhidden = 24',
    'type = "my_layers.py:RMSNorm"',
    'type = "my_layers.py:Project"\nout = 12',
)


@pytest.fixture
def files(tmp_path):
    folder = tmp_path / "model"  # the layer file sits by the config, not in the current directory
    folder.mkdir()
    (folder / "my_layers.py").write_text(LAYER_FILE)
    (folder / "mine.toml").write_text(MINE)
    (tmp_path / "corpus.txt").write_text("a gated unit, normalized by its root mean square. " * 30)
    return tmp_path


def train_args(files, out, *extra):
    return ["--corpus", str(files / "corpus.txt"), "--out-dir", str(files / out), "--no-progress", "--device", "cpu",
            *extra]  # fmt: skip


def one_line_error(capsys):
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and len(err.splitlines()) == 1, err
    return err


def test_a_layer_of_your_own_trains_resumes_tests_samples_fine_tunes_and_draws(files, capsys, tmp_path):
    assert train.main(train_args(files, "run", "--config", str(files / "model" / "mine.toml"))) == 0
    run = files / "run"
    recorded = json.loads((run / "config.json").read_text())["config"]["layers"]
    assert recorded[3]["type"] == f"{(files / 'model' / 'my_layers.py').resolve()}:GatedMLP"  # where it came from

    assert train.main(["--resume", str(run), "--max-iters", "3", "--no-progress"]) == 0
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == [0, 1, 2, 2, 3, 3]  # evaluations at 0, 2 and 3 between the steps
    capsys.readouterr()
    assert test.main(["--from", str(run), "--n-chars", "5", "--device", "cpu"]) == 0
    assert "bits per character" in capsys.readouterr().out
    assert sample.main(["--from", str(run), "--seed-text", "a ", "--n-chars", "8"]) == 0
    assert capsys.readouterr().out.startswith("a ")
    assert train.main(train_args(files, "ft", "--init-from", str(run), "--max-iters", "1", "--eval-interval", "1")) == 0

    dot = tmp_path / "mine.dot"
    assert viz_graph.main(["--config", str(files / "model" / "mine.toml"), "--format", "dot", "--out", str(dot)]) == 0
    drawn = dot.read_text()
    assert "GatedMLP" in drawn and "RMSNorm" in drawn  # each a module of the drawn model

    (files / "model" / "my_layers.py").unlink()  # a run whose layer file is gone says which file, in one line
    capsys.readouterr()
    assert test.main(["--from", str(run), "--n-chars", "0"]) == 2
    assert "my_layers.py does not exist" in one_line_error(capsys)


@pytest.fixture
def layer_dir(tmp_path):
    (tmp_path / "my_layers.py").write_text(LAYER_FILE)
    return tmp_path


def build(text, layer_dir, vocab=12):
    return LanguageModel(cfg.parse(text, "test.toml", base_dir=layer_dir), vocab)


def test_your_layer_gets_models_defaults_the_packages_init_and_opts_into_residual_scaling(layer_dir):
    torch.manual_seed(0)
    model = build(MINE.replace("hidden = 24", "hidden = 4096"), layer_dir)
    mlp = model.layers[3]
    assert mlp.got == {"dropout": 0.1, "bias": True}  # [model]'s, not the signature's
    assert all(m.bias.data.abs().max() == 0 for m in (mlp.gate, mlp.up, mlp.down))  # biases start at zero
    assert mlp.gate.weight.data.std().item() == pytest.approx(L.INIT_STD, rel=0.02)  # not torch's uniform
    # the block and this layer both write into the residual stream: 2 such layers, nanoGPT's sqrt(2 * 2)
    for projection in (mlp.down, model.layers[2].mlp.proj):
        assert projection.weight.data.std().item() == pytest.approx(L.INIT_STD / 2, rel=0.1)
    assert model.layers[4].weight.data.eq(1).all()  # a Parameter of its own is the layer's business
    assert model.layers[5].linear.weight.shape == (12, 16) and model.layers[6].weight.shape == (12, 12)
    _, loss = model(tg.randint(0, 12, (2, 8)), tg.randint(0, 12, (2, 8)))
    loss.backward()
    assert mlp.gate.weight.grad is not None


@pytest.mark.parametrize(
    "edit,message",
    [
        (("hidden = 24", "hidden = 24\nhiden = 3"), "layers[3] (my_layers.py:GatedMLP): unknown key 'hiden'"),
        (("hidden = 24", 'hidden = "24"'), "hidden = '24' is out of range; it must be an integer"),
        (("hidden = 24", "hidden = 24\ndropout = 1.5"), "dropout = 1.5 is out of range; it must be a number in [0, 1)"),
        (("hidden = 24", "repeat = 2"), "layers[3] (my_layers.py:GatedMLP) needs 'hidden'"),
        (('RMSNorm"', 'RMSNorm"\neps = "small"'), "eps = 'small' is out of range; it must be a number"),
        (("out = 12", "out = 12\nbias = true"), "unknown key 'bias'"),
        (("my_layers.py:Project", "my_layers.py:Projekt"), "my_layers.py has no class 'Projekt'"),
        (("my_layers.py:Project", "other.py:Project"), "other.py does not exist"),
        (("my_layers.py:Project", "no_such_package.layers:Project"), "there is no module 'no_such_package.layers'"),
        (("my_layers.py:Project", "torch:Tensor"), "torch has, but not as a tinygraph.nn.Module subclass, 'Tensor'"),
    ],
)
def test_mistakes_in_your_layer_tables_are_the_same_one_line_errors(layer_dir, edit, message):
    with pytest.raises(UserError, match=re.escape(message)) as err:
        build(MINE.replace(*edit), layer_dir)
    assert "\n" not in str(err.value)


def test_a_layer_file_that_fails_to_load_names_the_file_the_error_and_the_line(tmp_path):
    (tmp_path / "broken.py").write_text("import torch\n\nclass Broken(\n")
    (tmp_path / "raises.py").write_text("x = 1\nraise RuntimeError('no GPU here')\n")
    for name, message in (("broken.py", r"broken.py failed to load: SyntaxError: .* \(line 3\)"),
                          ("raises.py", r"raises.py failed to load: RuntimeError: no GPU here \(line 2\)")):  # fmt: skip
        with pytest.raises(UserError, match=message):
            cfg.parse(stack(f'type = "{name}:Layer"'), "test.toml", base_dir=tmp_path)


def test_a_new_built_in_layer_is_one_class(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(L.registry, "LAYERS", dict(L.LAYERS))  # this test's registrations stay in this test

    @L.layer
    class Swish(nn.Module):
        """x * sigmoid(beta * x), the smooth ReLU."""

        def __init__(self, width: int, beta: Annotated[float, Range(0, 10), "the slope"] = 1.0):
            super().__init__()
            self.beta = beta

        def forward(self, x):
            return x * (x * self.beta).sigmoid()

    text = stack('type = "Swish"\nbeta = 2.0')
    (tmp_path / "swish.toml").write_text(text)
    model = LanguageModel(cfg.load_file(tmp_path / "swish.toml"), 12)
    assert isinstance(model.layers[2], Swish) and model.layers[2].beta == 2.0
    with pytest.raises(
        UserError, match=re.escape("layers[2] (Swish): beta = 11 is out of range; it must be a number in [0, 10]")
    ):
        cfg.parse(text.replace("beta = 2.0", "beta = 11"), "test.toml")
    (tmp_path / "corpus.txt").write_text("swish swish swish " * 40)
    argv = ["--config", str(tmp_path / "swish.toml"), "--corpus", str(tmp_path / "corpus.txt"), "--no-progress",
            "--out-dir", str(tmp_path / "run"), "--max-iters", "1", "--eval-interval", "1"]  # fmt: skip
    assert train.main(argv) == 0
    assert (
        "| `Swish` | x * sigmoid(beta * x), the smooth ReLU. | `beta` (1): the slope |" in L.registry.markdown_table()
    )
    assert viz_graph.main(["--layer", "Swish", "--format", "dot", "--out", str(tmp_path / "swish.dot")]) == 0
    assert "Sigmoid" in (tmp_path / "swish.dot").read_text()


def test_the_readme_tables_are_made_from_the_classes():
    readme = (ROOT / "README.md").read_text()
    for table, command in ((L.registry.markdown_table(), "python -m transformer.layers"),
                           (settings.markdown_table(), "python -m transformer.settings")):  # fmt: skip
        assert table in readme, f"README's table is out of date: paste in the output of `{command}`"


def test_a_layer_file_imports_the_modules_beside_it(tmp_path):
    (tmp_path / "norms.py").write_text(
        "from tinygraph import nn\n\nclass Scale(nn.Module):\n    def forward(self, x):\n        return x * 2\n"
    )
    (tmp_path / "mine.py").write_text(
        "from norms import Scale\n\nclass Twice(Scale):\n    def __init__(self, width):\n        super().__init__()\n"
    )
    path_before = list(sys.path)
    model = LanguageModel(cfg.parse(stack('type = "mine.py:Twice"'), "test.toml", base_dir=tmp_path), 12)
    assert any(type(m).__name__ == "Twice" for m in model.modules())
    assert sys.path == path_before  # the folder was on the path only while the file loaded
