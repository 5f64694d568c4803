"""Functions whose results carry no grad, in torch as here: comparisons, logic, tests,
indices. Each runs torch's function of the same name on the data and returns Tensors
outside any graph (a Python value where torch returns one, as `equal` does)."""

from __future__ import annotations

from typing import Any

import torch

from ..function import public
from ..tensor import Tensor, unwrap

# torch's name -> the public names that provide it
VALUES_ONLY = {
    "eq": "Tensor.eq Tensor.__eq__ tinygraph.eq",
    "ne": "Tensor.ne Tensor.__ne__ tinygraph.ne",
    "lt": "Tensor.lt Tensor.__lt__ tinygraph.lt",
    "le": "Tensor.le Tensor.__le__ tinygraph.le",
    "gt": "Tensor.gt Tensor.__gt__ tinygraph.gt",
    "ge": "Tensor.ge Tensor.__ge__ tinygraph.ge",
    "logical_and": "Tensor.logical_and tinygraph.logical_and",
    "logical_or": "Tensor.logical_or tinygraph.logical_or",
    "logical_xor": "Tensor.logical_xor tinygraph.logical_xor",
    "logical_not": "Tensor.logical_not tinygraph.logical_not",
    "bitwise_and": "Tensor.bitwise_and Tensor.__and__ Tensor.__rand__ tinygraph.bitwise_and",
    "bitwise_or": "Tensor.bitwise_or Tensor.__or__ Tensor.__ror__ tinygraph.bitwise_or",
    "bitwise_xor": "Tensor.bitwise_xor Tensor.__xor__ Tensor.__rxor__ tinygraph.bitwise_xor",
    "bitwise_not": "Tensor.bitwise_not Tensor.__invert__ tinygraph.bitwise_not",
    "isfinite": "Tensor.isfinite tinygraph.isfinite",
    "isnan": "Tensor.isnan tinygraph.isnan",
    "isinf": "Tensor.isinf tinygraph.isinf",
    "all": "Tensor.all tinygraph.all",
    "any": "Tensor.any tinygraph.any",
    "argmax": "Tensor.argmax tinygraph.argmax",
    "argmin": "Tensor.argmin tinygraph.argmin",
    "equal": "Tensor.equal tinygraph.equal",
    "isclose": "Tensor.isclose tinygraph.isclose",
    "allclose": "Tensor.allclose tinygraph.allclose",
    "count_nonzero": "Tensor.count_nonzero tinygraph.count_nonzero",
    "argsort": "Tensor.argsort tinygraph.argsort",
    "nonzero": "Tensor.nonzero tinygraph.nonzero",
    "argwhere": "Tensor.argwhere tinygraph.argwhere",
}


def values_only(name: str):
    """torch's `name` on the data of Tensors, its results outside any graph."""
    method = getattr(torch.Tensor, name, None)
    function = getattr(torch, name, None)

    def run(input: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(input, Tensor) and method is not None:
            out = method(input.data, *unwrap(args), **unwrap(kwargs))
        else:
            out = function(unwrap(input), *unwrap(args), **unwrap(kwargs))
        if isinstance(out, tuple):  # nonzero(as_tuple=True)
            return tuple(Tensor._make(o, None) for o in out)
        return Tensor._make(out, None) if isinstance(out, torch.Tensor) else out

    run.__doc__ = f"torch's {name}, on the values only (the result carries no grad)."
    return run


for _name, _provides in VALUES_ONLY.items():
    public(_provides)(values_only(_name))
