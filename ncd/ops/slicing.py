"""Range slices ``x[T = a:b as S]``: the positions a .. b-1 of axis T, as a new axis S.

The result is a new axis because its size differs from T's (every axis name has one size): it is
named with ``as``, and its size ``b − a`` is checked against S's declaration or inferred when S is
free. Bounds are numbers or integer polynomials in axis sizes (``1``, ``T - 1``, ``K``); a bound
that is negative for every size counts from the end (``-1`` is ``T − 1``, ``-K`` is ``T − K``), any
other from the start (``T - K``); a missing one is 0 or T. Bounds out of
range are refused when the sizes are known: at check time where they are bound, else at forward
(a free axis is read off the input), naming the axis.
"""
from __future__ import annotations

from typing import Any

import sympy

from ncd import sizes as sz
from ncd.ir import Node, WireType
from ncd.ops.base import Algebra, BinOp, Expr, LowerCtx, OpDef, TypeCtx, call, example_spec, lit
from ncd.ops.costing import free
from ncd.ops.dtypes import ANY

HINT = "bounds run from 0 to the axis size (a negative bound counts from the end): x[T = 1:-1 as S]"


def _bound(ctx: TypeCtx, text: str | None, default, n, which: str) -> sympy.Expr:
    """One bound as a position from the start: a negative one (provably) counts from the end."""
    if text is None:
        return default
    value = sz.parse(str(text))
    poly = value.as_poly(*value.free_symbols) if value.free_symbols else None
    if value.free_symbols and (poly is None or not all(c.is_integer for c in poly.coeffs())) \
            or (not value.free_symbols and not value.is_integer):
        raise ctx.error(f"the {which} bound {value} of a slice must be a whole number or a whole polynomial "
                        "in axis sizes", hint=HINT)
    # negative for every size (-1, -K) counts from the end; anything else (T - K) from the start,
    # and is checked against the range once the sizes are known
    return n + value if value.is_negative else value


def bounds(ctx: TypeCtx, t: WireType, attrs: dict[str, Any]) -> tuple[sympy.Expr, sympy.Expr]:
    """(start, stop) as positions from the start of the axis, checked where they are known."""
    n = ctx.sizes(attrs["axis"])
    start = _bound(ctx, attrs.get("start"), sympy.Integer(0), n, "start")
    stop = _bound(ctx, attrs.get("stop"), n, n, "stop")
    for cond, what in ((start, f"the start {start} is out of range"), (n - stop, f"the stop {stop} is out of range"),
                       (stop - start - 1, f"the slice {start}:{stop} is empty")):
        gap = sz.constant(cond)
        if gap is not None and gap < 0:
            raise ctx.error(f"{what} for axis {attrs['axis']} of size {n}", hint=HINT)
    return start, stop


def _infer_slice(ctx: TypeCtx, ins: list[WireType], attrs: dict[str, Any]) -> list[WireType]:
    (t,) = ins
    axis, dst = attrs["axis"], attrs["dst"]
    if axis not in t.axes:
        raise ctx.error(f"axis {axis} is not on this wire, whose axes are [{', '.join(t.axes)}]",
                        hint="slice one of the wire's axes")
    if dst in t.axes:
        raise ctx.error(f"the slice's axis {dst} is already on this wire [{', '.join(t.axes)}]",
                        hint=f"name the slice a new axis: x[{axis} = a:b as {axis}2] (declared: axis {axis}2)")
    start, stop = bounds(ctx, t, attrs)
    ctx.unify(dst, stop - start, f"the length of the slice {start}:{stop} of {axis}")
    return [WireType(axes=tuple(dst if a == axis else a for a in t.axes), lifted=t.lifted, dtype=t.dtype)]


def _size_code(value: sympy.Expr, ctx: LowerCtx) -> Expr:
    """A whole polynomial in axis sizes as an Expr: literals where bound, else reads of shapes."""
    if isinstance(value, sympy.Integer):
        return lit(int(value))
    if isinstance(value, sympy.Symbol):
        bound = ctx.size_of(value.name)
        return lit(bound) if bound is not None else ctx.size_expr(value.name)
    if isinstance(value, sympy.Pow) and isinstance(value.exp, sympy.Integer) and value.exp > 0:
        return BinOp("**", _size_code(value.base, ctx), lit(int(value.exp)))
    if isinstance(value, (sympy.Add, sympy.Mul)):
        parts = [_size_code(a, ctx) for a in value.args]
        out = parts[0]
        for p in parts[1:]:
            out = BinOp("+" if isinstance(value, sympy.Add) else "*", out, p)
        return out
    raise ValueError(f"not a size polynomial: {value}")  # _bound admits only whole polynomials


def _lower_slice(node: Node, ctx: LowerCtx) -> Expr:
    t = ctx.in_types[0]
    axis = node.attrs["axis"]
    n = sz.symbol(axis)
    start = _bound_text(node.attrs.get("start"), sympy.Integer(0), n)
    stop = _bound_text(node.attrs.get("stop"), n, n)
    dim = t.axes.index(axis) - len(t.axes)
    return call("rt.slice_range", ctx.refs[0], lit(dim), _size_code(sympy.expand(start), ctx),
                _size_code(sympy.expand(stop), ctx), lit(f"the slice of axis {axis}"))


def _bound_text(text: str | None, default, n) -> sympy.Expr:
    if text is None:
        return default
    value = sz.parse(str(text))
    return n + value if value.is_negative else value


OPS: tuple[OpDef, ...] = (
    OpDef("slice", "view", _infer_slice, _lower_slice, (1, 1), cost=free, view=True, algebra=Algebra("joint", "view"),
          doc="x[T = a:b as S]: positions a .. b-1 of T as the new axis S (size b - a; negative bounds count "
              "from the end)", syntax="x[T = a:b as S]", dtypes=ANY,
          label=lambda a: f"{a['axis']} = {a.get('start') or ''}:{a.get('stop') or ''} as {a['dst']}",
          example=example_spec("T = 6, D = 3, S", "x: [T, D]", "[S, D]", "return x[T = 1:-1 as S] * 2")),
)
