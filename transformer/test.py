"""python -m transformer.test --from RUN_DIR: the model's loss over a whole text (every
token predicted once, in order: deterministic), in nats and bits, then a sample."""

from __future__ import annotations

import argparse
import math
import sys
from typing import Any

import torch

import tinygraph as tg

from .cli import command, pick_device
from .config import check_section
from .data import DEFAULT_CORPUS, IGNORE_INDEX, encode_seed, read_corpus, split, sweep, without_unknown
from .errors import UserError
from .rundir import Run, read_run
from .settings import SampleSettings, add_flags, given, options


def sampling_parser(prog: str, description: str, **defaults: Any) -> argparse.ArgumentParser:
    """The flags of a command that samples from a run: --from RUN_DIR and SampleSettings
    (with this command's own `defaults`)."""
    p = argparse.ArgumentParser(prog=prog, description=description)
    p.add_argument(
        "--from", dest="run_dir", required=True, metavar="RUN_DIR", help="a run directory written by transformer.train"
    )
    add_flags(p, [SampleSettings], defaults=defaults)
    return p


def sampling_settings(args: argparse.Namespace, **defaults: Any) -> SampleSettings:
    values = {**defaults, **given(args, SampleSettings)}
    check_section(values, options(SampleSettings), "command line")
    return SampleSettings(**values)


def generate(run: Run, s: SampleSettings) -> str:
    """Continue the seed text by `n_chars` sampled tokens; returns seed and continuation."""
    seed_text = s.seed_text
    if seed_text is None:
        seed_text = "\n" if "\n" in run.tokenizer.index else run.tokenizer.vocab[0]
    ids = torch.tensor([encode_seed(seed_text, run.tokenizer)], device=run.model.layers[0].weight.device)
    gen = torch.Generator(device=ids.device).manual_seed(s.seed)
    out = run.model.generate(tg.Tensor(ids), s.n_chars, s.temperature, s.top_k, gen)
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
    p = sampling_parser(
        "python -m transformer.test",
        "Score a trained model on a text (loss per token and bits per character, over every token once), then "
        "generate a sample. Without --corpus it scores the run's own validation split.",
    )
    p.add_argument(
        "--corpus", default=None, help="a UTF-8 text file to score in full (default: the run's validation split)"
    )
    args = p.parse_args(argv)

    def body() -> None:
        s = sampling_settings(args)
        run = read_run(args.run_dir, pick_device(s.device), f"{s.checkpoint}.safetensors")
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
        print(f"\nSample (temperature {s.temperature}):\n{generate(run, s)}")

    return command(body)


if __name__ == "__main__":
    sys.exit(main())
