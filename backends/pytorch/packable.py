"""Can a packed batch run as one call? Read off the checked IR and the op table, nothing else.

N sequences packed end to end along an axis T (``module(x, cu_seqlens=...)``) give each
sequence alone's results from ONE call when nothing but the scans over T lets a position see
another: every other op then computes position t from position t only, and each scan over T is
run with resets at the offsets (backends/pytorch/varlen.py). ``native_blocker`` says why not,
or None. What mixes positions, by the op table (``ncd.ops``): an op whose mixing axes
(``algebra.mixes``: its ``over`` or contraction ``axes``) include T, one that takes T in and
gives no T out (a reduction, a contraction over T, a select at a fixed position, a rename or
reshape of T), one that makes T from nothing (a weight or constant laid along T, ``idx(T)``),
an op that mixes every axis (``mixes = "all"`` without an ``over`` list), one that updates
statistics over its lifted dims (``stateful``), a halting loop over T-carrying wires, and a
scan step that reads a T wire other than at its own position ``u[t]`` or computes with ``t``.
"""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from ncd.ir import (BROADCAST, CALL, HALTING, INPUT, LOOPS, NUMBER_NODE, PASS_THROUGH, REGION_ARGS, SCAN, WEIGHT_SOURCES,
                   BlockIR, Node, Region, SpecIR)
from ncd.ops import OPS

# structural nodes that are no op-table row: what each may do with the packed axis
_SOURCES = {INPUT, NUMBER_NODE, *REGION_ARGS}  # bring T in (inputs) or carry none
_PASS = PASS_THROUGH  # position by position (broadcast repeats one value)


def _names(value: Any) -> Iterator[str]:
    """Every axis name in an attribute value: a name, a list, or an ``{src, dst}`` map."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _names(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _names(v)


def _where(node: Node) -> str:
    """The node as a message names it: its op, and its line where known."""
    if node.loc is None:
        return node.op
    return f"{node.op} at line {node.loc.line}" + (f" of {node.loc.file}" if node.loc.file else "")


class _Reader:
    """One walk over the blocks a module calls, with the types of every node seen so far."""

    def __init__(self, spec: SpecIR, axis: str) -> None:
        self.spec, self.axis = spec, axis
        self.types: dict[str, list[Any]] = {}
        self.done: dict[str, str | None] = {}

    def has(self, node_id: str) -> bool:
        return any(self.axis in t.axes for t in self.types.get(node_id, []))

    def block(self, block: BlockIR) -> str | None:
        if block.key not in self.done:
            self.done[block.key] = None  # blocks do not recurse; guards a malformed IR
            self.done[block.key] = self.scope(block.nodes)
        return self.done[block.key]

    def scope(self, nodes: list[Node]) -> str | None:
        for node in nodes:
            self.types[node.id] = node.types
            why = self.node(node)
            if why is not None:
                return why
        return None

    def node(self, node: Node) -> str | None:
        T = self.axis
        ins = any(self.has(i) for i in node.inputs)
        outs = any(T in t.axes for t in node.types)
        if node.op == SCAN and node.attrs.get("axis") == T:
            return self.step(node)
        if node.op == HALTING and (ins or any(self.has(c) for c in node.attrs.get("captures", []))):
            return f"{_where(node)} decides its step count over every position of {T}"
        if node.op in LOOPS:
            for region in node.regions:
                why = self.scope(region.nodes)
                if why is not None:
                    return why
            return None
        if node.op == CALL:
            why = self.block(self.spec.blocks[node.attrs["block"]])
            if why is not None:
                return why
        elif node.op in _SOURCES or node.op in _PASS:
            return None
        elif node.op in WEIGHT_SOURCES:
            return f"{_where(node)} {node.attrs.get('name', '')} is laid along {T}: a sequence would read it by its packed position" if outs else None
        else:
            row = OPS.get(node.op)
            if row is None:
                return f"{_where(node)} is not in the op table"
            if ins:
                mixes = row.algebra.mixes
                named = set(_names(node.attrs.get({"over": "over", "all": "over", "axes": "axes"}.get(mixes or "", ""))))
                if mixes in ("over", "axes", "all") and T in named:
                    return f"{_where(node)} combines positions along {T}"
                if mixes == "all" and not named:
                    return f"{_where(node)} combines every axis of its input, {T} among them"
                if row.stateful:
                    return f"{_where(node)} takes statistics over its lifted dims and {T}"
        if ins and not all(T in t.axes for t in node.types):
            return f"{_where(node)} combines the positions of {T} into a result without {T}"
        if outs and not ins and node.op != BROADCAST:
            return f"{_where(node)} makes values along {T} that depend on the position"
        return None

    def step(self, scan: Node) -> str | None:
        """A scan over T: its step may read a T wire only at its own position (``u[t]``) and may
        not compute with ``t`` (the index restarts at every sequence)."""
        T = self.axis
        region: Region = scan.regions[0]
        n_carry = len(scan.attrs.get("carries", []))
        index = region.args[n_carry] if len(region.args) > n_carry else None
        for node in _walk(region.nodes):
            self.types[node.id] = node.types
        for node in _walk(region.nodes):
            if index is not None and node.inputs[1:] == [index] and node.attrs.get("axis") == T:
                continue  # u[t]: the wire at the step's own position
            if index is not None and index in node.inputs:
                return f"the step of the scan at line {scan.loc.line if scan.loc else '?'} computes with its index, which restarts at every sequence"
            if any(self.has(i) for i in node.inputs) or any(T in t.axes for t in node.types):
                return f"the step of the scan at line {scan.loc.line if scan.loc else '?'} reads a wire along {T} other than at its own position"
            if node.op == CALL:
                why = self.block(self.spec.blocks[node.attrs["block"]])
                if why is not None:
                    return why
        return None


def _walk(nodes: list[Node]) -> Iterator[Node]:
    for node in nodes:
        yield node
        for region in node.regions:
            yield from _walk(region.nodes)


def native_blocker(spec: SpecIR, block_key: str, axis: str) -> str | None:
    """Why block ``block_key`` of ``spec``, packed along ``axis``, must run once per sequence
    (None: one call with the scans reset at the offsets gives each sequence alone's results)."""
    block = spec.blocks[block_key]
    if spec.axes.get(axis) is not None and spec.axes[axis].size is not None or axis in spec.bindings:
        return f"axis {axis} has a bound size"
    for j, wire in enumerate(block.outputs):
        if axis not in wire.axes:
            return f"output {j} of block {block.name} has no axis {axis}"
    return _Reader(spec, axis).block(block)


def summary(spec: SpecIR) -> str | None:
    """What a packed call of the entry block runs, in words (``ncd compile --explain``); None
    where its inputs carry no scanned axis, or several."""
    scanned = {str(n.attrs["axis"]) for b in spec.blocks.values() for n in _walk(b.nodes)
               if n.op == SCAN and n.attrs.get("axis")}
    block = spec.entry_block
    carried = [a for a in dict.fromkeys(a for p in block.inputs for a in p.type.axes) if a in scanned]
    if len(carried) != 1:
        return None
    axis = carried[0]
    why = native_blocker(spec, spec.entry, axis)
    how = f"one call, every scan over {axis} restarts at the offsets" if why is None else f"once per sequence: {why}"
    return f"packed batches (cu_seqlens) along {axis}: {how}"
