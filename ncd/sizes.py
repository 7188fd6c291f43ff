"""Axis sizes as sympy expressions: symbolic until the user binds them."""
from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache

import sympy


def symbol(axis: str) -> sympy.Symbol:
    """Axis names may carry primes (T'), which sympy symbols accept as-is."""
    return sympy.Symbol(axis, positive=True, integer=True)


@lru_cache(maxsize=4096)
def parse(text: str) -> sympy.Expr:
    """Read back a size stored in the IR as text (sympy's own printer wrote it)."""
    names = {}
    for token in _tokens(text):
        if token not in _SYMPY_NAMES:  # sstr writes these for folded numbers: sqrt(6)/8, pi/2, oo
            names[_safe(token)] = symbol(token)
    return sympy.sympify(_escape(text), locals=names)


_SYMPY_NAMES = frozenset({"sqrt", "exp", "log", "Abs", "pi", "oo", "zoo", "nan"})


def to_text(expr: sympy.Expr) -> str:
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
