"""Axis sizes for costing: every declared number stays a symbol, so formulas read ``2·B·T·D·F``.

The checker folds ``axis D = 512`` into a number; the analyzer keeps ``D`` symbolic and binds
512 only when it evaluates. Derived axes (``K = D / H``) become expressions in their roots,
primed axes (``T'``) are their base axis, and the entry's lifted batch axis is ``B``.
"""
from __future__ import annotations

from collections.abc import Mapping

import sympy

from ncd import sizes as sz
from ncd.ir import SpecIR


class SizeEnv:
    """Symbolic sizes of a spec's axes, and the numbers they take at the bound sizes."""

    def __init__(self, ir: SpecIR, sizes: Mapping[str, int] | None = None, batch: str = "B") -> None:
        self.ir = ir
        self.batch = batch if batch not in ir.axes else "batch"  # a spec may declare its own B
        self.defaults: dict[str, int] = {}
        for name, axis in ir.axes.items():
            if axis.size is not None and sz.base_axis(name) == name:
                value = sz.parse(axis.size)
                if value.is_number and value.is_integer:
                    self.defaults[name] = int(value)
        self.values: dict[sympy.Symbol, int] = {}
        for name, value in {**self.defaults, **ir.bindings, **(sizes or {})}.items():
            self.values[sz.symbol(self.base(name))] = int(value)
        # The one resolver (ncd/sizes.py) with the declared numbers left out, so they stay symbols;
        # a unit axis is structure, not a size (and einsum treats it so), so it stays 1.
        derived = {name: (None if name in self.defaults else a.size) for name, a in ir.axes.items()}
        units = {name: 1 for name, v in self.defaults.items() if v == 1 and name not in ir.bindings}
        self._symbolic = sz.AxisSizes(derived, units)

    def base(self, axis: str) -> str:
        return sz.base_axis(axis)

    def __call__(self, axis: str) -> sympy.Expr:
        """The size of ``axis`` in root symbols: free axes and axes declared with a number."""
        return self._symbolic.expr(axis)

    def number(self, expr: sympy.Expr | int | float) -> int | float | None:
        """The value at the bound sizes, or None while some axis in it is unbound."""
        expr = sympy.sympify(expr)
        if expr.free_symbols:
            expr = sz.substitute(expr, self.values, "a cost")
        if expr.free_symbols:
            return None
        return int(expr) if expr.is_integer else float(expr)

    def unbound(self, expr: sympy.Expr) -> list[str]:
        return sorted(s.name for s in sympy.sympify(expr).subs(self.values).free_symbols)
