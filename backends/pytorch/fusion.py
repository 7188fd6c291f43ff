"""The torch calls of fused patterns: each ``Fusion`` of the fusion pass (ncd/passes/fusion.py)
becomes one expression (F.linear, F.scaled_dot_product_attention, F.layer_norm / F.rms_norm).

The pass decides what fuses; this module only spells the call, from the plan's data.
"""
from __future__ import annotations

from collections.abc import Callable

from ncd.ops import OPS
from ncd.ops.base import DIV, Expr, call, lit
from ncd.passes.fusion import Fusion


def build(fusion: Fusion, ref: Callable[[str], Expr], number: Callable[[str], object]) -> Expr:
    """The fused call: ``ref`` reads a node's value, ``number`` a number node's value."""
    ops = [ref(i) for i in fusion.operands]
    if fusion.kind in ("linear", "linear_bias"):
        bias = ops[2] if fusion.kind == "linear_bias" else lit(None)
        return call("rt.linear", ops[0], ops[1], bias, lit(fusion.contracted))
    if fusion.kind == "norm_affine":
        affine = OPS[fusion.norm or ""].affine
        assert affine is not None, "a norm_affine fusion of a norm with no fused affine"
        args = [ops[0], call("rt.trailing_shape", ops[1], lit(len(fusion.over))), ops[1]]
        if affine.bias:
            args.append(ops[2] if len(ops) > 2 else lit(None))
        return call(affine.fn, *args, eps=lit(fusion.eps))
    scale: Expr = lit(1.0)
    if fusion.scale is not None:
        by, number_id = fusion.scale
        value = float(number(number_id))
        scale = lit(1.0 / value if by == DIV else value)
    perms = [lit(tuple(p)) for p in fusion.perms]
    return call("rt.attention", *ops, *perms, scale)
