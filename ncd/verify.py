"""The IR verifier: is this SpecIR one the builder could have produced?

In the spirit of torch.fx's ``Graph.lint`` and a JAX-style type checker, ``verify(ir)`` re-checks
an IR from scratch, trusting nothing the builder, a pass or a JSON file stored:

- a closed set of node kinds: the op table (ncd/ops) plus the structural kinds in ``STRUCTURAL``;
- every id a valid, unique local name (ncd/names.py) defined before it is used, in its own scope
  or an enclosing one (regions may read the values around them, as MLIR regions do);
- regions well formed: scans, repeats and halting loops carry one region whose arguments,
  results and carries agree with the node; param initialisers produce one value;
- each node's typing rule, re-run on its inputs' stored types, gives exactly its stored types;
- attributes of the declared kinds (axes that exist, numbers, closed sets of operators and
  initialisers); names of blocks, params, instances and taps are names of the language.

It runs after the build and after every pass (ncd/pipeline.py) and on `ncd ir --from-json`, and
raises a located NcdError naming the piece at fault (block, node path, id). A new structural
node kind needs a rule in ``STRUCTURAL``; a new op needs only its op table row.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import sympy

from ncd import sizes as sz
from ncd.errors import NcdError, Span
from ncd.frontend.common import RESERVED
from ncd.limits import MAX_BLOCK_NESTING, MAX_BODY_NESTING, MAX_CONST_LIST, MAX_REPEAT
from ncd.ops.init import INITIALISERS
from ncd.ir import (ACT_MIXES, call_output_types, BROADCAST, BUFFER, CALL, CONST, HALTING, INIT_FILL, INIT_RANDOM, INPUT, LOOP_INDEX, LOOPS,
                    MATERIALIZE, NUMBER_NODE, PARAM, REGION_ARG, REPEAT, SCAN, TAP, TUPLE_GET,
                    WEIGHT_SOURCES, BlockIR, Node, ParamDef, Region, SpecIR, WireType)
from ncd.names import COMPARE_OPS, MODULE_INTERNALS, is_spec_name, value_id_problem
from ncd.ops import OPS, dtypes, role
from ncd.ops.base import AXES, AXES_OR_MAP, COMPARISON, AXIS, AXIS_MAP, FLAG, NAME, NUMBER, NUMBERS, VALUES, TypeCtx

PLAIN = (str, int, float, bool, type(None))


class VerifyError(NcdError):
    """An IR that no spec builds (a hand-edited or tampered JSON file, or a pass's bug)."""


def verify(ir: SpecIR) -> None:
    """Raise a located NcdError (a VerifyError) at the first thing wrong with ``ir``; None if sound."""
    _Verifier(ir).run()


class _Scope:
    """The ids visible at a point: this scope's, then the enclosing ones'."""

    def __init__(self, parent: "_Scope | None" = None) -> None:
        self.parent = parent
        self.ids: dict[str, Node] = {}

    def get(self, node_id: str) -> Node | None:
        scope: _Scope | None = self
        while scope is not None:
            if node_id in scope.ids:
                return scope.ids[node_id]
            scope = scope.parent
        return None


class _NodePlace:
    """Where a node is, formatted only when an error needs it."""

    __slots__ = ("path", "index", "node")

    def __init__(self, path: str, index: int, node: Node) -> None:
        self.path, self.index, self.node = path, index, node

    def __str__(self) -> str:
        return f"{self.path}, node {self.index} (id {self.node.id!r}, op {self.node.op!r})"


class _Verifier:
    def __init__(self, ir: SpecIR) -> None:
        self.ir = ir
        self._size_cache: dict[str, sympy.Expr] = {}
        self._sizes: dict[str, str | None] | None = None
        self.depth = 0  # regions entered
        self.block: BlockIR | None = None
        self.where: Any = "spec"
        self.span: Span | None = None
        self.seen: set[str] = set()

    # ---------------------------------------------------------------- errors and sizes
    def fail(self, message: str, hint: str | None = None) -> VerifyError:
        return VerifyError(f"IR {self.where}: {message}",
                           self.span, hint=hint or "an IR is what `ncd ir SPEC --json` writes; rebuild it from the spec")

    def known_axis(self, name: Any) -> bool:
        return isinstance(name, str) and (name in self.ir.axes or name.rstrip("'") in self.ir.axes)

    def size(self, name: str) -> sympy.Expr:
        base = name.rstrip("'")
        if base not in self._size_cache:
            if self._sizes is None:  # built once: per call it made checking n axes quadratic
                self._sizes = {k: v.size for k, v in self.ir.axes.items()}
            self._size_cache[base] = sz.resolve(base, self._sizes, self.ir.bindings)
        return self._size_cache[base]

    def unify(self, axis: str, size: Any, what: str) -> None:
        """Only a clash of two concrete sizes is an error: the builder already inferred the rest."""
        try:
            current, given = self.size(axis), sympy.sympify(size)
            clash = current.is_number and given.is_number and bool(current != given)
        except (TypeError, ValueError, sympy.SympifyError):
            return
        if clash:
            raise self.fail(f"axis {axis} has size {current} but {what} is {given}")

    # ---------------------------------------------------------------- spec
    def run(self) -> None:
        ir = self.ir
        for name, axis in ir.axes.items():
            self.where, self.span = f"axis {name!r}", axis.loc.span if axis.loc else None
            if not is_spec_name(name) or axis.name != name:
                raise self.fail("an axis name must be a name of the language, the same as its key")
            if axis.prime_of is not None and axis.prime_of not in ir.axes:
                raise self.fail(f"prime_of names the unknown axis {axis.prime_of!r}")
            if axis.size is not None:
                self.size(name)  # parses (ncd/sizes.py: never evaluated) or raises a located NcdError
        self.where, self.span = "spec", None
        for name in ir.bindings:
            if not self.known_axis(name):
                raise self.fail(f"binding of the unknown axis {name!r}")
        if ir.entry not in ir.blocks:
            raise self.fail(f"the entry {ir.entry!r} is not one of the blocks")
        if len(set(ir.entries)) != len(ir.entries) or any(k not in ir.blocks for k in ir.entries):
            raise self.fail(f"entries {ir.entries!r} must be distinct blocks of the spec")
        self.block_graph()
        for key, block in ir.blocks.items():
            self.block_ir(key, block)
        self.where, self.span = "spec", None
        from ncd.frontend.unrolled import check_unrolled

        try:  # the builder's cap on loops composed through block calls, re-checked on the IR
            check_unrolled(ir)
        except NcdError as exc:
            raise VerifyError(f"IR: {exc.message}", exc.span, hint=exc.hint) from None

    def block_graph(self) -> None:
        """Blocks use blocks without a cycle and at most MAX_BLOCK_NESTING deep (as the builder
        refuses recursion and deeper nesting): the module recurses once per level."""
        uses = {k: [i.block for i in b.instances if i.block in self.ir.blocks] for k, b in self.ir.blocks.items()}
        depth: dict[str, int] = {}
        for root in uses:
            stack, on_path = [(root, iter(uses[root]))], {root}
            while stack:
                key, children = stack[-1]
                child = next(children, None)
                if child is None:
                    stack.pop()
                    on_path.discard(key)
                    depth[key] = 1 + max((depth[c] for c in uses[key]), default=0)
                    if depth[key] > MAX_BLOCK_NESTING:
                        self.where, self.span = f"block {key!r}", None
                        raise self.fail(f"blocks using blocks nest {depth[key]} deep from here, more than the limit "
                                        f"of {MAX_BLOCK_NESTING} (ncd.limits.MAX_BLOCK_NESTING)")
                elif child in on_path:
                    self.where, self.span = f"block {key!r}", None
                    raise self.fail(f"it uses block {child!r}, which uses it in turn: a block cannot use itself")
                elif child not in depth:
                    stack.append((child, iter(uses[child])))
                    on_path.add(child)

    # ---------------------------------------------------------------- blocks
    def block_ir(self, key: str, block: BlockIR) -> None:
        self.block, self.seen = block, set()
        self.where, self.span = f"block {key!r}", block.loc.span if block.loc else None
        if block.key != key:
            raise self.fail(f"its key field says {block.key!r}")
        if not is_spec_name(block.name):
            raise self.fail(f"block name {block.name!r} is not a name of the language")
        for port in block.inputs:
            if not is_spec_name(port.name):
                raise self.fail(f"input name {port.name!r} is not a name of the language")
            self.wire_type(port.type, f"input {port.name}")
        for t in block.outputs:
            self.wire_type(t, "an output")
        attrs: dict[str, str] = {}
        for what, name in ([(p.kind, p.name) for p in block.params] + [("instance", i.name) for i in block.instances]
                           + [("tap", t) for t in block.taps]):
            self.attribute_name(name, what)
            if name in attrs:
                raise self.fail(f"{what} {name!r} has the name of a {attrs[name]} of the same block")
            attrs[name] = what
        for inst in block.instances:
            if inst.block not in self.ir.blocks:
                raise self.fail(f"instance {inst.name!r} uses the unknown block {inst.block!r}")
            if inst.repeat is not None and not 1 <= inst.repeat <= MAX_REPEAT:
                raise self.fail(f"instance {inst.name!r} repeats {inst.repeat} times, not 1 to {MAX_REPEAT}")
        top = _Scope()
        self.nodes(block.nodes, top, f"block {key!r}")
        self.where, self.span = f"block {key!r}", block.loc.span if block.loc else None
        self.results(block.results, top, "its results")
        got = [top.get(r).types[0] for r in block.results]
        if [t.axes for t in got] != [t.axes for t in block.outputs]:
            raise self.fail(f"its results have axes {[list(t.axes) for t in got]}, "
                            f"its outputs say {[list(t.axes) for t in block.outputs]}")
        attributes = _Scope()
        attributes.ids = {n.id: n for n in block.nodes if n.op in WEIGHT_SOURCES or n.op == NUMBER_NODE}
        for param in block.params:
            self.param(param, attributes, key)

    def param(self, param: ParamDef, attributes: _Scope, key: str) -> None:
        self.wire_type(param.type, f"{param.kind} {param.name}")
        if param.init is None:
            return
        where = f"block {key!r}, {param.kind} {param.name!r}"
        self.where, self.span = where, param.loc.span if param.loc else None
        if param.init.args or len(param.init.results) != 1:
            raise self.fail("an initialiser region takes no arguments and gives one value")
        scope = _Scope(attributes)
        self.nodes(param.init.nodes, scope, f"{where} init")
        self.where, self.span = where, param.loc.span if param.loc else None
        self.results(param.init.results, scope, "its initial value")

    def attribute_name(self, name: Any, what: str) -> None:
        if not is_spec_name(name):
            raise self.fail(f"{what} name {name!r} is not a name of the language")
        if name in RESERVED or name in MODULE_INTERNALS or name.startswith(("__", "_ncd")):
            raise self.fail(f"{what} name {name!r} is reserved (an attribute of torch.nn.Module or of ncd's module)")

    def wire_type(self, t: WireType, what: str) -> None:
        for axis in t.axes:
            if not self.known_axis(axis):
                raise self.fail(f"{what} has the unknown axis {axis!r}")
        if len(set(t.axes)) != len(t.axes):
            raise self.fail(f"{what} names an axis twice: {list(t.axes)}")

    def results(self, ids: list[str], scope: _Scope, what: str) -> None:
        for r in ids:
            if not isinstance(r, str) or scope.get(r) is None:
                raise self.fail(f"{what} name {r!r}, which is not defined there")

    # ---------------------------------------------------------------- nodes
    def nodes(self, nodes: list[Node], scope: _Scope, path: str) -> None:
        for i, node in enumerate(nodes):
            self.where = _NodePlace(path, i, node)
            self.span = node.loc.span if node.loc is not None else None
            self.node(node, scope)
            scope.ids[node.id] = node
            self.seen.add(node.id)

    def node(self, node: Node, scope: _Scope) -> None:
        problem = value_id_problem(node.id)
        if problem is not None:
            raise self.fail(f"the id {problem}")
        if node.id in self.seen:
            raise self.fail("the id is defined twice in this block", hint="every node id of a block is unique")
        if node.op not in OPS and node.op not in STRUCTURAL:
            raise self.fail("unknown node kind", hint="node kinds are the op table's ops (ncd/ops) and "
                            + ", ".join(sorted(STRUCTURAL)))
        if node.name is not None and not is_spec_name(node.name):
            raise self.fail(f"its name {node.name!r} is not a name of the language")
        inputs = []
        for src in node.inputs:
            producer = scope.get(src) if isinstance(src, str) else None
            if producer is None:
                later = any(src == n.id for n in _all_nodes(self.block)) if isinstance(src, str) else False
                raise self.fail(f"input {src!r} is " + ("used before it is defined, or outside the region that defines it" if later
                                               else "not defined"),
                                hint="a node reads only ids defined before it, in its own or an enclosing scope")
            inputs.append(producer)
        self.plain_attrs(node.attrs)
        if not node.types:
            raise self.fail("it has no types")
        for t in node.types:
            self.wire_type(t, "its type")
        if node.op not in LOOPS and node.regions:
            raise self.fail(f"a {node.op} node has no regions")
        if node.op in STRUCTURAL:
            STRUCTURAL[node.op](self, node, inputs, scope)
        else:
            self.typed_op(node, inputs)

    def plain_attrs(self, value: Any, depth: int = 0) -> None:
        if depth > 16:
            raise self.fail("its attributes nest too deeply")
        if isinstance(value, dict):
            for k, v in value.items():
                if not isinstance(k, str):
                    raise self.fail(f"attribute key {k!r} is not a string")
                self.plain_attrs(v, depth + 1)
        elif isinstance(value, (list, tuple)):
            for v in value:
                self.plain_attrs(v, depth + 1)
        elif not isinstance(value, PLAIN):
            raise self.fail(f"attribute value {value!r} is not plain data")
        elif isinstance(value, float) and math.isnan(value):
            raise self.fail("an attribute is NaN")

    def typed_op(self, node: Node, inputs: list[Node]) -> None:
        opdef = OPS[node.op]
        low, high = opdef.arity
        if not low <= len(inputs) <= high:
            raise self.fail(f"{node.op} takes {low}..{high} inputs, got {len(inputs)}")
        for key, kw in opdef.kwargs.items():
            if key in node.attrs:
                self.kw_attr(key, kw.kind, node.attrs[key], kw.names)
            elif kw.required:
                raise self.fail(f"{node.op} needs the attribute {key!r}")
        if role(node.op) == COMPARISON and node.attrs.get("cmp") not in COMPARE_OPS:
            raise self.fail(f"comparison operator {node.attrs.get('cmp')!r} is not one of "
                            f"{' '.join(sorted(COMPARE_OPS))}")
        ctx = TypeCtx(span=self.span, sizes=self.size, known_axis=self.known_axis,
                      unify=lambda axis, size, what: self.unify(axis, size, what), input_ops=[n.op for n in inputs])
        try:
            types = opdef.infer(ctx, [n.types[0] for n in inputs], dict(node.attrs))
        except VerifyError:
            raise
        except NcdError as exc:
            raise self.fail(f"its typing rule rejects it: {exc.message}") from None
        except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
            raise self.fail(f"its attributes do not fit {node.op}'s typing rule ({type(exc).__name__}: {exc})") from None
        # The dtype rule is part of the typing rule: the builder applies it after `infer`, so must we.
        numbers = [self.number_of(n) for n in inputs]
        try:
            types = dtypes.check(opdef.dtypes, ctx, node.op, [n.types[0] for n in inputs], numbers, types)
        except NcdError as exc:
            raise self.fail(f"its dtype rule rejects it: {exc.message}") from None
        self.same_types(node, types)

    def number_of(self, node: Node) -> sympy.Expr | None:
        """A number node's value (bounded parse), as the builder hands it to the dtype rule."""
        if node.op != NUMBER_NODE:
            return None
        try:
            return sz.parse(str(node.attrs.get("value")))
        except NcdError as exc:
            raise self.fail(f"its number is not readable: {exc.message}") from None

    def kw_attr(self, key: str, kind: str, value: Any, names: tuple[str, ...] = ()) -> None:
        def axes(v: Any) -> bool:
            return isinstance(v, (list, tuple)) and all(self.known_axis(a) for a in v)

        ok = {
            AXIS: lambda v: self.known_axis(v),
            AXES: axes,
            AXIS_MAP: lambda v: isinstance(v, dict) and set(v) == {"src", "dst"} and axes(v["src"]) and axes(v["dst"]),
            NUMBER: lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
            NAME: lambda v: is_spec_name(v) and (not names or v in names),
            FLAG: lambda v: isinstance(v, bool),
        }
        number = ok[NUMBER]
        ok[NUMBERS] = lambda v: (number(v) or (isinstance(v, list) and 0 < len(v) <= 3 and all(number(x) for x in v))
                                 or (isinstance(v, str) and v in names))
        ok[AXES_OR_MAP] = ok[AXIS_MAP]
        ok[VALUES] = lambda v: (isinstance(v, list) and 0 < len(v) <= MAX_CONST_LIST
                                and all(number(x) and math.isfinite(x) for x in v))
        check = ok.get(kind)
        if check is not None and value is not None and not check(value):
            raise self.fail(f"attribute {key!r} = {value!r} is not of its declared kind ({kind})")

    def same_types(self, node: Node, types: list[WireType]) -> None:
        if list(types) != list(node.types):
            raise self.fail(f"its stored types {[str(t) + ':' + t.dtype for t in node.types]} differ from its "
                            f"typing rule's {[str(t) + ':' + t.dtype for t in types]}")

    def need(self, cond: bool, message: str) -> None:
        if not cond:
            raise self.fail(message)

    def region(self, node: Node, scope: _Scope, n_args: int, n_results: int) -> tuple[Region, _Scope]:
        """The loop's one region, its first ``n_args`` nodes its arguments, checked in a child scope."""
        self.need(len(node.regions) == 1, f"a {node.op} node has exactly one region, not {len(node.regions)}")
        region = node.regions[0]
        self.need(region.kind == node.op, f"its region's kind is {region.kind!r}, not {node.op!r}")
        self.need(len(region.args) == n_args and [n.id for n in region.nodes[:n_args]] == list(region.args),
                  f"its region's arguments must be its first {n_args} nodes")
        self.need(len(region.results) == n_results, f"its region gives {len(region.results)} results, not {n_results}")
        where, span = self.where, self.span
        self.depth += 1
        if self.depth > MAX_BODY_NESTING:
            raise self.fail(f"regions nest {self.depth} deep, more than the limit of {MAX_BODY_NESTING} "
                            f"(ncd.limits.MAX_BODY_NESTING)")
        inner = _Scope(scope)
        self.nodes(region.nodes, inner, f"{where}, region")
        self.depth -= 1
        self.where, self.span = where, span
        self.results(region.results, inner, "its region's results")
        return region, inner

    def carries(self, node: Node, inputs: list[Node], region: Region, inner: _Scope) -> list[WireType]:
        names = node.attrs.get("carries")
        self.need(isinstance(names, list) and len(names) == len(inputs),
                  "attribute 'carries' must name one carry per input")
        out = []
        for i, (src, arg) in enumerate(zip(inputs, region.args)):
            arg_node = inner.ids[arg]
            self.need(arg_node.op == REGION_ARG, f"region argument {i} is a {arg_node.op} node, not a region_arg")
            t = arg_node.types[0]
            got = src.types[0]
            self.need(got.axes == () or sorted(got.axes) == sorted(t.axes),
                      f"carry {i} starts with axes {list(got.axes)} but is declared {list(t.axes)}")
            out.append(t)
        return out


def _all_nodes(block: BlockIR | None):
    if block is None:
        return
    from ncd.ir import walk

    yield from walk(block.nodes)
    for p in block.params:
        if p.init is not None:
            yield from walk(p.init.nodes)


# ------------------------------------------------------------------------- structural kinds
Rule = Callable[[_Verifier, Node, list[Node], _Scope], None]


def _arity(v: _Verifier, node: Node, inputs: list[Node], n: int) -> None:
    v.need(len(inputs) == n, f"a {node.op} node takes {n} inputs, got {len(inputs)}")


def _one(v: _Verifier, node: Node, t: WireType) -> None:
    v.same_types(node, [t])


def _input(v: _Verifier, node: Node, inputs: list[Node], scope: _Scope) -> None:
    _arity(v, node, inputs, 0)
    index = node.attrs.get("index")
    ports = v.block.inputs if v.block else []
    v.need(isinstance(index, int) and not isinstance(index, bool) and 0 <= index < len(ports),
           f"attribute 'index' = {index!r} is not one of the block's {len(ports)} inputs")
    v.need(scope.parent is None, "an input node belongs to the block's top level")
    _one(v, node, ports[index].type)


def _region_arg(v: _Verifier, node: Node, inputs: list[Node], scope: _Scope) -> None:
    _arity(v, node, inputs, 0)
    v.need(scope.parent is not None, f"a {node.op} node belongs to a region")
    v.need(len(node.types) == 1, "a region argument has one type")


def _loop_index(v: _Verifier, node: Node, inputs: list[Node], scope: _Scope) -> None:
    _region_arg(v, node, inputs, scope)
    axis = node.attrs.get("axis")
    v.need(axis is None or v.known_axis(axis), f"attribute 'axis' = {axis!r} is not an axis")
    _one(v, node, WireType(axes=(), lifted=False, dtype="int"))


def _number(v: _Verifier, node: Node, inputs: list[Node], scope: _Scope) -> None:
    _arity(v, node, inputs, 0)
    value = node.attrs.get("value")
    v.need(isinstance(value, str), f"attribute 'value' = {value!r} is not a number's text")
    try:
        sz.parse(value)
    except NcdError as exc:
        raise v.fail(f"attribute 'value' = {value!r}: {exc.message}") from None
    v.need(len(node.types) == 1 and node.types[0].axes == () and not node.types[0].lifted,
           "a number is one scalar (no axes, not lifted)")
    if node.types and node.types[0].dtype == "bool":  # a 0/1 branch of a boolean where, lowered as False/True
        v.need(value in ("0", "1"), f"a boolean number is 0 or 1, not {value!r}")


def _attribute(v: _Verifier, node: Node, inputs: list[Node], scope: _Scope) -> None:
    _arity(v, node, inputs, 0)
    name = node.attrs.get("name")
    params = [p for p in (v.block.params if v.block else []) if p.name == name and p.kind == node.op]
    v.need(len(params) == 1, f"attribute 'name' = {name!r} is not a {node.op} of the block")
    _one(v, node, params[0].type)


def _tuple_get(v: _Verifier, node: Node, inputs: list[Node], scope: _Scope) -> None:
    _arity(v, node, inputs, 1)
    index, src = node.attrs.get("index"), inputs[0]
    v.need(isinstance(index, int) and not isinstance(index, bool) and 0 <= index < len(src.types),
           f"attribute 'index' = {index!r} is not one of {src.id}'s {len(src.types)} values")
    _one(v, node, src.types[index])


def _tap(v: _Verifier, node: Node, inputs: list[Node], scope: _Scope) -> None:
    _arity(v, node, inputs, 1)
    name = node.attrs.get("name")
    v.need(name in (v.block.taps if v.block else []), f"attribute 'name' = {name!r} is not a tap of the block")
    _one(v, node, inputs[0].types[0])


def _call(v: _Verifier, node: Node, inputs: list[Node], scope: _Scope) -> None:
    block = v.block
    name = node.attrs.get("instance")
    inst = next((i for i in (block.instances if block else []) if i.name == name), None)
    v.need(inst is not None, f"attribute 'instance' = {name!r} is not an instance of the block")
    v.need(node.attrs.get("block") == inst.block, f"attribute 'block' = {node.attrs.get('block')!r} is not "
           f"instance {name}'s block {inst.block!r}")
    v.need(node.attrs.get("repeat") == inst.repeat, "attribute 'repeat' differs from the instance's")
    callee = v.ir.blocks[inst.block]
    # a step module (ncd/passes/step.py) passes each layer of a repeated instance its states too
    states = node.attrs.get("states", 0)
    v.need(isinstance(states, int) and not isinstance(states, bool) and 0 <= states < len(callee.inputs)
           and (not states or inst.repeat), f"attribute 'states' = {states!r} is not a repeated callee's state count")
    layers = inst.repeat if states else 1
    in_ports = callee.inputs[: len(callee.inputs) - states] + callee.inputs[len(callee.inputs) - states:] * layers
    out_types = callee.outputs[: len(callee.outputs) - states] + callee.outputs[len(callee.outputs) - states:] * layers
    _arity(v, node, inputs, len(in_ports))
    ports = node.attrs.get("ports")
    v.need(ports == [list(p.type.axes) for p in callee.inputs], "attribute 'ports' differs from the callee's inputs")
    lifted: list[str] = []
    for src, port in zip(inputs, in_ports):
        got = src.types[0]
        missing = [a for a in port.type.axes if a not in got.axes]
        v.need(not missing, f"input {src.id} lacks the axes {missing} of {callee.name}'s input {port.name}")
        lifted += [a for a in got.axes if a not in port.type.axes and a not in lifted]
    v.need(list(node.attrs.get("lift") or []) == lifted, f"attribute 'lift' should be {lifted}")
    if inst.repeat:
        v.need(len(callee.inputs) == 1 + states and len(callee.outputs) == 1 + states,
               "a repeated block has one input and one output (and in a step module its states in and out)")
    outs = call_output_types(lifted, out_types, any(src.types[0].lifted for src in inputs))
    v.need([(t.axes, t.lifted) for t in node.types] == [(t.axes, t.lifted) for t in outs],
           f"its stored types {[str(t) for t in node.types]} differ from the call's {[str(t) for t in outs]}")


def _init_random(v: _Verifier, node: Node, inputs: list[Node], scope: _Scope) -> None:
    _arity(v, node, inputs, 0)
    dist, args = node.attrs.get("dist"), node.attrs.get("args")
    v.need(dist in INITIALISERS, f"attribute 'dist' = {dist!r} is not one of {', '.join(INITIALISERS)}")
    v.need(isinstance(args, list) and all(isinstance(a, str) for a in args), "attribute 'args' is a list of numbers' texts")
    for a in args:
        try:
            sz.parse(a)
        except NcdError as exc:
            raise v.fail(f"initialiser argument {a!r}: {exc.message}") from None
    v.need(len(node.types) == 1, "an initialiser gives one value")


def _init_fill(v: _Verifier, node: Node, inputs: list[Node], scope: _Scope) -> None:
    _arity(v, node, inputs, 0)
    value = node.attrs.get("value")
    v.need(isinstance(value, (int, float)) and not isinstance(value, bool), f"attribute 'value' = {value!r} is not a number")
    v.need(len(node.types) == 1, "a fill gives one value")


def _shaped(v: _Verifier, node: Node, inputs: list[Node], scope: _Scope) -> None:
    """materialize / broadcast: one input, given the axes of attribute 'axes'."""
    _arity(v, node, inputs, 1)
    axes = node.attrs.get("axes")
    v.need(isinstance(axes, list) and all(v.known_axis(a) for a in axes), f"attribute 'axes' = {axes!r} is not axes")
    v.need(set(inputs[0].types[0].axes) <= set(axes), f"input axes {list(inputs[0].types[0].axes)} are not all in {axes}")
    v.need(len(node.types) == 1 and list(node.types[0].axes) == axes, f"its type must have the axes {axes}")


def _scan(v: _Verifier, node: Node, inputs: list[Node], scope: _Scope) -> None:
    axis, n_emit = node.attrs.get("axis"), node.attrs.get("n_emit")
    v.need(v.known_axis(axis), f"attribute 'axis' = {axis!r} is not an axis")
    v.need(isinstance(node.attrs.get("reverse"), bool), "attribute 'reverse' is true or false")
    v.need(isinstance(n_emit, int) and n_emit >= 1, f"attribute 'n_emit' = {n_emit!r} is not a positive count")
    backend = node.attrs.get("backend")
    v.need(backend is None or is_spec_name(backend), f"attribute 'backend' = {backend!r} is not a name")
    region, inner = v.region(node, scope, len(inputs) + 1, len(inputs) + n_emit)
    v.carries(node, inputs, region, inner)
    v.need(inner.ids[region.args[-1]].op == LOOP_INDEX, "a scan's last region argument is its loop_index")
    emitted = [inner.get(r).types[0] for r in region.results[len(inputs):]]
    v.need(all(axis not in t.axes for t in emitted), f"a step's output already has the scanned axis {axis}")
    v.same_types(node, [WireType(axes=(axis, *t.axes), lifted=True, dtype=t.dtype) for t in emitted])


def _repeat(v: _Verifier, node: Node, inputs: list[Node], scope: _Scope) -> None:
    count, names = node.attrs.get("count"), node.attrs.get("names")
    v.need(isinstance(count, int) and not isinstance(count, bool) and 1 <= count <= MAX_REPEAT,
           f"attribute 'count' = {count!r} is not a count from 1 to {MAX_REPEAT}")
    v.need(isinstance(names, list) and len(names) == len(inputs), "attribute 'names' names one value per input")
    v.region(node, scope, len(inputs), len(inputs))
    v.need([(t.axes, t.lifted) for t in node.types] == [(n.types[0].axes, n.types[0].lifted) for n in inputs],
           "a repeat gives back values of its inputs' types")


def _halting(v: _Verifier, node: Node, inputs: list[Node], scope: _Scope) -> None:
    steps, eps, halt_axes = node.attrs.get("max"), node.attrs.get("eps"), node.attrs.get("halt_axes")
    v.need(isinstance(steps, int) and not isinstance(steps, bool) and 1 <= steps <= MAX_REPEAT,
           f"attribute 'max' = {steps!r} is not a count from 1 to {MAX_REPEAT}")
    v.need(isinstance(eps, (int, float)) and not isinstance(eps, bool) and 0 < eps < 1,
           f"attribute 'eps' = {eps!r} is not a number in (0, 1)")
    v.need(node.attrs.get("mix") in ACT_MIXES, f"attribute 'mix' = {node.attrs.get('mix')!r} is not one of {ACT_MIXES}")
    v.need(isinstance(halt_axes, list) and all(v.known_axis(a) for a in halt_axes),
           f"attribute 'halt_axes' = {halt_axes!r} is not axes")
    region, inner = v.region(node, scope, len(inputs) + 1, len(inputs) + 1)
    carried = v.carries(node, inputs, region, inner)
    v.need(inner.ids[region.args[-1]].op == LOOP_INDEX, "a halting loop's last region argument is its loop_index")
    halt = inner.get(region.results[-1]).types[0]
    v.need(list(halt.axes) == halt_axes, f"the halting probability has axes {list(halt.axes)}, not {halt_axes}")
    for t in carried:
        v.need(set(halt_axes) <= set(t.axes), f"the halting probability's axes are not all on a carry {t}")
    v.need([(t.axes, t.lifted) for t in node.types] == [(t.axes, True) for t in carried] + [(tuple(halt_axes), True)],
           "a halting loop gives its carries and the ponder cost")


STRUCTURAL: Mapping[str, Rule] = {
    INPUT: _input, REGION_ARG: _region_arg, LOOP_INDEX: _loop_index, NUMBER_NODE: _number,
    PARAM: _attribute, BUFFER: _attribute, CONST: _attribute, TUPLE_GET: _tuple_get, TAP: _tap,
    CALL: _call, INIT_RANDOM: _init_random, INIT_FILL: _init_fill, MATERIALIZE: _shaped,
    BROADCAST: _shaped, SCAN: _scan, REPEAT: _repeat, HALTING: _halting,
}


def load_ir_json(text: str, filename: str) -> SpecIR:
    """IR JSON (as `ncd ir --json` writes it) read back and verified: a located NcdError otherwise."""
    from pydantic import ValidationError

    try:
        ir = SpecIR.model_validate_json(text)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        raise NcdError(f"{filename} is not ncd IR JSON: {where}: {first.get('msg')}",
                       hint="write it with ncd ir PATH --json") from None
    try:
        verify(ir)
    except NcdError as exc:
        raise exc.located(None, f"{filename} (IR of {ir.name!r})") from None
    return ir
