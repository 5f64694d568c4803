"""A run directory: what it holds, creating and locking it, saving and restoring the
training state, reading a run back, and cutting its logs back to its checkpoint.

    config.json             the model and training settings, the corpus, the tokenizer kind
    tokenizer.json          the vocabulary, sorted
    checkpoint.safetensors  the latest state: model, optimizer, step, schedules, RNG states
    best.safetensors        the weights with the best validation loss so far
    metrics.jsonl, samples.txt, loss.png, grad_flow.png (transformer.report)
    tensorboard/            with --tensorboard: the same metrics as TensorBoard events

Every file is written atomically (transformer.checkpoint). The config names the model's
layers; a layer of your own is recorded by its file's absolute path (or its module's
name), and reading the run back runs that file, as importing it would.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import filelock
import torch

from . import checkpoint as ckpt
from .data import Tokenizer
from .errors import UserError
from .model import LanguageModel

if TYPE_CHECKING:
    from .trainer import Trainer

CONFIG, TOKENIZER, CHECKPOINT, BEST = "config.json", "tokenizer.json", "checkpoint.safetensors", "best.safetensors"
METRICS, SAMPLES, PLOT, FLOW_PLOT = "metrics.jsonl", "samples.txt", "loss.png", "grad_flow.png"
TENSORBOARD = "tensorboard"
SAMPLE_HEADER = "--- step "  # each evaluation's sample in samples.txt starts so: "--- step N, ..."


class RunLock:
    """Only one trainer at a time in a run directory: a lock on its `.lock` file (flock on
    Linux and macOS, LockFileEx on Windows) that the system releases when the process
    ends, even by SIGKILL."""

    def __init__(self, directory: Path):
        self.lock = filelock.FileLock(directory / ".lock")
        try:
            self.lock.acquire(timeout=0)
        except filelock.Timeout:
            raise UserError(
                f"Another trainer is using {directory} (it holds {directory / '.lock'}); wait for it to end, "
                "or give another --out-dir."
            ) from None

    def release(self) -> None:
        self.lock.release(force=True)


# ---- creating, opening, reading back ---------------------------------------------------------
def create(out_dir: str | None, name: str, info: dict[str, Any], tokenizer: Tokenizer) -> tuple[Path, RunLock]:
    """A new run directory (--out-dir, empty or new; else runs/<name>-<date>-<time>),
    locked, holding the run's config and vocabulary."""
    if out_dir:
        out = Path(out_dir)
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            raise UserError(
                f"{out} already exists and is not empty; give another --out-dir, or --resume {out} to continue the run it holds."
            )
    else:
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        out, n = Path("runs") / f"{name}-{stamp}", 1
        while out.exists():
            n += 1
            out = Path("runs") / f"{name}-{stamp}-{n}"
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"Cannot create the run directory {out} ({err.strerror}); give a writable --out-dir.") from None
    lock = RunLock(out)
    ckpt.write_json(out / CONFIG, info)
    ckpt.atomic_write(out / TOKENIZER, tokenizer.to_json().encode())
    return out, lock


def read_info(path: Path) -> dict[str, Any]:
    """A run's config.json, after checking that `path` is a run directory."""
    if not path.is_dir():
        raise UserError(
            f"The run directory {path} does not exist; give a directory a training run wrote (under runs/)."
        )
    return ckpt.read_json(path / CONFIG, "run config")


def resumable(path: Path) -> dict[str, Any]:
    """The config.json of a run that saved a checkpoint to resume from."""
    if not path.is_dir():
        raise UserError(f"The run directory {path} does not exist; give the directory of the run to continue.")
    if not (path / CHECKPOINT).is_file():
        raise UserError(f"{path} holds no {CHECKPOINT} to resume from; give the directory of a run that saved one.")
    return read_info(path)


def read_tokenizer(path: Path) -> Tokenizer:
    tokenizer_path = path / TOKENIZER
    if not tokenizer_path.is_file():
        raise UserError(f"{tokenizer_path} is missing, so {path} is not a complete run directory.")
    return Tokenizer.from_json(tokenizer_path.read_text(encoding="utf-8"))


@dataclass
class Run:
    """A trained run read back from its directory."""

    path: Path
    info: dict[str, Any]  # config.json
    tokenizer: Tokenizer
    model: LanguageModel


def read_run(path: str | Path, device: torch.device, weights: str = BEST) -> Run:
    """Build the run's model from its config and load its weights (the best, by default)."""
    path = Path(path)
    info = read_info(path)
    tokenizer = read_tokenizer(path)
    model = build_model(info["config"], len(tokenizer), info.get("dtype"), device)
    tensors, _ = ckpt.load_tensors(path / weights)
    ckpt.load_weights(model, tensors, path / weights)
    return Run(path, info, tokenizer, model)


def build_model(config: dict[str, Any], vocab_size: int, dtype: str | None, device: torch.device) -> LanguageModel:
    """The model a config describes, in float64 when the run trains in it (else float32), on `device`."""
    model = LanguageModel(config, vocab_size)
    if dtype == "float64":
        model.to(torch.float64)
    return model.to(device)


# ---- the training state ----------------------------------------------------------------------
def save_checkpoint(t: Trainer, evaluated: bool) -> None:
    """The whole state of training (every process takes part: each has its own dropout
    RNG); `evaluated`: this step's evaluation is done, so resuming skips it."""
    opt_tensors, opt_rest = ckpt.optimizer_tensors(t.optimizer.state_dict())
    rng = {"rng.data": t.data_gen.get_state()}
    for rank, states in enumerate(t.job.gather(rng_state(t.device))):
        suffix = f".{rank}" if rank else ""
        rng[f"rng.torch{suffix}"] = states[0]
        if len(states) > 1:
            rng[f"rng.cuda{suffix}"] = states[1]
    if not t.job.main:
        return
    meta = {
        "step": t.step,
        "evaluated": evaluated,
        "best_val": t.best_val if math.isfinite(t.best_val) else None,
        "best_step": t.best_step,
        "optimizer": opt_rest,
        "schedule": t.schedule.state_dict(),
        "plateau": t.plateau.state_dict(),
        "elapsed": t.elapsed,
    }
    tensors = {**ckpt.with_prefix("model", t.model.state_dict()), **ckpt.with_prefix("optimizer", opt_tensors), **rng}
    ckpt.save_tensors(t.out / CHECKPOINT, tensors, meta)


def save_best(t: Trainer, val_loss: float) -> None:
    ckpt.save_tensors(
        t.out / BEST, ckpt.with_prefix("model", t.model.state_dict()), {"step": t.step, "val_loss": val_loss}
    )


def checkpoint_step(path: Path) -> int | None:
    """The step of the run's latest checkpoint, None before the first."""
    return ckpt.load_tensors(path / CHECKPOINT)[1].get("step") if (path / CHECKPOINT).is_file() else None


def restore(t: Trainer) -> None:
    """Continue exactly where the checkpoint left: weights, optimizer, schedules, RNGs, step."""
    path = t.out / CHECKPOINT
    tensors, meta = ckpt.load_tensors(path)
    ckpt.load_weights(t.model, tensors, path)
    try:
        t.optimizer.load_state_dict(ckpt.optimizer_state(ckpt.without_prefix("optimizer", tensors), meta["optimizer"]))
        t.schedule.load_state_dict(meta["schedule"])
        t.plateau.load_state_dict(meta["plateau"])
        suffix = f".{t.job.rank}" if t.job.rank else ""
        if f"rng.torch{suffix}" in tensors:  # (a run resumed on more processes seeds the new ones)
            torch.set_rng_state(tensors[f"rng.torch{suffix}"])
        t.data_gen.set_state(tensors["rng.data"])
        if f"rng.cuda{suffix}" in tensors and t.device.type == "cuda":
            torch.cuda.set_rng_state(tensors[f"rng.cuda{suffix}"], t.device)
        t.step, t.best_step, t.elapsed = meta["step"], meta["best_step"], meta.get("elapsed", 0.0)
        t.evaluated_at = t.step if meta["evaluated"] else None
    except (KeyError, ValueError, TypeError) as err:
        raise UserError(
            f"The checkpoint {path} lacks the training state ({err}); it was not written by this trainer."
        ) from None
    t.best_val = meta["best_val"] if meta["best_val"] is not None else math.inf
    t.schedule.base_lrs = [t.settings.lr] * len(t.schedule.base_lrs)  # a new --lr applies from here on
    t.schedule._apply()


def rng_state(device: torch.device) -> list[torch.Tensor]:
    """This process's torch RNG states (CPU, and CUDA's when it trains there)."""
    states = [torch.get_rng_state()]
    if device.type == "cuda":
        states.append(torch.cuda.get_rng_state(device))
    return states


def truncate_logs(path: Path, step: int, last_eval: int) -> None:
    """On resume: drop what the interrupted run logged after its checkpoint (training steps
    after `step`, evaluations after `last_eval`), so that the metrics and samples read as one run."""
    metrics = path / METRICS
    if metrics.is_file():
        keep = []
        for line in metrics.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short by the kill
            if record.get("step", 0) <= (step if record.get("kind") == "train" else last_eval):
                keep.append(line)
        ckpt.atomic_write(metrics, "".join(f"{line}\n" for line in keep).encode())
    samples = path / SAMPLES
    if samples.is_file():
        sections = samples.read_text(encoding="utf-8").split(SAMPLE_HEADER)[1:]
        steps = [section.split(",", 1)[0] for section in sections]
        kept = [SAMPLE_HEADER + sec for sec, s in zip(sections, steps) if s.isdigit() and int(s) <= last_eval]
        ckpt.atomic_write(samples, "".join(kept).encode())
