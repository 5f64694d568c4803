"""Which class a [[layers]] `type` names, and what that class declares.

A layer is a `tinygraph.nn.Module` constructed as `Class(width, **options)`: `width` is
the incoming feature width, `options` the table's other keys (less `type` and
`repeat`). Everything else is read from the class:

- its options are its constructor's keyword arguments (types, defaults, ranges and help
  from the signature, see transformer.options);
- an argument named like a [model] setting that a layer may set (`dropout`, `bias`), or
  marked `FromModel(...)`, defaults to that setting; one named like another [model]
  setting (`block_size`) is given it and is not a table key;
- `out_width = "hidden"` (a class attribute) names the option that gives the width of
  what it returns; without one, it keeps the width;
- an option typed `int | Vocab` also takes "vocab": the vocabulary's size.

`type` is the name of a built-in layer (`@layer` registers one), a file and a class
(`"my_layers.py:RMSNorm"`, relative to the config file's folder) or a module and a
class (`"my_package.my_module:RMSNorm"`).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
import traceback
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

from tinygraph import nn

from ..errors import UserError
from ..options import Option, Vocab, alternatives, signature_options
from ..settings import ModelSettings, meta, shown
from ..settings import options as settings_of

LAYERS: dict[str, type[nn.Module]] = {}  # the built-in layers, by name


def layer(cls: type[nn.Module]) -> type[nn.Module]:
    """Register a built-in layer under its class name: a config can then use it as `type = "Name"`."""
    LAYERS[cls.__name__] = cls
    return cls


@dataclass(frozen=True)
class Declaration:
    """What a layer class declares, read from it once."""

    options: dict[str, Option]  # the keys its table may have
    given: tuple[str, ...]  # the [model] settings it is handed as they are
    takes_any: bool  # its constructor has **kwargs: other keys go to it unchecked
    out_width: str | None  # the option that is its output width, or None: it keeps the width

    def arguments(self, table: dict[str, Any], model: ModelSettings, vocab_size: int) -> dict[str, Any]:
        """The keyword arguments that build the layer a checked table describes."""
        kwargs = {k: v for k, v in table.items() if k not in ("type", "repeat")}
        for name, opt in self.options.items():
            if name not in kwargs and opt.from_model:
                kwargs[name] = getattr(model, opt.from_model)
            if kwargs.get(name) == "vocab" and Vocab in alternatives(opt.type):
                kwargs[name] = vocab_size
        return {**kwargs, **{name: getattr(model, name) for name in self.given}}

    def width_after(self, kwargs: dict[str, Any], width: int) -> int:
        if self.out_width is None:
            return width
        return kwargs.get(self.out_width, self.options[self.out_width].default)


@cache
def declaration(cls: type[nn.Module]) -> Declaration:
    options, takes_any = signature_options(cls, skip=1)
    model = settings_of(ModelSettings)
    given = []
    for name, opt in list(options.items()):
        shared = opt.from_model or (name if name in model else None)
        if shared is None:
            continue
        if not meta(ModelSettings, shared).get("per_layer"):
            given.append(name)  # the model's own (its context length): not the layer's to choose
            del options[name]
        else:  # [model]'s value by default, and its type, range and help unless the layer gives its own
            own = model[shared]
            kind, rng = (opt.type, opt.range) if opt.range else (own.type, own.range)
            options[name] = Option(name, kind, opt.default, rng, opt.help or own.help, shared)
    out_width = getattr(cls, "out_width", None)
    if out_width is not None and out_width not in options:
        raise TypeError(f"{cls.__name__}.out_width names {out_width!r}, which is not one of its options.")
    return Declaration(options, tuple(given), takes_any, out_width)


def find(kind: Any, base_dir: Path | None = None) -> tuple[type[nn.Module], str]:
    """The class a `type` names, and the type as a run records it (a file's path made
    absolute, so that the run loads from anywhere). A UserError says what is wrong."""
    if isinstance(kind, str) and kind in LAYERS:
        return LAYERS[kind], kind
    if not isinstance(kind, str) or ":" not in kind:
        raise UserError(
            f"unknown layer type {kind!r}; the layers are {', '.join(LAYERS)}, or your own as "
            '"file.py:Class" or "package.module:Class".'
        )
    source, _, name = kind.rpartition(":")
    if not source or not name:
        raise UserError(f'the layer type {kind!r} names no class; write "file.py:Class" or "package.module:Class".')
    if source.endswith(".py") or "/" in source or "\\" in source:
        path = Path(source).expanduser()
        path = (path if path.is_absolute() else (base_dir or Path.cwd()) / path).resolve()
        module, kind = _load_file(path), f"{path}:{name}"
    else:
        module = _import(source)
    cls = getattr(module, name, None)
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        what = "has no class" if cls is None else "has, but not as a tinygraph.nn.Module subclass,"
        raise UserError(f"{source} {what} {name!r}; give the name of a layer class defined in it.")
    return cls, kind


_files: dict[tuple[Path, int], ModuleType] = {}


def _load_file(path: Path) -> ModuleType:
    """Run a layer file as a module (once per process and version of the file): loading a
    run executes its layers' code."""
    if not path.is_file():
        raise UserError(
            f"the layer file {path} does not exist; put it back, or name a Python file (its path taken from the "
            "config file's folder)."
        )
    key = (path, path.stat().st_mtime_ns)
    if key in _files:
        return _files[key]
    name = f"tinygraph_user_layers.{path.stem}_{hashlib.sha1(str(path).encode()).hexdigest()[:8]}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None:  # not a name Python loads as source
        raise UserError(f"the layer file {path} is not a Python file; name a file ending in .py.")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # as an import would: dataclasses and pickling look for it there
    sys.path.insert(0, str(path.parent))  # as `python file.py` would: the file imports its siblings
    try:
        spec.loader.exec_module(module)
    except Exception as err:
        del sys.modules[name]
        raise UserError(f"the layer file {path} failed to load: {_where_it_failed(err, path)}; fix it.") from None
    finally:
        sys.path.remove(str(path.parent))
    _files[key] = module
    return module


def _import(module: str) -> ModuleType:
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as err:
        raise UserError(
            f"there is no module {module!r} to import ({err}); give an importable module, or a file path ending in .py."
        ) from None
    except Exception as err:
        raise UserError(f"the module {module} failed to import: {_where_it_failed(err, None)}; fix it.") from None


def _where_it_failed(err: Exception, path: Path | None) -> str:
    line = getattr(err, "lineno", None) if isinstance(err, SyntaxError) else None
    for frame in traceback.extract_tb(err.__traceback__):
        if path is None or Path(frame.filename) == path:
            line = frame.lineno
    message = err.msg if isinstance(err, SyntaxError) else str(err)
    return f"{type(err).__name__}: {message}" + (f" (line {line})" if line else "")


def markdown_table() -> str:
    """README's table of the built-in layers: what each does, its options and its output width."""
    lines = ["| type | what it is | options | output width |", "|---|---|---|---|"]
    for name, cls in LAYERS.items():
        decl = declaration(cls)
        options = "; ".join(_describe_option(opt) for opt in decl.options.values()) or "none"
        width = f"`{decl.out_width}`" if decl.out_width else "its input's"
        summary = " ".join((cls.__doc__ or "").split("\n\n")[0].split())
        lines.append(f"| `{name}` | {summary} | {options} | {width} |")
    return "\n".join(lines)


def _describe_option(opt: Option) -> str:
    default = f"[model] {opt.from_model}" if opt.from_model else "required" if opt.required else shown(opt.default)
    return f"`{opt.name}` ({default}): {opt.help or opt.describe()}"
