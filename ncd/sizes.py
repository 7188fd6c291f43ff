"""Axis sizes as sympy expressions: symbolic until the user binds them."""
from __future__ import annotations

import ast
from collections.abc import Mapping
from functools import lru_cache
from typing import TYPE_CHECKING

import sympy

from ncd.errors import NcdError

if TYPE_CHECKING:
    from ncd.ir import SpecIR


def symbol(axis: str) -> sympy.Symbol:
    """Axis names may carry primes (T'), which sympy symbols accept as-is."""
    return sympy.Symbol(axis, positive=True, integer=True)


@lru_cache(maxsize=4096)
def parse(text: str) -> sympy.Expr:
    """Read back a size stored in the IR as text (sympy's printer wrote it, or a JSON file did).

    Parsed with Python's ``ast`` (which only parses) and rebuilt node by node from a short list
    of arithmetic forms, so no text — not even an edited IR JSON — is ever evaluated.
    """
    try:
        tree = ast.parse(_escape(text.strip()), mode="eval")
    except SyntaxError:
        raise NcdError(f"not a size expression: {text!r}") from None
    return _build(tree.body, text)


_FUNCTIONS = {"sqrt": sympy.sqrt, "exp": sympy.exp, "log": sympy.log, "Abs": sympy.Abs,
              "floor": sympy.floor, "ceiling": sympy.ceiling, "Max": sympy.Max, "Min": sympy.Min,
              "Rational": sympy.Rational, "Integer": sympy.Integer, "Float": sympy.Float}
_CONSTANTS = {"pi": sympy.pi, "oo": sympy.oo, "zoo": sympy.zoo, "nan": sympy.nan}
_SYMPY_NAMES = frozenset(_FUNCTIONS) | frozenset(_CONSTANTS)
_BINARY = {ast.Add: lambda a, b: a + b, ast.Sub: lambda a, b: a - b, ast.Mult: lambda a, b: a * b,
           ast.Div: lambda a, b: a / b, ast.Pow: lambda a, b: a**b, ast.Mod: lambda a, b: sympy.Mod(a, b),
           ast.FloorDiv: lambda a, b: sympy.floor(a / b)}


def _build(node: ast.AST, text: str) -> sympy.Expr:
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
        return sympy.Integer(node.value) if isinstance(node.value, int) else sympy.Float(node.value)
    if isinstance(node, ast.Name):
        if node.id in _CONSTANTS:
            return _CONSTANTS[node.id]
        return symbol(node.id.replace("__prime__", "'"))
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        return _BINARY[type(node.op)](_build(node.left, text), _build(node.right, text))
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        value = _build(node.operand, text)
        return -value if isinstance(node.op, ast.USub) else value
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _FUNCTIONS
            and not node.keywords):
        return _FUNCTIONS[node.func.id](*(_build(a, text) for a in node.args))
    raise NcdError(f"not a size expression: {text!r}")


def to_text(expr: sympy.Expr) -> str:
    """sympy prints Euler's number as E, which is also the input-features axis: write its digits."""
    if isinstance(expr, sympy.Basic) and expr.has(sympy.E):
        expr = expr.xreplace({sympy.E: sympy.Float(sympy.E, 30)})
    return sympy.sstr(expr)


def resolve(axis: str, sizes: Mapping[str, str | None], bindings: Mapping[str, int],
            _seen: frozenset[str] = frozenset()) -> sympy.Expr:
    """The size of ``axis`` in terms of free axes, after substituting every known binding."""
    if axis in bindings:
        return sympy.Integer(bindings[axis])
    text = sizes.get(axis)
    if text is None or axis in _seen:
        return symbol(axis)
    expr = parse(text)
    subs = {s: resolve(s.name, sizes, bindings, _seen | {axis}) for s in expr.free_symbols}
    return expr.subs(subs) if subs else expr


def _tokens(text: str) -> list[str]:
    import re

    return re.findall(r"[A-Za-z_][A-Za-z0-9_]*'*", text)


def _safe(name: str) -> str:
    return name.replace("'", "__prime__")


def _escape(text: str) -> str:
    import re

    return re.sub(r"([A-Za-z_][A-Za-z0-9_]*)('+)", lambda m: m.group(1) + "__prime__" * len(m.group(2)), text)


def base_axis(axis: str) -> str:
    """A primed axis (T') is a second wire of its base axis (T) and has its size."""
    return axis.rstrip("'")


class AxisSizes:
    """The one size resolver of a checked spec: each axis's size after the bindings, as a sympy
    expression in the axes still free (a number where everything it needs is bound).

    The torch lowering, the CLI and the analyzer all read sizes through this (the analyzer with
    the declared numbers left out, so its formulas keep ``D`` rather than 512)."""

    def __init__(self, declared: Mapping[str, str | None], bindings: Mapping[str, int]) -> None:
        self.declared = declared
        self.bindings = bindings
        self._cache: dict[str, sympy.Expr] = {}

    @classmethod
    def of(cls, ir: SpecIR) -> AxisSizes:
        return cls({name: a.size for name, a in ir.axes.items()}, ir.bindings)

    def expr(self, axis: str) -> sympy.Expr:
        base = base_axis(axis)
        found = self._cache.get(base)
        if found is None:
            found = self._cache[base] = resolve(base, self.declared, self.bindings)
        return found

    def bound(self, axis: str) -> int | None:
        """The size as an int, or None while it depends on a free axis."""
        value = self.expr(axis)
        return int(value) if value.is_number and value.is_integer else None
