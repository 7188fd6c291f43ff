"""The typed IR: pydantic nodes in networkx graphs, one graph per block specialisation.

A value's type is the ordered tuple of its *core* axes. At run time a value may also carry the
block's lifted (broadcast) axes as leading dimensions: ``lifted=True`` says so. Lifted axes are
never named inside a block — that is what makes a block reusable over any batch of axes.

Everything here is plain data: ``SpecIR.model_dump_json()`` and ``SpecIR.model_validate_json``
round-trip exactly, and analyses/renderers read these models without importing the builder.
"""
from __future__ import annotations

from functools import cached_property
from typing import Any, Literal, Sequence

import networkx as nx
from pydantic import BaseModel, ConfigDict, Field

from ncd.errors import Span


# The two ACT outputs a halting loop names (docs/language.md, "Halting loops"): Graves (2016)'s
# mixture Σ pₙ·sₙ with the remainder at the halting step, or tensor2tensor's interpolation.
ACT_MIXES = ("graves", "interpolate")

# Node kinds the builder makes that are no op-table rows (ncd.ops.OPS), each named once here so that
# every pass, backend and analysis that singles one out reads the name (tests/test_ops_table.py
# fails a module that spells one): a number known at check time; a block's input port; a region's
# arguments (carries, the loop index); a call of a block and one of its results; a named tap; the
# module's own weights (parameters, buffers) and with them the constants, all of them weight
# sources; a parameter initialiser's draw or fill; a value given declared axes (a copy, or a view);
# and the loop constructs (each holds a region). The strings are the IR JSON's ``op`` values.
NUMBER_NODE = "number"
INPUT = "input"
REGION_ARG, LOOP_INDEX = "region_arg", "loop_index"
REGION_ARGS = frozenset({REGION_ARG, LOOP_INDEX})
CALL, TUPLE_GET, TAP = "call", "tuple_get", "tap"
PARAM, BUFFER, CONST = "param", "buffer", "const"
MODULE_WEIGHTS = frozenset({PARAM, BUFFER})
WEIGHT_SOURCES = MODULE_WEIGHTS | {CONST}
INIT_RANDOM, INIT_FILL = "init_random", "init_fill"
MATERIALIZE, BROADCAST = "materialize", "broadcast"
SCAN, REPEAT, HALTING = "scan", "repeat", "halting"
LOOPS = frozenset({SCAN, REPEAT, HALTING})
# Every structural kind: with the op table's rows, the closed set of node kinds (ncd/verify.py).
STRUCTURAL_KINDS = frozenset({NUMBER_NODE, INPUT, CALL, TUPLE_GET, TAP, INIT_RANDOM, INIT_FILL, MATERIALIZE,
                              BROADCAST}) | REGION_ARGS | WEIGHT_SOURCES | LOOPS
# Those that hand their input on unchanged (one element of a multi-result node, a named tap, a
# broadcast to declared axes): each is a view of its input and linear in it.
PASS_THROUGH = frozenset({TUPLE_GET, TAP, BROADCAST})
# Those whose value is a function of their inputs alone (the recurrence pass may hoist them).
PURE_STRUCTURAL = frozenset({BROADCAST, MATERIALIZE, NUMBER_NODE})

class Loc(BaseModel):
    model_config = ConfigDict(frozen=True)
    line: int
    col: int
    file: str | None = None  # the spec file of an imported block (None: the spec being checked)

    @property
    def span(self) -> Span:
        return Span(self.line, self.col, file=self.file)


class AxisDef(BaseModel):
    """A named axis. ``size`` is a sympy-parsable expression in other axis names, or None (free)."""

    model_config = ConfigDict(frozen=True)
    name: str
    size: str | None = None
    prime_of: str | None = None
    loc: Loc | None = None


class WireType(BaseModel):
    model_config = ConfigDict(frozen=True)
    axes: tuple[str, ...] = ()
    lifted: bool = True
    dtype: Literal["float", "bool", "int"] = "float"

    def __str__(self) -> str:
        lead = "..., " if self.lifted and self.axes else ("..." if self.lifted else "")
        return f"[{lead}{', '.join(self.axes)}]"


def call_output_types(lift: Sequence[str], outputs: Sequence[WireType], inputs_lifted: bool) -> list[WireType]:
    """A call's output types: every output carries the call's lifted axes (docs/language.md: the lifted
    part is prepended to all outputs), also one the callee computes from its parameters alone; the
    lowering broadcasts such an output, so a caller can reduce it over a lifted axis like any other."""
    return [WireType(axes=tuple(lift) + out.axes, lifted=out.lifted or inputs_lifted, dtype=out.dtype)
            for out in outputs]


class Node(BaseModel):
    """One operation. ``op`` keys the op table (ncd.ops); ``inputs`` are producer node ids."""

    id: str
    op: str
    inputs: list[str] = Field(default_factory=list)
    attrs: dict[str, Any] = Field(default_factory=dict)
    types: list[WireType] = Field(default_factory=list)
    loc: Loc | None = None
    regions: list["Region"] = Field(default_factory=list)
    name: str | None = None  # the spec's name for this value, when it has one

    @property
    def type(self) -> WireType:
        return self.types[0]


class Region(BaseModel):
    """A nested body (scan step, repeat body, halting step, constant formula).

    ``args`` are ids of ``region_arg`` nodes bound on entry; ``results`` are ids produced on exit.
    Nodes may read ids of the enclosing scopes (closures), as MLIR regions do.
    """

    kind: str
    args: list[str] = Field(default_factory=list)
    nodes: list[Node] = Field(default_factory=list)
    results: list[str] = Field(default_factory=list)

    @cached_property
    def graph(self) -> nx.DiGraph:
        return to_graph(self.nodes)


class ParamDef(BaseModel):
    """A learned parameter, a buffer (masks) or a constant computed from a formula."""

    name: str
    kind: Literal["param", "buffer", "const"]
    type: WireType
    init: Region | None = None  # nodes computing the initial value (formula or initialiser call)
    loc: Loc | None = None


class InstanceDef(BaseModel):
    name: str
    block: str  # key into SpecIR.blocks
    repeat: int | None = None
    loc: Loc | None = None


class Port(BaseModel):
    name: str
    type: WireType


class BlockIR(BaseModel):
    key: str
    name: str
    inputs: list[Port]
    outputs: list[WireType]
    params: list[ParamDef] = Field(default_factory=list)
    instances: list[InstanceDef] = Field(default_factory=list)
    taps: list[str] = Field(default_factory=list)
    nodes: list[Node] = Field(default_factory=list)
    results: list[str] = Field(default_factory=list)
    loc: Loc | None = None

    @cached_property
    def graph(self) -> nx.DiGraph:
        return to_graph(self.nodes)


class SpecMeta(BaseModel):
    title: str = ""
    paper: str = ""


class SpecIR(BaseModel):
    name: str
    axes: dict[str, AxisDef]
    bindings: dict[str, int] = Field(default_factory=dict)
    blocks: dict[str, BlockIR]
    entry: str
    # `entry A, B`: the keys of every declared entry block (``entry`` among them), which share one
    # parameter set (the same state_dict names and shapes); empty when the spec declares none.
    entries: list[str] = Field(default_factory=list)
    meta: SpecMeta = Field(default_factory=SpecMeta)

    @property
    def entry_block(self) -> BlockIR:
        return self.blocks[self.entry]

    def _repr_mimebundle_(self, include=None, exclude=None) -> dict[str, Any]:
        """Jupyter shows a checked spec as its diagram (ncd/notebook.py)."""
        from ncd import notebook

        return notebook.select(notebook.mimebundle(self), include, exclude)

    def _repr_svg_(self) -> str | None:
        from ncd import notebook

        return notebook.svg(self)


def to_graph(nodes: list[Node]) -> nx.DiGraph:
    """The dataflow graph of one scope: node ids → Node, edges carry the input position."""
    graph = nx.DiGraph()
    for node in nodes:
        graph.add_node(node.id, node=node)
    for node in nodes:
        for position, src in enumerate(node.inputs):
            if src in graph:
                graph.add_edge(src, node.id, position=position, type=graph.nodes[src]["node"].types)
    return graph


def walk(nodes: list[Node]):
    """Every node of a scope and of its nested regions, in program order."""
    for node in nodes:
        yield node
        for region in node.regions:
            yield from walk(region.nodes)


Node.model_rebuild()
Region.model_rebuild()
