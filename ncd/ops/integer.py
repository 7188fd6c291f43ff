"""Ops on integer wires: lookups by an index wire (embeddings, gathers), one-hot, arg-max, as_float().

``x[V = ids]`` selects, for each element of the integer wire ``ids``, the slice of ``x`` at that
position along ``V``. Axes line up by name: the result has ``ids``'s axes, then ``x``'s others (an
axis on both is matched elementwise, as ``take_along_dim``). With a weight table and no shared
axes it is an embedding (``nn.Embedding``); with shared axes it is a gather (a pointer network's
pick of one position per example, the logit of a target class).
"""
from __future__ import annotations

from typing import Any

from ncd.ir import Node, WireType
from ncd.ops.base import AXIS, Expr, Kw, LowerCtx, OpDef, TypeCtx, call, example_spec, lit
from ncd.ops.costing import Save, Size, numel, reduction
from ncd.ops.dtypes import ANY
from ncd.ops.layout import align, neg_dim

INT_HINT = "declare the input an integer wire: ids: [T] int, or make one with argmax(x, over = A)"


def _need_int(ctx: TypeCtx, t: WireType, what: str) -> None:
    if t.dtype != "int":
        kind = "a boolean" if t.dtype == "bool" else "a float"
        raise ctx.error(f"{what} must be an integer wire, but this one is {kind} wire {t}", hint=INT_HINT)


# ----------------------------------------------------------------------------- x[V = ids]
def _lookup_axes(x: WireType, idx: WireType, axis: str) -> tuple[str, ...]:
    return idx.axes + tuple(a for a in x.axes if a != axis and a not in idx.axes)


def _infer_lookup(ctx: TypeCtx, ins: list[WireType], attrs: dict[str, Any]) -> list[WireType]:
    x, idx = ins
    axis = attrs["axis"]
    if axis not in x.axes:
        raise ctx.error(f"axis {axis} is not on this wire, whose axes are [{', '.join(x.axes)}]",
                        hint="look up along one of the wire's axes: E[V = ids]")
    _need_int(ctx, idx, f"the index of x[{axis} = ...]")
    if axis in idx.axes:
        raise ctx.error(f"the index wire already has axis {axis}, the axis it looks up along",
                        hint=f"rename the index wire's axis: ids[{axis} as {axis}']")
    return [WireType(axes=_lookup_axes(x, idx, axis), lifted=x.lifted or idx.lifted, dtype=x.dtype)]


def _lower_lookup(node: Node, ctx: LowerCtx) -> Expr:
    x, idx = ctx.in_types
    axis = node.attrs["axis"]
    name = ctx.in_names[1] if len(ctx.in_names) > 1 and ctx.in_names[1] else None
    what = lit(f"the index {name} of [{axis} = {name}]" if name else f"the index wire of [{axis} = ...]")
    if _is_table(x, idx, axis):  # index the table's rows (nn.Embedding's computation)
        return call("rt.lookup", ctx.refs[0], ctx.refs[1], lit(neg_dim(x.axes, axis)), what)
    dst = [*node.type.axes, axis]
    return call("rt.gather_along", align(ctx.refs[0], x, dst), align(ctx.refs[1], idx, dst), what)


def _is_table(x: WireType, idx: WireType, axis: str) -> bool:
    """A lookup in a weight table (indexing rows) rather than a gather along a computed wire."""
    return not x.lifted and not any(a != axis and a in idx.axes for a in x.axes)


def _lookup_cost(node: Node, ins, size: Size) -> dict[str, Any]:
    """No arithmetic: a copy of the picked rows; the gradient adds each row back (one add each).
    Indexing a table saves the indices; torch.gather also keeps its input for the backward."""
    n = numel(node.type, size)
    saves = [Save("in", 1, when=0)]
    if not _is_table(ins[0], ins[1], node.attrs["axis"]):
        saves.append(Save("in", 0, when=0))
    return {"flops": 0, "bwd": (n, 0), "saves": saves}


# ----------------------------------------------------------------------------- one_hot(ids, over = V)
def _infer_one_hot(ctx: TypeCtx, ins: list[WireType], attrs: dict[str, Any]) -> list[WireType]:
    (t,) = ins
    axis = attrs["over"]
    _need_int(ctx, t, "the input of one_hot")
    if axis in t.axes:
        raise ctx.error(f"the wire already has axis {axis}", hint=f"one_hot adds a new axis: over = {axis}'",
                        at="over")
    return [WireType(axes=(*t.axes, axis), lifted=t.lifted)]


def _lower_one_hot(node: Node, ctx: LowerCtx) -> Expr:
    name = ctx.in_names[0] if ctx.in_names and ctx.in_names[0] else None
    what = f"the input {name} of one_hot(.., over = {node.attrs['over']})" if name else \
        f"the input of one_hot(.., over = {node.attrs['over']})"
    return call("rt.one_hot", ctx.refs[0], ctx.size_expr(node.attrs["over"]),
                ctx.anchor if ctx.anchor is not None else lit(None), lit(what))


def _one_hot_cost(node: Node, ins, size: Size) -> dict[str, Any]:
    return {"flops": numel(node.type, size), "bwd": (0,)}


# ----------------------------------------------------------------------------- argmax / argmin
def _infer_arg(ctx: TypeCtx, ins: list[WireType], attrs: dict[str, Any]) -> list[WireType]:
    (t,) = ins
    axis = attrs["over"]
    if axis not in t.axes:
        raise ctx.error(f"axis {axis} is not on this wire, whose axes are [{', '.join(t.axes)}]",
                        hint="name one of the wire's axes in over = ...", at="over")
    if t.dtype == "bool":
        raise ctx.error("argmax/argmin of a boolean wire", hint="convert it: as_float(mask)")
    return [WireType(axes=tuple(a for a in t.axes if a != axis), lifted=t.lifted, dtype="int")]


def _lower_arg(fn: str):
    def lower(node: Node, ctx: LowerCtx) -> Expr:
        return call(fn, ctx.refs[0], dim=lit(neg_dim(ctx.in_types[0].axes, node.attrs["over"])))

    return lower


# ----------------------------------------------------------------------------- as_float(x)
def _infer_float(ctx: TypeCtx, ins: list[WireType], attrs: dict[str, Any]) -> list[WireType]:
    (t,) = ins
    return [WireType(axes=t.axes, lifted=t.lifted)]


def _lower_float(node: Node, ctx: LowerCtx) -> Expr:
    return call("rt.to_float", ctx.refs[0], ctx.anchor if ctx.anchor is not None else lit(None))


def _float_cost(node: Node, ins, size: Size) -> dict[str, Any]:
    return {"flops": 0, "bwd": (0,), "layout": "follow"}


OVER1 = {"over": Kw(AXIS, required=True)}

OPS: tuple[OpDef, ...] = (
    OpDef("lookup", "integer", _infer_lookup, _lower_lookup, (2, 2), cost=_lookup_cost, draw="lookup",
          doc="x[V = ids]: the slice of x at each index of the integer wire ids (embedding, gather)", dtypes=ANY,
          syntax="x[V = ids]",
          example=example_spec("A = 3, B = 4", "x: [A, B]", "[A]", "return x[B = argmax(x, over = B)]")),
    OpDef("one_hot", "integer", _infer_one_hot, _lower_one_hot, (1, 1), OVER1, cost=_one_hot_cost,
          doc="one_hot(ids, over = V): 1 at each id along the new axis V, else 0 (a float wire)", dtypes=ANY,
          example=example_spec("A = 3, B = 4", "x: [A, B]", "[A, B]", "return one_hot(argmax(x, over = B), over = B) * x")),
    OpDef("argmax", "integer", _infer_arg, _lower_arg("torch.argmax"), (1, 1), OVER1,
          cost=reduction(1, 0), doc="argmax(x, over = A): the position of the largest (the first, on ties)",
          dtypes=ANY, example=example_spec("A = 3, B = 4", "x: [A, B]", "[A] int", "return argmax(x, over = B)")),
    OpDef("argmin", "integer", _infer_arg, _lower_arg("torch.argmin"), (1, 1), OVER1,
          cost=reduction(1, 0), doc="argmin(x, over = A): the position of the smallest (the first, on ties)",
          dtypes=ANY, example=example_spec("A = 3, B = 4", "x: [A, B]", "[A] int", "return argmin(x, over = B)")),
    OpDef("as_float", "integer", _infer_float, _lower_float, (1, 1), cost=_float_cost,
          doc="as_float(ids): an integer or boolean wire as floats", dtypes=ANY,
          example=example_spec("A = 3, B = 4", "x: [A, B]", "[A, B]", "return as_float(x > 0) * x")),
)
