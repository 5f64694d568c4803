"""tinygraph.nn: layers (Modules) and `functional`."""

from . import functional

__all__ = ["functional"]
