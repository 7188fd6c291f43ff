"""Classify a scan's step by how its new state depends on the carried state.

The analysis is an abstract interpretation of the step's dataflow graph. Each value gets:

- ``degree``: its polynomial degree in the carried state (0 = state-free, 1 = affine,
  ``NONLINEAR`` otherwise — any nonlinear function of a state-dependent value);
- ``mixes``: the state axes along which state-dependent values were combined (a contraction or
  reduction over an axis of a state-dependent value). No mixing means the step acts on each
  state element on its own: a diagonal Jacobian. A view that hides a state axis (renamed to
  another axis, reshaped, or sliced ``h[G = 0]``) counts as mixing along it;
- ``carries``: which carries it depends on (two carries with the same axes that feed each other
  elementwise give k×k blocks per unit, ParaLSTM's [c, h]);
- ``varies``: whether it depends on the step (x[t], the loop index) — a linear step whose
  coefficients do not vary is time-invariant and becomes a convolution.

Only the paths into the carry results decide the class; the emitted read-out may mix freely.

A call of a sub-block is analysed through the callee's body: the Values of the call's inputs
become those of the callee's input ports, and the Values of its results those of the call's.
Axis names need no translation (a specialised block's body already uses the caller's names, and
a port's axes are the wire's by name); the lifted axes are vmapped over, so the callee never
mixes along them. A callee with nested regions (scan, repeat, halting), a chained instance with
several inputs or results, or anything else not certain falls back to the conservative rule:
the call mixes every axis of the state it sees and is nonlinear.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

from ncd.ir import CALL, INPUT, LOOP_INDEX, REGION_ARG, TUPLE_GET, BlockIR, Node, SpecIR, walk
from ncd.ops import algebra, role
from ncd.ops.base import PICK
from ncd.passes.recurrence.plan import Structure
from ncd.sizes import base_axis

NONLINEAR = 99


@dataclass(frozen=True)
class Value:
    degree: int = 0
    mixes: frozenset[str] = frozenset()
    carries: frozenset[int] = frozenset()
    varies: bool = False
    axes: tuple[str, ...] = ()
    coeff_axes: frozenset[str] = frozenset()  # axes of state-free factors multiplied onto the state
    coeff_varies: bool = False
    outer_bias: bool = False  # a state-free additive term that is a product of two vectors



base = base_axis  # a primed axis is a second wire of its base axis


@dataclass
class StepAnalysis:
    nodes: dict[str, Node]
    carry_args: list[str]
    index_arg: str
    values: dict[str, Value] = field(default_factory=dict)
    spec: SpecIR | None = None  # where calls find their callee; None: calls stay conservative
    depth: int = 0  # call nesting, bounded
    parts: dict[str, list[Value]] = field(default_factory=dict)  # a call with several results: each one's

    MAX_DEPTH = 16

    def draws(self, node: Node) -> bool:
        """A draw, or a running statistic, differs at every step: what depends on it varies (and is
        never hoisted out of the loop), even where it reads no step value."""
        from ncd.ops import OPS
        from ncd.ops.random import in_order

        row = OPS.get(node.op)
        if row is not None:
            return row.random or row.stateful
        return node.op == CALL and in_order([node], self.spec) is not None

    def value(self, node_id: str) -> Value:
        return self.values.get(node_id, Value())

    def run(self, region_nodes: list[Node]) -> None:
        for node in region_nodes:
            self.values[node.id] = self.transfer(node)

    def transfer(self, node: Node) -> Value:
        ins = [self.value(i) for i in node.inputs]
        if node.regions:  # a nested loop's body reads the step's wires (the carries too) as closures
            inner = {n.id for r in node.regions for n in walk(r.nodes)}
            ins += [self.values[i] for r in node.regions for n in walk(r.nodes) for i in n.inputs
                    if i not in inner and i in self.values]
        axes = tuple(node.types[0].axes) if node.types else ()
        op = node.op
        if op == REGION_ARG and node.id in self.carry_args:
            return Value(degree=1, carries=frozenset({self.carry_args.index(node.id)}), axes=axes)
        if op == LOOP_INDEX:
            return Value(varies=True)
        if not ins:
            return Value(axes=axes)
        degree = max(v.degree for v in ins)
        mixes = frozenset().union(*(v.mixes for v in ins))
        carries = frozenset().union(*(v.carries for v in ins))
        varies = any(v.varies for v in ins) or self.draws(node)
        state_in = [v for v in ins if v.degree > 0]
        coeff_axes = frozenset().union(*(v.coeff_axes for v in state_in)) if state_in else frozenset()
        coeff_varies = any(v.coeff_varies for v in state_in)
        outer_bias = any(v.outer_bias for v in ins)
        if op == TUPLE_GET and node.inputs[0] in self.parts:
            return replace(self.parts[node.inputs[0]][node.attrs["index"]], axes=axes)
        rule = algebra(op)  # the op table's row says how the op combines its inputs
        if degree > 0 and rule.mixes == "view":
            mixes = mixes | _view_mixes(node)
        if role(op) == PICK:
            return Value(degree, mixes, carries, varies or len(node.inputs) > 1, axes, coeff_axes,
                         coeff_varies, outer_bias)
        if rule.linear == "joint" and rule.mixes in (None, "view"):
            return Value(degree, mixes, carries, varies, axes, coeff_axes, coeff_varies, outer_bias)
        if rule.linear == "product" and rule.mixes is None:  # mul
            a, b = ins
            degree = a.degree + b.degree
            if a.degree == 0 and b.degree == 0:
                outer = bool(set(a.axes) - set(b.axes)) and bool(set(b.axes) - set(a.axes))  # k ⊗ v (per head)
                return Value(0, mixes, carries, varies, axes, outer_bias=outer)
            factor = a if a.degree == 0 else b
            state = b if a.degree == 0 else a
            return Value(min(degree, NONLINEAR), mixes, carries, varies, axes,
                         state.coeff_axes | frozenset(factor.axes), state.coeff_varies or factor.varies)
        if rule.linear == "numerator":  # div
            a, b = ins
            if b.degree > 0:
                return Value(NONLINEAR, mixes, carries, varies, axes)
            return Value(a.degree, mixes, carries, varies, axes, a.coeff_axes | frozenset(b.axes),
                         a.coeff_varies or b.varies)
        if rule.linear == "product" and rule.mixes in ("axes", "all"):  # contract; conv mixes all it sees
            a, b = ins
            if rule.mixes == "axes":
                named = frozenset(base(x) for x in node.attrs.get("axes") or [])
            else:
                named = frozenset(base(x) for v in state_in for x in v.axes)
            new_mix = named if (a.degree > 0 or b.degree > 0) else frozenset()
            factor = a if a.degree == 0 else b
            return Value(min(a.degree + b.degree, NONLINEAR), mixes | new_mix, carries, varies, axes,
                         coeff_axes | frozenset(factor.axes), coeff_varies or factor.varies)
        if rule.linear == "joint" and rule.mixes == "over":  # sum, mean, cumsum, concat, split
            new_mix = _over_axes(node) if degree > 0 else frozenset()
            return Value(degree, mixes | new_mix, carries, varies, axes, coeff_axes, coeff_varies)
        if op == CALL:
            if degree == 0:
                return Value(0, mixes, carries, varies, axes)
            outs = self.call_values(node, ins)
            if outs is not None:
                if len(outs) == 1:
                    return outs[0]
                self.parts[node.id] = outs
                return _join(outs, axes)
            # The callee could not be analysed: assume it mixes everything it sees, nonlinearly.
            every = frozenset(base(x) for v in state_in for x in v.axes)
            return Value(NONLINEAR, mixes | every, carries, varies, axes)
        if node.regions and degree > 0:  # a loop inside the step (scan, repeat, halting), as a callee with one
            every = frozenset(base(x) for v in state_in for x in v.axes)
            return Value(NONLINEAR, mixes | every, carries, varies, axes)
        # Every other op (tanh, softmax, norms, where, max, comparisons, ...): nonlinear in the
        # state; ops that act along an axis of a state-dependent value also mix along it.
        if degree > 0 and rule.mixes == "over":
            mixes = mixes | _over_axes(node)
        elif degree > 0 and rule.mixes == "all":
            mixes = mixes | frozenset(base(x) for v in state_in for x in v.axes)
        return Value(NONLINEAR if degree > 0 else 0, mixes, carries, varies, axes)


    def call_values(self, node: Node, ins: list[Value]) -> list[Value] | None:
        """The Values of a call's results, from the callee's body; None where that is not certain."""
        callee = self.spec.blocks.get(node.attrs.get("block", "")) if self.spec is not None else None
        if callee is None or self.depth >= self.MAX_DEPTH or len(callee.inputs) != len(ins):
            return None
        if len(node.types) != len(callee.results) or any(n.regions for n in walk(callee.nodes)):
            return None
        repeat = node.attrs.get("repeat") or 1
        if repeat > 1 and (len(ins) != 1 or len(callee.results) != 1):
            return None  # a chain feeds one result into one input
        values: list[Value] | None = list(ins)
        for _ in range(repeat):  # Layer × N: the same body N times (the weights differ, not the Values)
            before = values
            values = self.callee_values(callee, values)
            if values is None or values == before:
                break
        if values is None:
            return None
        return [replace(v, axes=tuple(t.axes)) for v, t in zip(values, node.types)]

    def callee_values(self, callee: BlockIR, ins: list[Value]) -> list[Value] | None:
        sub = StepAnalysis({n.id: n for n in callee.nodes}, [], "", spec=self.spec, depth=self.depth + 1)
        for n in callee.nodes:
            if n.op == INPUT:
                index = n.attrs.get("index")
                if not isinstance(index, int) or not 0 <= index < len(ins):
                    return None
                sub.values[n.id] = replace(ins[index], axes=tuple(n.types[0].axes) if n.types else ())
            else:
                sub.values[n.id] = sub.transfer(n)
        if any(r in sub.parts or r not in sub.values for r in callee.results):
            return None
        return [sub.values[r] for r in callee.results]


def _over_axes(node: Node) -> frozenset[str]:
    """The axes an op's ``over`` names: an axis, a list of axes, or both sides of an axis map."""
    over = node.attrs.get("over")
    if isinstance(over, dict):
        over = list(over.get("src", [])) + list(over.get("dst", []))
    over = over if isinstance(over, list) else [over]
    return frozenset(base(x) for x in over if isinstance(x, str))


def _view_mixes(node: Node) -> frozenset[str]:
    """The axes a view of a state-dependent value counts as mixed along (conservatively): an axis
    renamed or reshaped into others (a later mix along the new names would not be seen as one
    along the state's axis) and an axis a slice `h[G = 0]` is taken along (every element of the
    result, broadcast back, reads that one slice)."""
    attrs = node.attrs
    if role(node.op) == PICK:
        return frozenset({base(attrs["axis"])}) if isinstance(attrs.get("axis"), str) else frozenset()
    src, dst = attrs.get("src"), attrs.get("dst")
    src = [src] if isinstance(src, str) else list(src or [])
    dst = [dst] if isinstance(dst, str) else list(dst or [])
    if {base(a) for a in src} == {base(a) for a in dst}:
        return frozenset()
    return frozenset(base(a) for a in src)


def _join(values: list[Value], axes: tuple[str, ...]) -> Value:
    """One Value standing for all of a call's results (what a reader of the tuple sees)."""
    return Value(max(v.degree for v in values), frozenset().union(*(v.mixes for v in values)),
                 frozenset().union(*(v.carries for v in values)), any(v.varies for v in values), axes,
                 frozenset().union(*(v.coeff_axes for v in values)), any(v.coeff_varies for v in values),
                 any(v.outer_bias for v in values))


@dataclass(frozen=True)
class StepClass:
    """What classification found: the analysis (the kernel matchers read it), the class and why."""

    analysis: StepAnalysis
    linear: bool
    structure: Structure
    reason: str
    block_size: int | None


def classify_step(node: Node, spec: SpecIR | None = None) -> StepClass:
    """The class of a scan node's step: linear or not, and its structure (diagonal, block, ...)."""
    region = node.regions[0]
    n_carry = len(node.attrs["carries"])
    analysis = StepAnalysis({n.id: n for n in walk(region.nodes)}, region.args[:n_carry], region.args[n_carry],
                            spec=spec)
    analysis.run(list(walk(region.nodes)))
    results = [analysis.value(r) for r in region.results[:n_carry]]
    carry_axes = [analysis.nodes[a].type.axes for a in region.args[:n_carry]]
    state_axes = {base(a) for axes in carry_axes for a in axes}
    mixes = frozenset().union(*(r.mixes for r in results)) & state_axes
    linear = all(r.degree <= 1 for r in results)
    cross = any(len(r.carries - {i}) > 0 for i, r in enumerate(results))
    same_axes = len({tuple(sorted(a)) for a in carry_axes}) == 1
    if linear:
        structure, reason = _linear_structure(results, carry_axes, mixes, cross, region, analysis, node)
    elif not mixes and not cross:
        structure, reason = "diagonal", "nonlinear, but each state element depends only on itself (elementwise step)"
    elif not mixes and cross and same_axes:
        structure = "block"
        reason = (f"nonlinear; the {n_carry} carries ({', '.join(node.attrs['carries'])}) feed each other only "
                  f"elementwise, so the Jacobian is {n_carry}×{n_carry} blocks per unit")
    else:
        mixed = ", ".join(sorted(mixes)) or "the carries"
        structure, reason = "dense", f"nonlinear and the step mixes the state across {mixed} (a dense Jacobian)"
    block_size = n_carry if structure == "block" else None
    return StepClass(analysis, linear, structure, reason, block_size)


def _linear_structure(results, carry_axes, mixes, cross, region, analysis, node) -> tuple[Structure, str]:
    varies = any(r.coeff_varies for r in results)
    if not varies and mixes:
        return "time_invariant", "affine in the state with coefficients that do not change over the steps"
    if len(results) == 1 and len(carry_axes[0]) >= 2:  # further state axes (heads) must not mix
        r = results[0]
        if not mixes and r.outer_bias and not set(carry_axes[0]) <= r.coeff_axes:  # the gate spares V
            return "gla", ("affine: a gate along one state axis times the state plus an outer product "
                           "(gated linear attention)")
        if len(mixes) == 1 and r.outer_bias:
            return "delta", ("affine: the state is updated along one axis by a rank-one correction "
                             "(delta rule)")
    if not mixes and not cross:
        return "diagonal", "affine and elementwise in the state (a diagonal linear recurrence)"
    if not varies:
        return "time_invariant", "affine in the state with coefficients that do not change over the steps"
    return "affine", "affine in the state with a dense transition"

