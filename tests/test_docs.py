"""The code in docs/ runs: every ```python block of a page, in order, in a fresh interpreter.

A page whose code loads a run (`transformer.load("runs/NAME")`) runs in a folder of its own
where each such run is a small model trained on the page's own text, so that every
character its code writes is in the vocabulary; other pages run in the repository.
"""

import re
import subprocess
import sys
from pathlib import Path

import pytest
from configs import tiny_config

from transformer import train

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LOADED_RUN = re.compile(r'transformer\.load\("([^"]+)"')


def python_blocks(page: Path) -> str:
    return "\n".join(re.findall(r"```python\n(.*?)```", page.read_text(), flags=re.S))


@pytest.mark.parametrize("page", [p for p in PAGES if python_blocks(p)], ids=lambda p: p.name)
def test_doc_code_runs(page, tmp_path):
    code = python_blocks(page)
    for run in LOADED_RUN.findall(code):
        train_a_run_on(page, tmp_path / run)
    script = tmp_path / f"{page.stem}.py"  # a real file, so that inspect.getsource works in it
    script.write_text(code)
    cwd = tmp_path if LOADED_RUN.search(code) else ROOT
    result = subprocess.run([sys.executable, str(script)], cwd=cwd, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"{page.name} failed:\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}"


def train_a_run_on(page: Path, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    (out.parent / "tiny.toml").write_text(tiny_config(max_iters=2, eval_interval=2))
    argv = ["--config", str(out.parent / "tiny.toml"), "--corpus", str(page), "--out-dir", str(out),
            "--device", "cpu", "--no-progress"]  # fmt: skip
    assert train.main(argv) == 0


def test_the_list_of_ops_is_the_registry():
    """docs/ops.md is generated from the registry; adding an op means regenerating it."""
    result = subprocess.run([sys.executable, "tools/list_ops.py", "--check"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
