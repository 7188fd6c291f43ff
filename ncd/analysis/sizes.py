"""Axis sizes for costing: every declared number stays a symbol, so formulas read ``2·B·T·D·F``.

The checker folds ``axis D = 512`` into a number; the analyzer keeps ``D`` symbolic and binds
512 only when it evaluates. Derived axes (``K = D / H``) become expressions in their roots,
primed axes (``T'``) are their base axis, and the entry's lifted batch axis is ``B``.
"""
from __future__ import annotations

from collections.abc import Mapping

import sympy

from ncd import sizes as sz
from ncd.errors import NcdError
from ncd.ir import SpecIR


class SizeEnv:
    """Symbolic sizes of a spec's axes, and the numbers they take at the bound sizes."""

    def __init__(self, ir: SpecIR, sizes: Mapping[str, int] | None = None, batch: str = "B") -> None:
        self.ir = ir
        self.batch = batch if batch not in ir.axes else "batch"  # a spec may declare its own B
        self._cache: dict[str, sympy.Expr] = {}
        self.defaults: dict[str, int] = {}
        for name, axis in ir.axes.items():
            if axis.size is not None and axis.prime_of is None:
                value = sz.parse(axis.size)
                if value.is_number and value.is_integer:
                    self.defaults[name] = int(value)
        self.values: dict[sympy.Symbol, int] = {}
        for name, value in {**self.defaults, **ir.bindings, **(sizes or {})}.items():
            self.values[sz.symbol(self.base(name))] = int(value)

    def base(self, axis: str) -> str:
        definition = self.ir.axes.get(axis)
        if definition is not None and definition.prime_of:
            return self.base(definition.prime_of)
        return axis.rstrip("'") if axis.endswith("'") else axis

    def __call__(self, axis: str) -> sympy.Expr:
        """The size of ``axis`` in root symbols: free axes and axes declared with a number."""
        axis = self.base(axis)
        found = self._cache.get(axis)
        if found is not None:
            return found
        definition = self.ir.axes.get(axis)
        self._cache[axis] = expr = sz.symbol(axis)  # also guards against cycles while resolving
        if self.defaults.get(axis) == 1 and axis not in self.ir.bindings:
            expr = sympy.Integer(1)  # a unit axis is structure, not a size (and einsum treats it so)
        if definition is not None and definition.size is not None and axis not in self.defaults:
            text = sz.parse(definition.size)  # a derived axis: K = D / H
            if text.free_symbols:
                expr = text.subs({s: self(s.name) for s in text.free_symbols})
        self._cache[axis] = expr
        return expr

    def number(self, expr: sympy.Expr | int | float) -> int | float | None:
        """The value at the bound sizes, or None while some axis in it is unbound."""
        expr = sympy.sympify(expr)
        if expr.free_symbols:
            expr = expr.subs(self.values)
        if expr.free_symbols:
            return None
        return int(expr) if expr.is_integer else float(expr)

    def unbound(self, expr: sympy.Expr) -> list[str]:
        return sorted(s.name for s in sympy.sympify(expr).subs(self.values).free_symbols)

    def require(self, expr: sympy.Expr, what: str) -> int | float:
        value = self.number(expr)
        if value is None:
            names = self.unbound(expr)
            raise NcdError(f"{what} needs the size of axis {', '.join(names)}, which is not bound",
                           hint=f"bind it: --set {names[0]}=...")
        return value
