"""How far back does the gradient reach? The vanishing-gradient picture.

For each model, over a batch of text: the norm of d(loss at the last position) / d(h_t),
where h_t is the embedding layer's output at position t (the same place in every model),
for every t, at initialization and after a few training steps. In a tanh RNN it fades
within a few steps back; an LSTM's and a GRU's gates carry it further; attention reaches
every position directly.

    python tools/grad_flow.py --corpus data/tinyshakespeare.txt --steps 300   # rnn, lstm, gru, baby
    python tools/grad_flow.py --preset rnn --preset baby --corpus FILE --steps 50 --out runs/flow.png
    python tools/grad_flow.py --from runs/baby-<date>-<time> --corpus FILE      # a trained run

`--preset gru` is the rnn preset with GRU cells (there is no GRU preset). Every model trains
with one recipe (AdamW, --lr, --batch-size, grads clipped to norm 1) on
windows of the first nine tenths of the corpus, and is measured on the same --probe windows
of the last tenth (dropout off). A run given with --from is measured as trained, and a fresh
model of its config stands for its initialization. Writes the figure (--out) and the
numbers beside it (flow.json for flow.png).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch

import tinygraph as tg
import tinygraph.nn.functional as F
from transformer import config as cfg
from transformer.cli import command
from transformer.errors import UserError
from transformer.model import LanguageModel
from transformer.rundir import read_run

DEFAULT_PRESETS = ["rnn", "lstm", "gru", "baby"]
COLORS = {"RNN": "#e03131", "LSTM": "#1971c2", "GRU": "#2f9e44", "Transformer": "#f08c00"}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--preset", action="append", default=[], choices=[*cfg.presets(), "gru"], help="a model to compare (repeat)"
    )
    p.add_argument("--config", action="append", default=[], help="a model TOML file to compare (repeat)")
    p.add_argument("--from", dest="runs", action="append", default=[], help="a trained run directory (repeat)")
    p.add_argument("--corpus", required=True, help="a UTF-8 text file")
    p.add_argument("--steps", type=int, default=300, help="training steps per model (default: 300)")
    p.add_argument("--context", type=int, default=64, help="positions measured (default: 64, at most block_size)")
    p.add_argument("--batch-size", type=int, default=32, help="training batch (default: 32)")
    p.add_argument("--probe", type=int, default=32, help="windows the grads are measured on (default: 32)")
    p.add_argument("--lr", type=float, default=2e-3, help="AdamW's learning rate (default: 2e-3)")
    p.add_argument("--seed", type=int, default=1337)
    p.add_argument("--out", default="runs/grad_flow/flow.png", help="the figure; its numbers go beside it (flow.json)")
    args = p.parse_args(argv)
    for name in ("steps", "context", "batch_size", "probe"):
        if getattr(args, name) < (0 if name == "steps" else 1):
            p.error(f"--{name.replace('_', '-')} must be a positive integer (--steps may be 0).")
    return args


@dataclass
class Result:
    name: str
    kind: str  # RNN, LSTM, GRU or Transformer: what carries information along the sequence
    parameters: int
    init: list[float]  # init[d]: the mean norm of d loss(last) / d h(last - d), at initialization
    trained: list[float]  # the same after training
    loss: dict[str, float] = field(default_factory=dict)  # the probe's mean loss at init and trained


def kind_of(config: dict) -> str:
    types = {layer["type"] for layer in config["layers"]}
    if types & {"Block", "MultiHeadSelfAttention"}:
        return "Transformer"
    return next((t for t in ("LSTM", "GRU", "RNN") if t in types), "other")


def flow(model: LanguageModel, windows: torch.Tensor) -> tuple[list[float], float]:
    """Per distance d back from the last position: the batch mean of |d loss(last) / d h(last - d)|,
    h being the embedding layer's output. Also the mean loss over all positions."""
    was_training = model.training
    model.eval()
    ids, targets = windows[:, :-1], windows[:, 1:]
    h = model.layers[0](tg.Tensor(ids))
    x = h
    for layer in model.layers[1:]:
        x = layer(x)
    # summed over the batch: each window's grad is then its own loss's grad
    last = F.cross_entropy(x[:, -1], tg.Tensor(targets[:, -1]), reduction="sum")
    (grad,) = tg.grad(last, h)
    with tg.no_grad():
        loss = float(F.cross_entropy(x.reshape(-1, x.shape[-1]), tg.Tensor(targets.reshape(-1))).item())
    model.train(was_training)
    norms = torch.linalg.vector_norm(grad.data.double(), dim=-1).mean(0)  # (T,): per position
    return norms.flip(0).tolist(), loss


def train(model: LanguageModel, ids: torch.Tensor, args: argparse.Namespace, context: int) -> None:
    optimizer = tg.optim.AdamW(model.optimizer_groups(0.0), lr=args.lr, betas=(0.9, 0.99))
    for _ in range(args.steps):
        windows = sample(ids, args.batch_size, context + 1)
        _, loss = model(tg.Tensor(windows[:, :-1]), tg.Tensor(windows[:, 1:]))
        optimizer.zero_grad()
        loss.backward()
        tg.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()


def sample(ids: torch.Tensor, batch: int, length: int, generator: torch.Generator | None = None) -> torch.Tensor:
    if len(ids) < length + 1:
        raise UserError(f"The corpus is too short: it needs more than {length} tokens in each split; give more text.")
    starts = torch.randint(0, len(ids) - length, (batch,), generator=generator)
    return torch.stack([ids[s : s + length] for s in starts.tolist()])


def encode(text: str, vocab: list[str], split=list) -> torch.Tensor:
    index = {token: i for i, token in enumerate(vocab)}
    return torch.tensor([index[t] for t in split(text) if t in index], dtype=torch.long)


def study(name: str, config: dict, fresh: LanguageModel, ids: torch.Tensor, args, trained=None) -> Result:
    """Measure `fresh`, then `trained` (a run's model) or `fresh` after args.steps of training."""
    context = min(args.context, fresh.block_size)
    split = len(ids) * 9 // 10
    probe = sample(ids[split:], args.probe, context + 1, torch.Generator().manual_seed(args.seed))
    init, init_loss = flow(fresh, probe)
    if trained is None:
        print(f"{name}: training {args.steps} steps...", flush=True)
        train(fresh, ids[:split], args, context)
        trained = fresh
    after, after_loss = flow(trained, probe)
    at = sorted({1, 8, 32, context - 1} & set(range(context)))
    print(f"{name}: |grad| {', '.join(map(str, at))} back: init {' '.join(f'{init[d]:.2g}' for d in at)}, "
          f"trained {' '.join(f'{after[d]:.2g}' for d in at)}; loss {init_loss:.3f} -> {after_loss:.3f}")  # fmt: skip
    loss = {"init": init_loss, "trained": after_loss}
    return Result(name, kind_of(config), fresh.num_parameters(), init, after, loss)


def models(args: argparse.Namespace) -> list[tuple[str, dict]]:
    presets = args.preset or (DEFAULT_PRESETS if not args.config and not args.runs else [])
    return [(name, preset(name)) for name in presets] + [(Path(c).stem, cfg.load_file(c)) for c in args.config]


def preset(name: str) -> dict:
    if name != "gru":
        return cfg.load_preset(name)
    config = cfg.load_preset("rnn")  # the same model with gated cells
    for layer in config["layers"]:
        if layer["type"] == "RNN":
            layer["type"] = "GRU"
    return config


def read_text(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"The corpus {path} does not exist; give the path of a UTF-8 text file.") from None
    except (OSError, UnicodeDecodeError) as err:
        raise UserError(f"The corpus {path} cannot be read as UTF-8 text ({err}); give a UTF-8 text file.") from None


def plot(results: list[Result], steps_label: str, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for ax, which, title in zip(axes, ("init", "trained"), ("at initialization", steps_label)):
        for r in results:
            values = getattr(r, which)
            label = r.kind if r.name.lower() == r.kind.lower() else f"{r.name} ({r.kind})"
            ax.semilogy(range(len(values)), values, label=label, color=COLORS.get(r.kind), lw=2)
        ax.set_title(title)
        ax.set_xlabel("positions back from the last one")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("|d loss(last) / d h(t)|")
    axes[1].legend(loc="lower left", fontsize=9)
    fig.suptitle("How much of the last position's gradient reaches back to each earlier position")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def body() -> None:
        text = read_text(args.corpus)
        vocab = sorted(set(text))
        ids = encode(text, vocab)
        results = []
        for name, config in models(args):
            torch.manual_seed(args.seed)
            results.append(study(name, config, LanguageModel(config, len(vocab)), ids, args))
        for path in args.runs:
            run = read_run(path, torch.device("cpu"))
            torch.manual_seed(args.seed)
            fresh = LanguageModel(run.info["config"], len(run.tokenizer))
            run_ids = encode(text, run.tokenizer.vocab, run.tokenizer.split)
            results.append(study(Path(path).name, run.info["config"], fresh, run_ids, args, trained=run.model))
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        label = f"after {args.steps} training steps" if not args.runs else "trained"
        plot(results, label, out)
        numbers = {
            "what": "mean over the probe windows of |d loss(last position) / d h(last - d)|, h the embedding output",
            "corpus": args.corpus,
            "steps": args.steps,
            "probe": args.probe,
            "lr": args.lr,
            "seed": args.seed,
            "models": [vars(r) for r in results],
        }
        out.with_suffix(".json").write_text(json.dumps(numbers, indent=1) + "\n")
        print(f"Wrote {out} and {out.with_suffix('.json')}")

    return command(body)


if __name__ == "__main__":
    sys.exit(main())
