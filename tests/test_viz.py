"""tinygraph.viz and tools/viz_graph.py: the drawn graph's nodes, clusters, labels and
edges are checked against the recorded graph."""

import shutil
import subprocess
import sys
from pathlib import Path

import graphviz
import pytest

import tinygraph as tg
from tinygraph import Node, viz
from transformer.config import load_preset
from transformer.layers import LSTM, Block
from transformer.model import LanguageModel

ROOT = Path(__file__).resolve().parent.parent
HAS_DOT = shutil.which("dot") is not None


def recorded(output):
    """The recorded graph, walked independently of viz: its nodes and (source, consumer) pairs."""
    nodes, pairs, stack = {output.grad_fn}, set(), [output.grad_fn]
    while stack:
        node = stack.pop()
        for edge in node.edges:
            if edge is None:
                continue
            pairs.add((id(edge[0]), id(node)))
            if isinstance(edge[0], Node) and edge[0] not in nodes:
                nodes.add(edge[0])
                stack.append(edge[0])
    return nodes, pairs


def traced_block():
    block = Block(8, 2)
    x = tg.randn(2, 3, 8, requires_grad=True)
    with viz.Trace(block) as trace:
        out = block(x)
        out.backward(tg.randn(out.shape))
    return block, trace, out


def test_block_graph_matches_the_recorded_graph():
    block, trace, out = traced_block()
    nodes, pairs = recorded(out)
    graph = viz.build(out, trace, "backward")
    ops = [n for n in graph.nodes.values() if n["kind"] == "op"]
    params = [n for n in graph.nodes.values() if n["kind"] == "parameter"]
    assert len(ops) == len(nodes)
    assert len(params) == len(list(block.parameters()))
    assert len(graph.edges) == len(pairs) + 1  # + the root op to the output node
    assert sorted(int(n["label"].split()[0][1:]) for n in ops) == list(range(1, len(ops) + 1))  # backward order
    labels = {n["label"].split("\n")[0] for n in params}
    assert {"attn.qkv.weight", "mlp.fc.bias", "ln1.weight"} <= labels
    clusters = {n["label"].split("\n")[0].split()[-1]: n["cluster"] for n in ops}
    assert clusters["PackedAttention"] == "attn" and clusters["Gelu"] == "mlp"
    assert all("grad norm" in n["label"] for n in params)
    attention = next(n for n in ops if "PackedAttention" in n["label"])
    assert "saved" in attention["label"] and "grad 0: (2, 3, 3, 2, 4)" in attention["label"]  # qkv's


def test_forward_view_shows_saved_tensors_and_flows_forward():
    _, trace, out = traced_block()
    graph = viz.build(out, trace, "forward")
    saved = [k for k, n in graph.nodes.items() if n["kind"] == "saved"]
    assert saved and all((k, k.replace("saved:", "op:"), "dotted") in graph.edges for k in saved)
    assert any(source.startswith("leaf:") for source, _, _ in graph.edges)  # inputs point into ops


def test_dot_source_has_nested_clusters_and_every_edge():
    _, trace, out = traced_block()
    graph = viz.build(out, trace, "backward")
    source = trace.draw(out, view="backward").source
    assert "subgraph cluster_root {" in source and "subgraph cluster_attn {" in source
    assert source.index("cluster_attn {") < source.index('"cluster_attn.qkv"')  # qkv nested inside attn
    assert source.count(" -> ") == len(graph.edges)


def test_an_lstm_is_one_node_for_the_whole_sequence():
    layer = LSTM(4, 4)
    with viz.Trace(layer) as trace:
        out = layer(tg.randn(1, 3, 4, requires_grad=True))
        out.backward(tg.randn(out.shape))
    names = [n["label"].split("\n")[0].split()[-1] for n in viz.build(out, trace, "backward").nodes.values()]
    assert names.count("LSTMSequence") == 1 and "LSTMCell" not in names


def test_an_lstm_unrolled_over_three_steps():
    layer = LSTM(4, 4, unroll=True)
    with viz.Trace(layer) as trace:
        out = layer(tg.randn(1, 3, 4, requires_grad=True))
        out.backward(tg.randn(out.shape))
    graph = viz.build(out, trace, "backward")
    names = [n["label"].split("\n")[0].split()[-1] for n in graph.nodes.values() if n["kind"] == "op"]
    assert names.count("Unbind") == 1 and names.count("Stack") == 1
    assert names.count("LSTMCell") == 3  # one fused node per step
    cells = [n for n in graph.nodes.values() if n["label"].split("\n")[0].endswith("LSTMCell")]
    assert all("grad 1: (1, 4)" in n["label"] and "grad 3: (16, 4)" in n["label"] for n in cells)  # h and W_hh


def test_collapsing_a_two_block_model():
    config = load_preset("baby")
    for layer in config["layers"]:
        if layer["type"] == "Block":
            layer["repeat"] = 2
    model = LanguageModel(config, 11)
    with viz.Trace(model) as trace:
        _, loss = model(tg.randint(0, 11, (2, 5)), tg.randint(0, 11, (2, 5)))
        loss.backward()
    full = viz.build(loss, trace, "backward")
    collapsed = viz.build(loss, trace, "backward", depth=2)
    modules = {k: n for k, n in collapsed.nodes.items() if n["kind"] == "module"}
    assert set(modules) == {
        "module:layers.0",
        "module:layers.1",
        "module:layers.3",
        "module:layers.4",
        "module:layers.5",
        "module:layers.6",
    }
    per_block = sum(1 for scope in trace.scope_of.values() if scope and scope.startswith("layers.3"))
    assert per_block == 12  # 2 norms, 4 linears, 2 reshapes, attention, gelu, 2 adds
    for block in ("layers.3", "layers.4"):
        assert modules[f"module:{block}"]["label"] == f"{block}\nBlock, {per_block} ops (collapsed)"
    assert len(collapsed.nodes) < len(full.nodes) / 4
    assert ("module:layers.4", "module:layers.3", "solid") in collapsed.edges  # block 2's grad flows into block 1


def test_nan_and_inf_are_highlighted():
    x = tg.tensor([0.0, 1.0], requires_grad=True)
    with viz.Trace() as trace:
        y = x.sqrt().sum()
        y.backward()
    graph = viz.build(y, trace, "backward")
    bad = [n["label"].split("\n")[0] for n in graph.nodes.values() if n["bad"]]
    assert "#2 Sqrt" in bad and "input" in bad


def test_long_graphs_and_second_order_graphs_draw():
    x = tg.tensor(1.0, requires_grad=True)
    y = x
    for _ in range(5000):
        y = y * 1.0
    assert len(viz.build(y).nodes) == 5000 + 2
    x = tg.randn(3, requires_grad=True)
    (g,) = tg.grad((x.tanh() * x).sum(), x, create_graph=True)
    names = {n["label"].split("\n")[0] for n in viz.build(g).nodes.values()}
    assert {"Mul", "Tanh"} <= names


def test_leaves_and_no_grad_outputs_are_clear_errors():
    with pytest.raises(ValueError, match="nothing to draw"):
        viz.build(tg.randn(2))


def run_tool(*args):
    return subprocess.run([sys.executable, "tools/viz_graph.py", *args], cwd=ROOT, capture_output=True, text=True)


@pytest.mark.skipif(not HAS_DOT, reason="graphviz's dot is not installed (CI installs it)")
def test_the_tool_renders_a_block_by_default(tmp_path):
    result = run_tool("--out", str(tmp_path / "block_backward.svg"))
    assert result.returncode == 0 and "Wrote" in result.stdout
    svg = (tmp_path / "block_backward.svg").read_text()
    assert svg.startswith("<?xml") and "attn.qkv.weight" in svg and "PackedAttention" in svg


@pytest.mark.skipif(not HAS_DOT, reason="graphviz's dot is not installed (CI installs it)")
@pytest.mark.parametrize(
    "args,expect",
    [
        (["--layer", "LSTM", "--timesteps", "3"], "LSTMSequence"),
        (["--layer", "RNN", "--timesteps", "3"], "Tanh"),
        (["--preset", "baby", "--repeat", "2", "--depth", "2"], "collapsed"),
    ],
)
def test_the_tool_renders_an_lstm_and_a_collapsed_model(tmp_path, args, expect):
    out = tmp_path / "g.svg"
    assert run_tool(*args, "--out", str(out)).returncode == 0
    assert expect in out.read_text()


def test_without_dot_the_tool_writes_the_source_and_says_how_to_install(tmp_path, monkeypatch, capsys):
    sys.path.insert(0, str(ROOT / "tools"))
    import viz_graph

    def no_dot(*args, **kwargs):
        raise graphviz.ExecutableNotFound(("dot",))

    monkeypatch.setattr(graphviz.Digraph, "render", no_dot)
    assert viz_graph.main(["--out", str(tmp_path / "b.svg")]) == 0
    assert "apt install graphviz" in capsys.readouterr().out
    assert (tmp_path / "b.dot").read_text().startswith("digraph")
