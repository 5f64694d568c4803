"""Data-parallel training with torchrun, on CPUs with Gloo, 2 processes."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
from configs import run_files, tiny_config

from transformer import checkpoint as ckpt
from transformer import train

ROOT = Path(__file__).resolve().parent.parent


def setup(tmp_path, dropout):
    run_files(
        tmp_path,
        tiny_config(lstm=12, dropout=dropout, max_iters=8, eval_interval=4),
        "pack my box with five dozen liquor jugs. " * 50,
    )


def train_args(tmp_path, out, *extra):
    return ["--config", str(tmp_path / "c.toml"), "--corpus", str(tmp_path / "corpus.txt"), "--out-dir",
            str(tmp_path / out), "--no-progress", "--device", "cpu", *extra]  # fmt: skip


def torchrun(tmp_path, prefix, argv, nproc=2, wait=True):
    command = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", "--standalone",
               str(ROOT / "tests" / "ddp_worker.py"), str(tmp_path / prefix), *argv]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if not wait:
        return proc
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == 0, err[-3000:]
    return out


def rank_weights(tmp_path, prefix, rank):
    return ckpt.load_tensors(tmp_path / f"{prefix}.rank{rank}.safetensors")[0]


def test_every_rank_holds_the_same_parameters(tmp_path):
    setup(tmp_path, dropout=0.2)  # each rank draws its own dropout masks: only the grads tie them
    out = torchrun(tmp_path, "w", train_args(tmp_path, "run"))
    assert "2 processes" in out and out.count("Done:") == 1  # rank 0 alone prints
    a, b = rank_weights(tmp_path, "w", 0), rank_weights(tmp_path, "w", 1)
    assert all(torch.equal(a[k], b[k]) for k in a)
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["kind"] == "train"] == list(range(1, 9))  # written once


def test_two_processes_of_batch_b_equal_one_process_of_batch_2b(tmp_path):
    setup(tmp_path, dropout=0.0)
    torchrun(tmp_path, "two", train_args(tmp_path, "two", "--dtype", "float64"))
    assert train.main(train_args(tmp_path, "one", "--dtype", "float64", "--batch-size", "8")) == 0
    two = rank_weights(tmp_path, "two", 0)
    one = {
        k[len("model.") :]: v
        for k, v in ckpt.load_tensors(tmp_path / "one" / "checkpoint.safetensors")[0].items()
        if k.startswith("model.")
    }
    assert set(one) == set(two)
    for name in one:
        assert (one[name] - two[name]).abs().max().item() < 1e-10, name


def test_gradient_accumulation_matches_one_big_batch(tmp_path):
    setup(tmp_path, dropout=0.0)
    assert train.main(train_args(tmp_path, "big", "--dtype", "float64", "--batch-size", "8")) == 0
    torchrun(
        tmp_path, "acc", train_args(tmp_path, "acc", "--dtype", "float64", "--batch-size", "2", "--grad-accum", "2")
    )
    big = ckpt.load_tensors(tmp_path / "big" / "checkpoint.safetensors")[0]
    acc = ckpt.load_tensors(tmp_path / "acc" / "checkpoint.safetensors")[0]
    for name in big:
        if name.startswith("model."):
            assert (big[name] - acc[name]).abs().max().item() < 1e-10, name


def test_a_distributed_run_resumes_identically(tmp_path):
    setup(tmp_path, dropout=0.2)
    torchrun(tmp_path, "straight", train_args(tmp_path, "straight", "--max-iters", "14"))
    proc = torchrun(tmp_path, "cut", train_args(tmp_path, "cut", "--max-iters", "14"), wait=False)
    metrics = tmp_path / "cut" / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and not (metrics.is_file() and '"step": 6' in metrics.read_text()):
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)  # torchrun passes it to every process: each saves and stops
    proc.communicate(timeout=120)
    assert (tmp_path / "cut" / "checkpoint.safetensors").is_file()
    torchrun(tmp_path, "cut", ["--resume", str(tmp_path / "cut"), "--no-progress", "--device", "cpu"])
    losses = [
        [
            (r["step"], r["loss"])
            for r in map(json.loads, (tmp_path / run / "metrics.jsonl").read_text().splitlines())
            if r["kind"] == "train"
        ]
        for run in ("straight", "cut")
    ]
    assert losses[0] == losses[1]
    a, b = rank_weights(tmp_path, "straight", 1), rank_weights(tmp_path, "cut", 1)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_process_that_dies_ends_the_job_with_a_clear_message(tmp_path):
    setup(tmp_path, dropout=0.0)
    proc = torchrun(
        tmp_path, "dies", train_args(tmp_path, "dies", "--max-iters", "100000", "--eval-interval", "1000"), wait=False
    )
    metrics = tmp_path / "dies" / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and not (metrics.is_file() and '"step": 3' in metrics.read_text()):
        time.sleep(0.05)
    workers = subprocess.run(["pgrep", "-f", "ddp_worker.py.*dies"], capture_output=True, text=True).stdout.split()
    os.kill(int(workers[-1]), signal.SIGKILL)
    _, err = proc.communicate(timeout=180)
    assert proc.returncode != 0
    assert "Root Cause" in err and "Signal 9 (SIGKILL)" in err  # torchrun names the process and why
