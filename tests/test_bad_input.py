"""Every kind of input a user can type or damage ends in exit 0, or in one clear line and
exit 2, and nothing saved is lost: one named test per kind of failure that was found
(tests/test_generated_input.py searches for new ones)."""

import json
import os
import signal
import threading
import time
import warnings

import pytest
import torch
from cli_runs import TEXT, as_another_user, assert_clean, files_of, read_only, run, shared_folder, trained_run
from configs import tiny_config

from transformer import data, loop, rundir
from transformer.data import WordTokenizer, split


# ---- the word tokenizer ----------------------------------------------------------------------
def test_the_word_tokenizer_cuts_train_from_validation_between_two_words():
    text = "lorem ipsum " * 100 + "dolor"
    cut = int(len(text) * 0.9)
    assert text[cut - 1].isalpha() and text[cut].isalpha()  # 90% of the characters ends inside a word
    tokenizer = WordTokenizer.learn(text)
    splits = split(text, tokenizer, block_size=8)  # was a KeyError: the half word is not in the vocabulary
    assert torch.equal(torch.cat([splits.train, splits.val]), torch.tensor(tokenizer.encode(text)))
    assert tokenizer.decode(splits.train).endswith("ipsum ") and len(tokenizer.decode(splits.train)) <= cut


# ---- values that pass a type check but cannot work -------------------------------------------
@pytest.mark.parametrize(
    "flag,value,message",
    [
        ("--lr", "inf", "lr = inf is out of range; it must be a positive number"),
        ("--lr", "1e400", "lr = inf is out of range"),  # (float() makes it infinite)
        ("--min-lr", "nan", "min_lr = nan is out of range"),
        ("--seed", str(2**64), "seed = 18446744073709551616 is out of range; it must be an integer in "
                               "[-9223372036854775808, 9223372036854775807]"),
    ],
)  # fmt: skip
def test_infinite_and_too_large_values_are_refused_before_anything_runs(tmp_path, flag, value, message):
    folder = tmp_path
    (folder / "corpus.txt").write_text(TEXT)
    code, _, err = run("train", ["--corpus", str(folder / "corpus.txt"), "--out-dir", str(folder / "run"), flag, value])
    assert message in assert_clean(code, err)
    assert not (folder / "run").exists()


@pytest.mark.parametrize("command", ["test", "sample"])
def test_a_seed_too_large_for_64_bits_is_refused_when_sampling(tmp_path, command):
    trained = trained_run(tmp_path)
    code, _, err = run(command, ["--from", str(trained), "--seed", str(2**63), "--n-chars", "1"])
    assert "seed = 9223372036854775808 is out of range" in assert_clean(code, err)


# ---- sizes that cannot fit in memory -----------------------------------------------------------
def train_tiny(folder, *extra, **config):
    """Train the tiny config (with `config` changed) on the test text, in `folder`/run."""
    (folder / "tiny.toml").write_text(tiny_config(dim=8, max_iters=1, eval_iters=1, **config))
    (folder / "corpus.txt").write_text(TEXT)
    argv = ["--config", str(folder / "tiny.toml"), "--corpus", str(folder / "corpus.txt"), "--device", "cpu",
            "--no-progress", "--out-dir", str(folder / "run"), *extra]  # fmt: skip
    return run("train", argv)


@pytest.mark.parametrize(
    "extra,config,message",
    [
        (["--batch-size", str(2**50)], {}, "A step of 1125899906842624 sequences of 16 tokens needs more memory"),
        (["--batch-size", str(10**30)], {}, "(a size beyond any machine's); lower --batch-size"),
        ([], {"block_size": 10**11}, "layers[1] (PositionalEmbedding) with block_size = 100000000000 on a width "
                                     "of 8 needs more memory than there is"),
        ([], {"blocks": 10**9}, "layers[2] (Block) and its 1000000000 copies would need"),
    ],
)  # fmt: skip
def test_sizes_that_cannot_fit_in_memory_name_the_setting_and_leave_no_run(tmp_path, extra, config, message):
    code, _, err = train_tiny(tmp_path, *extra, **config)  # was an allocator's traceback
    assert message in assert_clean(code, err)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("command", ["train", "test", "sample"])
def test_a_text_too_long_for_memory_is_refused_before_it_is_generated(tmp_path, command):
    trained = trained_run(tmp_path)
    if command == "train":
        code, _, err = train_tiny(tmp_path, "--sample-chars", str(2**62), "--out-dir", str(tmp_path / "new"))
    else:
        code, _, err = run(command, ["--from", str(trained), "--n-chars", str(2**62)])
    assert (
        "4,611,686,018,427,387,904 " in assert_clean(code, err) and "tokens would need" in err
    )  # was: generating for ever
    assert not (tmp_path / "new").exists()


def test_a_huge_repeat_of_a_layer_without_weights_is_refused_before_it_is_built(tmp_path):
    dropouts = '[[layers]]\ntype = "Dropout"\nrepeat = 4611686018427387904\n'
    (tmp_path / "c.toml").write_text(
        tiny_config(dim=8).replace('[[layers]]\ntype = "LayerNorm"', dropouts + '[[layers]]\ntype = "LayerNorm"')
    )
    (tmp_path / "corpus.txt").write_text(TEXT)
    code, _, err = run("train", ["--config", str(tmp_path / "c.toml"), "--corpus", str(tmp_path / "corpus.txt")])
    assert "layers[3] (Dropout) and its 4611686018427387904 copies would need" in assert_clean(
        code, err
    )  # was: building for ever


# ---- flags that a command would ignore ---------------------------------------------------------
@pytest.mark.parametrize(
    "extra",
    [["--preset", "baby"], ["--config", "c.toml"], ["--tokenizer", "word"], ["--dtype", "float64"], ["--seed", "3"],
     ["--out-dir", "elsewhere"], ["--block-size", "8"]],
)  # fmt: skip
def test_resume_refuses_the_flags_it_would_ignore(tmp_path, extra):
    trained = trained_run(tmp_path)
    before = files_of(trained)
    code, _, err = run("train", ["--resume", str(trained), "--no-progress", *extra])  # was exit 0, the flag ignored
    assert f"drop {extra[0]}" in assert_clean(code, err)
    assert files_of(trained) == before


@pytest.mark.parametrize("extra", [["--preset", "baby"], ["--config", "c.toml"]])
def test_init_from_refuses_another_model(tmp_path, extra):
    trained = trained_run(tmp_path)
    code, _, err = run("train", ["--init-from", str(trained), "--out-dir", str(tmp_path / "ft"), *extra])
    assert f"trains the model of {trained}; drop {extra[0]}" in assert_clean(code, err)
    assert not (tmp_path / "ft").exists()


@pytest.mark.parametrize("flag", ["--corpus", "--out-dir", "--config", "--device"])
def test_an_empty_value_is_refused(tmp_path, flag):
    code, _, err = run("train", [flag, ""])
    assert f"{flag} cannot be empty" in assert_clean(code, err)


# ---- the run directory -----------------------------------------------------------------------
def test_a_failed_start_leaves_no_folder_it_made(tmp_path):
    (tmp_path / "kept").mkdir()
    for out in ["new/deeper/run", "kept"]:  # folders it made go; one that was there stays, as it was
        code, _, err = train_tiny(tmp_path, "--batch-size", str(2**50), "--out-dir", str(tmp_path / out))
        assert "needs more memory" in assert_clean(code, err)  # (it fails after creating the directory)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus.txt", "kept", "tiny.toml"]
    assert not any((tmp_path / "kept").iterdir())


def test_a_directory_left_by_a_start_killed_before_its_checkpoint_is_reused(tmp_path):
    killed = tmp_path / "run"
    killed.mkdir()
    for name in (".lock", "config.json", ".tokenizer.json.tmp-12345"):  # as a SIGKILL leaves it
        (killed / name).write_text("{")
    code, _, err = train_tiny(tmp_path)  # was: "already exists and is not empty", for ever
    assert_clean(code, err)
    assert (killed / "checkpoint.safetensors").is_file() and not (killed / ".tokenizer.json.tmp-12345").exists()


@pytest.mark.parametrize("other", ["notes.txt", "checkpoint.safetensors", "metrics.jsonl/"])
def test_a_directory_holding_anything_else_is_not_taken(tmp_path, other):
    out = tmp_path / "run"
    out.mkdir()
    for name in (".lock", "config.json", other):
        (out / name).mkdir() if name.endswith("/") else (out / name).write_text("mine")
    before = files_of(out)
    code, _, err = train_tiny(tmp_path)
    assert "already exists and is not empty" in assert_clean(code, err)
    assert files_of(out) == before


def test_resuming_a_run_one_cannot_write_is_one_line_and_changes_nothing():
    with shared_folder() as folder:
        trained = trained_run(folder)
        read_only(trained)
        before = files_of(trained)
        with as_another_user():  # was a PermissionError traceback
            code, _, err = run("train", ["--resume", str(trained), "--no-progress", "--max-iters", "2"])
            assert f"Cannot write in {trained} (Permission denied)" in assert_clean(code, err)
            code, _, err = run("sample", ["--from", str(trained), "--n-chars", "3"])  # reading it is fine
            assert_clean(code, err)
        assert files_of(trained) == before


# ---- config shapes -----------------------------------------------------------------------------
LAYERS = '[[layers]]\ntype = "Embedding"\ndim = 8\n[[layers]]\ntype = "TemporalDense"\nout = "vocab"\n' \
         '[[layers]]\ntype = "CrossEntropyLoss"\n'  # fmt: skip


@pytest.mark.parametrize(
    "text,message",
    [
        ("model = 5\n" + LAYERS, "model must be a table"),
        ("train = [1, 2]\n" + LAYERS, "train must be a table"),
        ("layers = 5", "has no [[layers]]"),
        ("layers = [1, 2]", "has no [[layers]]"),
        (LAYERS.replace('"Embedding"', '"/etc/hostname:Layer"', 1), "is not a Python file; name a file ending in .py"),
        (LAYERS.replace('"Embedding"', '":"', 1), "names no class"),
        (LAYERS.replace("dim = 8", "dim = [8]"), "dim = [8] is out of range; it must be a positive integer"),
        (LAYERS.replace("dim = 8", "dim = 1979-05-27"), "dim = datetime.date(1979, 5, 27) is out of range"),
    ],
)
def test_a_config_of_any_shape_is_checked(tmp_path, text, message):
    (tmp_path / "c.toml").write_text(text)
    (tmp_path / "corpus.txt").write_text(TEXT)
    code, _, err = run("train", ["--config", str(tmp_path / "c.toml"), "--corpus", str(tmp_path / "corpus.txt")])
    assert message in assert_clean(code, err)  # (a file that is not .py was an AttributeError)


# ---- a run directory's files, damaged or edited by hand ----------------------------------------
@pytest.mark.parametrize(
    "name,damage,message",
    [
        ("config.json", {}, "config.json lacks config, corpus, tokenizer, vocab_size, dtype, seed, init_from, created"),
        ("config.json", [], "lacks config"),
        ("config.json", {"config": 5}, "config = 5 is out of range; it must be a table"),
        ("config.json", {"layers": [{"type": "Transformer"}]}, "layers[0]: unknown layer type 'Transformer'"),
        ("config.json", {"seed": "1337"}, "seed = '1337' is out of range"),
        ("config.json", {"dtype": "float16"}, "dtype = 'float16' is out of range; it must be one of"),
        ("tokenizer.json", {"kind": ["char"], "vocab": ["a"]}, "is not a vocabulary this program wrote"),
        ("tokenizer.json", {"kind": "char", "vocab": ["ab", 1]}, "is not a vocabulary this program wrote"),
        ("tokenizer.json", "other run", "so they are of different runs"),
        ("tokenizer.json", "not json", "is damaged (Unterminated string"),
    ],
)
def test_a_damaged_run_file_is_one_line_naming_it_and_nothing_changes(tmp_path, name, damage, message):
    trained = trained_run(tmp_path)
    path = trained / name
    if damage == "other run":
        other = trained_run(tmp_path, "other", "--tokenizer", "word")
        path.write_bytes((other / name).read_bytes())
    elif damage == "not json":
        path.write_text('{"kind": "char", "vo')
    elif isinstance(damage, dict) and name == "config.json" and damage:
        info = json.loads(path.read_text())
        if "layers" in damage:
            info["config"]["layers"][0]["type"] = "Transformer"
        else:
            info.update(damage)
        path.write_text(json.dumps(info))
    else:
        path.write_text(json.dumps(damage))
    before = files_of(trained)
    for command, argv in [("train", ["--resume"]), ("test", ["--from"]), ("sample", ["--from"])]:
        code, _, err = run(command, [*argv, str(trained), "--no-progress"][: 2 + (command == "train")])
        line = assert_clean(code, err)  # was a KeyError (or a TypeError, an AttributeError) traceback
        assert message in line and str(path) in line, line
    assert files_of(trained) == before


def test_resuming_drops_log_lines_that_are_not_records(tmp_path):
    trained = trained_run(tmp_path)
    metrics = trained / "metrics.jsonl"
    metrics.write_text(metrics.read_text() + '[1, 2]\n{"kind": "train", "step": "x"}\n\xff\n')  # was an AttributeError
    code, _, err = run("train", ["--resume", str(trained), "--no-progress", "--max-iters", "1"])
    assert_clean(code, err)
    assert [json.loads(line)["kind"] for line in metrics.read_text().splitlines()] == ["eval", "train", "eval"]


def test_resuming_with_a_log_one_cannot_read_changes_nothing():
    with shared_folder() as folder:
        trained = trained_run(folder)
        for path in [trained, *trained.iterdir()]:  # another user's run that they may write, but one log unreadable
            path.chmod(0o777 if path.is_dir() else 0 if path.name == "samples.txt" else 0o666)
        before = files_of(trained)
        with as_another_user():
            code, _, err = run("train", ["--resume", str(trained), "--no-progress", "--max-iters", "1"])
        if os.geteuid() == 0 or not os.access(trained / "samples.txt", os.R_OK):
            assert "Cannot read" in assert_clean(code, err)  # was a PermissionError, after metrics.jsonl was rewritten
            assert files_of(trained) == before


@pytest.mark.parametrize(
    "command,argv,message",
    [
        ("train", ["--lr", "x"], "argument --lr: invalid float value: 'x'; see python -m transformer.train --help."),
        ("train", ["--nope"], "unrecognized arguments: --nope"),
        ("sample", [], "the following arguments are required: --from"),
        ("test", ["--from", "r", "--top-k", "1.5"], "argument --top-k: invalid int value: '1.5'"),
    ],
)
def test_a_flag_argparse_refuses_is_one_line(command, argv, message):
    code, _, err = run(command, argv)  # was argparse's usage block, then the error
    assert message in assert_clean(code, err)


# ---- Ctrl-C, and corpora that are not files ----------------------------------------------------
def test_a_second_ctrl_c_during_the_evaluation_sample_exits_cleanly_and_keeps_the_checkpoint(tmp_path, monkeypatch):
    def interrupted_twice(t):  # as a user pressing Ctrl-C twice while the sample is written
        os.kill(os.getpid(), signal.SIGINT)  # the first asks the loop to stop after this step
        os.kill(os.getpid(), signal.SIGINT)  # the second stops at once
        time.sleep(1)  # (where the KeyboardInterrupt arrives)

    monkeypatch.setattr(loop, "sample", interrupted_twice)
    code, _, err = train_tiny(tmp_path)
    assert code == 130 and "Traceback" not in err, err  # was a KeyboardInterrupt traceback
    assert (
        err.strip()
        == f"stopped: Ctrl-C stopped the trainer at once; {tmp_path / 'run'} keeps its checkpoint of step 0."
    )
    assert rundir.checkpoint_step(tmp_path / "run") == 0


def test_a_corpus_that_is_a_named_pipe_says_it_waits_for_a_writer(tmp_path, monkeypatch):
    said, warn = threading.Event(), warnings.warn

    def warn_and_tell(*args):
        warn(*args)
        said.set()

    monkeypatch.setattr(data, "PIPE_PATIENCE_S", 0.1)
    monkeypatch.setattr(warnings, "warn", warn_and_tell)
    os.mkfifo(tmp_path / "pipe")

    def writer():  # comes once the trainer said that it waits
        said.wait(60)
        (tmp_path / "pipe").write_text(TEXT)

    threading.Thread(target=writer, daemon=True).start()
    code, _, err = train_tiny(tmp_path, "--corpus", str(tmp_path / "pipe"))  # was: silence until a writer came
    assert_clean(code, err)
    assert f"warning: the corpus {tmp_path / 'pipe'} is a named pipe (FIFO) that nothing writes to yet" in err


def test_a_corpus_that_is_a_device_is_refused():
    code, _, err = run("train", ["--corpus", "/dev/zero"])  # was: reading for ever
    assert "The corpus /dev/zero is not a file" in assert_clean(code, err)


# ---- a learning rate that is finite but blows the weights up -----------------------------------
@pytest.mark.parametrize("interval", ["1", "100"])  # (found by the evaluation after the update, or the next step)
def test_a_learning_rate_that_blows_the_weights_up_stops_in_one_line_and_keeps_the_good_checkpoint(tmp_path, interval):
    code, _, err = train_tiny(tmp_path, "--lr", "1e300", "--max-iters", "3", "--eval-interval", interval)
    line = assert_clean(code, err)  # were a multinomial's traceback, and detect_anomaly's stack as the error
    assert "the checkpoint of step 0 is kept" in line and "Resume with a lower --lr" in line
    assert rundir.checkpoint_step(tmp_path / "run") == 0


@pytest.mark.parametrize("command", ["train", "sample"])
def test_a_path_inside_a_folder_one_may_not_enter_is_one_line(command):
    with shared_folder() as folder:
        (folder / "private" / "run").mkdir(parents=True)
        (folder / "private").chmod(0)
        with as_another_user():
            code, _, err = run(
                command, ["--out-dir" if command == "train" else "--from", str(folder / "private" / "run")]
            )
        line = assert_clean(code, err)  # was a PermissionError traceback
        assert f"{folder / 'private' / 'run'}: Permission denied; check the path and its permissions" in line
