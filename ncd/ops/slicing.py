"""Range slices ``x[T = a:b -> S]`` and the elementwise extremes ``max(a, b)`` / ``min(a, b)``.

A slice keeps positions ``a, a+1, ..., b-1`` of axis ``T``. Its bounds are size formulas (``1``,
``T - 1``, ``T / 2``); a negative number counts from the end, as in Python (``-1`` is ``T - 1``), and
an omitted bound is the start or the end. Because a wire's axis has one size, a slice that is
shorter than ``T`` names its result axis (``-> S``, whose size is inferred or checked as ``b - a``);
without an arrow the slice must keep the whole axis.
"""
from __future__ import annotations

from typing import Any

import sympy

from ncd import sizes as sz
from ncd.ir import Node, WireType
from ncd.ops.base import BinOp, Expr, Lit, LowerCtx, OpDef, TypeCtx, call, lit
from ncd.ops.costing import Save, elementwise, free
from ncd.ops.dtypes import ANY, ARITH
from ncd.ops.layout import align, neg_dim, union_axes


# ----------------------------------------------------------------------------- x[T = a:b -> S]
def _infer_slice(ctx: TypeCtx, ins: list[WireType], attrs: dict[str, Any]) -> list[WireType]:
    (t,) = ins
    axis, dst = attrs["axis"], attrs["dst"]
    if axis not in t.axes:
        raise ctx.error(f"axis {axis} is not on this wire, whose axes are [{', '.join(t.axes)}]",
                        hint="slice one of the wire's axes: x[T = a:b -> S]")
    if dst != axis and dst in t.axes:
        raise ctx.error(f"axis {dst} is already on this wire", hint="name the sliced axis with a new axis")
    start, stop = sz.parse(attrs["start"]), sz.parse(attrs["stop"])
    size = ctx.sizes(axis)
    length = sympy.simplify(stop - start)
    for name, value in (("start", start), ("end", stop)):
        low, high = sympy.simplify(value), sympy.simplify(size - value)
        if (low.is_number and low < 0) or (high.is_number and high < 0):
            raise ctx.error(f"the slice's {name} {value} is outside axis {axis} of size {size}",
                            hint=f"bounds run from 0 to {size}; a negative number counts from the end")
    if length.is_number and length <= 0:
        raise ctx.error(f"this slice of axis {axis} is empty ({start}:{stop})",
                        hint="the end must come after the start")
    if dst == axis:
        if sympy.simplify(length - size) != 0:
            raise ctx.error(f"this slice keeps {length} of the {size} positions of axis {axis}, so it needs its "
                            f"own axis", hint=f"name it: x[{axis} = {attrs['start']}:{attrs['stop']} -> S] "
                            f"with axis S declared")
    else:
        ctx.unify(dst, length, f"the length of the slice {start}:{stop} of {axis}")
    out = tuple(dst if a == axis else a for a in t.axes)
    return [WireType(axes=out, lifted=t.lifted, dtype=t.dtype)]


def _size_code(value: sympy.Expr, ctx: LowerCtx) -> Expr:
    """A bound as a run-time integer: literal where the sizes are bound, else read from the inputs."""
    subs = {s: ctx.size_of(s.name) for s in value.free_symbols if ctx.size_of(s.name) is not None}
    value = sympy.simplify(value.subs(subs)) if subs else value
    if value.is_number:
        return lit(int(value))
    return _code(value, ctx)


def _code(value: sympy.Expr, ctx: LowerCtx) -> Expr:
    if value.is_Integer:
        return lit(int(value))
    if value.is_Symbol:
        return ctx.size_expr(value.name)
    if value.is_Add:
        terms = [_code(a, ctx) for a in value.args]
        out = terms[0]
        for term in terms[1:]:
            out = BinOp("+", out, term)
        return out
    if value.is_Mul:
        coeff, rest = value.as_coeff_Mul()
        body = _code(rest, ctx)
        coeff = sympy.Rational(coeff)
        if coeff.p != 1:
            body = BinOp("*", lit(int(coeff.p)), body)
        return BinOp("//", body, lit(int(coeff.q))) if coeff.q != 1 else body
    raise ValueError(f"a slice bound {value} cannot be computed at run time")


def _lower_slice(node: Node, ctx: LowerCtx) -> Expr:
    t = ctx.in_types[0]
    start, stop = sz.parse(node.attrs["start"]), sz.parse(node.attrs["stop"])
    begin = _size_code(start, ctx)
    length = _size_code(sympy.simplify(stop - start), ctx)
    if isinstance(begin, Lit) and begin.value == 0 and node.attrs["dst"] == node.attrs["axis"]:
        return ctx.refs[0]
    return call("torch.narrow", ctx.refs[0], lit(neg_dim(t.axes, node.attrs["axis"])), begin, length)


# ----------------------------------------------------------------------------- max(a, b), min(a, b)
def _infer_extreme(ctx: TypeCtx, ins: list[WireType], attrs: dict[str, Any]) -> list[WireType]:
    return [WireType(axes=union_axes(ins), lifted=any(t.lifted for t in ins))]


def _lower_extreme(torch_fn: str, bound: str):
    def lower(node: Node, ctx: LowerCtx) -> Expr:
        out = node.type.axes
        aligned = [align(ref, t, out) for ref, t in zip(ctx.refs, ctx.in_types)]
        numbers = [i for i, t in enumerate(ctx.in_types) if not t.axes and not t.lifted]
        if len(numbers) == 1:  # a wire and a number: clamp (torch.maximum takes two tensors)
            wire = aligned[1 - numbers[0]]
            value = ctx.refs[numbers[0]]
            return call("rt.clamp_to", wire, value, lit(bound))
        return call(torch_fn, *aligned)

    return lower


# max(a, b) saves both inputs (its gradient goes to the larger one)
_EXTREME_COST = elementwise(1, saves=(Save("in", 0), Save("in", 1)))

OPS: tuple[OpDef, ...] = (
    OpDef("slice", "view", _infer_slice, _lower_slice, (1, 1), cost=free, draw="slice",
          doc="x[T = a:b -> S]: positions a to b - 1 of T, as axis S (negative bounds count from the end)",
          dtypes=ANY),
    OpDef("maximum", "elementwise", _infer_extreme, _lower_extreme("torch.maximum", "min"), (2, 2),
          cost=_EXTREME_COST, draw="max", doc="max(a, b): the larger of two wires, elementwise (aligned by name)",
          dtypes=ARITH),
    OpDef("minimum", "elementwise", _infer_extreme, _lower_extreme("torch.minimum", "max"), (2, 2),
          cost=_EXTREME_COST, draw="min", doc="min(a, b): the smaller of two wires, elementwise (aligned by name)",
          dtypes=ARITH),
)
