"""Saving and loading: round trips are exact, damaged or foreign files are clear errors."""

import errno
import os

import pytest
import torch

import tinygraph as tg
from transformer import checkpoint as ckpt
from transformer.config import load_preset
from transformer.errors import UserError
from transformer.model import LanguageModel
from transformer.rundir import RunLock


def model(preset="baby", vocab=20):
    torch.manual_seed(0)
    return LanguageModel(load_preset(preset), vocab)


def test_weights_round_trip_gives_identical_outputs(tmp_path):
    a, b = model(), model()
    b.layers[0].weight.data.zero_()
    ckpt.save_tensors(tmp_path / "w.safetensors", ckpt.with_prefix("model", a.state_dict()), {"step": 3})
    tensors, meta = ckpt.load_tensors(tmp_path / "w.safetensors")
    ckpt.load_weights(b, tensors, tmp_path / "w.safetensors")
    assert meta == {"step": 3}
    ids = tg.randint(0, 20, (2, 10))
    assert torch.equal(a(ids)[0].data, b(ids)[0].data)


def test_optimizer_state_round_trips_through_tensors_and_json():
    m = model()
    opt = tg.optim.AdamW(m.optimizer_groups(0.1), lr=1e-3)
    _, loss = m(tg.randint(0, 20, (2, 8)), tg.randint(0, 20, (2, 8)))
    loss.backward()
    opt.step()
    tensors, rest = ckpt.optimizer_tensors(opt.state_dict())
    back = ckpt.optimizer_state(tensors, rest)
    original = opt.state_dict()
    assert back["param_groups"] == original["param_groups"]
    for i, state in original["state"].items():
        assert state["step"] == back["state"][i]["step"]
        assert torch.equal(state["exp_avg"], back["state"][i]["exp_avg"])


def test_weights_of_another_model_are_refused(tmp_path):
    path = tmp_path / "w.safetensors"
    ckpt.save_tensors(path, ckpt.with_prefix("model", model("rnn").state_dict()), {})
    with pytest.raises(UserError, match="another model"):
        ckpt.load_weights(model(), ckpt.load_tensors(path)[0], path)
    ckpt.save_tensors(path, ckpt.with_prefix("model", model(vocab=21).state_dict()), {})
    with pytest.raises(UserError, match="another configuration"):
        ckpt.load_weights(model(), ckpt.load_tensors(path)[0], path)
    state = {k: v.double() for k, v in model().state_dict().items()}
    ckpt.save_tensors(path, ckpt.with_prefix("model", state), {})
    with pytest.raises(UserError, match=r"torch\.float64"):
        ckpt.load_weights(model(), ckpt.load_tensors(path)[0], path)


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty", "pickle"])
def test_damaged_checkpoints_are_clear_errors(tmp_path, damage):
    path = tmp_path / "w.safetensors"
    ckpt.save_tensors(path, ckpt.with_prefix("model", model().state_dict()), {"step": 1})
    blob = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(blob[: len(blob) // 2])
    elif damage == "garbage":
        path.write_bytes(blob[:100] + os.urandom(1000))
    elif damage == "empty":
        path.write_bytes(b"")
    else:  # a torch.save file: loading it would unpickle, which we never do
        torch.save({"w": torch.zeros(2)}, path)
    with pytest.raises(UserError, match="damaged or not a checkpoint"):
        ckpt.load_tensors(path)


def test_a_failed_write_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.safetensors"
    ckpt.atomic_write(path, b"old and good")

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "replace", disk_full)
    with pytest.raises(UserError, match=r"No space left on device.*previous file is intact"):
        ckpt.atomic_write(path, b"new")
    assert path.read_bytes() == b"old and good"
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.safetensors"]  # no temp file left behind


def test_the_run_lock_admits_one_trainer_and_lets_go(tmp_path):
    lock = RunLock(tmp_path)
    with pytest.raises(UserError, match="Another trainer is using"):
        RunLock(tmp_path)
    lock.release()
    RunLock(tmp_path).release()
