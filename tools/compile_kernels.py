"""Compile every Triton kernel of tinygraph.kernels for a GPU, without one.

    python tools/compile_kernels.py              # Hopper (sm_90: H100, H200), shakespeare_char's shapes
    python tools/compile_kernels.py --arch 80    # Ampere (A100)

The interpreter proves the kernels right on the CPU, but runs none of Triton's compiler:
this does. Each kernel function runs on "meta" tensors (shapes and dtypes, no memory),
so it takes its GPU blocks and launch settings, and every launch compiles the kernel down
to a cubin (Triton ships ptxas) instead of running it: a fake driver answers the launch's
questions about the device. It prints each kernel's shared memory and fails on a kernel
that does not compile or needs more shared memory than the GPU has.

Run it in a process where TRITON_INTERPRET is not set: triton decides at import.
"""

from __future__ import annotations

import argparse
import sys
import time

import torch
import triton
from triton.backends.compiler import GPUTarget
from triton.backends.nvidia.driver import CudaDriver
from triton.runtime.driver import driver
from triton.runtime.jit import KernelInterface

from tinygraph.kernels import attention, cross_entropy, gelu, layer_norm

SHARED_MEMORY = {80: 163 * 1024, 86: 99 * 1024, 89: 99 * 1024, 90: 227 * 1024}  # bytes a block may use
B, T, WIDTH, HEADS, VOCAB = 64, 256, 384, 6, 65  # shakespeare_char


class CompileOnly(CudaDriver):
    """A CUDA driver that knows its target and has no device: enough to compile."""

    def __init__(self, arch):
        self.target = GPUTarget("cuda", arch, 32)
        self.get_current_device = lambda: 0
        self.get_current_stream = lambda device=None: 0
        self.get_device_capability = lambda device=None: divmod(arch, 10)

    def get_current_target(self):
        return self.target

    def get_active_torch_device(self):
        return torch.device("meta")


def calls(dtype, quick):
    """Every kernel function once or more, on meta tensors of the model's shapes; with
    `quick`, attention only with a float mask and is_causal (both of its masking branches)."""
    meta = dict(device="meta", dtype=dtype)
    x, w = torch.empty(B, T, WIDTH, **meta), torch.empty(WIDTH, **meta)
    _, mean, rstd = layer_norm.layer_norm_forward(x, w, w)
    layer_norm.layer_norm_backward(x, x, mean, rstd, w)
    h, b = torch.empty(B, T, 4 * WIDTH, **meta), torch.empty(4 * WIDTH, **meta)
    for approximate in ("none", "tanh"):
        gelu.gelu_forward(h, approximate, bias=b)
        gelu.gelu_backward(h, h, approximate, bias=b)
    logits, target = torch.empty(B * T, VOCAB, **meta), torch.empty(B * T, dtype=torch.int64, device="meta")
    _, lse = cross_entropy.cross_entropy_forward(logits, target)
    cross_entropy.cross_entropy_backward(torch.empty((), **meta), logits, target, lse)
    q = torch.empty(B, T, HEADS, WIDTH // HEADS, **meta).transpose(1, 2)
    float_mask, bool_mask = torch.empty(T, T, **meta), torch.empty(T, T, dtype=torch.bool, device="meta")
    cases = [(float_mask, True)] if quick else [(None, True), (bool_mask, False), (float_mask, False)]
    for mask, is_causal in cases:
        out, lse = attention.attention_forward(q, q, q, mask, is_causal=is_causal)
        attention.attention_backward(out, q, q, q, out, lse, mask, is_causal=is_causal)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", type=int, default=90, choices=sorted(SHARED_MEMORY), help="compute capability x 10")
    parser.add_argument("--quick", action="store_true", help="attention in one configuration only (the tests')")
    args = parser.parse_args()
    compiled = []

    def compile_instead_of_launch(kernel, grid):
        def launch(*a, **kw):
            start = time.perf_counter()
            binary = kernel.run(*a, grid=grid, warmup=True, **kw)
            name = f"{kernel.fn.__module__.rsplit('.', 1)[-1]}.{kernel.fn.__name__}"
            compiled.append((name, binary, time.perf_counter() - start))

        return launch

    driver.set_active(CompileOnly(args.arch))
    KernelInterface.__getitem__ = compile_instead_of_launch
    too_big = []
    for dtype in (torch.float32, torch.bfloat16):
        compiled.clear()
        calls(dtype, args.quick)
        for name, kernel, seconds in compiled:
            shared = kernel.metadata.shared
            print(f"{str(dtype)[6:]:>8}  {name:<34} {shared / 1024:6.1f} KiB shared  {seconds:5.2f} s")
            if shared > SHARED_MEMORY[args.arch]:
                too_big.append(f"{name} ({dtype})")
    if too_big:
        sys.exit(
            f"compile_kernels: more shared memory than sm_{args.arch} has: {', '.join(too_big)}; use smaller blocks."
        )
    print(f"every kernel compiles for sm_{args.arch} with triton {triton.__version__}")


if __name__ == "__main__":
    main()
