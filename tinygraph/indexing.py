"""Indices as torch takes them, whatever the user wrote them with."""

from __future__ import annotations

import numpy as np
import torch

from .tensor import Tensor


def normalize_index(index, device):
    """An index as torch takes it: Tensors, numpy arrays and lists of ints or bools become
    torch index tensors on the indexed tensor's device, numpy scalars Python numbers."""
    if isinstance(index, tuple):
        return tuple(_index_part(p, device) for p in index)
    return _index_part(index, device)


def _index_part(part, device):
    if isinstance(part, Tensor):
        part = part.data
    elif isinstance(part, np.ndarray):
        part = torch.from_numpy(np.array(part))
    elif isinstance(part, np.generic):
        return part.item()
    elif isinstance(part, list):
        part = torch.tensor(part, dtype=torch.long if not part else None)
    if isinstance(part, torch.Tensor) and part.device != device:
        part = part.to(device)
    return part


def is_advanced(index) -> bool:
    """Does this index gather (tensors, bool masks), rather than slice? (after normalize_index)"""
    parts = index if isinstance(index, tuple) else (index,)
    return any(isinstance(p, torch.Tensor) for p in parts)
