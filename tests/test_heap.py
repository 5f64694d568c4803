"""tinygraph.heap: a training process keeps the memory its steps free."""

import platform
import subprocess
import sys

import pytest

# sizes of 1 to 8 MB, each allocated, written and freed, three sweeps in a fresh process; the
# first two settle the heap (small blocks made on the way can split a freed one), and what
# the third faults in is memory the heap had given back
REUSE = """
import resource, torch
from tinygraph import heap
kept = heap.keep_freed_memory()
faults = 0
for sweep in range(3):
    for mb in range(1, 9):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        torch.empty(mb * 2**18).fill_(1.0)  # freed at once
        faults += (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) * (sweep == 2)
print(kept, faults)
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the settings are glibc's")
def test_a_process_that_keeps_freed_memory_reuses_it_without_page_faults():
    out = subprocess.run([sys.executable, "-c", REUSE], capture_output=True, text=True, check=True)
    kept, faults = out.stdout.split()
    assert kept == "True"
    assert int(faults) < 100  # (of 9,216 pages written in the sweep)


def test_elsewhere_keep_freed_memory_says_it_could_not(monkeypatch):
    from tinygraph import heap

    def no_c_library(_):
        raise OSError("no C library to load")

    heap.keep_freed_memory.cache_clear()
    monkeypatch.setattr(heap.ctypes, "CDLL", no_c_library)
    try:
        assert heap.keep_freed_memory() is False
    finally:
        heap.keep_freed_memory.cache_clear()
