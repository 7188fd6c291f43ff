"""Ops that name the axis they act on: reductions, softmax, norms, scans over one axis."""
from __future__ import annotations

from typing import Any

from ncd.ir import Node, WireType
from ncd.ops.base import AXES, AXIS, NUMBER, Affine, Algebra, Expr, Kw, LowerCtx, Masked, OpDef, TypeCtx, call, lit
from ncd.ops.costing import Save, fused_norm, normalise, reduction
from ncd.ops.dtypes import ARITH
from ncd.ops.layout import neg_dim


def _over(attrs: dict[str, Any]) -> tuple[str, ...]:
    over = attrs["over"]
    return tuple(over) if isinstance(over, (list, tuple)) else (over,)


def _check_over(ctx: TypeCtx, t: WireType, attrs: dict[str, Any], single: bool) -> tuple[str, ...]:
    over = _over(attrs)
    if single and len(over) != 1:
        raise ctx.error(f"this op acts on exactly one axis, got {len(over)}", hint="write over = A", at="over")
    for axis in over:
        if axis not in t.axes:
            raise ctx.error(f"axis {axis} is not on this wire, whose axes are [{', '.join(t.axes)}]",
                            hint="name one of the wire's axes in over = ...", at="over")
    return over


def _infer_reduce(ctx: TypeCtx, ins: list[WireType], attrs: dict[str, Any]) -> list[WireType]:
    over = _check_over(ctx, ins[0], attrs, single=False)
    t = ins[0]
    return [WireType(axes=tuple(a for a in t.axes if a not in over), lifted=t.lifted)]


def _check_eps(ctx: TypeCtx, attrs: dict[str, Any]) -> None:
    """A negative eps makes layernorm/rmsnorm a sqrt of a negative (NaN) and l2norm divide by it."""
    eps = attrs.get("eps")
    if eps is not None and eps < 0:
        raise ctx.error(f"eps must be at least 0, got {float(eps):g}", at="eps",
                        hint="eps is added under the square root (or bounds the norm): write eps = 1e-5")


def _infer_keep(single: bool):
    def infer(ctx: TypeCtx, ins: list[WireType], attrs: dict[str, Any]) -> list[WireType]:
        _check_over(ctx, ins[0], attrs, single=single)
        _check_eps(ctx, attrs)
        return [WireType(axes=ins[0].axes, lifted=ins[0].lifted)]

    return infer


def _dims(node: Node, ctx: LowerCtx) -> tuple[int, ...]:
    axes = ctx.in_types[0].axes
    return tuple(neg_dim(axes, a) for a in _over(node.attrs))


def _reduce(method: str):
    def lower(node: Node, ctx: LowerCtx) -> Expr:
        return call(method, ctx.refs[0], dim=lit(_dims(node, ctx)))

    return lower


def _along(fn: str):
    def lower(node: Node, ctx: LowerCtx) -> Expr:
        (dim,) = _dims(node, ctx)
        return call(fn, ctx.refs[0], dim=lit(dim))

    return lower


def _trailing(node: Node, ctx: LowerCtx) -> tuple[bool, tuple[int, ...]]:
    """Whether the normalised axes are the last core axes, in order (the fast, fused case)."""
    axes = ctx.in_types[0].axes
    over = _over(node.attrs)
    dims = tuple(neg_dim(axes, a) for a in over)
    return dims == tuple(range(-len(over), 0)), dims


def _norm(fused: str, helper: str, eps_default: float):
    def lower(node: Node, ctx: LowerCtx) -> Expr:
        trailing, dims = _trailing(node, ctx)
        eps = lit(float(node.attrs.get("eps", eps_default)))
        sizes = tuple(ctx.size_of(a) for a in _over(node.attrs))
        if trailing and all(s is not None for s in sizes):
            return call(fused, ctx.refs[0], lit(sizes), eps=eps)
        return call(helper, ctx.refs[0], lit(dims), eps)

    return lower


def _l2norm_lower(node: Node, ctx: LowerCtx) -> Expr:
    (dim,) = _dims(node, ctx)
    return call("F.normalize", ctx.refs[0], dim=lit(dim), eps=lit(float(node.attrs.get("eps", EPS["l2norm"]))))


OVER = {"over": Kw(AXES, required=True)}
OVER1 = {"over": Kw(AXIS, required=True)}
OVER_EPS = {"over": Kw(AXES, required=True), "eps": Kw(NUMBER)}
LINEAR_OVER = Algebra("joint", "over")  # linear, combines values along `over`
MIXES_OVER = Algebra(mixes="over")  # nonlinear, combines values along `over`
# default eps of each norm (docs/language.md says so): torch's own defaults for layer_norm and
# normalize; 1e-6 for rms_norm, as LLaMA/T5 use (torch's F.rms_norm defaults to the dtype's eps)
EPS = {"layernorm": 1e-5, "rmsnorm": 1e-6, "l2norm": 1e-12}
# along a causally masked cache axis: the sum ignores zero entries, the max-like ones -inf entries
_IGNORES_ZERO, _IGNORES_NEG_INF = Masked(ignores="0"), Masked(ignores="-oo")

OPS: tuple[OpDef, ...] = (
    OpDef("sum", "reduce", _infer_reduce, _reduce("torch.sum"), kwargs=OVER, cost=reduction(), doc="Σ over the named axes", algebra=LINEAR_OVER,
          masked=_IGNORES_ZERO),
    OpDef("mean", "reduce", _infer_reduce, _reduce("torch.mean"), kwargs=OVER, cost=reduction(), doc="mean over the named axes", algebra=LINEAR_OVER),
    OpDef("max", "reduce", _infer_reduce, _reduce("torch.amax"), kwargs=OVER,
          cost=reduction(saves=(Save("in", 0), Save("out", 0))), doc="max over the named axes",
          algebra=MIXES_OVER, dtypes=ARITH, masked=_IGNORES_NEG_INF),
    OpDef("min", "reduce", _infer_reduce, _reduce("torch.amin"), kwargs=OVER,
          cost=reduction(saves=(Save("in", 0), Save("out", 0))), doc="min over the named axes",
          algebra=MIXES_OVER, dtypes=ARITH),
    OpDef("logsumexp", "reduce", _infer_reduce, _reduce("torch.logsumexp"), kwargs=OVER,
          cost=reduction(4, 5, saves=(Save("in", 0), Save("out", 0))), doc="log Σ exp over the named axes", algebra=MIXES_OVER,
          masked=_IGNORES_NEG_INF),
    OpDef("softmax", "normalise", _infer_keep(True), _along("torch.softmax"), kwargs=OVER1,
          cost=normalise(5, 4, (Save("out", 0),)), doc="softmax along one axis", algebra=MIXES_OVER,
          attention_weights=True, masked=Masked(ignores="-oo", gives="0")),
    OpDef("log_softmax", "normalise", _infer_keep(True), _along("torch.log_softmax"), kwargs=OVER1,
          cost=normalise(5, 4, (Save("out", 0),)), doc="log-softmax along one axis", algebra=MIXES_OVER,
          masked=Masked(ignores="-oo", gives="-oo")),
    OpDef("cumsum", "normalise", _infer_keep(True), _along("torch.cumsum"), kwargs=OVER1,
          cost=normalise(1, 1), doc="running sum along one axis", algebra=LINEAR_OVER),
    OpDef("layernorm", "normalise", _infer_keep(False), _norm("F.layer_norm", "rt.layer_norm", EPS["layernorm"]),
          kwargs=OVER_EPS, cost=normalise(7, 10, (Save("in", 0),), stats=True), algebra=MIXES_OVER,
          # F.layer_norm(x, γ, β) saves x, the mean and 1/σ per row
          affine=Affine("F.layer_norm", bias=True, eps=EPS["layernorm"],
                        cost=fused_norm(9, (10, 2, 1),
                                        (Save("in", 0), Save("new", numel="rows"), Save("new", numel="rows")))),
          doc="(x - mean) / sqrt(var + eps) over the named axes (biased variance, eps = 1e-5), no affine"),
    OpDef("rmsnorm", "normalise", _infer_keep(False), _norm("F.rms_norm", "rt.rms_norm", EPS["rmsnorm"]),
          kwargs=OVER_EPS, cost=normalise(4, 7, (Save("in", 0), Save("new", numel="rows"))), algebra=MIXES_OVER,
          # F.rms_norm(x, γ) (composite on the CPU) saves x, 1/rms per row and the normalised x (γ's gradient)
          affine=Affine("F.rms_norm", bias=False, eps=EPS["rmsnorm"],
                        cost=fused_norm(5, (8, 1, 0),
                                        (Save("in", 0), Save("new", numel="rows"), Save("new", numel="all")))),
          doc="x / sqrt(mean(x²) + eps) over the named axes (eps = 1e-6), no affine"),
    OpDef("l2norm", "normalise", _infer_keep(True), _l2norm_lower,
          kwargs={"over": Kw(AXIS, required=True), "eps": Kw(NUMBER)},
          # F.normalize saves x, the norm (for clamp_min) and the clamped norm (for the division)
          cost=normalise(4, 7, (Save("in", 0), Save("new", numel="rows"), Save("new", numel="rows"))),
          algebra=MIXES_OVER, doc="x / max(‖x‖₂, eps) along one axis (eps = 1e-12)"),
)
