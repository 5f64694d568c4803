"""The layers a model's [[layers]] tables name, each a tinygraph.nn.Module composed from
tinygraph ops and declaring itself (see registry.py): a new built-in layer is one class
with `@layer` in a module of this package; a layer of your own is a class in your file.

`python -m transformer.layers` prints the table of built-in layers and their options.
"""

from . import attention, basic, recurrent  # noqa: F401 (each registers its layers)
from .attention import Block, FullyConnected, MultiHeadSelfAttention
from .basic import CrossEntropyLoss, Dropout, Embedding, LayerNorm, Linear, PositionalEmbedding, TemporalDense
from .incremental import forward_cached
from .init import INIT_STD, init_weights, scale_residual_projections
from .recurrent import GRU, LSTM, RNN, Recurrent
from .registry import LAYERS, Declaration, declaration, find, layer

__all__ = [
    "GRU", "INIT_STD", "LAYERS", "LSTM", "RNN", "Block", "CrossEntropyLoss", "Declaration", "Dropout", "Embedding",
    "FullyConnected", "LayerNorm", "Linear", "MultiHeadSelfAttention", "PositionalEmbedding", "Recurrent",
    "TemporalDense", "declaration", "find", "forward_cached", "init_weights", "layer", "scale_residual_projections",
]  # fmt: skip
