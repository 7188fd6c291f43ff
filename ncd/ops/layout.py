"""Lining wires up by axis name: the one place that turns names into dimension positions."""
from __future__ import annotations

from collections.abc import Sequence

from ncd.ir import WireType
from ncd.ops.base import Expr, Index, call, lit


def union_axes(types: Sequence[WireType]) -> tuple[str, ...]:
    """Elementwise result axes: the first operand's, then each new axis in order of appearance."""
    out: list[str] = []
    for t in types:
        out.extend(a for a in t.axes if a not in out)
    return tuple(out)


def align(ref: Expr, src: WireType, dst_axes: Sequence[str]) -> Expr:
    """Permute and unsqueeze ``src``'s core dims so it broadcasts against ``dst_axes`` by name.

    Lifted dims stay in front. A wire that is not lifted needs no leading unit dims (torch
    broadcasts from the right), which keeps the emitted code for parameters short.
    """
    if not src.axes:
        if src.lifted and dst_axes:
            return Index(ref, ("...",) + ("None",) * len(dst_axes))
        return ref
    present = [a for a in dst_axes if a in src.axes]
    expr = ref
    if tuple(present) != tuple(src.axes):
        perm = tuple(src.axes.index(a) for a in present)
        expr = call("rt.permute_core", expr, lit(perm))
    if len(present) != len(dst_axes):
        items = [":" if a in src.axes else "None" for a in dst_axes]
        if not src.lifted:
            while items and items[0] == "None":
                items.pop(0)
        if any(item == "None" for item in items):
            expr = Index(expr, ("...", *items))
    return expr


def permute_to(ref: Expr, src: Sequence[str], dst: Sequence[str]) -> Expr:
    if tuple(src) == tuple(dst):
        return ref
    return call("rt.permute_core", ref, lit(tuple(src.index(a) for a in dst)))


def neg_dim(axes: Sequence[str], axis: str) -> int:
    return list(axes).index(axis) - len(axes)
