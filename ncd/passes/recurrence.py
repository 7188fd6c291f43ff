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
    kernel: dict[str, str] | None = None  # gla/delta: step node ids of q, k, v, g|gate|beta (see match_*)
    state_free: list[str] = []  # step node ids that do not depend on the state


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
                outer = bool(set(a.axes) - set(b.axes)) and bool(set(b.axes) - set(a.axes))  # k ⊗ v (per head)
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
    kernel = None
    if structure in ("gla", "delta") and len(region.results) == n_carry + 1:
        matcher = match_gla if structure == "gla" else match_delta
        kernel = matcher(analysis, region.args[0], region.results[0], region.results[1])
    backend, why = choose_backend(structure, linear, requested, kernel is not None)
    state_free = [n.id for n in walk(region.nodes) if analysis.value(n.id).degree == 0]
    return ScanPlan(**common, structure=structure, block_size=block_size, backend=backend,
                    reason=f"{reason}; {why}", kernel=kernel, state_free=state_free)


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


def choose_backend(structure: Structure, linear: bool, requested: str | None,
                   kernel_matched: bool = False) -> tuple[str, str]:
    if requested not in (None, "auto"):
        return requested, f"backend {requested} requested"
    if linear:
        if structure == "diagonal":
            return "scan", "runs as a parallel diagonal scan (Triton on CUDA, a log-depth PyTorch scan on a CPU)"
        if structure == "gla":
            if kernel_matched:
                return "gla", ("runs as the chunked gated-linear-attention kernel (Triton on CUDA, its chunked "
                               "PyTorch twin on a CPU)")
            return "scan", ("runs as a parallel diagonal scan over the state's axes (the GLA kernel takes a "
                            "[K, V] state updated as S = α·S + k·v and read out by q @ S; lift head axes "
                            "over the scan instead of carrying them)")
        if structure == "time_invariant":
            return "fft", "runs as a causal convolution with kernel Aⁱ computed by FFT"
        if structure == "delta":
            if kernel_matched:
                return "delta", "runs as the chunked delta-rule kernel (Triton on CUDA, its chunked PyTorch twin on a CPU)"
            return "sequential", ("runs as the sequential loop (the delta kernel takes a [K, V] state updated as "
                                  "S − β·k·(k @ S) + β·k·v and read out by q @ S; lift head axes over the scan "
                                  "instead of carrying them)")
        return "sequential", "no parallel lowering for this affine class yet"
    if structure in ("diagonal", "block"):
        return "newton", "solved in parallel over time by Newton's method (ParaRNN)"
    return "sequential", "a dense nonlinear step stays a sequential loop (Newton would need the full Jacobian)"


# ----------------------------------------------------------------------------- kernel matching
def _operands(a: StepAnalysis, node_id: str, op: str) -> list[str]:
    """The leaves of a tree of ``op`` nodes (mul trees: the factors of a product)."""
    node = a.nodes.get(node_id)
    if node is None or node.op != op:
        return [node_id]
    return [leaf for i in node.inputs for leaf in _operands(a, i, op)]


def _same(a: StepAnalysis, x: str, y: str) -> bool:
    """Structural equality: two `k[t]` written twice are two nodes computing one value."""
    if x == y:
        return True
    nx_, ny = a.nodes.get(x), a.nodes.get(y)
    if nx_ is None or ny is None or nx_.op != ny.op or nx_.attrs != ny.attrs or len(nx_.inputs) != len(ny.inputs):
        return False
    if nx_.op == "region_arg":
        return False
    return all(_same(a, i, j) for i, j in zip(nx_.inputs, ny.inputs))  # leaves: same op and attrs


def _free(a: StepAnalysis, node_id: str, axes: tuple[str, ...]) -> bool:
    node = a.nodes.get(node_id)
    return node is not None and a.value(node_id).degree == 0 and tuple(node.types[0].axes) == axes


def _readout(a: StepAnalysis, emit: str, new_state: str, key: str) -> str | None:
    """The q of an emitted q @[K] S_new."""
    node = a.nodes.get(emit)
    if node is None or node.op != "contract" or list(node.attrs.get("axes") or []) != [key]:
        return None
    for q, s in (node.inputs, node.inputs[::-1]):
        if s == new_state and _free(a, q, (key,)):
            return q
    return None


def _kv_update(a: StepAnalysis, state: str, result: str) -> tuple[str, str, Node] | None:
    """(K, V, the sum node) when the state is [K, V] and its new value is a sum of two terms:
    the shape both kernels take."""
    axes = a.nodes[state].types[0].axes
    node = a.nodes.get(result)
    if len(axes) != 2 or node is None or node.op != "add":
        return None
    return axes[0], axes[1], node


def match_gla(a: StepAnalysis, state: str, result: str, emit: str) -> dict[str, str] | None:
    """S = gate * S + k * v with the gate along K; emit q @[K] S. Returns node ids or None.

    Only a [K, V] state maps onto the kernel's layout; a state with head axes is recognised
    as GLA by the classifier but runs as a diagonal scan (lift the head axes instead)."""
    found = _kv_update(a, state, result)
    if found is None:
        return None
    key, value, node = found
    for decay, write in (node.inputs, node.inputs[::-1]):
        factors = _operands(a, decay, "mul")
        if len(factors) != 2 or state not in factors:
            continue
        gate = factors[1 - factors.index(state)]
        if not (_free(a, gate, (key,)) or _free(a, gate, ())):
            continue
        kv = _operands(a, write, "mul")
        ks = [f for f in kv if _free(a, f, (key,))]
        vs = [f for f in kv if _free(a, f, (value,))]
        if len(kv) != 2 or len(ks) != 1 or len(vs) != 1:
            continue
        q = _readout(a, emit, result, key)
        if q is None:
            return None
        gate_node = a.nodes[gate]
        log_gate = gate_node.inputs[0] if gate_node.op == "exp" else None
        out = {"q": q, "k": ks[0], "v": vs[0]}
        out.update({"g": log_gate} if log_gate else {"gate": gate})
        return out
    return None


def match_delta(a: StepAnalysis, state: str, result: str, emit: str) -> dict[str, str] | None:
    """S = S − β·k·(k @[K] S) + β·k·v; emit q @[K] S. Returns node ids or None (as match_gla,
    a [K, V] state only)."""
    found = _kv_update(a, state, result)
    if found is None:
        return None
    key, value, node = found
    for erase, write in (node.inputs, node.inputs[::-1]):
        sub = a.nodes.get(erase)
        if sub is None or sub.op != "sub" or sub.inputs[0] != state:
            continue
        erase_factors = _operands(a, sub.inputs[1], "mul")
        write_factors = _operands(a, write, "mul")
        probes = [f for f in erase_factors if a.nodes[f].op == "contract"]
        if len(erase_factors) != 3 or len(write_factors) != 3 or len(probes) != 1:
            continue
        probe = a.nodes[probes[0]]
        if list(probe.attrs.get("axes") or []) != [key] or state not in probe.inputs:
            continue
        k_read = probe.inputs[1 - probe.inputs.index(state)]
        betas = [f for f in write_factors if _free(a, f, ())]
        ks = [f for f in write_factors if _free(a, f, (key,))]
        vs = [f for f in write_factors if _free(a, f, (value,))]
        rest = [f for f in erase_factors if f != probes[0]]
        if len(betas) != 1 or len(ks) != 1 or len(vs) != 1 or not _free(a, k_read, (key,)):
            continue
        same_beta = any(_same(a, f, betas[0]) for f in rest)
        same_k = any(_same(a, f, ks[0]) for f in rest) and _same(a, k_read, ks[0])
        q = _readout(a, emit, result, key)
        if same_beta and same_k and q is not None:
            return {"q": q, "k": ks[0], "v": vs[0], "beta": betas[0]}
    return None


def plan_scans(spec: SpecIR, backend: str = "auto") -> list[ScanPlan]:
    """Every scan of every block, classified; ``backend`` is the caller's override."""
    plans = []
    for block in spec.blocks.values():
        for node in walk(block.nodes):
            if node.op == "scan":
                requested = node.attrs.get("backend") if backend == "auto" else backend
                plans.append(classify(block, node, requested))
    return plans
