"""Which element types an op accepts, and what it gives: floats, integers (token ids), booleans.

A wire's ``dtype`` is part of its type. Each op-table row names one rule (``OpDef.dtypes``), and
the builder applies it after the axis typing, so a float/int mismatch is a check-time error at the
expression, with a hint, rather than a torch error at run time. A boolean mixes with floats as 0/1
(``x * (x > 0)``); an integer wire does not, except a scalar one (a loop index ``n``), which acts
as a number. Number literals follow the other operand: ``ids + 1`` stays an integer wire, and
``where(m, b, 0)`` of a boolean ``b`` a boolean one (0 and 1 are False and True there). Arithmetic
and reductions of booleans alone (``b + b``, ``sum(b, over = T)``) are float wires: the lowering
converts the booleans to the module's float dtype first, so the run time gives what the type says.
"""
from __future__ import annotations

import math

from collections.abc import Sequence
from typing import Any

from ncd.ir import WireType
from ncd.ops.base import TypeCtx

# FLOAT: every input a float (or bool, as 0/1); the result is what the axis typing gave (float).
# ARITH: + - * and friends: integers stay integers, a float anywhere makes a float, int with float is an error.
# COMPARE: as ARITH for the operands; the result is boolean.
# WHERE: a boolean condition, then two branches by the ARITH rule.
# SAME: all inputs of one dtype, which the result keeps (concat, split, views).
# ANY: the op's typing rule decides (lookups, argmax, one_hot, as_float()).
FLOAT, ARITH, COMPARE, WHERE, SAME, ANY = "float", "arith", "compare", "where", "same", "any"

# Ops whose result is one of their inputs' values: of booleans (and 0/1 literals), a boolean.
# Arithmetic on booleans (b + b, sum(b)) counts them as 0/1 and gives a float wire.
KEEPS_BOOL = frozenset({"max", "min", "where", "maximum", "minimum"})

FLOAT_HINT = "convert it: as_float(ids); or look rows up with it: E[V = ids]"


def _scalar_int(t: WireType) -> bool:
    """A loop index: an integer with no axes that is not lifted, used as a number."""
    return t.dtype == "int" and not t.axes and not t.lifted


def _name(t: WireType) -> str:
    return {"int": "an integer", "bool": "a boolean", "float": "a float"}[t.dtype]


def _arith(ctx: TypeCtx, op: str, ins: Sequence[WireType], numbers: Sequence[Any]) -> str:
    """The dtype of an arithmetic result; literals and loop indices adapt to the wires around them."""
    wires = [t for t, n in zip(ins, numbers) if n is None and not _scalar_int(t)]
    if any(t.dtype == "int" for t in wires):
        floats = [t for t in wires if t.dtype == "float"]
        if floats:
            raise ctx.error(f"{op} mixes an integer wire with a float wire",
                            hint="convert the integer wire first: as_float(ids)")
        for n in numbers:
            if n is not None and not (n.is_number and n.is_integer):
                raise ctx.error(f"{op} of an integer wire with the fractional number {n}",
                                hint="convert the integer wire first: as_float(ids)")
        return "int"
    if wires and all(t.dtype == "bool" for t in wires) and op in KEEPS_BOOL:
        if all(n is None or n in (0, 1) for n in numbers):  # where(m, b, 0), max(b, 1): 0/1 are False/True
            return "bool"
    return "float"


FLOAT32_MAX = 3.4028234663852886e38
INT64_MAX = 2**63 - 1


def _where_numbers_in_range(ctx: TypeCtx, dtype: str, numbers: Sequence[Any]) -> None:
    """torch.where takes a number as a scalar of the result's dtype and refuses one beyond its
    range (where an arithmetic op would round it to inf): 1e300 on a float32 wire, 10^30 on an
    integer one. inf is a float32 number."""
    for n in numbers:
        if n is None or not getattr(n, "is_number", False) or n.is_infinite:
            continue
        value = float(n) if n.is_finite else math.inf
        if dtype == "int" and abs(n) > INT64_MAX:
            raise ctx.error(f"the number {value:.3g} in where is beyond an integer wire's range (int64)",
                            hint="use a number within ±9.2e18")
        if dtype != "int" and math.isfinite(value) and abs(value) > FLOAT32_MAX:
            raise ctx.error(f"the number {value:.3g} in where is out of float32's range (±3.4e38), where "
                            "torch refuses it", hint="use a number within ±3.4e38, or inf")


def check(rule: str, ctx: TypeCtx, op: str, ins: Sequence[WireType], numbers: Sequence[Any],
          outs: list[WireType]) -> list[WireType]:
    """Apply one op's dtype rule: raise a located NcdError, or return the outputs with their dtype."""
    if rule == ANY:
        return outs
    if rule == FLOAT:
        for t, n in zip(ins, numbers):
            if n is None and t.dtype == "int" and not _scalar_int(t):
                raise ctx.error(f"{op} needs a float wire, but this one is an integer wire {t}", hint=FLOAT_HINT)
        return outs
    if rule == SAME:
        kinds = {t.dtype for t in ins}
        if len(kinds) > 1:
            raise ctx.error(f"{op} joins wires of different element types ({', '.join(sorted(kinds))})",
                            hint="convert them to one type first: as_float(ids)")
        return [o.model_copy(update={"dtype": ins[0].dtype}) for o in outs]
    if rule == WHERE:
        cond = ins[0]
        if numbers[0] is None and cond.dtype != "bool":
            raise ctx.error(f"the condition of where is {_name(cond)} wire, not a comparison",
                            hint="write a comparison: where(x > 0, a, b)")
        dtype = _arith(ctx, op, ins[1:], numbers[1:])
        _where_numbers_in_range(ctx, dtype, numbers[1:])
        return [o.model_copy(update={"dtype": dtype}) for o in outs]
    dtype = _arith(ctx, op, ins, numbers)
    if rule == COMPARE:
        return [o.model_copy(update={"dtype": "bool"}) for o in outs]
    return [o.model_copy(update={"dtype": dtype}) for o in outs]
