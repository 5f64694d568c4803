"""Installed, the package works from anywhere: the console commands beside `python -m`,
and the tools run from any directory without editing sys.path."""

import importlib
import shutil
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path

from configs import tiny_config

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]


def test_each_console_command_is_its_modules_main():
    assert set(SCRIPTS) == {"tinygraph-train", "tinygraph-test", "tinygraph-sample"}
    for name, target in SCRIPTS.items():
        module, _, function = target.partition(":")
        assert module == f"transformer.{name.removeprefix('tinygraph-')}" and function == "main"
        assert callable(getattr(importlib.import_module(module), function))


def test_the_installed_commands_run_from_any_directory(tmp_path):
    command = shutil.which("tinygraph-sample", path=sysconfig.get_path("scripts")) or shutil.which("tinygraph-sample")
    assert command, "tinygraph-sample is not installed (an install older than its console commands?): pip install -e ."
    result = subprocess.run([command, "--from", str(tmp_path / "none")], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 2 and result.stderr.startswith("error: The run directory")
    usage = subprocess.run([command, "--help"], cwd=tmp_path, capture_output=True, text=True).stdout
    assert usage.startswith("usage: tinygraph-sample ")  # its own name, not python -m's


def test_no_tool_edits_sys_path():
    for tool in (ROOT / "tools").glob("*.py"):
        assert "sys.path" not in tool.read_text(), f"{tool.name} edits sys.path; import the installed package"


def test_a_tool_runs_from_another_directory(tmp_path):
    result = subprocess.run([sys.executable, str(ROOT / "tools" / "viz_graph.py"), "--layer", "LayerNorm", "--format",
                             "dot", "--out", "g.dot"], cwd=tmp_path, capture_output=True, text=True)  # fmt: skip
    assert result.returncode == 0 and (tmp_path / "g.dot").is_file(), result.stderr[-2000:]


def test_the_generation_bench_runs_from_another_directory(tmp_path):
    """bench.py imports torch_twin from beside itself; --generate exits 0 only if the cached
    and the recomputed text are the same."""
    (tmp_path / "tiny.toml").write_text(tiny_config(block_size=4))
    result = subprocess.run([sys.executable, str(ROOT / "tools" / "bench.py"), "--generate", "--config", "tiny.toml",
                             "--new-tokens", "10", "--device", "cpu"], cwd=tmp_path, capture_output=True, text=True)  # fmt: skip
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "the same text" in result.stdout and len(list((tmp_path / "runs" / "bench").glob("generate-tiny-*.md"))) == 1
