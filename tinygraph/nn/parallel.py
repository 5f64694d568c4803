"""Data-parallel training across processes and machines, on torch.distributed.

`DistributedDataParallel` (torch's name) wraps a Module in each process of a job that
`torchrun` started: at construction it broadcasts rank 0's parameters and buffers, and
during every backward it averages the grads across the processes. Grads go out in
buckets of about `bucket_cap_mb`, each as soon as its last grad is complete (the engine
says when, through post-accumulate-grad hooks), so communication overlaps the rest of
backward. Inside `no_sync()` nothing is communicated: grads accumulate locally until a
backward outside it, as torch's does.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
import torch.distributed as dist

from ..tensor import Tensor
from .module import Module


class DistributedDataParallel(Module):
    """Wrap `module` so that every process of the job trains the same model on its own data."""

    def __init__(self, module: Module, bucket_cap_mb: float = 25.0, process_group: Any = None):
        super().__init__()
        if not dist.is_available() or not dist.is_initialized():
            raise RuntimeError(
                "DistributedDataParallel needs torch.distributed's process group: start the job with torchrun "
                "and call torch.distributed.init_process_group first."
            )
        self.module = module
        object.__setattr__(self, "group", process_group)
        object.__setattr__(self, "world", dist.get_world_size(process_group))
        with torch.no_grad():
            for t in [*module.parameters(), *(b for _, b in module.named_buffers())]:
                dist.broadcast(t.data, src=0, group=process_group)  # rank 0's weights everywhere
        params = [p for p in module.parameters() if p.requires_grad]
        # reverse order of creation: roughly the order backward completes their grads
        buckets: list[list[Tensor]] = []
        size = cap = bucket_cap_mb * 2**20
        for p in reversed(params):
            nbytes = p.numel() * p.element_size()
            if size + nbytes > cap or p.dtype != buckets[-1][0].dtype or p.device != buckets[-1][0].device:
                buckets.append([])
                size = 0
            buckets[-1].append(p)
            size += nbytes
        object.__setattr__(self, "buckets", buckets)
        object.__setattr__(self, "bucket_of", {p: i for i, bucket in enumerate(buckets) for p in bucket})
        object.__setattr__(self, "syncing", True)
        self._reset()
        for p in params:
            p.register_post_accumulate_grad_hook(self._grad_ready)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.module(*args, **kwargs)

    @contextlib.contextmanager
    def no_sync(self) -> Iterator[None]:
        """Backward passes inside accumulate grads locally, with no communication."""
        object.__setattr__(self, "syncing", False)
        try:
            yield
        finally:
            object.__setattr__(self, "syncing", True)

    def _reset(self) -> None:
        object.__setattr__(self, "incomplete", [set(b) for b in self.buckets])  # grads still to come
        object.__setattr__(self, "in_flight", [])  # (work, flat, bucket index), in launch order

    def _grad_ready(self, p: Tensor) -> None:
        if not self.syncing:
            return
        i = self.bucket_of[p]
        self.incomplete[i].discard(p)
        if self.incomplete[i]:
            return
        # every process launches the buckets in the same order: the graph is the same everywhere
        flat = torch.cat([q.grad.data.reshape(-1) for q in self.buckets[i]]).div_(self.world)
        work = dist.all_reduce(flat, group=self.group, async_op=True)
        self.in_flight.append((work, flat, i))
        if len(self.in_flight) == len(self.buckets):
            self._finish()

    def _finish(self) -> None:
        """All buckets are out: wait for them and put the averaged grads back."""
        for work, flat, i in self.in_flight:
            work.wait()
            offset = 0
            for q in self.buckets[i]:
                q.grad.data.copy_(flat[offset : offset + q.numel()].view_as(q.grad.data))
                offset += q.numel()
        self._reset()

    def sync_missing(self) -> None:
        """End a backward in which some parameters got no grad. Every process must still join
        every all-reduce, so their grads count as zeros. (A no-op when all grads came.)"""
        if not self.in_flight:
            return
        for bucket in self.incomplete:
            for q in list(bucket):
                if q.grad is None:
                    q.grad = Tensor(torch.zeros_like(q.data))
                self._grad_ready(q)
