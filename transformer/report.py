"""What a training run tells, and where: the console (a progress bar, a line and a sample
per evaluation, how it ended), metrics.jsonl (a record per step and per evaluation),
samples.txt, the loss plot and the gradient flow's heat map, and with --tensorboard the
same numbers for TensorBoard. Only the main process reports; on the others it is silent.

metrics.jsonl, one JSON object a line:
    {"kind": "train", "step", "loss", "lr", "grad_norm" (before clipping), "tokens_per_s", "elapsed" (s)}
    {"kind": "eval", "step", "train_loss", "val_loss", "lr", "elapsed",
     "grad_norms": {module: norm}, "update_ratios": {module: ratio}}   (see gradflow.py)
    {"kind": "skip", "step", "loss", "grad_norm"}                     (--on-nan skip)
"""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path
from typing import Any

from tqdm import tqdm

from . import checkpoint as ckpt
from .errors import UserError
from .gradflow import heat_map
from .rundir import BEST, CHECKPOINT, FLOW_PLOT, METRICS, PLOT, SAMPLE_HEADER, SAMPLES, TENSORBOARD


def tensorboard_writer() -> type:
    """torch's SummaryWriter, or a UserError when the tensorboard package is missing."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise UserError(
            "--tensorboard needs the tensorboard package, which is not installed; pip install tensorboard "
            "(or the package's extra: pip install -e '.[tensorboard]'), or drop --tensorboard."
        ) from None
    return SummaryWriter


class Report:
    def __init__(
        self, out: Path, main: bool, progress: bool, tensorboard: bool = False, step: int = 0, model: Any = None
    ):
        """`step`: where the run starts (a resumed one: its checkpoint's); `model`: to name the
        modules in grad_flow.png by their classes."""
        self.out, self.main, self.show_bar = out, main, progress and main
        self.kinds = {path: type(m).__name__ for path, m in model.named_modules()} if model is not None else {}
        self.bar: tqdm | None = None
        # a resumed run's events after its checkpoint are dropped, as its metrics.jsonl's are
        self.board = tensorboard_writer()(out / TENSORBOARD, purge_step=step) if tensorboard and main else None

    def say(self, text: str) -> None:
        if self.main:
            tqdm.write(text)  # above the progress bar
            sys.stdout.flush()

    def log(self, record: dict[str, Any]) -> None:
        if self.main:
            with open(self.out / METRICS, "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")
        if self.board is not None:  # each number as a scalar "kind/name", a dict's as "kind/name/key"
            for name, value in record.items():
                for key, number in value.items() if isinstance(value, dict) else [("", value)]:
                    if name != "step" and isinstance(number, (int, float)):
                        self.board.add_scalar(
                            "/".join(filter(None, (record["kind"], name, key))), number, record["step"]
                        )

    # ---- as training goes ------------------------------------------------------------------------
    def started(self, name: str, parameters: int, vocab: int, tokens: tuple[int, int], where: str) -> None:
        self.say(
            f"Training {name}: {parameters / 1e6:.2f}M parameters, vocabulary {vocab}, {tokens[0]:,} training and "
            f"{tokens[1]:,} validation tokens, on {where}.\nRun directory: {self.out}"
        )

    def progress(self, step: int, max_iters: int) -> None:
        """The progress bar, from `step` on (when asked for, on the main process)."""
        self.bar = tqdm(total=max_iters, initial=step, unit="step", dynamic_ncols=True, disable=not self.show_bar)

    def stepped(self, step: int, loss: float, lr: float, grad_norm: float, tokens_per_s: float, elapsed: float) -> None:
        self.log({"kind": "train", "step": step, "loss": loss, "lr": lr, "grad_norm": grad_norm,
                  "tokens_per_s": tokens_per_s, "elapsed": elapsed})  # fmt: skip
        self.bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}", tok_s=f"{tokens_per_s:,.0f}", refresh=False)
        self.bar.update(1)

    def skipped(self, step: int, loss: float, norm: float) -> None:
        self.log({"kind": "skip", "step": step, "loss": loss, "grad_norm": norm})
        self.say(f"warning: step {step}: loss {loss}, grad norm {norm}; its update is skipped (--on-nan skip)")

    def lr_decayed(self, step: int, patience: int, lr: float) -> None:
        self.say(f"step {step}: no better validation loss for {patience} evaluations; lr now {lr:.2e}")

    def evaluated(
        self,
        step: int,
        losses: dict[str, float],
        lr: float,
        elapsed: float,
        flow: dict[str, Any],
        best: bool,
        sample: str,
    ) -> None:
        """`flow`: the grad norms and update ratios of the step before (gradflow.py), if it was measured."""
        self.log({"kind": "eval", "step": step, "train_loss": losses["train"], "val_loss": losses["val"], "lr": lr,
                  "elapsed": elapsed, **flow})  # fmt: skip
        if sample and self.main:
            with open(self.out / SAMPLES, "a", encoding="utf-8") as f:
                f.write(f"{SAMPLE_HEADER}{step}, validation loss {losses['val']:.4f}\n{sample}\n\n")
        self.say(f"step {step}: train loss {losses['train']:.4f}, val loss {losses['val']:.4f}{' (best)' * best}")
        if sample:
            self.say(sample.strip("\n")[:400] + "\n")
        if self.main:
            self.plot()

    # ---- how it ended ----------------------------------------------------------------------------
    def finished(self, steps: int, seconds: float, best_val: float, best_step: int, sample: str) -> None:
        self.close()
        out = self.out
        self.say(
            f"\nDone: {steps} steps in {seconds / 60:.1f} min. Best validation loss {best_val:.4f} at step {best_step}.\n"
            f"  {out / BEST}  (the best weights)\n"
            f"  {out / CHECKPOINT}  (the latest state, for --resume)\n"
            f"  {out / METRICS}, {out / SAMPLES}, {out / PLOT}, {out / FLOW_PLOT}\n"
            f"Test it:    python -m transformer.test --from {out}\n"
            f"Sample it:  python -m transformer.sample --from {out}\n"
            + (f"\nA sample from the last step:\n{sample}" if sample else "")
        )

    def interrupted(self, signal_name: str, step: int) -> None:
        self.close()
        self.say(
            f"\n{signal_name}: stopped after step {step}, with its checkpoint saved. Continue with:\n"
            f"  python -m transformer.train --resume {self.out}"
        )

    def complete(self, step: int, max_iters: int, best_val: float, best_step: int) -> None:
        self.say(
            f"The run in {self.out} is complete: it trained {step} steps (max_iters {max_iters}), its best validation "
            f"loss {best_val:.4f} at step {best_step}. To train it further, give a larger --max-iters:\n"
            f"  python -m transformer.train --resume {self.out} --max-iters {step + max(step, 1)}"
        )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.board is not None:
            self.board.close()

    def plot(self) -> None:
        """loss.png: the loss of every step, and the train and validation losses of every
        evaluation; grad_flow.png: the gradient flow's heat map (gradflow.py)."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        records = [json.loads(line) for line in (self.out / METRICS).read_text().splitlines() if line.strip()]
        flow = heat_map(records, self.out.name, self.kinds)
        if flow is not None:
            ckpt.atomic_write(self.out / FLOW_PLOT, flow)
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
        ckpt.atomic_write(self.out / PLOT, buf.getvalue())
