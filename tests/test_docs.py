"""The code in docs/ runs: every ```python block of a page, in order, in a fresh interpreter."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def python_blocks(page: Path) -> str:
    return "\n".join(re.findall(r"```python\n(.*?)```", page.read_text(), flags=re.S))


@pytest.mark.parametrize("page", [p for p in PAGES if python_blocks(p)], ids=lambda p: p.name)
def test_doc_code_runs(page, tmp_path):
    script = tmp_path / f"{page.stem}.py"  # a real file, so that inspect.getsource works in it
    script.write_text(python_blocks(page))
    result = subprocess.run([sys.executable, str(script)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"{page.name} failed:\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}"


def test_the_list_of_ops_is_the_registry():
    """docs/ops.md is generated from the registry; adding an op means regenerating it."""
    result = subprocess.run([sys.executable, "tools/list_ops.py", "--check"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
