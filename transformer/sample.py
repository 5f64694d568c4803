"""python -m transformer.sample --from RUN_DIR: generate text from a trained model,
printed as it is made. The text to continue comes from --seed-text, --seed-file, or
standard input (--seed-file -)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, TextIO

from .api import TrainedModel, check_seed, load
from .cli import command, program
from .config import check_section
from .errors import UserError
from .settings import SampleSettings, add_flags, given, options

MAX_NEW_TOKENS = 1000


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
    if values.get("seed_text") is not None and values.get("seed_file") is not None:
        raise UserError("--seed-text and --seed-file both give the text to continue; give only one.")
    s = SampleSettings(**values)
    check_seed(s.seed + s.num_samples - 1)  # the last sample's
    return s


def load_run(args: argparse.Namespace, s: SampleSettings) -> TrainedModel:
    return load(args.run_dir, s.device, s.checkpoint)


def prompt(s: SampleSettings, m: TrainedModel) -> str:
    """The text to continue: --seed-text, --seed-file (-: standard input), else a newline
    (or, in a vocabulary without one, its first token)."""
    if s.seed_text is not None:
        return s.seed_text
    if s.seed_file is None:
        return "\n" if "\n" in m.tokenizer.index else m.tokenizer.vocab[0]
    where = "standard input" if s.seed_file == "-" else s.seed_file
    try:
        return sys.stdin.read() if s.seed_file == "-" else Path(s.seed_file).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        reason = getattr(err, "strerror", None) or err
        raise UserError(
            f"The text to continue cannot be read from {where} ({reason}); give a UTF-8 text file."
        ) from None


def write_samples(m: TrainedModel, s: SampleSettings, text: str, out: TextIO | None = None) -> None:
    """Each sample, the text it continues and then its tokens as they are made (on
    standard output by default); several under a header naming the seed that draws each again."""
    out = out or sys.stdout
    for i in range(s.num_samples):
        pieces = m.generate(text, s.max_new_tokens, s.temperature, s.top_k, s.top_p, s.seed + i, stream=True)
        if s.num_samples > 1:
            out.write(("\n" if i else "") + f"--- sample {i + 1} of {s.num_samples} (--seed {s.seed + i}) ---\n")
        out.write(text)
        for piece in pieces:
            out.write(piece)
            out.flush()
        out.write("\n")
        out.flush()


def main(argv: list[str] | None = None) -> int:
    p = sampling_parser(
        program("transformer.sample"),
        "Generate text from a trained model, printed as it is made.",
        max_new_tokens=MAX_NEW_TOKENS,
    )
    args = p.parse_args(argv)

    def body() -> None:
        s = sampling_settings(args, max_new_tokens=MAX_NEW_TOKENS)
        m = load_run(args, s)
        write_samples(m, s, prompt(s, m))

    return command(body)


if __name__ == "__main__":
    sys.exit(main())
