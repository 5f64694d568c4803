"""The rule "bad input is one clear line and exit 2; nothing saved is lost", searched for
counterexamples with generated input rather than checked on remembered cases: command
lines of train, test and sample (every flag, valid, boundary and absurd values), configs of
any TOML shape, and run directories damaged file by file. Each runs in this process on a
tiny corpus with a budget of one step. tests/test_bad_input.py keeps one named test per
kind of failure these found.

The drawn values stay cheap: sizes (--max-new-tokens and --sample-chars too) are small or
far beyond any machine (never in between, where a run would really fill the memory or take
hours), and the budgets (--max-iters, --eval-iters, --num-samples) are drawn small, zero,
negative or not numbers at all. --compile
is left out (compiling takes a minute; tests/test_fast_path.py trains with it)."""

import contextlib
import json
import math
import shutil
from pathlib import Path

import pytest
from cli_runs import as_another_user, assert_clean, files_of, run, shared_folder, trained_run
from hypothesis import given, settings
from hypothesis import strategies as st

from transformer.layers import LAYERS
from transformer.settings import ModelSettings, RunSettings, SampleSettings, TrainSettings, flag, options

BUDGET = ["--max-iters", "1", "--eval-iters", "1", "--sample-chars", "4", "--no-progress"]  # cheap unless overridden


@pytest.fixture(scope="module")
def world():
    """A folder another user can enter, holding a tiny trained run and the files flags name."""
    with shared_folder() as folder:
        trained_run(folder, "run")
        trained_run(folder, "other", "--tokenizer", "word")  # another model and vocabulary, to swap files with
        (folder / "empty.txt").write_text("")
        (folder / "binary.bin").write_bytes(bytes(range(256)) * 4)
        (folder / "short.txt").write_text("too short")
        (folder / "adir").mkdir()
        (folder / "full").mkdir()
        (folder / "full" / "mine.txt").write_text("keep me")
        (folder / "work").mkdir()
        yield folder


# ---- values ------------------------------------------------------------------------------------
SIZE = ["1", "2", "3", "0", "-1", str(2**62), str(10**30)]  # small, boundary, beyond any machine
BUDGET_INT = ["0", "1", "2", "-1"]  # a budget: never large, so that a run stays short
BAD = ["", "x", "1.5", "nan", "inf", "-inf", "1e400", "0x10", " "]  # not numbers, or not finite ones
NUMBER = ["0.5", "1e-3", "0", "-1", "1", "0.999", "1e-300", "1e300"]
BUDGET_NAMES = {"max_iters", "eval_iters", "num_samples"}  # (a huge one is a long run, not a mistake)
LEFT_OUT = {"compile"}  # (see the module's docstring)


def paths(world: Path) -> dict[str, list[str]]:
    """What each flag that names a file or directory is given."""
    run, missing = str(world / "run"), str(world / "no" / "such")
    corpora = [str(world / n) for n in ("corpus.txt", "empty.txt", "binary.bin", "short.txt", "adir")]
    return {
        "corpus": [*corpora, missing, ""],
        "config": [str(world / "tiny.toml"), missing, str(world / "binary.bin"), str(world / "adir"), ""],
        "out_dir": [str(world / "work" / "new"), str(world / "full"), str(world / "corpus.txt"), "/proc/x", ""],
        "resume": ["RESUMABLE", missing, str(world / "full"), ""],
        "init_from": [run, missing, str(world / "full"), ""],
        "run_dir": [run, missing, str(world / "full"), str(world / "corpus.txt"), ""],
        "seed_text": ["the ", "€", "", "\n", "x" * 40],
        "seed_file": [str(world / "corpus.txt"), str(world / "binary.bin"), missing, str(world / "adir"), ""],
        "device": ["cpu", "auto", "tpu", "cuda:99", "mps", ""],
        "preset": ["baby", "nope", ""],
    }


def values_of(name: str, opt, world: Path) -> st.SearchStrategy:
    """The values a flag is drawn from: valid, boundary and absurd; None: the flag alone (a switch)."""
    named = paths(world)
    if name in named:
        return st.sampled_from(named[name])
    if opt.type is bool:
        return st.sampled_from([None, "--no"]) if opt.default is True else st.just(None)
    choices = getattr(opt.type, "__args__", ())
    if choices and all(isinstance(c, str) for c in choices):  # a Literal
        return st.sampled_from([*choices, "bogus", ""])
    if name in BUDGET_NAMES:
        return st.sampled_from(BUDGET_INT + BAD)
    if name == "temperature":  # (a tiny positive one is issue 14's: sampling must become greedy there)
        return st.sampled_from(["0.8", "1", "0", "-1", "1e300", *BAD])
    if int in getattr(opt.type, "__args__", (opt.type,)):
        return st.sampled_from(SIZE + BAD + ["-" + str(2**63 + 1)])
    return st.sampled_from(NUMBER + BAD)


@st.composite
def command_lines(draw, world: Path):
    """A command (train, test or sample) and some of its flags, each with a drawn value."""
    command = draw(st.sampled_from(["train", "test", "sample"]))
    if command == "train":
        known = {**options(RunSettings), **options(ModelSettings), **options(TrainSettings)}
    else:
        known = {**options(SampleSettings), "run_dir": None, **({"corpus": None} if command == "test" else {})}
    names = draw(st.lists(st.sampled_from(sorted(set(known) - LEFT_OUT)), max_size=4, unique=True))
    if command != "train" and "run_dir" not in names and draw(st.booleans()):
        names.append("run_dir")  # (--from is required: mostly given)
    argv = []
    for name in names:
        value = draw(values_of(name, known[name], world))
        option = "--from" if name == "run_dir" else flag(name)
        if value == "--no":
            argv.append("--no-" + option[2:])
        else:
            argv += [option] if value is None else [option, value]
    if command == "train":  # the tiny model and corpus, unless the drawn flags choose others
        model = (
            [] if {"preset", "config", "resume", "init_from"} & set(names) else ["--config", str(world / "tiny.toml")]
        )
        corpus = [] if "corpus" in names else ["--corpus", str(world / "corpus.txt")]
        argv = [*BUDGET, *model, *corpus, *argv]
    return command, argv


def check_clean_and_nothing_lost(world: Path, command: str, argv: list[str]) -> None:
    """Run a command line in `world`/work: exit 0, or exit 2 and one line; a training start
    that failed before its first checkpoint leaves no directory; the trained run, the files
    and other folders stay as they were."""
    with contextlib.ExitStack() as stack:
        work = world / "work"
        if "RESUMABLE" in argv:  # a copy of the trained run, resumed
            copy = Path(stack.enter_context(shared_copy(world / "run")))
            argv = [str(copy) if a == "RESUMABLE" else a for a in argv]
        before = {name: files_of(world / name) for name in ("run", "full")}
        folders = sorted(p for p in work.rglob("*") if p.is_dir())
        with contextlib.chdir(work):  # (where runs/ and data/ are)
            code, _, err = run(command, argv)
        assert_clean(code, err)
        assert {name: files_of(world / name) for name in ("run", "full")} == before
        if code != 0:  # no directory made by a start that failed (one that saved a checkpoint is a run, resumable)
            made = [p for p in work.rglob("*") if p.is_dir() and p not in folders]
            assert all(any(q.name == "checkpoint.safetensors" for q in p.rglob("*")) for p in made), argv
        shutil.rmtree(work)
        work.mkdir()
        work.chmod(0o755)


@contextlib.contextmanager
def shared_copy(run_dir: Path):
    copy = run_dir.with_name(run_dir.name + "-copy")
    shutil.copytree(run_dir, copy)
    try:
        yield copy
    finally:
        shutil.rmtree(copy)


def test_any_command_line_ends_cleanly(world):
    @given(command_lines(world))
    @settings(max_examples=2 * settings().max_examples)  # (the widest space of the three)
    def check(drawn):
        check_clean_and_nothing_lost(world, *drawn)

    check()


# ---- configs of any TOML shape -----------------------------------------------------------------
scalars = st.one_of(
    st.sampled_from([0, 1, 2, 3, 8, -1, 2**62, 10**30, -(2**63) - 1]),  # (TOML has no integer beyond 64 bits)
    st.sampled_from([0.5, 0.0, -1.0, 1.5, math.nan, math.inf, -math.inf, 1e-300]),
    st.booleans(),
    st.sampled_from(["", "vocab", "x", "Block", "Embedding", "my.py:Layer", "json:loads", ":", "a" * 30]),
    st.sampled_from(["1979-05-27", "07:32:00", "1979-05-27T07:32:00Z"]).map(lambda s: ("date", s)),
)


def arrays_and_tables(inner: st.SearchStrategy, keys: st.SearchStrategy) -> st.SearchStrategy:
    return st.lists(inner, max_size=3) | st.dictionaries(keys, inner, max_size=3)


def toml_arrays_and_tables(inner: st.SearchStrategy) -> st.SearchStrategy:
    return arrays_and_tables(inner, st.sampled_from("abc"))


def json_arrays_and_tables(inner: st.SearchStrategy) -> st.SearchStrategy:
    return arrays_and_tables(inner, st.text(max_size=8))


shapes = st.recursive(scalars, toml_arrays_and_tables, max_leaves=5)
toml_values = st.one_of(scalars, scalars, scalars, shapes)  # mostly a value in place of a value, sometimes a shape
LAYER_KEYS = ["dim", "heads", "hidden", "out", "p", "repeat", "tied", "bias", "dropout", "type", "block_size", "x"]
PARTS = ["setting"] * 3 + ["layer key"] * 3 + ["add layer"] * 2 + ["drop layer", "section", "layers"]


@st.composite
def toml_configs(draw):
    """A tiny config, then one to three of its parts replaced: mostly a setting or a layer's
    option by any value, or a layer added or dropped; sometimes a section, or the layers, by
    a value of any shape."""
    config = {"model": {"block_size": 16}, "train": {"batch_size": 4}, "layers": [
        {"type": "Embedding", "dim": 8}, {"type": "PositionalEmbedding"}, {"type": "Block", "heads": 2},
        {"type": "LayerNorm"}, {"type": "TemporalDense", "out": "vocab", "tied": True}, {"type": "CrossEntropyLoss"},
    ]}  # fmt: skip
    for _ in range(draw(st.integers(1, 3))):
        part = draw(st.sampled_from(PARTS))
        layers = config["layers"] if isinstance(config["layers"], list) else None
        if part == "section":
            config[draw(st.sampled_from(["model", "train", "extra"]))] = draw(shapes)
        elif part == "setting" and isinstance(config.get("model"), dict) and isinstance(config.get("train"), dict):
            section = draw(st.sampled_from(["model", "train"]))
            names = [*options(ModelSettings if section == "model" else TrainSettings), "x"]
            config[section][draw(st.sampled_from(sorted(set(names) - BUDGET_NAMES)))] = draw(toml_values)
        elif part == "layer key" and layers and isinstance(layers[i := draw(st.integers(0, len(layers) - 1))], dict):
            layers[i][draw(st.sampled_from(LAYER_KEYS))] = draw(toml_values)
        elif part == "drop layer" and layers:
            del layers[draw(st.integers(0, len(layers) - 1))]
        elif part == "add layer" and layers is not None:
            kind = draw(st.sampled_from(sorted(LAYERS)))
            options_of = draw(st.dictionaries(st.sampled_from(LAYER_KEYS[:-3]), toml_values, max_size=2))
            layers.insert(draw(st.integers(0, len(layers))), {"type": kind, **options_of})
        elif part == "layers":
            config["layers"] = draw(shapes)
    return to_toml(config)


def to_toml(config: dict) -> str:
    """TOML text: each table as a [section] (an array of tables as [[layers]]), anything else inline."""
    top = [f"{key(k)} = {inline(v)}" for k, v in config.items() if not _table(v) and not _tables(v)]
    lines = [*top, ""]
    for k, v in config.items():
        if _table(v):
            lines += [f"[{key(k)}]", *(f"{key(a)} = {inline(b)}" for a, b in v.items()), ""]
        elif _tables(v):
            for table in v:
                lines += [f"[[{key(k)}]]", *(f"{key(a)} = {inline(b)}" for a, b in table.items()), ""]
    return "\n".join(lines)


def _table(v):
    return isinstance(v, dict)


def _tables(v):
    return isinstance(v, list) and v and all(isinstance(t, dict) for t in v)


def key(k: str) -> str:
    return json.dumps(k)


def inline(v) -> str:
    if isinstance(v, tuple):  # ("date", text): a TOML date or time, written bare
        return v[1]
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf") if math.isinf(v) else repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(map(inline, v)) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{key(a)} = {inline(b)}" for a, b in v.items()) + "}"
    return str(v)


def test_any_config_ends_cleanly(world):
    @given(toml_configs())
    def check(text):
        if any(str(n) in text for n in (10**30, -(2**63) - 1)):
            text = text.replace(str(10**30), str(2**63 - 1)).replace(str(-(2**63) - 1), str(-(2**63)))
        (world / "drawn.toml").write_text(text)
        check_clean_and_nothing_lost(world, "train", [*BUDGET, "--config", str(world / "drawn.toml"), "--corpus",
                                                      str(world / "corpus.txt"), "--device", "cpu"])  # fmt: skip

    check()


# ---- run directories damaged file by file ------------------------------------------------------
RUN_FILES = ["config.json", "tokenizer.json", "checkpoint.safetensors", "best.safetensors", "metrics.jsonl",
             "samples.txt"]  # fmt: skip
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 2**70) | st.floats(allow_nan=False) | st.text(max_size=5),
    json_arrays_and_tables,
    max_leaves=6,
)


def reshaped(data, draw):
    """The JSON `data` with one value somewhere in it replaced by a drawn one (or all of it)."""
    if isinstance(data, dict) and data and draw(st.integers(0, 3)):
        k = draw(st.sampled_from(sorted(data)))
        return {**data, k: reshaped(data[k], draw)}
    if isinstance(data, list) and data and draw(st.integers(0, 3)):
        i = draw(st.integers(0, len(data) - 1))
        return [*data[:i], reshaped(data[i], draw), *data[i + 1 :]]
    return draw(json_values)


def damage(path: Path, how: str, other: Path, draw) -> None:
    data = path.read_bytes()
    if how == "truncated":
        path.write_bytes(data[: draw(st.integers(0, max(0, len(data) - 1)))])
    elif how == "emptied":
        path.write_bytes(b"")
    elif how == "swapped":
        shutil.copyfile(other / path.name, path)
    elif how == "unreadable":
        path.chmod(0)
    elif path.suffix == ".json":
        path.write_text(json.dumps(reshaped(json.loads(data), draw)))
    elif path.suffix == ".jsonl":
        lines = data.decode().splitlines()
        i = draw(st.integers(0, len(lines) - 1))
        lines[i] = json.dumps(reshaped(json.loads(lines[i]), draw))
        path.write_text("\n".join(lines) + "\n")
    elif path.suffix == ".safetensors":  # whole tensors, and the training state as JSON of another shape
        from transformer import checkpoint as ckpt

        tensors, meta = ckpt.load_tensors(path)
        ckpt.save_tensors(path, tensors, reshaped(meta, draw))
    else:
        path.write_bytes(draw(st.binary(max_size=50)) + data[: len(data) // 2])


@pytest.mark.parametrize("how", ["truncated", "emptied", "wrong shape", "swapped", "unreadable"])
@pytest.mark.parametrize("name", RUN_FILES)
def test_a_damaged_run_directory_ends_cleanly_and_stays_as_it_was(world, name, how):
    @given(st.data())
    @settings(max_examples=max(2, settings().max_examples // 6))  # each file, each damage: a few draws of it
    def check(data):
        with shared_copy(world / "run") as copy:
            damage(copy / name, how, world / "other", data.draw)
            if how == "unreadable":  # (to root every file is readable: another user's run is not)
                for path in [copy, *copy.iterdir()]:
                    path.chmod(0o777 if path.is_dir() else 0o666 if path.name != name else 0)
            before = files_of(copy)
            for command, argv in [
                ("test", ["--from", str(copy), "--n-chars", "2", "--device", "cpu"]),
                ("sample", ["--from", str(copy), "--n-chars", "2", "--checkpoint", "checkpoint"]),
                ("train", ["--resume", str(copy), "--no-progress", "--max-iters", "1"]),
            ]:
                with as_another_user() if how == "unreadable" else contextlib.nullcontext():
                    code, _, err = run(command, argv)
                assert_clean(code, err)
                if code != 0 or command != "train":  # (a resumed run that trains on writes, of course)
                    assert files_of(copy) == before, command

    check()
