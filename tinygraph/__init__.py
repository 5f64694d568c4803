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

from . import functions as _functions
from . import nn, optim
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
    tensor,
    zeros,
    zeros_like,
)
from .function import OPS, Function, Node, register
from .functions import *  # noqa: F403  (exp, sum, cat, where...: torch's top-level functions)
from .grad_mode import autocast, detect_anomaly, enable_grad, is_grad_enabled, no_grad, set_grad_enabled
from .gradcheck import GradcheckError, gradcheck, gradgradcheck
from .tensor import Tensor

__all__ = [
    "Tensor", "tensor", "Function", "Node", "OPS", "register", "nn", "optim",
    "autocast", "backward", "grad", "gradcheck", "gradgradcheck", "GradcheckError", "no_grad", "enable_grad", "set_grad_enabled", "is_grad_enabled", "detect_anomaly",
    "zeros", "ones", "full", "empty", "randn", "rand", "randint", "arange", "linspace", "eye",
    "zeros_like", "ones_like", "full_like", "empty_like", "randn_like", "rand_like",
    "float16", "bfloat16", "float32", "float64", "int32", "int64", "long", "bool", "device", "manual_seed",
    *_functions.__all__,
]  # fmt: skip
