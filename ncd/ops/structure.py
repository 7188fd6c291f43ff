"""Ops that move axes rather than numbers: rename, reshape, select, reorder, concat, split, idx."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import sympy

from ncd import sizes as sz
from ncd.ir import Node, WireType
from ncd.ops.base import AXIS, AXIS_MAP, JOINT, PICK, POSITION, VALUES, Algebra, AxisList, Expr, Kw, LowerCtx, OpDef, TypeCtx, call, lit
from ncd.ops.base import example_spec as _spec
from ncd.ops.costing import copy, free
from ncd.ops.dtypes import ANY, SAME
from ncd.ops.layout import align, neg_dim, permute_to


def _axes_str(t: WireType) -> str:
    return f"[{', '.join(t.axes)}]"


def _require(ctx: TypeCtx, t: WireType, axis: str, at: str | None = None) -> None:
    if axis not in t.axes:
        raise ctx.error(f"axis {axis} is not on this wire, whose axes are {_axes_str(t)}", at=at,
                        hint="name one of the wire's axes (rename one first with x[A as B] if it has another name)")


# ----------------------------------------------------------------------------- rename  x[T as T']
def _infer_rename(ctx: TypeCtx, ins: list[WireType], attrs: dict[str, Any]) -> list[WireType]:
    t = ins[0]
    src, dst = attrs["src"], attrs["dst"]
    _require(ctx, t, src)
    if dst in t.axes:
        raise ctx.error(f"axis {dst} is already on this wire {_axes_str(t)}", hint="pick another name, e.g. a prime")
    ctx.unify(dst, ctx.sizes(src), f"renamed from {src}")
    return [WireType(axes=tuple(dst if a == src else a for a in t.axes), lifted=t.lifted, dtype=t.dtype)]


def _lower_identity(node: Node, ctx: LowerCtx) -> Expr:
    return ctx.refs[0]


# ----------------------------------------------------------------------------- reshape x[D -> H K]
def _infer_reshape(ctx: TypeCtx, ins: list[WireType], attrs: dict[str, Any]) -> list[WireType]:
    t = ins[0]
    src, dst = list(attrs["src"]), list(attrs["dst"])
    for axis in src:
        _require(ctx, t, axis)
    for axis in dst:
        if axis in t.axes and axis not in src:
            raise ctx.error(f"axis {axis} is already on this wire {_axes_str(t)}",
                            hint=f"name the new axis apart from the wire's others, e.g. {axis}' or {axis}2")
    product_src = sympy.Mul(*[ctx.sizes(a) for a in src])
    if len(dst) == 1:
        ctx.unify(dst[0], product_src, f"the product of {' '.join(src)}")
    else:
        product_dst = sympy.Mul(*[ctx.sizes(a) for a in dst])
        if len(src) == 1:
            ctx.unify(src[0], product_dst, f"the product of {' '.join(dst)}")
        elif sz.simplify_bounded(product_src - product_dst, "this reshape's sizes") != 0:
            raise ctx.error(f"cannot reshape {' '.join(src)} ({product_src}) into {' '.join(dst)} ({product_dst})",
                            hint="the sizes on both sides of -> must have the same product")
    first = min(t.axes.index(a) for a in src)
    rest = [a for a in t.axes if a not in src]
    axes = rest[:first] + dst + rest[first:]
    return [WireType(axes=tuple(axes), lifted=t.lifted, dtype=t.dtype)]


def _lower_reshape(node: Node, ctx: LowerCtx) -> Expr:
    t = ctx.in_types[0]
    src, dst = list(node.attrs["src"]), list(node.attrs["dst"])
    first = min(t.axes.index(a) for a in src)
    rest = [a for a in t.axes if a not in src]
    grouped = rest[:first] + src + rest[first:]
    expr = permute_to(ctx.refs[0], t.axes, grouped)
    start = first - len(grouped)
    if len(src) > 1:
        expr = call("torch.flatten", expr, lit(start), lit(start + len(src) - 1))
    if len(dst) > 1:
        sizes = tuple(ctx.size_of(a) for a in dst)
        if sum(s is None for s in sizes) > 1:
            sizes_expr = call("rt.tuple_of", *(ctx.size_expr(a) for a in dst))
        else:
            sizes_expr = lit(tuple(-1 if s is None else s for s in sizes))
        expr = call("torch.unflatten", expr, lit(start), sizes_expr)
    return expr


# ----------------------------------------------------------------------------- select x[A = i], x[t]
def _infer_select(ctx: TypeCtx, ins: list[WireType], attrs: dict[str, Any]) -> list[WireType]:
    t = ins[0]
    axis = attrs["axis"]
    if axis is None:
        if len(t.axes) != 1:
            raise ctx.error(f"x[i] needs a wire with one axis, this one has {_axes_str(t)}",
                            hint="name the axis: x[A = i]")
        axis = attrs["axis"] = t.axes[0]
    _require(ctx, t, axis)
    return [WireType(axes=tuple(a for a in t.axes if a != axis), lifted=t.lifted, dtype=t.dtype)]


def _lower_select(node: Node, ctx: LowerCtx) -> Expr:
    t = ctx.in_types[0]
    dim = lit(neg_dim(t.axes, node.attrs["axis"]))
    if len(ctx.refs) > 1:  # x[t] inside a loop: a parallel scan may ask for every step at once
        return call("rt.step_slice", ctx.refs[0], dim, ctx.refs[1], lit(len(t.axes)))
    index = lit(int(node.attrs["index"]))
    if ctx.size_of(node.attrs["axis"]) is None:  # a free axis: its size is known only at forward
        return call("rt.select_at", ctx.refs[0], dim, index, lit(f"the index of axis {node.attrs['axis']}"))
    return call("torch.select", ctx.refs[0], dim, index)


# ----------------------------------------------------------------------------- annotate x : [A, B]
def _infer_annotate(ctx: TypeCtx, ins: list[WireType], attrs: dict[str, Any]) -> list[WireType]:
    t = ins[0]
    want = tuple(attrs["axes"])
    if sorted(want) != sorted(t.axes):
        raise ctx.error(f"this wire has axes {_axes_str(t)}, not [{', '.join(want)}]",
                        hint="a type annotation may reorder axes but not add or drop them")
    return [WireType(axes=want, lifted=t.lifted, dtype=t.dtype)]


def _lower_annotate(node: Node, ctx: LowerCtx) -> Expr:
    return permute_to(ctx.refs[0], ctx.in_types[0].axes, node.type.axes)


# ----------------------------------------------------------------------------- concat / split
def _concat_sources(attrs: dict[str, Any], n: int) -> list[str]:
    src = attrs["over"]["src"]
    return list(src) if len(src) > 1 else list(src) * n


def _infer_concat(ctx: TypeCtx, ins: list[WireType], attrs: dict[str, Any]) -> list[WireType]:
    sources = _concat_sources(attrs, len(ins))
    dst = attrs["over"]["dst"][0]
    if len(sources) != len(ins):
        raise ctx.error(f"concat has {len(ins)} operands but over names {len(sources)} axes",
                        hint="name one axis per operand, in order: over = [A1, A2] -> R, or one shared: over = A -> R")
    total = sympy.Integer(0)
    for t, axis in zip(ins, sources):
        total += ctx.sizes(axis) if axis in t.axes else 1
    ctx.unify(dst, total, "the sum of the concatenated sizes")
    first = ins[0]
    axes = [dst if a == sources[0] else a for a in first.axes] if sources[0] in first.axes else [dst, *first.axes]
    for t, axis in zip(ins[1:], sources[1:]):
        axes += [a for a in t.axes if a != axis and a not in axes]
    return [WireType(axes=tuple(axes), lifted=any(t.lifted for t in ins))]


def _lower_concat(node: Node, ctx: LowerCtx) -> Expr:
    sources = _concat_sources(node.attrs, len(ctx.in_types))
    dst = node.attrs["over"]["dst"][0]
    out = node.type.axes
    parts = []
    for ref, t, axis in zip(ctx.refs, ctx.in_types, sources):
        local = WireType(axes=tuple(dst if a == axis else a for a in t.axes), lifted=t.lifted)
        parts.append(align(ref, local, out))
    return call("rt.concat", call("rt.tuple_of", *parts), lit(neg_dim(out, dst)))


def _infer_split(ctx: TypeCtx, ins: list[WireType], attrs: dict[str, Any]) -> list[WireType]:
    t = ins[0]
    src = attrs["over"]["src"]
    dsts = attrs["over"]["dst"]
    if len(src) != 1 or len(dsts) < 2:
        raise ctx.error("split takes over = A -> [A1, A2, ...]", at="over",
                        hint="split one axis into two or more: a, b = split(x, over = R -> [A, B]); "
                             "a single part is a rename, x[R as A]")
    _require(ctx, t, src[0], at="over")
    ctx.unify(src[0], sympy.Add(*[ctx.sizes(a) for a in dsts]), "the sum of the split sizes")
    return [WireType(axes=tuple(d if a == src[0] else a for a in t.axes), lifted=t.lifted) for d in dsts]


def _lower_split(node: Node, ctx: LowerCtx) -> Expr:
    t = ctx.in_types[0]
    src = node.attrs["over"]["src"][0]
    sizes = call("rt.tuple_of", *(ctx.size_expr(a) for a in node.attrs["over"]["dst"]))
    return call("torch.split", ctx.refs[0], sizes, dim=lit(neg_dim(t.axes, src)))


# ----------------------------------------------------------------------------- idx(A)
def _infer_idx(ctx: TypeCtx, ins: list[WireType], attrs: dict[str, Any]) -> list[WireType]:
    return [WireType(axes=(attrs["axis"],), lifted=False)]


def _lower_idx(node: Node, ctx: LowerCtx) -> Expr:
    return call("rt.arange", ctx.size_expr(node.attrs["axis"]), ctx.anchor if ctx.anchor is not None else lit(None))


def _infer_values(ctx: TypeCtx, ins: list[WireType], attrs: dict[str, Any]) -> list[WireType]:
    return [WireType(axes=(attrs["axis"],), lifted=False)]


def _lower_values(node: Node, ctx: LowerCtx) -> Expr:
    return call("rt.values", lit(tuple(float(v) for v in node.attrs["values"])),
                ctx.anchor if ctx.anchor is not None else lit(None))


VIEW_LINEAR = Algebra("joint", "view")  # a view that may hide an axis of the state (see recurrence.py)
LINEAR_OVER = Algebra("joint", "over")

def _rename_layout(layout: tuple[str, ...], a: Mapping[str, Any], src_axes: tuple[str, ...],
                   out_axes: tuple[str, ...]) -> tuple[str, ...] | None:
    return tuple(a["dst"] if x == a["src"] else x for x in layout)


def _select_layout(layout: tuple[str, ...], a: Mapping[str, Any], src_axes: tuple[str, ...],
                   out_axes: tuple[str, ...]) -> tuple[str, ...] | None:
    return tuple(x for x in layout if x != a["axis"])


def _split_layout(layout: tuple[str, ...], a: Mapping[str, Any], src_axes: tuple[str, ...],
                  out_axes: tuple[str, ...]) -> tuple[str, ...] | None:
    src_axis = a["over"]["src"][0]
    new = [x for x in out_axes if x not in src_axes]
    return tuple(new[0] if x == src_axis else x for x in layout) if new else layout


def _reshape_layout(layout: tuple[str, ...], a: Mapping[str, Any], src_axes: tuple[str, ...],
                    out_axes: tuple[str, ...]) -> tuple[str, ...] | None:
    """Merged or split axes in place where they are adjacent in memory; else torch.flatten of a
    permuted tensor copies (None)."""
    at = [layout.index(x) for x in a["src"]]
    if at != list(range(at[0], at[0] + len(at))):
        return None
    return layout[: at[0]] + tuple(a["dst"]) + layout[at[-1] + 1:]


OPS: tuple[OpDef, ...] = (
    OpDef("rename", "view", _infer_rename, _lower_identity, cost=free, view=True, algebra=VIEW_LINEAR, relabels=True,
          title=lambda a, numbers: (f"{a['src']} as {a['dst']}",), view_layout=_rename_layout,
          doc="x[A as B]: the same wire, its axis renamed", syntax="x[A as B]",
          example=_spec("A = 3, B = 4, C", "x: [A, B]", "[A, C]", "return x[B as C]"), dtypes=ANY),
    OpDef("reshape", "view", _infer_reshape, _lower_reshape, cost=free, view=True, algebra=VIEW_LINEAR,
          title=lambda a, numbers: (f"{' '.join(a['src'])} → {' '.join(a['dst'])}",), view_layout=_reshape_layout,
          doc="x[D -> H K] splits an axis; x[H K -> D] merges", syntax="x[D -> H K] or x[H K -> D]",
          example=_spec("A = 3, B = 4, C = 2, R", "x: [A, B, C]", "[A, R]", "return x[B C -> R]"), dtypes=ANY),
    OpDef("select", "view", _infer_select, _lower_select, (1, 2), cost=free, view=True, algebra=VIEW_LINEAR, role=PICK,
          title=lambda a, numbers: (f"[{a['axis']} = {numbers[0] if numbers else a.get('index')}]",), view_layout=_select_layout,
          doc="x[A = i] or x[t]: one slice, axis dropped", syntax="x[A = i] or x[t]",
          example=_spec("A = 3, B = 4", "x: [A, B]", "[B]", "return x[A = 1]"), dtypes=ANY),
    OpDef("annotate", "view", _infer_annotate, _lower_annotate, cost=free, view=True, algebra=JOINT, relabels=True,
          title=lambda a, numbers: (": ", AxisList(tuple(a["axes"]))),
          doc="x : [A, B] checks the axes and orders them", syntax="x : [A, B]",
          example=_spec("A = 3, B = 4", "x: [A, B]", "[B, A]", "return x : [B, A]"), dtypes=ANY),
    OpDef("concat", "structural", _infer_concat, _lower_concat, (1, 64), {"over": Kw(AXIS_MAP, required=True)},
          cost=copy, algebra=LINEAR_OVER, doc="concat(a, b, over = A -> R) or over = [A1, A2] -> R",
          example=_spec("A = 3, B = 4, C = 2, R", "x: [A, B], y: [A, C]", "[A, R]",
                        "return concat(x, y, over = [B, C] -> R)"), dtypes=SAME),
    OpDef("split", "structural", _infer_split, _lower_split, (1, 1), {"over": Kw(AXIS_MAP, required=True)},
          cost=free, view=True, algebra=LINEAR_OVER, doc="a, b = split(x, over = R -> [A1, A2])", view_layout=_split_layout,
          example=_spec("A = 3, B = 4, C = 2, R = 6", "x: [A, R]", "[A, C]",
                        "b, c = split(x, over = R -> [B, C])\n  return c * 2 + b[B = 0]"), dtypes=SAME),
    OpDef("idx", "source", _infer_idx, _lower_idx, (0, 0), {"axis": Kw(AXIS, required=True)}, role=POSITION,
          cost=copy, doc="idx(A): 0, 1, ... along A (for formulas)",
          example=_spec("A = 3, B = 4", "x: [A, B]", "[A, B]", "return x * idx(B)"), dtypes=ANY),
    OpDef("values", "source", _infer_values, _lower_values, (0, 0),
          {"axis": Kw(AXIS, required=True), "values": Kw(VALUES, required=True)}, cost=copy,
          doc="const a[A] = [v0, v1, ...]: numbers listed along A (as many as A's size)",
          syntax="const a[A] = [v0, v1, ...]",
          example=_spec("A = 3, B = 4", "x: [A, B]", "[A, B]", "const c[B] = [1, 0.5, -2, 1 / 3]\n  return x * c"),
          dtypes=ANY),
)
