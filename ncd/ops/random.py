"""Ops that draw random numbers: dropout, uniform and normal draws, categorical sampling.

Every draw comes from the running module's generator (``self._ncd_generator``): torch's global
generator until the caller seeds the module (``ncd.load(..., seed=)``, ``module.manual_seed(s)``),
then a private CPU generator whose draws are moved to the wire's device, so one seed gives the
same draws on every device and in the emitted Python. The interpreter and the emitter run the
statements in one order, and a scan whose step draws runs as the sequential loop
(ncd/passes/recurrence), so that order is the whole story. Draws carry no gradient: ``normal`` and
``uniform`` are reparameterised (``mean + std · ε``), so their parameters get one; ``categorical``
gives an integer wire (its log-probability is ``log(p)[A = a]``).
"""
from __future__ import annotations

from typing import Any

import sympy

from ncd.ir import CALL, Node, SpecIR, WireType, walk
from ncd.ops.base import AXIS, NUMBER, Expr, Kw, LowerCtx, OpDef, SelfAttr, TypeCtx, call, example_spec, lit
from ncd.ops.costing import Save, Size, numel
from ncd.ops.dtypes import ANY
from ncd.ops.layout import align, neg_dim, union_axes

GENERATOR = SelfAttr("_ncd_generator")  # None (torch's global generator) or the seeded one
TRAINING = SelfAttr("training")  # nn.Module's flag: .train() / .eval()


# ----------------------------------------------------------------------------- dropout(x, p = 0.1)
def _infer_dropout(ctx: TypeCtx, ins: list[WireType], attrs: dict[str, Any]) -> list[WireType]:
    p = attrs["p"]
    if not 0 <= p < 1:
        raise ctx.error(f"dropout's p is the probability of zeroing an element: 0 <= p < 1, got {p:g}",
                        hint="dropout(x, p = 0.1)", at="p")
    (t,) = ins
    return [WireType(axes=t.axes, lifted=t.lifted)]


def _lower_dropout(node: Node, ctx: LowerCtx) -> Expr:
    return call("rt.dropout", ctx.refs[0], lit(float(node.attrs["p"])), TRAINING, GENERATOR)


def _dropout_cost(node: Node, ins, size: Size) -> dict[str, Any]:
    """In training (what costs are of): one draw and one compare per element, one multiply; the
    backward multiplies by the kept mask, which is what autograd saves (one byte per element)."""
    n = numel(node.type, size)
    return {"flops": 3 * n, "bwd": (n,), "saves": [Save("new", numel=n, dtype="bool")], "layout": "follow"}


# ----------------------------------------------------------------------------- uniform / normal
def _infer_draw(ctx: TypeCtx, ins: list[WireType], attrs: dict[str, Any]) -> list[WireType]:
    if not any(t.axes or t.lifted for t in ins):
        raise ctx.error("a draw takes its shape from its operands, and these are numbers",
                        hint="give it a wire: normal(0 * x, 1) draws one standard normal per element of x")
    return [WireType(axes=union_axes(ins), lifted=any(t.lifted for t in ins))]


def _lower_draw(fn: str):
    def lower(node: Node, ctx: LowerCtx) -> Expr:
        a, b = (align(r, t, node.type.axes) for r, t in zip(ctx.refs, ctx.in_types))
        return call(fn, a, b, GENERATOR)

    return lower


def _draw_cost(saves_when: Any):
    """One draw per element (counted as 1 FLOP, a Box-Muller normal as 4), then a multiply-add;
    the noise is saved for the scale's gradient (``saves_when``: which input needs it)."""

    def cost(node: Node, ins, size: Size) -> dict[str, Any]:
        n = numel(node.type, size)
        per = 4 if node.op == "normal" else 1
        return {"flops": (per + 2) * n, "bwd": (n, n), "saves": [Save("new", numel=n, when=saves_when)],
                "layout": "natural"}

    return cost


# ----------------------------------------------------------------------------- categorical(p, over = A)
def _infer_categorical(ctx: TypeCtx, ins: list[WireType], attrs: dict[str, Any]) -> list[WireType]:
    (t,) = ins
    axis = attrs["over"]
    if axis not in t.axes:
        raise ctx.error(f"axis {axis} is not on this wire, whose axes are [{', '.join(t.axes)}]",
                        hint=(f"sample along an axis the probabilities are over, categorical(p, over = A): here "
                              f"over = {t.axes[-1]}" if t.axes else "give it probabilities with the axis: categorical(p, over = A), "
                              "p = softmax(logits, over = A)"),
                        at="over")
    if t.dtype != "float":
        raise ctx.error("categorical samples from probabilities, a float wire",
                        hint="give it probabilities: categorical(softmax(logits, over = A), over = A)")
    return [WireType(axes=tuple(a for a in t.axes if a != axis), lifted=t.lifted, dtype="int")]


def _lower_categorical(node: Node, ctx: LowerCtx) -> Expr:
    return call("rt.categorical", ctx.refs[0], lit(neg_dim(ctx.in_types[0].axes, node.attrs["over"])), GENERATOR)


def _categorical_cost(node: Node, ins, size: Size) -> dict[str, Any]:
    """A running sum along the axis, one draw per row and a binary search (log₂ of the axis' size
    compares per row); an integer result, so no gradient and nothing saved."""
    n = numel(ins[0], size)
    rows = numel(node.type, size)
    return {"flops": n + rows * (2 + sympy.ceiling(sympy.log(size(node.attrs["over"]), 2))), "bwd": (0,)}


# ----------------------------------------------------------------------------- which scans draw
def in_order(nodes: list[Node], spec: SpecIR | None, depth: int = 0) -> str | None:
    """``"random"`` where these nodes (nested regions and called blocks included) draw random
    numbers, else ``"stateful"`` where they update buffers, else None: what makes a scan's steps
    run one after another."""
    from ncd.ops import OPS

    found = None
    for node in walk(nodes):
        row = OPS.get(node.op)
        if row is not None and row.random:
            return "random"
        if row is not None and row.stateful:
            found = "stateful"
        if node.op == CALL and spec is not None and depth < 32:
            callee = spec.blocks.get(node.attrs.get("block"))
            inner = in_order(callee.nodes, spec, depth + 1) if callee is not None else None
            if inner == "random":
                return inner
            found = found or inner
    return found


def draws(nodes: list[Node], spec: SpecIR | None) -> bool:
    """Whether these nodes (nested regions and called blocks included) draw random numbers."""
    return in_order(nodes, spec) == "random"


_P = {"p": Kw(NUMBER, required=True)}

OPS: tuple[OpDef, ...] = (
    OpDef("dropout", "random", _infer_dropout, _lower_dropout, (1, 1), _P, cost=_dropout_cost, draw="~ dropout",
          label=lambda attrs: f"p = {float(attrs['p']):g}",
          doc="dropout(x, p = 0.1): in training each element zeroed with probability p, the rest scaled by "
              "1/(1-p); in eval the identity (nn.Dropout)", random=True,
          example=example_spec("A = 3, B = 4", "x: [A, B]", "[A, B]", "return dropout(x, p = 0.25)")),
    OpDef("uniform", "random", _infer_draw, _lower_draw("rt.uniform"), (2, 2), cost=_draw_cost("any"),
          draw="~ uniform", random=True,
          doc="uniform(low, high): a draw from U[low, high) per element (low + (high - low)·u, u ~ U[0, 1))",
          example=example_spec("A = 3, B = 4", "x: [A, B], y: [B]", "[A, B]", "return uniform(x, y)")),
    OpDef("normal", "random", _infer_draw, _lower_draw("rt.normal"), (2, 2), cost=_draw_cost(1),
          draw="~ normal", random=True,
          doc="normal(mean, std): a draw from N(mean, std²) per element (mean + std·ε, ε ~ N(0, 1))",
          example=example_spec("A = 3, B = 4", "x: [A, B], y: [B]", "[A, B]", "return normal(x, y)")),
    OpDef("categorical", "random", _infer_categorical, _lower_categorical, (1, 1), {"over": Kw(AXIS, required=True)},
          cost=_categorical_cost, draw="~ categorical", random=True, dtypes=ANY,
          doc="categorical(p, over = A): an index along A drawn with probability proportional to p "
              "(an integer wire; p ≥ 0, a positive sum)",
          example=example_spec("A = 3, B = 4", "x: [A, B]", "[A] int",
                               "return categorical(softmax(x, over = B), over = B)")),
)
