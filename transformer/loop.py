"""The training loop, top to bottom: evaluate when due, stop when done or asked to, else
take one step (a global batch, forward and backward, the NaN check, the update)."""

from __future__ import annotations

import contextlib
import math
import re
import signal
import time
from functools import partial
from typing import Any

import torch

import tinygraph as tg
from tinygraph.nn.utils import clip_grad_norm_

from . import gradflow, memory, rundir
from .data import get_batch
from .errors import UserError
from .report import Report
from .settings import SampleSettings
from .trainer import Trainer


def train(t: Trainer) -> int:
    """Train until max_iters, or until a signal asks to stop; returns the exit code."""
    s = t.settings
    memory.check_room(8 * (1 + s.sample_chars), f"A sample of {s.sample_chars:,} tokens", "lower --sample-chars")
    report = Report(t.out, t.job.main, not t.run.no_progress, t.run.tensorboard, t.step, t.model)
    if t.step >= s.max_iters and t.evaluated_at == t.step:  # a finished run, resumed as it was
        report.complete(t.step, s.max_iters, t.best_val, t.best_step)
        return 0
    processes = f", {t.job.world} processes" if t.job.started else ""
    tokens = (len(t.splits.train), len(t.splits.val))
    report.started(t.name, t.model.num_parameters(), len(t.tokenizer), tokens, f"{t.device}{processes}")
    report.progress(t.step, s.max_iters)
    step = Step(t, report)
    started, elapsed_before = time.perf_counter(), t.elapsed
    tokens_per_step = s.batch_size * s.grad_accum * t.job.world * t.block_size
    accum = f" in {s.grad_accum} micro-batches" if s.grad_accum > 1 else ""
    batch = f"A step of {s.batch_size} sequences of {t.block_size} tokens{accum}"
    room = "lower --batch-size, --grad-accum or --block-size, or the model's sizes"
    with stop_signals() as stop, memory.fits(batch, room):
        while True:
            if evaluates(t, t.step) and t.step != t.evaluated_at:
                evaluate(t, report, step.flow)
            if t.step >= s.max_iters:
                break
            if t.job.any(stop.signum is not None):  # every process stops after the same step
                rundir.save_checkpoint(t, evaluated=False)
                report.interrupted(signal.Signals(stop.signum or signal.SIGTERM).name, t.step)
                return 128 + (stop.signum or signal.SIGTERM)
            tick = time.perf_counter()
            loss, norm = step()
            t.step += 1
            now = time.perf_counter()
            t.elapsed = elapsed_before + now - started
            report.stepped(t.step, loss, learning_rate(t), norm, tokens_per_step / (now - tick), t.elapsed)
    report.finished(t.step, time.perf_counter() - started, t.best_val, t.best_step, sample(t) if t.job.main else "")
    return 0


def evaluates(t: Trainer, step: int) -> bool:
    """Whether the weights after `step` steps are evaluated."""
    return step % t.settings.eval_interval == 0 or step == t.settings.max_iters


# ---- one step ----------------------------------------------------------------------------------
class Step:
    """One training step in two halves, forward and backward, then the update, with the NaN
    check between them in Python; --compile compiles the first half, and the update where
    `compiles_update`. A step whose weights are evaluated next also measures the gradient
    flow (gradflow.py) between the two halves; `flow` holds its measures until the
    evaluation logs them."""

    def __init__(self, t: Trainer, report: Report):
        self.t, self.report, self.skipped_in_a_row = t, report, 0
        self.flow: dict[str, Any] = {}
        self.grads, self.update = partial(grads, t), partial(update, t)
        mode = "reduce-overhead" if t.device.type == "cuda" else None
        if t.run.compile:
            self.grads = torch.compile(self.grads, mode=mode)
        if compiles_update(t):
            for group in t.optimizer.param_groups:  # a tensor lr: schedules change it without a recompile
                group["lr"] = torch.tensor(float(group["lr"]), device=t.device)
            self.update = torch.compile(self.update, mode=mode)

    def __call__(self) -> tuple[float, float]:
        """The step's loss and its grads' norm (before clipping)."""
        t = self.t
        # one global batch (micro-batches x processes x rows); this process takes its rows
        k, world, rows = t.settings.grad_accum, t.job.world, t.settings.batch_size
        x, y = get_batch(t.splits.train, k * world * rows, t.block_size, t.data_gen)
        x, y = (z.view(k, world, rows, -1)[:, t.job.rank].to(t.device) for z in (x, y))
        rng = rundir.rng_state(t.device)  # to replay this very step if it goes wrong
        loss, norm = self.grads(x, y)
        loss, norm = t.job.mean(loss).item(), norm.item()  # every process decides alike
        if math.isfinite(loss) and math.isfinite(norm):  # the update waits for the check: NaN never reaches the weights
            probe = gradflow.Probe(t.model, norm) if evaluates(t, t.step + 1) else None
            self.update()
            self.flow = probe.after_update() if probe else {}
            self.skipped_in_a_row = 0
        else:
            self.not_finite(x, y, rng, loss, norm)
        t.schedule.step()
        return loss, norm

    def not_finite(self, x: torch.Tensor, y: torch.Tensor, rng: list[torch.Tensor], loss: float, norm: float) -> None:
        """The stated policy for a NaN or Inf loss or grad: stop (the default) or skip the update."""
        t = self.t
        clear_grads(t)
        if t.run.on_nan == "skip" and self.skipped_in_a_row < 10:
            self.skipped_in_a_row += 1
            self.report.skipped(t.step + 1, loss, norm)
            return
        where = diagnose(t, x, y, rng)
        raise UserError(
            f"Step {t.step + 1}: the loss is {loss} and the grads' norm {norm}, so training stops; {kept(t)}. "
            f"{where} Resume with a lower --lr or a --grad-clip, or train with --on-nan skip."
        )


def kept(t: Trainer) -> str:
    """What a run that stops keeps."""
    saved = rundir.checkpoint_step(t.out)
    return f"the checkpoint of step {saved} is kept" if saved is not None else "no checkpoint was saved yet"


def grads(t: Trainer, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward, backward and clipping over the micro-batches x[k], y[k]; returns the mean
    loss and the grads' norm (before clipping). Under torchrun only the last micro-batch's
    backward averages the grads across processes."""
    total = x.new_zeros((), dtype=torch.float32)
    for k in range(len(x)):
        last = k == len(x) - 1
        with contextlib.nullcontext() if last or not t.job.started else t.net.no_sync():
            with t.autocast():  # made here, inside the step: a compiled step can enter it
                _, loss = t.net(tg.Tensor(x[k]), tg.Tensor(y[k]))
            (loss / len(x) if len(x) > 1 else loss).backward()
        total = total + loss.data.float()
    if t.job.started:
        t.net.sync_missing()
    norm = clip_grad_norm_(t.model.parameters(), t.settings.grad_clip or float("inf"))
    return total / len(x), norm.data


def update(t: Trainer) -> None:
    t.optimizer.step()
    clear_grads(t)


def compiles_update(t: Trainer) -> bool:
    """Whether --compile compiles the update too: on CUDA, where it joins the step's CUDA graph.
    On the CPU the update runs eagerly, in torch's fused Adam kernel, which was faster than
    inductor's loops for the formula (the baby step 0.950-0.963x -> 0.940-0.948x of torch.compile's,
    docs/performance.md)."""
    return t.run.compile and t.device.type == "cuda"


def clear_grads(t: Trainer) -> None:
    """Clear the grads for the next step: drop them, or zero them in place where the update is
    compiled. A compiled update guards on the grads it reads, and new ones every step made it
    compile again every step, until dynamo gave up after 8 and ran it eagerly."""
    t.optimizer.zero_grad(set_to_none=not compiles_update(t))


def diagnose(t: Trainer, x: torch.Tensor, y: torch.Tensor, rng: list[torch.Tensor]) -> str:
    """Replay the step in eager mode under detect_anomaly: name the op that made NaN or Inf."""
    torch.set_rng_state(rng[0])
    if len(rng) > 1:
        torch.cuda.set_rng_state(rng[1], t.device)
    try:
        with tg.detect_anomaly(check_forward=True):
            with t.autocast():
                _, loss = t.model(tg.Tensor(x[-1]), tg.Tensor(y[-1]))
            loss.backward()
    except RuntimeError as err:  # its message ends in the stack of the op's call: one line names the op and where
        what = str(err).splitlines()[0].rsplit(". It", 1)[0].removeprefix("detect_anomaly: ")
        calls = re.findall(r'File "([^"]+)", line (\d+)', str(err))
        where = f", called at {calls[-1][0]}:{calls[-1][1]}" if calls else ""
        return f"Replayed under detect_anomaly: {what}{where}."
    finally:
        clear_grads(t)
    return "Replayed in eager mode, the step stayed finite: the fault did not repeat."


def learning_rate(t: Trainer) -> float:
    return float(t.optimizer.param_groups[0]["lr"])


# ---- evaluating --------------------------------------------------------------------------------
def evaluate(t: Trainer, report: Report, flow: dict[str, Any]) -> None:
    """Losses on both splits, the best weights, the plateau schedule, a checkpoint, a sample;
    `flow`: the gradient flow of the step before (gradflow.py), to log."""
    losses = t.job.broadcast(estimate_losses(t) if t.job.main else None)
    if not all(map(math.isfinite, losses.values())):  # (the last update made the weights NaN or Inf): save none
        raise UserError(
            f"Step {t.step}: the evaluation's losses are {losses['train']} and {losses['val']}, so training stops (the "
            f"weights or the model's outputs hold NaN or Inf); {kept(t)}. Resume with a lower --lr or a --grad-clip."
        )
    lr = learning_rate(t)
    best = losses["val"] < t.best_val
    if best:
        t.best_val, t.best_step = losses["val"], t.step
        if t.job.main:
            rundir.save_best(t, losses["val"])
    if t.settings.patience and t.plateau.step(losses["val"]):
        report.lr_decayed(t.step, t.settings.patience, learning_rate(t))
    rundir.save_checkpoint(t, evaluated=True)
    text = sample(t) if t.job.main else ""
    report.evaluated(t.step, losses, lr, t.elapsed, flow, best, text)


@tg.no_grad()
def estimate_losses(t: Trainer) -> dict[str, float]:
    """Mean loss over `eval_iters` batches of each split, the same batches every time."""
    t.model.eval()
    out = {}
    for name, data in (("train", t.splits.train), ("val", t.splits.val)):
        gen = torch.Generator().manual_seed(t.run.seed + 2)
        losses = []
        for _ in range(t.settings.eval_iters):
            x, y = get_batch(data, t.settings.batch_size, t.block_size, gen)
            with t.autocast():
                _, loss = t.model(tg.Tensor(x.to(t.device)), tg.Tensor(y.to(t.device)))
            losses.append(loss.item())
        out[name] = sum(losses) / len(losses)
    t.model.train()
    return out


def sample(t: Trainer) -> str:
    """sample_chars tokens after a newline (or the validation text's first token), the same draws every time."""
    if not t.settings.sample_chars:
        return ""
    prompt = t.tokenizer.index.get("\n", int(t.splits.val[0]))
    gen = torch.Generator().manual_seed(t.run.seed + 3)  # sampling draws on the CPU (transformer.generation)
    ids = tg.Tensor(torch.tensor([[prompt]], device=t.device))
    out = t.model.generate(ids, t.settings.sample_chars, SampleSettings.temperature, generator=gen)
    return t.tokenizer.decode(out.data[0])


# ---- stopping on request -----------------------------------------------------------------------
class StopRequest:
    signum: int | None = None


@contextlib.contextmanager
def stop_signals():
    """Ctrl-C (SIGINT) and SIGTERM ask the loop to stop after the current step (it saves
    and exits); a second Ctrl-C stops at once (the files on disk are whole either way)."""
    request = StopRequest()

    def note(signum: int, frame: Any) -> None:
        request.signum = signum
        signal.signal(signum, signal.default_int_handler if signum == signal.SIGINT else signal.SIG_DFL)

    previous = {sig: signal.signal(sig, note) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield request
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
