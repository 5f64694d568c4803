"""tinygraph.nn: Modules with torch.nn's names, `functional`, and `utils`."""

from . import functional, parallel, utils
from .layers import GELU, Dropout, Embedding, LayerNorm, Linear, ReLU, Tanh
from .module import Module, ModuleList, Parameter, Sequential

__all__ = [
    "GELU",
    "Dropout",
    "Embedding",
    "LayerNorm",
    "Linear",
    "Module",
    "ModuleList",
    "Parameter",
    "ReLU",
    "Sequential",
    "Tanh",
    "functional",
    "parallel",
    "utils",
]
