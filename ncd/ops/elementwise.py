"""Elementwise ops: lifted over every axis, aligned by name, broadcast over missing axes."""
from __future__ import annotations

from typing import Any

from ncd.ir import Node, WireType
from ncd.ops.base import NUMBER, BinOp, Expr, Kw, LowerCtx, OpDef, TypeCtx, UnaryOp, call, lit
from ncd.ops.costing import Save, elementwise
from ncd.ops.layout import align, union_axes


def _infer_union(ctx: TypeCtx, ins: list[WireType], attrs: dict[str, Any]) -> list[WireType]:
    return [WireType(axes=union_axes(ins), lifted=any(t.lifted for t in ins))]


def _infer_compare(ctx: TypeCtx, ins: list[WireType], attrs: dict[str, Any]) -> list[WireType]:
    return [WireType(axes=union_axes(ins), lifted=any(t.lifted for t in ins), dtype="bool")]


def _aligned(node: Node, ctx: LowerCtx) -> list[Expr]:
    out = node.type.axes
    return [align(ref, t, out) for ref, t in zip(ctx.refs, ctx.in_types)]


def _binary(symbol: str):
    def lower(node: Node, ctx: LowerCtx) -> Expr:
        left, right = _aligned(node, ctx)
        return BinOp(symbol, left, right)

    return lower


def _compare_lower(node: Node, ctx: LowerCtx) -> Expr:
    left, right = _aligned(node, ctx)
    return BinOp(node.attrs["cmp"], left, right)


def _neg_lower(node: Node, ctx: LowerCtx) -> Expr:
    return UnaryOp("-", ctx.refs[0])


def _unary(fn: str, **fixed: Any):
    def lower(node: Node, ctx: LowerCtx) -> Expr:
        kwargs = {k: lit(node.attrs.get(k, v)) for k, v in fixed.items()}
        return call(fn, ctx.refs[0], **kwargs)

    return lower


def _where_lower(node: Node, ctx: LowerCtx) -> Expr:
    return call("torch.where", *_aligned(node, ctx))


def _infer_clamp(ctx: TypeCtx, ins: list[WireType], attrs: dict[str, Any]) -> list[WireType]:
    """clamp needs a bound (torch.clamp refuses two Nones), and min ≤ max."""
    low, high = attrs.get("min"), attrs.get("max")
    if low is None and high is None:
        raise ctx.error("clamp needs a bound: min = a, max = b or both", hint="clamp(x, min = 0, max = 1)")
    if low is not None and high is not None and low > high:
        raise ctx.error(f"clamp's min {low:g} is above its max {high:g}", hint="swap them", at="min")
    return _infer_union(ctx, ins, attrs)


def _clamp_lower(node: Node, ctx: LowerCtx) -> Expr:
    return call("torch.clamp", ctx.refs[0], min=lit(node.attrs.get("min")), max=lit(node.attrs.get("max")))


BINARY = {"add": "+", "sub": "-", "mul": "*", "div": "/", "pow": "**"}

# name -> (torch function, extra keyword defaults, one-line doc)
UNARY: dict[str, tuple[str, dict[str, Any], str]] = {
    "relu": ("torch.relu", {}, "max(x, 0)"),
    "tanh": ("torch.tanh", {}, "hyperbolic tangent"),
    "sigmoid": ("torch.sigmoid", {}, "1 / (1 + exp(-x))"),
    "exp": ("torch.exp", {}, "e^x"),
    "log": ("torch.log", {}, "natural logarithm"),
    "sqrt": ("torch.sqrt", {}, "square root"),
    "rsqrt": ("torch.rsqrt", {}, "1 / sqrt(x)"),
    "abs": ("torch.abs", {}, "|x|"),
    "sin": ("torch.sin", {}, "sine"),
    "cos": ("torch.cos", {}, "cosine"),
    "erf": ("torch.erf", {}, "error function"),
    "sign": ("torch.sign", {}, "-1, 0 or 1"),
    "gelu": ("F.gelu", {}, "Gaussian error linear unit (exact)"),
    "silu": ("F.silu", {}, "x * sigmoid(x)"),
    "swish": ("F.silu", {}, "x * sigmoid(x) (alias of silu)"),
    "softplus": ("F.softplus", {}, "log(1 + e^x)"),
    "logsigmoid": ("F.logsigmoid", {}, "log(sigmoid(x))"),
    "leaky_relu": ("F.leaky_relu", {"slope": 0.01}, "x if x > 0 else slope * x"),
    "step": ("rt.step", {}, "1 where x > 0, else 0 (Heaviside; activation codes)"),
}


# cost: (FLOPs per element, what autograd saves); arithmetic is 1 FLOP, transcendentals 4
_IN, _OUT = Save("in", 0), Save("out", 0)
BINARY_COST = {
    "add": elementwise(1), "sub": elementwise(1),
    "mul": elementwise(1, saves=(Save("in", 1, when=0), Save("in", 0, when=1))),
    # a / b saves b (and a for b's gradient); 1 / b runs as b.reciprocal() * 1, which saves its result
    "div": elementwise(1, 2, saves=(Save("in", 1, when=("tensor", 0)), Save("in", 0, when=1),
                                    Save("out", 0, when=("scalar", 0)))),
    "pow": elementwise(4, 4, saves=(Save("in", 0), Save("in", 1), Save("out", 0, when=1))),
}
UNARY_COST = {
    "relu": elementwise(1, saves=(_OUT,)), "tanh": elementwise(4, 2, (_OUT,)),
    "sigmoid": elementwise(4, 2, (_OUT,)), "exp": elementwise(4, 1, (_OUT,)),
    "log": elementwise(4, 1, (_IN,)), "sqrt": elementwise(4, 2, (_OUT,)), "rsqrt": elementwise(4, 3, (_OUT,)),
    "abs": elementwise(1, saves=(_IN,)), "sin": elementwise(4, 4, (_IN,)), "cos": elementwise(4, 4, (_IN,)),
    "erf": elementwise(4, 4, (_IN,)), "sign": elementwise(1, 0), "gelu": elementwise(8, 8, (_IN,)),
    "silu": elementwise(4, 4, (_IN,)), "swish": elementwise(4, 4, (_IN,)), "softplus": elementwise(4, 4, (_IN,)),
    "logsigmoid": elementwise(4, 4, (_IN, Save("new", numel="out"))),
    "leaky_relu": elementwise(1, saves=(_IN,)), "step": elementwise(1, 0),
}


def _unary_entry(name: str, fn: str, extra: dict[str, Any], doc: str) -> OpDef:
    if name == "leaky_relu":
        lower = lambda node, ctx: call(fn, ctx.refs[0], lit(node.attrs.get("slope", 0.01)))  # noqa: E731
        kwargs = {"slope": Kw(NUMBER, 0.01)}
    else:
        lower = _unary(fn)
        kwargs = {}
    return OpDef(name, "elementwise", _infer_union, lower, (1, 1), kwargs, cost=UNARY_COST.get(name), doc=doc)


OPS: tuple[OpDef, ...] = (
    *(OpDef(name, "elementwise", _infer_union, _binary(sym), (2, 2), cost=BINARY_COST[name], doc=f"x {sym} y")
      for name, sym in BINARY.items()),
    OpDef("neg", "elementwise", _infer_union, _neg_lower, (1, 1), cost=elementwise(1), doc="-x"),
    OpDef("compare", "elementwise", _infer_compare, _compare_lower, (2, 2), cost=elementwise(1, 0),
          doc="x < y etc., a boolean wire"),
    OpDef("where", "elementwise", lambda c, ins, a: [WireType(axes=union_axes(ins), lifted=any(t.lifted for t in ins))],
          _where_lower, (3, 3), cost=elementwise(1, saves=(Save("in", 0),)), doc="where(cond, a, b)"),
    OpDef("clamp", "elementwise", _infer_clamp, _clamp_lower, (1, 1),
          {"min": Kw(NUMBER), "max": Kw(NUMBER)}, cost=elementwise(1, saves=(_IN,)), doc="clamp(x, min = a, max = b)"),
    *(_unary_entry(name, fn, extra, doc) for name, (fn, extra, doc) in UNARY.items()),
)
