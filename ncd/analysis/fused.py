"""Costs of the node patterns the fusion pass (ncd/passes/fusion.py) plans as one torch call.

The analyzer costs what the compiled module runs: where the fusion plan turns
``x @[D] W + b`` into F.linear or ``softmax(q @[K] k / c) @[T'] v`` into
scaled_dot_product_attention, the absorbed nodes cost nothing and the fused node costs this.
The torch lowering builds its call from the same plan, so the two cannot disagree about what
fused. Rules return the op-table cost format (ncd/ops/costing.py) over ``Fusion.operands``; a
norm + affine's rule is its norm row's ``affine.cost`` (ncd/ops/reduce.py), not written here.
"""
from __future__ import annotations

from typing import Any

import sympy

from ncd.ir import Node, WireType
from ncd.ops import OPS
from ncd.ops.costing import Save, Size, numel
from ncd.passes.fusion import Fusion


def cost(fusion: Fusion, node: Node, ins: list[WireType], size: Size) -> dict[str, Any]:
    """The cost rule of one fused call; ``ins`` are the types of ``fusion.operands``."""
    if fusion.kind == "attention":
        return attention_cost(node, ins, size, fusion.feature or "", fusion.key or "")
    if fusion.kind == "norm_affine":
        affine = OPS[fusion.norm].affine if fusion.norm in OPS else None
        assert affine is not None, "a norm_affine fusion of a norm with no fused affine"
        return affine.cost(ins, size, fusion.over)  # the norm row's fused-call cost (ncd/ops/reduce.py)
    return linear_cost(node, ins, size, fusion.contracted)


def linear_cost(node: Node, ins: list[WireType], size: Size, n_in: int) -> dict[str, Any]:
    """F.linear: one GEMM of [rows, in] by [in, out] (+ the bias, fused in addmm)."""
    x, w = ins[0], ins[1]
    k = sympy.Mul(*[size(a) for a in w.axes[:n_in]])
    out = sympy.Mul(*[size(a) for a in w.axes[n_in:]])
    rows = numel(x, size) / k
    gemm = 2 * rows * k * out
    lead = (("...",) if x.lifted else ()) + tuple(x.axes[:-n_in])
    rule: dict[str, Any] = {
        "matmul": gemm, "matmul_bwd": (gemm, gemm, 0), "bwd": (0, 0, rows * out),
        "saves": [Save("in", 0, when=1, groups=(lead, tuple(x.axes[-n_in:])))],
    }
    if len(ins) > 2:
        rule["flops"] = rows * out
    return rule


def attention_cost(node: Node, ins: list[WireType], size: Size, feat: str, key: str) -> dict[str, Any]:
    """scaled_dot_product_attention (the math path torch's FlopCounterMode counts):
    q·s, k·s, logits q kᵀ, softmax, then softmax·v; autograd keeps q·s, k·s, the softmax and v
    (a copy when v is not laid out [..., heads, T', K])."""
    q, k, v = ins
    heads = tuple(a for a in q.axes if a in k.axes and a != feat)
    query = tuple(a for a in q.axes if a not in k.axes)
    value = tuple(a for a in v.axes if a != key and a not in heads)
    lifted = size("...")
    scores = lifted * sympy.Mul(*[size(a) for a in (*heads, *query, key)])
    logits, mix = 2 * scores * size(feat), 2 * scores * sympy.Mul(*[size(a) for a in value])
    n_q, n_k = numel(q, size), numel(k, size)
    return {
        "matmul": logits + mix, "flops": n_q + n_k + 5 * scores,
        "matmul_bwd": (logits, logits, mix), "bwd": (n_q + 4 * scores, n_k, 0),
        "shared_bwd": [((0, 1), mix)],  # the softmax's gradient, once for q and k
        "layout": ("...", *heads, *query, *value),
        "saves": [Save("new", numel=n_q), Save("new", numel=n_k), Save("new", numel=scores),
                  Save("in", 2, groups=(("...", *heads), (key,), value))],
    }
