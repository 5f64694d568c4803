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

import contextlib
import json
import math
import shutil
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import filelock
import torch

from . import checkpoint as ckpt
from . import config as cfg
from . import memory
from .data import Tokenizer
from .errors import UserError
from .model import LanguageModel
from .options import Option, at_least
from .settings import RunSettings, options

if TYPE_CHECKING:
    from .trainer import Trainer

CONFIG, TOKENIZER, CHECKPOINT, BEST = "config.json", "tokenizer.json", "checkpoint.safetensors", "best.safetensors"
METRICS, SAMPLES, PLOT, FLOW_PLOT = "metrics.jsonl", "samples.txt", "loss.png", "grad_flow.png"
TENSORBOARD = "tensorboard"
LOCK = ".lock"
SAMPLE_HEADER = "--- step "  # each evaluation's sample in samples.txt starts so: "--- step N, ..."


class RunLock:
    """Only one trainer at a time in a run directory: a lock on its `.lock` file (flock on
    Linux and macOS, LockFileEx on Windows) that the system releases when the process
    ends, even by SIGKILL."""

    def __init__(self, directory: Path):
        self.lock = filelock.FileLock(directory / LOCK)
        try:
            self.lock.acquire(timeout=0)
        except filelock.Timeout:
            raise UserError(
                f"Another trainer is using {directory} (it holds {directory / LOCK}); wait for it to end, "
                "or give another --out-dir."
            ) from None
        except OSError as err:  # a directory of another user's, or read-only: nothing was written in it
            raise UserError(
                f"Cannot write in {directory} ({err.strerror}); train as a user who may write there, or copy the "
                "run (cp -r) and use the copy."
            ) from None

    def release(self) -> None:
        self.lock.release(force=True)


# ---- creating, opening, reading back ---------------------------------------------------------
# A run has started once it saved a checkpoint. Before that its directory holds nothing worth
# keeping: a start that fails removes what it made, and a start that was killed (so that it
# could not) leaves a directory that the next start may take over.
BEFORE_CHECKPOINT = {LOCK, CONFIG, TOKENIZER, BEST, METRICS, SAMPLES, PLOT, FLOW_PLOT}  # and --tensorboard's folder


def check_out_dir(out: Path) -> None:
    """A new run may go to `out`: it is new, empty, or left by a trainer that was killed
    before its first checkpoint (its lock file, and nothing but what a run writes before then)."""
    if not out.exists():
        return
    held = list(out.iterdir()) if out.is_dir() else None
    killed_before_a_checkpoint = held and any(p.name == LOCK for p in held) and all(map(_before_a_checkpoint, held))
    if held != [] and not killed_before_a_checkpoint:
        raise UserError(
            f"{out} already exists and is not empty; give another --out-dir, or --resume {out} to continue the run it holds."
        )


def _before_a_checkpoint(path: Path) -> bool:
    if path.is_dir():
        return path.name == TENSORBOARD
    atomic_write_s = path.name.startswith(".") and ".tmp-" in path.name
    return path.is_file() and (path.name in BEFORE_CHECKPOINT or atomic_write_s)


def create(
    out_dir: str | None, name: str, info: dict[str, Any], tokenizer: Tokenizer
) -> tuple[Path, RunLock, Path | None]:
    """A new run directory (--out-dir, as check_out_dir allows; else runs/<name>-<date>-<time>),
    locked, holding the run's config and vocabulary; and the first folder it made, if it made one."""
    if out_dir:
        out = Path(out_dir)
        check_out_dir(out)
    else:
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        out, n = Path("runs") / f"{name}-{stamp}", 1
        while out.exists():
            n += 1
            out = Path("runs") / f"{name}-{stamp}-{n}"
    made = next((p for p in reversed([out, *out.parents]) if not p.exists()), None)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"Cannot create the run directory {out} ({err.strerror}); give a writable --out-dir.") from None
    try:
        lock = RunLock(out)
    except UserError:
        _remove_folders(out, made)
        raise
    try:
        check_out_dir(out)  # again, now that no other trainer can be writing in it
        for stale in out.iterdir():  # what a start that was killed left behind
            if stale.name != LOCK:
                _remove(stale)
        ckpt.write_json(out / CONFIG, info)
        ckpt.atomic_write(out / TOKENIZER, tokenizer.to_json().encode())
    except BaseException:
        discard(out, made, lock)
        raise
    return out, lock, made


def discard(out: Path, made: Path | None, lock: RunLock) -> None:
    """Let go of a new run's `lock`; and if the run saved no checkpoint (one that did is a
    run, and stays), undo it: the files it wrote (while it still holds the lock), then the
    lock file and the folders it `made` (from `out` up to that one) that hold nothing else."""
    if (out / CHECKPOINT).exists():
        lock.release()
        return
    with contextlib.suppress(OSError):  # a cleaning-up that fails must not hide why the start failed
        for path in out.iterdir():
            if path.name != LOCK and _before_a_checkpoint(path):
                _remove(path)
    lock.release()
    with contextlib.suppress(OSError):
        (out / LOCK).unlink(missing_ok=True)
    _remove_folders(out, made)


def _remove(path: Path) -> None:
    shutil.rmtree(path) if path.is_dir() else path.unlink()


def _remove_folders(out: Path, made: Path | None) -> None:
    """Remove `out` and its parents up to `made` (None: none of them), each while it is empty."""
    for folder in [out, *out.parents] if made is not None else []:
        try:
            folder.rmdir()
        except OSError:  # not empty: not only ours
            return
        if folder == made:
            return


# What a run's config.json holds besides its config, checked as the flags they come from are.
_RUN = options(RunSettings)
INFO = {
    "config": Option("config", dict),
    "corpus": _RUN["corpus"],
    "tokenizer": _RUN["tokenizer"],
    "vocab_size": Option("vocab_size", int, range=at_least(1)),
    "dtype": _RUN["dtype"],
    "seed": _RUN["seed"],
    "init_from": _RUN["init_from"],
    "created": Option("created", str),
}


def read_info(path: Path) -> dict[str, Any]:
    """A run's config.json, after checking that `path` is a run directory, checked as a
    config file is (a damaged or hand-edited one is a UserError that names it)."""
    if not path.is_dir():
        raise UserError(
            f"The run directory {path} does not exist; give a directory a training run wrote (under runs/)."
        )
    file = path / CONFIG
    info = ckpt.read_json(file, "run config")
    missing = [key for key in INFO if not isinstance(info, dict) or key not in info]
    if missing:
        raise UserError(
            f"The run config {file} lacks {', '.join(missing)}, so it was not written by this trainer or was "
            "edited; restore it or train the run again."
        )
    cfg.check_section(info, INFO, str(file))
    return {**info, "config": cfg.check(info["config"], str(file))}


def resumable(path: Path) -> dict[str, Any]:
    """The config.json of a run that saved a checkpoint to resume from."""
    if not path.is_dir():
        raise UserError(f"The run directory {path} does not exist; give the directory of the run to continue.")
    if not (path / CHECKPOINT).is_file():
        raise UserError(f"{path} holds no {CHECKPOINT} to resume from; give the directory of a run that saved one.")
    return read_info(path)


def read_tokenizer(path: Path) -> Tokenizer:
    """The run's vocabulary, checked against its config.json (a vocabulary of another run is refused)."""
    file, info = path / TOKENIZER, read_info(path)
    tokenizer = Tokenizer.from_data(ckpt.read_json(file, "vocabulary"), str(file))
    if (tokenizer.kind, len(tokenizer)) != (info["tokenizer"], info["vocab_size"]):
        raise UserError(
            f"{file} holds {len(tokenizer)} {tokenizer.kind} tokens but {path / CONFIG} says {info['vocab_size']} "
            f"{info['tokenizer']} tokens, so they are of different runs; restore the run's own files."
        )
    return tokenizer


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
    info, tokenizer = read_info(path), read_tokenizer(path)
    model = build_model(info["config"], len(tokenizer), info.get("dtype"), device)
    tensors, _ = ckpt.load_tensors(path / weights)
    ckpt.load_weights(model, tensors, path / weights)
    return Run(path, info, tokenizer, model)


def build_model(config: dict[str, Any], vocab_size: int, dtype: str | None, device: torch.device) -> LanguageModel:
    """The model a config describes, in float64 when the run trains in it (else float32), on `device`."""
    model = LanguageModel(config, vocab_size)
    with memory.fits(f"The model ({model.num_parameters():,} parameters, {dtype or 'float32'})", "make it smaller"):
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
        step, best_step, evaluated, best_val = meta["step"], meta["best_step"], meta["evaluated"], meta["best_val"]
        elapsed = meta.get("elapsed", 0.0)
        if not (_is_int(step) and step >= 0 and _is_int(best_step) and type(evaluated) is bool):
            raise ValueError("its step is not a step")
        if not (best_val is None or _is_number(best_val)) or not _is_number(elapsed):
            raise ValueError("its best loss or its time is not a number")
    except (KeyError, ValueError, TypeError, AttributeError, RuntimeError) as err:
        raise UserError(
            f"The checkpoint {path} lacks the training state ({err}); it was not written by this trainer."
        ) from None
    t.step, t.best_step, t.elapsed, t.evaluated_at = step, best_step, elapsed, step if evaluated else None
    t.best_val = best_val if best_val is not None else math.inf
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
    after `step`, evaluations after `last_eval`), so that the metrics and samples read as one
    run; and any line that is not a record (one cut short by a kill, or damaged)."""
    logs = {name: _read_log(path / name) for name in (METRICS, SAMPLES) if (path / name).is_file()}  # both, then write
    cut = {}
    if METRICS in logs:
        kept = [
            line for line, r in _records(logs[METRICS]) if r["step"] <= (step if r["kind"] == "train" else last_eval)
        ]
        cut[METRICS] = "".join(f"{line}\n" for line in kept)
    if SAMPLES in logs:
        sections = logs[SAMPLES].split(SAMPLE_HEADER)[1:]
        steps = [section.split(",", 1)[0] for section in sections]
        cut[SAMPLES] = "".join(
            SAMPLE_HEADER + sec for sec, s in zip(sections, steps) if s.isdigit() and int(s) <= last_eval
        )
    for name, text in cut.items():
        if text != logs[name]:
            ckpt.atomic_write(path / name, text.encode())


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The records of a run's metrics.jsonl: a training step's loss, an evaluation's losses."""
    return [record for _, record in _records(_read_log(path / METRICS))]


RECORD_NUMBERS = {"train": ("loss",), "skip": ("loss", "grad_norm"), "eval": ("train_loss", "val_loss")}  # by kind
FLOW = ("grad_norms", "update_ratios")  # an evaluation's gradient flow: a number per module


def _records(metrics: str) -> list[tuple[str, dict[str, Any]]]:
    """Each line of the text of metrics.jsonl that is a whole record, with its record."""
    out = []
    for line in metrics.splitlines():
        try:
            record = json.loads(line)
        except (json.JSONDecodeError, RecursionError):
            continue  # a line cut short by a kill, or damaged
        if _is_record(record):
            out.append((line, record))
    return out


def _is_record(r: Any) -> bool:
    """A record as report.py writes it: a kind, a step, the numbers of its kind, and the
    gradient flow as tables of numbers where it has one."""
    if not (isinstance(r, dict) and isinstance(r.get("kind"), str) and _is_int(r.get("step"))):
        return False
    flow = [r.get(key) for key in FLOW] if any(key in r for key in FLOW) else []
    return all(_is_number(r.get(key)) for key in RECORD_NUMBERS.get(r["kind"], ())) and all(
        isinstance(table, dict) and all(map(_is_number, table.values())) for table in flow
    )


def _read_log(path: Path) -> str:
    """A log of the run (metrics.jsonl, samples.txt) as text: a damaged byte is replaced, not fatal."""
    try:
        return path.read_bytes().decode("utf-8", errors="replace")
    except OSError as err:
        raise UserError(
            f"Cannot read {path} ({err.strerror}); give it back its permissions, or run as its owner."
        ) from None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return type(value) in (int, float)
