"""The load-time shortcuts of ncd/sizes.py agree with what they replace.

``sz.constant`` decides whether a size is the same number at every binding (expansion for
polynomials, ``sympy.simplify`` otherwise); the expected values are worked out by hand in the
comments, and each symbolic case is also checked at sample bindings. ``sz.simplify`` and
``sz.to_text`` are memoised: a hit must return what sympy returns for the same expression.
"""
from __future__ import annotations

import pytest
import sympy

from ncd import sizes as sz

Y, X = sz.symbol("Y"), sz.symbol("X")

CASES = [
    ("number", sympy.Integer(3) - 5, -2),
    ("poly-cancels", (Y + 1) ** 2 - Y**2 - 2 * Y, 1),  # Y² + 2Y + 1 − Y² − 2Y
    ("product-cancels", 2 * (Y + 3) - 2 * Y, 6),
    ("poly-varies", 4 * Y - 1, None),
    ("two-axes-vary", Y * X - X * Y + X, None),
    ("floor-cancels", sympy.floor(Y / 2) - sympy.floor(Y / 2) + 7, 7),  # sympy cancels the floors itself
    ("floor-varies", sympy.floor((Y - 1) / 2) + 1, None),
    ("quotient-cancels", (Y**2 - 1) / (Y - 1) - Y, 1),  # (Y − 1)(Y + 1)/(Y − 1) − Y, through simplify
]


@pytest.mark.parametrize("expr, want", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_constant(expr: sympy.Expr, want: int | None) -> None:
    got = sz.constant(expr)
    if want is None:
        assert got is None
        values = {int(expr.subs({Y: n, X: n + 2})) for n in (2, 5, 8, 11)}
        assert len(values) > 1  # it does vary, so None is right
    else:
        assert got == want
        assert all(expr.subs({Y: n, X: n + 2}) == want for n in (2, 5, 8, 11))


def test_memoised_simplify_and_text_match_sympy() -> None:
    expr = sympy.floor((sympy.floor((Y - 1) / 2) + 1 - 1) / 2) + 1
    assert sz.simplify(expr) == sympy.simplify(expr)
    assert sz.simplify(expr) is sz.simplify(expr)  # the second call is a hit
    assert sz.to_text(4 * Y - 1) == sympy.sstr(4 * Y - 1) == "4*Y - 1"
    assert sz.to_text(sympy.E * Y) != "E*Y"  # Euler's number is written as digits (E is an axis name)
    assert sz.to_text(0.5) == "0.5" and sz.to_text(1) == "1"  # plain Python numbers bypass the memo
