"""Rule 1: tinygraph and transformer never use torch.autograd. Proven two ways: at run
time no torch.Tensor anywhere has requires_grad or a grad_fn after a model's forward and
backward, and in the source no torch autograd API is named."""

import ast
import gc
import subprocess
import sys
from pathlib import Path

import torch

import tinygraph as tg
import tinygraph.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
FORBIDDEN_TORCH_NAMES = {"autograd", "enable_grad", "set_grad_enabled", "inference_mode", "is_grad_enabled"}


def _tiny_model_step():
    tg.manual_seed(0)
    vocab, width, heads, T = 11, 8, 2, 5
    emb = tg.randn(vocab, width, requires_grad=True)
    pos = tg.randn(T, width, requires_grad=True)
    qkv = tg.randn(3 * width, width, requires_grad=True)
    ln_w = tg.ones(width, requires_grad=True)
    ids = tg.randint(0, vocab, (2, T))
    x = F.embedding(ids, emb) + pos
    h = F.layer_norm(x, width, ln_w)
    q, k, v = F.linear(h, qkv).split(width, -1)
    shape = (2, T, heads, width // heads)
    att = F.scaled_dot_product_attention(*(t.reshape(shape).transpose(1, 2) for t in (q, k, v)), is_causal=True)
    x = x + F.gelu(att.transpose(1, 2).reshape(2, T, width))
    x = F.dropout(x, 0.1)
    logits = x @ emb.mT
    loss = F.cross_entropy(logits.reshape(-1, vocab), ids.reshape(-1))
    loss.backward()
    return [emb, pos, qkv, ln_w], loss


def _torch_autograd_tensors():
    gc.collect()
    return {
        id(o): o
        for o in gc.get_objects()
        if issubclass(type(o), torch.Tensor) and (o.requires_grad or o.grad_fn is not None)
    }


def test_no_torch_tensor_requires_grad_or_has_a_grad_fn():
    before = _torch_autograd_tensors()  # other tests' torch oracles may still be alive
    params, loss = _tiny_model_step()
    assert all(p.grad is not None for p in params)
    offenders = set(_torch_autograd_tensors()) - set(before)
    assert not offenders, f"{len(offenders)} torch tensors made by the step use torch.autograd"
    for t in [loss, *params, *(p.grad for p in params)]:
        assert not t.data.requires_grad and t.data.grad_fn is None


def _torch_autograd_uses(path: Path):
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("torch.autograd"):
            yield node.lineno, f"from {node.module} import"
        if isinstance(node, ast.ImportFrom) and node.module == "torch":
            for alias in node.names:
                if alias.name in FORBIDDEN_TORCH_NAMES:
                    yield node.lineno, f"from torch import {alias.name}"
        if isinstance(node, ast.Import) and any(a.name.startswith("torch.autograd") for a in node.names):
            yield node.lineno, "import torch.autograd"
        if isinstance(node, ast.Attribute) and node.attr in FORBIDDEN_TORCH_NAMES:
            base = node.value
            if isinstance(base, ast.Name) and base.id == "torch":
                yield node.lineno, f"torch.{node.attr}"
        if isinstance(node, ast.Call):
            func = node.func
            names_torch = (
                isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and func.value.id == "torch"
            )
            for kw in node.keywords:
                if names_torch and kw.arg == "requires_grad":
                    yield node.lineno, "torch factory with requires_grad="


# The one exception: the public test harness, whose job is to compare tinygraph with
# torch.autograd (the oracle), as tests/ do. The engine and the models never import it.
ORACLE = ROOT / "tinygraph" / "testing.py"


def test_the_source_never_names_torch_autograd():
    files = [p for d in ("tinygraph", "transformer") for p in (ROOT / d).rglob("*.py") if p != ORACLE]
    assert len(files) > 5
    uses = [f"{p.relative_to(ROOT)}:{line}: {what}" for p in files for line, what in _torch_autograd_uses(p)]
    assert not uses, "torch.autograd used inside the engine or the models:\n" + "\n".join(uses)


def test_the_source_check_catches_a_violation(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import torch\nx = torch.ones(2, requires_grad=True)\ntorch.autograd.grad(x.sum(), x)\n")
    assert [line for line, _ in _torch_autograd_uses(bad)] == [2, 3]


def test_the_engine_and_the_models_never_import_the_oracle():
    code = "import sys, tinygraph, transformer.train, transformer.test, transformer.sample; print('tinygraph.testing' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
