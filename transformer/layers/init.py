"""The package's weight initialisation, GPT-2's as nanoGPT does it: linear and embedding
weights normal with std 0.02, biases zero, LayerNorms ones and zeros; the projections
that write into a residual stream smaller, by sqrt(2 * the layers that have them)."""

from __future__ import annotations

import math

import torch

from tinygraph import nn

INIT_STD = 0.02


def init_linear(linear: nn.Linear, std: float = INIT_STD) -> None:
    linear.weight.data = torch.randn(tuple(linear.weight.shape)) * std
    if linear.bias is not None:
        linear.bias.data = torch.zeros(tuple(linear.bias.shape))


def init_weights(layer: nn.Module) -> None:
    """Initialise a layer of a model as the built-in layers are: every nn.Linear and
    nn.Embedding in it that still has torch's initialisation (those classes exactly: a
    subclass, as transformer.layers.Linear, draws its own) is drawn again, in module order."""
    for module in layer.modules():
        if type(module) is nn.Linear:
            init_linear(module)
        elif type(module) is nn.Embedding:
            module.weight.data = torch.randn(tuple(module.weight.shape)) * INIT_STD


def scale_residual_projections(model: nn.Module) -> None:
    """nanoGPT: the layers writing into the residual stream start smaller, by sqrt(2 * L),
    L the number of modules that list them in a `residual_projections()` method (Block
    does; a layer of yours opts in the same way)."""
    owners = [m for m in model.modules() if hasattr(m, "residual_projections")]
    for owner in owners:
        for projection in owner.residual_projections():
            projection.weight.data.normal_(0.0, INIT_STD / math.sqrt(2 * len(owners)))
