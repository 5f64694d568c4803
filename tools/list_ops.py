"""Write docs/ops.md: every op and public name tinygraph has, by family, from the registry.

    python tools/list_ops.py            # rewrite docs/ops.md
    python tools/list_ops.py --check    # exit 1 if docs/ops.md is out of date (the tests run this)

The registry is the one place that knows; this page is derived from it, never edited by hand.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import sys
from pathlib import Path

import tinygraph
from tinygraph import OPS, PUBLIC

PAGE = Path(__file__).resolve().parent.parent / "docs" / "ops.md"
SPACES = {"Tensor": "Tensor.", "tinygraph": "tinygraph.", "F": "F.", "linalg": "linalg."}


def family(module: str) -> str:
    return module.rsplit(".", 1)[-1]


def origin(fn) -> object:
    """The op class, or the function, behind a public name (wrappers and forms unwrapped)."""
    fn = inspect.unwrap(fn)
    if isinstance(getattr(fn, "__self__", None), type):  # Op.apply
        return fn.__self__
    owner = fn.__qualname__.split(".")[0]
    return OPS.get(owner, fn) if "." in fn.__qualname__ else fn  # Op.call


def render() -> str:
    by_origin: dict[object, list[str]] = {}
    for name, fn in sorted(PUBLIC.items()):
        by_origin.setdefault(origin(fn), []).append(name)
    for op in OPS.values():
        by_origin.setdefault(op, [])
    families: dict[str, list[tuple[str, list[str], str]]] = {}
    for thing, names in by_origin.items():
        is_op = isinstance(thing, type)
        module = thing.__module__
        label = thing.__name__ if is_op else (names[0].split(".", 1)[1] if names else thing.__name__)
        kind = "op" if is_op else "composition"
        if getattr(thing, "composite", None) is not None:
            kind = "fused op"
        families.setdefault(family(module), []).append((label, sorted(names), kind))
    lines = [
        "# Ops and public names",
        "",
        "Generated from the op registry by `python tools/list_ops.py` (a test checks it is up to",
        "date). An *op* is a registered class with its hand-written forward and backward side by",
        "side (a *fused op* also names its composite); a *composition* is a public function made",
        "of ops. `Tensor.x_` and `Tensor.__ix__` names are in-place forms, `Tensor.__rx__`",
        "reflected operators; `F.` is `tinygraph.nn.functional`. Anything torch has that is not",
        "here raises a sentence saying so when a torch function is given a tinygraph Tensor.",
        "",
        f"{len(OPS)} ops, {len(PUBLIC)} public names.",
        "",
    ]
    for name in sorted(families):
        module = importlib.import_module(f"tinygraph.ops.{name}") if name in dir(tinygraph.ops) else None
        doc = (module.__doc__ or "").strip().split("\n\n")[0].replace("\n", " ") if module else ""
        lines += [f"## {name}", "", doc, "", "| name | kind | provides |", "|---|---|---|"]
        for label, names, kind in sorted(families[name]):
            provided = ", ".join(f"`{n}`" for n in names) or "(internal: reached through other ops)"
            lines.append(f"| {label} | {kind} | {provided} |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--check", action="store_true", help="exit 1 if docs/ops.md is out of date")
    args = p.parse_args(argv)
    text = render()
    if args.check:
        if not PAGE.is_file() or PAGE.read_text() != text:
            print("docs/ops.md is out of date; run python tools/list_ops.py", file=sys.stderr)
            return 1
        return 0
    PAGE.write_text(text)
    print(f"Wrote {PAGE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
