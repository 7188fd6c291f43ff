"""Costs of the node patterns the PyTorch backend fuses into one torch call (backends/pytorch/fusion.py).

The analyzer costs what the compiled module runs: where the backend's fuser turns
``x @[D] W + b`` into F.linear or ``softmax(q @[K] k / c) @[T'] v`` into
scaled_dot_product_attention, the absorbed nodes cost nothing and the fused node costs this.
Rules return the op-table cost format (ncd/ops/costing.py) over the operands listed by
``operands``.
"""
from __future__ import annotations

from typing import Any

import sympy

from ncd.ir import Node, WireType
from ncd.ops.costing import Save, Size, numel

KINDS = ("attention", "norm_affine", "linear_bias", "linear")  # the rules costed here


def fuser_for(block):
    """The backend's fuser for one block, or None where the backend has none."""
    try:
        from ncd.backends.pytorch.fusion import Fuser, use_counts
    except ImportError:
        return None
    from ncd.ir import walk

    return Fuser({n.id: n for n in walk(block.nodes)}, use_counts(block.nodes, block.results))


def plan(fuser, nodes: list[Node]) -> tuple[dict[str, tuple[str, Any]], set[str]]:
    """The backend's own fusion plan for a scope, each fusion named by the rule that made it:
    ({node id: (kind, fusion)}, absorbed ids). A fusion of a kind not costed here is left out,
    so its nodes are costed one by one (right FLOPs, saved tensors approximate)."""
    kinds: dict[str, tuple[str, Any]] = {}
    absorbed: set[str] = set()
    if fuser is None:
        return kinds, absorbed
    for node_id, fusion in fuser.plan(nodes).items():
        node = fuser.nodes[node_id]
        for kind in KINDS:
            rule = getattr(fuser, kind, None)
            mine = rule(node) if rule is not None else None
            if mine is not None and list(mine.absorbed) == list(fusion.absorbed):
                kinds[node_id] = (kind, fusion)
                absorbed |= set(fusion.absorbed)
                break
    return kinds, absorbed


def operands(fuser, node: Node, kind: str) -> list[str]:
    """The node ids the fused call reads, in the order the rules below index them."""
    if kind == "attention":
        return [*_qk(fuser, node).inputs, node.inputs[1]]
    if kind == "norm_affine":
        return norm_operands(fuser, node)
    if kind == "linear_bias":
        for c_id, b_id in (node.inputs, node.inputs[::-1]):
            contract = fuser.nodes.get(c_id)
            if contract is not None and contract.op == "contract" and fuser.linear_operands(contract):
                x_id, w_id, _ = fuser.linear_operands(contract)
                return [x_id, w_id, b_id]
    x_id, w_id, _ = fuser.linear_operands(node)
    return [x_id, w_id]


def norm_operands(fuser, node: Node) -> list[str]:
    """[x, γ] or [x, γ, β] of ``norm(x) * γ (+ β)``."""
    bias = []
    scaled = node
    if node.op == "add":
        for s_id, b_id in (node.inputs, node.inputs[::-1]):
            s = fuser.nodes.get(s_id)
            if s is not None and s.op == "mul" and fuser._is_weight(b_id):
                scaled, bias = s, [b_id]
                break
    for n_id, w_id in (scaled.inputs, scaled.inputs[::-1]):
        norm = fuser.nodes.get(n_id)
        if norm is not None and norm.op in ("layernorm", "rmsnorm"):
            return [norm.inputs[0], w_id, *bias]
    raise ValueError(f"no norm under fused node {node.id}")


def norm_kind(fuser, node: Node) -> Node:
    x_id = norm_operands(fuser, node)[0]
    return next(n for n in fuser.nodes.values() if n.op in ("layernorm", "rmsnorm") and n.inputs[:1] == [x_id]
                and n.id in _absorbed_ids(fuser, node))


def _absorbed_ids(fuser, node: Node) -> set[str]:
    fusion = fuser.norm_affine(node)
    return set(fusion.absorbed) if fusion is not None else set()


def norm_affine_cost(node: Node, ins: list[WireType], size: Size, norm: Node) -> dict[str, Any]:
    """F.layer_norm(x, γ, β): saves x, the mean and 1/σ; F.rms_norm(x, γ) (composite on the CPU):
    x, 1/rms per row and the normalised x (for γ's gradient)."""
    x = ins[0]
    n = numel(x, size)
    over = norm.attrs["over"]
    over = over if isinstance(over, (list, tuple)) else [over]
    rows = n / sympy.Mul(*[size(a) for a in over])
    if norm.op == "rmsnorm":
        saves = [Save("in", 0), Save("new", numel=rows), Save("new", numel=n)]
        return {"flops": 5 * n, "bwd": (8 * n, n, 0), "saves": saves}
    saves = [Save("in", 0), Save("new", numel=rows), Save("new", numel=rows)]
    return {"flops": 9 * n, "bwd": (10 * n, 2 * n, n), "saves": saves}


def _qk(fuser, node: Node) -> Node:
    soft = fuser.nodes[node.inputs[0]]
    scores = fuser.nodes[soft.inputs[0]]
    return scores if scores.op == "contract" else fuser.nodes[scores.inputs[0]]


def logits_axis(fuser, node: Node) -> str:
    """The feature axis q and k are contracted over."""
    return _qk(fuser, node).attrs["axes"][0]


def n_in(fuser, node: Node) -> int:
    """How many axes a fused linear contracts."""
    contract = node if node.op == "contract" else next(
        fuser.nodes[i] for i in node.inputs if fuser.nodes[i].op == "contract" and fuser.linear_operands(fuser.nodes[i]))
    return fuser.linear_operands(contract)[2]


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
