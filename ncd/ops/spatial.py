"""Convolution, pooling and up-sampling over named spatial axes.

Spatial ops name the axes they slide over with ``over``; an axis keeps its name through the op
(``over = [Y, X]``: the sizes must then come out equal, e.g. a 3×3 conv with padding 1) or is
mapped to a new one (``over = [Y, X] -> [Y2, X2]``). Each output size follows PyTorch's formula
and is unified with the output axis: an output axis declared without a size (``axis Y2``) gets
it inferred, a declared size that disagrees is an error at the call.

Convolution typing (``conv(x, W, over = [Y, X] -> [Y2, X2], kernel = [KY, KX])``) is by axis name:

- ``kernel`` names W's window axes, in the spatial order of ``over``;
- input channels = the axes on both x and W (kernel axes aside): they are contracted, like ``@``;
- output channels = W's remaining axes (in W's order);
- x's remaining axes are batch-like: kept, and every lifted dim too.

The result has x's axes in x's order, the spatial axes renamed, and the output channels in the
place of the (first) input channel axis — or in front of the first spatial axis when x has no
channel axis. So ``x: [C, Y, X]`` with ``W: [C2, C, KY, KX]`` gives ``[C2, Y2, X2]``, and a
channels-last ``x: [Y, X, C]`` gives ``[Y2, X2, C2]``. Stride, padding and dilation are one
number for every spatial axis. Weights with lifted dims of their own (per-example weights, or a
kernel lifted over channels: depthwise) lower to one grouped conv (``rt.conv_per_example``).

Lowerings put the core dims in the canonical order (batch, channels, spatial), call a runtime
helper that flattens the leading dims into torch's batch dim and the channel axes into one,
and permute the result back to the typed order.
"""
from __future__ import annotations

import math
from typing import Any

import sympy

from ncd import sizes as sz
from ncd.ir import Node, WireType
from ncd.ops.base import AXES, AXES_OR_MAP, NUMBER, Algebra, Expr, example_spec, Kw, LowerCtx, OpDef, TypeCtx, call, lit
from ncd.ops.costing import Save, Size, numel
from ncd.ops.layout import permute_to


def _axes_str(axes) -> str:
    return f"[{', '.join(axes)}]"


MAX_WINDOW_OPTION = 2**31 - 1  # torch computes output sizes from these in 32-bit arithmetic in places


def _int_option(ctx: TypeCtx, attrs: dict[str, Any], key: str, default: int, low: int) -> int:
    value = attrs.get(key)
    value = default if value is None else value
    if not math.isfinite(value) or float(value) != int(value) or int(value) < low:
        raise ctx.error(f"{key} must be a whole number ≥ {low}, got {value:g}", at=key)
    if int(value) > MAX_WINDOW_OPTION:
        raise ctx.error(f"{key} must be at most 2^31-1, got {value:g}", at=key)
    return int(value)


def _spatial_map(ctx: TypeCtx, x: WireType, attrs: dict[str, Any],
                 torch_nd: bool = True) -> tuple[list[str], list[str]]:
    """(input spatial axes, output spatial axes), checked against the wire x."""
    src, dst = list(attrs["over"]["src"]), list(attrs["over"]["dst"])
    if len(src) != len(dst):
        raise ctx.error(f"over maps {len(src)} axes to {len(dst)}", hint="write over = [Y, X] -> [Y2, X2]")
    if torch_nd and not 1 <= len(src) <= 3:
        raise ctx.error(f"this op slides over 1, 2 or 3 axes, got {len(src)}")
    for axis in src:
        if axis not in x.axes:
            raise ctx.error(f"axis {axis} is not on this wire, whose axes are {_axes_str(x.axes)}",
                            hint="name the input's spatial axes in over = ...")
    if len(set(src)) != len(src) or len(set(dst)) != len(dst):
        raise ctx.error("over names an axis twice")
    for s, d in zip(src, dst):
        if d != s and d in x.axes:
            raise ctx.error(f"output axis {d} is already on this wire {_axes_str(x.axes)}",
                            hint="map each spatial axis to a new name, or keep its own name")
    return src, dst


def _unify_out(ctx: TypeCtx, src: str, dst: str, size, what: str, hint: str) -> None:
    """Bind or check the output axis; an axis that keeps its name must keep its size exactly."""
    if dst == src:
        n = ctx.sizes(src)
        if sz.simplify_bounded(size - n, f"the size of axis {src}") != 0:
            raise ctx.error(f"over keeps axis {src}, but {what} is {sympy.simplify(size)}, not {n}",
                            hint=f"{hint}; or map it to a new axis declared without a size: over = [...] -> [...]")
        return
    ctx.unify(dst, size, what)


def _window_size(n, k, stride: int, padding: int, dilation: int):
    return sympy.floor((n + 2 * padding - dilation * (k - 1) - 1) / sympy.Integer(stride)) + 1


# ----------------------------------------------------------------------------- conv / conv_transpose
def _conv_roles(ctx: TypeCtx, x: WireType, w: WireType, attrs: dict[str, Any]):
    src, dst = _spatial_map(ctx, x, attrs)
    kernel = list(attrs["kernel"])
    if len(kernel) != len(src):
        raise ctx.error(f"kernel names {len(kernel)} axes but over names {len(src)}",
                        hint="one window axis of W per spatial axis, in the same order")
    for axis in kernel:
        if axis not in w.axes:
            raise ctx.error(f"kernel axis {axis} is not on the weights, whose axes are {_axes_str(w.axes)}")
        if axis in x.axes:
            raise ctx.error(f"kernel axis {axis} is also on the input {_axes_str(x.axes)}")
    for axis in src:
        if axis in w.axes:
            raise ctx.error(f"spatial axis {axis} is also on the weights {_axes_str(w.axes)}",
                            hint="the weights' window axes are named by kernel = [...]")
    roles = _roles(x, w, attrs)
    for axis in roles[4]:  # (an axis of W also on x is contracted, so only the spatial outputs can clash)
        if axis in dst:
            raise ctx.error(f"output channel axis {axis} of the weights is also an output spatial axis",
                            hint=f"rename one of them, e.g. {axis}'")
    return roles


def _roles(x: WireType, w: WireType, attrs: dict[str, Any]):
    """(spatial in, spatial out, kernel, input channels, output channels, batch-like axes)."""
    src, dst = list(attrs["over"]["src"]), list(attrs["over"]["dst"])
    kernel = list(attrs["kernel"])
    c_in = [a for a in x.axes if a in w.axes]
    c_out = [a for a in w.axes if a not in c_in and a not in kernel]
    batch = [a for a in x.axes if a not in c_in and a not in src]
    return src, dst, kernel, c_in, c_out, batch


def _conv_out_axes(x: WireType, src, dst, c_in, c_out) -> tuple[str, ...]:
    """x's axes in x's order: spatial axes renamed, the output channels where the first input
    channel was (or in front of the first spatial axis), the other input channels dropped."""
    anchor = c_in[0] if c_in else next(a for a in x.axes if a in src)
    out: list[str] = []
    for a in x.axes:
        if a == anchor:
            out += c_out
        if a in src:
            out.append(dst[src.index(a)])
        elif a not in c_in:
            out.append(a)
    return tuple(out)


def _infer_conv(transposed: bool):
    def infer(ctx: TypeCtx, ins: list[WireType], attrs: dict[str, Any]) -> list[WireType]:
        x, w = ins
        src, dst, kernel, c_in, c_out, _ = _conv_roles(ctx, x, w, attrs)
        stride = _int_option(ctx, attrs, "stride", 1, 1)
        padding = _int_option(ctx, attrs, "padding", 0, 0)
        dilation = _int_option(ctx, attrs, "dilation", 1, 1)
        extra = _int_option(ctx, attrs, "output_padding", 0, 0) if transposed else 0
        for s, d, k in zip(src, dst, kernel):
            n, ks = ctx.sizes(s), ctx.sizes(k)
            if transposed:
                size = (n - 1) * stride - 2 * padding + dilation * (ks - 1) + extra + 1
            else:
                size = _window_size(n, ks, stride, padding, dilation)
            name = "conv_transpose" if transposed else "conv"
            _unify_out(ctx, s, d, size, f"the output size of {name} along {s}",
                       "a stride-1 conv keeps the size with padding = dilation·(k-1)/2")
        return [WireType(axes=_conv_out_axes(x, src, dst, c_in, c_out), lifted=x.lifted)]

    return infer


def _lower_conv(transposed: bool):
    def lower(node: Node, ctx: LowerCtx) -> Expr:
        x, w = ctx.in_types
        attrs = node.attrs
        src, dst, kernel, c_in, c_out, batch = _roles(x, w, attrs)
        xs = permute_to(ctx.refs[0], x.axes, batch + c_in + src)
        ws = permute_to(ctx.refs[1], w.axes, c_out + c_in + kernel)
        options = dict(stride=lit(int(attrs.get("stride") or 1)), padding=lit(int(attrs.get("padding") or 0)),
                       dilation=lit(int(attrs.get("dilation") or 1)))
        if transposed:
            options["output_padding"] = lit(int(attrs.get("output_padding") or 0))
        if w.lifted:  # per-example weights (a hypernetwork) or a kernel lifted over channels
            out = call("rt.conv_per_example", xs, ws, lit(len(batch)), lit(len(c_in)), lit(len(c_out)),
                       lit(len(src)), lit(transposed), **options)
        else:
            fn = "rt.conv_transpose_nd" if transposed else "rt.conv_nd"
            out = call(fn, xs, ws, lit(len(c_in)), lit(len(c_out)), lit(len(src)), **options)
        return permute_to(out, batch + c_out + dst, node.type.axes)

    return lower


# ----------------------------------------------------------------------------- pooling / up-sampling
def _infer_pool(ctx: TypeCtx, ins: list[WireType], attrs: dict[str, Any]) -> list[WireType]:
    x = ins[0]
    src, dst = _spatial_map(ctx, x, attrs)
    size = _int_option(ctx, attrs, "size", 2, 1)
    stride = _int_option(ctx, attrs, "stride", size, 1)
    padding = _int_option(ctx, attrs, "padding", 0, 0)
    if 2 * padding > size:
        raise ctx.error(f"padding {padding} is more than half the window size {size}")
    for s, d in zip(src, dst):
        _unify_out(ctx, s, d, _window_size(ctx.sizes(s), size, stride, padding, 1), f"the pooled size along {s}",
                   "pooling keeps the size only with stride 1 and padding = (size - 1)/2")
    return [WireType(axes=tuple(dst[src.index(a)] if a in src else a for a in x.axes), lifted=x.lifted)]


def _lower_pool(kind: str):
    def lower(node: Node, ctx: LowerCtx) -> Expr:
        x = ctx.in_types[0]
        attrs = node.attrs
        src, dst = list(attrs["over"]["src"]), list(attrs["over"]["dst"])
        rest = [a for a in x.axes if a not in src]
        size = int(attrs.get("size") or 2)
        stride = int(attrs["stride"]) if attrs.get("stride") is not None else size
        xs = permute_to(ctx.refs[0], x.axes, rest + src)
        out = call("rt.pool_nd", xs, lit(kind), lit(len(src)), lit(size), lit(stride),
                   lit(int(attrs.get("padding") or 0)))
        return permute_to(out, rest + dst, node.type.axes)

    return lower


def _infer_upsample(ctx: TypeCtx, ins: list[WireType], attrs: dict[str, Any]) -> list[WireType]:
    x = ins[0]
    src, dst = _spatial_map(ctx, x, attrs, torch_nd=False)
    scale = _int_option(ctx, attrs, "scale", 2, 1)
    for s, d in zip(src, dst):
        _unify_out(ctx, s, d, ctx.sizes(s) * scale, f"the up-sampled size along {s} ({scale} × {s})",
                   "up-sampling grows the axis")
    return [WireType(axes=tuple(dst[src.index(a)] if a in src else a for a in x.axes), lifted=x.lifted)]


def _lower_upsample(node: Node, ctx: LowerCtx) -> Expr:
    x = ctx.in_types[0]
    src = list(node.attrs["over"]["src"])
    dims = tuple(a - len(x.axes) for a, name in enumerate(x.axes) if name in src)
    return call("rt.upsample_nearest", ctx.refs[0], lit(dims), lit(int(node.attrs.get("scale") or 2)))


# ----------------------------------------------------------------------------- cost
def _prod(size: Size, axes) -> Any:
    return sympy.Mul(*[size(a) for a in axes]) if axes else sympy.Integer(1)


def _conv_cost(transposed: bool):
    """2 FLOPs per multiply-add, as torch's FlopCounterMode counts convolutions: each output
    element of a conv reads c_in × window inputs; a transposed conv scatters each *input*
    element into c_out × window outputs. Each gradient (input, weights) is one more such conv."""

    def cost(node: Node, ins, size: Size) -> dict[str, Any]:
        x, w = ins
        _, _, kernel, c_in, c_out, _ = _roles(x, w, node.attrs)
        if transposed:
            flops = 2 * numel(x, size) * _prod(size, c_out) * _prod(size, kernel)
        else:
            flops = 2 * numel(node.type, size) * _prod(size, c_in) * _prod(size, kernel)
        return {"matmul": flops, "matmul_bwd": (flops, flops),
                "saves": [Save("in", 0, when=1), Save("in", 1, when=0)]}

    return cost


def _pool_cost(kind: str):
    """A window's worth of compares/adds per output element; max pooling keeps its input and the
    arg-max indices (one int64 per output element), average pooling its input."""

    def cost(node: Node, ins, size: Size) -> dict[str, Any]:
        n_out = numel(node.type, size)
        window = int(node.attrs.get("size") or 2) ** len(node.attrs["over"]["src"])
        # max keeps its input and the arg-max indices; avg keeps its input (for its shape and padding)
        saves = [Save("in", 0), Save("new", numel=n_out, dtype="int")] if kind == "max" else [Save("in", 0)]
        return {"flops": window * n_out, "bwd": (n_out if kind == "max" else window * n_out,), "saves": saves}

    return cost


def _upsample_cost(node: Node, ins, size: Size) -> dict[str, Any]:
    """A copy: no FLOPs forward; the gradient sums each block of scale^n output gradients."""
    return {"flops": 0, "bwd": (numel(node.type, size),)}


# ----------------------------------------------------------------------------- the table
_OVER = Kw(AXES_OR_MAP, required=True)
_CONV = {"over": _OVER, "kernel": Kw(AXES, required=True), "stride": Kw(NUMBER), "padding": Kw(NUMBER),
         "dilation": Kw(NUMBER)}
_POOL = {"over": _OVER, "size": Kw(NUMBER), "stride": Kw(NUMBER), "padding": Kw(NUMBER)}

# Convolution is bilinear, but the recurrence pass treats every spatial op as nonlinear and mixing
# all the axes it sees (conservative: such a scan runs as Newton over a dense state, or sequentially).
_MIXES_ALL = Algebra(mixes="all")

OPS: tuple[OpDef, ...] = (
    OpDef("conv", "spatial", _infer_conv(False), _lower_conv(False), (2, 2), _CONV, cost=_conv_cost(False), algebra=_MIXES_ALL,
          example=example_spec("C = 2, D = 3, Y = 6, X = 5, KY = 3, KX = 2, Y2, X2", "x: [C, Y, X]", "[D, Y2, X2]",
                               "param w: [D, C, KY, KX] init normal(0, 1)\n"
                               "  return conv(x, w, over = [Y, X] -> [Y2, X2], kernel = [KY, KX], padding = 1)"),
          doc="conv(x, W, over = [Y, X] -> [Y2, X2], kernel = [KY, KX], stride = 1, padding = 0, dilation = 1): "
              "contracts the axes x and W share, W's other axes are the output channels"),
    OpDef("conv_transpose", "spatial", _infer_conv(True), _lower_conv(True), (2, 2),
          {**_CONV, "output_padding": Kw(NUMBER)}, cost=_conv_cost(True), algebra=_MIXES_ALL,
          example=example_spec("C = 2, D = 3, Y = 4, X = 3, KY = 3, KX = 2, Y2, X2", "x: [C, Y, X]", "[D, Y2, X2]",
                               "param w: [D, C, KY, KX] init normal(0, 1)\n  return conv_transpose("
                               "x, w, over = [Y, X] -> [Y2, X2], kernel = [KY, KX], stride = 2)"),
          doc="conv_transpose(x, W, over = [Yh, Xh] -> [Y, X], kernel = [KY, KX], stride, padding, "
              "output_padding): out = (n-1)·stride - 2·padding + dilation·(k-1) + output_padding + 1"),
    OpDef("maxpool", "spatial", _infer_pool, _lower_pool("max"), (1, 1), _POOL, cost=_pool_cost("max"), algebra=_MIXES_ALL,
          example=example_spec("C = 2, Y = 6, X = 4, Y2, X2", "x: [C, Y, X]", "[C, Y2, X2]",
                               "return maxpool(x, over = [Y, X] -> [Y2, X2])"),
          doc="maxpool(x, over = [Y, X] -> [Yh, Xh], size = 2, stride = size, padding = 0)"),
    OpDef("avgpool", "spatial", _infer_pool, _lower_pool("avg"), (1, 1), _POOL, cost=_pool_cost("avg"), algebra=_MIXES_ALL,
          example=example_spec("C = 2, Y = 6, X = 4, Y2, X2", "x: [C, Y, X]", "[C, Y2, X2]",
                               "return avgpool(x, over = [Y, X] -> [Y2, X2], size = 3, stride = 1, padding = 1)"),
          doc="avgpool(x, over = [Y, X] -> [Yh, Xh], size = 2, stride = size, padding = 0) (padding counts as 0)"),
    OpDef("upsample", "spatial", _infer_upsample, _lower_upsample, (1, 1),
          {"over": _OVER, "scale": Kw(NUMBER)}, cost=_upsample_cost, algebra=_MIXES_ALL,
          example=example_spec("C = 2, Y = 3, X = 2, Y2, X2", "x: [C, Y, X]", "[C, Y2, X2]",
                               "return upsample(x, over = [Y, X] -> [Y2, X2])"),
          doc="upsample(x, over = [Yh, Xh] -> [Y, X], scale = 2): nearest-neighbour, each value repeated"),
)
