"""The fast path (the whole step under torch.compile) and mixed precision (tinygraph.autocast)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from configs import tiny_config

import tinygraph as tg
import tinygraph.nn.functional as F
from transformer import loop, train
from transformer.config import parse
from transformer.model import LanguageModel

GPT = tiny_config(max_iters=4, eval_interval=4, warmup_iters=1)


def train_losses(tmp_path, name, *flags):
    (tmp_path / "gpt.toml").write_text(GPT)
    (tmp_path / "corpus.txt").write_text("abcd efgh ijkl mnop " * 30)
    args = ["--config", str(tmp_path / "gpt.toml"), "--corpus", str(tmp_path / "corpus.txt"), "--no-progress"]
    assert train.main([*args, "--out-dir", str(tmp_path / name), "--device", "cpu", *flags]) == 0
    records = [json.loads(line) for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in records if r["kind"] == "train"]


@pytest.mark.parametrize("dtype", [None, torch.bfloat16], ids=["float32", "bfloat16"])
def test_the_whole_training_step_traces_as_one_graph(dtype):
    """No graph break anywhere in forward (mixed precision too), the hand-written backward,
    clipping or AdamW; and traced once (AdamW's state exists before the first step: state
    created in it would make the second step compile the whole step again)."""
    model = LanguageModel(parse(GPT, "test"), 11)
    opt = tg.optim.AdamW(model.optimizer_groups(0.1), lr=torch.tensor(1e-3))

    def step(x, y):
        with tg.autocast("cpu", dtype=dtype, enabled=dtype is not None):
            _, loss = model(tg.Tensor(x), tg.Tensor(y))
        loss.backward()
        tg.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad()
        return loss.data

    x, y = torch.randint(0, 11, (2, 8)), torch.randint(0, 11, (2, 8))
    # imported here, not at collection: torch._dynamo imports triton, which must wait for
    # test_triton_kernels.py to choose its interpreter
    from torch._dynamo.testing import CompileCounter

    traces = CompileCounter()  # runs each graph eagerly, and counts them
    compiled = torch.compile(step, backend=traces, fullgraph=True)  # fullgraph: a break is an error
    for _ in range(3):
        compiled(x, y)
    assert traces.frame_count == 1


def test_a_second_shape_recompiles_with_dynamic_shapes_and_no_graph_break():
    # found by review: unbind's backward sorted its input's strides to lay out the grad, which
    # dynamo cannot do with symbolic strides (the second shape compiles with dynamic ones)
    w = tg.randn(24, 6, requires_grad=True)

    def step(x):
        q, k, v = F.linear(tg.Tensor(x), w).unflatten(-1, (3, 2, 4)).permute(2, 0, 3, 1, 4).unbind(0)
        ((q * k).sum() + v.sin().sum()).backward()
        grad, w.grad = w.grad.data, None
        return grad

    compiled = torch.compile(step, backend="eager", fullgraph=True)
    for length in (5, 7):
        x = torch.randn(2, length, 6)
        torch.testing.assert_close(compiled(x), step(x))


def test_compile_flag_trains_like_eager(tmp_path):
    eager = train_losses(tmp_path, "eager")
    compiled = train_losses(tmp_path, "compiled", "--compile")
    assert compiled == pytest.approx(eager, rel=1e-4)


@pytest.mark.parametrize("update_compiled", [False, True], ids=["the CPU's eager update", "a compiled update"])
def test_the_compiled_training_step_compiles_a_bounded_number_of_times(tmp_path, update_compiled, monkeypatch):
    """Forward and backward compile once. A compiled update (CUDA's; forced here) compiles once,
    and the first half once more when the grads first exist (a compiled update keeps them,
    zeroed in place): new grad tensors every step had made it compile again every step, until
    dynamo gave up after 8 and ran it eagerly (found by review)."""
    from torch._dynamo.utils import counters  # (imported late: see above)

    if update_compiled:
        monkeypatch.setattr(loop, "compiles_update", lambda t: t.run.compile)
    before = counters["stats"]["unique_graphs"]
    train_losses(tmp_path, "compiled", "--compile", "--max-iters", "8")
    assert counters["stats"]["unique_graphs"] - before <= (3 if update_compiled else 1)


def test_bfloat16_trains_close_to_float32(tmp_path):
    full = train_losses(tmp_path, "f32")
    mixed = train_losses(tmp_path, "bf16", "--dtype", "bfloat16")
    assert mixed == pytest.approx(full, abs=0.05) and mixed != full


def test_autocast_runs_matrix_products_low_and_normalizations_in_float32():
    w = tg.randn(8, 4, requires_grad=True)
    x = tg.randn(3, 4)
    with tg.autocast("cpu", dtype=torch.bfloat16):
        h = F.linear(x, w)
        attn = F.scaled_dot_product_attention(h.unsqueeze(0), h.unsqueeze(0), h.unsqueeze(0))
        normed = F.layer_norm(attn, 8)
        probs = normed.softmax(-1)
        loss = F.cross_entropy(normed[0], tg.tensor([1, 2, 3]))
    assert (h.dtype, attn.dtype) == (torch.bfloat16, torch.bfloat16)
    assert (normed.dtype, probs.dtype, loss.dtype) == (torch.float32,) * 3
    loss.backward()
    assert w.grad.dtype == torch.float32  # the master weight gets its grad in its own dtype
    with tg.autocast("cpu", enabled=False):
        assert F.linear(x, w).dtype == torch.float32


def test_autocast_matches_torch_autocast_closely():
    torch.manual_seed(0)
    w, x = torch.randn(16, 8), torch.randn(5, 8)
    ours = tg.Tensor(w.clone(), requires_grad=True)
    with tg.autocast("cpu", dtype=torch.bfloat16):
        out = F.gelu(F.linear(tg.Tensor(x), ours)).sum()
    out.backward()
    theirs = w.clone().requires_grad_()
    with torch.autocast("cpu", torch.bfloat16):
        out_t = torch.nn.functional.gelu(torch.nn.functional.linear(x, theirs)).sum()
    out_t.backward()
    torch.testing.assert_close(out.data.float(), out_t.float(), rtol=1e-2, atol=1e-2)
    torch.testing.assert_close(ours.grad.data, theirs.grad, rtol=2e-2, atol=2e-2)


def test_importing_tinygraph_loads_no_compiler():
    """torch._dynamo costs a second of start-up, and imports triton, whose interpreter must be
    chosen before its first import (tests/test_triton_kernels.py): it loads when a compile starts."""
    code = "import sys, tinygraph, transformer.train; print(sorted({'torch._dynamo', 'triton'} & set(sys.modules)))"
    root = Path(__file__).resolve().parent.parent
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
