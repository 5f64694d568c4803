"""Setting up a training run: first the config to train (a preset or a file, a run to
fine-tune, or a run to resume, with the command line's settings on top), then the data,
the model, the optimizer and its schedules, and the run directory."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import torch

import tinygraph as tg
from tinygraph.nn.parallel import DistributedDataParallel
from tinygraph.optim import AdamW
from tinygraph.optim.lr_scheduler import ReduceLROnPlateau, WarmupCosineLR

from . import config as cfg
from . import distributed, rundir
from .cli import pick_device
from .data import TOKENIZERS, read_corpus, split, without_unknown
from .errors import UserError
from .settings import SECTIONS, ModelSettings, RunSettings, TrainSettings, defaults, flag, options

NO_ARGUMENT_ITERS = 1000  # the run with no arguments: the baby preset, shortened to a few minutes on 2 cores


@dataclass(frozen=True)
class Plan:
    """What a command line asks to train, decided before anything is built or written."""

    run: RunSettings
    config: dict[str, Any]  # a checked config, every setting in place
    name: str  # of the run: its preset, config file, parent run or directory


def plan(given: dict[str, Any], flags: dict[str, dict[str, Any]]) -> Plan:
    """The config and settings of a run, from the run settings the command line `given`
    and its [model] and [train] `flags`."""
    for section, cls in SECTIONS.items():
        cfg.check_section(flags.get(section, {}), options(cls), "command line")
    run = RunSettings(**given)
    if run.resume and run.init_from:
        raise UserError("--resume continues a run and --init-from starts a new one from it; give only one.")
    if "preset" in given and "config" in given:
        raise UserError("--preset and --config both describe the model; give only one.")
    if run.resume:
        info = rundir.resumable(Path(run.resume))
        if flags.get("model"):
            raise UserError(f"--resume continues the run as it was built; drop {', '.join(map(flag, flags['model']))}.")
        run = replace(run, dtype=info["dtype"], seed=info["seed"], corpus=given.get("corpus", info["corpus"]))
        return Plan(run, cfg.merged(info["config"], flags), Path(run.resume).name)
    if run.init_from:
        info = rundir.read_info(Path(run.init_from))
        built_for = ModelSettings(**info["config"]["model"]).block_size
        if flags.get("model", {}).get("block_size", built_for) != built_for:
            raise UserError(f"--block-size cannot change when fine-tuning; the model was built for {built_for}.")
        if given.get("tokenizer", info["tokenizer"]) != info["tokenizer"]:
            raise UserError(
                f"--tokenizer cannot change when fine-tuning; the model uses the {info['tokenizer']} tokenizer."
            )
        base = cfg.merged(info["config"], {"train": defaults(TrainSettings, "finetune")})
        return Plan(
            replace(run, tokenizer=info["tokenizer"]), cfg.merged(base, flags), f"{Path(run.init_from).name}-finetune"
        )
    base = cfg.load_file(run.config) if run.config else cfg.load_preset(run.preset)
    if not ({"preset", "config"} & set(given) or flags.get("model") or "max_iters" in flags.get("train", {})):
        base["train"]["max_iters"] = NO_ARGUMENT_ITERS
    return Plan(run, cfg.merged(base, flags), Path(run.config).stem if run.config else run.preset)


class Trainer:
    """One training run, set up: everything the loop reads and changes."""

    def __init__(self, plan: Plan, job: distributed.Job | None = None, device: str | None = None):
        run, self.run, self.config, self.name = plan.run, plan.run, plan.config, plan.name
        self.job = job or distributed.Job()
        self.device = pick_device(device or run.device)
        if self.job.started and run.compile:
            raise UserError("--compile does not work under torchrun yet; drop one of them.")
        self.settings = TrainSettings(**self.config["train"])
        self.block_size = ModelSettings(**self.config["model"]).block_size
        self.step, self.best_val, self.best_step = 0, math.inf, -1
        self.elapsed = 0.0  # seconds of training, over every resume
        self.evaluated_at: int | None = None  # a step whose evaluation a resumed checkpoint already holds
        self.lock: rundir.RunLock | None = None
        if run.resume:
            self.out = Path(run.resume)
            self.job.on_main(self._lock)
        try:
            self._set_up()
        except BaseException:
            self.release()
            raise

    def _set_up(self) -> None:
        run, parent = self.run, None
        # the text and its vocabulary, then the model
        if run.resume:
            self.tokenizer = rundir.read_tokenizer(self.out)
        elif run.init_from:
            parent = rundir.read_run(run.init_from, torch.device("cpu"))
            self.tokenizer = parent.tokenizer
        text = read_corpus(run.corpus)
        if run.resume or run.init_from:
            text = without_unknown(text, self.tokenizer, "The corpus")
        else:
            self.tokenizer = TOKENIZERS[run.tokenizer].learn(text)
        if not run.resume:  # (a resumed run's random state comes from its checkpoint)
            torch.manual_seed(run.seed)
        self.model = rundir.build_model(self.config, len(self.tokenizer), run.dtype, self.device)
        if parent is not None:
            self.model.load_state_dict(parent.model.state_dict())
        self.splits = split(text, self.tokenizer, self.block_size)
        if not run.resume:
            self.out = Path(self.job.on_main(self._create))  # rank 0 creates it, every rank learns where
        # the optimizer and its schedules
        s = self.settings
        self.optimizer = AdamW(self.model.optimizer_groups(s.weight_decay), lr=s.lr, betas=(s.beta1, s.beta2))
        self.schedule = WarmupCosineLR(self.optimizer, s.warmup_iters, s.max_iters, s.min_lr)
        self.plateau = ReduceLROnPlateau(
            self.optimizer, factor=s.decay_factor, patience=s.patience, schedule=self.schedule
        )
        self.data_gen = torch.Generator().manual_seed(run.seed + 1)  # the same on every rank: one global batch
        if self.job.rank:
            torch.manual_seed(run.seed + self.job.rank)  # but each rank's own dropout
        if run.resume:
            rundir.restore(self)
            if self.job.main:
                rundir.truncate_logs(self.out, self.step, self.step if self.evaluated_at is not None else self.step - 1)
        self.net = DistributedDataParallel(self.model) if self.job.started else self.model

    def _lock(self) -> None:
        self.lock = rundir.RunLock(self.out)

    def _create(self) -> str:
        info = {
            "config": self.config,
            "corpus": self.run.corpus,
            "tokenizer": self.tokenizer.kind,
            "vocab_size": len(self.tokenizer),
            "dtype": self.run.dtype,
            "seed": self.run.seed,
            "init_from": self.run.init_from,
            "created": datetime.now().isoformat(timespec="seconds"),
        }
        out, self.lock = rundir.create(self.run.out_dir, self.name, info, self.tokenizer)
        return str(out)

    def autocast(self) -> tg.autocast:
        return tg.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.run.dtype == "bfloat16")

    def release(self) -> None:
        """Let go of the run directory's lock."""
        if self.lock is not None:
            self.lock.release()
            self.lock = None
