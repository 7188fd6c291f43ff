"""The op table: each primitive declared once (typing, lowering, cost, drawing, algebra), keyed by name.

Adding an op means adding one ``OpDef`` to one family module below (docs/ops.md says how);
initialisers (``init normal(0, 1)``) have their own table, ``ncd.ops.init.INITIALISERS``.
Consumers never keep their own lists of op names: they ask a row (``OPS[name].view``,
``.algebra``, ``.fold``, ``.draw``) or, for IR nodes that are not ops, the helpers below.
"""
from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from ncd.ops import (contract, elementwise, extremes, integer, linalg, random, reduce, slicing, spatial, stats,
                     structure)
from ncd.ir import PASS_THROUGH
from ncd.ops.base import JOINT, NONLINEAR, Algebra, OpDef

_FAMILIES = (elementwise, reduce, contract, structure, spatial, linalg, integer, extremes, random, stats, slicing)


def _table() -> MappingProxyType:
    table: dict[str, OpDef] = {}
    for family in _FAMILIES:
        for op in family.OPS:
            if op.name in table:
                raise RuntimeError(f"op {op.name} declared twice")
            table[op.name] = op
    return MappingProxyType(table)


OPS = _table()

# The structural kinds that hand their input on unchanged are named in ncd/ir.py.


def is_view(op: str) -> bool:
    """Whether a node of this kind shares its input's storage (no copy, no memory traffic)."""
    row = OPS.get(op)
    return op in PASS_THROUGH or (row is not None and row.view)


def algebra(op: str) -> Algebra:
    """What the recurrence pass may assume of a node of this kind (nonlinear where unknown)."""
    if op in PASS_THROUGH:
        return JOINT
    row = OPS.get(op)
    return row.algebra if row is not None else NONLINEAR


def arith(op: str) -> str | None:
    """The arithmetic a node of this kind is (its row's ``arith``; None for the nodes that are no op)."""
    row = OPS.get(op)
    return row.arith if row is not None else None


def role(op: str) -> str | None:
    """The language construct a node of this kind is (its row's ``role``: PICK, POSITION, ...)."""
    row = OPS.get(op)
    return row.role if row is not None else None


def reorders(op: str, attrs: Mapping[str, Any]) -> bool:
    """``x : [A, B]``: the same entries with the axes only ordered (a relabelling row that renames
    no axis: no ``src`` attribute)."""
    row = OPS.get(op)
    return row is not None and row.relabels and "src" not in attrs


__all__ = ["OPS", "OpDef", "PASS_THROUGH", "algebra", "arith", "is_view", "reorders", "role"]
