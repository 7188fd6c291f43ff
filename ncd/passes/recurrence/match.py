"""Match a gla/delta step against the chunked kernels' form: which step nodes are q, k, v and the
gate or β, and how their axes map onto the kernels' layout."""
from __future__ import annotations

from collections.abc import Iterator
from fractions import Fraction

from ncd.ir import NUMBER_NODE, REGION_ARG, Node
from ncd.ops import algebra, arith, reorders
from ncd.ops.base import ADD, CONTRACT, EXP, MUL, SUB
from ncd.passes.recurrence.classify import StepAnalysis
from ncd.passes.recurrence.plan import KernelLayout

# Both kernels take q, k [B, T, H, K], v [B, T, H, V], a log gate [B, T, H, K] or β [B, T, H]
# and a state [B, H, K, V]. A step matches when its state has the key axis K (the read-out's
# contraction axis), one value axis V and any number of head axes in any order, and every factor
# carries the heads elementwise: q, k over heads + K, v over heads + V, the gate over heads + K or
# heads only (a scalar per head), β over heads; any of them may leave out heads (broadcast).
Match = tuple[dict[str, str], KernelLayout]


def _operands(a: StepAnalysis, node_id: str, of: str) -> list[str]:
    """The leaves of a tree of nodes of the arithmetic ``of`` (MUL trees: the factors of a product)."""
    node = a.nodes.get(node_id)
    if node is None or arith(node.op) != of:
        return [node_id]
    return [leaf for i in node.inputs for leaf in _operands(a, i, of)]


def _unwrap(a: StepAnalysis, node_id: str) -> str:
    """Looks through axis reorders (``x : [..]``), which change the layout but not the value."""
    node = a.nodes.get(node_id)
    while node is not None and reorders(node.op, node.attrs) and len(node.inputs) == 1:
        node_id = node.inputs[0]
        node = a.nodes.get(node_id)
    return node_id


def _positive(a: StepAnalysis, node_id: str) -> bool:
    """Provably > 0 wherever it is evaluated: exp(·), sigmoid(·), a positive number, or a
    product of those. The GLA kernel takes the gate's logarithm, so nothing else may pass."""
    node = a.nodes.get(_unwrap(a, node_id))
    if node is None:
        return False
    if algebra(node.op).positive:
        return True
    if node.op == NUMBER_NODE:
        try:
            return Fraction(str(node.attrs.get("value"))) > 0
        except (ValueError, ZeroDivisionError):
            return False
    if arith(node.op) == MUL:
        return all(_positive(a, i) for i in node.inputs)
    return False


def _same(a: StepAnalysis, x: str, y: str) -> bool:
    """Structural equality: two `k[t]` written twice are two nodes computing one value."""
    if x == y:
        return True
    nx_, ny = a.nodes.get(x), a.nodes.get(y)
    if nx_ is None or ny is None or nx_.op != ny.op or nx_.attrs != ny.attrs or len(nx_.inputs) != len(ny.inputs):
        return False
    if nx_.op == REGION_ARG:
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
    if node is None or arith(node.op) != CONTRACT:
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
    if node is None or arith(node.op) != ADD:
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
            factors = [_unwrap(a, f) for f in _operands(a, decay, MUL)]
            if len(factors) != 2 or state not in factors:
                continue
            gate = _operands(a, decay, MUL)[1 - factors.index(state)]
            kv = _operands(a, write, MUL)
            if not _free(a, gate) or len(kv) != 2 or not all(_free(a, f) for f in kv):
                continue
            ks = [f for f in kv if key in _axes(a, f)]
            if len(ks) != 1:
                yield f"the outer product k·v has {len(ks)} factors along the read-out's axis {key} (k needs one)"
                continue
            gate_node = a.nodes[gate]
            if arith(gate_node.op) != EXP and not _positive(a, gate):
                yield ("the gate is not provably positive (exp(·), sigmoid(·), a positive number or a "
                       "product of those), and the kernel works with its logarithm")
                continue
            out = {"q": q, "k": ks[0], "v": kv[1 - kv.index(ks[0])]}
            out.update({"g": gate_node.inputs[0]} if arith(gate_node.op) == EXP else {"gate": gate})
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
            if sub is None or arith(sub.op) != SUB or _unwrap(a, sub.inputs[0]) != state:
                continue
            erase_factors = _operands(a, sub.inputs[1], MUL)
            write_factors = _operands(a, write, MUL)
            probes = [f for f in erase_factors if arith(a.nodes[f].op) == CONTRACT]
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
