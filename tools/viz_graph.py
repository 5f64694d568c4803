"""Draw the forward or backward graph of a transformer layer, or of a whole model.

    python tools/viz_graph.py                                   # one Block's backward graph
    python tools/viz_graph.py --layer GRU --timesteps 3         # a GRU unrolled over 3 steps
    python tools/viz_graph.py --layer LSTM                      # an LSTM: one fused node (a config's unroll = true: one per step)
    python tools/viz_graph.py --layer my_layers.py:RMSNorm      # a layer of your own
    python tools/viz_graph.py --preset baby --repeat 2 --depth 2  # a 2-block model, modules collapsed
    python tools/viz_graph.py --config my_model.toml            # any model config, your layers too
    python tools/viz_graph.py --format html                     # the backward explorer: step through it

Without graphviz's `dot` program it still writes the DOT source and says how to install it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import graphviz
import torch

import tinygraph as tg
from tinygraph import viz
from transformer import config as cfg
from transformer.errors import UserError
from transformer.layers import LAYERS, declaration, find, init_weights
from transformer.model import LanguageModel
from transformer.settings import ModelSettings

WIDTH, VOCAB = 16, 32
EXAMPLE = {float: 0.1, bool: True}  # a required option's value in a drawing (the width's: WIDTH; else 2)
INSTALL_DOT = "Install graphviz (Debian/Ubuntu: sudo apt install graphviz; macOS: brew install graphviz)"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Render a layer's (or a model's) graph with graphviz.")
    what = p.add_mutually_exclusive_group()
    what.add_argument(
        "--layer",
        metavar="TYPE",
        help=f"a layer: {', '.join(LAYERS)}, or your own as file.py:Class or package.module:Class (default: Block)",
    )
    what.add_argument(
        "--preset", choices=cfg.presets(), help="a whole model from a preset; use --depth to collapse modules"
    )
    what.add_argument("--config", metavar="FILE", help="a whole model from a TOML config file (any layers)")
    p.add_argument(
        "--repeat", type=int, default=None, help="for a model: how many copies of each repeated layer (e.g. 2 blocks)"
    )
    p.add_argument("--timesteps", type=int, default=4, help="sequence length (default: 4)")
    p.add_argument("--batch", type=int, default=2, help="batch size (default: 2)")
    p.add_argument("--view", choices=["forward", "backward"], default="backward", help="default: backward")
    p.add_argument(
        "--depth",
        type=int,
        default=None,
        help="collapse modules nested deeper than this (default: a model 2, a layer none)",
    )
    p.add_argument(
        "--format",
        choices=["svg", "png", "pdf", "dot", "html"],
        default="svg",
        help="html: the backward explorer, one page that steps through backward (default: svg)",
    )
    p.add_argument("--out", default=None, help="output file (default: runs/viz/<layer or model>_<view>.<format>)")
    return p.parse_args(argv)


def build_layer(kind: str):
    """A layer built with its own defaults, its required options given example values, and
    initialized as a model initializes it."""
    cls, _ = find(kind)
    declared = declaration(cls)
    kwargs = {
        name: WIDTH if name == declared.out_width else EXAMPLE.get(opt.type, 2)
        for name, opt in declared.options.items()
        if opt.required
    }
    model = ModelSettings()  # what a layer is handed by the model (its context length)
    layer = cls(
        VOCAB if kind in (cfg.FIRST, cfg.LOSS) else WIDTH, **kwargs, **{n: getattr(model, n) for n in declared.given}
    )
    init_weights(layer)
    return layer


def trace_layer(kind: str, batch: int, steps: int) -> tuple[viz.Trace, tg.Tensor]:
    layer = build_layer(kind)
    with viz.Trace(layer) as trace:
        if kind == cfg.FIRST:
            out = layer(tg.randint(0, VOCAB, (batch, steps)))
        elif kind == cfg.LOSS:
            out = layer(tg.randn(batch, steps, VOCAB, requires_grad=True), tg.randint(0, VOCAB, (batch, steps)))
        else:
            out = layer(tg.randn(batch, steps, WIDTH, requires_grad=True))
        out.backward(tg.randn(out.shape))  # a random output grad: the graph ends at the layer itself
    return trace, out


def trace_model(config: dict, repeat: int | None, batch: int, steps: int) -> tuple[viz.Trace, tg.Tensor]:
    if repeat is not None:
        for layer in config["layers"]:
            if "repeat" in layer:
                layer["repeat"] = repeat
    config["model"]["block_size"] = max(steps, config["model"]["block_size"])
    model = LanguageModel(config, VOCAB)
    with viz.Trace(model) as trace:
        _, loss = model(tg.randint(0, VOCAB, (batch, steps)), tg.randint(0, VOCAB, (batch, steps)))
        loss.backward()
    return trace, loss


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.manual_seed(0)
    try:
        if args.preset or args.config:
            config = cfg.load_preset(args.preset) if args.preset else cfg.load_file(args.config)
            trace, out = trace_model(config, args.repeat, args.batch, args.timesteps)
            name, depth = args.preset or Path(args.config).stem, args.depth if args.depth is not None else 2
        else:
            kind = args.layer or "Block"
            trace, out = trace_layer(kind, args.batch, args.timesteps)
            name, depth = kind.rpartition(":")[2], args.depth
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    target = Path(args.out or f"runs/viz/{name.lower()}_{args.view}.{args.format}")
    target.parent.mkdir(parents=True, exist_ok=True)
    if args.format == "html":
        return write_explorer(out, trace, target, depth, name, args.view)
    built = viz.build(out, trace, args.view, depth)
    graph = viz.to_dot(built, trace, args.view, name=f"{name}_{args.view}")
    dot_file = target.with_suffix(".dot")
    dot_file.write_text(graph.source)
    if args.format == "dot":
        print(f"Wrote {dot_file}")
        return 0
    try:
        graph.render(outfile=str(target), format=args.format, cleanup=True)
    except graphviz.ExecutableNotFound:
        print(
            f"Wrote the DOT source to {dot_file}, but graphviz's `dot` program is not installed, so no "
            f"{args.format.upper()} was drawn. {INSTALL_DOT}, then run this again, or: "
            f"dot -T{args.format} {dot_file} -o {target}"
        )
        return 0
    print(f"Wrote {target} ({len(built.nodes)} nodes; DOT source in {dot_file})")
    return 0


def write_explorer(out: tg.Tensor, trace: viz.Trace, target: Path, depth: int | None, name: str, view: str) -> int:
    if view != "backward":
        print("error: the explorer replays the backward pass; drop --view forward.", file=sys.stderr)
        return 2
    try:
        viz.write_html(out, trace, target, depth, title=name)
    except graphviz.ExecutableNotFound:
        print(
            "error: the explorer embeds graphviz's drawing, but graphviz's `dot` program is not installed. "
            f"{INSTALL_DOT}, then run this again.",
            file=sys.stderr,
        )
        return 1
    print(f"Wrote {target} ({len(trace.order)} backward steps): open it in a browser, it needs no network")
    return 0


if __name__ == "__main__":
    sys.exit(main())
