"""python -m transformer.train: train a character-level language model on any text file.

With no arguments it trains the `baby` preset on the documentation that ships with
Python, on the CPU, in a few minutes. `--help` lists every flag and its default.

The pieces: transformer.settings (every setting), trainer (the set-up), loop (the
training loop), rundir (the run directory), report (what the run tells).
"""

from __future__ import annotations

import argparse
import signal
import sys
from typing import Any

import torch

from tinygraph import heap

from . import config as cfg
from . import distributed, loop, rundir
from .cli import Parser, one_line, one_line_warnings, program
from .errors import UserError
from .report import tensorboard_writer
from .settings import SECTIONS, ModelSettings, RunSettings, TrainSettings, add_flags, default_notes, given
from .trainer import NO_ARGUMENT_ITERS, Trainer, plan

DEFAULT_PRESET = RunSettings.preset


def build_parser() -> argparse.ArgumentParser:
    p = Parser(
        prog=program("transformer.train"),
        description="Train a language model built from tinygraph ops on a text file. Settings come from the "
        f"preset (or --config), then from these flags. With no arguments: the {DEFAULT_PRESET} preset on Python's "
        f"own documentation for {NO_ARGUMENT_ITERS} steps.",
    )
    add_flags(p, [RunSettings, ModelSettings, TrainSettings], _notes())
    return p


def _notes() -> dict[str, str]:
    """What a [model] or [train] setting's default becomes in the default preset and when fine-tuning."""
    return {"preset": f"; the presets: {', '.join(cfg.presets())}", **default_notes()}


def read_flags(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """The run settings and the [model] and [train] settings the command line gave."""
    return given(args, RunSettings), {section: given(args, cls) for section, cls in SECTIONS.items()}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    one_line_warnings()
    trainer, job = None, distributed.Job()
    try:
        what = plan(*read_flags(args))
        if what.run.print_config:
            print(cfg.to_toml(what.config), end="")
            return 0
        if what.run.tensorboard:
            tensorboard_writer()  # missing: an error now, before anything is written
        job, device = distributed.start(what.run.dist_backend, what.run.device)
        heap.keep_freed_memory()  # each step reuses the memory of the last: no fresh pages to fault in
        trainer = Trainer(what, job, device)
        return loop.train(trainer)
    except (UserError, OSError) as err:
        rank = f" (process {job.rank} of {job.world})" if job.rank else ""
        print(f"error{rank}: {one_line(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # a second Ctrl-C, which stops at once; or one before training started
        saved = rundir.checkpoint_step(trainer.out) if trainer is not None and trainer.lock is not None else None
        kept = f"{trainer.out} keeps its checkpoint of step {saved}" if saved is not None else "no run was saved"
        print(f"stopped: Ctrl-C stopped the trainer at once; {kept}.", file=sys.stderr)
        return 128 + signal.SIGINT
    except torch.distributed.DistBackendError as err:  # another process of the job is gone
        print(
            f"error (process {job.rank} of {job.world}): the job lost a process ({str(err).splitlines()[0]}); "
            "it ends here. Continue it from its last checkpoint with --resume.",
            file=sys.stderr,
        )
        return 3
    finally:
        if trainer is not None:
            trainer.release()
        job.end()


if __name__ == "__main__":
    sys.exit(main())
