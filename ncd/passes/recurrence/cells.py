"""Prove that a scan's step is exactly a standard cell (Elman tanh/ReLU, GRU, LSTM), whatever its
gate order and weight layout, so the torch backend can run it on torch's fused RNN operator.

The step is evaluated symbolically. Every value is either an affine form ``Lin`` — a sum of
terms, each one a carry, a carry contracted with a weight (``rec``), an input sequence contracted
with a weight (``inp``), or a step-invariant weight (``const``: a parameter, a captured value, a
number) — or a polynomial ``Poly`` over gate nonlinearities of affine forms. Calls of sub-blocks
are evaluated through the callee's body; a captured value is evaluated through the enclosing
block's definition (so ``u = x @[I] W_ih + b_ih`` outside the scan read as ``u[t]`` inside it is
the input projection of ``x``). Slices along a gate axis (``a[G = 2]``) are pushed into the
weights. The new carries' polynomials are then compared with each cell's equations, with sums
and products taken as multisets (any order of terms and factors). Anything the evaluator does
not model makes the match fail with the reason, which `--explain` prints.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from fractions import Fraction

from ncd.ir import (CALL, INPUT, LOOPS, MODULE_WEIGHTS, NUMBER_NODE, REGION_ARGS, TUPLE_GET, WEIGHT_SOURCES, BlockIR,
                    Node, SpecIR)
from ncd.ops import OPS, arith, reorders
from ncd.ops.base import ADD, CONTRACT, MUL, NEG, PICK, RELU, SIGMOID, SUB, TANH, OpDef
from ncd.passes.recurrence.plan import CellMatch, GateWeights, WeightRef


class Miss(Exception):
    """The step is not a standard cell; the message says why."""


@dataclass(frozen=True)
class Term:
    kind: str  # state | rec | inp | seq | const | diag
    axes: tuple[str, ...]  # the axes of the term's value
    carry: int | None = None  # state / rec / diag: which carry
    weight: WeightRef | None = None  # rec / inp / const / diag: the weight, with its slices
    source: str | None = None  # inp / seq: the input sequence's node id
    in_axis: str | None = None  # inp: the contracted input axis
    stepped: bool = False  # inp / seq: read at the step (x[t])
    coef: float = 1.0
    renamed: tuple[tuple[str, str], ...] = ()  # state: axis renames applied (src, dst)


@dataclass(frozen=True)
class Lin:
    terms: tuple[Term, ...]
    axes: tuple[str, ...]


@dataclass(frozen=True)
class Poly:
    op: str  # ADD | MUL | SUB (the rows' arithmetic) | FN (a gate, ``fn`` its name)
    args: tuple["Sym", ...]
    fn: str = ""


Sym = Lin | Poly
FN = "fn"
# torch's Elman cell by its nonlinearity (nn.RNN's nonlinearity = "tanh" | "relu")
ELMAN = ((TANH, "rnn_tanh"), (RELU, "rnn_relu"))


def _row(node: Node) -> OpDef | None:
    return OPS.get(node.op)


def _number(node: Node) -> float | None:
    try:
        return float(Fraction(str(node.attrs.get("value"))))
    except (ValueError, ZeroDivisionError, TypeError):
        return None


@dataclass
class _Eval:
    spec: SpecIR | None
    outer: dict[str, Node]  # the enclosing block's nodes by id
    scan_axis: str
    carry_ids: list[str]
    index_id: str
    values: dict[str, Sym] = field(default_factory=dict)
    outer_values: dict[str, Sym] = field(default_factory=dict)
    depth: int = 0

    # ------------------------------------------------------------ the enclosing block
    def outer_value(self, node_id: str) -> Sym:
        """A captured value, read through its definition in the enclosing block."""
        if node_id in self.outer_values:
            return self.outer_values[node_id]
        node = self.outer.get(node_id)
        if node is None:
            raise Miss(f"the step reads {node_id}, which is not defined in the scan's block")
        axes = tuple(node.types[0].axes) if node.types else ()
        value: Sym
        if node.op == NUMBER_NODE:
            number = _number(node)
            if number is None:
                raise Miss(f"the number {node.attrs.get('value')} has no fixed value")
            value = Lin((Term("const", (), weight=WeightRef(node=node_id, axes=[], value=number)),), ())
        elif self.scan_axis not in axes:
            if node.types and node.types[0].lifted and node.op not in WEIGHT_SOURCES:
                raise Miss(f"the step reads {node_id}, a value with batch axes that does not change over "
                           f"the steps; torch's RNN weights cannot carry batch axes")
            value = Lin((Term("const", axes, weight=WeightRef(node=node_id, axes=list(axes))),), axes)
        elif arith(node.op) == ADD and len(node.inputs) == 2:
            a, b = (self.outer_value(i) for i in node.inputs)
            value = self.add(a, b, axes)
        elif arith(node.op) == CONTRACT and len(node.inputs) == 2:
            value = self.contract(node, [self.outer_value(i) for i in node.inputs], axes)
        elif reorders(node.op, node.attrs) and len(node.inputs) == 1:
            value = self.outer_value(node.inputs[0])
        else:
            value = Lin((Term("seq", axes, source=node_id),), axes)
        self.outer_values[node_id] = value
        return value

    # ------------------------------------------------------------ the step
    def value(self, node_id: str) -> Sym:
        if node_id in self.values:
            return self.values[node_id]
        return self.outer_value(node_id)

    def run(self, nodes: list[Node]) -> None:
        for node in nodes:
            if node.op in REGION_ARGS or node.op == INPUT:
                continue
            self.values[node.id] = self.transfer(node)

    def transfer(self, node: Node) -> Sym:
        op = node.op
        row = _row(node)
        how = row.arith if row is not None else None
        axes = tuple(node.types[0].axes) if node.types else ()
        if op == NUMBER_NODE:
            return self.outer_value_of_number(node)
        if op == CALL:
            raise Miss("internal: a call's results are read through tuple_get")
        if row is not None and row.role == PICK and node.inputs:
            return self.select(node, self.value(node.inputs[0]), axes)
        ins = [self.value(i) for i in node.inputs]
        if reorders(node.op, node.attrs) and len(ins) == 1:
            return ins[0]
        if how == ADD and len(ins) == 2:
            return self.add(ins[0], ins[1], axes)
        if how == SUB and len(ins) == 2:
            if isinstance(ins[0], Lin) and isinstance(ins[1], Lin):
                return Lin(ins[0].terms + tuple(replace(t, coef=-t.coef) for t in ins[1].terms), axes)
            return Poly(SUB, (ins[0], ins[1]))
        if how == NEG and len(ins) == 1:
            if isinstance(ins[0], Lin):
                return Lin(tuple(replace(t, coef=-t.coef) for t in ins[0].terms), axes)
            return Poly(MUL, (_constant(-1.0), ins[0]))
        if how == MUL and len(ins) == 2:
            return self.mul(ins[0], ins[1], axes)
        if how == CONTRACT and len(ins) == 2:
            return self.contract(node, ins, axes)
        if row is not None and row.relabels and "src" in node.attrs and len(ins) == 1:  # x[A as B]
            return self.rename(node, ins[0], axes)
        if row is not None and row.gate is not None and len(ins) == 1:
            return Poly(FN, (ins[0],), fn=row.gate)
        if _state_free(ins):
            raise Miss(f"the step computes a step-invariant value with {op} inside the step "
                       f"(torch's RNN takes weights computed before the loop)")
        raise Miss(f"the step applies {op} to a state-dependent value; the standard cells use only "
                   f"sigmoid, tanh, relu, sums and products of gates")

    def outer_value_of_number(self, node: Node) -> Sym:
        number = _number(node)
        if number is None:
            raise Miss(f"the number {node.attrs.get('value')} has no fixed value")
        return Lin((Term("const", (), weight=WeightRef(node=node.id, axes=[], value=number)),), ())

    def add(self, a: Sym, b: Sym, axes: tuple[str, ...]) -> Sym:
        if isinstance(a, Lin) and isinstance(b, Lin):
            return Lin(a.terms + b.terms, axes)
        return Poly(ADD, (a, b))

    def mul(self, a: Sym, b: Sym, axes: tuple[str, ...]) -> Sym:
        for x, y in ((a, b), (b, a)):
            number = _as_number(x)
            if number is not None and isinstance(y, Lin):
                return Lin(tuple(replace(t, coef=t.coef * number) for t in y.terms), axes)
        for x, y in ((a, b), (b, a)):
            if isinstance(x, Lin) and isinstance(y, Lin) and _state_free([x]) and not _state_free([y]):
                if len(y.terms) == 1 and y.terms[0].kind == "state":
                    raise Miss("the state is multiplied elementwise by a weight (a diagonal recurrence); "
                               "torch's cells take a full matrix W_hh·h")
        return Poly(MUL, (a, b))

    def contract(self, node: Node, ins: list[Sym], axes: tuple[str, ...]) -> Sym:
        over = list(node.attrs.get("axes") or [])
        if len(over) != 1:
            raise Miss(f"a contraction over {over}: the cells contract one axis")
        for x, w in (ins, ins[::-1]):
            if not (isinstance(x, Lin) and isinstance(w, Lin) and len(x.terms) == 1 and len(w.terms) == 1):
                continue
            xt, wt = x.terms[0], w.terms[0]
            if wt.kind != "const" or wt.weight is None or wt.weight.value is not None:
                continue
            if over[0] not in wt.axes or over[0] not in xt.axes:
                continue
            rest = tuple(a for a in wt.axes if a != over[0])
            weight = replace_ref(wt.weight, in_axis=over[0])
            if xt.kind == "state":
                return Lin((Term("rec", rest, carry=xt.carry, weight=weight, coef=xt.coef * wt.coef),), axes)
            if xt.kind == "seq" and set(xt.axes) - {self.scan_axis} == {over[0]}:
                return Lin((Term("inp", tuple(a for a in axes), weight=weight, source=xt.source,
                                 in_axis=over[0], stepped=xt.stepped, coef=xt.coef * wt.coef),), axes)
        if _state_free(ins) and not _depends_on_seq(ins):
            raise Miss("the step contracts two step-invariant values inside the step (hoist it: torch's "
                       "RNN takes the weights computed before the loop)")
        raise Miss("a contraction that is not the state (or the input x[t]) times one weight matrix")

    def select(self, node: Node, value: Sym, axes: tuple[str, ...]) -> Sym:
        axis = node.attrs.get("axis")
        if len(node.inputs) == 2:  # x[t]: the step's read of a sequence
            if node.inputs[1] != self.index_id or axis != self.scan_axis:
                raise Miss(f"the step reads {axis} at an index other than the step")
            if not isinstance(value, Lin):
                raise Miss("the step reads a step of a nonlinear sequence")
            terms = []
            for t in value.terms:
                if t.kind in ("seq", "inp") and not t.stepped:
                    terms.append(replace(t, stepped=True, axes=tuple(a for a in t.axes if a != axis)))
                elif t.kind == "const" and axis not in t.axes:
                    terms.append(t)
                else:
                    raise Miss(f"the step reads a step of a value of kind {t.kind}")
            return Lin(tuple(terms), axes)
        index = node.attrs.get("index")
        if not isinstance(index, int):
            raise Miss(f"a slice along {axis} that is not one fixed index")
        if not isinstance(value, Lin):
            raise Miss(f"a slice along {axis} of a nonlinear value; the cells slice the pre-activations")
        terms = []
        for t in value.terms:
            if axis not in t.axes:
                terms.append(t)  # broadcast along the sliced axis: the same for every slice
                continue
            if t.kind in ("state", "seq"):
                raise Miss(f"the step slices the {'state' if t.kind == 'state' else 'input'} along {axis}")
            assert t.weight is not None
            ref = t.weight.model_copy(update={"selects": [*t.weight.selects, (axis, index)],
                                              "axes": [a for a in t.weight.axes if a != axis]})
            terms.append(replace(t, weight=ref, axes=tuple(a for a in t.axes if a != axis)))
        return Lin(tuple(terms), axes)

    def rename(self, node: Node, value: Sym, axes: tuple[str, ...]) -> Sym:
        src, dst = node.attrs.get("src"), node.attrs.get("dst")
        if isinstance(value, Lin) and len(value.terms) == 1 and value.terms[0].kind == "state":
            t = value.terms[0]
            return Lin((replace(t, axes=axes, renamed=(*t.renamed, (src, dst))),), axes)
        raise Miss(f"a rename {src} → {dst} of something other than the state")

    # ------------------------------------------------------------ calls
    def inline(self, node: Node) -> list[Sym]:
        """A sub-block call's results, evaluated through the callee's body."""
        if self.spec is None or node.attrs.get("lift") or node.attrs.get("repeat"):
            raise Miss("the step calls a block over lifted axes or a repeated block")
        callee = self.spec.blocks.get(node.attrs.get("block", ""))
        if callee is None or self.depth >= 8:
            raise Miss("the step calls a block the matcher cannot read")
        if any(n.op in MODULE_WEIGHTS or n.op in LOOPS for n in callee.nodes):
            raise Miss(f"the called block {callee.name} has its own weights or loops")
        inner = _Eval(self.spec, self.outer, self.scan_axis, self.carry_ids, self.index_id,
                      outer_values=self.outer_values, depth=self.depth + 1)
        inputs = [n for n in callee.nodes if n.op == INPUT]
        for port in inputs:
            inner.values[port.id] = self.value(node.inputs[port.attrs["index"]])
        for n in callee.nodes:
            if n.op == INPUT:
                continue
            inner.values[n.id] = inner.transfer_call(n)
        return [inner.values[r] for r in callee.results]

    def transfer_call(self, node: Node) -> Sym:
        if node.op == TUPLE_GET:
            return self.calls[node.inputs[0]][node.attrs["index"]]
        if node.op == CALL:
            self.calls[node.id] = self.inline(node)
            return Lin((), ())
        return self.transfer(node)

    @property
    def calls(self) -> dict[str, list[Sym]]:
        if not hasattr(self, "_calls"):
            self._calls: dict[str, list[Sym]] = {}
        return self._calls


def replace_ref(ref: WeightRef, **update) -> WeightRef:
    return ref.model_copy(update=update)


def _constant(value: float) -> Lin:
    return Lin((Term("const", (), weight=WeightRef(node="", axes=[], value=value)),), ())


def _as_number(x: Sym) -> float | None:
    if isinstance(x, Lin) and len(x.terms) == 1:
        t = x.terms[0]
        if t.kind == "const" and t.weight is not None and t.weight.value is not None:
            return t.coef * t.weight.value
    return None


def _state_free(values: list[Sym]) -> bool:
    return all(isinstance(v, Lin) and all(t.kind in ("const", "seq", "inp") for t in v.terms) for v in values)


def _depends_on_seq(values: list[Sym]) -> bool:
    return any(isinstance(v, Lin) and any(t.kind in ("seq", "inp") for t in v.terms) for v in values)


# ---------------------------------------------------------------- the cells' equations
def _flat(x: Sym, op: str) -> list[Sym]:
    if isinstance(x, Poly) and x.op == op:
        return [leaf for a in x.args for leaf in _flat(a, op)]
    return [x]


def _gate(x: Sym, fn: str) -> Lin | None:
    if isinstance(x, Poly) and x.op == FN and x.fn == fn and isinstance(x.args[0], Lin):
        return x.args[0]
    return None


def _is_state(x: Sym, carry: int) -> bool:
    return (isinstance(x, Lin) and len(x.terms) == 1 and x.terms[0].kind == "state"
            and x.terms[0].carry == carry and x.terms[0].coef == 1.0 and not x.terms[0].renamed)


def _one_minus(x: Sym) -> Sym | None:
    """z of ``1 − z``."""
    if isinstance(x, Poly) and x.op == SUB and _as_number(x.args[0]) == 1.0:
        return x.args[1]
    return None


class _Cells:
    """Reads a gate's pre-activation into torch's pieces and holds every gate to one input."""

    def __init__(self, state_axis: str, hidden: int, cell: int | None) -> None:
        self.state_axis = state_axis
        self.hidden, self.cell = hidden, cell
        self.source: tuple[str, str] | None = None  # (input node, input axis)

    def gate(self, lin: Lin, name: str, inside: Lin | None = None) -> GateWeights:
        """One gate: W_ih x + b (outside) and W_hh h + b_h (``inside``: GRU's n gate, under r)."""
        out = GateWeights()
        for part, where in ((lin, "outside"), (inside, "inside")):
            if part is None:
                continue
            for t in part.terms:
                if set(t.axes) - {self.state_axis}:
                    raise Miss(f"gate {name} has a term along {sorted(set(t.axes) - {self.state_axis})} "
                               f"besides the state's {self.state_axis}")
                if t.kind == "rec":
                    if t.carry != self.hidden:
                        raise Miss(f"gate {name} reads the cell state c through a weight (a peephole "
                                   f"connection); torch's LSTM has none")
                    if inside is not None and where == "outside":
                        raise Miss(f"gate {name}'s recurrent term is outside r ⊙ (…): torch's GRU applies "
                                   f"the reset gate after the recurrent product")
                    if not self._weight_ok(t, self.state_axis):
                        raise Miss(f"gate {name}'s recurrent weight is not a [{self.state_axis}', "
                                   f"{self.state_axis}] matrix")
                    out.rec.append(self._ref(t))
                elif t.kind == "inp":
                    if not t.stepped:
                        raise Miss(f"gate {name} reads a whole sequence, not its step")
                    if where == "inside":
                        raise Miss(f"gate {name} has an input term under r ⊙ (…)")
                    key = (t.source or "", t.in_axis or "")
                    if self.source is None:
                        self.source = key
                    elif self.source != key:
                        raise Miss("the gates read more than one input sequence; torch's RNN takes one")
                    if not self._weight_ok(t, None):
                        raise Miss(f"gate {name}'s input weight is not a [{t.in_axis}, {self.state_axis}] matrix")
                    out.inp.append(self._ref(t))
                elif t.kind == "seq":
                    if not t.stepped or t.axes != (self.state_axis,):
                        raise Miss(f"gate {name} reads a sequence that is not along the state's axis")
                    if where == "inside":
                        raise Miss(f"gate {name} has an input term under r ⊙ (…)")
                    key = (t.source or "", self.state_axis)
                    if self.source is None:
                        self.source = key
                    elif self.source != key:
                        raise Miss("the gates read more than one input sequence; torch's RNN takes one")
                    out.inp.append(WeightRef(node="", axes=[self.state_axis], coef=t.coef, identity=True))
                elif t.kind == "const":
                    (out.bias_h if where == "inside" else out.bias).append(self._ref(t))
                elif t.kind == "state":
                    raise Miss(f"gate {name} adds the state itself, not W_hh·h")
                else:
                    raise Miss(f"gate {name} has a {t.kind} term")
        if not out.rec:
            raise Miss(f"gate {name} does not read the state through a weight")
        if not out.inp:
            raise Miss(f"gate {name} does not read an input step x[t]")
        return out

    def _weight_ok(self, t: Term, in_axis: str | None) -> bool:
        """The weight, once sliced, is a matrix [in, D] (the contracted axis and the state's)."""
        ref = t.weight
        if ref is None or ref.in_axis is None or len(ref.axes) != 2:
            return False
        return [a for a in ref.axes if a != ref.in_axis] == [self.state_axis]

    def _ref(self, t: Term) -> WeightRef:
        assert t.weight is not None
        return t.weight.model_copy(update={"coef": t.weight.coef * t.coef})


def _negated(g: GateWeights) -> GateWeights:
    """σ(−a) = 1 − σ(a): the gate of a GRU written with z and 1 − z swapped."""
    flip = (lambda refs: [r.model_copy(update={"coef": -r.coef}) for r in refs])
    return GateWeights(rec=flip(g.rec), inp=flip(g.inp), bias=flip(g.bias), bias_h=flip(g.bias_h))


def _match_elman(new_h: Sym, cells: _Cells) -> tuple[str, list[GateWeights]]:
    for fn, cell in ELMAN:
        lin = _gate(new_h, fn)
        if lin is not None:
            return cell, [cells.gate(lin, "h")]
    if isinstance(new_h, Poly) and new_h.op == FN:
        raise Miss(f"the new state is {new_h.fn}(…): torch's RNN takes tanh or relu")
    if isinstance(new_h, Poly) and new_h.op == ADD:
        raise Miss("the new state adds the old state back in (a leaky or gated update) without the GRU's "
                   "gates; torch's RNN is h = act(W_ih x + W_hh h + b)")
    raise Miss("the new state is not act(W_ih x + W_hh h + b) with act tanh or relu")


def _match_gru(new_h: Sym, cells: _Cells) -> tuple[str, list[GateWeights]]:
    terms = _flat(new_h, ADD)
    if len(terms) != 2:
        raise Miss("the new state is not (1 − z) ⊙ n + z ⊙ h")
    for first, second in (terms, terms[::-1]):
        a, b = _flat(first, MUL), _flat(second, MUL)
        if len(a) != 2 or len(b) != 2:
            continue
        for x in (a, a[::-1]):
            z_keep = _one_minus(x[0])  # (1 − z) ⊙ n + z ⊙ h, or (1 − z) ⊙ h + z ⊙ n
            if z_keep is None:
                continue
            for y in (b, b[::-1]):
                if y[0] != z_keep:
                    continue
                z = _gate(z_keep, SIGMOID)
                if z is None:
                    raise Miss("the update gate z is not sigmoid(…)")
                if _is_state(y[1], cells.hidden):  # (1 − z) n + z h: torch's form
                    n, negate = x[1], False
                elif _is_state(x[1], cells.hidden):  # (1 − z) h + z n: torch's z is 1 − z
                    n, negate = y[1], True
                else:
                    continue
                return "gru", _gru_gates(n, z, negate, cells)
    raise Miss("the new state is not (1 − z) ⊙ n + z ⊙ h with one gate z = sigmoid(…)")


def _gru_gates(n: Sym, z: Lin, negate: bool, cells: _Cells) -> list[GateWeights]:
    if not (isinstance(n, Poly) and n.op == FN):
        raise Miss("the candidate n is not tanh(…)")
    if n.fn != TANH:
        raise Miss(f"the candidate n is {n.fn}(…), torch's GRU takes tanh")
    arg = n.args[0]
    if isinstance(arg, Lin):
        raise Miss("the candidate n = tanh(W x + W h + b) has no reset gate (torch's GRU: "
                   "tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn)))")
    parts = _flat(arg, ADD)
    outside = [p for p in parts if isinstance(p, Lin)]
    gated = [p for p in parts if not isinstance(p, Lin)]
    if len(gated) != 1:
        raise Miss("the candidate is not tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn))")
    factors = _flat(gated[0], MUL)
    if len(factors) != 2:
        raise Miss("the reset term is not r ⊙ (W_hn h + b_hn)")
    for r_sym, inside in (factors, factors[::-1]):
        r = _gate(r_sym, SIGMOID)
        if r is not None and isinstance(inside, Lin):
            break
    else:
        raise Miss("the reset term is not r ⊙ (W_hn h + b_hn) with r = sigmoid(…)")
    lin_out = Lin(tuple(t for p in outside for t in p.terms), ())
    gate_z = cells.gate(z, "z")
    return [cells.gate(r, "r"), _negated(gate_z) if negate else gate_z, cells.gate(lin_out, "n", inside=inside)]


def _match_lstm(values: list[Sym], cells: _Cells) -> tuple[str, list[GateWeights]]:
    h, c = cells.hidden, cells.cell
    assert c is not None
    new_c, new_h = values[c], values[h]
    terms = _flat(new_c, ADD)
    if len(terms) != 2:
        raise Miss("the new cell state is not f ⊙ c + i ⊙ g")
    forget = ingate = cand = None
    for first, second in (terms, terms[::-1]):
        a, b = _flat(first, MUL), _flat(second, MUL)
        if len(a) != 2 or len(b) != 2:
            continue
        for x in (a, a[::-1]):
            if _is_state(x[1], c) and _gate(x[0], SIGMOID) is not None:
                for y in (b, b[::-1]):
                    if _gate(y[0], SIGMOID) is not None and _gate(y[1], TANH) is not None:
                        forget, ingate, cand = _gate(x[0], SIGMOID), _gate(y[0], SIGMOID), _gate(y[1], TANH)
    if forget is None:
        raise Miss("the new cell state is not f ⊙ c + i ⊙ g with f, i = sigmoid(…), g = tanh(…)")
    out = _flat(new_h, MUL)
    if len(out) != 2:
        raise Miss("the new hidden state is not o ⊙ tanh(c)")
    for o_sym, t_sym in (out, out[::-1]):
        if _gate(o_sym, SIGMOID) is not None and isinstance(t_sym, Poly) and t_sym.op == FN \
                and t_sym.fn == TANH and t_sym.args[0] == new_c:
            gates = [cells.gate(ingate, "i"), cells.gate(forget, "f"), cells.gate(cand, "g"),
                     cells.gate(_gate(o_sym, SIGMOID), "o")]
            return "lstm", gates
    raise Miss("the new hidden state is not o ⊙ tanh(c) of the new cell state c")


def match_cell(block: BlockIR, node: Node, spec: SpecIR | None) -> CellMatch | str:
    """The standard cell this scan's step is, with torch's gates read off the spec's weights, or
    why it is none."""
    region = node.regions[0]
    n_carry = len(node.attrs["carries"])
    if n_carry not in (1, 2):
        return f"the step carries {n_carry} values; torch's cells carry h (RNN, GRU) or h and c (LSTM)"
    if len(region.results) != n_carry + 1:
        return "the step emits more than one value; torch's RNN emits the hidden state only"
    args = {n.id: n for n in region.nodes if n.op in REGION_ARGS}
    carry_ids = list(region.args[:n_carry])
    axes = [tuple(args[c].types[0].axes) for c in carry_ids]
    if any(len(a) != 1 for a in axes) or len(set(axes)) != 1:
        return "the carries are not vectors along one axis"
    state_axis = axes[0][0]
    ev = _Eval(spec, {n.id: n for n in block.nodes}, node.attrs["axis"], carry_ids, region.args[n_carry])
    for i, cid in enumerate(carry_ids):
        ev.values[cid] = Lin((Term("state", (state_axis,), carry=i),), (state_axis,))
    try:
        for n in region.nodes:
            if n.op in REGION_ARGS:
                continue
            ev.values[n.id] = ev.transfer_call(n)
        values = [ev.values[r] if r in ev.values else ev.value(r) for r in region.results[:n_carry]]
        emit = region.results[n_carry]
        candidates = [i for i in range(n_carry) if region.results[i] == emit]
        if not candidates:
            return "the step emits a value other than a new carry; torch's RNN emits the hidden state"
        hidden = candidates[0]
        cell_idx = 1 - hidden if n_carry == 2 else None
        cells = _Cells(state_axis, hidden, cell_idx)
        if n_carry == 2:
            kind, gates = _match_lstm(values, cells)
        else:
            try:
                kind, gates = _match_elman(values[0], cells)
            except Miss as elman:
                try:
                    kind, gates = _match_gru(values[0], cells)
                except Miss as gru:
                    raise Miss(f"not an Elman cell ({elman}) nor a GRU ({gru})") from None
    except Miss as exc:
        return str(exc)
    assert cells.source is not None
    source, in_axis = cells.source
    return CellMatch(cell=kind, gates=gates, input=source, input_axis=in_axis or None, hidden=hidden,
                     cell_carry=cell_idx, state_axis=state_axis,
                     input_axes=list(ev.outer[source].types[0].axes) if source in ev.outer else [])
