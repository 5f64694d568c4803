"""Running the command lines in-process as a user would, and what the tests check of what
they leave: the output, the exit code, the run directory."""

import contextlib
import io
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

from configs import tiny_config

from transformer import sample, test, train

TEXT = "the quick brown fox jumps over the lazy dog. " * 40
TINY = tiny_config(dim=8, max_iters=0, eval_iters=1, sample_chars=4)  # one evaluation, a checkpoint, no step
COMMANDS = {"train": train.main, "test": test.main, "sample": sample.main}


def run(command: str, argv: list[str]) -> tuple[int, str, str]:
    """A command line run in this process: its exit code, stdout and stderr (argparse's
    exits included)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = COMMANDS[command](argv)
        except SystemExit as exit:
            code = exit.code if isinstance(exit.code, int) else 2
    return code, out.getvalue(), err.getvalue()


def assert_clean(code: int, err: str) -> str:
    """Exit 0, or exit 2 with one line of error on stderr (warnings, each one line, may
    come before it); never a traceback. Returns the error line."""
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("warning: ")]
    if code == 0:
        assert not lines, err
        return ""
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), (code, err)
    return lines[0]


def files_of(directory: Path) -> dict[str, tuple[int, bytes]]:
    """Every file under `directory` (its mode and bytes): what 'left as it was' compares."""
    return {
        str(p.relative_to(directory)): (p.stat().st_mode, p.read_bytes() if p.is_file() else b"")
        for p in sorted(directory.rglob("*"))
    }


def trained_run(folder: Path, name: str = "run", *extra: str) -> Path:
    """A tiny run in `folder`/`name`: evaluated and checkpointed at step 0 (plus `extra` flags)."""
    (folder / "tiny.toml").write_text(TINY)
    (folder / "corpus.txt").write_text(TEXT)
    argv = ["--config", str(folder / "tiny.toml"), "--corpus", str(folder / "corpus.txt"), "--device", "cpu",
            "--no-progress", "--out-dir", str(folder / name), *extra]  # fmt: skip
    code, _, err = run("train", argv)
    assert code == 0, err
    return folder / name


@contextlib.contextmanager
def shared_folder() -> Iterator[Path]:
    """A folder another user can enter (pytest's tmp_path is private to its owner)."""
    folder = Path(tempfile.mkdtemp(prefix="tinygraph-"))
    folder.chmod(0o755)
    try:
        yield folder
    finally:
        for path in [folder, *folder.rglob("*")]:  # whatever permission a test took away, given back
            path.chmod(0o755 if path.is_dir() else 0o644)
        shutil.rmtree(folder)


@contextlib.contextmanager
def as_another_user() -> Iterator[None]:
    """Run the body as a user who owns none of the files: as root (who may write anything),
    the effective user becomes `nobody` for its duration; as anyone else, nothing changes
    (their own read-only files already refuse them)."""
    if os.name != "posix" or os.geteuid() != 0:
        yield
        return
    os.setegid(65534)
    os.seteuid(65534)
    try:
        yield
    finally:
        os.seteuid(0)
        os.setegid(0)


def read_only(directory: Path) -> None:
    """Take away the write permission of a run directory and its files, as another
    user's run has it."""
    for path in [*directory.rglob("*"), directory]:
        path.chmod(path.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
