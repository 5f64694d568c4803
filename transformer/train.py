"""python -m transformer.train: train a character-level language model on any text file.

With no arguments it trains the `baby` preset on the documentation that ships with
Python, on the CPU, in a few minutes. `--help` lists every flag and its default.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import signal
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

import tinygraph as tg
from tinygraph.nn.parallel import DistributedDataParallel
from tinygraph.nn.utils import clip_grad_norm_
from tinygraph.optim import AdamW
from tinygraph.optim.lr_scheduler import ReduceLROnPlateau, WarmupCosineLR

from . import checkpoint as ckpt
from . import config as cfg
from . import distributed
from .data import DEFAULT_CORPUS, TOKENIZERS, Tokenizer, get_batch, read_corpus, split, without_unknown
from .errors import UserError
from .model import LanguageModel
from .run import build_model, one_line_warnings, pick_device, read_run
from .settings import ModelSettings, TrainSettings, options

TRAIN_DEFAULTS: dict[str, Any] = {
    "batch_size": 12,
    "max_iters": 2000,
    "lr": 1e-3,
    "min_lr": 1e-4,
    "warmup_iters": 100,
    "weight_decay": 0.1,
    "beta1": 0.9,
    "beta2": 0.99,
    "grad_clip": 1.0,
    "eval_interval": 250,
    "eval_iters": 20,
    "patience": 0,
    "decay_factor": 0.5,
    "sample_chars": 200,
    "grad_accum": 1,
}
# --init-from starts from trained weights: a gentler, shorter schedule unless flags say otherwise
FINETUNE_DEFAULTS: dict[str, Any] = {
    "lr": 3e-4,
    "min_lr": 3e-5,
    "warmup_iters": 0,
    "max_iters": 500,
    "eval_interval": 100,
}
DEFAULT_PRESET = "baby"
NO_ARGUMENT_ITERS = 1000  # the run with no arguments: the baby preset, shortened to a few minutes on 2 cores
SAMPLE_TEMPERATURE = 0.8

# flag -> (section, key, type, help)
SETTINGS = [
    ("--max-iters", "train", "max_iters", int, "training steps"),
    ("--batch-size", "train", "batch_size", int, "sequences per step"),
    ("--block-size", "model", "block_size", int, "context length in tokens"),
    ("--lr", "train", "lr", float, "peak learning rate (after warmup)"),
    ("--min-lr", "train", "min_lr", float, "learning rate at the end of the cosine decay"),
    ("--warmup-iters", "train", "warmup_iters", int, "steps of linear warmup"),
    ("--weight-decay", "train", "weight_decay", float, "AdamW weight decay of matrices (biases and norms take none)"),
    ("--dropout", "model", "dropout", float, "dropout probability of every layer that has one"),
    ("--grad-clip", "train", "grad_clip", float, "clip the grads' joint norm to this (0: off)"),
    ("--patience", "train", "patience", int, "evaluations without a better validation loss before the lr is multiplied by --decay-factor (0: off)"),
    ("--decay-factor", "train", "decay_factor", float, "what --patience multiplies the learning rate by"),
    ("--grad-accum", "train", "grad_accum", int, "micro-batches of --batch-size per step, their grads added up"),
    ("--eval-interval", "train", "eval_interval", int, "steps between evaluations (losses, a sample, checkpoints)"),
    ("--eval-iters", "train", "eval_iters", int, "batches per loss estimate"),
    ("--sample-chars", "train", "sample_chars", int, "tokens generated at each evaluation"),
]  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m transformer.train",
        description="Train a language model built from tinygraph ops on a text file. Settings come from the "
        "preset (or --config), then from these flags. With no arguments: the baby preset on Python's own "
        f"documentation for {NO_ARGUMENT_ITERS} steps.",
    )
    p.add_argument(
        "--corpus",
        default=None,
        help=f"a UTF-8 text file; a bare name is also looked for in data/ (default: {DEFAULT_CORPUS}, the documentation that ships with Python)",
    )
    p.add_argument(
        "--preset",
        default=None,
        help=f"a shipped model and training recipe: {', '.join(cfg.presets())} (default: {DEFAULT_PRESET})",
    )
    p.add_argument("--config", default=None, help="a TOML config file (see transformer/presets/) instead of a preset")
    p.add_argument("--out-dir", default=None, help="the run directory to create (default: runs/<preset>-<date>-<time>)")
    for flag, section, key, kind, text in SETTINGS:
        p.add_argument(flag, type=kind, default=None, help=f"{text} (default: the preset's [{section}] {key})")
    p.add_argument(
        "--tokenizer",
        choices=sorted(TOKENIZERS),
        default=None,
        help="char: one token per character; word: words, spaces and punctuation marks (default: char)",
    )
    p.add_argument(
        "--seed", type=int, default=1337, help="random seed of initialization, batches and dropout (default: 1337)"
    )
    p.add_argument(
        "--device", default="auto", help="auto (cuda, then mps, then cpu), cpu, cuda, cuda:N or mps (default: auto)"
    )
    p.add_argument(
        "--dtype",
        choices=["float32", "bfloat16", "float64"],
        default="float32",
        help="float32; bfloat16: mixed precision (float32 weights, bfloat16 matrix products); float64 (default: float32)",
    )
    p.add_argument(
        "--dist-backend",
        choices=["auto", "nccl", "gloo"],
        default="auto",
        help="under torchrun: torch.distributed's backend (default: auto: nccl on CUDA GPUs, gloo on CPUs)",
    )
    p.add_argument(
        "--on-nan",
        choices=["stop", "skip"],
        default="stop",
        help="when a step's loss or grads hold NaN or Inf: stop (keeping the last good checkpoint and naming the op "
        "that made them) or skip that step's update (default: stop)",
    )
    p.add_argument(
        "--compile",
        action="store_true",
        help="the fast path: compile the whole training step (forward, backward, optimizer) with torch.compile, "
        "on CUDA also captured in a CUDA graph; the first steps are slow while it compiles",
    )
    p.add_argument(
        "--init-from",
        default=None,
        metavar="RUN_DIR",
        help="fine-tune: start from a trained run's best weights and vocabulary, with fine-tuning defaults (lr 3e-4, 500 steps)",
    )
    p.add_argument(
        "--resume",
        default=None,
        metavar="RUN_DIR",
        help="continue an interrupted run from its latest checkpoint, in its own directory",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar (for logs)")
    return p  # fmt: skip


class Trainer:
    """One training run: set up from the arguments, then `run()`."""

    def __init__(self, args: argparse.Namespace, job: distributed.Job | None = None, device: str | None = None):
        self.args = args
        self.job = job or distributed.Job()
        self.device = pick_device(device or args.device)
        self.lock: ckpt.RunLock | None = None
        if self.job.started and args.compile:
            raise UserError("--compile does not work under torchrun yet; drop one of them.")
        self.step, self.best_val, self.best_step = 0, math.inf, -1
        self.evaluated_at: int | None = None  # a step whose evaluation a resumed checkpoint already holds
        if args.resume and args.init_from:
            raise UserError("--resume continues a run and --init-from starts a new one from it; give only one.")
        if args.preset and args.config:
            raise UserError("--preset and --config both describe the model; give only one.")
        if args.resume:
            self._setup_resume(Path(args.resume))
        else:
            self._setup_new()
        self.splits = split(self.text, self.tokenizer, self.block_size)
        self.optimizer = AdamW(
            self.model.optimizer_groups(self.train_cfg["weight_decay"]),
            lr=self.train_cfg["lr"],
            betas=(self.train_cfg["beta1"], self.train_cfg["beta2"]),
        )
        t = self.train_cfg
        self.schedule = WarmupCosineLR(self.optimizer, t["warmup_iters"], t["max_iters"], t["min_lr"])
        self.plateau = ReduceLROnPlateau(
            self.optimizer, factor=t["decay_factor"], patience=t["patience"], schedule=self.schedule
        )
        self.data_gen = torch.Generator().manual_seed(args.seed + 1)  # the same on every rank: one global batch
        if self.job.rank:
            torch.manual_seed(args.seed + self.job.rank)  # but each rank's own dropout
        if args.resume:
            self._restore_state()
        self.net = DistributedDataParallel(self.model) if self.job.started else self.model
        self.skipped_in_a_row = 0
        self.stop_signal: int | None = None
        self.grad_fn, self.update_fn = self.grad_step, self.update
        if args.compile:
            for group in self.optimizer.param_groups:  # a tensor lr: schedules change it without a recompile
                group["lr"] = torch.tensor(float(group["lr"]), device=self.device)
            mode = "reduce-overhead" if self.device.type == "cuda" else None
            self.grad_fn = torch.compile(self.grad_step, mode=mode)
            self.update_fn = torch.compile(self.update, mode=mode)

    # ---- setting up --------------------------------------------------------------------------
    def _flag_overrides(self) -> dict[str, dict[str, Any]]:
        overrides: dict[str, dict[str, Any]] = {"model": {}, "train": {}}
        for flag, section, key, _, _ in SETTINGS:
            value = getattr(self.args, flag[2:].replace("-", "_"))
            if value is not None:
                overrides[section][key] = value
        cfg.check_section(overrides["model"], options(ModelSettings), "command line")
        cfg.check_section(overrides["train"], options(TrainSettings), "command line")
        return overrides

    def _setup_new(self) -> None:
        args, overrides = self.args, self._flag_overrides()
        no_arguments = (
            all(v is None for v in overrides["model"].values()) and args.preset is None and args.config is None
        )
        if args.init_from:
            parent = read_run(args.init_from, torch.device("cpu"))
            if "block_size" in overrides["model"] and overrides["model"]["block_size"] != parent.model.block_size:
                raise UserError(
                    f"--block-size cannot change when fine-tuning; the model was built for {parent.model.block_size}."
                )
            if args.tokenizer and args.tokenizer != parent.tokenizer.kind:
                raise UserError(
                    f"--tokenizer cannot change when fine-tuning; the model uses the {parent.tokenizer.kind} tokenizer."
                )
            base = cfg.merged(parent.info["config"], {"train": FINETUNE_DEFAULTS})
            self.name, self.tokenizer, self.parent = f"{Path(args.init_from).name}-finetune", parent.tokenizer, parent
            self.text = without_unknown(read_corpus(args.corpus), self.tokenizer, "The corpus")
        else:
            base = cfg.load_file(args.config) if args.config else cfg.load_preset(args.preset or DEFAULT_PRESET)
            self.name = Path(args.config).stem if args.config else args.preset or DEFAULT_PRESET
            self.text = read_corpus(args.corpus)
            self.tokenizer = TOKENIZERS[args.tokenizer or "char"].learn(self.text)
            self.parent = None
        base["train"] = {**TRAIN_DEFAULTS, **base["train"]}
        if no_arguments and not args.init_from and args.max_iters is None:
            base["train"]["max_iters"] = NO_ARGUMENT_ITERS
        self.config = cfg.merged(base, overrides)
        self.train_cfg = self.config["train"]
        self.block_size = self.config["model"]["block_size"]
        torch.manual_seed(args.seed)
        self.model = self._make_model()
        if self.parent is not None:
            self.model.load_state_dict(self.parent.model.state_dict())
        self.info = {
            "config": self.config,
            "corpus": args.corpus or DEFAULT_CORPUS,
            "tokenizer": self.tokenizer.kind,
            "vocab_size": len(self.tokenizer),
            "dtype": args.dtype,
            "seed": args.seed,
            "init_from": str(args.init_from) if args.init_from else None,
            "created": datetime.now().isoformat(timespec="seconds"),
        }
        self.out = Path(self.job.on_main(self._create_run_dir))

    def _create_run_dir(self) -> str:
        out = self._new_run_dir()
        self.lock = ckpt.RunLock(out)
        ckpt.write_json(out / ckpt.CONFIG, self.info)
        ckpt.atomic_write(out / ckpt.TOKENIZER, self.tokenizer.to_json().encode())
        return str(out)

    def _setup_resume(self, run_dir: Path) -> None:
        if not run_dir.is_dir():
            raise UserError(f"The run directory {run_dir} does not exist; give the directory of the run to continue.")
        if not (run_dir / ckpt.CHECKPOINT).is_file():
            raise UserError(
                f"{run_dir} holds no {ckpt.CHECKPOINT} to resume from; give the directory of a run that saved one."
            )
        self.out = run_dir
        self.job.on_main(lambda: setattr(self, "lock", ckpt.RunLock(run_dir)))
        self.info = ckpt.read_json(run_dir / ckpt.CONFIG, "run config")
        overrides = self._flag_overrides()
        if overrides["model"]:
            raise UserError(
                f"--resume continues the run as it was built; drop {', '.join('--' + k.replace('_', '-') for k in overrides['model'])}."
            )
        self.config = cfg.merged(self.info["config"], overrides)
        self.train_cfg, self.block_size = self.config["train"], self.config["model"]["block_size"]
        self.tokenizer = Tokenizer.from_json((run_dir / ckpt.TOKENIZER).read_text(encoding="utf-8"))
        corpus = self.args.corpus or self.info["corpus"]
        self.text = read_corpus(None if corpus == DEFAULT_CORPUS else corpus)
        self.text = without_unknown(self.text, self.tokenizer, "The corpus")
        self.args.dtype, self.args.seed = self.info["dtype"], self.info["seed"]
        self.model = self._make_model()
        self.name, self.parent = run_dir.name, None

    def _make_model(self) -> LanguageModel:
        return build_model(self.config, len(self.tokenizer), self.args.dtype, self.device)

    def _new_run_dir(self) -> Path:
        if self.args.out_dir:
            out = Path(self.args.out_dir)
            if out.exists() and (not out.is_dir() or any(out.iterdir())):
                raise UserError(
                    f"{out} already exists and is not empty; give another --out-dir, or --resume {out} to continue the run it holds."
                )
        else:
            stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
            out = Path("runs") / f"{self.name}-{stamp}"
            n = 1
            while out.exists():
                n += 1
                out = Path("runs") / f"{self.name}-{stamp}-{n}"
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise UserError(
                f"Cannot create the run directory {out} ({err.strerror}); give a writable --out-dir."
            ) from None
        return out

    # ---- checkpoints ---------------------------------------------------------------------------
    def _save_checkpoint(self, evaluated: bool) -> None:
        opt_tensors, opt_rest = ckpt.optimizer_tensors(self.optimizer.state_dict())
        rng = {"rng.data": self.data_gen.get_state()}
        for rank, states in enumerate(self.job.gather(self._rng_state())):  # each rank's own dropout stream
            suffix = f".{rank}" if rank else ""
            rng[f"rng.torch{suffix}"] = states[0]
            if len(states) > 1:
                rng[f"rng.cuda{suffix}"] = states[1]
        if not self.job.main:
            return
        meta = {
            "step": self.step,
            "evaluated": evaluated,  # whether this step's evaluation is done (resume skips it then)
            "best_val": self.best_val if math.isfinite(self.best_val) else None,
            "best_step": self.best_step,
            "optimizer": opt_rest,
            "schedule": self.schedule.state_dict(),
            "plateau": self.plateau.state_dict(),
        }
        tensors = {
            **ckpt.with_prefix("model", self.model.state_dict()),
            **ckpt.with_prefix("optimizer", opt_tensors),
            **rng,
        }
        ckpt.save_tensors(self.out / ckpt.CHECKPOINT, tensors, meta)

    def _restore_state(self) -> None:
        path = self.out / ckpt.CHECKPOINT
        tensors, meta = ckpt.load_tensors(path)
        ckpt.load_weights(self.model, tensors, path)
        try:
            opt = ckpt.optimizer_state(ckpt.without_prefix("optimizer", tensors), meta["optimizer"])
            self.optimizer.load_state_dict(opt)
            self.schedule.load_state_dict(meta["schedule"])
            self.plateau.load_state_dict(meta["plateau"])
            suffix = f".{self.job.rank}" if self.job.rank else ""
            if f"rng.torch{suffix}" in tensors:  # (a run resumed on more processes seeds the new ones)
                torch.set_rng_state(tensors[f"rng.torch{suffix}"])
            self.data_gen.set_state(tensors["rng.data"])
            if f"rng.cuda{suffix}" in tensors and self.device.type == "cuda":
                torch.cuda.set_rng_state(tensors[f"rng.cuda{suffix}"], self.device)
            self.step, self.best_step = meta["step"], meta["best_step"]
            self.evaluated_at = self.step if meta["evaluated"] else None
        except (KeyError, ValueError, TypeError) as err:
            raise UserError(
                f"The checkpoint {path} lacks the training state ({err}); it was not written by this trainer."
            ) from None
        self.best_val = meta["best_val"] if meta["best_val"] is not None else math.inf
        if self.job.main:
            self._truncate_logs()
        self.schedule.base_lrs = [self.train_cfg["lr"]] * len(self.schedule.base_lrs)
        self.schedule._apply()

    def _truncate_logs(self) -> None:
        """On resume: drop what the interrupted run logged after its checkpoint, so that the
        metrics and samples read as one run."""
        last_eval = self.step if self.evaluated_at is not None else self.step - 1
        metrics = self.out / ckpt.METRICS
        if metrics.is_file():
            keep = []
            for line in metrics.read_text(encoding="utf-8").splitlines():
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut short by the kill
                if record.get("step", 0) <= (self.step if record.get("kind") == "train" else last_eval):
                    keep.append(line)
            ckpt.atomic_write(metrics, "".join(f"{line}\n" for line in keep).encode())
        samples = self.out / ckpt.SAMPLES
        if samples.is_file():
            sections = samples.read_text(encoding="utf-8").split("--- step ")
            kept = [
                sec for sec in sections[1:] if sec.split(",", 1)[0].isdigit() and int(sec.split(",", 1)[0]) <= last_eval
            ]
            ckpt.atomic_write(samples, "".join("--- step " + sec for sec in kept).encode())

    # ---- evaluating ------------------------------------------------------------------------------
    @tg.no_grad()
    def estimate_losses(self) -> dict[str, float]:
        """Mean loss over `eval_iters` batches of each split, the same batches every time."""
        self.model.eval()
        out = {}
        for name, data in (("train", self.splits.train), ("val", self.splits.val)):
            gen = torch.Generator().manual_seed(self.args.seed + 2)
            losses = []
            for _ in range(self.train_cfg["eval_iters"]):
                x, y = get_batch(data, self.train_cfg["batch_size"], self.block_size, gen)
                with self.autocast():
                    _, loss = self.model(tg.Tensor(x.to(self.device)), tg.Tensor(y.to(self.device)))
                losses.append(loss.item())
            out[name] = sum(losses) / len(losses)
        self.model.train()
        return out

    def sample(self, n: int) -> str:
        prompt = self.tokenizer.index.get("\n", int(self.splits.val[0]))
        gen = torch.Generator(device=self.device).manual_seed(self.args.seed + 3)
        ids = tg.Tensor(torch.tensor([[prompt]], device=self.device))
        return self.tokenizer.decode(self.model.generate(ids, n, SAMPLE_TEMPERATURE, generator=gen).data[0])

    def _log(self, record: dict[str, Any]) -> None:
        if not self.job.main:
            return
        with open(self.out / ckpt.METRICS, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")

    def _evaluate(self, bar: tqdm) -> None:
        losses = self.job.broadcast(self.estimate_losses() if self.job.main else None)
        lr = float(self.optimizer.param_groups[0]["lr"])
        improved = losses["val"] < self.best_val
        if improved:
            self.best_val, self.best_step = losses["val"], self.step
            if self.job.main:
                meta = {"step": self.step, "val_loss": losses["val"]}
                ckpt.save_tensors(self.out / ckpt.BEST, ckpt.with_prefix("model", self.model.state_dict()), meta)
        if self.train_cfg["patience"] and self.plateau.step(losses["val"]):
            lr_now = float(self.optimizer.param_groups[0]["lr"])
            bar.write(
                f"step {self.step}: no better validation loss for {self.train_cfg['patience']} evaluations; lr now {lr_now:.2e}"
            )
        self._save_checkpoint(evaluated=True)
        if not self.job.main:
            return
        self._log(
            {"kind": "eval", "step": self.step, "train_loss": losses["train"], "val_loss": losses["val"], "lr": lr}
        )
        text = self.sample(self.train_cfg["sample_chars"]) if self.train_cfg["sample_chars"] else ""
        if text:
            with open(self.out / ckpt.SAMPLES, "a", encoding="utf-8") as f:
                f.write(f"--- step {self.step}, validation loss {losses['val']:.4f}\n{text}\n\n")
        bar.write(
            f"step {self.step}: train loss {losses['train']:.4f}, val loss {losses['val']:.4f}{' (best)' if improved else ''}"
        )
        if text:
            bar.write(text.strip("\n")[:400] + "\n")
        self._plot()

    def _plot(self) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        records = [json.loads(line) for line in (self.out / ckpt.METRICS).read_text().splitlines() if line.strip()]
        steps = [r for r in records if r["kind"] == "train"]
        evals = [r for r in records if r["kind"] == "eval"]
        fig, ax = plt.subplots(figsize=(7, 4))
        if steps:
            ax.plot([r["step"] for r in steps], [r["loss"] for r in steps], lw=0.6, alpha=0.4, label="batch loss")
        for key, label in (("train_loss", "train"), ("val_loss", "validation")):
            ax.plot([r["step"] for r in evals], [r[key] for r in evals], marker="o", label=label)
        ax.set(xlabel="step", ylabel="loss (nats per token)", title=self.out.name)
        ax.legend()
        ax.grid(alpha=0.3)
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
        plt.close(fig)
        ckpt.atomic_write(self.out / ckpt.PLOT, buf.getvalue())

    # ---- training --------------------------------------------------------------------------------
    def autocast(self) -> tg.autocast:
        return tg.autocast(torch.bfloat16, enabled=self.args.dtype == "bfloat16")

    def grad_step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Forward, backward and clipping over the micro-batches x[k], y[k]; returns the mean
        loss and the grads' norm (before clipping). Under torchrun only the last micro-batch's
        backward averages the grads across processes."""
        total = x.new_zeros((), dtype=torch.float32)
        for k in range(len(x)):
            last = k == len(x) - 1
            with contextlib.nullcontext() if last or not self.job.started else self.net.no_sync():
                with self.autocast():  # made here, inside the step: a compiled step can enter it
                    _, loss = self.net(tg.Tensor(x[k]), tg.Tensor(y[k]))
                (loss / len(x) if len(x) > 1 else loss).backward()
            total = total + loss.data.float()
        if self.job.started:
            self.net.sync_missing()
        norm = clip_grad_norm_(self.model.parameters(), self.train_cfg["grad_clip"] or float("inf"))
        return total / len(x), norm.data

    def update(self) -> None:
        self.optimizer.step()
        self.optimizer.zero_grad()

    def train_step(self) -> float:
        t = self.train_cfg
        # one global batch (micro-batches x processes x rows); this process takes its rows
        k, world, rows = t["grad_accum"], self.job.world, t["batch_size"]
        x, y = get_batch(self.splits.train, k * world * rows, self.block_size, self.data_gen)
        x, y = (z.view(k, world, rows, -1)[:, self.job.rank].to(self.device) for z in (x, y))
        rng = self._rng_state()  # to replay this very step if it goes wrong
        loss, norm = self.grad_fn(x, y)
        loss, norm = self.job.mean(loss).item(), norm.item()  # every process decides alike
        # the update waits for the check: NaN never reaches the weights
        if math.isfinite(loss) and math.isfinite(norm):
            self.update_fn()
            self.skipped_in_a_row = 0
        else:
            self._not_finite(x, y, rng, loss, norm)
        self.schedule.step()
        return loss

    def _rng_state(self) -> list[torch.Tensor]:
        states = [torch.get_rng_state()]
        if self.device.type == "cuda":
            states.append(torch.cuda.get_rng_state(self.device))
        return states

    def _not_finite(self, x: torch.Tensor, y: torch.Tensor, rng: list[torch.Tensor], loss: float, norm: float) -> None:
        """The stated policy for a NaN or Inf loss or grad: stop (the default) or skip the update."""
        self.optimizer.zero_grad()
        step = self.step + 1
        if self.args.on_nan == "skip" and self.skipped_in_a_row < 10:
            self.skipped_in_a_row += 1
            self._log({"kind": "skip", "step": step, "loss": loss, "grad_norm": norm})
            if self.job.main:
                tqdm.write(
                    f"warning: step {step}: loss {loss}, grad norm {norm}; its update is skipped (--on-nan skip)"
                )
            return
        where = self._diagnose(x, y, rng)
        saved = self._checkpoint_step()
        kept = f"the checkpoint of step {saved} is kept" if saved is not None else "no checkpoint was saved yet"
        raise UserError(
            f"Step {step}: the loss is {loss} and the grads' norm {norm}, so training stops; {kept}. "
            f"{where} Resume with a lower --lr or a --grad-clip, or train with --on-nan skip."
        )

    def _checkpoint_step(self) -> int | None:
        path = self.out / ckpt.CHECKPOINT
        return ckpt.load_tensors(path)[1].get("step") if path.is_file() else None

    def _diagnose(self, x: torch.Tensor, y: torch.Tensor, rng: list[torch.Tensor]) -> str:
        """Replay the step in eager mode under detect_anomaly: name the op that made NaN or Inf."""
        torch.set_rng_state(rng[0])
        if len(rng) > 1:
            torch.cuda.set_rng_state(rng[1], self.device)
        try:
            with tg.detect_anomaly(check_forward=True):
                with self.autocast():
                    _, loss = self.model(tg.Tensor(x[-1]), tg.Tensor(y[-1]))
                loss.backward()
        except RuntimeError as err:
            return f"Replayed under detect_anomaly: {err}"
        finally:
            self.optimizer.zero_grad()
        return "Replayed in eager mode, the step stayed finite: the fault did not repeat."

    def run(self) -> int:
        t = self.train_cfg
        n_params = self.model.num_parameters()
        share = f", {self.job.world} processes" if self.job.started else ""
        print_main = print if self.job.main else (lambda *a, **k: None)
        print_main(
            f"Training {self.name}: {n_params / 1e6:.2f}M parameters, vocabulary {len(self.tokenizer)}, "
            f"{len(self.splits.train):,} training and {len(self.splits.val):,} validation tokens, on {self.device}{share}.\n"
            f"Run directory: {self.out}",
            flush=True,
        )
        tokens_per_step = t["batch_size"] * self.block_size
        started = time.perf_counter()
        bar = tqdm(
            total=t["max_iters"],
            initial=self.step,
            unit="step",
            dynamic_ncols=True,
            disable=self.args.no_progress or not self.job.main,
        )
        with self._saving_on_signals():
            while True:
                due = self.step % t["eval_interval"] == 0 or self.step == t["max_iters"]
                if due and self.step != self.evaluated_at:
                    self._evaluate(bar)
                if self.step >= t["max_iters"]:
                    break
                if self.job.any(self.stop_signal is not None):  # every process stops after the same step
                    return self._interrupted(bar)
                tick = time.perf_counter()
                loss = self.train_step()
                self.step += 1
                lr = float(self.optimizer.param_groups[0]["lr"])
                self._log({"kind": "train", "step": self.step, "loss": loss, "lr": lr})
                rate = tokens_per_step / (time.perf_counter() - tick)
                bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}", tok_s=f"{rate:,.0f}", refresh=False)
                bar.update(1)
        bar.close()
        if self.job.main:
            self._finish(time.perf_counter() - started)
        return 0

    @contextlib.contextmanager
    def _saving_on_signals(self):
        """Ctrl-C (SIGINT) and SIGTERM finish the current step, then save and exit; a second
        Ctrl-C stops at once (the files on disk are whole either way)."""

        def note(signum: int, frame: Any) -> None:
            self.stop_signal = signum
            signal.signal(signum, signal.default_int_handler if signum == signal.SIGINT else signal.SIG_DFL)

        previous = {sig: signal.signal(sig, note) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _interrupted(self, bar: tqdm) -> int:
        self._save_checkpoint(evaluated=False)
        bar.close()
        if not self.job.main:
            return 128 + (self.stop_signal or signal.SIGTERM)
        name = signal.Signals(self.stop_signal or signal.SIGTERM).name
        print(
            f"\n{name}: stopped after step {self.step}, with its checkpoint saved. Continue with:\n"
            f"  python -m transformer.train --resume {self.out}",
            flush=True,
        )
        return 128 + (self.stop_signal or signal.SIGTERM)

    def _finish(self, seconds: float) -> None:
        out = self.out
        print(
            f"\nDone: {self.step} steps in {seconds / 60:.1f} min. Best validation loss {self.best_val:.4f} "
            f"at step {self.best_step}.\n"
            f"  {out / ckpt.BEST}  (the best weights)\n"
            f"  {out / ckpt.CHECKPOINT}  (the latest state, for --resume)\n"
            f"  {out / ckpt.METRICS}, {out / ckpt.SAMPLES}, {out / ckpt.PLOT}\n"
            f"Test it:    python -m transformer.test --from {out}\n"
            f"Sample it:  python -m transformer.sample --from {out}\n"
        )
        if self.train_cfg["sample_chars"]:
            print("A sample from the last step:\n" + self.sample(self.train_cfg["sample_chars"]))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    one_line_warnings()
    trainer, job = None, distributed.Job()
    try:
        job, device = distributed.start(args.dist_backend, args.device)
        trainer = Trainer(args, job, device)
        return trainer.run()
    except UserError as err:
        rank = f" (process {job.rank} of {job.world})" if job.rank else ""
        print(f"error{rank}: {err}", file=sys.stderr)
        return 2
    except torch.distributed.DistBackendError as err:  # another process of the job is gone
        print(
            f"error (process {job.rank} of {job.world}): the job lost a process ({str(err).splitlines()[0]}); "
            "it ends here. Continue it from its last checkpoint with --resume.",
            file=sys.stderr,
        )
        return 3
    finally:
        if trainer is not None and trainer.lock is not None:
            trainer.lock.release()
        job.end()


if __name__ == "__main__":
    sys.exit(main())
