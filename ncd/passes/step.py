"""The step pass: a spec's IR → the IR of one position of it, for decoding token by token.

Why an IR → IR transform: the step is an ordinary spec IR (the scanned axis removed, every scan's
carries turned into block inputs and outputs), so the in-process backend and the emitter compile
it unchanged, and the emitted step module needs no ncd, like the full one.

What changes, block by block (those whose own wires carry the step axis ``T``):
- ``T`` leaves every wire type; a call lifted over ``T`` is no longer lifted over it.
- A scan over ``T`` at a block's top level is inlined: its carries become *state* inputs, their
  new values state outputs (after the block's own outputs), its emits the scan's value, and
  ``u[t]`` (the select at the step index) the wire ``u`` itself.
- A call to a block that holds states passes them in and gets them back; the state names are
  the full module's final-state names (docs/language.md, "State in and out"): the dotted path
  of the instance holding the scan, then the carry's name (``fwd.h`` / ``scan1.h`` when the block
  holds several scans).
Everything that reads other positions of ``T`` — a reverse scan, a reduction or contraction over
``T``, a select at a fixed position, a slice, a reshape or concat along it, a convolution or pool
over it, the step index used as a number — has no step form: an NcdError at its op, with a hint.
"""
from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any, Literal

from pydantic import BaseModel, Field

from ncd.errors import NcdError
from ncd.ir import (BROADCAST, CALL, INPUT, NUMBER_NODE, REGION_ARGS, SCAN, TUPLE_GET, WEIGHT_SOURCES, AxisDef,
                   BlockIR, Node, Port, Region, SpecIR, WireType, walk)
from ncd.ops import OPS, role
from ncd.ops.base import ADD, CHOOSE, COMPARISON, DIV, MUL, PICK, POSITION, SUB

_SEGMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*'*\Z")


class StateSlot(BaseModel):
    """One state of the step module: its name, its core axes at the entry (heads a call lifts
    over lead) and how it starts: a number (``init``), or a weight of the module (``init_weight``,
    its dotted path). A ``cache`` (attention's keys or values so far) grows by one along
    ``grow`` each step and starts empty; a ``window`` (a causal convolution's last inputs) starts
    at zeros, as the convolution's left padding."""

    name: str
    axes: tuple[str, ...]
    kind: Literal["carry", "cache", "window"] = "carry"
    init: str | None = None
    init_weight: str | None = None
    dtype: Literal["float", "bool", "int"] = "float"
    grow: str | None = None  # cache: the axis it grows along (T'; its size is the positions so far)
    own: int = 0  # how many of ``axes`` are the carry's own (the rest: heads a call lifts it over)


class Record(BaseModel):
    """Where the full module holds a cache's or a window's value after a whole prompt, so a
    prefill (backends/pytorch/step.py) can return it: a top-level value of a block of the full
    IR, along ``dim`` (negative, counted from its last axis) the step axis. A cache is the value
    itself (every position so far); a window its last ``width`` positions, zeros before the first."""

    name: str  # the state's name within its block (``k``, ``y.window``)
    node: str  # the full IR's node whose value it is (a cache: the renamed wire; a window: the conv's input)
    dim: int
    width: int = 0  # 0: a cache; else a window's length


class StepPlan(BaseModel):
    """The step IR and how its entry's extra ports map to named states."""

    ir: SpecIR
    axis: str
    n_inputs: int  # the spec's own inputs; the states follow, in ``states`` order
    n_outputs: int  # the spec's own outputs; the new states follow
    states: list[StateSlot] = Field(default_factory=list)
    records: dict[str, list[Record]] = Field(default_factory=dict)  # full IR block key → its caches and windows


def step_axis(ir: SpecIR, axis: str | None = None) -> str:
    """The axis a step advances along: ``axis`` if given, else the one every scan over an axis
    of the entry's inputs scans (a spec without such scans: ``T`` when the entry has it)."""
    entry = ir.entry_block
    entry_axes = {a for p in entry.inputs for a in p.type.axes}
    if axis is not None:
        if axis not in entry_axes:
            raise NcdError(f"the entry block {entry.name} has no input axis {axis} to step along",
                           entry.loc.span if entry.loc else None,
                           hint=f"its inputs' axes: {', '.join(sorted(entry_axes)) or 'none'}")
        return axis
    scanned = sorted({n.attrs["axis"] for b in ir.blocks.values() for n in walk(b.nodes) if n.op == SCAN}
                     & entry_axes)
    if len(scanned) == 1:
        return scanned[0]
    if not scanned and "T" in entry_axes:
        return "T"
    axes = ", ".join(sorted(entry_axes)) or "none"
    raise NcdError(f"cannot tell which axis the step module advances along (scanned: {', '.join(scanned) or 'none'})",
                   entry.loc.span if entry.loc else None,
                   hint=f"name one of the entry's input axes ({axes}): module.step_module(axis=...) or --step-axis; "
                        "a spec with no sequence axis has nothing to step")


def step_plan(ir: SpecIR, axis: str | None = None) -> StepPlan:
    """The step IR of ``ir``'s entry block (unverified: the pipeline verifies it)."""
    t = step_axis(ir, axis)
    stepper = _Stepper(ir, t)
    block, slots = stepper.block(ir.entry)
    blocks = _reachable({**ir.blocks, **stepper.done}, ir.entry)
    primes = {a for a in ir.axes if a == t or a.rstrip("'") == t}
    bindings = {k: v for k, v in ir.bindings.items() if k not in primes}
    axes = dict(ir.axes)
    if stepper.cache_axes_used:
        axes[stepper.cache_axis] = AxisDef(name=stepper.cache_axis)
        axes[stepper.unit_axis] = AxisDef(name=stepper.unit_axis, size="1")
    for name, size in stepper.extra_axes.items():
        axes[name] = AxisDef(name=name, size=size)
    step_ir = ir.model_copy(update={"blocks": blocks, "entries": [], "bindings": bindings, "axes": axes})
    entry = ir.entry_block
    states = [StateSlot(name=s.name, axes=s.out_axes, kind=s.kind, init=s.init, init_weight=s.init_weight,  # type: ignore[arg-type]
                        dtype=s.dtype, grow=s.grow, own=s.own)  # type: ignore[arg-type]
              for s in slots]
    records = {key: rows for key, rows in stepper.records.items() if rows}
    return StepPlan(ir=step_ir, axis=t, n_inputs=len(entry.inputs), n_outputs=len(entry.outputs), states=states,
                    records=records)


class _Slot:
    """A state of one block: its name within the block, core axes, start, and the ids of its
    input node and of the value that leaves as its output."""

    def __init__(self, name: str, axes: tuple[str, ...], init: str | None, init_weight: str | None,
                 dtype: str, in_id: str, out_id: str, kind: str = "carry",
                 out_axes: tuple[str, ...] | None = None, grow: str | None = None) -> None:
        self.name, self.axes, self.init, self.init_weight, self.dtype = name, axes, init, init_weight, dtype
        self.in_id, self.out_id, self.kind, self.grow = in_id, out_id, kind, grow
        self.own = len(axes)
        self.out_axes = axes if out_axes is None else out_axes  # a cache leaves one longer, along the prime


def _err(message: str, node: Node | None, hint: str) -> NcdError:
    return NcdError(message, node.loc.span if node is not None and node.loc else None, hint=hint)


NONCAUSAL_HINT = ("a step module advances one position at a time, so each output may depend only on this "
                  "and earlier positions; run this spec whole (module(x)) instead")
MASK_HINT = ("mask the scores causally, so position t sees t' <= t only: "
             "softmax(where(idx(T') <= idx(T), s, -inf), over = T')")


class _Stepper:
    def __init__(self, ir: SpecIR, axis: str) -> None:
        self.ir = ir
        self.t = axis
        self.done: dict[str, BlockIR] = {}
        self.slots: dict[str, list[_Slot]] = {}
        self.records: dict[str, list[Record]] = {}
        self.active: set[str] = set()
        self.cache_axis = _free_name(ir, f"{axis}_cache")  # a cache's length before this step
        self.unit_axis = _free_name(ir, f"{axis}_now")  # size 1: this step's entry of a cache
        self.cache_axes_used = False
        self.extra_axes: dict[str, str] = {}  # causal convolutions' window axes → their sizes
        from ncd.sizes import AxisSizes

        self.sizes = AxisSizes.of(ir)

    def axis(self, base: str, size: int) -> str:
        name = _free_name(self.ir, base)
        while name in self.extra_axes:
            name = _free_name(self.ir, name + "_")
        self.extra_axes[name] = str(size)
        return name

    def mentions(self, key: str) -> bool:
        """Whether block ``key`` has the step axis on one of its own wires."""
        block = self.ir.blocks[key]
        return any(self.t in p.type.axes for p in block.inputs) or any(
            self.t in ty.axes for n in walk(block.nodes) for ty in n.types)

    def block(self, key: str) -> tuple[BlockIR, list[_Slot]]:
        if key in self.done:
            return self.done[key], self.slots[key]
        if key in self.active:
            raise NcdError(f"block {key} calls itself")
        self.active.add(key)
        stepper = _BlockStep(self, self.ir.blocks[key])
        stepped, slots = stepper.run()
        self.active.discard(key)
        self.done[key], self.slots[key], self.records[key] = stepped, slots, stepper.records
        return stepped, slots


class _BlockStep:
    """The step form of one block."""

    def __init__(self, stepper: _Stepper, block: BlockIR) -> None:
        self.s = stepper
        self.t = stepper.t
        self.block = block
        self.taken = {n.id for n in walk(block.nodes)}
        self.nodes = {n.id: n for n in walk(block.nodes)}
        self.alias: dict[str, str] = {}  # ids replaced by another id (region args → state inputs)
        self.emits: dict[str, list[str]] = {}  # a multi-emit scan's id → its emits' ids
        self.index_ids: set[str] = set()  # step indices of inlined scans over T
        self.state_ports: list[Port] = []
        self.state_nodes: list[Node] = []
        self.slots: list[_Slot] = []
        self.records: list[Record] = []  # this block's own caches and windows, as the full module holds them
        self.port_names = {p.name for p in block.inputs}
        top_scans = [n for n in block.nodes if n.op == SCAN]
        self.scan_prefix = _prefixes(top_scans, {i.name for i in block.instances})
        from ncd.state import instance_labels

        taken = {(self.scan_prefix[n.id] or f"{c}.").split(".")[0] for n in top_scans for c in n.attrs["carries"]}
        self.labels = instance_labels([i.name for i in block.instances], taken)  # hidden instances' names in states
        self.called: dict[str, int] = {}
        for n in walk(block.nodes):
            if n.op == CALL:
                self.called[n.attrs["instance"]] = self.called.get(n.attrs["instance"], 0) + 1
        self.types: dict[str, list[WireType]] = {}  # the step types of what is emitted so far
        self.taint: dict[str, str] = {}  # values along a cache axis: "open" (later positions too), "-oo" / "0" (masked)
        self.primes: set[str] = set()  # the cache axes (T', T'') made so far
        self.masks, self.dead = _causal_masks(block, self.t)
        self.cache_count = 0

    # ------------------------------------------------------------------ helpers
    def drop(self, ty: WireType) -> WireType:
        return ty.model_copy(update={"axes": tuple(a for a in ty.axes if a != self.t)})

    def fresh(self, base: str) -> str:
        n = 1
        while f"{base}_s{n}" in self.taken:
            n += 1
        self.taken.add(f"{base}_s{n}")
        return f"{base}_s{n}"

    def port_name(self, base: str) -> str:
        name = re.sub(r"[^A-Za-z0-9_]", "_", base) + "_state"
        n, out = 2, re.sub(r"[^A-Za-z0-9_]", "_", base) + "_state"
        while out in self.port_names:
            out, n = f"{name}{n}", n + 1
        self.port_names.add(out)
        return out

    def ref(self, node_id: str) -> str:
        return self.alias.get(node_id, node_id)

    def state_input(self, axes: tuple[str, ...], dtype: str, label: str, loc: Any) -> str:
        index = len(self.block.inputs) + len(self.state_ports)
        port = Port(name=self.port_name(label), type=WireType(axes=axes, lifted=True, dtype=dtype))  # type: ignore[arg-type]
        node_id = self.fresh(re.sub(r"[^A-Za-z0-9_]", "_", label) + "_in")
        self.state_ports.append(port)
        self.state_nodes.append(Node(id=node_id, op=INPUT, attrs={"index": index}, types=[port.type], loc=loc,
                                     name=port.name))
        return node_id

    # ------------------------------------------------------------------ the block
    def run(self) -> tuple[BlockIR, list[_Slot]]:
        block = self.block
        body = self.scope(block.nodes, in_loop=False)
        inputs = [n for n in body if n.op == INPUT]
        rest = [n for n in body if n.op != INPUT]
        nodes = inputs + self.state_nodes + rest
        results = [self.ref(r) for r in block.results] + [s.out_id for s in self.slots]
        outputs = [self.drop(o) for o in block.outputs] + [
            WireType(axes=s.out_axes, lifted=True, dtype=s.dtype) for s in self.slots]  # type: ignore[arg-type]
        stepped = block.model_copy(update={
            "inputs": [Port(name=p.name, type=self.drop(p.type)) for p in block.inputs] + self.state_ports,
            "outputs": outputs, "nodes": nodes, "results": results})
        stepped.__dict__.pop("graph", None)
        return stepped, self.slots

    def scope(self, nodes: Iterable[Node], in_loop: bool) -> list[Node]:
        out: list[Node] = []
        for node in nodes:
            out.extend(self.node(node, in_loop))
        return out

    def node(self, node: Node, in_loop: bool) -> list[Node]:
        if node.id in self.dead:
            return []
        made = self.node_(node, in_loop)
        for n in made:
            self.types[n.id] = n.types
        if node.id not in self.taint:
            self.track(node)
        return made

    def track(self, node: Node) -> None:
        """Whether a value along a cache axis still holds later positions' entries (``open``), or is
        masked to a value the reduction that consumes it ignores; a reduction of an open one is an
        error (a non-causal attention)."""
        inputs = [self.taint.get(i) for i in node.inputs]
        if not any(inputs):
            return
        op, attrs = node.op, node.attrs
        row = OPS.get(op)
        masked = row.masked if row is not None else None
        along = [p for p in self.primes if _uses_axis(op, attrs, p)]
        out_axes = {a for ty in node.types for a in ty.axes}
        if along:
            # the row's masked.ignores: the mask value that leaves this reduction exact (a
            # product, a contraction, ignores it in either factor)
            need = masked.ignores if masked is not None else None
            product = row is not None and row.algebra.linear == "product"
            ok = need is not None and (need in inputs if product else inputs[0] == need)
            if not ok:
                raise _err(f"{_what(op)} runs along {along[0]} over every position, later ones too: a step has "
                           "not seen them", node, MASK_HINT)
            if masked is not None and masked.gives is not None:  # softmax keeps the axis: its masked entries
                self.taint[node.id] = masked.gives
            return
        if not (out_axes & self.primes):
            return
        arith = row.arith if row is not None else None
        if masked is not None and masked.maps is not None and inputs[0] == masked.maps[0]:
            self.taint[node.id] = masked.maps[1]  # exp(-inf) = 0
        elif (arith == MUL and "0" in inputs) or (arith == DIV and inputs[0] == "0"):
            self.taint[node.id] = "0"
        elif arith in (ADD, SUB) and "-oo" in inputs and "0" not in inputs:
            self.taint[node.id] = "-oo"
        elif row is not None and row.relabels and inputs[0]:
            self.taint[node.id] = inputs[0]
        else:
            self.taint[node.id] = "open"

    def node_(self, node: Node, in_loop: bool) -> list[Node]:
        op, t = node.op, self.t
        row = OPS.get(op)
        if node.id in self.masks:
            return self.mask(node)
        if row is not None and row.relabels and node.attrs.get("src") == t:  # x[T as T']: the cache
            return self.cache(node, in_loop)
        if op == SCAN and node.attrs.get("axis") == t:
            return self.inline_scan(node, in_loop)
        if (row is not None and row.window and node.attrs.get("padding") == "causal"
                and node.attrs["over"]["src"] == [t]):
            return self.window(node, in_loop)
        inputs = [self.ref(i) for i in node.inputs]
        types = [self.drop(ty) for ty in node.types]
        attrs = dict(node.attrs)
        picks_t = row is not None and row.role == PICK and attrs.get("axis") == t  # x[t]
        if any(i in self.index_ids for i in node.inputs) and not picks_t:
            raise _err(f"the step index of the scan over {t} is used as a number here, which the step module "
                       "does not track yet", node, "compute it outside the scan (idx(T) is not steppable either) "
                       "or run the spec whole")
        if picks_t:
            if len(node.inputs) == 2 and node.inputs[1] in self.index_ids:
                return [Node(id=node.id, op="annotate", inputs=[inputs[0]], attrs={"axes": list(types[0].axes)},
                             types=types, loc=node.loc, name=node.name)]
            raise _err(f"this selects one fixed position of {t}, which a step has not seen yet (or no longer holds)",
                       node, NONCAUSAL_HINT)
        if op == TUPLE_GET and node.inputs[0] in self.emits:
            src = self.emits[node.inputs[0]][attrs["index"]]
            return [Node(id=node.id, op="annotate", inputs=[src], attrs={"axes": list(types[0].axes)},
                         types=types, loc=node.loc, name=node.name)]
        if row is not None and row.relabels and "axes" in attrs:  # x : [T, D] lists the axes: T leaves
            attrs["axes"] = [a for a in attrs["axes"] if a != t]
        elif op == CALL:
            return self.call(node, inputs, types, attrs, in_loop)
        elif op == SCAN and node.attrs.get("reverse") and t in _axes_of(node):
            raise _err(f"a reverse scan reads positions of {t} after this one", node, NONCAUSAL_HINT)
        elif row is not None and row.role == POSITION and attrs.get("axis") == t:
            raise _err(f"idx({t}), the position along {t}: a step module knows it only inside a causal mask "
                       f"(it does not count positions)", node,
                       MASK_HINT + f"; a position signal can be an input of the spec instead")
        elif _uses_axis(op, attrs, t):
            raise _err(f"{_what(op)} acts along {t}, which reads positions of {t} after this one", node,
                       NONCAUSAL_HINT)
        regions = [self.region(r) for r in node.regions]
        return [node.model_copy(update={"inputs": inputs, "types": types, "attrs": attrs, "regions": regions})]

    def region(self, region: Region) -> Region:
        nodes = self.scope(region.nodes, in_loop=True)
        stepped = region.model_copy(update={"nodes": nodes, "results": [self.ref(r) for r in region.results]})
        stepped.__dict__.pop("graph", None)
        return stepped

    # ------------------------------------------------------------------ attention: caches and masks
    def cache(self, node: Node, in_loop: bool) -> list[Node]:
        """``v[T as T']``: the values of every position so far, a state that grows by this step's."""
        t, dst = self.t, node.attrs["dst"]
        if dst == t or dst.rstrip("'") != t:
            raise _err(f"this renames the step axis {t} to {dst}, which holds every position at once", node,
                       NONCAUSAL_HINT)
        if in_loop:
            raise _err(f"a second wire {dst} of the step axis inside a loop has no single cache to carry", node,
                       "compute it at the block's top level")
        s = self.s
        s.cache_axes_used = True
        src = self.ref(node.inputs[0])
        out = node.types[0]
        grown = tuple(out.axes)
        cached = tuple(s.cache_axis if a == dst else a for a in grown)
        now = tuple(s.unit_axis if a == dst else a for a in grown)
        what = node.name if node.name and _SEGMENT.match(node.name) else f"cache{self.cache_count}"
        self.cache_count += 1
        in_id = self.state_input(cached, out.dtype, what, node.loc)
        unit_id = self.fresh(f"{node.id}_now")
        self.primes.add(dst)
        self.taint[node.id] = "open"
        made = [Node(id=unit_id, op=BROADCAST, inputs=[src], attrs={"axes": list(now)},
                     types=[out.model_copy(update={"axes": now})], loc=node.loc),
                Node(id=node.id, op="concat", inputs=[in_id, unit_id],
                     attrs={"over": {"src": [s.cache_axis, s.unit_axis], "dst": [dst]}}, types=[out], loc=node.loc,
                     name=node.name)]
        self.slots.append(_Slot(what, cached, None, None, out.dtype, in_id, node.id, kind="cache", out_axes=grown,
                                grow=dst))
        self.records.append(Record(name=what, node=node.inputs[0], dim=grown.index(dst) - len(grown)))
        return made

    def mask(self, node: Node) -> list[Node]:
        """``where(idx(T') <= idx(T), s, m)``: every cached position is at most this one, so the
        step takes ``s``; what the mask puts at later positions says which reductions ignore them."""
        cond, a, b = node.inputs
        ty = self.drop(node.types[0])
        kept = self.ref(a)
        kept_ty = self.types.get(kept) or [self.drop(self.nodes[a].types[0])]
        if set(kept_ty[0].axes) != set(ty.axes) or kept_ty[0].dtype != ty.dtype:
            raise _err("a causal mask must keep a value with all the where's axes (the scores)", node, MASK_HINT)
        fill = self.nodes.get(b)
        value = fill.attrs["value"] if fill is not None and fill.op == NUMBER_NODE else None
        self.taint[node.id] = value if value in ("-oo", "0") else "open"
        return [Node(id=node.id, op="annotate", inputs=[kept], attrs={"axes": list(ty.axes)}, types=[ty],
                     loc=node.loc, name=node.name)]

    # ------------------------------------------------------------------ causal convolutions
    def window(self, node: Node, in_loop: bool) -> list[Node]:
        """``conv(x, w, over = T, padding = causal)``: the last (k-1)·dilation inputs are a state
        (zeros at first: the causal padding); each step convolves them and this input."""
        t, s, attrs = self.t, self.s, node.attrs
        if in_loop:
            raise _err("a causal convolution inside a loop has no single window to carry", node,
                       "compute it at the block's top level")
        if attrs["over"]["dst"] != [t] or (attrs.get("padding_mode") or "zeros") != "zeros" or \
                _single(attrs.get("stride", 1)) != 1:
            raise _err(f"this causal convolution maps {t} to {attrs['over']['dst']} with a stride or padding mode "
                       "other than 1 and zeros, which the step module does not step", node,
                       "a stride-1 zero-padded causal conv over T steps with a window")
        k = s.sizes.bound(attrs["kernel"][0])
        dilation = _single(attrs.get("dilation", 1))
        if k is None or dilation is None:
            raise _err("the kernel size of this causal convolution is not bound", node, "bind it when loading")
        width = int(dilation * (k - 1))
        x_full = self.nodes[node.inputs[0]].types[0]
        if width == 0:  # a window of one: the conv of this position alone
            raise _err("a causal convolution with a kernel of 1 has no window; write it as a contraction", node,
                       "x @[C] w instead of conv(x, w, over = T, kernel = [K], ...) with K = 1")
        label = node.name if node.name and _SEGMENT.match(node.name) else f"conv{self.cache_count}"
        self.cache_count += 1
        held = s.axis(f"{t}_{label}_held", width)  # the window so far
        whole = s.axis(f"{t}_{label}_all", width + 1)  # and this position
        one = s.axis(f"{t}_{label}_out", 1)
        s.cache_axes_used = True
        held_axes = tuple(held if a == t else a for a in x_full.axes)
        now_axes = tuple(s.unit_axis if a == t else a for a in x_full.axes)
        whole_axes = tuple(whole if a == t else a for a in x_full.axes)
        in_id = self.state_input(held_axes, x_full.dtype, f"{label}.window", node.loc)
        now_id, whole_id, conv_id, next_id = (self.fresh(f"{node.id}_{w}") for w in ("now", "all", "conv", "next"))
        out = self.drop(node.types[0])
        conv_axes = tuple(one if a == t else a for a in node.types[0].axes)
        conv_attrs = {k_: v for k_, v in attrs.items() if k_ not in ("padding", "over")}
        conv_attrs["over"] = {"src": [whole], "dst": [one]}
        ty = x_full.model_copy(update={"axes": now_axes})
        made = [
            Node(id=now_id, op=BROADCAST, inputs=[self.ref(node.inputs[0])], attrs={"axes": list(now_axes)},
                 types=[ty], loc=node.loc),
            Node(id=whole_id, op="concat", inputs=[in_id, now_id],
                 attrs={"over": {"src": [held, s.unit_axis], "dst": [whole]}},
                 types=[x_full.model_copy(update={"axes": whole_axes})], loc=node.loc),
            Node(id=conv_id, op="conv", inputs=[whole_id, self.ref(node.inputs[1])], attrs=conv_attrs,
                 types=[node.types[0].model_copy(update={"axes": conv_axes})], loc=node.loc),
            Node(id=node.id, op="select", inputs=[conv_id], attrs={"axis": one, "index": 0}, types=[out],
                 loc=node.loc, name=node.name),
            Node(id=next_id, op="slice", inputs=[whole_id],
                 attrs={"axis": whole, "dst": held, "start": "1", "stop": str(width + 1)},
                 types=[x_full.model_copy(update={"axes": held_axes})], loc=node.loc),
        ]
        self.slots.append(_Slot(f"{label}.window", held_axes, "0", None, x_full.dtype, in_id, next_id,
                                kind="window"))
        self.records.append(Record(name=f"{label}.window", node=node.inputs[0],
                                   dim=x_full.axes.index(t) - len(x_full.axes), width=width))
        return made

    # ------------------------------------------------------------------ scans over the step axis
    def inline_scan(self, node: Node, in_loop: bool) -> list[Node]:
        t = self.t
        if in_loop:
            raise _err(f"this scan over {t} runs inside another loop: it restarts each iteration, so it has no "
                       "single state to carry", node, "move the scan to the block's top level, or run the spec whole")
        if node.attrs.get("reverse"):
            raise _err(f"a reverse scan over {t} reads positions after this one", node, NONCAUSAL_HINT)
        region = node.regions[0]
        carries = list(node.attrs["carries"])
        prefix = self.scan_prefix.get(node.id, "")
        args = region.args
        out: list[Node] = []
        for i, (carry, arg_id) in enumerate(zip(carries, args)):
            arg = next(n for n in region.nodes if n.id == arg_id)
            init, weight = self.start(node, node.inputs[i], carry)
            in_id = self.state_input(arg.type.axes, arg.type.dtype, f"{prefix}{carry}", node.loc)
            self.alias[arg_id] = in_id
            self.slots.append(_Slot(f"{prefix}{carry}", tuple(arg.type.axes), init, weight, arg.type.dtype, in_id, ""))
        self.index_ids.update(a for a in args[len(carries):])
        first = len(self.slots) - len(carries)
        body = [n for n in region.nodes if n.op not in REGION_ARGS]
        out.extend(self.scope(body, in_loop=False))
        results = [self.ref(r) for r in region.results]
        for k, slot in enumerate(self.slots[first:]):
            slot.out_id = results[k]
        emits = results[len(carries):]
        types = [self.drop(ty) for ty in node.types]
        if len(emits) == 1:
            out.append(Node(id=node.id, op="annotate", inputs=[emits[0]], attrs={"axes": list(types[0].axes)},
                            types=types, loc=node.loc, name=node.name))
        else:
            self.emits[node.id] = emits
        return out

    def start(self, scan: Node, init_id: str, carry: str) -> tuple[str | None, str | None]:
        """How a carry starts: a number's text, or a weight's name."""
        src = self.nodes.get(init_id)
        if src is not None and src.op == NUMBER_NODE:
            return src.attrs["value"], None
        if src is not None and src.op in WEIGHT_SOURCES:
            return None, src.attrs["name"]
        raise _err(f"carry {carry} starts from a value computed from the inputs, which a step module cannot "
                   "know before the first position", scan,
                   "start it from a number or a parameter (carry (h: [D] = 0) or = h0)")

    # ------------------------------------------------------------------ calls
    def call(self, node: Node, inputs: list[str], types: list[WireType], attrs: dict[str, Any],
             in_loop: bool) -> list[Node]:
        t = self.t
        attrs["lift"] = [a for a in attrs.get("lift") or [] if a != t]
        key = attrs["block"]
        if not self.s.mentions(key):
            return [node.model_copy(update={"inputs": inputs, "types": types, "attrs": attrs})]
        callee, slots = self.s.block(key)
        attrs["ports"] = [list(p.type.axes) for p in callee.inputs]
        if not slots:
            return [node.model_copy(update={"inputs": inputs, "types": types, "attrs": attrs})]
        instance = attrs["instance"]
        if in_loop or self.called.get(instance, 0) > 1:
            raise _err(f"instance {instance} holds scan states and is called more than once per call "
                       "(shared weights, or inside a loop): each call would need its own state", node,
                       "use one instance per call (use a = B, b = B) to step it")
        lift = tuple(attrs["lift"])
        label = self.labels.get(instance, instance)
        layers = [f"{instance}.{i}" for i in range(int(attrs["repeat"]))] if attrs.get("repeat") else [instance]
        labelled = [f"{label}.{i}" for i in range(int(attrs["repeat"]))] if attrs.get("repeat") else [label]
        if attrs.get("repeat"):
            attrs["states"] = len(slots)  # each layer of the chain takes and gives its own
        slots = [slot for _ in layers for slot in slots]
        paths = [path for path in layers for _ in range(len(slots) // len(layers))]  # module paths (weights)
        names = [name for name in labelled for _ in range(len(slots) // len(layers))]  # as state names spell them
        state_ids = []
        for slot, name in zip(slots, names):
            axes = lift + slot.axes
            in_id = self.state_input(axes, slot.dtype, f"{name}.{slot.name}", node.loc)
            state_ids.append(in_id)
        n_out = len(node.types)
        call_id = node.id if n_out > 1 else self.fresh(node.id)
        out_types = types + [WireType(axes=lift + s.out_axes, lifted=True, dtype=s.dtype) for s in slots]  # type: ignore[arg-type]
        made = [node.model_copy(update={"id": call_id, "inputs": inputs + state_ids, "types": out_types,
                                        "attrs": attrs, "name": node.name if n_out > 1 else None})]
        if n_out == 1:
            made.append(Node(id=node.id, op=TUPLE_GET, inputs=[call_id], attrs={"index": 0}, types=types,
                             loc=node.loc, name=node.name))
        for k, slot in enumerate(slots):
            out_id = self.fresh(f"{instance}_state")
            made.append(Node(id=out_id, op=TUPLE_GET, inputs=[call_id], attrs={"index": n_out + k},
                             types=[out_types[n_out + k]], loc=node.loc))
            weight = f"{paths[k]}.{slot.init_weight}" if slot.init_weight else None
            made_slot = _Slot(f"{names[k]}.{slot.name}", lift + slot.axes, slot.init, weight, slot.dtype,
                              state_ids[k], out_id, kind=slot.kind, out_axes=lift + slot.out_axes, grow=slot.grow)
            made_slot.own = slot.own
            self.slots.append(made_slot)
        return made


def _reachable(blocks: dict[str, BlockIR], entry: str) -> dict[str, BlockIR]:
    """The blocks the stepped entry uses. Another declared entry (``entry A, B``) keeps its calls
    of the whole-sequence blocks, whose stepped forms replace them here: it is not part of the step."""
    keep, todo = {}, [entry]
    while todo:
        key = todo.pop()
        if key in keep or key not in blocks:
            continue
        keep[key] = blocks[key]
        todo.extend(i.block for i in blocks[key].instances)
        todo.extend(n.attrs["block"] for n in walk(blocks[key].nodes) if n.op == CALL and "block" in n.attrs)
    return {k: v for k, v in blocks.items() if k in keep}


def _prefixes(scans: list[Node], instances: set[str]) -> dict[str, str]:
    """Each top-level scan's prefix within its block's state names: none when it is the only scan,
    its bound name when that is unique (and no instance's), else ``scan<i>``."""
    if len(scans) <= 1:
        return {s.id: "" for s in scans}
    bound = [s.name for s in scans]
    out = {}
    for i, scan in enumerate(scans):
        name = scan.name
        ok = name and bound.count(name) == 1 and name not in instances and name.isidentifier() and name.isascii()
        out[scan.id] = f"{name}." if ok else f"scan{i}."
    return out


def _axes_of(node: Node) -> set[str]:
    return {a for ty in node.types for a in ty.axes}


def _flat(value: Any) -> Iterable[Any]:
    if isinstance(value, (list, tuple)):
        for v in value:
            yield from _flat(v)
    elif isinstance(value, dict):
        for v in value.values():
            yield from _flat(v)
    else:
        yield value


# attributes that hold node ids or names, never axes
_NOT_AXES = {"captures", "carries", "instance", "block", "name", "value", "cmp", "index", "dist", "args", "backend"}


def _uses_axis(op: str, attrs: dict[str, Any], axis: str) -> bool:
    """Whether an op's attributes name ``axis`` (it reduces, slices, reshapes, convolves... along it)."""
    return any(x == axis for key, value in attrs.items() if key not in _NOT_AXES for x in _flat(value))


def _what(op: str) -> str:
    """An op as an error message names it: by its name where a spec calls it so (``sum``), by its
    syntax where the spec writes it as an operator (``this rename (x[A as B])``)."""
    row = OPS.get(op)
    return f"this {op} ({row.syntax})" if row is not None and row.syntax is not None else op


def _free_name(ir: SpecIR, base: str) -> str:
    names = set(ir.axes) | {a for b in ir.blocks.values() for n in walk(b.nodes) for ty in n.types for a in ty.axes}
    name, n = base, 2
    while name in names:
        name, n = f"{base}{n}", n + 1
    return name


_CAUSAL = {("prime", "<="), ("step", ">=")}  # idx(T') <= idx(T), idx(T) >= idx(T')


def _causal_masks(block: BlockIR, t: str) -> tuple[dict[str, Node], set[str]]:
    """The ``where(idx(T') <= idx(T), a, b)`` nodes of a block, and the mask nodes only they read
    (the step drops them: every cached position passes the mask)."""
    nodes = {n.id: n for n in walk(block.nodes)}
    uses: dict[str, int] = dict.fromkeys(nodes, 0)
    for n in walk(block.nodes):
        for i in n.inputs:
            uses[i] = uses.get(i, 0) + 1
        for r in n.regions:
            for i in r.results:
                uses[i] = uses.get(i, 0) + 1
    for r in block.results:
        uses[r] = uses.get(r, 0) + 1
    masks: dict[str, Node] = {}
    for n in walk(block.nodes):
        cond = nodes.get(n.inputs[0]) if role(n.op) == CHOOSE else None
        if cond is None or role(cond.op) != COMPARISON:
            continue
        left, right = (nodes.get(i) for i in cond.inputs)
        if left is None or right is None or role(left.op) != POSITION or role(right.op) != POSITION:
            continue
        sides = [_side(x.attrs.get("axis"), t) for x in (left, right)]
        if None not in sides and sides[0] != sides[1] and (sides[0], cond.attrs.get("cmp")) in _CAUSAL:
            masks[n.id] = n
    dead: set[str] = set()
    conds = [nodes[m.inputs[0]] for m in masks.values()]
    for cond in conds:
        if uses[cond.id] == sum(1 for m in masks.values() if m.inputs[0] == cond.id):
            dead.add(cond.id)
    for cond in conds:
        for i in cond.inputs:
            if uses[i] == sum(nodes[d].inputs.count(i) for d in dead):
                dead.add(i)
    return masks, dead


def _side(axis: str | None, t: str) -> str | None:
    if axis == t:
        return "step"
    if axis and axis.rstrip("'") == t:
        return "prime"
    return None


def _single(value: Any) -> Any:
    """A per-axis option given once or as a one-item list (a conv over one axis)."""
    if isinstance(value, (list, tuple)):
        return value[0] if len(value) == 1 else None
    return value
