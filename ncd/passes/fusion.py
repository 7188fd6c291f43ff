"""The fusion pass: which node patterns run as one fused torch call, as data — one table.

Each fusion kind is one entry of ``FUSIONS`` (a ``FusionRule``): its matcher, which looks at a
node and its single-use producers (structure only: ops, axes, use counts) and, when it matches,
records a ``Fusion`` (the node whose value the fused call makes, the producers it absorbs, the
operands it reads and what the call needs besides: contracted axes, permutations, the norm's
eps); its cost rule, which the analyzer reads (ncd/analysis/op_costs.py); and its lowering, the
call the torch backend builds from the record (backends/pytorch/program.py). Adding a fusion is
one entry here; nothing else looks at the rules. Semantics do not change, which the oracle tests
(against torch.nn, in float64) check.

- ``attention``: ``softmax(q @[K] k · c, over = T') @[T'] v`` becomes
  F.scaled_dot_product_attention (one fused kernel forward and backward).
- ``norm_affine``: ``layernorm(x, over = A) * γ + β`` becomes one F.layer_norm with its affine
  (``rmsnorm(x) * γ`` one F.rms_norm), fused forward and backward; the call and its cost are the
  norm row's ``affine`` (ncd/ops/reduce.py).
- ``linear_bias`` / ``linear``: ``x @[in...] W (+ b)`` with W a parameter laid out [in..., out...]
  becomes one F.linear (the bias fused in the GEMM) instead of an einsum and an add.

The table's order is the matchers' priority: a node takes the first kind that matches it.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

import sympy
from pydantic import BaseModel, Field, field_validator

from ncd.ir import NUMBER_NODE, WEIGHT_SOURCES, BlockIR, Node, SpecIR, WireType, walk
from ncd.ops import OPS, arith
from ncd.ops.base import ADD, CONTRACT, DIV, MUL, Affine, BinOp, Expr, call, lit
from ncd.ops.costing import Save, Size, numel


class Fusion(BaseModel):
    """One fused call: it computes ``node`` from ``operands``; the ``absorbed`` nodes are not run."""

    kind: str  # a key of FUSIONS
    node: str
    absorbed: list[str]
    operands: list[str]  # linear [x, W] (+ b), attention [q, k, v], norm_affine [x, γ] (+ β)
    contracted: int = 0  # linear: how many trailing axes of x (leading of W) the GEMM contracts
    perms: list[list[int]] = []  # attention: q, k, v to [heads, T|T', K|V], then out to the node's order
    scale: tuple[Literal["*", "/"], str] | None = None  # attention: logits · or / a number node
    feature: str | None = None  # attention: the axis q and k are contracted over
    key: str | None = None  # attention: the axis softmax normalises over (T')
    norm: str | None = None  # norm_affine: the norm's op (its row's ``affine`` names the fused call)
    norm_node: str | None = None
    over: list[str] = []  # norm_affine: the normalised (trailing) axes
    eps: float | None = None

    @field_validator("kind")
    @classmethod
    def _known(cls, kind: str) -> str:
        if kind not in FUSIONS:
            raise ValueError(f"unknown fusion kind {kind!r}; the kinds are {', '.join(FUSIONS)}")
        return kind

    @property
    def rule(self) -> "FusionRule":
        return FUSIONS[self.kind]


Cost = dict[str, Any]  # the op-table cost format (ncd/ops/costing.py)
Ref = Callable[[str], Expr]  # a node id → the lowering's expression for its value
Number = Callable[[str], object]  # a number node's id → its value


@dataclass(frozen=True)
class FusionRule:
    """One fusion kind. ``match(rules, node)``: the Fusion made at ``node``, or None;
    ``cost(fusion, node, ins, size)``: the fused call's cost over the types of ``fusion.operands``;
    ``lower(fusion, operands, number)``: the torch call, from the operands' expressions."""

    kind: str
    match: Callable[["Rules", Node], Fusion | None]
    cost: Callable[[Fusion, Node, list[WireType], Size], Cost]
    lower: Callable[[Fusion, list[Expr], Number], Expr]


class FusionPlan(BaseModel):
    """Every block's fusions: block key → fused node id → its Fusion."""

    blocks: dict[str, dict[str, Fusion]] = Field(default_factory=dict)

    def of_block(self, key: str) -> dict[str, Fusion]:
        return self.blocks.get(key, {})


def in_scope(fusions: dict[str, Fusion], scope: list[Node]) -> tuple[dict[str, Fusion], set[str]]:
    """The fusions made at nodes of one scope (a body or a loop's region), and the ids they absorb."""
    mine = {n.id: fusions[n.id] for n in scope if n.id in fusions}
    return mine, {i for f in mine.values() for i in f.absorbed}


def cost(fusion: Fusion, node: Node, ins: list[WireType], size: Size) -> Cost:
    """The analyzer's cost of one fused call; ``ins`` are the types of ``fusion.operands``."""
    return fusion.rule.cost(fusion, node, ins, size)


def lower(fusion: Fusion, ref: Ref, number: Number) -> Expr:
    """The torch lowering's call for one fusion: ``ref`` reads a node's value, ``number`` a number
    node's value."""
    return fusion.rule.lower(fusion, [ref(i) for i in fusion.operands], number)


def plan_fusions(spec: SpecIR) -> FusionPlan:
    return FusionPlan(blocks={key: plan_block(block) for key, block in spec.blocks.items()})


def plan_block(block: BlockIR) -> dict[str, Fusion]:
    """The fusions of a block's body and of every region in it, each scope planned on its own."""
    rules = Rules({n.id: n for n in walk(block.nodes)}, use_counts(block.nodes, block.results))
    out: dict[str, Fusion] = {}
    for scope in _scopes(block.nodes):
        out.update(rules.plan(scope))
    return out


def _scopes(nodes: list[Node]) -> Iterator[list[Node]]:
    yield nodes
    for node in nodes:
        for region in node.regions:
            yield from _scopes(region.nodes)


def use_counts(nodes: list[Node], results: list[str]) -> Counter:
    counts: Counter = Counter(results)

    def visit(scope: list[Node]) -> None:
        for node in scope:
            counts.update(node.inputs)
            for region in node.regions:
                visit(region.nodes)
                counts.update(region.results)

    visit(nodes)
    return counts


class Rules:
    """What the matchers read of one block: its nodes by id and how often each value is used."""

    def __init__(self, nodes: dict[str, Node], uses: Counter) -> None:
        self.nodes = nodes
        self.uses = uses

    def single(self, node_id: str, of: str) -> Node | None:
        """The node ``node_id`` when it is used once and its row's arithmetic is ``of``."""
        node = self.nodes.get(node_id)
        if node is None or arith(node.op) != of or self.uses[node_id] != 1:
            return None
        return node

    def type(self, node_id: str) -> WireType:
        return self.nodes[node_id].types[0]

    def is_weight(self, node_id: str) -> bool:
        node = self.nodes.get(node_id)
        return node is not None and node.op in WEIGHT_SOURCES

    def plan(self, scope: list[Node]) -> dict[str, Fusion]:
        fusions: dict[str, Fusion] = {}
        absorbed: set[str] = set()
        for node in reversed(scope):  # consumers first, so the widest pattern claims its producers
            if node.id in absorbed:
                continue
            for rule in FUSIONS.values():
                fusion = rule.match(self, node)
                if fusion is not None and not (set(fusion.absorbed) & absorbed):
                    fusions[node.id] = fusion
                    absorbed |= set(fusion.absorbed)
                    break
        return fusions


# ---------------------------------------------------------------------- attention → SDPA
def match_attention(rules: Rules, node: Node) -> Fusion | None:
    if arith(node.op) != CONTRACT or len(node.attrs.get("axes") or ()) != 1:
        return None
    a_id, v_id = node.inputs
    (key_axis,) = node.attrs["axes"]
    soft = rules.nodes.get(a_id)
    if (soft is None or rules.uses[a_id] != 1 or not _attention_weights(soft)
            or soft.attrs.get("over") != key_axis):
        return None
    scores_id, scale, absorbed = soft.inputs[0], None, [a_id]
    scaled = rules.nodes.get(scores_id)
    by = arith(scaled.op) if scaled is not None else None
    if (by == DIV or by == MUL) and rules.uses[scores_id] == 1:
        left, right = scaled.inputs
        if rules.nodes[right].op == NUMBER_NODE:
            scores_id, scale = left, (by, right)
            absorbed.append(scaled.id)
    qk = rules.single(scores_id, CONTRACT)
    if qk is None or len(qk.attrs.get("axes") or ()) != 1:
        return None
    absorbed.append(qk.id)
    q_id, k_id = qk.inputs
    (feat,) = qk.attrs["axes"]
    q_t, k_t, v_t = rules.type(q_id), rules.type(k_id), rules.type(v_id)
    heads = [a for a in q_t.axes if a in k_t.axes and a != feat]
    query = [a for a in q_t.axes if a not in k_t.axes]
    keys = [a for a in k_t.axes if a not in q_t.axes]
    values = [a for a in v_t.axes if a != key_axis and a not in heads]
    if (len(query) != 1 or keys != [key_axis] or len(values) != 1 or set(heads) - set(v_t.axes)
            or key_axis not in v_t.axes or not (q_t.lifted and k_t.lifted and v_t.lifted)):
        return None
    out_axes = node.types[0].axes
    sdpa_out = (*heads, query[0], values[0])
    if sorted(out_axes) != sorted(sdpa_out):
        return None

    def perm(axes: tuple[str, ...], target: tuple[str, ...]) -> list[int]:
        return [axes.index(a) for a in target]

    perms = [perm(q_t.axes, (*heads, query[0], feat)), perm(k_t.axes, (*heads, key_axis, feat)),
             perm(v_t.axes, (*heads, key_axis, values[0])), perm(sdpa_out, out_axes)]
    return Fusion(kind="attention", node=node.id, absorbed=absorbed, operands=[q_id, k_id, v_id], perms=perms,
                  scale=scale, feature=feat, key=key_axis)


def attention_cost(fusion: Fusion, node: Node, ins: list[WireType], size: Size) -> Cost:
    """scaled_dot_product_attention (the math path torch's FlopCounterMode counts):
    q·s, k·s, logits q kᵀ, softmax, then softmax·v; autograd keeps q·s, k·s, the softmax and v
    (a copy when v is not laid out [..., heads, T', K])."""
    feat, key = fusion.feature or "", fusion.key or ""
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


def lower_attention(fusion: Fusion, ops: list[Expr], number: Number) -> Expr:
    scale: Expr = lit(1.0)
    if fusion.scale is not None:
        by, number_id = fusion.scale
        value = number(number_id)
        if isinstance(value, (int, float)):
            scale = lit(1.0 / float(value) if by == DIV else float(value))
        else:  # a number in free sizes (D^-0.5 with D free): the lowering reads it off the inputs
            scale = BinOp("/", lit(1.0), value) if by == DIV else value
    return call("rt.attention", *ops, *[lit(tuple(p)) for p in fusion.perms], scale)


def _attention_weights(node: Node) -> bool:
    row = OPS.get(node.op)
    return row is not None and row.attention_weights


# ---------------------------------------------------------------------- norm * γ (+ β) → the norm's fused call
def match_norm_affine(rules: Rules, node: Node) -> Fusion | None:
    """layernorm(x, over = A) * γ + β → F.layer_norm(x, |A|, γ, β); rmsnorm(x) * γ → F.rms_norm
    (the norm's row's ``affine``: the call, and whether it takes β)."""
    if arith(node.op) not in (ADD, MUL):
        return None
    bias_id = None
    scaled_id = node.id
    absorbed: list[str] = []
    if arith(node.op) == ADD:
        for s_id, b_id in (node.inputs, node.inputs[::-1]):
            if rules.single(s_id, MUL) is not None and rules.is_weight(b_id):
                scaled_id, bias_id = s_id, b_id
                absorbed.append(s_id)
                break
        else:
            return None
    scaled = rules.nodes[scaled_id]
    for n_id, w_id in (scaled.inputs, scaled.inputs[::-1]):
        norm = rules.nodes.get(n_id)
        affine = _affine(norm)
        if norm is None or affine is None or rules.uses[n_id] != 1:
            continue
        if bias_id is not None and not affine.bias:
            continue
        over = tuple(norm.attrs["over"])
        x_id = norm.inputs[0]
        x_axes = rules.type(x_id).axes
        trailing = x_axes[-len(over):] == over
        weights = [w_id] + ([bias_id] if bias_id else [])
        if not trailing or not all(rules.is_weight(a) and rules.type(a).axes == over for a in weights):
            continue
        if node.types[0].axes != x_axes:
            continue
        eps = float(norm.attrs.get("eps", affine.eps))
        return Fusion(kind="norm_affine", node=node.id, absorbed=absorbed + [n_id], operands=[x_id, *weights],
                      norm=norm.op, norm_node=n_id, over=list(over), eps=eps)
    return None


def norm_affine_cost(fusion: Fusion, node: Node, ins: list[WireType], size: Size) -> Cost:
    """The norm row's fused-call cost (``Affine.cost``, ncd/ops/reduce.py)."""
    return _norm_row(fusion).cost(ins, size, fusion.over)


def lower_norm_affine(fusion: Fusion, ops: list[Expr], number: Number) -> Expr:
    affine = _norm_row(fusion)
    args = [ops[0], call("rt.trailing_shape", ops[1], lit(len(fusion.over))), ops[1]]
    if affine.bias:
        args.append(ops[2] if len(ops) > 2 else lit(None))
    return call(affine.fn, *args, eps=lit(fusion.eps))


def _affine(node: Node | None) -> Affine | None:
    row = OPS.get(node.op) if node is not None else None
    return row.affine if row is not None else None


def _norm_row(fusion: Fusion) -> Affine:
    affine = OPS[fusion.norm].affine if fusion.norm in OPS else None
    assert affine is not None, "a norm_affine fusion of a norm with no fused affine"
    return affine


# ---------------------------------------------------------------------- x @[in...] W (+ b) → F.linear
def linear_operands(rules: Rules, node: Node) -> tuple[str, str, int] | None:
    """(x, W, number of contracted axes) when ``node`` is x @[in...] W with W a read of a
    parameter stored [in..., out...] and x's contracted axes trailing, in W's order."""
    if arith(node.op) != CONTRACT:
        return None
    x_id, w_id = node.inputs
    w_node = rules.nodes.get(w_id)
    if w_node is None or not rules.is_weight(w_id):
        return None
    x_t, w_t = rules.type(x_id), w_node.types[0]
    named = tuple(node.attrs.get("axes") or ())
    n = len(named)
    if n == 0 or w_t.lifted or x_t.axes[-n:] != named or w_t.axes[:n] != named:
        return None
    if set(x_t.axes[:-n]) & set(w_t.axes[n:]):  # a shared kept axis: not a plain GEMM
        return None
    return x_id, w_id, n


def match_linear(rules: Rules, node: Node) -> Fusion | None:
    operands = linear_operands(rules, node)
    if operands is None:
        return None
    x_id, w_id, n = operands
    return Fusion(kind="linear", node=node.id, absorbed=[], operands=[x_id, w_id], contracted=n)


def match_linear_bias(rules: Rules, node: Node) -> Fusion | None:
    if arith(node.op) != ADD:
        return None
    for c_id, b_id in (node.inputs, node.inputs[::-1]):
        contract = rules.single(c_id, CONTRACT)
        if contract is None or not rules.is_weight(b_id):
            continue
        operands = linear_operands(rules, contract)
        if operands is None:
            continue
        x_id, w_id, n = operands
        if rules.type(b_id).axes != rules.type(w_id).axes[n:] or node.types[0].axes != contract.types[0].axes:
            continue
        return Fusion(kind="linear_bias", node=node.id, absorbed=[c_id], operands=[x_id, w_id, b_id],
                      contracted=n)
    return None


def linear_cost(fusion: Fusion, node: Node, ins: list[WireType], size: Size) -> Cost:
    """F.linear: one GEMM of [rows, in] by [in, out] (+ the bias, fused in addmm)."""
    n_in = fusion.contracted
    x, w = ins[0], ins[1]
    k = sympy.Mul(*[size(a) for a in w.axes[:n_in]])
    out = sympy.Mul(*[size(a) for a in w.axes[n_in:]])
    rows = numel(x, size) / k
    gemm = 2 * rows * k * out
    lead = (("...",) if x.lifted else ()) + tuple(x.axes[:-n_in])
    rule: Cost = {
        "matmul": gemm, "matmul_bwd": (gemm, gemm, 0), "bwd": (0, 0, rows * out),
        "saves": [Save("in", 0, when=1, groups=(lead, tuple(x.axes[-n_in:])))],
    }
    if len(ins) > 2:
        rule["flops"] = rows * out
    return rule


def lower_linear(fusion: Fusion, ops: list[Expr], number: Number) -> Expr:
    bias = ops[2] if len(ops) > 2 else lit(None)
    return call("rt.linear", ops[0], ops[1], bias, lit(fusion.contracted))


# ---------------------------------------------------------------------- the table
FUSIONS: dict[str, FusionRule] = {rule.kind: rule for rule in (
    FusionRule("attention", match_attention, attention_cost, lower_attention),
    FusionRule("norm_affine", match_norm_affine, norm_affine_cost, lower_norm_affine),
    FusionRule("linear_bias", match_linear_bias, linear_cost, lower_linear),
    FusionRule("linear", match_linear, linear_cost, lower_linear),
)}
