"""python -m transformer.test --from RUN_DIR: the model's loss over a whole text (every
token predicted once, in order: deterministic), in nats and bits, then a sample."""

from __future__ import annotations

import sys

from .cli import command, program
from .data import DEFAULT_CORPUS, encode_seed, read_corpus, split, without_unknown
from .sample import load_run, prompt, sampling_parser, sampling_settings, write_samples


def main(argv: list[str] | None = None) -> int:
    p = sampling_parser(
        program("transformer.test"),
        "Score a trained model on a text (loss per token and bits per character, over every token once), then "
        "generate a sample. Without --corpus it scores the run's own validation split.",
    )
    p.add_argument(
        "--corpus", default=None, help="a UTF-8 text file to score in full (default: the run's validation split)"
    )
    args = p.parse_args(argv)

    def body() -> None:
        s = sampling_settings(args)
        m = load_run(args, s)
        start = prompt(s, m)
        encode_seed(start, m.tokenizer)  # a text to continue that cannot be is refused before the scoring
        if args.corpus:
            text, what = without_unknown(read_corpus(args.corpus), m.tokenizer, "The corpus"), args.corpus
        else:
            corpus = m.info["corpus"]
            full = without_unknown(read_corpus(None if corpus == DEFAULT_CORPUS else corpus), m.tokenizer, "The corpus")
            text = m.tokenizer.decode(split(full, m.tokenizer, m.model.block_size).val)
            what = f"the validation split of {corpus}"
        print(f"{what}: {m.score(text)}")
        print(f"\nSample (temperature {s.temperature}):", flush=True)
        write_samples(m, s, start)

    return command(body)


if __name__ == "__main__":
    sys.exit(main())
