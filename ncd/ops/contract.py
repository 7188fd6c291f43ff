"""Contraction by axis identity: `a @[X, Y] b` sums the named axes, keeps every other."""
from __future__ import annotations

import string
from typing import Any

from ncd.ir import Node, WireType
from ncd.ops.base import Expr, LowerCtx, OpDef, TypeCtx, call, lit

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


OPS: tuple[OpDef, ...] = (
    OpDef("contract", "contract", _infer, _lower, (2, 2), draw="@",
          doc="a @[X] b: sum over the named axes; shared unnamed axes are kept (batch-like)"),
)
