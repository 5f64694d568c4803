"""python -m transformer.sample --from RUN_DIR: generate text from a trained model."""

from __future__ import annotations

import argparse
import sys

from .errors import UserError
from .run import one_line_warnings, pick_device, read_run
from .test import add_sampling_flags, generate


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m transformer.sample", description="Generate text from a trained model.")
    add_sampling_flags(p, n_chars=1000)
    args = p.parse_args(argv)
    one_line_warnings()
    try:
        run = read_run(args.run_dir, pick_device(args.device), f"{args.checkpoint}.safetensors")
        print(generate(run, args))
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
