"""Linear algebra on a pair of named axes: the matrix inverse (LSSL's bilinear discretisation)."""
from __future__ import annotations

from typing import Any

from ncd import sizes as sz
from ncd.ir import Node, WireType
from ncd.ops.base import AXES, Algebra, Expr, Kw, LowerCtx, OpDef, TypeCtx, call, example_spec
from ncd.ops.costing import Save, numel
from ncd.ops.layout import permute_to


def _infer_inv(ctx: TypeCtx, ins: list[WireType], attrs: dict[str, Any]) -> list[WireType]:
    t = ins[0]
    over = attrs["over"]
    over = list(over) if isinstance(over, (list, tuple)) else [over]
    if len(over) != 2 or over[0] == over[1]:
        raise ctx.error("inv needs two axes: over = [R, C] (the rows, then the columns)", at="over",
                        hint="name two different axes of the same size: inv(x, over = [N, N'])")
    for axis in over:
        if axis not in t.axes:
            raise ctx.error(f"axis {axis} is not on this wire, whose axes are [{', '.join(t.axes)}]",
                            hint="name two of the wire's axes in over = [R, C]", at="over")
    rows, cols = (ctx.sizes(a) for a in over)
    if sz.simplify_bounded(rows - cols, "the matrix's sizes") != 0:
        raise ctx.error(f"inv needs a square matrix: axis {over[0]} has size {rows} but {over[1]} has {cols}",
                        at="over", hint="invert over two axes of one size, such as N and its prime N'")
    return [WireType(axes=t.axes, lifted=t.lifted, dtype=t.dtype)]


def _lower_inv(node: Node, ctx: LowerCtx) -> Expr:
    """Move [R, C] last, torch.linalg.inv (rt.inv: half types upcast), move them back: the other axes
    are batch axes."""
    axes = list(ctx.in_types[0].axes)
    rows, cols = node.attrs["over"]
    last = [a for a in axes if a not in (rows, cols)] + [rows, cols]
    inverse = call("rt.inv", permute_to(ctx.refs[0], axes, last))  # half types in float32
    return permute_to(inverse, last, axes)


def _inv_cost(node: Node, ins, size) -> dict[str, Any]:
    """LU with partial pivoting and two triangular solves: about 2n³ FLOPs per matrix; the
    gradient -A⁻ᵀ g A⁻ᵀ is two matrix products (2 · 2n³, which FlopCounterMode counts)."""
    rows = node.attrs["over"][0]
    n = size(rows)
    matrices = numel(ins[0], size) / (n * n)
    return {"flops": 2 * n**3 * matrices, "matmul_bwd": (4 * n**3 * matrices,), "saves": [Save("out", 0)]}


OPS: tuple[OpDef, ...] = (
    OpDef("inv", "linalg", _infer_inv, _lower_inv, kwargs={"over": Kw(AXES, required=True)}, cost=_inv_cost,
          draw="inv", algebra=Algebra(mixes="all"),
          example=example_spec("A = 3, B = 3, C = 2", "x: [A, B, C]", "[A, B, C]", "return inv(x, over = [A, B])"),
          doc="inv(x, over = [R, C]): matrix inverse over rows R and columns C; the result keeps the wire's axes"),
)
