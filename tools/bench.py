"""tinygraph against torch.autograd on the same model, in one process: parity first, then speed.

    python tools/bench.py --config baby                  # CPU: eager and the compiled fast path
    python tools/bench.py --config shakespeare_char      # GPU: adds bf16 and CUDA-graph rows
    python tools/bench.py --config lstm                  # also against torch.nn.LSTM, for information
    python tools/bench.py --config my_model.toml         # any config whose layers have torch twins
    python tools/bench.py --generate --config shakespeare_char   # generation: the cache against recomputing

1. Parity: the preset is built twice, with tinygraph and as a torch.nn twin (tools/
   torch_twin.py) holding the same weights; one training step's loss and every
   parameter's grad must agree (float64: relative error under 1e-9, float32: 1e-4). A
   failed check is reported and no speed is measured. Dropout is off for this check
   only (the two libraries draw different random masks).
2. Speed: full training steps (forward, backward, AdamW, zero grad) of both, interleaved
   A B A B after warm-up, the median of each; tokens per second; the ratio
   tinygraph/torch; peak memory (CUDA: max allocated; CPU: the peak resident set of a
   separate process per side); MFU on GPU.
3. With --generate, generation instead (`generation_bench` below): tokens per second of
   tinygraph's generate with its caches and recomputing the context, and of nanoGPT's
   generate (which recomputes it) on the torch twin.
Writes a JSON record and a markdown table to runs/bench/.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import resource
import statistics
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import torch
from torch_twin import TwinModel, matching_parameters  # beside this file: a script's folder is on its path

import tinygraph as tg
from tinygraph import heap
from transformer import generation
from transformer.config import load
from transformer.model import LanguageModel

TOOLS = Path(__file__).resolve().parent

# Both sides, and every process measuring one, on the same heap settings: glibc's own left
# one process's steps faulting in fresh pages and another's not (tinygraph/heap.py), a
# difference of up to a fifth of a step between two runs of the same code.
heap.keep_freed_memory()

VOCAB = 65
PEAK_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12}  # dense bf16 tensor-core peaks


def build(config_name: str, device: str, dtype: torch.dtype, dropout: float | None = None, seed: int = 0):
    config = load(config_name)
    if dropout is not None:
        config["model"]["dropout"] = dropout
        for layer in config["layers"]:
            layer.pop("dropout", None)
            layer.pop("p", None)
    torch.manual_seed(seed)
    model = LanguageModel(config, VOCAB).to(dtype).to(device)
    return model, config


def batch(config: dict, device: str, seed: int = 1):
    gen = torch.Generator().manual_seed(seed)
    B, T = config["train"]["batch_size"], config["model"]["block_size"]
    x = torch.randint(0, VOCAB, (B, T), generator=gen)
    y = torch.randint(0, VOCAB, (B, T), generator=gen)
    return x.to(device), y.to(device)


# ---- parity ------------------------------------------------------------------------------------
def parity(config_name: str, device: str, dtype: torch.dtype) -> dict:
    model, config = build(config_name, device, dtype, dropout=0.0)
    twin = TwinModel(model)
    x, y = batch(config, device)
    _, loss = model(tg.Tensor(x), tg.Tensor(y))
    loss.backward()
    _, loss_t = twin(x, y)
    loss_t.backward()
    worst, where = 0.0, ""
    for name, ours, theirs in matching_parameters(model, twin):
        err = ((ours.grad.data - theirs.grad).norm() / theirs.grad.norm().clamp_min(1e-30)).item()
        if err > worst:
            worst, where = err, name
    loss_err = abs(loss.item() - loss_t.item()) / abs(loss_t.item())
    limit = 1e-9 if dtype == torch.float64 else 1e-4
    return {"dtype": str(dtype).removeprefix("torch."), "loss": loss.item(), "torch_loss": loss_t.item(), "loss_rel_err": loss_err,
            "worst_grad_rel_err": worst, "worst_grad": where, "limit": limit, "ok": max(worst, loss_err) < limit}  # fmt: skip


# ---- steps -------------------------------------------------------------------------------------
def tinygraph_step(model, opt, dtype, x, y):
    with tg.autocast(
        x.device.type, dtype=dtype, enabled=dtype is not None
    ):  # made inside: a compiled step can enter it
        _, loss = model(tg.Tensor(x), tg.Tensor(y))
    loss.backward()
    opt.step()
    opt.zero_grad()
    return loss.data


def torch_step(twin, opt, dtype, x, y):
    with torch.autocast(x.device.type, dtype or torch.bfloat16, enabled=dtype is not None):
        _, loss = twin(x, y)
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    return loss.detach()


class Side:
    """One side of the comparison: its own model, optimizer and batch; calling it runs one step.

    The mode names the library and how it runs: "tinygraph" and "torch" (float32 eager),
    "... bf16" (bfloat16 mixed precision), "... compiled" (torch.compile of the whole
    step; on GPU in bf16 with CUDA graphs: tinygraph's fast path), "... CUDA graph" (the
    eager bf16 step captured in a CUDA graph, GPU only), "torch.nn.LSTM" (information).
    """

    def __init__(self, config_name: str, device: str, mode: str):
        model, config = build(config_name, device, torch.float32)
        self.x, self.y = batch(config, device)
        lr, wd = config["train"]["lr"], config["train"]["weight_decay"]
        betas = (config["train"]["beta1"], config["train"]["beta2"])
        cuda = device.startswith("cuda")
        fast = "compiled" in mode or "CUDA graph" in mode
        bf16 = "bf16" in mode or (cuda and fast)
        if mode.startswith("tinygraph"):
            self.model, step = model, tinygraph_step
            self.opt = tg.optim.AdamW(model.optimizer_groups(wd), lr=lr, betas=betas)
        else:
            self.model, step = TwinModel(model, use_torch_lstm=mode == "torch.nn.LSTM"), torch_step
            self.opt = torch.optim.AdamW(
                self.model.optimizer_groups(wd), lr=lr, betas=betas, foreach=True, capturable=cuda and fast
            )
        if "compiled" in mode:
            step = torch.compile(step, mode="reduce-overhead" if cuda else None)
        self.dtype = torch.bfloat16 if bf16 else None
        self.step = lambda: step(self.model, self.opt, self.dtype, self.x, self.y)
        if "CUDA graph" in mode:
            self.step = cuda_graph(self.step)

    def __call__(self) -> torch.Tensor:
        return self.step()


def cuda_graph(step):
    """Capture one whole training step in a CUDA graph (after warm-up on a side stream, as
    torch's docs describe); replaying it reruns every kernel with no Python at all."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):
            step()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        loss = step()

    def replay() -> torch.Tensor:
        graph.replay()
        return loss

    return replay


def make_sides(config_name: str, device: str, modes: list[str]) -> dict[str, Side]:
    return {mode: Side(config_name, device, mode) for mode in modes}


def default_modes(config_name: str, device: str) -> list[str]:
    kinds = {table["type"] for table in load(config_name)["layers"]}
    if kinds & {"RNN", "LSTM", "GRU"}:  # an unrolled recurrence takes minutes to compile: eager only
        return ["tinygraph", "torch"] + (["torch.nn.LSTM"] if "LSTM" in kinds else [])
    modes = ["tinygraph", "torch", "tinygraph compiled", "torch compiled"]
    if device.startswith("cuda"):
        modes[2:2] = ["tinygraph bf16", "torch bf16"]
        modes += ["tinygraph CUDA graph", "torch CUDA graph"]
    return modes


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_interleaved(sides: dict, device: str, steps: int, warmup: int) -> tuple[dict, dict]:
    """Each side's step times (ms) and minor page faults, one list per side."""
    times: dict[str, list[float]] = {name: [] for name in sides}
    faults: dict[str, list[int]] = {name: [] for name in sides}
    for i in range(warmup + steps):
        for name, step in sides.items():
            sync(device)
            before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            start = time.perf_counter()
            step()
            sync(device)
            if i >= warmup:
                times[name].append((time.perf_counter() - start) * 1000)
                faults[name].append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    return times, faults


def peak_memory(config_name: str, device: str, mode: str, steps: int) -> float:
    """MB: the peak resident set (CPU) or max allocated (CUDA) of a fresh process that builds
    one side and runs `steps` training steps (0: it only builds it: the floor to subtract).
    The floor leaves out optimizer state that exists before the first step (tinygraph's
    Adam makes its moments when built, torch's in the first step): training counts it."""
    code = (
        f"import torch; from bench import Side, sync, peak_rss_mb, state_mb; "
        f"step = Side({config_name!r}, {device!r}, {mode!r}); [step() for _ in range({steps})]; sync({device!r}); "
        f"peak = torch.cuda.max_memory_allocated() / 2**20 if {device!r}.startswith('cuda') else peak_rss_mb(); "
        f"print(peak - (state_mb(step.opt) if {steps} == 0 else 0))"
    )
    # `python -c` looks for modules in its working directory first: this one's folder
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=TOOLS)
    if out.returncode:
        raise RuntimeError(f"the memory run of {mode} failed:\n{out.stderr[-2000:]}")
    return float(out.stdout.strip().splitlines()[-1])


def state_mb(opt) -> float:
    """MB of the tensors an optimizer holds as state."""
    return sum(v.nbytes for s in opt.state.values() for v in s.values() if isinstance(v, torch.Tensor)) / 2**20


def peak_rss_mb() -> float:
    """This process's peak resident set. Linux's VmHWM, not ru_maxrss: a child's ru_maxrss
    starts from its parent's, since Linux keeps it across exec."""
    with contextlib.suppress(OSError, StopIteration):
        line = next(line for line in open("/proc/self/status") if line.startswith("VmHWM:"))
        return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def flops_per_token(model: LanguageModel, config: dict) -> float:
    n = sum(p.numel() for name, p in model.named_parameters() if not name.startswith("layers.1."))  # without positions
    blocks = sum(layer.get("repeat", 1) for layer in config["layers"] if layer["type"] == "Block")
    width = config["layers"][0]["dim"]
    return 6 * n + 12 * blocks * width * config["model"]["block_size"]


def machine(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name()
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    threads = torch.get_num_threads()
    return f"{cpu}, {threads} thread{'s' if threads > 1 else ''}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--config",
        default="baby",
        help="a preset (baby, shakespeare_char, lstm, rnn, seed) or a TOML file (default: baby)",
    )
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--steps", type=int, default=20, help="timed steps per side (default: 20)")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps first (default: 5)")
    p.add_argument("--modes", default=None, help="comma-separated sides (default: all that apply)")
    p.add_argument("--no-memory", action="store_true", help="skip the per-process peak memory runs")
    p.add_argument("--generate", action="store_true", help="time generation instead of training steps")
    p.add_argument("--new-tokens", type=int, default=500, help="tokens each side generates (default: 500)")
    args = p.parse_args(argv)
    if args.generate:
        return generation_bench(args.config, args.device, args.new_tokens, argv)
    device = args.device

    print(f"Parity of {args.config} on {device} (dropout off):")
    # in full float32: TF32 rounds products to 10 bits, differently in different kernels
    checks = [parity(args.config, device, dtype) for dtype in (torch.float64, torch.float32)]
    if device.startswith("cuda"):  # float32 matrix products in TF32 on both sides, as NUMBERS.md measured
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    for c in checks:
        print(f"  {c['dtype']}: loss {c['loss']:.6f} vs {c['torch_loss']:.6f}, worst grad relative error "
              f"{c['worst_grad_rel_err']:.2e} ({c['worst_grad']}), limit {c['limit']:.0e}: {'ok' if c['ok'] else 'FAILED'}")  # fmt: skip
    record = {"config": args.config, "device": device, "machine": machine(device), "torch": torch.__version__,
              "date": datetime.now().isoformat(timespec="seconds"), "parity": checks,
              "command": "python tools/bench.py " + " ".join(argv if argv is not None else sys.argv[1:])}  # fmt: skip
    out_dir = Path("runs") / "bench"
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"{Path(args.config).stem}-{device.replace(':', '')}-{datetime.now():%Y%m%d-%H%M%S}"
    if not all(c["ok"] for c in checks):
        print("Parity failed: no speed is reported.")
        (out_dir / f"{stem}.json").write_text(json.dumps(record, indent=2))
        return 1

    modes = args.modes.split(",") if args.modes else default_modes(args.config, device)
    model, config = build(args.config, device, torch.float32)
    tokens = config["train"]["batch_size"] * config["model"]["block_size"]
    times, faults = time_interleaved(make_sides(args.config, device, modes), device, args.steps, args.warmup)
    rows = []
    for mode in modes:
        ms = statistics.median(times[mode])
        row = {"mode": mode, "ms_per_step": ms, "tokens_per_s": tokens / ms * 1000,
               "page_faults_per_step": statistics.mean(faults[mode])}  # fmt: skip
        if not args.no_memory:  # what training adds to the built model, each side in a process of its own
            row["peak_mb"] = peak_memory(args.config, device, mode, args.warmup + 3)
            row["training_mb"] = row["peak_mb"] - peak_memory(args.config, device, mode, 0)
        if device.startswith("cuda"):
            peak = next((v for k, v in PEAK_FLOPS.items() if k in machine(device)), None)
            row["mfu"] = flops_per_token(model, config) * row["tokens_per_s"] / peak if peak else None
        rows.append(row)
    reference = {r["mode"]: r for r in rows}
    best_torch = min((r["ms_per_step"] for r in rows if r["mode"].startswith("torch")), default=None)
    for row in rows:
        peer = reference.get(row["mode"].replace("tinygraph", "torch", 1))  # the same mode, run by torch
        if row["mode"].startswith("tinygraph") and best_torch:
            row["vs_best_torch"] = row["ms_per_step"] / best_torch
        if row["mode"].startswith("tinygraph") and peer:
            row["ratio"] = row["ms_per_step"] / peer["ms_per_step"]
            if "training_mb" in row:
                row["memory_ratio"] = row["training_mb"] / max(1e-9, peer["training_mb"])
    record.update(rows=rows, tokens_per_step=tokens, steps=args.steps, warmup=args.warmup)
    table = markdown(record)
    print("\n" + table)
    (out_dir / f"{stem}.json").write_text(json.dumps(record, indent=2))
    (out_dir / f"{stem}.md").write_text(table + "\n")
    print(f"\nWrote {out_dir / stem}.json and .md")
    return 0


def markdown(record: dict) -> str:
    lines = [
        f"`{record['command']}` on {record['machine']} (torch {record['torch']}, {record['date']}); "
        f"{record['tokens_per_step']} tokens per step, median of {record['steps']} interleaved steps.",
        "",
        "| side | ms per step | tokens/s | tinygraph / torch, same mode | / best torch mode | peak memory (MB) "
        "| of which training | memory ratio | page faults per step |"
        + (" MFU |" if "cuda" in record["device"] else ""),
        "|---|---|---|---|---|---|---|---|---|" + ("---|" if "cuda" in record["device"] else ""),
    ]
    for r in record["rows"]:
        ratio = f"{r['ratio']:.2f}x" if "ratio" in r else ""
        ratio += f" | {r['vs_best_torch']:.2f}x" if "vs_best_torch" in r else " | "
        mem = f"{r['peak_mb']:.0f} | {r['training_mb']:.0f}" if "peak_mb" in r else " | "
        mem_ratio = f"{r['memory_ratio']:.2f}x" if "memory_ratio" in r else ""
        mfu = f" {r['mfu']:.1%} |" if r.get("mfu") is not None else (" |" if "cuda" in record["device"] else "")
        lines.append(
            f"| {r['mode']} | {r['ms_per_step']:.1f} | {r['tokens_per_s']:,.0f} | {ratio} | {mem} | {mem_ratio} "
            f"| {r['page_faults_per_step']:,.0f} |{mfu}"
        )
    lines.append(
        "\nPeak memory: "
        + ("max allocated" if "cuda" in record["device"] else "the peak resident set")
        + " of a separate process per side; 'of which training' subtracts the same process built but not"
        " stepped (less any optimizer state it holds already); the memory ratio compares those. Page faults:"
        " the minor faults of the timed steps (memory the kernel had to hand over), a mean per step."
    )
    return "\n".join(lines)


# ---- generation --------------------------------------------------------------------------------
def nanogpt_tokens(twin, idx, max_new_tokens, temperature, block_size, generator):
    """nanoGPT's `generate`, run on the torch twin, a token at a time: every token recomputes
    the whole context (its last block_size tokens) and samples from the last position."""
    for _ in range(max_new_tokens):
        logits, _ = twin(idx[:, -block_size:])
        probs = torch.softmax(logits[:, -1] / temperature, dim=-1)
        token = torch.multinomial(probs, 1, generator=generator)
        idx = torch.cat([idx, token], 1)
        yield token[:, 0]


def generation_bench(config_name: str, device: str, new_tokens: int, argv: list[str] | None) -> int:
    """Tokens per second of one sequence of `new_tokens` generated from one token: by
    tinygraph with its caches (each token runs the model on one position), by tinygraph
    recomputing its window for every token, and by nanoGPT's generate on the torch twin with
    the same weights. The three are interleaved token by token after a short warm-up, so
    they share the machine's load alike. The cached and the recomputed text must be the
    same (same seed): a difference fails the run."""
    model, config = build(config_name, device, torch.float32)
    block_size, temperature = config["model"]["block_size"], 0.8
    twin = TwinModel(model).eval()
    prompt = torch.zeros((1, 1), dtype=torch.long, device=device)

    def sides(n: int, seed: int) -> dict:  # tinygraph samples on the CPU, from a CPU generator
        return {
            "tinygraph, cached": generation.tokens(
                model, prompt, n, generation.Sampling(temperature), torch.Generator().manual_seed(seed)
            ),
            "tinygraph, recomputed": generation.tokens(
                model, prompt, n, generation.Sampling(temperature), torch.Generator().manual_seed(seed), use_cache=False
            ),
            "nanoGPT generate (torch)": nanogpt_tokens(
                twin, prompt, n, temperature, block_size, torch.Generator(device).manual_seed(seed)
            ),
        }

    with torch.no_grad():
        for side in sides(8, 0).values():  # warm-up
            list(side)
        running = sides(new_tokens, 1)
        seconds, made = dict.fromkeys(running, 0.0), {name: [] for name in running}
        for _ in range(new_tokens):
            for name, side in running.items():
                sync(device)
                start = time.perf_counter()
                made[name].append(next(side))
                sync(device)
                seconds[name] += time.perf_counter() - start
    rows = [{"side": name, "seconds": s, "tokens_per_s": new_tokens / s} for name, s in seconds.items()]
    for row in rows[1:]:
        row["cache_speedup"] = rows[0]["tokens_per_s"] / row["tokens_per_s"]
    same = torch.equal(torch.stack(made["tinygraph, cached"]), torch.stack(made["tinygraph, recomputed"]))
    record = {"config": config_name, "device": device, "machine": machine(device), "torch": torch.__version__,
              "date": datetime.now().isoformat(timespec="seconds"), "new_tokens": new_tokens,
              "block_size": block_size, "parameters": model.num_parameters(), "cached_equals_recomputed": same,
              "rows": rows, "command": "python tools/bench.py " + " ".join(argv if argv is not None else sys.argv[1:])}  # fmt: skip
    table = generation_markdown(record)
    print("\n" + table)
    out_dir = Path("runs") / "bench"
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"generate-{Path(config_name).stem}-{device.replace(':', '')}-{datetime.now():%Y%m%d-%H%M%S}"
    (out_dir / f"{stem}.json").write_text(json.dumps(record, indent=2))
    (out_dir / f"{stem}.md").write_text(table + "\n")
    print(f"\nWrote {out_dir / stem}.json and .md")
    return 0 if same else 1


def generation_markdown(record: dict) -> str:
    lines = [
        f"`{record['command']}` on {record['machine']} (torch {record['torch']}, {record['date']}): "
        f"{record['parameters'] / 1e6:.2f}M parameters, context {record['block_size']}, one sequence of "
        f"{record['new_tokens']} new tokens from one token, temperature 0.8, the sides interleaved token by token.",
        "",
        "| side | seconds | tokens/s | the cache's speed-up over it |",
        "|---|---|---|---|",
    ]
    for r in record["rows"]:
        speedup = f"{r['cache_speedup']:.1f}x" if "cache_speedup" in r else ""
        lines.append(f"| {r['side']} | {r['seconds']:.2f} | {r['tokens_per_s']:,.1f} | {speedup} |")
    same = "the same text" if record["cached_equals_recomputed"] else "DIFFERENT texts (a bug)"
    lines.append(f"\nParity: cached and recomputed generation made {same} from the same seed.")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
