"""tinygraph.heap: a training process keeps the memory its steps free."""

import platform
import subprocess
import sys

import pytest

# sizes of 1 to 8 MB, each allocated, written and freed twice, in a fresh process; what the
# second rounds fault in is memory the first had given back
REUSE = """
import resource, sys, torch
from tinygraph import heap
kept = heap.keep_freed_memory() if sys.argv[1] == "keep" else None
faults = 0
for mb in range(1, 9):
    for round in range(2):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        torch.empty(mb * 2**18).fill_(1.0)  # freed at once
        faults += (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) * round
print(kept, faults)
"""


def reuse(mode: str) -> tuple[str, int]:
    out = subprocess.run([sys.executable, "-c", REUSE, mode], capture_output=True, text=True, check=True)
    kept, faults = out.stdout.split()
    return kept, int(faults)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the settings are glibc's")
def test_a_process_that_keeps_freed_memory_reuses_it_without_page_faults():
    kept, faults = reuse("keep")
    assert kept == "True"
    assert faults < 100  # (against 9,216 pages in the second rounds: a few for the allocator's own pages)
    _, default_faults = reuse("default")
    assert default_faults > faults  # what glibc's defaults do: not asserted further, only that keeping helps


def test_elsewhere_keep_freed_memory_says_it_could_not(monkeypatch):
    from tinygraph import heap

    def no_mallopt(_):
        raise OSError("no C library to load")

    heap.keep_freed_memory.cache_clear()
    monkeypatch.setattr(heap.ctypes, "CDLL", no_mallopt)
    try:
        assert heap.keep_freed_memory() is False
    finally:
        heap.keep_freed_memory.cache_clear()
