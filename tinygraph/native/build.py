"""Building the C kernels' shared library: once per machine, compiler and sources, cached.

Every .c file of this folder is compiled into one library by `$CC` (else `cc`) into
`$TINYGRAPH_CACHE` (else `$XDG_CACHE_HOME/tinygraph`, else ~/.cache/tinygraph), named by a
hash of the sources, the flags, the compiler's version and what `-march=native` means on
this CPU (the compiler's own predefined macros for it), so that machines sharing a home
folder never load each other's vector code. It is built beside its final name and renamed,
so that processes building at once each see a whole library or none.

OpenMP only where it joins torch's own runtime: on Linux, when torch runs on OpenMP and a
libgomp is already loaded (the library's `libgomp.so.1` then resolves to that one, so the
process keeps one thread pool). Elsewhere (macOS, whose two LLVM OpenMP runtimes in one
process abort) the kernels are built single-threaded.
"""

from __future__ import annotations

import hashlib
import os
import platform
import shlex
import subprocess
import tempfile
from pathlib import Path

import torch

SOURCES = Path(__file__).resolve().parent
# vector code for this CPU; math that keeps inf and nan (no -ffast-math) but need not set errno or trap
FLAGS = ["-O3", "-march=native", "-fno-math-errno", "-fno-trapping-math", "-shared", "-fPIC"]


def built() -> Path:
    """The library's path, compiling it first if this machine has none yet. Raises OSError or
    subprocess.CalledProcessError (with the compiler's stderr) where that fails."""
    compiler = shlex.split(os.environ.get("CC", "cc"))
    flags = FLAGS + (["-fopenmp"] if _joins_torchs_openmp() else [])
    key = hashlib.sha256()
    for source in sorted(SOURCES.glob("*.[ch]")):
        key.update(source.read_bytes())
    for text in (
        " ".join(compiler + flags),
        _run([*compiler, "--version"]),
        _native_macros(compiler),
        platform.machine(),
    ):
        key.update(text.encode())
    target = cache_folder() / f"native-{key.hexdigest()[:16]}.so"
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
            partial = Path(tmp) / target.name
            _run([*compiler, *flags, *map(str, sorted(SOURCES.glob("*.c"))), "-o", str(partial)])
            os.replace(partial, target)
    return target


def cache_folder() -> Path:
    """Where built libraries are kept (the module docstring says which variables choose it)."""
    if os.environ.get("TINYGRAPH_CACHE"):
        return Path(os.environ["TINYGRAPH_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "tinygraph"


def failure(err: Exception) -> str:
    """The line of a failed build that says what went wrong (a compiler's first error)."""
    lines = [line.strip() for line in (getattr(err, "stderr", None) or "").splitlines() if line.strip()]
    return next((line for line in lines if "error" in line.lower()), lines[0] if lines else str(err))


def _run(command: list[str]) -> str:
    return subprocess.run(command, capture_output=True, text=True, check=True).stdout


def _native_macros(compiler: list[str]) -> str:
    # what -march=native turns on here (__AVX512F__, __ARM_FEATURE_SVE...), from the compiler itself
    return _run([*compiler, "-march=native", "-E", "-dM", "-x", "c", os.devnull])


def _joins_torchs_openmp() -> bool:
    if platform.system() != "Linux" or "ATen parallel backend: OpenMP" not in torch.__config__.parallel_info():
        return False
    try:
        with open("/proc/self/maps") as maps:
            return any("libgomp" in line for line in maps)
    except OSError:
        return False
