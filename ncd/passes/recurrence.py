"""Classify every scan by how its new state depends on the carried state, and pick a backend.

The analysis is an abstract interpretation of the step's dataflow graph. Each value gets:

- ``degree``: its polynomial degree in the carried state (0 = state-free, 1 = affine,
  ``NONLINEAR`` otherwise — any nonlinear function of a state-dependent value);
- ``mixes``: the state axes along which state-dependent values were combined (a contraction or
  reduction over an axis of a state-dependent value). No mixing means the step acts on each
  state element on its own: a diagonal Jacobian;
- ``carries``: which carries it depends on (two carries with the same axes that feed each other
  elementwise give k×k blocks per unit, ParaLSTM's [c, h]);
- ``varies``: whether it depends on the step (x[t], the loop index) — a linear step whose
  coefficients do not vary is time-invariant and becomes a convolution.

Only the paths into the carry results decide the class; the emitted read-out may mix freely.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel

from ncd.ir import BlockIR, Loc, Node, SpecIR, walk

NONLINEAR = 99
LINEAR_FNS = {"add", "sub", "neg", "rename", "annotate", "reshape", "tuple_get", "tap", "broadcast"}
SMOOTH_REDUCTIONS = {"sum", "mean", "cumsum"}

Structure = Literal["diagonal", "block", "dense", "gla", "delta", "time_invariant", "affine"]
NEWTON_BACKENDS = ("newton",)
LINEAR_BACKENDS = ("scan", "gla", "delta", "fft")
ALL_BACKENDS = ("auto", "sequential", *NEWTON_BACKENDS, *LINEAR_BACKENDS)


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


class ScanPlan(BaseModel):
    """What the pass decided for one scan; `ncd compile --explain` prints it."""

    block: str
    node: str
    loc: Loc | None
    axis: str
    carries: list[str]
    linear: bool
    structure: Structure
    block_size: int | None = None
    backend: str
    reason: str
    requested: str | None = None


def base(axis: str) -> str:
    return axis.rstrip("'")


@dataclass
class StepAnalysis:
    nodes: dict[str, Node]
    carry_args: list[str]
    index_arg: str
    values: dict[str, Value] = field(default_factory=dict)

    def value(self, node_id: str) -> Value:
        return self.values.get(node_id, Value())

    def run(self, region_nodes: list[Node]) -> None:
        for node in region_nodes:
            self.values[node.id] = self.transfer(node)

    def transfer(self, node: Node) -> Value:
        ins = [self.value(i) for i in node.inputs]
        axes = tuple(node.types[0].axes) if node.types else ()
        op = node.op
        if op == "region_arg" and node.id in self.carry_args:
            return Value(degree=1, carries=frozenset({self.carry_args.index(node.id)}), axes=axes)
        if op == "loop_index":
            return Value(varies=True)
        if not ins:
            return Value(axes=axes)
        degree = max(v.degree for v in ins)
        mixes = frozenset().union(*(v.mixes for v in ins))
        carries = frozenset().union(*(v.carries for v in ins))
        varies = any(v.varies for v in ins)
        state_in = [v for v in ins if v.degree > 0]
        coeff_axes = frozenset().union(*(v.coeff_axes for v in state_in)) if state_in else frozenset()
        coeff_varies = any(v.coeff_varies for v in state_in)
        outer_bias = any(v.outer_bias for v in ins)
        if op == "select":
            return Value(degree, mixes, carries, varies or len(node.inputs) > 1, axes, coeff_axes,
                         coeff_varies, outer_bias)
        if op in LINEAR_FNS:
            return Value(degree, mixes, carries, varies, axes, coeff_axes, coeff_varies, outer_bias)
        if op == "mul":
            a, b = ins
            degree = a.degree + b.degree
            if a.degree == 0 and b.degree == 0:
                outer = len(a.axes) >= 1 and len(b.axes) >= 1 and not set(a.axes) & set(b.axes)
                return Value(0, mixes, carries, varies, axes, outer_bias=outer)
            factor = a if a.degree == 0 else b
            state = b if a.degree == 0 else a
            return Value(min(degree, NONLINEAR), mixes, carries, varies, axes,
                         state.coeff_axes | frozenset(factor.axes), state.coeff_varies or factor.varies)
        if op == "div":
            a, b = ins
            if b.degree > 0:
                return Value(NONLINEAR, mixes, carries, varies, axes)
            return Value(a.degree, mixes, carries, varies, axes, a.coeff_axes | frozenset(b.axes),
                         a.coeff_varies or b.varies)
        if op == "contract":
            a, b = ins
            named = frozenset(base(x) for x in node.attrs.get("axes") or [])
            new_mix = named if (a.degree > 0 or b.degree > 0) else frozenset()
            factor = a if a.degree == 0 else b
            return Value(min(a.degree + b.degree, NONLINEAR), mixes | new_mix, carries, varies, axes,
                         coeff_axes | frozenset(factor.axes), coeff_varies or factor.varies)
        if op in SMOOTH_REDUCTIONS:
            over = node.attrs.get("over")
            over = over if isinstance(over, list) else [over]
            new_mix = frozenset(base(x) for x in over) if degree > 0 else frozenset()
            return Value(degree, mixes | new_mix, carries, varies, axes, coeff_axes, coeff_varies)
        if op in ("concat", "split"):
            over = node.attrs.get("over", {})
            new_mix = frozenset(base(x) for x in over.get("src", []) + over.get("dst", [])) if degree else frozenset()
            return Value(degree, mixes | new_mix, carries, varies, axes, coeff_axes, coeff_varies)
        if op == "call":
            # A sub-block's insides are not analysed here: assume it mixes everything it sees.
            if degree == 0:
                return Value(0, mixes, carries, varies, axes)
            every = frozenset(base(x) for v in state_in for x in v.axes)
            return Value(NONLINEAR, mixes | every, carries, varies, axes)
        # Every other op (tanh, softmax, norms, where, max, comparisons, ...): nonlinear in the
        # state; ops that act along an axis of a state-dependent value also mix along it.
        over = node.attrs.get("over")
        if degree > 0 and over is not None:
            over = over if isinstance(over, list) else [over]
            mixes = mixes | frozenset(base(x) for x in over if isinstance(x, str))
        return Value(NONLINEAR if degree > 0 else 0, mixes, carries, varies, axes)


def classify(block: BlockIR, node: Node, requested: str | None) -> ScanPlan:
    region = node.regions[0]
    n_carry = len(node.attrs["carries"])
    analysis = StepAnalysis({n.id: n for n in walk(region.nodes)}, region.args[:n_carry], region.args[n_carry])
    analysis.run(list(walk(region.nodes)))
    results = [analysis.value(r) for r in region.results[:n_carry]]
    carry_axes = [analysis.nodes[a].type.axes for a in region.args[:n_carry]]
    state_axes = {base(a) for axes in carry_axes for a in axes}
    mixes = frozenset().union(*(r.mixes for r in results)) & state_axes
    linear = all(r.degree <= 1 for r in results)
    cross = any(len(r.carries - {i}) > 0 for i, r in enumerate(results))
    same_axes = len({tuple(sorted(a)) for a in carry_axes}) == 1
    common = dict(block=block.key, node=node.id, loc=node.loc, axis=node.attrs["axis"],
                  carries=list(node.attrs["carries"]), linear=linear, requested=requested)

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
    backend, why = choose_backend(structure, linear, requested)
    return ScanPlan(**common, structure=structure, block_size=block_size, backend=backend,
                    reason=f"{reason}; {why}")


def _linear_structure(results, carry_axes, mixes, cross, region, analysis, node) -> tuple[Structure, str]:
    varies = any(r.coeff_varies for r in results)
    if not varies and mixes:
        return "time_invariant", "affine in the state with coefficients that do not change over the steps"
    if len(results) == 1 and len(carry_axes[0]) == 2:
        r = results[0]
        if not mixes and r.outer_bias and len(r.coeff_axes & set(carry_axes[0])) <= 1:
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


def choose_backend(structure: Structure, linear: bool, requested: str | None) -> tuple[str, str]:
    if requested not in (None, "auto"):
        return requested, f"backend {requested} requested"
    if linear:
        if structure == "diagonal":
            return "scan", "runs as a parallel diagonal scan"
        if structure == "gla":
            return "scan", ("runs as a parallel diagonal scan over both state axes (the chunked GLA kernel "
                            "is not wired to specs yet)")
        if structure == "time_invariant":
            return "fft", "runs as a causal convolution with kernel Aⁱ computed by FFT"
        if structure == "delta":
            return "sequential", "runs as the sequential loop (the chunked delta-rule kernel is not wired to specs yet)"
        return "sequential", "no parallel lowering for this affine class yet"
    if structure in ("diagonal", "block"):
        return "newton", "solved in parallel over time by Newton's method (ParaRNN)"
    return "sequential", "a dense nonlinear step stays a sequential loop (Newton would need the full Jacobian)"


def plan_scans(spec: SpecIR, backend: str = "auto") -> list[ScanPlan]:
    """Every scan of every block, classified; ``backend`` is the caller's override."""
    plans = []
    for block in spec.blocks.values():
        for node in walk(block.nodes):
            if node.op == "scan":
                requested = node.attrs.get("backend") if backend == "auto" else backend
                plans.append(classify(block, node, requested))
    return plans
