#!/usr/bin/env bash
# The GPU checks, in one run of under 15 minutes on one CUDA GPU (Ampere or later):
#
#   bash tools/gpu_check.sh        # from anywhere; writes runs/bench/ and prints a short table
#
# 1. The tests that exercise the GPU paths: the Triton kernels compiled and run on CUDA
#    against their composites, the fused ops taking those kernels through the engine, every
#    fused op against its composite on cuda, and the compiled per-op formulas (at most 5 min).
# 2. tools/bench.py --config shakespeare_char: parity, then every GPU mode of both libraries
#    side by side (float32, bf16, the compiled fast path, CUDA graphs) with peak memory and
#    MFU (at most 9 min). Its markdown table is what docs/performance.md's GPU rows take.
# Each stage has its own time limit, so a stage that hangs still leaves the other's result.
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python)}

if ! $PYTHON -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "gpu_check: torch sees no CUDA device; run this on a machine with a GPU (and a CUDA build of torch)." >&2
  exit 2
fi
$PYTHON -c "import torch; print('device:', torch.cuda.get_device_name(), '| torch', torch.__version__)"
$PYTHON -c "import triton; print('triton', triton.__version__)" || echo "triton is missing: pip install triton (the kernel tests skip without it)"

start=$(date +%s)
timeout 300 $PYTHON -m pytest -q -p no:cacheprovider tests/test_triton_kernels.py tests/test_fused.py \
  tests/test_compiled.py -k "not compile_for_hopper" 2>&1 | tail -n 15
tests=${PIPESTATUS[0]}
echo "tests: exit $tests after $(($(date +%s) - start)) s"

start=$(date +%s)
timeout 540 $PYTHON tools/bench.py --config shakespeare_char --steps 20 --warmup 5 | tee /tmp/gpu_check_bench.txt
bench=${PIPESTATUS[0]}
echo "bench: exit $bench after $(($(date +%s) - start)) s"

echo
echo "== summary =="
echo "tests (kernels, fused ops, compiled formulas on CUDA): $([ "$tests" -eq 0 ] && echo passed || echo "FAILED (exit $tests)")"
grep -E "^\| (side|tinygraph|torch)" /tmp/gpu_check_bench.txt || echo "bench: no table (exit $bench)"
[ "$tests" -eq 0 ] && [ "$bench" -eq 0 ]
