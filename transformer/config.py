"""Model and training configs: TOML files (the presets ship in `transformer/presets/`),
checked key by key so that a typo or a value out of range is a clear error.

A config has three parts:
  [model]    the settings the whole model shares (transformer.settings.ModelSettings)
  [train]    the training settings (TrainSettings), each also a flag
  [[layers]] the stack, first an Embedding, last a CrossEntropyLoss; each table has a
             `type` (a built-in layer, or your own: "file.py:Class", "package.module:Class"),
             the layer's options, and `repeat` (how many copies in a row)

A checked config is a dict of those three parts, its settings complete (defaults filled
in) and the path of every layer file made absolute: a run saves it as it is.
"""

from __future__ import annotations

import copy
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any

from .errors import UserError
from .layers import declaration, find
from .options import Option, at_least
from .settings import SECTIONS, defaults, options

FIRST, LOSS = "Embedding", "CrossEntropyLoss"  # every stack starts and ends with these
REPEAT = Option("repeat", int, 1, at_least(1), "how many copies of the layer, one after the other")


def presets() -> list[str]:
    """The names of the shipped presets."""
    return sorted(p.name.removesuffix(".toml") for p in _presets_dir().iterdir() if p.name.endswith(".toml"))


def _presets_dir():
    return resources.files("transformer").joinpath("presets")


def load_preset(name: str) -> dict[str, Any]:
    if name not in presets():
        raise UserError(f"There is no preset named {name!r}; choose one of: {', '.join(presets())}.")
    return parse(_presets_dir().joinpath(f"{name}.toml").read_text(), f"preset {name}")


def load_file(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise UserError(
            f"The config file {path} does not exist; give the path of a TOML file (see transformer/presets/)."
        )
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise UserError(
            f"The config file {path} cannot be read as UTF-8 text ({err}); give a TOML text file."
        ) from None
    return parse(text, str(path), path.resolve().parent)


def load(name: str) -> dict[str, Any]:
    """A preset by name, or a TOML file by path."""
    return load_preset(name) if name in presets() else load_file(name)


def parse(text: str, source: str, base_dir: Path | None = None) -> dict[str, Any]:
    """Parse and check a config; every problem is a UserError naming the key or layer.
    Layer files are found from `base_dir` (the config file's folder; else the current one)."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise UserError(f"{source} is not valid TOML ({err}); fix the syntax.") from None
    return check(raw, source, base_dir)


def check(raw: dict[str, Any], source: str, base_dir: Path | None = None) -> dict[str, Any]:
    """A config as parsed (from TOML, or a run's config.json), checked section by section,
    key by key and layer by layer, with its defaults filled in."""
    unknown = set(raw) - {*SECTIONS, "layers"}
    if unknown:
        raise UserError(
            f"{source}: unknown section(s) {', '.join(sorted(unknown))}; the sections are [model], [train] and [[layers]]."
        )
    config: dict[str, Any] = {}
    for section, cls in SECTIONS.items():
        values = raw.get(section, {})
        if not isinstance(values, dict):
            raise UserError(f"{source}: {section} must be a table, [{section}], with its settings under it.")
        check_section(values, options(cls), f"{source} [{section}]")
        config[section] = {**defaults(cls), **values}
    config["layers"] = check_layers(raw.get("layers", []), source, base_dir)
    return config


def check_section(values: dict[str, Any], known: dict[str, Option], where: str) -> None:
    for key, value in values.items():
        if key not in known:
            raise UserError(f"{where}: unknown key {key!r}; the known keys are {', '.join(sorted(known))}.")
        what = known[key].problem(value)
        if what is not None:
            raise UserError(f"{where}: {key} = {value!r} is out of range; it must be {what}.")


def check_layers(layers: Any, source: str, base_dir: Path | None = None) -> list[dict[str, Any]]:
    """The [[layers]] tables, checked, each `type` as a run records it (see layers.find)."""
    if not layers or not isinstance(layers, list) or not all(isinstance(t, dict) for t in layers):
        raise UserError(f"{source} has no [[layers]]; list the model's layers, first an {FIRST}, last a {LOSS}.")
    checked = []
    for i, table in enumerate(layers):
        _, kind = check_layer(table, f"{source} layers[{i}]", base_dir)
        checked.append({**table, "type": kind})
    if checked[0]["type"] != FIRST:
        raise UserError(
            f"{source}: the first layer must be an {FIRST} (it turns token ids into vectors), not {checked[0]['type']}."
        )
    if checked[-1]["type"] != LOSS:
        raise UserError(f"{source}: the last layer must be a {LOSS}, not {checked[-1]['type']}.")
    for kind, end in ((FIRST, checked[0]), (LOSS, checked[-1])):
        if sum(t["type"] == kind for t in checked) != 1 or end.get("repeat", 1) != 1:
            raise UserError(f"{source}: a model has exactly one {kind}; remove the others (and any repeat).")
    return checked


def check_layer(table: dict[str, Any], where: str, base_dir: Path | None = None) -> tuple[type, str]:
    """A [[layers]] table against its layer's declaration: its class, and its type as a run records it."""
    try:
        cls, kind = find(table.get("type"), base_dir)
    except UserError as err:
        raise UserError(f"{where}: {err}") from None
    declared, where = declaration(cls), f"{where} ({table['type']})"
    if not declared.takes_any:
        check_section({k: v for k, v in table.items() if k != "type"}, {**declared.options, "repeat": REPEAT}, where)
    for name, opt in declared.options.items():
        if opt.required and name not in table:
            raise UserError(f"{where} needs {name!r}; add `{name} = ...` to it.")
    return cls, kind


def merged(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """A copy of `base` with the [model]/[train] values of `override` on top."""
    out = copy.deepcopy(base)
    for section in SECTIONS:
        out[section].update({k: v for k, v in override.get(section, {}).items() if v is not None})
    return out


def to_toml(config: dict[str, Any]) -> str:
    """A config as the TOML text of a config file (what --print-config prints)."""
    lines = []
    for section in SECTIONS:
        lines += [f"[{section}]", *(f"{k} = {_toml(v)}" for k, v in config[section].items()), ""]
    for table in config["layers"]:
        lines += ["[[layers]]", *(f"{k} = {_toml(v)}" for k, v in table.items()), ""]
    return "\n".join(lines)


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return repr(value)
