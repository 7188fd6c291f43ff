"""Convolution, pooling and up-sampling over named spatial axes."""
from __future__ import annotations

from ncd.ops.base import OpDef

OPS: tuple[OpDef, ...] = ()
