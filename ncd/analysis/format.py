"""Formulas and numbers as people write them: ``24·B·T·D² + 4·B·T²·D``, ``3.15 M``."""
from __future__ import annotations

import sympy

_SUPERSCRIPT = str.maketrans("0123456789-", "⁰¹²³⁴⁵⁶⁷⁸⁹⁻")


def pretty(expr) -> str:
    """A polynomial in axis sizes, terms by decreasing degree, · for products, superscript powers."""
    expr = sympy.expand(sympy.sympify(expr))
    if expr.is_number:
        return str(expr)
    terms = sympy.Add.make_args(expr)
    syms = sorted(expr.free_symbols, key=lambda s: s.name)
    order = _symbol_order(syms)

    def key(term):  # by degree, then the larger coefficient first: 24·B·T·D² + 4·B·T²·D
        powers = term.as_powers_dict()
        degree = sum(int(p) if p.is_number else 1 for s, p in powers.items() if s.is_Symbol)
        coeff = term.as_coeff_Mul()[0]
        return (-degree, -abs(float(coeff)), str(term))

    parts = [_term(t, order) for t in sorted(terms, key=key)]
    text = " + ".join(parts)
    return text.replace("+ -", "- ")


def _symbol_order(syms):
    """B, T first (batch, sequence), then the others alphabetically: 24·B·T·D², as papers write it."""
    lead = [s for name in ("B", "T") for s in syms if s.name == name]
    return lead + [s for s in syms if s not in lead]


def _term(term, order) -> str:
    coeff, rest = term.as_coeff_Mul()
    powers = rest.as_powers_dict()
    factors = []
    for s in order:
        p = powers.pop(s, 0)
        if p == 0:
            continue
        factors.append(s.name + (str(p).translate(_SUPERSCRIPT) if p != 1 else ""))
    for other, p in powers.items():  # anything not a plain symbol power (log, ...)
        if other != 1:
            factors.append(str(other if p == 1 else other**p))
    if coeff == 1 and factors:
        return "·".join(factors)
    if coeff == -1 and factors:
        return "-" + "·".join(factors)
    coeff_text = str(coeff) if not coeff.is_Rational or coeff.q == 1 else f"({coeff})"
    return "·".join([coeff_text, *factors])


def human(value, unit: str = "") -> str:
    """3152384 → '3.15 M', with an optional unit; None → '-'."""
    if value is None:
        return "-"
    for scale, suffix in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:.3g} {suffix}{unit}"
    return f"{value:g} {unit}".rstrip()
