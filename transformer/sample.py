"""python -m transformer.sample --from RUN_DIR: generate text from a trained model."""

from __future__ import annotations

import argparse
import sys

from .run import command, pick_device, read_run
from .test import add_sampling_flags, generate


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m transformer.sample", description="Generate text from a trained model.")
    add_sampling_flags(p, n_chars=1000)
    args = p.parse_args(argv)

    def body() -> None:
        run = read_run(args.run_dir, pick_device(args.device), f"{args.checkpoint}.safetensors")
        print(generate(run, args))

    return command(body)


if __name__ == "__main__":
    sys.exit(main())
