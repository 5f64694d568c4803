"""python -m transformer.sample --from RUN_DIR: generate text from a trained model."""

from __future__ import annotations

import sys

from .cli import command, pick_device
from .rundir import read_run
from .test import generate, sampling_parser, sampling_settings

N_CHARS = 1000


def main(argv: list[str] | None = None) -> int:
    p = sampling_parser("python -m transformer.sample", "Generate text from a trained model.", n_chars=N_CHARS)
    args = p.parse_args(argv)

    def body() -> None:
        s = sampling_settings(args, n_chars=N_CHARS)
        run = read_run(args.run_dir, pick_device(s.device), f"{s.checkpoint}.safetensors")
        print(generate(run, s))

    return command(body)


if __name__ == "__main__":
    sys.exit(main())
