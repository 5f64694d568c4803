"""Never lose a run: exact resume, kills at any moment, Ctrl-C and SIGTERM, a second
trainer, a failing disk, NaN, and bad input of every kind (a clear error, never a traceback)."""

import errno
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from configs import run_files, tiny_config
from hypothesis import given, settings
from hypothesis import strategies as st

from transformer import checkpoint as ckpt
from transformer import config as cfg
from transformer import test as test_cli
from transformer import train
from transformer.errors import UserError
from transformer.layers import LAYERS
from transformer.model import LanguageModel
from transformer.settings import ModelSettings, TrainSettings, options

ROOT = Path(__file__).resolve().parent.parent
CONFIG = tiny_config(dim=24, blocks=2, dropout=0.2, max_iters=16, eval_interval=5)


@pytest.fixture
def files(tmp_path):
    return run_files(tmp_path, CONFIG, "the quick brown fox jumps over the lazy dog; " * 40)


def args(files, out, *extra):
    return ["--config", str(files / "c.toml"), "--corpus", str(files / "corpus.txt"), "--out-dir", str(files / out),
            "--no-progress", "--device", "cpu", *extra]  # fmt: skip


def spawn(argv):
    return subprocess.Popen([sys.executable, "-m", "transformer.train", *argv], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip


def train_records(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def losses(run):
    return [(r["step"], r["loss"]) for r in train_records(run) if r["kind"] == "train"]


def weights(run):
    tensors, meta = ckpt.load_tensors(run / "checkpoint.safetensors")
    return tensors, meta


def wait_for_step(run, step, proc, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if (run / "metrics.jsonl").is_file() and any(s >= step for s, _ in losses(run) if True):
            return
        time.sleep(0.05)
    raise AssertionError(f"the trainer did not reach step {step}")


def assert_same_run(a, b):
    assert losses(a) == losses(b)  # every step's loss, bit for bit
    ta, ma = weights(a)
    tb, mb = weights(b)
    assert ma["step"] == mb["step"] and set(ta) == set(tb)
    for name in ta:
        assert torch.equal(ta[name], tb[name]), name


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL], ids=["sigint", "sigterm", "sigkill"])
def test_an_interrupted_and_resumed_run_equals_the_uninterrupted_one(files, sig):
    assert train.main(args(files, "straight")) == 0
    proc = spawn(args(files, "interrupted"))
    wait_for_step(files / "interrupted", 7, proc)
    proc.send_signal(sig)
    out, _ = proc.communicate(timeout=120)
    if sig != signal.SIGKILL:  # a clean stop: saved, and says how to go on
        assert proc.returncode == 128 + sig and "--resume" in out and "checkpoint saved" in out
    assert train.main(["--resume", str(files / "interrupted"), "--no-progress"]) == 0
    assert_same_run(files / "straight", files / "interrupted")


def test_killed_at_random_moments_the_latest_checkpoint_always_loads_and_resumes(files):
    """Fault injection: SIGKILL at random moments, checkpoints written every step (so many
    kills land in the middle of a write); after every kill the checkpoint loads whole."""
    run = files / "run"
    argv = args(files, "run", "--eval-interval", "1", "--max-iters", "400")
    rng = random.Random(0)
    proc = spawn(argv)
    kills = 0
    deadline = time.time() + 75
    while time.time() < deadline:
        time.sleep(rng.uniform(1.0, 6.0))  # a process needs about 2 s to import torch
        proc.kill()
        proc.wait()
        kills += 1
        if (run / "checkpoint.safetensors").is_file():
            tensors, meta = ckpt.load_tensors(run / "checkpoint.safetensors")  # never corrupt
            assert "model.layers.0.weight" in tensors and meta["step"] >= 0
            proc = spawn(["--resume", str(run), "--no-progress"])
        else:  # killed before the first checkpoint: start over
            shutil.rmtree(run, ignore_errors=True)
            proc = spawn(argv)
    proc.kill()
    proc.wait()
    assert kills >= 10
    assert weights(run)[1]["step"] > 0
    steps = [s for s, _ in losses(run)]
    assert steps == sorted(set(steps))  # one record per step, in order, after every resume


def test_a_second_trainer_on_the_same_run_directory_is_refused(files, capsys):
    proc = spawn(args(files, "run", "--max-iters", "400"))
    try:
        wait_for_step(files / "run", 1, proc)
        before = (files / "run" / "config.json").read_text()
        assert train.main(["--resume", str(files / "run"), "--no-progress"]) == 2
        assert "Another trainer" in capsys.readouterr().err
        assert (files / "run" / "config.json").read_text() == before and proc.poll() is None
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.parametrize(
    "code,text",
    [(errno.ENOSPC, "No space left on device"), (errno.EACCES, "Permission denied")],
    ids=["disk-full", "no-permission"],
)
def test_a_failed_checkpoint_write_stops_cleanly_and_keeps_the_previous_one(files, capsys, monkeypatch, code, text):
    assert train.main(args(files, "run", "--max-iters", "5")) == 0
    good = (files / "run" / "checkpoint.safetensors").read_bytes()
    real_replace = os.replace

    def failing(src, dst):  # (as root, a read-only directory would not stop the write: simulate it)
        if str(dst).endswith("checkpoint.safetensors"):
            raise OSError(code, text)
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", failing)
    assert train.main(["--resume", str(files / "run"), "--max-iters", "10", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert text in err and "intact" in err and len(err.splitlines()) == 1
    assert (files / "run" / "checkpoint.safetensors").read_bytes() == good
    assert not [p for p in (files / "run").iterdir() if ".tmp-" in p.name]


def poison_gelu(monkeypatch, calls_poisoned):
    """Make GELU's backward return a NaN grad for its input at the calls `calls_poisoned(n)` says."""
    from tinygraph.ops import elementwise as E

    real, calls = E.Gelu.backward, [0]

    def backward(ctx, g):
        calls[0] += 1
        grads = real(ctx, g)  # (the input's grad, None for `approximate`)
        return (grads[0] * float("nan"), *grads[1:]) if calls_poisoned(calls[0]) else grads

    monkeypatch.setattr(E.Gelu, "backward", staticmethod(backward))


def test_nan_stops_the_run_names_the_op_and_keeps_the_last_good_checkpoint(files, capsys, monkeypatch):
    poison_gelu(monkeypatch, lambda n: n >= 2 * 7 + 1)  # two blocks: from the 8th step's backward on
    assert train.main(args(files, "run")) == 2
    err = capsys.readouterr().err
    assert "Step 8:" in err and "the checkpoint of step 5 is kept" in err and "Gelu.backward" in err
    assert "layers/attention.py" in err  # where in the model the op was called (the MLP's GELU)
    assert weights(files / "run")[1]["step"] == 5


def test_nan_with_skip_policy_skips_the_update_and_goes_on(files, monkeypatch):
    poison_gelu(monkeypatch, lambda n: 15 <= n <= 16)  # NaN at the 8th step only
    assert train.main(args(files, "run", "--on-nan", "skip")) == 0
    skips = [r for r in train_records(files / "run") if r["kind"] == "skip"]
    assert [r["step"] for r in skips] == [8]
    assert all(torch.isfinite(t).all() for t in weights(files / "run")[0].values())


# ---- bad input ---------------------------------------------------------------------------------
values = st.one_of(
    st.integers(-5, 300), st.floats(-2, 2, allow_nan=False), st.booleans(), st.text(max_size=6), st.just("vocab")
)
layer_types = st.sampled_from([*LAYERS, "Transformer", "lstm", ""])


def toml_value(v):
    return json.dumps(v)  # JSON scalars are valid TOML scalars


@st.composite
def configs(draw):
    lines = ["[model]"] + [
        f"{k} = {toml_value(draw(values))}"
        for k in draw(st.lists(st.sampled_from([*options(ModelSettings), "width"]), max_size=3, unique=True))
    ]
    lines += ["[train]"] + [
        f"{k} = {toml_value(draw(values))}"
        for k in draw(st.lists(st.sampled_from([*options(TrainSettings), "epochs"]), max_size=3, unique=True))
    ]
    for _ in range(draw(st.integers(0, 5))):
        lines.append("[[layers]]")
        lines.append(f"type = {toml_value(draw(layer_types))}")
        for key in draw(
            st.lists(
                st.sampled_from(["dim", "heads", "hidden", "out", "p", "repeat", "tied", "bias", "size"]),
                max_size=3,
                unique=True,
            )
        ):
            lines.append(f"{key} = {toml_value(draw(values))}")
    text = "\n".join(lines)
    if draw(st.booleans()):  # and sometimes broken TOML
        text = text[: draw(st.integers(0, len(text)))] + draw(st.sampled_from(["", "[", "= =", '"unterminated']))
    return text


@given(text=configs())
@settings(max_examples=60)
def test_any_config_builds_or_is_a_user_error(text):
    try:
        LanguageModel(cfg.parse(text, "generated.toml"), 7)
    except UserError as err:
        assert str(err) and "\n" not in str(err)


@given(blob=st.binary(max_size=600), keep=st.integers(0, 2000))
@settings(max_examples=60)
def test_any_damaged_checkpoint_is_a_user_error(tmp_path_factory, blob, keep):
    path = tmp_path_factory.mktemp("ck") / "checkpoint.safetensors"
    if keep % 2:  # a real checkpoint cut short, with bytes after it
        ckpt.save_tensors(path, {"model.w": torch.ones(3, 4)}, {"step": 1})
        path.write_bytes(path.read_bytes()[:keep] + blob)
    else:
        path.write_bytes(blob)
    try:
        ckpt.load_tensors(path)  # a file that happens to stay valid loads; anything else is a UserError
    except UserError as err:
        assert "damaged or not a checkpoint" in str(err)


@pytest.mark.parametrize(
    "damage,message",
    [
        ("truncate", "damaged or not a checkpoint"),
        ("other_model", "another model"),
        ("wrong_dtype", "torch.float64"),
        ("missing", "holds no checkpoint.safetensors"),
        ("no_config", "config.json is missing"),
    ],
)
def test_bad_run_directories_are_one_line_errors_everywhere(files, capsys, damage, message):
    run = files / "run"
    assert train.main(args(files, "run", "--max-iters", "2")) == 0
    path = run / "checkpoint.safetensors"
    tensors, meta = ckpt.load_tensors(path)
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[:200])
        (run / "best.safetensors").write_bytes(b"\x00" * 50)
    elif damage == "other_model":
        other = {f"model.other.{i}": t for i, t in enumerate(tensors.values())}
        ckpt.save_tensors(path, other, meta)
        ckpt.save_tensors(run / "best.safetensors", other, meta)
    elif damage == "wrong_dtype":
        doubled = {k: v.double() if k.startswith("model.") else v for k, v in tensors.items()}
        ckpt.save_tensors(path, doubled, meta)
        ckpt.save_tensors(run / "best.safetensors", doubled, meta)
    elif damage == "missing":
        path.unlink()
        (run / "best.safetensors").unlink()
    else:
        (run / "config.json").unlink()
    capsys.readouterr()
    commands = [
        lambda: train.main(["--resume", str(run), "--no-progress"]),
        lambda: test_cli.main(["--from", str(run), "--n-chars", "0"]),
        lambda: train.main(args(files, "ft", "--init-from", str(run), "--max-iters", "1")[2:]),  # (no --config)
    ]
    for command in commands:
        assert command() == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error:") and len(err.splitlines()) == 1, err
        if damage != "missing" or command is commands[0]:
            assert message in err or "does not exist" in err, err
