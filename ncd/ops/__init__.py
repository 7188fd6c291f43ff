"""The op table: each primitive declared once (typing, lowering, cost, drawing), keyed by name.

Adding an op means adding one ``OpDef`` to one family module below.
"""
from __future__ import annotations

from types import MappingProxyType

from ncd.ops import contract, elementwise, linalg, reduce, spatial, structure
from ncd.ops.base import OpDef

_FAMILIES = (elementwise, reduce, contract, structure, spatial, linalg)


def _table() -> MappingProxyType:
    table: dict[str, OpDef] = {}
    for family in _FAMILIES:
        for op in family.OPS:
            if op.name in table:
                raise RuntimeError(f"op {op.name} declared twice")
            table[op.name] = op
    return MappingProxyType(table)


OPS = _table()

__all__ = ["OPS", "OpDef"]
