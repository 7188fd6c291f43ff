"""Checked IR → a small straight-line program per block, read by both the interpreter and emitter.

Each statement assigns one variable (named after its node id). Control constructs — scans,
repeats and halting loops — are statements with nested bodies. Nothing here runs torch.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Union

import sympy

from ncd import sizes as sz
from ncd.errors import NcdError, Span
from ncd.ir import (BROADCAST, CALL, CONST, HALTING, INIT_FILL, INIT_RANDOM, INPUT, LOOPS, LOOP_INDEX, MATERIALIZE,
                   NUMBER_NODE, REGION_ARG, REPEAT, SCAN, TAP, TUPLE_GET, WEIGHT_SOURCES, BlockIR, Node, ParamDef,
                   SpecIR, WireType)
from ncd.ops import OPS, role
from ncd.ops import dtypes as dtype_rules
from ncd.ops.base import CHOOSE, PICK, BinOp, Call, Expr, Fold, Index, Lit, LowerCtx, Method, OpDef, Ref, SelfAttr, call, fold, leaves, lit
from ncd.ops.init import INITIALISERS, InitDef
from ncd.ops.layout import align
from ncd.passes.fusion import Fusion, FusionPlan, in_scope, lower as lower_fusion

ANCHOR = "_ncd_anchor"  # an empty float buffer, so .double() / .to(device) reach tensors a block creates


@dataclass
class Assign:
    target: str
    expr: Expr
    span: Span | None = None  # the node's place: a run-time input error is located there


@dataclass
class Loop:
    """A scan over an axis, a fixed repeat, or an ACT halting loop."""

    kind: str  # scan | repeat | halting
    target: str
    args: list[str]
    inits: list[Expr]
    body: list["Stmt"]
    results: list[Expr]
    length: Expr | None = None  # scan: the scanned axis' size; repeat/halting: the step count
    index: str | None = None
    reverse: bool = False
    emit_dims: list[int] = field(default_factory=list)  # scan: where each emitted sequence stacks
    n_carry: int = 0
    eps: float = 0.0
    mix: str = "interpolate"  # halting: graves | interpolate (ACT_MIXES)
    weight_align: list[Expr] = field(default_factory=list)  # halting: Ref("__w") aligned to each carry
    node_id: str = ""
    axis: str = ""  # scan: the scanned axis (a packed call restarts it at every offset, backends/pytorch/varlen.py)
    # scan only: what a parallel backend needs to run the step for every t at once
    backend: str = "sequential"
    plan: Any = None  # ncd.passes.recurrence.ScanPlan
    carry_sizes: list[tuple[int, ...]] = field(default_factory=list)
    captures: list[tuple[str, bool, int]] = field(default_factory=list)  # (id, lifted, core rank)
    self_reads: list[str] = field(default_factory=list)
    kernel: dict[str, Expr] = field(default_factory=dict)  # gla/delta: q, k, v, g|gate|beta as expressions
    kernel_ranks: dict[str, int] = field(default_factory=dict)  # their core ranks (1, or 0 for β / a scalar gate)
    state_free: set[str] = field(default_factory=set)  # statements a kernel runner evaluates (no state)
    invariant: set[str] = field(default_factory=set)  # scan: statements computed once, before the loop
    cell_values: dict[str, Expr] = field(default_factory=dict)  # fused_rnn: the input and weights it reads
    cell_axes: dict[str, tuple[str, ...]] = field(default_factory=dict)  # their core axes
    # scan at a block's top level: each carry's state name within the block (ncd/state.py), its
    # core axes and per-example sizes (None: free), and its initial value when the spec fixes it
    # (a number, or a weight's name; None: computed from the inputs); empty: no state
    state_names: list[str] = field(default_factory=list)
    state_axes: list[tuple[str, ...]] = field(default_factory=list)
    state_shapes: list[tuple[int | None, ...]] = field(default_factory=list)
    state_inits: list[float | str | None] = field(default_factory=list)


Stmt = Union[Assign, Loop]


@dataclass
class Init:
    name: str
    kind: str  # param | buffer | const
    shape: tuple[int, ...]
    body: list[Stmt]
    result: Expr


@dataclass
class Program:
    key: str
    inputs: list[tuple[str, str, tuple[str, ...], tuple[int | None, ...]]]  # (var, port, axes, sizes)
    body: list[Stmt]
    results: list[Expr]
    inits: list[Init]
    instances: list[tuple[str, str, int | None]]  # (name, block key, repeat)
    taps: list[str]
    input_kinds: list[str] = field(default_factory=list)  # each input's IR dtype: float, int or bool
    anchor_buffer: bool = False  # no float input: new float tensors follow an empty buffer `_ncd_anchor`
    # a prefill module's caches and windows (ncd/passes/step.py Record): (state name in the block,
    # the value, the step axis' dim in it, a window's width or 0), handed to rt.state_record after the body
    records: list[tuple[str, Expr, int, int]] = field(default_factory=list)


class SizeTable:
    """Bound sizes of every axis after the user's bindings and the checker's inference."""

    def __init__(self, spec: SpecIR) -> None:
        self.spec = spec
        self._axes = sz.AxisSizes.of(spec)  # the one resolver (ncd/sizes.py)
        self.expr = self._axes.expr
        self.bound = self._axes.bound

    def number(self, text: str, where: Node) -> int | float:
        span = where.loc.span if where.loc else None
        try:
            value = sz.parse(text)
            subs = {s: self.expr(s.name) for s in value.free_symbols}
            value = sz.substitute(value, subs, f"the number {text[:40]}") if subs else value
        except NcdError as exc:
            raise NcdError(exc.message, exc.span or span, hint=exc.hint) from None
        if value.free_symbols:
            names = ", ".join(sorted(s.name for s in value.free_symbols))
            raise NcdError(f"this value needs the size of axis {names}, which is not bound", span,
                           hint=f"bind it: ncd.load(..., {names.split(',')[0]}=...) or --set {names.split(',')[0]}=...")
        if value in (sympy.oo, -sympy.oo):
            return float(value)
        if value.is_integer and abs(value) < 2**63:  # bigger integers only make sense as floats
            return int(value)
        return float(value)


class Lowering:
    """Lowers one block specialisation."""

    def __init__(self, spec: SpecIR, block: BlockIR, sizes: SizeTable, plans: dict[str, Any] | None = None,
                 fusions: dict[str, Fusion] | None = None, records: list[Any] | None = None) -> None:
        self.records = list(records or [])  # ncd/passes/step.py Record: values a prefill returns
        if self.records:  # a recorded value must be computed, not absorbed into a fused call
            kept = {r.node for r in self.records}
            fusions = {k: f for k, f in (fusions or {}).items() if not kept & set(f.absorbed)}
        self.plans = plans or {}
        self.fusions = fusions or {}  # the fusion pass's plan for this block (fused node id → Fusion)
        self.fusing = False  # fusions apply to the block's body, not to initialisers
        self.spec = spec
        self.block = block
        self.sizes = sizes
        self.types: dict[str, list[WireType]] = {}
        self.nodes: dict[str, Node] = {}
        self.inputs = [n for n in block.nodes if n.op == INPUT]
        self.anchor: Expr | None = None
        self.aliases: dict[str, Expr] = {}  # nodes folded into their users (literals, reads, renames)
        # a const over a free axis cannot be stored at load: its formula runs in forward, at the input's size
        self.lazy = {p.name: p for p in block.params
                     if p.kind == CONST and any(sizes.bound(a) is None for a in p.type.axes)}
        self.in_lazy = False

    def subst(self, expr: Expr) -> Expr:
        """Replace references to folded nodes by what they stand for."""
        return fold(expr, _Subst(self.aliases))

    def result(self, node_id: str) -> Expr:
        return self.subst(Ref(node_id))

    # ---------------------------------------------------------------- sizes
    def size_expr(self, axis: str) -> Expr:
        """The axis' size: a literal where bound, else read off an input at run time. A primed axis
        has its base's size (an input carrying T gives T'), and a size derived from free axes
        (R = 2·T + 1) is computed from theirs."""
        bound = self.sizes.bound(axis)
        if bound is not None:
            return lit(bound)
        found = self._input_size(axis)
        if found is not None:
            return found
        value = self.sizes.expr(axis)
        free = sorted(s.name for s in value.free_symbols)
        reads = {name: self._input_size(name) for name in free}
        if value != sz.symbol(axis.rstrip("'")) and all(r is not None for r in reads.values()):
            built = _size_code(value, reads)
            if built is not None:
                return built
        base = axis.rstrip("'")
        missing = next((n for n in free if reads.get(n) is None), base)
        raise NcdError(f"axis {axis} has no bound size and no input of block {self.block.name} carries it",
                       self.block.loc.span if self.block.loc else None, hint=f"bind it: --set {missing}=...")

    def number_from_inputs(self, node: Node) -> Expr | None:
        """A number in free sizes (``x / D``, ``sqrt(D)`` with ``axis D`` free) computed in forward from
        the inputs' shapes; None where every size is bound (a literal) or some input cannot tell."""
        if node.type.dtype != "float":
            return None
        value = sz.parse(node.attrs["value"])
        if not value.free_symbols:
            return None
        try:
            value = sz.substitute(value, {s: self.sizes.expr(s.name) for s in value.free_symbols}, "a number")
        except NcdError:
            return None
        reads = {s.name: self._input_size(s.name) for s in value.free_symbols}
        if not value.free_symbols or any(r is None for r in reads.values()):
            return None
        return _number_code(value, reads)

    def _input_size(self, axis: str) -> Expr | None:
        """A read of the size of an input dim whose axis is ``axis`` or shares its base (T, T')."""
        base = axis.rstrip("'")
        for node in self.inputs:
            for i, name in enumerate(node.type.axes):
                if name.rstrip("'") == base:
                    return Method(Ref(node.id), "size", (lit(i - len(node.type.axes)),))
        return None

    # ---------------------------------------------------------------- programs
    def program(self) -> Program:
        floats = [n for n in self.inputs if n.type.dtype == "float"]
        if floats:
            self.anchor = Ref(floats[0].id)
        elif self.inputs:  # integer inputs only (token ids): follow the module's dtype and device
            self.anchor = SelfAttr(ANCHOR)
        self.fusing = True
        body = self.stmts(self.block.nodes)
        self.fusing = False
        results = [self.result(r) for r in self.block.results]
        body = _prune_for_fused(body, results)
        self.name_states(body)
        inputs = [(n.id, n.name or n.id, n.type.axes, tuple(self.sizes.bound(a) for a in n.type.axes))
                  for n in self.inputs]
        saved_anchor, self.anchor = self.anchor, None
        inits = [self.init(p) for p in self.block.params if p.name not in self.lazy]
        self.anchor = saved_anchor
        instances = [(i.name, i.block, i.repeat) for i in self.block.instances]
        records = [(r.name, self.result(r.node), r.dim, r.width) for r in self.records]
        return Program(self.block.key, inputs, body, results, inits, instances,
                       list(self.block.taps), [n.type.dtype for n in self.inputs], bool(self.inputs) and not floats,
                       records)

    def name_states(self, body: list[Stmt]) -> None:
        """Name the carries of the block's top-level scans (docs/language.md, "State in and out"):
        the carry's name, after the scan's bound name (or ``scan<i>``, its ordinal among them)
        when the block holds several. A scan inside another loop runs once per step: no state."""
        scans = [s for s in body if isinstance(s, Loop) and s.kind == SCAN]
        bound = [self.nodes[s.node_id].name for s in scans]
        instances = {i.name for i in self.block.instances}
        for i, loop in enumerate(scans):
            node = self.nodes[loop.node_id]
            name = bound[i]
            if len(scans) == 1:
                prefix = ""
            elif name and bound.count(name) == 1 and name not in instances and is_state_segment(name):
                prefix = f"{name}."
            else:
                prefix = f"scan{i}."
            region = node.regions[0]
            carries = region.nodes[: len(node.attrs["carries"])]
            loop.state_names = [f"{prefix}{c}" for c in node.attrs["carries"]]
            loop.state_axes = [tuple(a.type.axes) for a in carries]
            loop.state_shapes = [tuple(self.sizes.bound(x) for x in a.type.axes) for a in carries]
            loop.state_inits = [self._state_init(self.nodes[i]) for i in node.inputs[: len(carries)]]

    def _state_init(self, src: Node) -> float | str | None:
        """A carry's initial value as plain data: a number, a weight's name, or None (computed)."""
        if src.op == NUMBER_NODE:
            return float(self.sizes.number(src.attrs["value"], src))
        if src.op in WEIGHT_SOURCES:
            return str(src.attrs["name"])
        return None

    def init(self, param: ParamDef) -> Init:
        assert param.init is not None
        shape = []
        for axis in param.type.axes:
            bound = self.sizes.bound(axis)
            if bound is None:
                span = param.loc.span if param.loc else None
                raise NcdError(f"{param.kind} {param.name} has axis {axis}, whose size is not bound", span,
                               hint=f"bind it: --set {axis}=... (weights need concrete sizes)")
            shape.append(bound)
        body = self.stmts(param.init.nodes)
        return Init(param.name, param.kind, tuple(shape), body, self.result(param.init.results[0]))

    def lazy_const(self, param: ParamDef) -> list[Stmt]:
        """A const's formula as forward statements (idx reads the input's size), once per block."""
        assert param.init is not None
        fusing, self.fusing, self.in_lazy = self.fusing, False, True
        try:
            return self.stmts(param.init.nodes)
        finally:
            self.fusing, self.in_lazy = fusing, False

    def stmts(self, nodes: list[Node]) -> list[Stmt]:
        out: list[Stmt] = []
        fusions, absorbed = in_scope(self.fusions, nodes) if self.fusing else ({}, set())
        for node in nodes:
            self.nodes[node.id] = node
            self.types[node.id] = node.types
            if node.op in (INPUT, REGION_ARG, LOOP_INDEX) or node.id in absorbed:
                continue
            if node.op in LOOPS:
                out.append(getattr(self, f"loop_{node.op}")(node))
                continue
            if node.op == CONST and node.attrs["name"] in self.lazy:
                out.extend(self.lazy_const(self.lazy[node.attrs["name"]]))
                self.aliases[node.id] = self.result(self.lazy[node.attrs["name"]].init.results[0])
                continue
            if node.id in fusions:
                expr = lower_fusion(fusions[node.id], self.result, lambda i: self.number_from_inputs(self.nodes[i])
                                    or self.sizes.number(self.nodes[i].attrs["value"], self.nodes[i]))
            else:
                expr = self.expr(node)
            expr = self.subst(expr)
            if isinstance(expr, (Lit, SelfAttr, Ref)):
                self.aliases[node.id] = expr
            else:
                out.append(Assign(node.id, expr, node.loc.span if node.loc else None))
        return out

    def in_types(self, node: Node) -> list[WireType]:
        types = []
        for i in node.inputs:
            src = self.nodes[i]
            if src.op == TUPLE_GET:
                types.append(src.types[0])
            else:
                types.append(self.types[i][0])
        return types

    def expr(self, node: Node) -> Expr:
        op = node.op
        refs = [self.index_ref(i) if role(op) != PICK else Ref(i) for i in node.inputs]
        if op == NUMBER_NODE:
            read = self.number_from_inputs(node)
            if read is not None:
                return read
            # the IR's dtype decides: a float-typed 1 is 1.0, so where(c, 1, 0) is a float wire as typed
            value = self.sizes.number(node.attrs["value"], node)
            if node.type.dtype == "bool":  # a 0/1 branch of a boolean where/max/min
                return lit(bool(value))
            return lit(float(value) if node.type.dtype == "float" and isinstance(value, int) else value)
        if op in WEIGHT_SOURCES:
            return SelfAttr(node.attrs["name"])
        if op == TUPLE_GET:
            return Index(refs[0], (node.attrs["index"],))
        if op == TAP:
            return Call(SelfAttr(f"taps.{node.attrs['name']}"), (refs[0],))
        if op == CALL:
            return self.call_block(node, refs)
        if op == INIT_RANDOM:
            args = tuple(float(self.sizes.number(a, node)) for a in node.attrs["args"])
            row = _check_init(node, args)
            shape = tuple(self.sizes.bound(a) for a in node.type.axes)
            return row.lower(args, shape)
        if op == INIT_FILL:
            shape = tuple(self.sizes.bound(a) for a in node.type.axes)
            return call("torch.full", lit(shape), lit(float(node.attrs["value"])))
        if op == MATERIALIZE and self.in_lazy:
            src = self.in_types(node)[0]
            sizes = call("rt.tuple_of", *(self.size_expr(a) for a in node.type.axes))
            return call("rt.materialize_at", align(refs[0], src, node.type.axes), sizes, self.anchor or lit(None))
        if op == MATERIALIZE:
            src = self.in_types(node)[0]
            shape = tuple(self.sizes.bound(a) for a in node.type.axes)
            return call("rt.materialize", align(refs[0], src, node.type.axes), lit(shape))
        if op == BROADCAST:
            src = self.in_types(node)[0]
            sizes = call("rt.tuple_of", *(self.size_expr(a) for a in node.type.axes))
            return call("rt.expand_core", align(refs[0], src, node.type.axes), sizes)
        opdef = OPS.get(op)
        if opdef is None:
            raise NcdError(f"internal: no lowering for op {op}")
        in_types = self.in_types(node)
        refs = self.floated(node, opdef, refs, in_types)
        ctx = LowerCtx(in_types=in_types, size_of=self.sizes.bound, size_expr=self.size_expr,
                       refs=refs, anchor=self.anchor, in_names=[self.nodes[i].name for i in node.inputs])
        return opdef.lower(node, ctx)

    def index_ref(self, node_id: str) -> Expr:
        """A loop's step index runs as a Python int (selecting ``x[t]`` wants one); anything else that
        reads it (``sqrt(t + 1)``, ``t > 1``) gets it as a 0-d int64 tensor, since torch's functions
        take tensors."""
        source = self.nodes.get(node_id)
        if source is None or source.op != LOOP_INDEX:
            return Ref(node_id)
        return call("rt.step_index", Ref(node_id), self.anchor if self.anchor is not None else lit(None))

    def floated(self, node: Node, opdef: OpDef, refs: list[Expr], types: list[WireType]) -> list[Expr]:
        """Boolean operands of an op the IR types float, as floats of the module's dtype: torch would
        give a boolean for ``b + b``, an int64 for ``sum(b)`` and refuse ``b - b`` or ``b @ W``. An
        elementwise op with a float wire beside the boolean promotes it itself (``x * (x > 0)``)."""
        if opdef.dtypes == dtype_rules.ANY or not node.types or node.types[0].dtype != "float":
            return refs
        first = 1 if role(node.op) == CHOOSE else 0  # where's condition stays a boolean
        wires = [k for k in range(first, len(refs)) if self.nodes[node.inputs[k]].op != NUMBER_NODE]
        if not any(types[k].dtype in ("bool", "int") for k in wires):
            return refs
        if opdef.family == "elementwise" and any(types[k].dtype == "float" for k in wires):
            return refs
        # integers alone (the step index in ``sqrt(t + 1)``, ``t / 4``) would promote to torch's
        # default dtype, not the module's: a float64 module would compute them in float32
        anchor = self.anchor if self.anchor is not None else lit(None)
        return [call("rt.to_float", r, anchor) if k in wires and types[k].dtype in ("bool", "int") else r
                for k, r in enumerate(refs)]

    def call_block(self, node: Node, refs: list[Ref]) -> Expr:
        lift = list(node.attrs["lift"])
        args = []
        ports = list(node.attrs["ports"])
        states = int(node.attrs.get("states", 0))  # a step module's repeated layers: each one's states
        if states:
            ports = ports[: len(ports) - states] + ports[len(ports) - states:] * int(node.attrs["repeat"])
        for ref, got, port in zip(refs, self.in_types(node), ports):
            args.append(align(ref, got, lift + list(port)))
        target = SelfAttr(node.attrs["instance"])
        if states:
            return call("rt.chain_states", target, lit(states), *args)
        callee = self.spec.blocks[node.attrs["block"]]
        if not all(o.lifted for o in callee.outputs) and (lift or any(t.lifted for t in node.types)):
            # an output the callee computes from its parameters alone gets the call's lifted dims
            # (ncd.ir.call_output_types): broadcast, a view
            grow = tuple(not o.lifted for o in callee.outputs)
            return call("rt.call_lifted", target, lit(bool(node.attrs.get("repeat"))), lit(grow),
                        lit(tuple(len(p) for p in ports)), *args)
        if node.attrs.get("repeat"):
            return call("rt.chain", target, *args)
        return Call(target, tuple(args))

    # ---------------------------------------------------------------- loops
    def _carry_init(self, node: Node, i: int, t: WireType) -> Expr:
        src = self.nodes[node.inputs[i]]
        if src.op == NUMBER_NODE:
            value = self.sizes.number(src.attrs["value"], src)
            sizes = call("rt.tuple_of", *(self.size_expr(a) for a in t.axes))
            anchor = self.anchor if self.anchor is not None else lit(None)
            return self.subst(call("rt.new_full", anchor, sizes, lit(float(value))))
        return self.result(node.inputs[i])

    def loop_scan(self, node: Node) -> Loop:
        region = node.regions[0]
        n_carry = len(node.attrs["carries"])
        arg_nodes = region.nodes[: len(region.args)]
        carry_types = [a.type for a in arg_nodes[:n_carry]]
        inits = [self._carry_init(node, i, t) for i, t in enumerate(carry_types)]
        body = self.stmts(region.nodes)
        emit_dims = [-len(t.axes) for t in node.types]
        loop = Loop(SCAN, node.id, region.args[:n_carry], inits, body, [self.result(r) for r in region.results],
                    length=self.subst(self.size_expr(node.attrs["axis"])), index=region.args[n_carry],
                    reverse=bool(node.attrs["reverse"]), emit_dims=emit_dims, n_carry=n_carry, node_id=node.id,
                    axis=str(node.attrs["axis"]))
        plan = self.plans.get((self.block.key, node.id))
        if plan is not None:
            loop.invariant = set(plan.invariant)
        if plan is not None and plan.backend != "sequential":
            loop.plan, loop.backend = plan, plan.backend
            loop.carry_sizes = [tuple(self.sizes.bound(a) or 0 for a in t.axes) for t in carry_types]
            defined = set(loop.args) | {loop.index} | set(_defined(body))
            free_refs, loop.self_reads = _free_refs(body, loop.results, defined)
            loop.captures = [(i, self.types[i][0].lifted, len(self.types[i][0].axes)) for i in free_refs
                             if i in self.types]
            if plan.kernel:
                loop.kernel = {name: self.result(i) for name, i in plan.kernel.items()}
                loop.kernel_ranks = {name: len(self.types[i][0].axes) for name, i in plan.kernel.items()}
                loop.state_free = set(plan.state_free)
            if plan.backend == "fused_rnn" and plan.cell is not None:
                reads = {plan.cell.input} | {r.node for g in plan.cell.gates
                                             for r in (*g.rec, *g.inp, *g.bias, *g.bias_h) if r.node}
                loop.cell_values = {i: self.result(i) for i in sorted(reads)}
                loop.cell_axes = {i: tuple(self.types[i][0].axes) for i in sorted(reads)}
        return loop

    def loop_repeat(self, node: Node) -> Loop:
        region = node.regions[0]
        body = self.stmts(region.nodes)
        return Loop(REPEAT, node.id, list(region.args), [self.result(i) for i in node.inputs], body,
                    [self.result(r) for r in region.results], length=lit(int(node.attrs["count"])), n_carry=len(region.args),
                    node_id=node.id)

    def loop_halting(self, node: Node) -> Loop:
        region = node.regions[0]
        n_carry = len(node.attrs["carries"])
        arg_nodes = region.nodes[: len(region.args)]
        carry_types = [a.type for a in arg_nodes[:n_carry]]
        inits = [self._carry_init(node, i, t) for i, t in enumerate(carry_types)]
        body = self.stmts(region.nodes)
        p_type = WireType(axes=tuple(node.attrs["halt_axes"]), lifted=True)
        weight_align = [align(Ref("act_weight"), p_type, t.axes) for t in carry_types]
        return Loop(HALTING, node.id, region.args[:n_carry], inits, body, [self.result(r) for r in region.results],
                    length=lit(int(node.attrs["max"])), index=region.args[n_carry], n_carry=n_carry,
                    eps=float(node.attrs["eps"]), mix=str(node.attrs["mix"]), weight_align=weight_align, node_id=node.id)


def is_state_segment(name: str) -> bool:
    """A scan's bound name usable in a state name: a plain identifier (no prime, no dot)."""
    return name.isidentifier() and name.isascii()


def _size_code(value: sympy.Expr, reads: dict[str, Expr]) -> Expr | None:
    """A size polynomial with whole coefficients (2·T + 1, T·H) as an Expr over input size reads;
    None for anything else (a quotient cannot be computed exactly from the sizes alone)."""
    if isinstance(value, sympy.Integer):
        return lit(int(value))
    if isinstance(value, sympy.Symbol):
        return reads.get(value.name)
    if isinstance(value, sympy.Pow) and isinstance(value.exp, sympy.Integer) and value.exp > 0:
        base = _size_code(value.base, reads)
        return None if base is None else BinOp("**", base, lit(int(value.exp)))
    if isinstance(value, (sympy.Add, sympy.Mul)):
        return _chain(value, [_size_code(a, reads) for a in value.args])
    return None


def _chain(value: sympy.Expr, parts: list[Expr | None]) -> Expr | None:
    """A sum or product of the parts' code, as ``value`` (a sympy Add or Mul) combines them."""
    if any(p is None for p in parts):
        return None
    out = parts[0]
    for p in parts[1:]:
        out = BinOp("+" if isinstance(value, sympy.Add) else "*", out, p)
    return out


def _number_code(value: sympy.Expr, reads: dict[str, Expr]) -> Expr | None:
    """A float formula in sizes (D^-0.5, 1 / (2·T)) as an Expr over input size reads; None for a
    function other than + · and powers."""
    if value.is_number:
        number = complex(value)
        return lit(number.real) if number.imag == 0 and math.isfinite(number.real) else None
    if isinstance(value, sympy.Symbol):
        return reads.get(value.name)
    if isinstance(value, sympy.Pow):
        base, exp = _number_code(value.base, reads), _number_code(value.exp, reads)
        return None if base is None or exp is None else BinOp("**", base, exp)
    if isinstance(value, (sympy.Add, sympy.Mul)):
        return _chain(value, [_number_code(a, reads) for a in value.args])
    return None


def _check_init(node: Node, args: tuple[float, ...]) -> InitDef:
    """The initialiser's row, once its arguments (now with every size bound) pass its checks and
    a float32 tensor can hold them."""
    span = node.loc.span if node.loc else None
    dist = node.attrs["dist"]
    row = INITIALISERS.get(dist)
    if row is None or len(args) != len(row.args):
        raise NcdError(f"unknown initialiser {dist}{args}", span, hint=f"one of {', '.join(INITIALISERS)}")
    limit = 3.0e38  # float32's range: parameters start in the default dtype
    if any(not math.isfinite(a) or abs(a) > limit for a in args):
        raise NcdError(f"{dist}{args} has an argument a float32 parameter cannot hold", span,
                       hint="initialiser arguments must be finite and below 3e38 in magnitude")
    problem = row.check(args) if row.check is not None else None
    if problem is not None:
        raise NcdError(problem[0], span, hint=problem[1])
    return row


def _defined(body: list[Stmt]):
    for stmt in body:
        if isinstance(stmt, Assign):
            yield stmt.target
        else:
            yield stmt.target
            yield from stmt.args
            if stmt.index:
                yield stmt.index
            yield from _defined(stmt.body)


def _exprs(body: list[Stmt]):
    for stmt in body:
        if isinstance(stmt, Assign):
            yield stmt.expr
        else:
            yield from stmt.inits
            yield from stmt.results
            yield from stmt.weight_align
            if stmt.length is not None:
                yield stmt.length
            yield from _exprs(stmt.body)


def _free_refs(body: list[Stmt], results: list[Expr], defined: set[str]) -> tuple[list[str], list[str]]:
    """Values a loop body reads from outside it, and the module attributes it reads."""
    refs: list[str] = []
    attrs: list[str] = []
    for expr in [*_exprs(body), *results]:
        for leaf in leaves(expr):
            if isinstance(leaf, Ref):
                if leaf.id not in defined and leaf.id not in refs and leaf.id != "act_weight":
                    refs.append(leaf.id)
            elif leaf.path not in attrs:
                attrs.append(leaf.path)
    return refs, attrs


def _reads(exprs) -> set[str]:
    return {leaf.id for e in exprs for leaf in leaves(e) if isinstance(leaf, Ref)}


def _prune_for_fused(body: list[Stmt], results: list[Expr]) -> list[Stmt]:
    """Drop what only a fused_rnn scan's step read and the fused operator does not: its input
    projection ``u = x @ W_ih + b`` computed before the loop, which torch's operator computes
    itself. Only those statements go, so nothing else a block computes changes."""
    fused = [s for s in body if isinstance(s, Loop) and s.backend == "fused_rnn" and s.cell_values]
    if not fused:
        return body
    candidates = set()
    for loop in fused:
        candidates |= set(_free_refs(loop.body, loop.results, set(loop.args) | {loop.index} | set(_defined(loop.body)))[0])
    kept = list(body)
    while True:
        needed = _reads(results)
        for stmt in kept:
            if isinstance(stmt, Assign):
                needed |= _reads([stmt.expr])
            elif stmt.backend == "fused_rnn" and stmt.cell_values:
                needed |= _reads([*stmt.cell_values.values(), *stmt.inits])
            else:
                needed |= _reads([*_exprs([stmt])])
        dead = [s for s in kept if isinstance(s, Assign) and s.target in candidates and s.target not in needed]
        if not dead:
            return kept
        for stmt in dead:
            candidates |= _reads([stmt.expr])
        kept = [s for s in kept if not any(s is d for d in dead)]


class _Subst(Fold[Expr]):
    """The lowering's fold: a read of a folded node becomes what it stands for."""

    def __init__(self, aliases: dict[str, Expr]) -> None:
        self.aliases = aliases

    def ref(self, e: Ref) -> Expr:
        return self.aliases.get(e.id, e)


def lower_spec(spec: SpecIR, plans: dict[str, Any] | None = None,
               fusion: FusionPlan | None = None, records: dict[str, list[Any]] | None = None) -> dict[str, Program]:
    """``plans``: (block key, scan node id) → the recurrence pass's ScanPlan (None: every scan
    sequential); ``fusion``: the fusion pass's plan (None: nothing fused); ``records``: block key →
    the caches and windows a prefill module returns (ncd/passes/step.py StepPlan.records)."""
    sizes = SizeTable(spec)
    fusion = fusion or FusionPlan()
    records = records or {}
    return {key: Lowering(spec, block, sizes, plans, fusion.of_block(key), records.get(key)).program()
            for key, block in spec.blocks.items()}
