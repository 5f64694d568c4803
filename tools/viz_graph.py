"""Draw the forward or backward graph of a transformer layer, or of a whole model.

    python tools/viz_graph.py                                   # one Block's backward graph
    python tools/viz_graph.py --layer LSTM --timesteps 3        # an LSTM unrolled over 3 steps
    python tools/viz_graph.py --preset baby --repeat 2 --depth 2  # a 2-block model, modules collapsed
    python tools/viz_graph.py --format html                     # the backward explorer: step through it

Without graphviz's `dot` program it still writes the DOT source and says how to install it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import graphviz
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import tinygraph as tg
from tinygraph import viz
from transformer import config as cfg
from transformer import layers as L
from transformer import recurrent as R
from transformer.model import LanguageModel

WIDTH, HEADS, VOCAB = 16, 2, 32
INSTALL_DOT = "Install graphviz (Debian/Ubuntu: sudo apt install graphviz; macOS: brew install graphviz)"
LAYERS = {
    "Block": lambda: L.Block(WIDTH, HEADS),
    "MultiHeadSelfAttention": lambda: L.MultiHeadSelfAttention(WIDTH, HEADS),
    "FullyConnected": lambda: L.FullyConnected(WIDTH),
    "LayerNorm": lambda: L.LayerNorm(WIDTH),
    "TemporalDense": lambda: L.TemporalDense(WIDTH, WIDTH),
    "Dropout": lambda: L.Dropout(0.1),
    "Embedding": lambda: L.Embedding(VOCAB, WIDTH),
    "PositionalEmbedding": lambda: L.PositionalEmbedding(64, WIDTH),
    "CrossEntropyLoss": lambda: L.CrossEntropyLoss(),
    "RNN": lambda: R.RNN(WIDTH, WIDTH),
    "LSTM": lambda: R.LSTM(WIDTH, WIDTH),
    "GRU": lambda: R.GRU(WIDTH, WIDTH),
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Render a layer's (or a model's) graph with graphviz.")
    what = p.add_mutually_exclusive_group()
    what.add_argument("--layer", choices=sorted(LAYERS), help="a layer of the transformer package (default: Block)")
    what.add_argument(
        "--preset", choices=cfg.presets(), help="a whole model from a preset; use --depth to collapse modules"
    )
    p.add_argument(
        "--repeat", type=int, default=None, help="with --preset: how many copies of each repeated layer (e.g. 2 blocks)"
    )
    p.add_argument("--timesteps", type=int, default=4, help="sequence length (default: 4)")
    p.add_argument("--batch", type=int, default=2, help="batch size (default: 2)")
    p.add_argument("--view", choices=["forward", "backward"], default="backward", help="default: backward")
    p.add_argument(
        "--depth",
        type=int,
        default=None,
        help="collapse modules nested deeper than this (default: a preset 2, a layer none)",
    )
    p.add_argument(
        "--format",
        choices=["svg", "png", "pdf", "dot", "html"],
        default="svg",
        help="html: the backward explorer, one page that steps through backward (default: svg)",
    )
    p.add_argument("--out", default=None, help="output file (default: runs/viz/<layer or preset>_<view>.<format>)")
    return p.parse_args(argv)


def trace_layer(name: str, batch: int, steps: int) -> tuple[viz.Trace, tg.Tensor]:
    layer = LAYERS[name]()
    with viz.Trace(layer) as trace:
        if name == "Embedding":
            out = layer(tg.randint(0, VOCAB, (batch, steps)))
        elif name == "CrossEntropyLoss":
            out = layer(tg.randn(batch, steps, VOCAB, requires_grad=True), tg.randint(0, VOCAB, (batch, steps)))
        else:
            out = layer(tg.randn(batch, steps, WIDTH, requires_grad=True))
        out.backward(tg.randn(out.shape))  # a random output grad: the graph ends at the layer itself
    return trace, out


def trace_model(preset: str, repeat: int | None, batch: int, steps: int) -> tuple[viz.Trace, tg.Tensor]:
    config = cfg.load_preset(preset)
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
    if args.preset:
        trace, out = trace_model(args.preset, args.repeat, args.batch, args.timesteps)
        name, depth = args.preset, args.depth if args.depth is not None else 2
    else:
        name, depth = args.layer or "Block", args.depth
        trace, out = trace_layer(name, args.batch, args.timesteps)
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
