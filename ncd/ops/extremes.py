"""Elementwise extremes ``max(a, b)`` / ``min(a, b)``: two wires aligned by name (or a wire and a number).

They share their names with the reductions ``max(x, over = A)``; the builder picks these rows for a
call with two inputs and no ``over``.
"""
from __future__ import annotations

from typing import Any

from ncd.ir import Node, WireType
from ncd.ops.base import Expr, LowerCtx, OpDef, TypeCtx, call, example_spec, lit
from ncd.ops.costing import Save, elementwise
from ncd.ops.dtypes import ARITH
from ncd.ops.layout import align, union_axes


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
        if len(numbers) == 2:  # a scalar wire (a [] parameter) and a number, or two of either
            return call("rt.extreme_of", *aligned, lit(bound))
        return call(torch_fn, *aligned)

    return lower


def _EXTREME_COST(node: Node, ins, size) -> dict[str, Any]:
    """One comparison per element; torch.maximum keeps both inputs, a clamp by a number keeps its wire."""
    numbers = [i for i, t in enumerate(ins) if not t.axes and not t.lifted]
    saves = (Save("in", 1 - numbers[0]),) if len(numbers) == 1 else (Save("in", 0), Save("in", 1))
    return elementwise(1, saves=saves)(node, ins, size)

OPS: tuple[OpDef, ...] = (
    OpDef("maximum", "elementwise", _infer_extreme, _lower_extreme("torch.maximum", "min"), (2, 2),
          cost=_EXTREME_COST, draw="max", doc="max(a, b): the larger of two wires, elementwise (aligned by name)",
          dtypes=ARITH, syntax="max(a, b)",
          example=example_spec("A = 3, B = 4", "x: [A, B], y: [B]", "[A, B]", "return max(x, y) + min(x, 0.5)")),
    OpDef("minimum", "elementwise", _infer_extreme, _lower_extreme("torch.minimum", "max"), (2, 2),
          cost=_EXTREME_COST, draw="min", doc="min(a, b): the smaller of two wires, elementwise (aligned by name)",
          dtypes=ARITH, syntax="min(a, b)",
          example=example_spec("A = 3, B = 4", "x: [A, B], y: [B]", "[A, B]", "return min(x, y) + max(x, -0.5)")),
)
