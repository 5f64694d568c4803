"""The op library: one module per family. Importing it registers every op in `OPS` and
installs the public names each provides (Tensor methods, `tinygraph.*`, `F.*`)."""

from ..function import OPS
from . import cumulative, einsum, elementwise, linalg, nn, norm, reduce, select, shape, values, write

__all__ = [
    "OPS", "cumulative", "einsum", "elementwise", "linalg", "nn", "norm", "reduce", "select", "shape", "values", "write",
]  # fmt: skip
