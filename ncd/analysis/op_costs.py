"""The analyzer's walk: what each op of a spec costs (FLOPs forward and backward, saved
activations, memory traffic), over blocks, lifted axes, scans and repeats.

The analyzer walks the IR once as an abstract interpreter. Every value it meets carries the
storage it lives in (a token: views share their source's), its memory order (to tell when
``torch.einsum`` must copy an operand before its bmm), and whether it needs a gradient. Each op's
FLOPs and saved tensors come from its op-table entry (``OpDef.cost``, see ncd/ops/costing.py);
this file only adds them up over blocks, lifted (broadcast) axes, scans and repeats. A scan's
strategies are costed in scan_costs.py; the totals are summed up in report.py.

Everything is a sympy expression in the axis symbols (``SizeEnv``); numbers come from
substituting the bound sizes. The entry block is lifted over the batch axis ``B``.

Conventions: a multiply-add is 2 FLOPs; ``matmul_*`` counts contractions only (exactly what
``torch.utils.flop_counter.FlopCounterMode`` counts for the compiled module), ``flops_*`` is
everything; the backward pass computes the gradient of every parameter and, where
``input_grad``, of the entry's inputs; activation bytes are the distinct non-parameter storages
autograd saves, as ``torch.autograd.graph.saved_tensors_hooks`` sees them on the eager module.
"""
from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import sympy

from ncd.analysis.scan_costs import ScanCost, scan_cost
from ncd.analysis.sizes import SizeEnv
from ncd.errors import NcdError
from ncd.ir import (BROADCAST, CALL, INPUT, LOOPS, LOOP_INDEX, NUMBER_NODE, PARAM, REGION_ARG, REGION_ARGS, REPEAT,
                   SCAN, TAP, TUPLE_GET, WEIGHT_SOURCES, BlockIR, Node, SpecIR, WireType)
from ncd.ops import OPS, is_view
from ncd.ops.costing import Save, elementwise, numel
from ncd.passes.fusion import Fusion, cost as fused_cost, in_scope

DTYPE_BYTES = {"float32": 4, "fp32": 4, "float": 4, "bfloat16": 2, "bf16": 2, "float16": 2, "fp16": 2,
               "half": 2, "float64": 8, "fp64": 8, "double": 8}
KEYS = ("flops_fwd", "flops_bwd", "matmul_flops_fwd", "matmul_flops_bwd", "traffic_bytes")
DEFAULT_COST = elementwise(1)  # an op without a cost rule: one FLOP per output element


@dataclass
class Val:
    """What the analyzer knows of a value at run time (not its contents)."""

    type: WireType
    token: str | None  # the storage it lives in; None for Python scalars (number literals)
    layout: tuple[str, ...] | None  # memory order of its axes, "..." standing for the lifted dims
    grad: bool
    param: bool = False


@dataclass
class OpCost:
    path: str
    block: str
    id: str
    op: str
    name: str | None
    flops_fwd: sympy.Expr
    flops_bwd: sympy.Expr
    matmul_flops_fwd: sympy.Expr
    matmul_flops_bwd: sympy.Expr
    traffic_bytes: sympy.Expr


@dataclass
class Context:
    path: str
    block: BlockIR
    lift: tuple[str, ...]
    mult: sympy.Expr  # how many times this scope runs (loop lengths, repeats)
    values: dict[str, Any] = field(default_factory=dict)
    fusions: dict[str, Fusion] = field(default_factory=dict)  # the fusion pass's plan for this block


class Analyzer:
    def __init__(self, ir: SpecIR, sizes: Mapping[str, int] | None = None, *, dtype: str = "float32",
                 input_grad: bool = False, batch: str = "B", passes: Any) -> None:
        if dtype not in DTYPE_BYTES:
            raise NcdError(f"unknown dtype {dtype!r}", hint=f"choose one of {', '.join(sorted(DTYPE_BYTES))}")
        self.ir = ir
        self.size = SizeEnv(ir, sizes, batch)
        self.dtype = dtype
        self.bytes = DTYPE_BYTES[dtype]
        self.input_grad = input_grad
        self.ops: list[OpCost] = []
        self.scans: list[ScanCost] = []
        self.tokens: dict[str, sympy.Expr] = {}  # storage → bytes (all its copies across loop steps)
        self.saved: dict[str, str] = {}  # storage → the block path that first saved it
        self.blocks: dict[str, str] = {}  # path → block key
        self._fresh = itertools.count()
        self.muted = 0
        self.quiet_scans = 0  # > 0: scans are costed but not recorded again (a stack's later layers)
        self.plans = passes.scan_plans()  # the recurrence pass's, as the compiled module runs them
        self.fusion = passes.fusion  # the fusion pass's, as the torch lowering builds from

    # ------------------------------------------------------------------ sizes
    def numel(self, t: WireType, lift: tuple[str, ...]) -> sympy.Expr:
        return numel(t, self.sizer(lift))

    def sizer(self, lift: tuple[str, ...]):
        lifted = sympy.Mul(*[self.size(a) for a in lift]) if lift else sympy.Integer(1)
        return lambda axis: lifted if axis == "..." else self.size(axis)

    def elem_bytes(self, t: WireType) -> int:
        return {"float": self.bytes, "bool": 1, "int": 8}[t.dtype]

    def new(self, t: WireType, ctx: Context, *, grad: bool, layout: Any = None) -> Val:
        """A fresh storage, one per run of the scope (its bytes count every loop step's copy)."""
        token = f"s{next(self._fresh)}"
        self.tokens[token] = self.numel(t, ctx.lift) * self.elem_bytes(t) * ctx.mult
        if layout is None:
            layout = (("...",) if t.lifted else ()) + tuple(t.axes)
        return Val(t, token, tuple(layout), grad)

    # ------------------------------------------------------------------ entry
    def run(self) -> "Analyzer":
        """Walk the entry block (lifted over the batch axis) and everything it calls."""
        entry = self.ir.entry_block
        ctx = Context(entry.name, entry, (self.size.batch,), sympy.Integer(1))
        self.blocks[ctx.path] = entry.key
        args = [self.new(p.type, ctx, grad=self.input_grad) for p in entry.inputs]
        self.block(ctx, args)
        return self

    def block(self, ctx: Context, args: list[Val]) -> list[Val]:
        ctx.fusions = self.fusion.of_block(ctx.block.key)
        for node in ctx.block.nodes:
            if node.op == INPUT:
                ctx.values[node.id] = args[node.attrs["index"]]
        self.scope(ctx, ctx.block.nodes)
        return [ctx.values[r] for r in ctx.block.results]

    def scope(self, ctx: Context, nodes: list[Node]) -> None:
        fusions, absorbed = in_scope(ctx.fusions, nodes)
        for node in nodes:
            if node.op in (INPUT, REGION_ARG) or node.id in absorbed:
                continue
            if node.id in fusions:
                ctx.values[node.id] = self.fused(ctx, node, fusions[node.id])
                continue
            ctx.values[node.id] = self.node(ctx, node)

    def fused(self, ctx: Context, node: Node, fusion: Fusion) -> Val:
        """A pattern the fusion pass planned as one torch call (F.linear, SDPA): costed as that call."""
        ins = [_first(ctx.values[i]) for i in fusion.operands]
        node = _as_run(node, ins)
        rule = fused_cost(fusion, node, [v.type for v in ins], self.sizer(ctx.lift))
        grads = [v.grad for v in ins]
        out = self.outputs(ctx, node, ins, rule)
        self.account(ctx, node, ins, out, rule, grads, op=f"{node.op}→{fusion.kind}")
        return out[0]

    def arg(self, ctx: Context, node: Node, i: int) -> Val:
        value = ctx.values[node.inputs[i]]
        return value[0] if isinstance(value, list) else value

    # ------------------------------------------------------------------ one node
    def node(self, ctx: Context, node: Node) -> Any:
        op = node.op
        if op in (NUMBER_NODE, LOOP_INDEX):
            return Val(node.types[0] if node.types else WireType(), None, None, False)
        if op in WEIGHT_SOURCES:
            is_param = op == PARAM
            t = node.type
            token = f"{ctx.path}.{node.attrs['name']}"
            self.tokens.setdefault(token, self.numel(t, ()) * self.elem_bytes(t))
            return Val(t, token, tuple(t.axes), is_param, param=is_param)
        if op == TUPLE_GET:
            value = ctx.values[node.inputs[0]]
            return value[node.attrs["index"]] if isinstance(value, list) else value
        if op == CALL:
            return self.call(ctx, node)
        if op in LOOPS:
            return self.loop(ctx, node)
        if op == BROADCAST or op == TAP:
            src = self.arg(ctx, node, 0)  # rt.expand_core: the core axes grow, the lifted dims stay
            return Val(_lifted_as(node.type, src), src.token, src.layout, src.grad, src.param)
        opdef = OPS.get(op)
        if opdef is None:
            raise NcdError(f"internal: the analyzer has no rule for op {op}")
        ins = [self.arg(ctx, node, i) for i in range(len(node.inputs))]
        in_types = [v.type for v in ins]
        node = _as_run(node, ins)
        rule = (opdef.cost or DEFAULT_COST)(node, in_types, self.sizer(ctx.lift))
        grads = [v.grad for v in ins]
        out = self.outputs(ctx, node, ins, rule)
        self.account(ctx, node, ins, out, rule, grads)
        return out if len(node.types) > 1 else out[0]

    def outputs(self, ctx: Context, node: Node, ins: list[Val], rule: dict) -> list[Val]:
        """The values a node makes: fresh storages in the rule's memory order, or views."""
        grad = any(v.grad for v in ins) and node.type.dtype == "float" and rule.get("bwd", (1,)) != (0,)
        layout = rule.get("layout", "natural")
        if layout == "view":
            return [self.view(node, ins[0], t) for t in node.types]
        if layout == "follow":
            full = [v for v in ins if v.layout is not None and set(v.type.axes) == set(node.type.axes)
                    and v.type.lifted == node.type.lifted]
            return [self.new(node.type, ctx, grad=grad, layout=full[0].layout if full else None)]
        if isinstance(layout, tuple):
            return [self.new(node.type, ctx, grad=grad, layout=layout)]
        return [self.new(t, ctx, grad=grad) for t in node.types]

    def view(self, node: Node, src: Val, t: WireType) -> Val:
        """A view row's value: the source's storage, its memory order updated by the row's
        ``view_layout`` (a fresh storage where that says the view copies)."""
        layout = src.layout
        t = _lifted_as(t, src)
        row = OPS.get(node.op)
        if layout is not None and row is not None and row.view_layout is not None:
            layout = row.view_layout(layout, node.attrs, src.type.axes, t.axes)
            if layout is None:
                return Val(t, f"s{next(self._fresh)}", (("...",) if t.lifted else ()) + t.axes, src.grad)
        return Val(t, src.token, layout, src.grad, src.param)

    def account(self, ctx: Context, node: Node, ins: list[Val], out: list[Val], rule: dict,
                grads: list[bool], op: str | None = None) -> None:
        if self.muted:
            return
        mult = ctx.mult
        flops = sympy.sympify(rule.get("flops", 0))
        matmul = sympy.sympify(rule.get("matmul", 0))
        bwd = rule.get("bwd", ())
        matmul_bwd = rule.get("matmul_bwd", ())
        flops_bwd = sum((sympy.sympify(b) for b, g in zip(bwd, grads) if g), sympy.Integer(0))
        mm_bwd = sum((sympy.sympify(b) for b, g in zip(matmul_bwd, grads) if g), sympy.Integer(0))
        for which, extra in rule.get("shared_bwd", ()):  # one gradient serving several inputs
            if any(grads[i] for i in which):
                mm_bwd += extra
        traffic = sympy.Integer(0)
        if not is_view(node.op):
            seen = set()
            for v in (*ins, *out):
                if v.token is not None and v.token not in seen:
                    seen.add(v.token)
                    traffic += self.numel(v.type, ctx.lift if v.type.lifted else ()) * self.elem_bytes(v.type)
        self.ops.append(OpCost(ctx.path, ctx.block.key, node.id, op or node.op, node.name,
                               (flops + matmul) * mult, (flops_bwd + mm_bwd) * mult, matmul * mult,
                               mm_bwd * mult, traffic * mult))
        if not any(grads):
            return
        for save in rule.get("saves", ()):
            self.save(ctx, node, save, ins, out, grads)

    def save(self, ctx: Context, node: Node, save: Save, ins: list[Val], out: list[Val],
             grads: list[bool]) -> None:
        when = save.when
        if isinstance(when, tuple):  # ("scalar", i) / ("tensor", i): input i a Python number or not
            kind, i = when
            if i >= len(ins) or (kind == "scalar") != (ins[i].token is None):
                return
        elif when != "any" and not (when < len(grads) and grads[when]):
            return
        if save.what == "new":
            token = f"s{next(self._fresh)}"
            width = {"int": 8, "bool": 1}.get(save.dtype or "float", self.bytes)  # int64 indices, masks
            self.tokens[token] = sympy.sympify(save.numel) * width * ctx.mult
        else:
            values = ins if save.what == "in" else out
            if save.index >= len(values):
                return
            value = values[save.index]
            if value.token is None:
                return
            token = value.token
            copied = save.groups is not None and not viewable(value.layout, save.groups)
            if value.param and not copied:  # parameters are not activations; a copy of one is
                return
            if copied:
                token = f"s{next(self._fresh)}"  # the op copies it into the layout it needs
                t = value.type
                self.tokens[token] = self.numel(t, ctx.lift if t.lifted else ()) * self.elem_bytes(t) * ctx.mult
        self.saved.setdefault(token, ctx.path)

    # ------------------------------------------------------------------ blocks
    def call(self, ctx: Context, node: Node) -> Any:
        block = self.ir.blocks[node.attrs["block"]]
        lift_axes = tuple(node.attrs.get("lift") or ())
        args = [self.arg(ctx, node, i) for i in range(len(node.inputs))]
        lifted_in = any(v.type.lifted for v in args)
        lift = (ctx.lift if lifted_in else ()) + lift_axes
        repeat = node.attrs.get("repeat") or 1
        path = f"{ctx.path}/{node.attrs['instance']}"
        self.blocks[path] = block.key
        inner = Context(path, block, lift, ctx.mult)
        callee_args = []
        for v, port in zip(args, block.inputs):
            t = port.type
            if t.lifted and not v.type.lifted:
                # a tensor of core axes only (a parameter, a scan's first state from a number):
                # the callee runs on it unlifted, as torch does, also where the call is lifted
                # over axes the other inputs have (ops.layout.align leaves it without lead dims)
                t = WireType(axes=t.axes, lifted=False, dtype=t.dtype)
            layout = _enter_layout(v.layout, lift_axes) if t.lifted else v.layout
            callee_args.append(Val(t, v.token, layout, v.grad, v.param))
        results = self.block(inner, callee_args)
        if repeat > 1:
            results = self.later_layers(inner, results, repeat)
        outs = []
        for r, t in zip(results, node.types):
            if t.lifted and not r.type.lifted and not lift_axes:  # made of such tensors only
                t = WireType(axes=t.axes, lifted=False, dtype=t.dtype)
            layout = _leave_layout(r.layout, lift_axes) if t.lifted and r.layout is not None else r.layout
            outs.append(Val(t, r.token, layout, r.grad, r.param))
        return outs if len(node.types) > 1 else outs[0]

    def later_layers(self, first: Context, results: list[Val], repeat: int) -> list[Val]:
        """Layers 2..N of a ``× N`` stack (rt.chain: each layer's input is the previous one's
        output), costed apart from the first, whose input is the caller's: an input of the
        data needs no gradient in layer 1 but does from layer 2 on, and each later layer's
        input is a storage of its own (the previous layer's output, one per layer)."""
        inner = Context(first.path, first.block, first.lift, first.mult * (repeat - 1))
        args = [Val(r.type, f"s{next(self._fresh)}", r.layout, r.grad) for r in results]
        for v, r in zip(args, results):
            self.tokens[v.token] = self.numel(r.type, inner.lift) * self.elem_bytes(r.type) * inner.mult
        self.quiet_scans += 1  # a scan in the block is recorded once, by the first layer
        later = self.block(inner, args)
        self.quiet_scans -= 1
        for arg, res in zip(args, later):  # layer k's input is layer k-1's output, saved once
            if arg.token in self.saved and res.token in self.saved:
                del self.saved[arg.token]
        return later

    # ------------------------------------------------------------------ loops
    def loop(self, ctx: Context, node: Node) -> Any:
        region = node.regions[0]
        if node.op == SCAN:
            length = self.size(node.attrs["axis"])
        elif node.op == REPEAT:
            length = sympy.Integer(int(node.attrs["count"]))
        else:
            length = sympy.Integer(int(node.attrs["max"]))
        inits = [self.arg(ctx, node, i) for i in range(len(node.inputs))]
        n_carry = len(inits)
        arg_nodes = {n.id: n for n in region.nodes if n.op in REGION_ARGS}
        # The step's statements that depend on neither the state nor the step (the recurrence
        # pass's ``invariant``) run once, before the loop, as the torch backend runs them
        # (backends/pytorch/module.py ``_hoisted``): costed once, their storages saved once.
        plan = self.plans.get((ctx.block.key, node.id)) if node.op == SCAN else None
        invariant = set(plan.invariant) if plan is not None else set()
        step_nodes = [n for n in region.nodes if n.id not in invariant]
        if invariant:
            before = Context(ctx.path, ctx.block, ctx.lift, ctx.mult, ctx.values, ctx.fusions)
            self.scope(before, [n for n in region.nodes if n.id in invariant])
        inner = Context(ctx.path, ctx.block, ctx.lift, ctx.mult * length, ctx.values, ctx.fusions)
        # Which carries need a gradient, and which have lifted dims, from the second step on:
        # step t's state is step t-1's result, so start from what the first step (state = the
        # initial values) makes, then widen to a fixed point (an upper bound of every later
        # step's). A carry whose start needs a gradient but which the step re-binds to one that
        # does not (a decoder's input fed from the data after a learned start) needs none after
        # the first step; a carry that never meets the lifted dims (a state driven by parameters
        # only) stays of its core axes at every step, as torch runs it.
        self.muted += 1
        flags = self._carry_flags(inner, region, arg_nodes, ([v.grad for v in inits],
                                  [v.token is not None and v.type.lifted for v in inits]), n_carry, step_nodes)
        for _ in range(2 * n_carry + 1):
            got = self._carry_flags(inner, region, arg_nodes, flags, n_carry, step_nodes)
            new = tuple([f or g for f, g in zip(old, now)] for old, now in zip(flags, got))
            if new == flags:
                break
            flags = new
        self.muted -= 1
        grads, lifted = flags
        # The first step is costed apart: its state is the initial value (which may need no
        # gradient), and a carry starting from a number is a tensor of its core axes only
        # (rt.new_full), so that step runs unlifted wherever the state flows.
        first = Context(ctx.path, ctx.block, ctx.lift, ctx.mult, ctx.values, ctx.fusions)
        self._bind_args(first, region, arg_nodes, grads, n_carry, inits=inits)
        self.scope(first, step_nodes)
        first_lifted = [_first(first.values[r]).type.lifted for r in region.results]
        inner.mult = ctx.mult * (length - 1)
        main_ops = len(self.ops)
        args = self._bind_args(inner, region, arg_nodes, grads, n_carry, lifted=lifted)
        self.scope(inner, step_nodes)
        steady = [o.flops_fwd / inner.mult for o in self.ops[main_ops:]]  # one lifted step
        inner.mult = ctx.mult * length
        results = [_first(inner.values[r]) for r in region.results]
        for arg, res in zip(args, results[:n_carry]):  # step t's argument is step t-1's result
            if arg.token in self.saved and res.token in self.saved:
                del self.saved[arg.token]
        if node.op == SCAN and not self.muted and not self.quiet_scans:
            self.scan_record(ctx, node, length, args, steady)
        outs = []
        if node.op == SCAN:
            for t, r, at_first in zip(node.types, results[n_carry:], first_lifted[n_carry:]):
                if not (r.type.lifted or at_first):  # every step's emit of core axes only: so is the stack
                    t = WireType(axes=t.axes, lifted=False, dtype=t.dtype)
                outs.append(self.new(t, ctx, grad=r.grad))
        elif node.op == REPEAT:
            outs = [Val(r.type, r.token, r.layout, r.grad) for r in results[:n_carry]]
        else:
            outs = [self.new(t, ctx, grad=True) for t in node.types]
        return outs if len(node.types) > 1 else (outs[0] if outs else None)

    def _carry_flags(self, inner: Context, region, arg_nodes, flags: tuple[list[bool], list[bool]],
                     n_carry: int, step_nodes: list[Node]) -> tuple[list[bool], list[bool]]:
        """(which of a step's carried results need a gradient, which have lifted dims), given
        ``flags``, the same two for its carries."""
        grads, lifted = flags
        self._bind_args(inner, region, arg_nodes, grads, n_carry, lifted=lifted)
        self.scope(inner, step_nodes)
        results = [_first(inner.values[r]) for r in region.results[:n_carry]]
        return [r.grad for r in results], [r.type.lifted for r in results]

    def _bind_args(self, inner: Context, region, arg_nodes, grads, n_carry, inits=None,
                   lifted: list[bool] | None = None) -> list[Val]:
        """Bind a step's arguments: to the initial values (``inits``, the first step) or to fresh
        storages of a later step's carries (``grads``, ``lifted``: which need a gradient, which
        have the lifted dims; None: all that are declared lifted)."""
        args = []
        for i, arg_id in enumerate(region.args):
            node = arg_nodes.get(arg_id)
            if node is None or node.op == LOOP_INDEX or i >= n_carry:
                inner.values[arg_id] = Val(WireType(), None, None, False)
                continue
            t = node.type
            if inits is not None and inits[i].token is not None:
                init = inits[i]  # a parameter's (or a formula of parameters') state has no lifted dims
                value = Val(WireType(axes=t.axes, lifted=t.lifted and init.type.lifted, dtype=t.dtype),
                            init.token, init.layout, init.grad, init.param)
            elif inits is not None:
                value = self.new(WireType(axes=t.axes, lifted=False, dtype=t.dtype), inner, grad=False)
            else:
                keep = t.lifted and (lifted is None or lifted[i])
                value = self.new(WireType(axes=t.axes, lifted=keep, dtype=t.dtype), inner, grad=grads[i])
            inner.values[arg_id] = value
            args.append(value)
        return args

    def scan_record(self, ctx: Context, node: Node, length, args: list[Val], steady: list) -> None:
        state = sum((self.numel(a.type, ctx.lift) for a in args), sympy.Integer(0))
        lifted = sympy.Mul(*[self.size(a) for a in ctx.lift]) if ctx.lift else sympy.Integer(1)
        self.scans.append(scan_cost(ctx.path, node, length, state, sympy.expand(_sum(steady)), lifted,
                                    self.plans.get((ctx.block.key, node.id))))


# ---------------------------------------------------------------------- helpers
def viewable(layout: tuple[str, ...] | None, groups: tuple[tuple[str, ...], ...]) -> bool:
    """Whether reshaping a tensor stored in ``layout`` order into ``groups`` is a view (no copy)."""
    if layout is None:
        return False
    for group in groups:
        if not group:
            continue
        at = [layout.index(a) for a in group if a in layout]
        if len(at) != len(group):
            return False
        if at != list(range(at[0], at[0] + len(at))):
            return False
    return True


def _enter_layout(layout, lift_axes: tuple[str, ...]):
    """A caller's memory order seen from a callee lifted over ``lift_axes`` (they join "...")."""
    if layout is None:
        return None
    lead = [a for a in layout if a == "..." or a in lift_axes]
    want = [a for a in ("...", *lift_axes) if a in lead]
    at = [layout.index(a) for a in lead]
    if lead != want or (at and at != list(range(at[0], at[0] + len(at)))):
        return None
    rest = [a for a in layout if a not in lead]
    return ("...", *rest) if lead else tuple(rest)


def _leave_layout(layout, lift_axes: tuple[str, ...]):
    out = []
    for a in layout:
        out.extend(("...", *lift_axes) if a == "..." else (a,))
    return tuple(out)


def _lifted_as(t: WireType, src: Val) -> WireType:
    """``t`` without the lifted dims where ``src``, the value it is made from, has none."""
    return t if src.type.lifted or not t.lifted else WireType(axes=t.axes, lifted=False, dtype=t.dtype)


def _as_run(node: Node, ins: list[Val]) -> Node:
    """The node as torch runs it: where every operand is a tensor of core axes only (a first scan
    step from a zero state, a state driven by parameters only), so are its results."""
    tensors = [v for v in ins if v.token is not None]
    if tensors and not any(v.type.lifted for v in tensors) and any(t.lifted for t in node.types):
        return node.model_copy(update={"types": [WireType(axes=t.axes, lifted=False, dtype=t.dtype)
                                                 for t in node.types]})
    return node


def _first(value):
    return value[0] if isinstance(value, list) else value


def _sum(items) -> sympy.Expr:
    return sum(items, sympy.Integer(0))
