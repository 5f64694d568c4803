"""The trainer across processes: what `torchrun` gives each process, on torch.distributed.

torchrun sets RANK, WORLD_SIZE and LOCAL_RANK; without them the trainer is one process
and none of this does anything.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from .errors import UserError

TIMEOUT = timedelta(minutes=10)  # a collective that waits longer means another process is gone


@dataclass
class Job:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    started: bool = False  # a torch.distributed process group is up

    @property
    def main(self) -> bool:
        """Rank 0 alone writes files and prints."""
        return self.rank == 0

    def broadcast(self, value: Any) -> Any:
        """Rank 0's value, on every rank."""
        if not self.started:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def on_main(self, fn: Any) -> Any:
        """Run fn on rank 0 only and hand its result, or its UserError, to every rank."""
        result, error = None, None
        if self.main:
            try:
                result = fn()
            except UserError as err:
                error = str(err)
        result, error = self.broadcast((result, error))
        if error is not None:
            raise UserError(error)
        return result

    def any(self, flag: bool) -> bool:
        """True on every rank when it is True on any rank."""
        if not self.started:
            return flag
        t = torch.tensor([int(flag)])
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())

    def gather(self, value: Any) -> list[Any]:
        """Every rank's value, in rank order, on every rank."""
        if not self.started:
            return [value]
        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, value)
        return out

    def mean(self, t: torch.Tensor) -> torch.Tensor:
        """The mean of a tensor over the ranks (each rank's loss on its own rows)."""
        if not self.started:
            return t
        t = t.detach().clone()
        dist.all_reduce(t)
        return t / self.world

    def end(self) -> None:
        if self.started:
            dist.destroy_process_group()
            self.started = False


def start(backend: str, device_flag: str) -> tuple[Job, str]:
    """Join the job torchrun started, if any; returns it and the device this process uses."""
    if "WORLD_SIZE" not in os.environ:
        return Job(), device_flag
    job = Job(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0)))
    cuda = torch.cuda.is_available() and device_flag in ("auto", "cuda")
    if cuda:
        device_flag = f"cuda:{job.local_rank}"  # one GPU per process
        torch.cuda.set_device(job.local_rank)
    if backend == "auto":
        backend = "nccl" if cuda or device_flag.startswith("cuda") else "gloo"
    if backend == "nccl" and not torch.cuda.is_available():
        raise UserError("--dist-backend nccl needs CUDA GPUs, and there are none here; use gloo (the default on CPUs).")
    try:
        dist.init_process_group(backend, rank=job.rank, world_size=job.world, timeout=TIMEOUT)
    except (RuntimeError, ValueError) as err:
        raise UserError(
            f"Could not join the distributed job ({err}); check the torchrun command and its rendezvous address."
        ) from None
    job.started = True
    return job, device_flag
