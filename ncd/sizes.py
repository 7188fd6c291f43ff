"""Axis sizes as sympy expressions: symbolic until the user binds them."""
from __future__ import annotations

import ast
import math
from collections.abc import Mapping
from functools import lru_cache
from typing import TYPE_CHECKING

import sympy

from ncd.errors import NcdError
from ncd.limits import (
    MAX_SIZE_BITS,
    MAX_SIZE_DEGREE,
    MAX_SIZE_DEPTH,
    MAX_SIZE_NODES,
    MAX_SIZE_TERMS,
    MAX_SIZE_TEXT,
    MAX_SIZE_VALUE,
)

if TYPE_CHECKING:
    from ncd.ir import SpecIR


def symbol(axis: str) -> sympy.Symbol:
    """Axis names may carry primes (T'), which sympy symbols accept as-is."""
    return sympy.Symbol(axis, positive=True, integer=True)


@lru_cache(maxsize=4096)
def parse(text: str) -> sympy.Expr:
    """Read back a size stored in the IR as text (sympy's printer wrote it, or a JSON file did).

    Parsed with Python's ``ast`` (which only parses) and rebuilt node by node from a short list
    of arithmetic forms, so no text — not even an edited IR JSON — is ever evaluated. The text's
    length, its number of nodes and their nesting are bounded before anything is built, and each
    power is checked before sympy computes it (``9**9**9`` would take hours).
    """
    shown = text if len(text) <= 60 else text[:57] + "..."
    if len(text) > MAX_SIZE_TEXT:
        raise NcdError(f"the size expression {shown!r} is {len(text)} characters long, more than the limit "
                       f"of {MAX_SIZE_TEXT}")
    try:
        tree = ast.parse(_escape(text.strip()), mode="eval")
    except (SyntaxError, ValueError):
        raise NcdError(f"not a size expression: {shown!r}") from None
    except (RecursionError, MemoryError):
        raise NcdError(f"the size expression {shown!r} nests more deeply than the limit of {MAX_SIZE_DEPTH}") from None
    _check_shape(tree.body, shown)
    value = _build(tree.body, text)
    if not math.isinf(size_degree(value)):  # exp(D) is a number's formula; its value is bounded at substitution
        check_degree(value, f"the size expression {shown!r}")
    return value


def _check_shape(root: ast.AST, shown: str) -> None:
    """Count nodes and nesting without recursion, so a 10⁵-term sum is refused, not a RecursionError."""
    stack, count = [(root, 1)], 0
    while stack:
        node, depth = stack.pop()
        count += 1
        if count > MAX_SIZE_NODES:
            raise NcdError(f"the size expression {shown!r} has more than {MAX_SIZE_NODES} terms and operators, "
                           f"the limit")
        if depth > MAX_SIZE_DEPTH:
            raise NcdError(f"the size expression {shown!r} nests more deeply than the limit of {MAX_SIZE_DEPTH}")
        stack.extend((child, depth + 1) for child in ast.iter_child_nodes(node))


_FUNCTIONS = {"sqrt": sympy.sqrt, "exp": sympy.exp, "log": sympy.log, "Abs": sympy.Abs,
              "floor": sympy.floor, "ceiling": sympy.ceiling, "Max": sympy.Max, "Min": sympy.Min,
              "Rational": sympy.Rational, "Integer": sympy.Integer, "Float": sympy.Float}
_CONSTANTS = {"pi": sympy.pi, "oo": sympy.oo, "zoo": sympy.zoo, "nan": sympy.nan}
_SYMPY_NAMES = frozenset(_FUNCTIONS) | frozenset(_CONSTANTS)
_BINARY = {ast.Add: lambda a, b: a + b, ast.Sub: lambda a, b: a - b, ast.Mult: lambda a, b: a * b,
           ast.Div: lambda a, b: a / b, ast.Pow: lambda a, b: _power(a, b), ast.Mod: lambda a, b: sympy.Mod(a, b),
           ast.FloorDiv: lambda a, b: sympy.floor(a / b)}


def _power(a: sympy.Expr, b: sympy.Expr) -> sympy.Expr:
    bits = magnitude_bits(a) * abs(_bound(b)) if b.is_number else 0.0
    if bits > MAX_SIZE_BITS:
        raise NcdError(f"the power ({a})**({b}) has about {bits:.3g} bits, more than the limit of {MAX_SIZE_BITS}")
    return a**b


def _build(node: ast.AST, text: str) -> sympy.Expr:
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
        if isinstance(node.value, float) and not math.isfinite(node.value):
            raise NcdError(f"the size expression {text[:60]!r} holds a number out of range")
        if isinstance(node.value, int) and node.value.bit_length() > MAX_SIZE_BITS:
            raise NcdError(f"the size expression {text[:60]!r} holds a number of more than {MAX_SIZE_BITS} bits")
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
        args = [_build(a, text) for a in node.args]
        if node.func.id == "exp" and len(args) == 1 and args[0].is_number and _bound(args[0]) > MAX_SIZE_BITS:
            raise NcdError(f"the size expression {text[:60]!r} holds exp of a number beyond the limit")
        try:
            return _FUNCTIONS[node.func.id](*args)
        except (TypeError, ValueError):
            raise NcdError(f"not a size expression: {text[:60]!r}") from None
    raise NcdError(f"not a size expression: {text!r}")


def to_text(expr: sympy.Expr) -> str:
    """sympy prints Euler's number as E, which is also the input-features axis: write its digits."""
    if isinstance(expr, sympy.Basic):
        return _basic_text(expr)
    return sympy.sstr(expr)


@lru_cache(maxsize=8192)
def _basic_text(expr: sympy.Basic) -> str:
    """``to_text`` of a sympy expression, memoised: every number node of a spec prints its value
    (``4*D - 1`` takes 0.2 ms), and the same few values recur."""
    if expr.has(sympy.E):
        expr = expr.xreplace({sympy.E: sympy.Float(sympy.E, 30)})
    return sympy.sstr(expr)


def resolve(axis: str, sizes: Mapping[str, str | None], bindings: Mapping[str, int],
            _seen: frozenset[str] = frozenset()) -> sympy.Expr:
    """The size of ``axis`` in terms of free axes, after substituting every known binding."""
    if axis in bindings:
        value = bindings[axis]
        if isinstance(value, int) and abs(value) > MAX_SIZE_VALUE:
            raise NcdError(f"axis {axis} is bound to {value}, more than the limit of {MAX_SIZE_VALUE} (2^63 - 1)")
        return sympy.Integer(value)
    text = sizes.get(axis)
    if text is None or axis in _seen:
        return symbol(axis)
    expr = parse(text)
    subs = {s: resolve(s.name, sizes, bindings, _seen | {axis}) for s in expr.free_symbols}
    return substitute(expr, subs, f"the size of axis {axis}") if subs else expr


# ------------------------------------------------------------------ bounds on size expressions
def check_degree(expr: sympy.Expr, what: str) -> None:
    """Refuse a size polynomial of degree above the limit before sympy expands or simplifies it."""
    degree = size_degree(expr)
    if math.isinf(degree):
        raise NcdError(f"{what} has an axis in an exponent, so its degree in the axes is unbounded",
                       hint=f"sizes are polynomials of degree at most {MAX_SIZE_DEGREE} in the axes")
    if degree > MAX_SIZE_DEGREE:
        raise NcdError(f"{what} has degree {_fmt(degree)} in its axes, more than the limit of {MAX_SIZE_DEGREE}",
                       hint="sizes are products and quotients of a few axes; a power of a power is a typo")
    terms = size_terms(expr)
    if terms > MAX_SIZE_TERMS:
        raise NcdError(f"{what} expands to about {_fmt(terms)} terms, more than the limit of {MAX_SIZE_TERMS}",
                       hint="sizes are products and quotients of a few axes")


def size_terms(expr: sympy.Expr) -> float:
    """An upper bound on the number of monomials ``expr`` expands to (what simplify works on)."""
    if not isinstance(expr, sympy.Basic) or not expr.free_symbols or not expr.args:
        return 1.0
    if expr.is_Add:
        return sum(size_terms(a) for a in expr.args)
    if expr.is_Mul:
        return math.prod(size_terms(a) for a in expr.args)
    if expr.is_Pow:
        base, exp = expr.args
        inner = size_terms(base)
        if exp.is_Integer and int(exp) > 0 and inner > 1:
            n = int(exp)
            return float(math.comb(int(min(inner, 10**6)) + n - 1, n)) if n < 10**4 else math.inf
        return inner
    return sum(size_terms(a) for a in expr.args)


def size_degree(expr: sympy.Expr) -> float:
    """An upper bound on the total degree of ``expr`` in its symbols (inf for a symbolic exponent)."""
    if not isinstance(expr, sympy.Basic) or not expr.free_symbols:
        return 0.0
    if expr.is_Symbol:
        return 1.0
    if expr.is_Mul:
        return sum(size_degree(a) for a in expr.args)
    if expr.is_Pow:
        base, exp = expr.args
        if exp.free_symbols:
            return math.inf
        return size_degree(base) * abs(_bound(exp))
    if expr.func in (sympy.exp,):
        return math.inf
    return max((size_degree(a) for a in expr.args), default=0.0)


def magnitude_bits(expr: sympy.Expr, values: Mapping[sympy.Symbol, object] | None = None) -> float:
    """An upper bound on the bits of ``expr``'s numbers once ``values`` replace its symbols.

    Computed with floats from the expression tree, so it costs nothing even where the exact value
    would have billions of digits; unbound symbols count as small.
    """
    if isinstance(expr, (int, float)):
        return math.log2(abs(expr) + 1) if math.isfinite(expr) else 0.0
    if expr.is_Symbol:
        value = (values or {}).get(expr)
        return magnitude_bits(value, None) if isinstance(value, (sympy.Basic, int, float)) else 0.0
    if expr.is_Integer:
        return float(abs(int(expr)).bit_length())
    if expr.is_Rational:
        return float(max(abs(int(expr.p)).bit_length(), int(expr.q).bit_length()))
    if expr.is_Float:
        f = abs(float(expr))
        return abs(math.log2(f)) + 1 if f not in (0.0, math.inf) else 0.0
    if expr.is_Number or expr.is_NumberSymbol or not expr.args:
        return 0.0
    if expr.is_Mul:
        return sum(magnitude_bits(a, values) for a in expr.args)
    if expr.is_Add:
        return max(magnitude_bits(a, values) for a in expr.args) + math.log2(len(expr.args))
    if expr.is_Pow:
        base, exp = expr.args
        if exp.is_number:
            return magnitude_bits(base, values) * _bound(exp)
        exp_bits = magnitude_bits(exp, values)
        return math.inf if exp_bits > 60 else magnitude_bits(base, values) * 2.0**exp_bits
    if expr.func is sympy.exp:
        arg_bits = magnitude_bits(expr.args[0], values)
        return math.inf if arg_bits > 60 else 1.5 * 2.0**arg_bits
    return max(magnitude_bits(a, values) for a in expr.args)


def substitute(expr: sympy.Expr, subs: Mapping[sympy.Symbol, object], what: str) -> sympy.Expr:
    """``expr.subs(subs)``, refused when the numbers it would compute exceed the limit."""
    bits = magnitude_bits(expr, subs)
    if bits > MAX_SIZE_BITS:
        raise NcdError(f"{what} at the bound sizes has about {_fmt(bits)} bits, more than the limit of "
                       f"{MAX_SIZE_BITS}", hint="bind smaller sizes")
    return expr.subs(subs)


def _bound(number: sympy.Expr) -> float:
    try:
        return abs(float(number))
    except (TypeError, ValueError, OverflowError):
        return math.inf


def _fmt(value: float) -> str:
    return "unbounded" if math.isinf(value) else f"{value:.4g}"


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


@lru_cache(maxsize=4096)
def simplify(expr: sympy.Expr) -> sympy.Expr:
    """``sympy.simplify``, memoised: a spec asks for the same few sizes again and again (each conv's
    output size, at build and again at every verify after a pass), and one call costs milliseconds
    even for ``4*Y2 - 1``. Expressions are immutable and hash structurally, so a hit is the result
    sympy would return."""
    return sympy.simplify(expr)


def constant(expr: sympy.Expr) -> sympy.Expr | None:
    """The number a size expression equals whatever the axes' sizes, or None where it varies. A
    polynomial is decided by expanding it (what ``simplify`` would conclude, in microseconds
    instead of milliseconds); the rest (floor, Min, quotients) goes through ``simplify``."""
    if expr.is_number:
        return expr
    if expr.is_polynomial():
        expanded = sympy.expand(expr)
        return expanded if expanded.is_number else None
    simplified = simplify(expr)
    return simplified if simplified.is_number else None


def whole_roots(equation: sympy.Expr, symbol: sympy.Symbol, most: int = 3) -> list[int]:
    """Up to ``most`` + 1 whole sizes n ≥ 1 with ``equation`` = 0 at ``symbol`` = n, for an equation
    sympy cannot invert that moves one way as the axis grows (a strided conv's or pool's output
    size, ``floor((Y - 3)/2) + 1``, minus a bound size): a bisection for the first n where it
    reaches 0, then the run of n that stay there. Each root is checked, so a formula that is not
    monotone can only make the list short, never wrong."""
    def at(n: int) -> sympy.Expr:
        return equation.subs(symbol, n)

    top = 2**62
    sign = 1 if at(top) >= at(1) else -1
    if sign * at(1) > 0 or sign * at(top) < 0:
        return []
    lo, hi = 1, top  # the first n with sign * at(n) >= 0
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if sign * at(mid) >= 0 else (mid + 1, hi)
    roots = []
    while len(roots) <= most and at(lo) == 0:
        roots.append(lo)
        lo += 1
    return roots


def simplify_bounded(expr: sympy.Expr, what: str) -> sympy.Expr:
    """``sympy.simplify``, after the degree and term bounds (its cost grows fast with both)."""
    check_degree(expr, what)
    return simplify(expr)
