"""Elementwise ops: lifted over every axis, aligned by name, broadcast over missing axes."""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import sympy

from ncd.ir import Node, WireType
from ncd.ops.base import (
    JOINT,
    NEG,
    NONLINEAR,
    NUMBER,
    RELU,
    SIGMOID,
    TANH,
    Algebra,
    CHOOSE,
    COMPARISON,
    EXP,
    BinOp,
    Expr,
    FoldError,
    Kw,
    LowerCtx,
    Masked,
    OpDef,
    TypeCtx,
    UnaryOp,
    call,
    example_spec,
    lit,
)
from ncd.ops.costing import Save, elementwise
from ncd.ops.dtypes import ARITH, COMPARE, WHERE
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


def _unary(fn: str, fixed: Mapping[str, Any], options: Mapping[str, tuple[str, Any]]):
    """``fn(x, **fixed, **options)``: the row's fixed keywords always, each spec option (by its
    spec name, with its default) under torch's keyword."""

    def lower(node: Node, ctx: LowerCtx) -> Expr:
        kwargs = {k: lit(v) for k, v in fixed.items()}
        kwargs.update({kw: lit(node.attrs.get(name, default)) for name, (kw, default) in options.items()})
        return call(fn, ctx.refs[0], **kwargs)

    return lower


def _where_lower(node: Node, ctx: LowerCtx) -> Expr:
    out = call("torch.where", *_aligned(node, ctx))
    branches = ctx.in_types[1:]
    if node.type.dtype == "float" and not any(t.dtype == "float" and (t.axes or t.lifted) for t in branches):
        # where(c, 1, 0): torch makes the default dtype of two numbers; the module's dtype is wanted
        return call("rt.to_float", out, ctx.anchor if ctx.anchor is not None else lit(None))
    return out


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


# ------------------------------------------------------------------------- constant folding
MAX_BITS = 1100  # 2^1100 > 1.8e308, float64's largest: a folded number stays within it


def fold_pow(a: sympy.Expr, b: sympy.Expr) -> sympy.Expr:
    """a ** b, refused before sympy computes an exact power with millions of digits."""
    if a.is_number and b.is_number and a != 0:
        try:
            bits = abs(float(b) * math.log2(abs(complex(a))))
        except (TypeError, ValueError, OverflowError):
            bits = math.inf
        if bits > MAX_BITS:
            raise FoldError("this power is out of range of a float64",
                            "use a smaller base or exponent: a folded number stays within about 1e308")
    elif b.is_number and b.is_real and abs(b) > 64:
        raise FoldError("an axis size may be raised to a power of at most 64",
                        "write the exponent as a number from -64 to 64 (D^2, D^-0.5)")
    return a**b


def _fold_div(a: sympy.Expr, b: sympy.Expr) -> sympy.Expr:
    if b == 0:
        raise FoldError("division by zero", "divide by a non-zero number")
    return a / b


_FOLD = {"add": lambda a, b: a + b, "sub": lambda a, b: a - b, "mul": lambda a, b: a * b,
         "div": _fold_div, "pow": fold_pow}

BINARY = {"add": "+", "sub": "-", "mul": "*", "div": "/", "pow": "**"}
GLYPHS = {"add": "+", "sub": "−", "mul": "×", "div": "÷", "pow": "^"}
_BINARY_ALGEBRA = {"add": JOINT, "sub": JOINT, "mul": Algebra("product"), "div": Algebra("numerator"),
                   "pow": NONLINEAR}


@dataclass(frozen=True)
class Unary:
    """One unary row: the torch function it is, the keywords it always passes (``fixed``), the
    options a spec may give (``options``: spec name -> (torch keyword, default)), its cost,
    its exact value on a number (``fold``) and whether it is always positive."""

    fn: str
    doc: str
    cost: Any
    fixed: Mapping[str, Any] = field(default_factory=dict)
    options: Mapping[str, tuple[str, Any]] = field(default_factory=dict)
    fold: Any = None
    positive: bool = False
    masked: Masked | None = None
    gate: str | None = None
    arith: str | None = None


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

UNARY: dict[str, Unary] = {
    "relu": Unary("torch.relu", "max(x, 0)", elementwise(1, saves=(_OUT,)), gate=RELU),
    "tanh": Unary("torch.tanh", "hyperbolic tangent", elementwise(4, 2, (_OUT,)), gate=TANH),
    "sigmoid": Unary("torch.sigmoid", "1 / (1 + exp(-x))", elementwise(4, 2, (_OUT,)), positive=True, gate=SIGMOID),
    "exp": Unary("torch.exp", "e^x", elementwise(4, 1, (_OUT,)), fold=sympy.exp, positive=True,
                 masked=Masked(maps=("-oo", "0")), arith=EXP),
    "log": Unary("torch.log", "natural logarithm", elementwise(4, 1, (_IN,)), fold=sympy.log),
    "sqrt": Unary("torch.sqrt", "square root", elementwise(4, 2, (_OUT,)), fold=sympy.sqrt),
    "rsqrt": Unary("torch.rsqrt", "1 / sqrt(x)", elementwise(4, 3, (_OUT,))),
    "abs": Unary("torch.abs", "|x|", elementwise(1, saves=(_IN,)), fold=sympy.Abs),
    "sin": Unary("torch.sin", "sine", elementwise(4, 4, (_IN,))),
    "cos": Unary("torch.cos", "cosine", elementwise(4, 4, (_IN,))),
    "erf": Unary("torch.erf", "error function", elementwise(4, 4, (_IN,))),
    "sign": Unary("torch.sign", "-1, 0 or 1", elementwise(1, 0)),
    "gelu": Unary("F.gelu", "x·Φ(x), Φ the Gaussian CDF through the exact erf (F.gelu)", elementwise(8, 8, (_IN,))),
    # tanh approximation (Hendrycks & Gimpel 2016, GPT-2): 0.5·x·(1 + tanh(√(2/π)(x + 0.044715x³)))
    "gelu_tanh": Unary("F.gelu", "x·Φ(x) with the tanh approximation of Φ (GPT-2; F.gelu(approximate='tanh'))",
                       elementwise(12, 14, (_IN,)), fixed={"approximate": "tanh"}),
    "silu": Unary("F.silu", "x * sigmoid(x)", elementwise(4, 4, (_IN,))),
    "swish": Unary("F.silu", "x * sigmoid(x) (alias of silu)", elementwise(4, 4, (_IN,))),
    "softplus": Unary("F.softplus", "log(1 + e^x)", elementwise(4, 4, (_IN,))),
    "logsigmoid": Unary("F.logsigmoid", "log(sigmoid(x))", elementwise(4, 4, (_IN, Save("new", numel="out")))),
    "leaky_relu": Unary("F.leaky_relu", "x if x > 0 else slope * x", elementwise(1, saves=(_IN,)),
                        options={"slope": ("negative_slope", 0.01)}),
    "step": Unary("rt.step", "1 where x > 0, else 0 (Heaviside; activation codes)", elementwise(1, 0)),
}
def _unary_entry(name: str, row: Unary) -> OpDef:
    options = {spec: Kw(NUMBER, default) for spec, (_, default) in row.options.items()}
    fold = (lambda a, _f=row.fold: _f(a)) if row.fold is not None else None
    return OpDef(name, "elementwise", _infer_union, _unary(row.fn, row.fixed, row.options), (1, 1), options,
                 cost=row.cost, doc=row.doc, algebra=Algebra(positive=row.positive), fold=fold, masked=row.masked,
                 gate=row.gate, arith=row.arith)


OPS: tuple[OpDef, ...] = (
    *(OpDef(name, "elementwise", _infer_union, _binary(sym), (2, 2), cost=BINARY_COST[name], doc=f"x {sym} y",
            draw=GLYPHS[name], algebra=_BINARY_ALGEBRA[name], fold=_FOLD[name],
            dtypes=ARITH if name in ("add", "sub", "mul") else "float", arith=sym)
      for name, sym in BINARY.items()),
    OpDef("neg", "elementwise", _infer_union, _neg_lower, (1, 1), cost=elementwise(1), doc="-x",
          algebra=JOINT, fold=lambda a: -a, dtypes=ARITH, arith=NEG),
    OpDef("compare", "elementwise", _infer_compare, _compare_lower, (2, 2), cost=elementwise(1, 0),
          title=lambda a, numbers: (a.get("cmp", "cmp") + (f" {numbers[0]}" if numbers else ""),),
          doc="x < y etc. (< <= > >= == !=), a boolean wire", syntax="x < y",
          example=example_spec("A = 3, B = 4", "x: [A, B], y: [B]", "[A, B]", "return where(x < y, x, y)"), dtypes=COMPARE,
          role=COMPARISON),
    OpDef("where", "elementwise", lambda c, ins, a: [WireType(axes=union_axes(ins), lifted=any(t.lifted for t in ins))],
          _where_lower, (3, 3), cost=elementwise(1, saves=(Save("in", 0),)), doc="where(cond, a, b)",
          title=lambda a, numbers: ("where",),  # the name alone: its number branches are not drawn
          example=example_spec("A = 3, B = 4", "x: [A, B], y: [B]", "[A, B]", "return where(x > 0, x, y)"), dtypes=WHERE,
          role=CHOOSE),
    OpDef("clamp", "elementwise", _infer_clamp, _clamp_lower, (1, 1),
          {"min": Kw(NUMBER), "max": Kw(NUMBER)}, cost=elementwise(1, saves=(_IN,)), doc="clamp(x, min = a, max = b)",
          example=example_spec("A = 3, B = 4", "x: [A, B]", "[A, B]", "return clamp(x, min = -0.5, max = 0.5)")),
    *(_unary_entry(name, row) for name, row in UNARY.items()),
)
