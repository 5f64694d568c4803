"""The backward explorer's page (tinygraph.explorer) holds what the engine recorded: the
Trace's received and produced grads are checked against hand-computed grads, and every
step of the page against the Trace. The page is stepped in a real browser in
test_explorer_browser.py."""

import json
import math
import re
import shutil
import subprocess
import sys
from pathlib import Path

import graphviz
import pytest
import torch

import tinygraph as tg
from tinygraph import explorer, viz
from transformer.config import load_preset
from transformer.layers import Block
from transformer.model import LanguageModel

ROOT = Path(__file__).resolve().parent.parent
needs_dot = pytest.mark.skipif(shutil.which("dot") is None, reason="graphviz's dot is not installed (CI installs it)")


def page_data(page: str) -> dict:
    return json.loads(re.search(r'<script type="application/json" id="data">(.*?)</script>', page, re.S)[1])


def traced_block():
    torch.manual_seed(0)
    block = Block(8, 2)
    with viz.Trace(block) as trace:
        out = block(tg.randn(2, 3, 8, requires_grad=True))
        out.backward(tg.randn(out.shape))
    return trace, out


def baby(blocks: int = 2):
    torch.manual_seed(0)
    config = load_preset("baby")
    for layer in config["layers"]:
        if layer["type"] == "Block":
            layer["repeat"] = blocks
    model = LanguageModel(config, 11)
    with viz.Trace(model) as trace:
        _, loss = model(tg.randint(0, 11, (2, 5)), tg.randint(0, 11, (2, 5)))
        loss.backward()
    return trace, loss


def test_the_trace_records_each_ops_received_and_produced_grads():
    x = tg.tensor([1.0, -2.0, 3.0], requires_grad=True)
    w = tg.tensor([0.5, 4.0, -1.0], requires_grad=True)
    with viz.Trace() as trace:
        y = (x * w).sum()
        y.backward()
    total, mul = y.grad_fn, y.grad_fn.edges[0][0]
    assert trace.order == {total: 1, mul: 2}
    (seed,) = trace.received[total]
    assert seed.shape == () and seed.norm == 1.0 and sum(seed.hist) == 1  # backward starts from d y / d y = 1
    (ones,) = trace.received[mul]  # Sum sends ones to each element
    assert ones.shape == (3,) and ones.norm == pytest.approx(math.sqrt(3)) and ones.min == ones.max == 1.0
    to_x, to_w = trace.grads[mul]  # d y / d x = w, d y / d w = x
    assert (to_x.min, to_x.max, to_x.norm) == pytest.approx((-1.0, 4.0, math.sqrt(0.25 + 16 + 1)))
    assert (to_w.min, to_w.max, to_w.norm) == pytest.approx((-2.0, 3.0, math.sqrt(14)))
    assert sum(to_x.hist) == 3 and to_x.hist[0] == 1 and to_x.hist[-1] == 1 and to_x.dtype == "float32"


def test_nan_and_inf_are_counted_and_left_out_of_min_max_and_histogram():
    s = viz.summarize(torch.tensor([1.0, float("nan"), -2.0, float("inf")]))
    assert s.nonfinite == 2 and not s.finite and (s.min, s.max) == (-2.0, 1.0) and sum(s.hist) == 2
    assert math.isnan(s.norm)


def test_without_a_trace_backward_summarizes_nothing(monkeypatch):
    def fail(*args):
        raise AssertionError("summarize ran with no Trace active")

    monkeypatch.setattr(viz, "summarize", fail)
    x = tg.randn(3, requires_grad=True)
    (x.tanh() * x).sum().backward()
    assert x.grad is not None


@needs_dot
def test_every_step_of_the_page_is_what_the_trace_recorded():
    trace, out = traced_block()
    data = page_data(explorer.render(out, trace, title="Block"))
    nodes = sorted(trace.order, key=trace.order.get)
    assert [s["number"] for s in data["steps"]] == list(range(1, len(nodes) + 1))
    assert len(data["views"]) == 1  # nothing collapsed: one drawing
    for step, node in zip(data["steps"], nodes):
        assert step["name"] == node.name and step["module"] == trace.scope_of[node]
        assert step["saved"] == trace.saved_bytes[node]
        assert len(step["received"]) == len(node.outputs)  # one grad per output (Split has three)
        for received, recorded, (shape, _, _) in zip(step["received"], trace.received[node], node.outputs):
            assert received["norm"] == recorded.norm and received["shape"] == list(shape)
        for i, (edge, shown) in enumerate(zip(node.edges, step["inputs"])):
            if edge is None:
                assert shown["to"] is None
                continue
            assert shown["grad"]["norm"] == trace.grads[node][i].norm
            assert shown["grad"]["hist"] == list(trace.grads[node][i].hist)
            if isinstance(edge[0], tg.Node):  # an op's grad goes to the op that made that input
                assert shown["to"].startswith(f"#{trace.order[edge[0]]} {edge[0].name}")
                assert shown["step"] == trace.order[edge[0]]
        source = data["sources"][step["source"]]
        assert source["op"] == node.name and source["code"].lstrip().startswith(("@staticmethod", "def backward"))
    attention = next(s for s in data["steps"] if s["name"] == "PackedAttention")
    assert attention["module"] == "attn" and attention["kind"] == "MultiHeadSelfAttention"
    assert [i["to"] is None for i in attention["inputs"]] == [False]  # qkv, its heads unflattened
    linear = next(s for s in data["steps"] if s["name"] == "Linear" and s["module"] == "mlp.fc")
    assert linear["inputs"][1]["to"] == "mlp.fc.weight" and linear["inputs"][2]["to"] == "mlp.fc.bias"
    assert [s["from"] for s in data["steps"][:2]] == [[], [1]]  # #1 got the output's grad; #2 got what #1 sent


@needs_dot
def test_an_input_that_is_not_a_tensor_shows_its_value():
    q, k, v = (tg.randn(1, 2, 3, 4, requires_grad=True) for _ in range(3))
    with viz.Trace() as trace:
        out = tg.nn.functional.scaled_dot_product_attention(q, k, v)
        out.backward(tg.randn(out.shape))
    (step,) = page_data(explorer.render(out, trace, title="attention"))["steps"]
    assert [i["to"] is None for i in step["inputs"]] == [False, False, False, True]  # q, k, v; no mask
    assert step["inputs"][3]["value"] == "None"


@needs_dot
def test_the_page_is_one_file_that_needs_no_network():
    trace, out = traced_block()
    page = explorer.render(out, trace, title="a <b> & c")
    assert page.startswith("<!doctype html>") and "a &lt;b&gt; &amp; c" in page
    assert not re.search(r"<(link|img|iframe)\b|\bsrc=|@import|url\(", page)
    urls = re.findall(r'[\w:]+="?https?://[^"\s]*', page)
    assert urls and all(u.startswith(("xmlns=", "xmlns:xlink=")) for u in urls)  # SVG namespaces, never fetched
    assert page.count('<div class="view"') == 1  # one drawing


@needs_dot
def test_a_whole_model_collapses_its_modules_into_boxes_that_open():
    trace, loss = baby(blocks=2)
    data = page_data(explorer.render(loss, trace, depth=2))
    opened = [v["module"] for v in data["views"][1:]]
    assert opened == ["layers.0", "layers.1", "layers.3", "layers.4", "layers.5", "layers.6"]
    assert data["views"][4] == {"module": "layers.4", "kind": "Block", "box": "module_layers.4"}
    for step in data["steps"]:
        module = step["module"] or ""
        home = next((i for i, m in enumerate(opened, 1) if module == m or module.startswith(m + ".")), 0)
        assert step["home"] == home  # the drawing that shows the op itself
        assert step["at"][home].startswith("op_")
        assert step["at"][0] == (f"module_{opened[home - 1]}" if home else step["at"][home])


def test_a_page_needs_a_backward_inside_the_trace():
    x = tg.randn(3, requires_grad=True)
    with viz.Trace() as trace:
        y = (x * 2).sum()
    y.backward()
    with pytest.raises(ValueError, match="ran backward inside the Trace"):
        explorer.render(y, trace)


def run_tool(*args):
    return subprocess.run([sys.executable, "tools/viz_graph.py", *args], cwd=ROOT, capture_output=True, text=True)


def tool():
    sys.path.insert(0, str(ROOT / "tools"))
    import viz_graph

    return viz_graph


@needs_dot
def test_the_tool_writes_the_explorer(tmp_path):
    out = tmp_path / "block.html"
    result = run_tool("--layer", "Block", "--format", "html", "--out", str(out))
    assert result.returncode == 0 and "12 backward steps" in result.stdout
    assert len(page_data(out.read_text())["steps"]) == 12


def test_the_explorer_is_backward_only(tmp_path, capsys):
    viz_graph = tool()
    assert viz_graph.main(["--format", "html", "--view", "forward", "--out", str(tmp_path / "f.html")]) == 2
    assert "drop --view forward" in capsys.readouterr().err and not (tmp_path / "f.html").exists()


def test_without_dot_the_tool_says_how_to_install_it_and_writes_nothing(tmp_path, monkeypatch, capsys):
    viz_graph = tool()

    def no_dot(*args, **kwargs):
        raise graphviz.ExecutableNotFound(("dot",))

    monkeypatch.setattr(graphviz.Digraph, "pipe", no_dot)
    assert viz_graph.main(["--format", "html", "--out", str(tmp_path / "b.html")]) == 1
    assert "apt install graphviz" in capsys.readouterr().err and not (tmp_path / "b.html").exists()
