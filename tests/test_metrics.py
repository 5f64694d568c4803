"""What a run logs for people to plot: metrics.jsonl's step and evaluation records, the
gradient flow per module (and its heat map), and the same numbers for TensorBoard."""

import json
import math
import sys

import pytest
from configs import run_files, tiny_config

from transformer import gradflow, train
from transformer.model import LanguageModel

CONFIG = tiny_config(blocks=2, lstm=12, max_iters=6, eval_interval=3, grad_clip=0.05)


@pytest.fixture
def files(tmp_path):
    return run_files(tmp_path, CONFIG, "the quick brown fox jumps over the lazy dog. " * 40)


def run(files, *extra, out="run"):
    argv = ["--config", str(files / "c.toml"), "--corpus", str(files / "corpus.txt"), "--out-dir", str(files / out),
            "--no-progress", "--device", "cpu", *extra]  # fmt: skip
    return train.main(argv)


def records(path, kind):
    return [r for r in map(json.loads, (path / "metrics.jsonl").read_text().splitlines()) if r["kind"] == kind]


def test_metrics_have_time_speed_grad_norms_and_the_flow_per_module(files, monkeypatch):
    probes = []
    monkeypatch.setattr(gradflow, "Probe", lambda *a, Probe=gradflow.Probe: probes.append(Probe(*a)) or probes[-1])
    assert run(files) == 0
    steps, evals = records(files / "run", "train"), records(files / "run", "eval")
    assert len(probes) == 2  # only the steps before an evaluation measure anything
    elapsed = [r["elapsed"] for r in steps]
    assert elapsed == sorted(elapsed) and all(r["tokens_per_s"] > 0 and r["grad_norm"] > 0 for r in steps)
    config = json.loads((files / "run" / "config.json").read_text())["config"]
    owners = list(gradflow.modules(LanguageModel(config, 28)))
    assert owners[:3] == ["layers.0", "layers.1", "layers.2.ln1"] and "layers.4" in owners  # the LSTM
    assert "grad_norms" not in evals[0]  # step 0: no step yet
    for e in evals[1:]:
        assert list(e["grad_norms"]) == owners and list(e["update_ratios"]) == owners
        assert all(0 < r < 1 for r in e["update_ratios"].values())
        # the norms before clipping (the clip at 0.05 scaled them): together, the step's grad norm
        step = next(r for r in steps if r["step"] == e["step"])
        assert step["grad_norm"] > 0.05
        assert math.hypot(*e["grad_norms"].values()) == pytest.approx(step["grad_norm"], rel=1e-4)
    assert (files / "run" / "grad_flow.png").read_bytes().startswith(b"\x89PNG")


def test_elapsed_time_goes_on_across_a_resume(files):
    assert run(files) == 0
    before = records(files / "run", "train")[-1]["elapsed"]
    assert train.main(["--resume", str(files / "run"), "--max-iters", "9", "--no-progress"]) == 0
    after = [r["elapsed"] for r in records(files / "run", "train") if r["step"] > 6]
    assert len(after) == 3 and all(e > before for e in after)


def test_tensorboard_gets_the_same_numbers(files):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    assert run(files, "--tensorboard") == 0
    events = EventAccumulator(str(files / "run" / "tensorboard")).Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/loss", "train/grad_norm", "train/tokens_per_s", "eval/val_loss", "eval/grad_norms/layers.4"} <= tags
    logged = [(r["step"], r["loss"]) for r in records(files / "run", "train")]
    assert [(e.step, pytest.approx(e.value)) for e in events.Scalars("train/loss")] == logged


def test_tensorboard_without_its_package_is_a_one_line_error_before_anything_is_written(files, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as if tensorboard were not installed
    assert run(files, "--tensorboard") == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --tensorboard needs the tensorboard package") and len(err.splitlines()) == 1
    assert not (files / "run").exists()
