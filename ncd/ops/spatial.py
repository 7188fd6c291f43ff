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
from ncd.ops.base import (AXES, AXES_OR_MAP, FLAG, NAME, NUMBERS, Algebra, BinOp, Expr, Kw, LowerCtx, OpDef, TypeCtx,
                          call, example_spec, lit)
from ncd.ops.costing import Save, Size, numel
from ncd.ops.layout import permute_to


def _axes_str(axes) -> str:
    return f"[{', '.join(axes)}]"


MAX_WINDOW_OPTION = 2**31 - 1  # torch computes output sizes from these in 32-bit arithmetic in places


def _whole(ctx: TypeCtx, key: str, value: Any, low: int) -> int:
    if not math.isfinite(value) or float(value) != int(value) or int(value) < low:
        raise ctx.error(f"{key} must be a whole number ≥ {low}, got {value:g}", at=key,
                        hint=f"write a whole number: {key} = {max(low, math.ceil(value)) if math.isfinite(value) else low}")
    if int(value) > MAX_WINDOW_OPTION:
        raise ctx.error(f"{key} must be at most 2^31-1, got {value:g}", at=key,
                        hint="torch computes window sizes in 32-bit integers: use a smaller value")
    return int(value)


def _int_option(ctx: TypeCtx, attrs: dict[str, Any], key: str, default: int, low: int) -> int:
    value = attrs.get(key)
    return _whole(ctx, key, default if value is None else value, low)


def _per_axis(ctx: TypeCtx, attrs: dict[str, Any], key: str, default: int | list[int], low: int, n: int) -> list[int]:
    """A window option for each of the ``n`` spatial axes: one number for all, or a list of n."""
    value = attrs.get(key)
    if value is None:
        return list(default) if isinstance(default, list) else [default] * n
    values = value if isinstance(value, list) else [value] * n
    if len(values) != n:
        raise ctx.error(f"{key} lists {len(values)} numbers but over names {n} axes", at=key,
                        hint=f"one number for every axis ({key} = {values[0]:g}), or one per axis of over, in its order")
    return [_whole(ctx, key, v, low) for v in values]


def _values(attrs: dict[str, Any], key: str, default: int | list[int], n: int) -> list[int]:
    """``_per_axis`` for a checked node (the lowering and the cost read it)."""
    value = attrs.get(key)
    if value is None:
        return list(default) if isinstance(default, list) else [default] * n
    return [int(v) for v in value] if isinstance(value, list) else [int(value)] * n


def _scalar_or_tuple(values: list[int]) -> Any:
    """One int where every axis agrees (torch's own spelling), else a tuple."""
    return values[0] if len(set(values)) == 1 else tuple(values)


def _spatial_map(ctx: TypeCtx, x: WireType, attrs: dict[str, Any],
                 torch_nd: bool = True) -> tuple[list[str], list[str]]:
    """(input spatial axes, output spatial axes), checked against the wire x."""
    src, dst = list(attrs["over"]["src"]), list(attrs["over"]["dst"])
    if len(src) != len(dst):
        raise ctx.error(f"over maps {len(src)} axes to {len(dst)}", hint="write over = [Y, X] -> [Y2, X2]")
    if torch_nd and not 1 <= len(src) <= 3:
        raise ctx.error(f"this op slides over 1, 2 or 3 axes, got {len(src)}",
                        hint="name 1 to 3 spatial axes in over = [..]; fold the others into the batch with a reshape")
    for axis in src:
        if axis not in x.axes:
            raise ctx.error(f"axis {axis} is not on this wire, whose axes are {_axes_str(x.axes)}",
                            hint="name the input's spatial axes in over = ...")
    if len(set(src)) != len(src) or len(set(dst)) != len(dst):
        raise ctx.error("over names an axis twice", hint="name each spatial axis once in over = [..]")
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
            raise ctx.error(f"over keeps axis {src}, but {what} is {sz.simplify(size)}, not {n}",
                            hint=f"{hint}; or map it to a new axis declared without a size: over = [...] -> [...]")
        return
    ctx.unify(dst, size, what)


def _window_size(n, k, stride: int, pad_left, pad_right, dilation: int, ceil: bool = False):
    """PyTorch's output size of a sliding window, exactly: floor, or with ``ceil`` the ceiling
    less a last window that would start in the right padding (torch's pooling_output_shape)."""
    span = n + pad_left + pad_right - dilation * (k - 1) - 1
    if not ceil:
        return sympy.floor(span / sympy.Integer(stride)) + 1
    return sympy.Min(sympy.ceiling(span / sympy.Integer(stride)) + 1, sympy.ceiling((n + pad_left) / sympy.Integer(stride)))


# ----------------------------------------------------------------------------- padding
PADDING_MODES = ("zeros", "reflect", "replicate", "circular")
_TORCH_PAD_MODE = {"zeros": "constant", "reflect": "reflect", "replicate": "replicate", "circular": "circular"}


def _conv_pads(ctx: TypeCtx, attrs: dict[str, Any], ks: list[Any], dilation: list[int], n: int) -> list[tuple[Any, Any]]:
    """(left, right) padding of each spatial axis; ``padding = causal`` pads a 1-D conv on the
    left only, by dilation·(k − 1), so output t sees inputs ≤ t."""
    if attrs.get("padding") == "causal":
        if n != 1:
            raise ctx.error(f"causal padding is for a convolution over one axis, this one slides over {n}",
                            at="padding", hint="pad each axis by a number: padding = [1, 1]")
        return [(dilation[0] * (ks[0] - 1), sympy.Integer(0))]
    return [(p, p) for p in _per_axis(ctx, attrs, "padding", 0, 0, n)]


def _check_mode(ctx: TypeCtx, attrs: dict[str, Any], axis: str, n, pads: tuple[Any, Any]) -> None:
    """reflect needs more positions than it pads (it mirrors without the edge), circular at least as many."""
    mode = attrs.get("padding_mode") or "zeros"
    if mode not in ("reflect", "circular"):
        return
    for p in pads:
        room = sz.constant(n - p if mode == "reflect" else n - p + 1)
        if room is not None and room < 1:
            need = "more than" if mode == "reflect" else "at least"
            raise ctx.error(f"{mode} padding by {p} needs axis {axis} to have {need} {p} positions; it has {n}",
                            at="padding_mode", hint="pad less, make the axis larger, or use padding_mode = replicate")


def _pad_lowering(node: Node, ctx: LowerCtx, kernel: list[str], dilation: list[int], n: int):
    """(explicit pads for rt.pad_spatial or None, torch's own padding argument)."""
    attrs = node.attrs
    mode = attrs.get("padding_mode") or "zeros"
    if attrs.get("padding") == "causal":
        bound = ctx.size_of(kernel[0])
        left: Expr = (lit(dilation[0] * (bound - 1)) if bound is not None
                      else BinOp("*", lit(dilation[0]), BinOp("-", ctx.size_expr(kernel[0]), lit(1))))
        return call("rt.tuple_of", call("rt.tuple_of", left, lit(0))), 0
    padding = _values(attrs, "padding", 0, n)
    if mode == "zeros":
        return None, _scalar_or_tuple(padding)
    return lit(tuple((p, p) for p in padding)), 0


# ----------------------------------------------------------------------------- conv / conv_transpose
def _conv_roles(ctx: TypeCtx, x: WireType, w: WireType, attrs: dict[str, Any]):
    src, dst = _spatial_map(ctx, x, attrs)
    kernel = list(attrs["kernel"])
    if len(kernel) != len(src):
        raise ctx.error(f"kernel names {len(kernel)} axes but over names {len(src)}",
                        hint="one window axis of W per spatial axis, in the same order")
    for axis in kernel:
        if axis not in w.axes:
            raise ctx.error(f"kernel axis {axis} is not on the weights, whose axes are {_axes_str(w.axes)}",
                            hint=f"declare the window axis on the weights (param W: [.., {axis}]) or list W's own window axes in kernel = [..]")
        if axis in x.axes:
            raise ctx.error(f"kernel axis {axis} is also on the input {_axes_str(x.axes)}",
                            hint="give the window its own axis name (axis K = 3), not one of the input's")
    for axis in src:
        if axis in w.axes:
            raise ctx.error(f"spatial axis {axis} is also on the weights {_axes_str(w.axes)}",
                            hint="the weights' window axes are named by kernel = [...]")
    for axis in attrs.get("groups") or []:
        if axis not in x.axes or axis not in w.axes:
            on_input = axis not in x.axes
            raise ctx.error(f"group axis {axis} is not on the {'input' if on_input else 'weights'}, whose axes are "
                            f"{_axes_str(x.axes if on_input else w.axes)}", at="groups",
                            hint="a group axis is on both: split the channels first, x[C -> G Cg], "
                                 "with weights W: [G, Dg, Cg, KY, KX]")
        if axis in src or axis in kernel:
            raise ctx.error(f"group axis {axis} is a spatial or kernel axis", at="groups",
                            hint="groups = [..] names channel axes that x and W share and the output keeps")
    if attrs.get("groups") and w.lifted:
        raise ctx.error("groups = [...] with weights lifted over the caller's axes", at="groups",
                        hint="a kernel lifted over channels is already a grouped conv: drop groups = ...")
    roles = _roles(x, w, attrs)
    for axis in roles[4]:  # (an axis of W also on x is contracted, so only the spatial outputs can clash)
        if axis in dst:
            raise ctx.error(f"output channel axis {axis} of the weights is also an output spatial axis",
                            hint=f"rename one of them, e.g. {axis}'")
    return roles


def _roles(x: WireType, w: WireType, attrs: dict[str, Any]):
    """(spatial in, spatial out, kernel, input channels, output channels, batch-like axes, groups).

    A group axis (``groups = [G]``) is on both x and W but kept, not contracted: each of its
    positions is its own convolution (torch's ``groups``)."""
    src, dst = list(attrs["over"]["src"]), list(attrs["over"]["dst"])
    kernel = list(attrs["kernel"])
    groups = list(attrs.get("groups") or [])
    c_in = [a for a in x.axes if a in w.axes and a not in groups]
    c_out = [a for a in w.axes if a not in c_in and a not in kernel and a not in groups]
    batch = [a for a in x.axes if a not in c_in and a not in src and a not in groups]
    return src, dst, kernel, c_in, c_out, batch, groups


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
        src, dst, kernel, c_in, c_out, _, _ = _conv_roles(ctx, x, w, attrs)
        n_sp = len(src)
        stride = _per_axis(ctx, attrs, "stride", 1, 1, n_sp)
        dilation = _per_axis(ctx, attrs, "dilation", 1, 1, n_sp)
        extra = _per_axis(ctx, attrs, "output_padding", 0, 0, n_sp) if transposed else [0] * n_sp
        for i, e in enumerate(extra):
            if e >= max(stride[i], dilation[i]):  # torch's rule: the extra positions come from the stride
                raise ctx.error(f"output_padding {e} along {src[i]} must be smaller than the stride {stride[i]} "
                                f"or the dilation {dilation[i]}", at="output_padding",
                                hint=f"write output_padding = {max(stride[i], dilation[i]) - 1} (or less) along {src[i]}")
        ks = [ctx.sizes(k) for k in kernel]
        pads = _conv_pads(ctx, attrs, ks, dilation, n_sp)
        name = "conv_transpose" if transposed else "conv"
        for i, (s, d) in enumerate(zip(src, dst)):
            n = ctx.sizes(s)
            _check_mode(ctx, attrs, s, n, pads[i])
            if transposed:
                size = (n - 1) * stride[i] - 2 * pads[i][0] + dilation[i] * (ks[i] - 1) + extra[i] + 1
            else:
                size = _window_size(n, ks[i], stride[i], pads[i][0], pads[i][1], dilation[i])
            _unify_out(ctx, s, d, size, f"the output size of {name} along {s}",
                       "a stride-1 conv keeps the size with padding = dilation·(k-1)/2 (or padding = causal)")
        return [WireType(axes=_conv_out_axes(x, src, dst, c_in, c_out), lifted=x.lifted)]

    return infer


def _lower_conv(transposed: bool):
    def lower(node: Node, ctx: LowerCtx) -> Expr:
        x, w = ctx.in_types
        attrs = node.attrs
        src, dst, kernel, c_in, c_out, batch, groups = _roles(x, w, attrs)
        n_sp = len(src)
        xs = permute_to(ctx.refs[0], x.axes, batch + groups + c_in + src)
        ws = permute_to(ctx.refs[1], w.axes, groups + c_out + c_in + kernel)
        dilation = _values(attrs, "dilation", 1, n_sp)
        pads, padding = _pad_lowering(node, ctx, kernel, dilation, n_sp)
        if pads is not None:  # reflect / replicate / circular or causal: padded first, as nn.ConvNd does
            xs = call("rt.pad_spatial", xs, lit(n_sp), pads, lit(_TORCH_PAD_MODE[attrs.get("padding_mode") or "zeros"]))
        options = dict(stride=lit(_scalar_or_tuple(_values(attrs, "stride", 1, n_sp))), padding=lit(padding),
                       dilation=lit(_scalar_or_tuple(dilation)))
        if transposed:
            options["output_padding"] = lit(_scalar_or_tuple(_values(attrs, "output_padding", 0, n_sp)))
        if groups:  # groups = [G]: torch's grouped conv, a group per position of G
            out = call("rt.conv_grouped", xs, ws, lit(len(groups)), lit(len(c_in)), lit(len(c_out)), lit(n_sp),
                       **options)
        elif w.lifted:  # per-example weights (a hypernetwork) or a kernel lifted over channels
            out = call("rt.conv_per_example", xs, ws, lit(len(batch)), lit(len(c_in)), lit(len(c_out)),
                       lit(n_sp), lit(transposed), **options)
        else:
            fn = "rt.conv_transpose_nd" if transposed else "rt.conv_nd"
            out = call(fn, xs, ws, lit(len(c_in)), lit(len(c_out)), lit(n_sp), **options)
        return permute_to(out, batch + groups + c_out + dst, node.type.axes)

    return lower


# ----------------------------------------------------------------------------- pooling / up-sampling
def _infer_pool(ctx: TypeCtx, ins: list[WireType], attrs: dict[str, Any]) -> list[WireType]:
    x = ins[0]
    src, dst = _spatial_map(ctx, x, attrs)
    n_sp = len(src)
    size = _per_axis(ctx, attrs, "size", 2, 1, n_sp)
    stride = _per_axis(ctx, attrs, "stride", size, 1, n_sp)
    padding = _per_axis(ctx, attrs, "padding", 0, 0, n_sp)
    dilation = _per_axis(ctx, attrs, "dilation", 1, 1, n_sp)
    for k, p in zip(size, padding):
        if 2 * p > k:
            raise ctx.error(f"padding {p} is more than half the window size {k}", at="padding",
                            hint=f"pad at most {k // 2}")
    for i, (s, d) in enumerate(zip(src, dst)):
        out = _window_size(ctx.sizes(s), size[i], stride[i], padding[i], padding[i], dilation[i],
                           bool(attrs.get("ceil_mode")))
        _unify_out(ctx, s, d, out, f"the pooled size along {s}",
                   "pooling keeps the size only with stride 1 and padding = (size - 1)/2")
    return [WireType(axes=tuple(dst[src.index(a)] if a in src else a for a in x.axes), lifted=x.lifted)]


def _lower_pool(kind: str):
    def lower(node: Node, ctx: LowerCtx) -> Expr:
        x = ctx.in_types[0]
        attrs = node.attrs
        src, dst = list(attrs["over"]["src"]), list(attrs["over"]["dst"])
        n_sp = len(src)
        rest = [a for a in x.axes if a not in src]
        size = _values(attrs, "size", 2, n_sp)
        stride = _values(attrs, "stride", size, n_sp)
        xs = permute_to(ctx.refs[0], x.axes, rest + src)
        extra = {}
        if attrs.get("ceil_mode"):
            extra["ceil_mode"] = lit(True)
        if attrs.get("dilation") is not None and set(_values(attrs, "dilation", 1, n_sp)) != {1}:
            extra["dilation"] = lit(_scalar_or_tuple(_values(attrs, "dilation", 1, n_sp)))
        out = call("rt.pool_nd", xs, lit(kind), lit(n_sp), lit(_scalar_or_tuple(size)), lit(_scalar_or_tuple(stride)),
                   lit(_scalar_or_tuple(_values(attrs, "padding", 0, n_sp))), **extra)
        return permute_to(out, rest + dst, node.type.axes)

    return lower


UPSAMPLE_MODES = ("nearest", "linear", "bilinear", "trilinear")


def _infer_upsample(ctx: TypeCtx, ins: list[WireType], attrs: dict[str, Any]) -> list[WireType]:
    x = ins[0]
    mode = attrs.get("mode") or "nearest"
    src, dst = _spatial_map(ctx, x, attrs, torch_nd=mode != "nearest")
    scale = _per_axis(ctx, attrs, "scale", 2, 1, len(src))
    wants = {"bilinear": 2, "trilinear": 3}.get(mode)
    if wants is not None and len(src) != wants:
        raise ctx.error(f"{mode} interpolates over {wants} axes, over names {len(src)}", at="mode",
                        hint="mode = linear interpolates over any 1, 2 or 3 axes")
    if attrs.get("align_corners") is not None and mode == "nearest":
        raise ctx.error("align_corners is an option of linear interpolation, not of nearest", at="align_corners",
                        hint="add mode = linear (or bilinear), or drop align_corners")
    for s, d, f in zip(src, dst, scale):
        _unify_out(ctx, s, d, ctx.sizes(s) * f, f"the up-sampled size along {s} ({f} × {s})",
                   "up-sampling grows the axis")
    return [WireType(axes=tuple(dst[src.index(a)] if a in src else a for a in x.axes), lifted=x.lifted)]


def _lower_upsample(node: Node, ctx: LowerCtx) -> Expr:
    x = ctx.in_types[0]
    attrs = node.attrs
    src, dst = list(attrs["over"]["src"]), list(attrs["over"]["dst"])
    scale = _values(attrs, "scale", 2, len(src))
    if (attrs.get("mode") or "nearest") == "nearest":
        dims = tuple(a - len(x.axes) for a, name in enumerate(x.axes) if name in src)
        per_dim = [scale[src.index(name)] for name in x.axes if name in src]
        return call("rt.upsample_nearest", ctx.refs[0], lit(dims), lit(_scalar_or_tuple(per_dim)))
    rest = [a for a in x.axes if a not in src]
    xs = permute_to(ctx.refs[0], x.axes, rest + src)
    out = call("rt.upsample_linear", xs, lit(len(src)), lit(tuple(float(f) for f in scale)),
               lit(bool(attrs.get("align_corners"))))
    return permute_to(out, rest + dst, node.type.axes)


# ----------------------------------------------------------------------------- cost
def _prod(size: Size, axes) -> Any:
    return sympy.Mul(*[size(a) for a in axes]) if axes else sympy.Integer(1)


def _conv_cost(transposed: bool):
    """2 FLOPs per multiply-add, as torch's FlopCounterMode counts convolutions: each output
    element of a conv reads c_in × window inputs; a transposed conv scatters each *input*
    element into c_out × window outputs. Each gradient (input, weights) is one more such conv.
    A grouped conv's weight gradient is counted as FlopCounterMode counts it, G times that (its
    formula sees the weight gradient as one conv over all channels, ignoring groups)."""

    def cost(node: Node, ins, size: Size) -> dict[str, Any]:
        x, w = ins
        _, _, kernel, c_in, c_out, _, groups = _roles(x, w, node.attrs)
        if transposed:
            flops = 2 * numel(x, size) * _prod(size, c_out) * _prod(size, kernel)
        else:
            flops = 2 * numel(node.type, size) * _prod(size, c_in) * _prod(size, kernel)
        return {"matmul": flops, "matmul_bwd": (flops, flops * _prod(size, groups)),
                "saves": [*_conv_input_saves(node, x, size, kernel, transposed), Save("in", 1, when=0)]}

    return cost


def _conv_input_saves(node: Node, x: WireType, size: Size, kernel: list[str], transposed: bool) -> list[Save]:
    """What is kept of x: for the weight gradient, x itself, or, where the lowering pads x first
    (padding_mode reflect / replicate / circular, padding = causal; see _pad_lowering), the padded
    copy, which is then the conv's input; torch's reflection and replication pads also keep x
    for their own backward (constant and circular pads keep nothing)."""
    attrs = node.attrs
    src = list(attrs["over"]["src"])
    causal = attrs.get("padding") == "causal"
    mode = attrs.get("padding_mode") or "zeros"
    if transposed or (not causal and mode == "zeros"):
        return [Save("in", 0, when=1)]
    if causal:
        dilation = _values(attrs, "dilation", 1, len(src))
        grow = [dilation[0] * (size(kernel[0]) - 1)]
    else:
        grow = [2 * p for p in _values(attrs, "padding", 0, len(src))]
    spatial = _prod(size, src)
    padded = sympy.Mul(*[size(a) + g for a, g in zip(src, grow)])
    saves = [Save("new", numel=numel(x, size) / spatial * padded, when=1)]
    if mode in ("reflect", "replicate"):
        saves.append(Save("in", 0, when=0))
    return saves


def _pool_cost(kind: str):
    """A window's worth of compares/adds per output element; max pooling keeps its input and the
    arg-max indices (one int64 per output element), average pooling its input."""

    def cost(node: Node, ins, size: Size) -> dict[str, Any]:
        n_out = numel(node.type, size)
        window = math.prod(_values(node.attrs, "size", 2, len(node.attrs["over"]["src"])))
        # max keeps its input and the arg-max indices; avg keeps its input (for its shape and padding)
        saves = [Save("in", 0), Save("new", numel=n_out, dtype="int")] if kind == "max" else [Save("in", 0)]
        return {"flops": window * n_out, "bwd": (n_out if kind == "max" else window * n_out,), "saves": saves}

    return cost


def _upsample_cost(node: Node, ins, size: Size) -> dict[str, Any]:
    """Nearest: a copy, no FLOPs forward; the gradient sums each block of scale^n output gradients.
    Linear: each output mixes the 2^n corners of its cell (a multiply and an add each), and the
    gradient scatters back as many. Neither is a matmul, so FlopCounterMode counts none."""
    n = numel(node.type, size)
    if (node.attrs.get("mode") or "nearest") == "nearest":
        return {"flops": 0, "bwd": (n,)}
    corners = 2 ** len(node.attrs["over"]["src"])
    return {"flops": 2 * corners * n, "bwd": (2 * corners * n,)}


# ----------------------------------------------------------------------------- drawing
def _label(attrs) -> str:
    """The drawing's note: each window option away from its default, as a spec writes it."""
    parts = []
    for key in ("groups", "stride", "padding", "dilation", "size", "scale", "padding_mode", "mode", "ceil_mode",
                "align_corners", "output_padding"):
        value = attrs.get(key)
        if value is None or value is False:
            continue
        if isinstance(value, list):
            value = "[" + ", ".join(f"{v:g}" if isinstance(v, (int, float)) else str(v) for v in value) + "]"
        elif value is True:
            value = "true"
        elif isinstance(value, float):
            value = f"{value:g}"
        parts.append(f"{key} = {value}")
    return ", ".join(parts)


# ----------------------------------------------------------------------------- the table
_OVER = Kw(AXES_OR_MAP, required=True)
_WINDOW = {"stride": Kw(NUMBERS), "dilation": Kw(NUMBERS)}
_CONV = {"over": _OVER, "kernel": Kw(AXES, required=True), **_WINDOW, "padding": Kw(NUMBERS, names=("causal",)),
         "padding_mode": Kw(NAME, names=PADDING_MODES), "groups": Kw(AXES)}
_CONV_T = {"over": _OVER, "kernel": Kw(AXES, required=True), **_WINDOW, "padding": Kw(NUMBERS),
           "output_padding": Kw(NUMBERS)}
_POOL = {"over": _OVER, "size": Kw(NUMBERS), "stride": Kw(NUMBERS), "padding": Kw(NUMBERS), "ceil_mode": Kw(FLAG)}
_UPSAMPLE = {"over": _OVER, "scale": Kw(NUMBERS), "mode": Kw(NAME, names=UPSAMPLE_MODES), "align_corners": Kw(FLAG)}

# What the recurrence pass may assume: convolution is bilinear (linear in x for fixed weights, and
# the other way round) and mixes every axis of the state it sees (channels and the window);
# average pooling and nearest upsampling are linear and mix along their `over` axes; max pooling is
# nonlinear and mixes along them.
_BILINEAR_MIXES_ALL = Algebra("product", "all")
_LINEAR_OVER = Algebra("joint", "over")
_MIXES_OVER = Algebra(mixes="over")

OPS: tuple[OpDef, ...] = (
    OpDef("conv", "spatial", _infer_conv(False), _lower_conv(False), (2, 2), _CONV, cost=_conv_cost(False), algebra=_BILINEAR_MIXES_ALL, label=_label,
          window=True,
          example=example_spec("C = 2, D = 3, Y = 6, X = 5, KY = 3, KX = 2, Y2, X2", "x: [C, Y, X]", "[D, Y2, X2]",
                               "param w: [D, C, KY, KX] init normal(0, 1)\n"
                               "  return conv(x, w, over = [Y, X] -> [Y2, X2], kernel = [KY, KX], padding = 1)"),
          doc="conv(x, W, over = [Y, X] -> [Y2, X2], kernel = [KY, KX], stride = 1, padding = 0, dilation = 1, "
              "padding_mode = zeros, groups = [G]): contracts the axes x and W share (group axes are kept), "
              "W's other axes are the output channels; padding = causal pads a 1-D conv on the left"),
    OpDef("conv_transpose", "spatial", _infer_conv(True), _lower_conv(True), (2, 2),
          _CONV_T, cost=_conv_cost(True), algebra=_BILINEAR_MIXES_ALL, label=_label,
          example=example_spec("C = 2, D = 3, Y = 4, X = 3, KY = 3, KX = 2, Y2, X2", "x: [C, Y, X]", "[D, Y2, X2]",
                               "param w: [D, C, KY, KX] init normal(0, 1)\n  return conv_transpose("
                               "x, w, over = [Y, X] -> [Y2, X2], kernel = [KY, KX], stride = 2)"),
          doc="conv_transpose(x, W, over = [Yh, Xh] -> [Y, X], kernel = [KY, KX], stride, padding, "
              "output_padding): out = (n-1)·stride - 2·padding + dilation·(k-1) + output_padding + 1"),
    OpDef("maxpool", "spatial", _infer_pool, _lower_pool("max"), (1, 1), {**_POOL, "dilation": Kw(NUMBERS)}, cost=_pool_cost("max"), algebra=_MIXES_OVER, label=_label,
          example=example_spec("C = 2, Y = 6, X = 4, Y2, X2", "x: [C, Y, X]", "[C, Y2, X2]",
                               "return maxpool(x, over = [Y, X] -> [Y2, X2])"),
          doc="maxpool(x, over = [Y, X] -> [Yh, Xh], size = 2, stride = size, padding = 0, dilation = 1, "
              "ceil_mode = false)"),
    OpDef("avgpool", "spatial", _infer_pool, _lower_pool("avg"), (1, 1), _POOL, cost=_pool_cost("avg"), algebra=_LINEAR_OVER, label=_label,
          example=example_spec("C = 2, Y = 6, X = 4, Y2, X2", "x: [C, Y, X]", "[C, Y2, X2]",
                               "return avgpool(x, over = [Y, X] -> [Y2, X2], size = 3, stride = 1, padding = 1)"),
          doc="avgpool(x, over = [Y, X] -> [Yh, Xh], size = 2, stride = size, padding = 0, ceil_mode = false) "
              "(padding counts as 0)"),
    OpDef("upsample", "spatial", _infer_upsample, _lower_upsample, (1, 1),
          _UPSAMPLE, cost=_upsample_cost, algebra=_LINEAR_OVER, label=_label,
          example=example_spec("C = 2, Y = 3, X = 2, Y2, X2", "x: [C, Y, X]", "[C, Y2, X2]",
                               "return upsample(x, over = [Y, X] -> [Y2, X2])"),
          doc="upsample(x, over = [Yh, Xh] -> [Y, X], scale = 2, mode = nearest, align_corners = false): "
              "nearest repeats each value; linear / bilinear / trilinear interpolate (nn.Upsample)"),
)
