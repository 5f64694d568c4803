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
    "bitwise_and": "Tensor.bitwise_and Tensor.bitwise_and_ Tensor.__and__ Tensor.__rand__ Tensor.__iand__ "
    "tinygraph.bitwise_and",
    "bitwise_or": "Tensor.bitwise_or Tensor.bitwise_or_ Tensor.__or__ Tensor.__ror__ Tensor.__ior__ tinygraph.bitwise_or",
    "bitwise_xor": "Tensor.bitwise_xor Tensor.bitwise_xor_ Tensor.__xor__ Tensor.__rxor__ Tensor.__ixor__ "
    "tinygraph.bitwise_xor",
    "bitwise_left_shift": "Tensor.bitwise_left_shift Tensor.bitwise_left_shift_ Tensor.__lshift__ Tensor.__rlshift__ "
    "Tensor.__ilshift__ tinygraph.bitwise_left_shift",
    "bitwise_right_shift": "Tensor.bitwise_right_shift Tensor.bitwise_right_shift_ Tensor.__rshift__ "
    "Tensor.__rrshift__ Tensor.__irshift__ tinygraph.bitwise_right_shift",
    "bitwise_not": "Tensor.bitwise_not Tensor.bitwise_not_ tinygraph.bitwise_not",
    "__invert__": "Tensor.__invert__",  # torch's own: a TypeError on floating-point tensors
    "signbit": "Tensor.signbit tinygraph.signbit",
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


def values_only(name: str, namespace: Any = torch):
    """torch's `name` (from `namespace`) on the data of Tensors, its results outside any graph."""
    method = getattr(torch.Tensor, name, None) if namespace is torch else None
    function = getattr(namespace, name, None)

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
public("F.one_hot")(values_only("one_hot", torch.nn.functional))
