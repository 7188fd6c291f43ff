"""Batch statistics: ``batchnorm`` over the lifted (batch) dims and the named axes, with running
mean and variance kept in buffers the spec declares (so their state_dict names are the spec's:
``running_mean``, ``running_var``, ``num_batches_tracked`` load from ``nn.BatchNorm1d/2d``).

In training it normalises by the batch's statistics (biased variance) and moves the running ones
towards them (``(1 - momentum)·running + momentum·batch``, the variance unbiased, as torch does),
counting the batches; in eval it normalises by the running ones. The axes it does not name are
the channels: each has its own statistics, and the buffers carry exactly those axes.
"""
from __future__ import annotations

from typing import Any

from ncd.ir import BUFFER, Node, WireType
from ncd.ops.base import AXES, NUMBER, Algebra, Expr, Kw, LowerCtx, OpDef, TypeCtx, call, lit
from ncd.ops.costing import Save, Size, numel
from ncd.ops.layout import neg_dim
from ncd.ops.random import TRAINING

BUFFERS = ("running_mean", "running_var", "num_batches_tracked")
HINT = "declare the statistics as buffers of the channel axes: buffer running_mean: [C] init zeros"


def _over(attrs: dict[str, Any]) -> list[str]:
    return list(attrs.get("over") or [])


def _infer_batchnorm(ctx: TypeCtx, ins: list[WireType], attrs: dict[str, Any]) -> list[WireType]:
    x, *stats = ins
    over = _over(attrs)
    for axis in over:
        if axis not in x.axes:
            raise ctx.error(f"axis {axis} is not on this wire, whose axes are [{', '.join(x.axes)}]",
                            hint="name axes of the wire in over = [...]; the lifted batch is always included",
                            at="over")
    if not x.lifted and not over:
        raise ctx.error("batchnorm of a wire that is not lifted, over no axis, has one value per statistic",
                        hint="normalise over axes of the wire: batchnorm(x, mean, var, over = [H, W])")
    channels = tuple(a for a in x.axes if a not in over)
    for i, (t, what) in enumerate(zip(stats, BUFFERS)):
        want = () if i == 2 else channels
        if ctx.input_ops and ctx.input_ops[i + 1] != BUFFER:
            shown = "[" + ", ".join(want) + "]"
            raise ctx.error(f"batchnorm's {what} (input {i + 2}) must be a buffer: it is updated in training",
                            hint=f"{HINT}; here: buffer {what}: {shown} init " + ("ones" if i == 1 else "zeros"))
        if t.axes != want or t.lifted or t.dtype != "float":
            shown = "[" + ", ".join(want) + "]"
            raise ctx.error(f"batchnorm's {what} must be a float buffer with the axes {shown}, got {t}",
                            hint=f"declare it: buffer {what}: {shown}" + (" init zeros" if i != 1 else " init ones"))
    momentum, eps = attrs.get("momentum", 0.1), attrs.get("eps", 1e-5)
    if not 0 < momentum <= 1:
        raise ctx.error(f"batchnorm's momentum must be in (0, 1], got {momentum:g}",
                        hint="momentum = 0.1, as nn.BatchNorm2d", at="momentum")
    if not eps > 0:
        raise ctx.error(f"batchnorm's eps must be positive, got {eps:g}", hint="eps = 1e-5, as nn.BatchNorm2d",
                        at="eps")
    return [WireType(axes=x.axes, lifted=x.lifted)]


def _lower_batchnorm(node: Node, ctx: LowerCtx) -> Expr:
    x = ctx.in_types[0]
    over = tuple(neg_dim(x.axes, a) for a in _over(node.attrs))
    count = ctx.refs[3] if len(ctx.refs) > 3 else lit(None)
    return call("rt.batch_norm", ctx.refs[0], ctx.refs[1], ctx.refs[2], count, lit(over), lit(len(x.axes)),
                TRAINING, lit(float(node.attrs.get("momentum", 0.1))), lit(float(node.attrs.get("eps", 1e-5))))


def _natural(x: WireType, over: list[str]) -> bool:
    """The channels come before the normalised axes: the batch-norm runs on a view of x."""
    channels = [i for i, a in enumerate(x.axes) if a not in over]
    return all(i == k for k, i in enumerate(channels))


def _batchnorm_cost(node: Node, ins, size: Size) -> dict[str, Any]:
    """As layernorm: about 7 FLOPs an element forward and 10 back; plus the running statistics'
    update (4 FLOPs a channel). torch's batch-norm keeps its input (a view, or the permuted copy
    it ran on), the running mean and variance, and the batch mean and 1/σ (one each a channel)."""
    x = ins[0]
    n = numel(x, size)
    over = _over(node.attrs)
    channels = numel(WireType(axes=tuple(a for a in x.axes if a not in over), lifted=False), size)
    saves = [Save("in", 0) if _natural(x, over) else Save("new", numel=n)]
    saves += [Save("new", numel=channels) for _ in range(4)]
    return {"flops": 7 * n + 4 * channels, "bwd": (10 * n, 0, 0, 0)[: len(ins)], "saves": saves}


_OPTIONS = {"over": Kw(AXES), "momentum": Kw(NUMBER, 0.1), "eps": Kw(NUMBER, 1e-5)}

BN_EXAMPLE = """axis C = 3, H = 2, W = 4
block F(x: [C, H, W]) -> [C, H, W] {
  buffer running_mean: [C] init zeros
  buffer running_var: [C] init ones
  buffer num_batches_tracked: [] init zeros
  return batchnorm(x, running_mean, running_var, num_batches_tracked, over = [H, W])
}
"""

OPS: tuple[OpDef, ...] = (
    OpDef("batchnorm", "normalise", _infer_batchnorm, _lower_batchnorm, (3, 4), _OPTIONS, cost=_batchnorm_cost,
          algebra=Algebra(mixes="over"), stateful=True,
          label=lambda attrs: f"momentum = {float(attrs.get('momentum', 0.1)):g}, batch statistics",
          doc="batchnorm(x, running_mean, running_var[, num_batches_tracked], over = [H, W], momentum = 0.1, "
              "eps = 1e-5): normalised by the statistics over the batch and the named axes in training, "
              "by the running ones in eval (nn.BatchNorm1d/2d without the affine part)",
          example=BN_EXAMPLE),
)
