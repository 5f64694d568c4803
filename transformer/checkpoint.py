"""The files of a run directory (transformer.rundir), each written atomically.

A write goes to a temporary file that is flushed, fsynced, then renamed over the old
one, so a process killed at any moment leaves either the old file or the new one, whole.
Tensors are safetensors and everything else JSON: reading these files never unpickles
or executes anything (a run whose layers are your own code runs that code: see rundir).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as save_safetensors

from .errors import UserError


def atomic_write(path: Path, data: bytes) -> None:
    """Replace `path` with `data` all at once; on failure the old file stays as it was."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        if os.name != "nt":  # the rename itself made durable (Windows cannot open a directory to sync it)
            directory = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(directory)
            finally:
                os.close(directory)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise UserError(
            f"Could not write {path} ({err.strerror or err}); the previous file is intact. Free disk space or "
            "fix the directory's permissions, then resume with --resume."
        ) from None


def write_json(path: Path, value: Any) -> None:
    atomic_write(path, (json.dumps(value, indent=2, ensure_ascii=False) + "\n").encode())


def read_json(path: Path, what: str) -> Any:
    if not path.is_file():
        raise UserError(
            f"{path} is missing, so {path.parent} is not a complete run directory; give a directory a training run wrote."
        )
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
        raise UserError(f"The {what} {path} is damaged ({err}); restore it or train the run again.") from None


def save_tensors(path: Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Tensors and a JSON document in one safetensors file, written atomically."""
    flat = {name: t.detach().contiguous().cpu() for name, t in tensors.items()}
    atomic_write(path, save_safetensors(flat, metadata={"meta": json.dumps(meta)}))


def load_tensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    if not path.is_file():
        raise UserError(f"The checkpoint {path} does not exist; give a run directory a training run wrote.")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = json.loads((f.metadata() or {}).get("meta", "{}"))
            tensors = {name: f.get_tensor(name) for name in f.keys()}
        if not isinstance(meta, dict):
            raise ValueError(f"its metadata is a {type(meta).__name__}, not a table")
    except (SafetensorError, ValueError, OSError, UnicodeDecodeError) as err:
        raise UserError(
            f"The checkpoint {path} is damaged or not a checkpoint ({err}); use another run's checkpoint."
        ) from None
    return tensors, meta


def with_prefix(prefix: str, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {f"{prefix}.{k}": v for k, v in tensors.items()}


def without_prefix(prefix: str, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    start = len(prefix) + 1
    return {k[start:]: v for k, v in tensors.items() if k.startswith(prefix + ".")}


def load_weights(model: Any, tensors: dict[str, torch.Tensor], path: Path) -> None:
    """Copy saved weights into a model, refusing (clearly) weights of another model."""
    weights = without_prefix("model", tensors)
    own = model.state_dict()
    if set(weights) != set(own):
        raise UserError(
            f"The checkpoint {path} holds the weights of another model (its names differ); use this run's own checkpoint."
        )
    for name, t in weights.items():
        if t.shape != own[name].shape or t.dtype != own[name].dtype:
            raise UserError(
                f"The checkpoint {path} has {name} as {t.dtype} {tuple(t.shape)} but the model expects "
                f"{own[name].dtype} {tuple(own[name].shape)}; it was saved from another configuration."
            )
    model.load_state_dict(weights)


def optimizer_tensors(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """An optimizer's state_dict split into tensors (for safetensors) and the rest (for JSON)."""
    tensors, scalars = {}, {}
    for index, values in state["state"].items():
        for name, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{index}.{name}"] = value
            else:
                scalars[f"{index}.{name}"] = value
    groups = [{k: float(v) if isinstance(v, torch.Tensor) else v for k, v in g.items()} for g in state["param_groups"]]
    return tensors, {"scalars": scalars, "param_groups": groups}


def optimizer_state(tensors: dict[str, torch.Tensor], rest: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, value in [*tensors.items(), *rest["scalars"].items()]:
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    groups = [{**g, "betas": tuple(g["betas"])} if "betas" in g else g for g in rest["param_groups"]]
    return {"state": state, "param_groups": groups}
