"""Shared by the two fuzzers: whether a checked mutant's sizes are small enough to load for real."""

from __future__ import annotations

import math

from ncd import sizes as sz


def small_enough(ir, bindings: dict[str, int], max_axis: int, max_elements: int) -> bool:
    """Every axis resolves to at most ``max_axis`` and every parameter to at most ``max_elements``
    (a spec that checks has sizes that resolve; an axis left symbolic counts as 1)."""
    declared = {name: axis.size for name, axis in ir.axes.items()}
    sizes = {}
    for name in ir.axes:
        value = sz.resolve(name, declared, bindings)
        if value.is_number and (not value.is_finite or value > max_axis):
            return False
        sizes[name] = int(value) if value.is_number and value.is_integer else 1
    return all(math.prod(sizes.get(a.rstrip("'"), 1) for a in param.type.axes) <= max_elements
               for block in ir.blocks.values() for param in block.params)
