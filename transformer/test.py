"""python -m transformer.test --from RUN_DIR: the model's loss over a whole text (every
token predicted once, in order: deterministic), in nats and bits, then a sample."""

from __future__ import annotations

import argparse
import math
import sys

import torch

import tinygraph as tg

from .data import DEFAULT_CORPUS, IGNORE_INDEX, encode_seed, read_corpus, split, sweep, without_unknown
from .errors import UserError
from .run import Run, command, pick_device, read_run


def add_sampling_flags(p: argparse.ArgumentParser, n_chars: int) -> None:
    p.add_argument(
        "--from", dest="run_dir", required=True, metavar="RUN_DIR", help="a run directory written by transformer.train"
    )
    p.add_argument(
        "--seed-text", default=None, help="the text to continue (default: a newline, or the vocabulary's first token)"
    )
    p.add_argument("--n-chars", type=int, default=n_chars, help=f"tokens to generate (default: {n_chars})")
    p.add_argument(
        "--temperature",
        type=float,
        default=0.8,
        help="below 1 is more conservative, above 1 more surprising (default: 0.8)",
    )
    p.add_argument("--top-k", type=int, default=None, help="sample among the k likeliest tokens only (default: all)")
    p.add_argument("--seed", type=int, default=1337, help="random seed of sampling (default: 1337)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (default: auto)")
    p.add_argument(
        "--checkpoint",
        choices=["best", "checkpoint"],
        default="best",
        help="the best weights or the latest (default: best)",
    )


def generate(run: Run, args: argparse.Namespace) -> str:
    """Continue the seed text by `n_chars` sampled tokens; returns seed and continuation."""
    if args.n_chars < 0 or args.temperature <= 0 or (args.top_k is not None and args.top_k < 1):
        raise UserError("--n-chars must be at least 0, --temperature above 0 and --top-k at least 1.")
    seed_text = args.seed_text
    if seed_text is None:
        seed_text = "\n" if "\n" in run.tokenizer.index else run.tokenizer.vocab[0]
    ids = torch.tensor([encode_seed(seed_text, run.tokenizer)], device=run.model.layers[0].weight.device)
    gen = torch.Generator(device=ids.device).manual_seed(args.seed)
    out = run.model.generate(tg.Tensor(ids), args.n_chars, args.temperature, args.top_k, gen)
    return run.tokenizer.decode(out.data[0])


@tg.no_grad()
def corpus_loss(run: Run, text: str, batch_size: int = 16) -> tuple[float, int]:
    """Mean loss per token over the text and the number of tokens scored."""
    run.model.eval()
    data = torch.tensor(run.tokenizer.encode(text), dtype=torch.long)
    if len(data) < 2:
        raise UserError("The text to test on holds fewer than two tokens; give a longer text.")
    device = run.model.layers[0].weight.device
    total, count = 0.0, 0
    for x, y in sweep(data, batch_size, run.model.block_size):
        _, loss = run.model(tg.Tensor(x.to(device)), tg.Tensor(y.to(device)))
        n = int((y != IGNORE_INDEX).sum())
        total, count = total + loss.item() * n, count + n
    return total / count, count


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m transformer.test",
        description="Score a trained model on a text (loss per token and bits per character, over every "
        "token once), then generate a sample. Without --corpus it scores the run's own validation split.",
    )
    p.add_argument(
        "--corpus", default=None, help="a UTF-8 text file to score in full (default: the run's validation split)"
    )
    add_sampling_flags(p, n_chars=500)
    args = p.parse_args(argv)

    def body() -> None:
        run = read_run(args.run_dir, pick_device(args.device), f"{args.checkpoint}.safetensors")
        if args.corpus:
            text, what = without_unknown(read_corpus(args.corpus), run.tokenizer, "The corpus"), args.corpus
        else:
            corpus = run.info["corpus"]
            full = without_unknown(
                read_corpus(None if corpus == DEFAULT_CORPUS else corpus), run.tokenizer, "The corpus"
            )
            text = run.tokenizer.decode(split(full, run.tokenizer, run.model.block_size).val)
            what = f"the validation split of {corpus}"
        loss, count = corpus_loss(run, text)
        bits_per_char = loss * count / math.log(2) / max(1, len(text) - len(run.tokenizer.split(text)[0]))
        print(f"{what}: {count:,} tokens, loss {loss:.4f} nats per token, {bits_per_char:.4f} bits per character")
        print(f"\nSample (temperature {args.temperature}):\n{generate(run, args)}")

    return command(body)


if __name__ == "__main__":
    sys.exit(main())
