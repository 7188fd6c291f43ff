"""The fusion pass: which node patterns run as one fused torch call, as data.

Each rule looks at a node and its single-use producers (structure only: ops, axes, use counts)
and, when it matches, records a ``Fusion``: the node whose value the fused call makes, the
producers it absorbs, the operands it reads and what the call needs besides (contracted axes,
permutations, the norm's eps). The torch lowering builds its statement from that record
(backends/pytorch/fusion.py) and the analyzer costs it (ncd/analysis/fused.py); neither looks
at the rules. Semantics do not change, which the oracle tests (against torch.nn, in float64)
check.

- ``linear``: ``x @[in...] W`` with W a parameter laid out [in..., out...] becomes one F.linear
  (``linear_bias``: ``+ b`` too, one GEMM with the bias fused) instead of an einsum and an add.
- ``attention``: ``softmax(q @[K] k · c, over = T') @[T'] v`` becomes
  F.scaled_dot_product_attention (one fused kernel forward and backward).
- ``norm_affine``: ``layernorm(x, over = A) * γ + β`` becomes one F.layer_norm with its affine
  (``rmsnorm(x) * γ`` one F.rms_norm), fused forward and backward.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Literal

from pydantic import BaseModel, Field

from ncd.ir import NUMBER_NODE, WEIGHT_SOURCES, BlockIR, Node, SpecIR, WireType, walk
from ncd.ops import OPS, arith
from ncd.ops.base import ADD, CONTRACT, DIV, MUL, Affine

Kind = Literal["attention", "norm_affine", "linear_bias", "linear"]


class Fusion(BaseModel):
    """One fused call: it computes ``node`` from ``operands``; the ``absorbed`` nodes are not run."""

    kind: Kind
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


class FusionPlan(BaseModel):
    """Every block's fusions: block key → fused node id → its Fusion."""

    blocks: dict[str, dict[str, Fusion]] = Field(default_factory=dict)

    def of_block(self, key: str) -> dict[str, Fusion]:
        return self.blocks.get(key, {})


def in_scope(fusions: dict[str, Fusion], scope: list[Node]) -> tuple[dict[str, Fusion], set[str]]:
    """The fusions made at nodes of one scope (a body or a loop's region), and the ids they absorb."""
    mine = {n.id: fusions[n.id] for n in scope if n.id in fusions}
    return mine, {i for f in mine.values() for i in f.absorbed}


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
    """The fusion rules over one block's nodes."""

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

    def plan(self, scope: list[Node]) -> dict[str, Fusion]:
        fusions: dict[str, Fusion] = {}
        absorbed: set[str] = set()
        for node in reversed(scope):  # consumers first, so the widest pattern claims its producers
            if node.id in absorbed:
                continue
            for rule in (self.attention, self.norm_affine, self.linear_bias, self.linear):
                fusion = rule(node)
                if fusion is not None and not (set(fusion.absorbed) & absorbed):
                    fusions[node.id] = fusion
                    absorbed |= set(fusion.absorbed)
                    break
        return fusions

    def _is_weight(self, node_id: str) -> bool:
        node = self.nodes.get(node_id)
        return node is not None and node.op in WEIGHT_SOURCES

    # ------------------------------------------------------------------ linear
    def linear_operands(self, node: Node) -> tuple[str, str, int] | None:
        """(x, W, number of contracted axes) when ``node`` is x @[in...] W with W a read of a
        parameter stored [in..., out...] and x's contracted axes trailing, in W's order."""
        if arith(node.op) != CONTRACT:
            return None
        x_id, w_id = node.inputs
        w_node = self.nodes.get(w_id)
        if w_node is None or not self._is_weight(w_id):
            return None
        x_t, w_t = self.type(x_id), w_node.types[0]
        named = tuple(node.attrs.get("axes") or ())
        n = len(named)
        if n == 0 or w_t.lifted or x_t.axes[-n:] != named or w_t.axes[:n] != named:
            return None
        if set(x_t.axes[:-n]) & set(w_t.axes[n:]):  # a shared kept axis: not a plain GEMM
            return None
        return x_id, w_id, n

    def linear(self, node: Node) -> Fusion | None:
        operands = self.linear_operands(node)
        if operands is None:
            return None
        x_id, w_id, n = operands
        return Fusion(kind="linear", node=node.id, absorbed=[], operands=[x_id, w_id], contracted=n)

    def linear_bias(self, node: Node) -> Fusion | None:
        if arith(node.op) != ADD:
            return None
        for c_id, b_id in (node.inputs, node.inputs[::-1]):
            contract = self.single(c_id, CONTRACT)
            if contract is None or not self._is_weight(b_id):
                continue
            operands = self.linear_operands(contract)
            if operands is None:
                continue
            x_id, w_id, n = operands
            if self.type(b_id).axes != self.type(w_id).axes[n:] or node.types[0].axes != contract.types[0].axes:
                continue
            return Fusion(kind="linear_bias", node=node.id, absorbed=[c_id], operands=[x_id, w_id, b_id],
                          contracted=n)
        return None

    # ------------------------------------------------------------------ norms with affine
    def norm_affine(self, node: Node) -> Fusion | None:
        """layernorm(x, over = A) * γ + β → F.layer_norm(x, |A|, γ, β); rmsnorm(x) * γ → F.rms_norm
        (the norm's row's ``affine``: the call, and whether it takes β)."""
        if arith(node.op) not in (ADD, MUL):
            return None
        bias_id = None
        scaled_id = node.id
        absorbed: list[str] = []
        if arith(node.op) == ADD:
            for s_id, b_id in (node.inputs, node.inputs[::-1]):
                if self.single(s_id, MUL) is not None and self._is_weight(b_id):
                    scaled_id, bias_id = s_id, b_id
                    absorbed.append(s_id)
                    break
            else:
                return None
        scaled = self.nodes[scaled_id]
        for n_id, w_id in (scaled.inputs, scaled.inputs[::-1]):
            norm = self.nodes.get(n_id)
            affine = _affine(norm)
            if norm is None or affine is None or self.uses[n_id] != 1:
                continue
            if bias_id is not None and not affine.bias:
                continue
            over = tuple(norm.attrs["over"])
            x_id = norm.inputs[0]
            x_axes = self.type(x_id).axes
            trailing = x_axes[-len(over):] == over
            weights = [w_id] + ([bias_id] if bias_id else [])
            if not trailing or not all(self._is_weight(a) and self.type(a).axes == over for a in weights):
                continue
            if node.types[0].axes != x_axes:
                continue
            eps = float(norm.attrs.get("eps", affine.eps))
            return Fusion(kind="norm_affine", node=node.id, absorbed=absorbed + [n_id], operands=[x_id, *weights],
                          norm=norm.op, norm_node=n_id, over=list(over), eps=eps)
        return None

    # ------------------------------------------------------------------ attention
    def attention(self, node: Node) -> Fusion | None:
        if arith(node.op) != CONTRACT or len(node.attrs.get("axes") or ()) != 1:
            return None
        a_id, v_id = node.inputs
        (key_axis,) = node.attrs["axes"]
        soft = self.nodes.get(a_id)
        if (soft is None or self.uses[a_id] != 1 or not _attention_weights(soft)
                or soft.attrs.get("over") != key_axis):
            return None
        scores_id, scale, absorbed = soft.inputs[0], None, [a_id]
        scaled = self.nodes.get(scores_id)
        by = arith(scaled.op) if scaled is not None else None
        if (by == DIV or by == MUL) and self.uses[scores_id] == 1:
            left, right = scaled.inputs
            if self.nodes[right].op == NUMBER_NODE:
                scores_id, scale = left, (by, right)
                absorbed.append(scaled.id)
        qk = self.single(scores_id, CONTRACT)
        if qk is None or len(qk.attrs.get("axes") or ()) != 1:
            return None
        absorbed.append(qk.id)
        q_id, k_id = qk.inputs
        (feat,) = qk.attrs["axes"]
        q_t, k_t, v_t = self.type(q_id), self.type(k_id), self.type(v_id)
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


def _affine(node: Node | None) -> Affine | None:
    row = OPS.get(node.op) if node is not None else None
    return row.affine if row is not None else None


def _attention_weights(node: Node) -> bool:
    row = OPS.get(node.op)
    return row is not None and row.attention_weights
