"""The command lines, as a user runs them: short training runs, test, sample, fine-tune,
resume, and the clear one-line errors for bad input."""

import io
import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import torch
from configs import tiny_config

from transformer import config as cfg
from transformer import sample, test, train
from transformer.checkpoint import load_tensors

ROOT = Path(__file__).resolve().parent.parent
TINY = tiny_config(blocks=2, lstm=12, dropout=0.1, eval_iters=2, sample_chars=10)
TEXT = "the quick brown fox jumps over the lazy dog. " * 40


@pytest.fixture
def files(tmp_path):
    (tmp_path / "tiny.toml").write_text(TINY)
    (tmp_path / "corpus.txt").write_text(TEXT)
    return tmp_path


def run_train(files, *extra, out="run"):
    args = [
        "--config",
        str(files / "tiny.toml"),
        "--corpus",
        str(files / "corpus.txt"),
        "--no-progress",
        "--device",
        "cpu",
    ]
    return train.main([*args, "--out-dir", str(files / out), *extra])


def test_train_writes_a_complete_run_directory(files, capsys):
    assert run_train(files) == 0
    run = files / "run"
    for name in [
        "config.json",
        "tokenizer.json",
        "checkpoint.safetensors",
        "best.safetensors",
        "metrics.jsonl",
        "samples.txt",
        "loss.png",
    ]:
        assert (run / name).is_file(), name
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["kind"] == "eval"] == [0, 3, 6]
    assert [r["step"] for r in records if r["kind"] == "train"] == [1, 2, 3, 4, 5, 6]
    printed = capsys.readouterr().out
    assert "Run directory" in printed and "best.safetensors" in printed and "A sample" in printed
    _, meta = load_tensors(run / "checkpoint.safetensors")
    assert meta["step"] == 6


def test_test_and_sample_commands(files, capsys):
    run_train(files)
    capsys.readouterr()
    assert test.main(["--from", str(files / "run"), "--n-chars", "20", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "bits per character" in out and "Sample" in out
    assert test.main(["--from", str(files / "run"), "--corpus", str(files / "corpus.txt"), "--n-chars", "0"]) == 0
    assert f"{len(TEXT) - 1:,} tokens" in capsys.readouterr().out
    assert sample.main(["--from", str(files / "run"), "--seed-text", "the ", "--n-chars", "30", "--top-k", "3"]) == 0
    assert capsys.readouterr().out.startswith("the ")


def test_sampling_is_reproducible_with_a_seed(files, capsys):
    run_train(files)
    capsys.readouterr()
    outs = []
    for _ in range(2):
        sample.main(["--from", str(files / "run"), "--n-chars", "40", "--seed", "7"])
        outs.append(capsys.readouterr().out)
    assert outs[0] == outs[1]


def test_fine_tuning_on_text_with_unseen_characters_warns_and_trains(files, capsys):
    run_train(files)
    (files / "other.txt").write_text("the lazy dog $ jumps; the fox % naps. " * 30)
    code = train.main(
        ["--init-from", str(files / "run"), "--corpus", str(files / "other.txt"), "--out-dir", str(files / "ft"),
         "--max-iters", "3", "--eval-interval", "3", "--eval-iters", "1", "--no-progress"]
    )  # fmt: skip
    assert code == 0
    err = capsys.readouterr().err
    assert "lacks" in err and "'$' x30" in err and "'%' x30" in err and "left out" in err
    info = json.loads((files / "ft" / "config.json").read_text())
    assert info["init_from"] == str(files / "run") and info["config"]["train"]["lr"] == 3e-4
    assert (files / "ft" / "tokenizer.json").read_text() == (files / "run" / "tokenizer.json").read_text()


def test_fine_tuning_starts_from_the_parents_weights(files):
    run_train(files)
    train.main(["--init-from", str(files / "run"), "--corpus", str(files / "corpus.txt"), "--out-dir", str(files / "ft"),
                "--max-iters", "0", "--eval-iters", "1", "--no-progress", "--sample-chars", "0"])  # fmt: skip
    parent, _ = load_tensors(files / "run" / "best.safetensors")
    child, _ = load_tensors(files / "ft" / "best.safetensors")
    assert all(torch.equal(parent[k], child[k]) for k in parent)


def test_resume_continues_to_more_steps(files, capsys):
    run_train(files)
    assert train.main(["--resume", str(files / "run"), "--max-iters", "9", "--no-progress"]) == 0
    records = [json.loads(line) for line in (files / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["kind"] == "train"] == list(range(1, 10))
    assert [r["step"] for r in records if r["kind"] == "eval"] == [0, 3, 6, 9]  # step 6 not evaluated twice
    assert "no better validation loss" not in capsys.readouterr().out  # patience 0 is off: the lr is untouched
    samples = (files / "run" / "samples.txt").read_text()
    assert [int(s.split(",")[0]) for s in samples.split("--- step ")[1:]] == [0, 3, 6, 9]


def test_resume_drops_what_the_interrupted_run_logged_after_its_checkpoint(files):
    run_train(files)
    metrics = files / "run" / "metrics.jsonl"
    stale = [json.dumps({"kind": "train", "step": 7, "loss": 9.9, "lr": 0.1}), '{"kind": "train", "st']  # cut short
    metrics.write_text(metrics.read_text() + "\n".join(stale))
    assert train.main(["--resume", str(files / "run"), "--max-iters", "7", "--no-progress"]) == 0
    steps = [json.loads(line) for line in metrics.read_text().splitlines()]
    assert [r["step"] for r in steps if r["kind"] == "train"] == list(range(1, 8))
    assert all(r["loss"] != 9.9 for r in steps if r["kind"] == "train")


def test_word_tokenizer(files):
    assert run_train(files, "--tokenizer", "word") == 0
    vocab = json.loads((files / "run" / "tokenizer.json").read_text())
    assert vocab["kind"] == "word" and "quick" in vocab["vocab"] and " " in vocab["vocab"] and "." in vocab["vocab"]


def test_help_describes_every_flag_and_its_default():
    result = subprocess.run(
        [sys.executable, "-m", "transformer.train", "--help"], capture_output=True, text=True, cwd=ROOT
    )
    assert result.returncode == 0
    for flag in ["--corpus", "--preset", "--config", "--out-dir", "--max-iters", "--batch-size", "--block-size", "--lr",
                 "--min-lr", "--warmup-iters", "--weight-decay", "--dropout", "--grad-clip", "--patience",
                 "--eval-interval", "--eval-iters", "--sample-chars", "--seed", "--device", "--dtype", "--init-from",
                 "--resume", "--tokenizer"]:  # fmt: skip
        assert flag in result.stdout, flag
    assert result.stdout.count("default") >= 20


def test_help_shows_the_real_defaults_grouped(capsys):
    with pytest.raises(SystemExit):
        train.main(["--help"])
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    groups = [text.index(f" {title}: ") for title in ("model", "training", "evaluation", "run")]
    assert groups == sorted(groups)
    assert "--lr LR peak learning rate (after warmup) (default: 0.001; baby preset: 0.002; fine-tuning: 0.0003)" in text
    assert "--batch-size BATCH_SIZE sequences per step (per process under torchrun) (default: 12)" in text
    assert "--bias, --no-bias biases in the linear layers and LayerNorms (default: true; baby preset: false)" in text
    assert "the preset's" not in text


def test_print_config_prints_the_merged_config_and_trains_nothing(files, capsys):
    assert run_train(files, "--lr", "0.005", "--dropout", "0.3", "--print-config") == 0
    printed = tomllib.loads(capsys.readouterr().out)
    expected = cfg.load_file(files / "tiny.toml")
    expected["train"]["lr"], expected["model"]["dropout"] = 0.005, 0.3
    assert printed == expected and cfg.parse(cfg.to_toml(printed), "printed") == expected
    assert not (files / "run").exists()


def test_resuming_a_finished_run_says_it_is_complete_and_how_to_go_on(files, capsys):
    run_train(files, "--max-iters", "2", "--eval-interval", "2", "--sample-chars", "0")
    before = (files / "run" / "metrics.jsonl").read_text()
    capsys.readouterr()
    assert train.main(["--resume", str(files / "run"), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "is complete: it trained 2 steps" in out and "--max-iters 4" in out and "Done" not in out
    assert (files / "run" / "metrics.jsonl").read_text() == before


@pytest.mark.parametrize(
    "setup,extra,message",
    [
        (None, ["--corpus", "no/such/file.txt"], "does not exist"),
        ("dir", ["--corpus", "{tmp}/adir"], "is a directory"),
        ("empty", ["--corpus", "{tmp}/empty.txt"], "is empty"),
        ("binary", ["--corpus", "{tmp}/binary.bin"], "not UTF-8"),
        ("short", ["--corpus", "{tmp}/short.txt"], "fewer than one context window"),
        (None, ["--lr", "-1"], "lr = -1.0 is out of range"),
        (None, ["--batch-size", "0"], "batch_size = 0 is out of range"),
        (None, ["--dropout", "1.5"], "dropout = 1.5 is out of range"),
        (None, ["--device", "tpu"], "Unknown device"),
        (None, ["--preset", "baby"], "give only one"),
        ("exists", [], "already exists and is not empty"),
    ],
)
def test_bad_input_is_one_clear_line_and_exit_2(files, capsys, setup, extra, message):
    tmp = files
    if setup == "dir":
        (tmp / "adir").mkdir()
    elif setup == "empty":
        (tmp / "empty.txt").write_text("")
    elif setup == "binary":
        (tmp / "binary.bin").write_bytes(bytes(range(256)) * 4)
    elif setup == "short":
        (tmp / "short.txt").write_text("too short")
    elif setup == "exists":
        (tmp / "run").mkdir()
        (tmp / "run" / "precious.txt").write_text("keep me")
    code = run_train(files, *[e.format(tmp=tmp) for e in extra])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error: ") and message in err and len(err.splitlines()) == 1, err
    if setup == "exists":
        assert (tmp / "run" / "precious.txt").read_text() == "keep me"


def test_unknown_preset(capsys):
    assert train.main(["--preset", "huge"]) == 2
    assert "no preset named 'huge'" in capsys.readouterr().err


def test_cuda_asked_for_where_there_is_none(files, capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert run_train(files, "--device", "cuda") == 2
    assert "no CUDA device" in capsys.readouterr().err


def test_seed_text_with_unknown_characters_is_an_error(files, capsys):
    run_train(files)
    capsys.readouterr()
    assert sample.main(["--from", str(files / "run"), "--seed-text", "€uro"]) == 2
    err = capsys.readouterr().err
    assert "'€'" in err and "never saw" in err


def test_a_run_without_a_checkpoint_cannot_be_tested(files, capsys):
    assert test.main(["--from", str(files / "nothing")]) == 2
    assert "does not exist" in capsys.readouterr().err


@pytest.fixture(scope="module")
def untrained_run(tmp_path_factory):
    """A run directory of an untrained model (0 steps): enough to sample from."""
    tmp = tmp_path_factory.mktemp("sampling")
    (tmp / "tiny.toml").write_text(TINY)
    (tmp / "corpus.txt").write_text(TEXT)
    assert run_train(tmp, "--max-iters", "0", "--sample-chars", "0") == 0
    return tmp / "run"


class Terminal(io.StringIO):
    """Standard output that notes what had been written at each flush."""

    def __init__(self):
        super().__init__()
        self.flushed = []

    def flush(self):
        self.flushed.append(self.getvalue())


def test_sample_streams_several_samples_with_top_p(untrained_run, capsys, monkeypatch):
    argv = ["--from", str(untrained_run), "--seed-text", "the ", "--max-new-tokens", "12", "--top-p", "0.9"]
    monkeypatch.setattr(sys, "stdout", Terminal())
    assert sample.main([*argv, "--num-samples", "3", "--seed", "4"]) == 0
    out, flushed = sys.stdout.getvalue(), sys.stdout.flushed
    monkeypatch.undo()
    assert [line for line in out.splitlines() if line.startswith("--- sample")] == [
        f"--- sample {i} of 3 (--seed {3 + i}) ---" for i in (1, 2, 3)
    ]
    assert len(set(flushed)) >= 3 * 12  # shown as each token came, not once at the end
    samples = [s.split("---\n", 1)[1].rstrip("\n") for s in out.split("--- sample")[1:]]
    assert all(s.startswith("the ") and len(s) == 16 for s in samples)
    assert sample.main([*argv, "--seed", "5"]) == 0  # the second sample, drawn again alone
    assert capsys.readouterr().out.rstrip("\n") == samples[1]
    assert sample.main(["--from", str(untrained_run), "--seed-text", "the ", "--n-chars", "12", "--top-p", "0.9",
                        "--seed", "5"]) == 0  # fmt: skip
    assert capsys.readouterr().out.rstrip("\n") == samples[1]


def test_the_text_to_continue_comes_from_a_file_or_standard_input(untrained_run, capsys, monkeypatch):
    prompt = untrained_run.parent / "prompt.txt"
    prompt.write_text("the lazy ")
    assert sample.main(["--from", str(untrained_run), "--seed-file", str(prompt), "--n-chars", "5"]) == 0
    assert capsys.readouterr().out.startswith("the lazy ")
    monkeypatch.setattr(sys, "stdin", io.StringIO("over the "))
    assert sample.main(["--from", str(untrained_run), "--seed-file", "-", "--n-chars", "5", "--temperature", "0"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("over the ") and len(out) == len("over the ") + 5 + 1


@pytest.mark.parametrize(
    "flags,message",
    [
        (["--temperature", "-1"], "temperature = -1.0 is out of range; it must be a number of at least 0"),
        (["--temperature", "nan"], "temperature = nan is out of range"),
        (["--top-p", "0"], "top_p = 0.0 is out of range; it must be a number in (0, 1]"),
        (["--top-p", "1.01"], "top_p = 1.01 is out of range"),
        (["--top-k", "0"], "top_k = 0 is out of range; it must be a positive integer"),
        (["--num-samples", "0"], "num_samples = 0 is out of range"),
        (["--max-new-tokens", "-3"], "max_new_tokens = -3 is out of range"),
        (["--seed-text", "€uro"], "holds '€', which the model never saw"),
        (["--seed-text", "a", "--seed-file", "-"], "give only one"),
        (["--seed-file", "no/such/prompt.txt"], "cannot be read from no/such/prompt.txt"),
        (["--seed", str(2**64)], "does not fit in 64 bits"),
    ],
)
def test_bad_sampling_values_are_one_line_errors(untrained_run, capsys, flags, message):
    for command in (sample, test):
        assert command.main(["--from", str(untrained_run), *flags]) == 2
        captured = capsys.readouterr()
        err = captured.err.strip()
        assert err.startswith("error: ") and message in err and len(err.splitlines()) == 1, err
        assert "Sample" not in captured.out


def test_a_tiny_temperature_samples_as_greedy(untrained_run, capsys):
    outs = []
    for temperature in ("0", "1e-40"):
        assert sample.main(["--from", str(untrained_run), "--n-chars", "30", "--temperature", temperature]) == 0
        outs.append(capsys.readouterr().out)
    assert outs[0] == outs[1]
