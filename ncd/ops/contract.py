"""Contraction by axis identity: `a @[X, Y] b` sums the named axes, keeps every other."""
from __future__ import annotations

import string
from typing import Any

import sympy

from ncd.ir import Node, WireType
from ncd.ops.base import CONTRACT, Algebra, AxisList, Expr, LowerCtx, Masked, OpDef, TypeCtx, call, example_spec, lit
from ncd.ops.costing import Save, Size

_LETTERS = string.ascii_lowercase + string.ascii_uppercase


def _infer(ctx: TypeCtx, ins: list[WireType], attrs: dict[str, Any]) -> list[WireType]:
    left, right = ins
    named = attrs.get("axes")
    if named is None:
        shared = [a for a in left.axes if a in right.axes]
        if len(shared) != 1:
            which = f"[{', '.join(shared)}]" if shared else "no axis"
            raise ctx.error(
                f"ambiguous contraction: the operands share {which}",
                hint="name the axes to sum, e.g. a @[D] b (use * for an outer product)",
                at="@",
            )
        named = shared
        attrs["axes"] = list(named)
    for axis in named:
        for side, t in (("left", left), ("right", right)):
            if axis not in t.axes:
                raise ctx.error(
                    f"cannot contract axis {axis}: it is not on the {side} operand, whose axes are "
                    f"[{', '.join(t.axes)}]",
                    hint="contract only axes both operands carry; rename one with x[A as B]",
                    at=f"axis {axis}",
                )
    kept = [a for a in left.axes if a not in named]
    kept += [a for a in right.axes if a not in named and a not in kept]
    return [WireType(axes=tuple(kept), lifted=left.lifted or right.lifted)]


def einsum_equation(left: WireType, right: WireType, out: WireType) -> str:
    letters = {}
    for axis in (*left.axes, *right.axes):
        letters.setdefault(axis, _LETTERS[len(letters)])

    def term(t: WireType) -> str:
        return ("..." if t.lifted else "") + "".join(letters[a] for a in t.axes)

    return f"{term(left)},{term(right)}->{term(out)}"


def _lower(node: Node, ctx: LowerCtx) -> Expr:
    left, right = ctx.in_types
    return call("torch.einsum", lit(einsum_equation(left, right, node.type)), *ctx.refs)


def bmm_groups(left: WireType, right: WireType, out: WireType):
    """How torch.einsum runs ``left @ right``: (left groups, right groups, output memory order).

    At::einsum orders labels as the output (lifted dims "..." first) then the summed ones, and
    hands sumproduct_pair two operands reshaped to ``[batch, left-only, summed]`` and
    ``[batch, summed, right-only]`` for one bmm, whose result is ``[batch, left-only, right-only]``.
    """
    lifted = ("...",) if out.lifted else ()
    summed = [a for a in (*left.axes, *right.axes) if a not in out.axes]
    order = [*lifted, *out.axes, *dict.fromkeys(summed)]
    on_left = set(left.axes) | ({"..."} if left.lifted else set())
    on_right = set(right.axes) | ({"..."} if right.lifted else set())
    batch = tuple(a for a in order if a in on_left and a in on_right and a not in summed)
    lo = tuple(a for a in order if a in on_left and a not in on_right)
    ro = tuple(a for a in order if a in on_right and a not in on_left)
    total = tuple(a for a in order if a in summed)
    return (batch, lo, total), (batch, total, ro), batch + lo + ro


def _cost(node: Node, ins, size: Size) -> dict[str, Any]:
    """2 FLOPs per multiply-add over every axis of both operands; each gradient is one more bmm."""
    left, right = ins
    axes = dict.fromkeys((*left.axes, *right.axes))
    flops = 2 * sympy.Mul(*[size(a) for a in axes])
    if left.lifted or right.lifted:
        flops *= size("...")
    gl, gr, layout = bmm_groups(left, right, node.type)
    if sympy.Mul(*[size(a) for a in axes if a not in node.type.axes]) == 1:
        # nothing to sum (unit axes): torch.einsum multiplies elementwise, no bmm
        n = flops / 2
        return {"flops": n, "bwd": (n, n), "layout": "follow",
                "saves": [Save("in", 0, when=1), Save("in", 1, when=0)]}
    return {"matmul": flops, "matmul_bwd": (flops, flops), "layout": layout,
            "saves": [Save("in", 0, when=1, groups=gl), Save("in", 1, when=0, groups=gr)]}


OPS: tuple[OpDef, ...] = (
    OpDef("contract", "contract", _infer, _lower, (2, 2), cost=_cost, draw="@", algebra=Algebra("product", "axes"),
          arith=CONTRACT, masked=Masked(ignores="0"),
          title=lambda a, numbers: ("@", AxisList(tuple(a.get("axes") or ()))),
          doc="a @[X] b: sum over the named axes; shared unnamed axes are kept (batch-like)", syntax="a @[X] b",
          example=example_spec("A = 3, B = 4, C = 5", "x: [A, B], y: [B, C]", "[A, C]", "return x @[B] y")),
)
