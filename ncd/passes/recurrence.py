"""Classify every scan by how its new state depends on the carried state, and pick a backend.

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

from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from fractions import Fraction
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


class KernelLayout(BaseModel):
    """How a gla/delta step's axes map onto the kernels' [B, T, H, K] / [B, H, K, V] layouts."""

    key: str  # K: the read-out's contraction axis
    value: str  # V: the one state axis that only v carries (not q, k, the gate or β)
    heads: list[str]  # the state's other axes, in its declared order; flattened into the kernel's H
    state: list[str]  # the state's axes as declared (the layout of the initial state)
    out: list[str]  # the emitted read-out's axes
    operands: dict[str, list[str]]  # q, k, v, g|gate|beta: each one's axes in the IR


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
    kernel_layout: KernelLayout | None = None  # gla/delta: their axes against the kernel's
    state_free: list[str] = []  # step node ids that do not depend on the state


def base(axis: str) -> str:
    return axis.rstrip("'")


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
        if op == "tuple_get" and node.inputs[0] in self.parts:
            return replace(self.parts[node.inputs[0]][node.attrs["index"]], axes=axes)
        if degree > 0 and op in ("rename", "reshape", "select"):
            mixes = mixes | _view_mixes(node)
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
        # Every other op (tanh, softmax, norms, where, max, comparisons, ...): nonlinear in the
        # state; ops that act along an axis of a state-dependent value also mix along it.
        over = node.attrs.get("over")
        if degree > 0 and over is not None:
            over = over if isinstance(over, list) else [over]
            mixes = mixes | frozenset(base(x) for x in over if isinstance(x, str))
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
            if n.op == "input":
                index = n.attrs.get("index")
                if not isinstance(index, int) or not 0 <= index < len(ins):
                    return None
                sub.values[n.id] = replace(ins[index], axes=tuple(n.types[0].axes) if n.types else ())
            else:
                sub.values[n.id] = sub.transfer(n)
        if any(r in sub.parts or r not in sub.values for r in callee.results):
            return None
        return [sub.values[r] for r in callee.results]


def _view_mixes(node: Node) -> frozenset[str]:
    """The axes a view of a state-dependent value counts as mixed along (conservatively): an axis
    renamed or reshaped into others (a later mix along the new names would not be seen as one
    along the state's axis) and an axis a slice `h[G = 0]` is taken along (every element of the
    result, broadcast back, reads that one slice)."""
    attrs = node.attrs
    if node.op == "select":
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


def classify(block: BlockIR, node: Node, requested: str | None, spec: SpecIR | None = None) -> ScanPlan:
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
    kernel, layout, unmatched = None, None, None
    if structure in ("gla", "delta"):
        if len(region.results) != n_carry + 1:
            unmatched = f"the step emits {len(region.results) - n_carry} values; the kernels give one read-out"
        else:
            matcher = match_gla if structure == "gla" else match_delta
            found = matcher(analysis, region.args[0], region.results[0], region.results[1])
            if isinstance(found, str):
                unmatched = found
            else:
                kernel, layout = found
    backend, why = choose_backend(structure, linear, requested, kernel is not None, unmatched)
    state_free = [n.id for n in walk(region.nodes) if analysis.value(n.id).degree == 0]
    return ScanPlan(**common, structure=structure, block_size=block_size, backend=backend,
                    reason=f"{reason}; {why}", kernel=kernel, kernel_layout=layout, state_free=state_free)


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
                   kernel_matched: bool = False, unmatched: str | None = None) -> tuple[str, str]:
    """``unmatched``: for a gla/delta step the kernel did not take, what did not fit."""
    if requested not in (None, "auto"):
        return requested, f"backend {requested} requested"
    if linear:
        if structure == "diagonal":
            return "scan", "runs as a parallel diagonal scan (Triton on CUDA, a log-depth PyTorch scan on a CPU)"
        if structure == "gla":
            if kernel_matched:
                return "gla", ("runs as the chunked gated-linear-attention kernel (Triton on CUDA, its chunked "
                               "PyTorch twin on a CPU)")
            return "scan", ("runs as a parallel diagonal scan over the state's axes, not the GLA kernel, which "
                            "takes S = α·S + k·v read out by q @[K] S with head axes elementwise: "
                            f"{unmatched or 'the step is not in that form'}")
        if structure == "time_invariant":
            return "fft", "runs as a causal convolution with kernel Aⁱ computed by FFT"
        if structure == "delta":
            if kernel_matched:
                return "delta", "runs as the chunked delta-rule kernel (Triton on CUDA, its chunked PyTorch twin on a CPU)"
            return "sequential", ("runs as the sequential loop, not the delta kernel, which takes "
                                  "S − β·k·(k @[K] S) + β·k·v read out by q @[K] S with head axes elementwise: "
                                  f"{unmatched or 'the step is not in that form'}")
        return "sequential", "no parallel lowering for this affine class yet"
    if structure in ("diagonal", "block"):
        return "newton", "solved in parallel over time by Newton's method (ParaRNN)"
    return "sequential", "a dense nonlinear step stays a sequential loop (Newton would need the full Jacobian)"


# ----------------------------------------------------------------------------- kernel matching
# Both kernels take q, k [B, T, H, K], v [B, T, H, V], a log gate [B, T, H, K] or β [B, T, H]
# and a state [B, H, K, V]. A step matches when its state has the key axis K (the read-out's
# contraction axis), one value axis V and any number of head axes in any order, and every factor
# carries the heads elementwise: q, k over heads + K, v over heads + V, the gate over heads + K or
# heads only (a scalar per head), β over heads; any of them may leave out heads (broadcast).
Match = tuple[dict[str, str], KernelLayout]


def _operands(a: StepAnalysis, node_id: str, op: str) -> list[str]:
    """The leaves of a tree of ``op`` nodes (mul trees: the factors of a product)."""
    node = a.nodes.get(node_id)
    if node is None or node.op != op:
        return [node_id]
    return [leaf for i in node.inputs for leaf in _operands(a, i, op)]


def _unwrap(a: StepAnalysis, node_id: str) -> str:
    """Looks through axis reorders (``x : [..]``), which change the layout but not the value."""
    node = a.nodes.get(node_id)
    while node is not None and node.op == "annotate" and len(node.inputs) == 1:
        node_id = node.inputs[0]
        node = a.nodes.get(node_id)
    return node_id


POSITIVE_OPS = ("exp", "sigmoid")


def _positive(a: StepAnalysis, node_id: str) -> bool:
    """Provably > 0 wherever it is evaluated: exp(·), sigmoid(·), a positive number, or a
    product of those. The GLA kernel takes the gate's logarithm, so nothing else may pass."""
    node = a.nodes.get(_unwrap(a, node_id))
    if node is None:
        return False
    if node.op in POSITIVE_OPS:
        return True
    if node.op == "number":
        try:
            return Fraction(str(node.attrs.get("value"))) > 0
        except (ValueError, ZeroDivisionError):
            return False
    if node.op == "mul":
        return all(_positive(a, i) for i in node.inputs)
    return False


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


def _axes(a: StepAnalysis, node_id: str) -> tuple[str, ...]:
    node = a.nodes.get(node_id)
    return tuple(node.types[0].axes) if node is not None and node.types else ()


def _free(a: StepAnalysis, node_id: str) -> bool:
    return node_id in a.nodes and a.value(node_id).degree == 0


def _fmt(axes) -> str:
    return f"[{', '.join(axes)}]"


def _readout(a: StepAnalysis, emit: str, new_state: str) -> tuple[str, str] | str:
    """(K, q) of an emitted q @[K] S_new, or why the emit is not that."""
    node = a.nodes.get(_unwrap(a, emit))
    if node is None or node.op != "contract":
        return "the emitted value is not a read-out q @[K] S of the new state"
    axes = list(node.attrs.get("axes") or [])
    if len(axes) != 1:
        return f"the read-out contracts {_fmt(axes)}, but the kernels contract the state along one key axis"
    for q, s in (node.inputs, node.inputs[::-1]):
        if _unwrap(a, s) == new_state and _free(a, q):
            return axes[0], q
    return "the emitted value does not contract the new state with a state-free query"


def _layout(a: StepAnalysis, state: str, emit: str, key: str, operands: dict[str, str]) -> KernelLayout | str:
    """Checks the axes of every kernel operand against the state's: K (the read-out's axis), V
    (the one state axis that only v carries) and the heads (the rest). Returns the layout the
    runner permutes by, or what did not fit."""
    state_axes = list(_axes(a, state))
    if key not in state_axes:
        return f"the read-out contracts {key}, which is not an axis of the state {_fmt(state_axes)}"
    seen = {x for name, i in operands.items() if name != "v" for x in _axes(a, i)}
    rest = [x for x in state_axes if x != key and x not in seen]
    if len(rest) != 1:  # the gate or β carries V: say so below, when q and k alone leave one axis
        seen = set(_axes(a, operands["q"])) | set(_axes(a, operands["k"]))
        rest = rest if len(rest) > 1 else [x for x in state_axes if x != key and x not in seen]
    if len(rest) != 1:
        return (f"the state {_fmt(state_axes)} needs exactly one value axis V that only v carries (found "
                f"{_fmt(rest)}); its other axes besides {key} are heads, carried by q, k or the gate")
    value = rest[0]
    heads = [x for x in state_axes if x not in (key, value)]
    widths = {"q": (key, True), "k": (key, True), "v": (value, True), "g": (key, False), "gate": (key, False),
              "beta": (None, False)}  # each operand's width axis besides the heads, and whether it needs it
    for name, node_id in operands.items():
        axes = _axes(a, node_id)
        width, required = widths[name]
        allowed = [*heads, width] if width else heads
        if len(set(axes)) != len(axes) or not set(axes) <= set(allowed) or (required and width not in axes):
            what = {"g": "the log gate", "gate": "the gate", "beta": "β"}.get(name, name)
            alone = " or the heads alone" if width and not required else ""
            return (f"{what} has axes {_fmt(axes)}, but the kernel takes it along {_fmt(allowed)}{alone} "
                    f"(any head may be left out)")
    out = _axes(a, emit)
    if sorted(out) != sorted([*heads, value]):
        return f"the read-out has axes {_fmt(out)}, not the heads and the value axis {_fmt([*heads, value])}"
    return KernelLayout(key=key, value=value, heads=heads, state=state_axes, out=list(out),
                        operands={name: list(_axes(a, i)) for name, i in operands.items()})


def _sum_read_out(a: StepAnalysis, result: str, emit: str, form: str) -> tuple[Node, str, str] | str:
    """What both kernels need first: the new state is a sum of two terms and the emitted value
    contracts it with a state-free q. Returns (the sum node, K, q) or why not."""
    node = a.nodes.get(_unwrap(a, result))
    if node is None or node.op != "add":
        return f"the new state is not a sum {form}"
    readout = _readout(a, emit, _unwrap(a, result))
    if isinstance(readout, str):
        return readout
    return node, *readout


def _first_fitting(a: StepAnalysis, state: str, emit: str, key: str,
                   candidates: Iterator[dict[str, str] | str], why: str) -> Match | str:
    """The first candidate operand assignment whose axes fit the kernels' layout, or the last
    reason a candidate (a string) or its layout was turned down."""
    for found in candidates:
        if isinstance(found, str):
            why = found
            continue
        layout = _layout(a, state, emit, key, found)
        if not isinstance(layout, str):
            return found, layout
        why = layout
    return why


def match_gla(a: StepAnalysis, state: str, result: str, emit: str) -> Match | str:
    """S = gate * S + k * v with the gate along K (or a scalar per head); emit q @[K] S.
    Returns (node ids of q, k, v, g|gate; their layout) or why the step is not in that form."""
    found = _sum_read_out(a, result, emit, "gate·S + k·v")
    if isinstance(found, str):
        return found
    node, key, q = found

    def candidates() -> Iterator[dict[str, str] | str]:
        for decay, write in (node.inputs, node.inputs[::-1]):
            factors = [_unwrap(a, f) for f in _operands(a, decay, "mul")]
            if len(factors) != 2 or state not in factors:
                continue
            gate = _operands(a, decay, "mul")[1 - factors.index(state)]
            kv = _operands(a, write, "mul")
            if not _free(a, gate) or len(kv) != 2 or not all(_free(a, f) for f in kv):
                continue
            ks = [f for f in kv if key in _axes(a, f)]
            if len(ks) != 1:
                yield f"the outer product k·v has {len(ks)} factors along the read-out's axis {key} (k needs one)"
                continue
            gate_node = a.nodes[gate]
            if gate_node.op != "exp" and not _positive(a, gate):
                yield ("the gate is not provably positive (exp(·), sigmoid(·), a positive number or a "
                       "product of those), and the kernel works with its logarithm")
                continue
            out = {"q": q, "k": ks[0], "v": kv[1 - kv.index(ks[0])]}
            out.update({"g": gate_node.inputs[0]} if gate_node.op == "exp" else {"gate": gate})
            yield out

    return _first_fitting(a, state, emit, key, candidates(), "the new state is not gate·S + k·v (one "
                          "state-free gate times S plus an outer product of two factors)")


def match_delta(a: StepAnalysis, state: str, result: str, emit: str) -> Match | str:
    """S = S − β·k·(k @[K] S) + β·k·v; emit q @[K] S. Returns (node ids of q, k, v, beta; their
    layout) or why the step is not in that form."""
    found = _sum_read_out(a, result, emit, "S − β·k·(k @[K] S) + β·k·v")
    if isinstance(found, str):
        return found
    node, key, q = found

    def candidates() -> Iterator[dict[str, str] | str]:
        for erase, write in (node.inputs, node.inputs[::-1]):
            sub = a.nodes.get(erase)
            if sub is None or sub.op != "sub" or _unwrap(a, sub.inputs[0]) != state:
                continue
            erase_factors = _operands(a, sub.inputs[1], "mul")
            write_factors = _operands(a, write, "mul")
            probes = [f for f in erase_factors if a.nodes[f].op == "contract"]
            if len(erase_factors) != 3 or len(write_factors) != 3 or len(probes) != 1:
                continue
            probe = a.nodes[probes[0]]
            inputs = [_unwrap(a, i) for i in probe.inputs]
            if list(probe.attrs.get("axes") or []) != [key] or state not in inputs:
                yield (f"the erase term's k @ S contracts {_fmt(probe.attrs.get('axes') or [])}, "
                       f"not the read-out's {key}")
                continue
            k_read = probe.inputs[1 - inputs.index(state)]
            if not all(_free(a, f) for f in [*write_factors, k_read]):
                continue
            ks = [f for f in write_factors if key in _axes(a, f)]
            rest = [f for f in write_factors if f not in ks]
            if len(ks) != 1 or len(rest) != 2:
                continue
            erase_rest = [f for f in erase_factors if f != probes[0]]
            same_k = any(_same(a, f, ks[0]) for f in erase_rest) and _same(a, k_read, ks[0])
            for beta, v in (rest, rest[::-1]):  # β carries no axis but heads, v carries V
                if same_k and any(_same(a, f, beta) for f in erase_rest):
                    yield {"q": q, "k": ks[0], "v": v, "beta": beta}

    return _first_fitting(a, state, emit, key, candidates(), "the new state is not S − β·k·(k @[K] S) "
                          "+ β·k·v (the same β and k in both terms)")


def plan_scans(spec: SpecIR, backend: str = "auto") -> list[ScanPlan]:
    """Every scan of every block, classified; ``backend`` is the caller's override."""
    plans = []
    for block in spec.blocks.values():
        for node in walk(block.nodes):
            if node.op == "scan":
                requested = node.attrs.get("backend") if backend == "auto" else backend
                plans.append(classify(block, node, requested, spec))
    return plans
