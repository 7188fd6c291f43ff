"""Random inputs of the right kind for a port: what `ncd run`, the doc tests and the library tests feed.

A float port gets standard normal values; an integer port (token ids) gets ids in [0, 2), which
index any table of at least two rows; a boolean port gets random booleans.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

from ncd.ir import WireType

INT_HIGH = 2  # integer inputs are drawn from [0, INT_HIGH): valid ids for any axis of size >= 2


def random_input(t: WireType, shape: Sequence[int], dtype: torch.dtype = torch.float32,
                 requires_grad: bool = False) -> torch.Tensor:
    """One input tensor for a port of type ``t``; only float inputs can require a gradient."""
    if t.dtype == "int":
        return torch.randint(0, INT_HIGH, tuple(shape))
    if t.dtype == "bool":
        return torch.rand(tuple(shape)) < 0.5
    return torch.randn(tuple(shape), dtype=dtype, requires_grad=requires_grad)
