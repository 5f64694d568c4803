"""tinygraph: a small define-by-run autograd engine on torch tensors, every op's backward written by hand.

import tinygraph as tg
x = tg.tensor([1.0, 2.0, 3.0], requires_grad=True)
y = (x * x).sum()
y.backward()
x.grad  # tensor([2., 4., 6.])
"""

from torch import (  # dtypes and seeding are torch's own
    bfloat16,
    bool,
    device,
    float16,
    float32,
    float64,
    int32,
    int64,
    long,
    manual_seed,
)

from . import linalg, nn, ops, optim  # noqa: F401  (ops: registers every op and installs its names)
from .autograd import backward, grad
from .creation import (
    arange,
    empty,
    empty_like,
    eye,
    full,
    full_like,
    linspace,
    ones,
    ones_like,
    rand,
    rand_like,
    randint,
    randn,
    randn_like,
    randperm,
    tensor,
    zeros,
    zeros_like,
)
from .function import OPS, PUBLIC, Function, Node, public, register
from .grad_mode import (
    autocast,
    detect_anomaly,
    enable_grad,
    inference_mode,
    is_grad_enabled,
    is_inference_mode_enabled,
    no_grad,
    set_grad_enabled,
)
from .gradcheck import GradcheckError, gradcheck, gradgradcheck
from .tensor import Tensor

__all__ = [
    "Tensor", "tensor", "Function", "Node", "OPS", "PUBLIC", "register", "public", "nn", "optim", "linalg",
    "autocast", "backward", "grad", "gradcheck", "gradgradcheck", "GradcheckError", "no_grad", "enable_grad",
    "set_grad_enabled", "is_grad_enabled", "inference_mode", "is_inference_mode_enabled", "detect_anomaly",
    "zeros", "ones", "full", "empty", "randn", "rand", "randint", "randperm", "arange", "linspace", "eye",
    "zeros_like", "ones_like", "full_like", "empty_like", "randn_like", "rand_like",
    "float16", "bfloat16", "float32", "float64", "int32", "int64", "long", "bool", "device", "manual_seed",
    *sorted({name.split(".", 1)[1] for name in PUBLIC if name.startswith("tinygraph.")}),
]  # fmt: skip
