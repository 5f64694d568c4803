"""`Module`, `Parameter` and the containers, with torch.nn's names and behaviour."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch

from .. import grad_mode
from ..tensor import Tensor


class Parameter(Tensor):
    """A leaf Tensor that a Module owns and an optimizer updates; requires grad by default."""

    __slots__ = ()

    def __init__(self, data: Any, requires_grad: bool = True):
        data = data.data if isinstance(data, Tensor) else data
        super().__init__(data if isinstance(data, torch.Tensor) else torch.as_tensor(data), requires_grad)

    def __repr__(self) -> str:
        return "Parameter containing:\n" + super().__repr__()


class Module:
    """Base class of layers and models: assign Parameters and Modules as attributes and
    they are found by `parameters()`, moved by `to()`, saved by `state_dict()`."""

    training: bool

    def __init__(self) -> None:
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "training", True)

    def __setattr__(self, name: str, value: Any) -> None:
        if "_parameters" not in self.__dict__:
            raise RuntimeError(f"Call super().__init__() in {type(self).__name__}.__init__ before assigning {name}.")
        for store in (self._parameters, self._modules, self._buffers):
            store.pop(name, None)
        if isinstance(value, Parameter):
            self._parameters[name] = value
        elif isinstance(value, Module):
            self._modules[name] = value
        else:
            object.__setattr__(self, name, value)

    def __getattr__(self, name: str) -> Any:
        # only called when normal lookup fails: parameters, submodules and buffers live here
        for store in ("_parameters", "_modules", "_buffers"):
            items = self.__dict__.get(store)
            if items is not None and name in items:
                return items[name]
        raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")

    def __delattr__(self, name: str) -> None:
        for store in (self._parameters, self._modules, self._buffers):
            if name in store:
                del store[name]
                return
        object.__delattr__(self, name)

    def register_buffer(self, name: str, tensor: Tensor | None, persistent: bool = True) -> None:
        """A tensor that is state but not a parameter (moved by `to()`, saved if persistent)."""
        self._buffers[name] = tensor
        if not persistent:
            self.__dict__.setdefault("_non_persistent", set()).add(name)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} must define forward().")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        observer = grad_mode.local.state.observer
        if observer is None:
            return self.forward(*args, **kwargs)
        with observer.inside(self):  # tinygraph.viz notes which module each op ran in
            return self.forward(*args, **kwargs)

    # ---- walking the tree -------------------------------------------------------------
    def named_modules(self, prefix: str = "") -> Iterator[tuple[str, Module]]:
        """Every module in the tree (each once), with its dotted path."""
        seen: set[int] = set()
        stack = [(prefix, self)]
        while stack:
            name, module = stack.pop(0)
            if id(module) in seen:
                continue
            seen.add(id(module))
            yield name, module
            stack[:0] = [(f"{name}.{k}" if name else k, m) for k, m in module._modules.items() if m is not None]

    def modules(self) -> Iterator[Module]:
        return (m for _, m in self.named_modules())

    def children(self) -> Iterator[Module]:
        return (m for m in self._modules.values() if m is not None)

    def named_parameters(self, prefix: str = "") -> Iterator[tuple[str, Parameter]]:
        """Every parameter with its dotted path; a shared (tied) one is listed once."""
        seen: set[int] = set()
        for path, module in self.named_modules(prefix):
            for name, p in module._parameters.items():
                if p is not None and id(p) not in seen:
                    seen.add(id(p))
                    yield (f"{path}.{name}" if path else name), p

    def parameters(self) -> Iterator[Parameter]:
        return (p for _, p in self.named_parameters())

    def named_buffers(self) -> Iterator[tuple[str, Tensor]]:
        for path, module in self.named_modules():
            for name, b in module._buffers.items():
                if b is not None:
                    yield (f"{path}.{name}" if path else name), b

    def apply(self, fn: Callable[[Module], None]) -> Module:
        """Call fn on every submodule, then on this module (as torch does, children first)."""
        for module in reversed(list(self.modules())):
            fn(module)
        return self

    # ---- modes and grads ----------------------------------------------------------------
    def train(self, mode: bool = True) -> Module:
        """Training mode (dropout active) for this module and every submodule."""
        for module in self.modules():
            object.__setattr__(module, "training", mode)
        return self

    def eval(self) -> Module:
        """Evaluation mode: dropout off."""
        return self.train(False)

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.parameters():
            if set_to_none:
                p.grad = None
            elif p.grad is not None:
                p.grad.data.zero_()

    def requires_grad_(self, requires_grad: bool = True) -> Module:
        for p in self.parameters():
            p.requires_grad_(requires_grad)
        return self

    def to(self, *args: Any, **kwargs: Any) -> Module:
        """Move (or cast: floating-point ones only) every parameter and buffer, in place."""
        for t in [*self.parameters(), *(b for _, b in self.named_buffers())]:
            moved = t.detach().to(*args, **kwargs)
            if not t.data.is_floating_point() and moved.dtype != t.dtype:
                moved = t.detach().to(device=moved.device)
            t.data = moved.data
            if t.grad is not None:
                t.grad = t.grad.detach().to(t.device, t.dtype)
        return self

    # ---- saving and loading -------------------------------------------------------------
    def state_dict(self) -> OrderedDict[str, torch.Tensor]:
        """Names to torch.Tensors (parameters and persistent buffers), sharing memory."""
        state: OrderedDict[str, torch.Tensor] = OrderedDict()
        for name, p in self.named_parameters():
            state[name] = p.data
        for path, module in self.named_modules():
            skip = module.__dict__.get("_non_persistent", set())
            for name, b in module._buffers.items():
                if b is not None and name not in skip:
                    state[f"{path}.{name}" if path else name] = b.data
        return state

    def load_state_dict(self, state_dict: dict[str, Any], strict: bool = True) -> tuple[list[str], list[str]]:
        """Copy tensors into this module's parameters and buffers, checking names and shapes.

        With `strict`, a missing or unexpected name is an error listing them. A shape that
        differs is always an error. Returns (missing, unexpected) names.
        """
        own = self.state_dict()
        missing = [k for k in own if k not in state_dict]
        unexpected = [k for k in state_dict if k not in own]
        if strict and (missing or unexpected):
            parts = [
                f"missing: {', '.join(missing)}" if missing else "",
                f"unexpected: {', '.join(unexpected)}" if unexpected else "",
            ]
            raise KeyError(
                f"The state dict does not fit {type(self).__name__} ({'; '.join(p for p in parts if p)}); "
                "load one saved from the same model configuration, or pass strict=False."
            )
        for name, target in own.items():
            if name not in state_dict:
                continue
            value = state_dict[name]
            value = value.data if isinstance(value, Tensor) else torch.as_tensor(value)
            if value.shape != target.shape:
                raise ValueError(
                    f"{name} has shape {tuple(value.shape)} in the state dict but {tuple(target.shape)} in "
                    "the model; the checkpoint was saved from a model of another size."
                )
            target.copy_(value)
        return missing, unexpected

    # ---- printing -----------------------------------------------------------------------
    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        lines = [f"({name}): " + repr(m).replace("\n", "\n  ") for name, m in self._modules.items()]
        head = f"{type(self).__name__}({self.extra_repr()}"
        return head + ")" if not lines else head + "\n  " + "\n  ".join(lines) + "\n)"


class ModuleList(Module):
    """A list of modules, registered under their indices."""

    def __init__(self, modules: Iterable[Module] = ()):
        super().__init__()
        for m in modules:
            self.append(m)

    def append(self, module: Module) -> ModuleList:
        self._modules[str(len(self._modules))] = module
        return self

    def __getitem__(self, i: int) -> Module:
        return list(self._modules.values())[i]

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self) -> Iterator[Module]:
        return iter(self._modules.values())


class Sequential(ModuleList):
    """Modules applied one after the other."""

    def __init__(self, *modules: Module):
        super().__init__(modules)

    def forward(self, x: Any) -> Any:
        for m in self:
            x = m(x)
        return x
