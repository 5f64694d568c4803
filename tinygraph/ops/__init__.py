"""The op library: one module per family. Importing it registers every op in `OPS` and
installs the public names each provides (Tensor methods, `tinygraph.*`, `F.*`)."""

from ..function import OPS
from . import activation, conv, elementwise, linalg, loss, math, nn, pool, reduce, resample, shape, values, write

__all__ = [
    "OPS", "activation", "conv", "elementwise", "linalg", "loss", "math", "nn", "pool", "reduce", "resample", "shape",
    "values", "write",
]  # fmt: skip
