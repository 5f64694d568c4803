"""The op library: one module per family. Importing it registers every op in `OPS`."""

from ..function import OPS
from . import elementwise, linalg, nn, reduce, shape

__all__ = ["OPS", "elementwise", "linalg", "nn", "reduce", "shape"]
