"""The op library: one module per family. Importing it registers every op in `OPS` and
installs the public names each provides (Tensor methods, `tinygraph.*`, `F.*`)."""

from ..function import OPS
from . import (
    activation,
    conv,
    cumulative,
    einsum,
    elementwise,
    linalg,
    loss,
    math,
    nn,
    norm,
    pool,
    reduce,
    resample,
    select,
    shape,
    values,
    write,
)

__all__ = [
    "OPS", "activation", "conv", "cumulative", "einsum", "elementwise", "linalg", "loss", "math", "nn", "norm", "pool",
    "reduce", "resample", "select", "shape", "values", "write",
]  # fmt: skip
