"""One block body → BlockIR: statements, parameters, instances, returns."""
from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING, Any

import sympy
from lark import Token, Tree

from ncd import sizes as sz
from ncd.errors import NcdError, Span
from ncd.frontend.common import (
    MAX_REPEAT,
    RESERVED,
    Binding,
    Frame,
    Scope,
    _did_you_mean,
    _region_ids,
    assigned_names,
    check_attribute_name,
    err,
    loc_of,
    type_tree_text,
)
from ncd.frontend.expressions import ExpressionBuilder
from ncd.frontend.loops import LoopBuilder
from ncd.frontend.parser import span_of
from ncd.ir import (BUFFER, HALTING, INIT_FILL, INIT_RANDOM, INPUT, LOOP_INDEX, MATERIALIZE, NUMBER_NODE, PARAM,
                   REGION_ARG, REPEAT, SCAN, TAP, TUPLE_GET, BlockIR, InstanceDef, Node, ParamDef, Port, Region,
                   WireType, walk)
from ncd.ops import OPS, dtypes, role
from ncd.ops.init import FLOAT32_MAX, INITIALISERS, Problem
from ncd.ops.base import CHOOSE, COMPARISON, TypeCtx

if TYPE_CHECKING:
    from ncd.frontend.builder import SpecBuilder



@lru_cache(maxsize=1024)
def _init_problem(fname: str, args: tuple[sympy.Expr, ...]) -> Problem:
    """An initialiser row's check of its arguments, memoised: comparing irrational bounds
    (``uniform(-D^-0.5, D^-0.5)``) costs about a millisecond, and a spec repeats the same few."""
    row = INITIALISERS[fname]
    return row.check(list(args)) if row.check is not None else None

class BlockBuilder(ExpressionBuilder, LoopBuilder):
    """Builds one block specialisation: its ports, parameters, instances and body graph."""

    def __init__(self, spec: "SpecBuilder", tree: Tree, key: str, subst: dict[str, str],
                 numbers: dict[str, sympy.Expr]) -> None:
        self.spec = spec
        self.tree = tree
        self.key = key
        self.subst = subst
        self.numbers = numbers
        self.params: list[ParamDef] = []
        self.instances: dict[str, InstanceDef] = {}
        self.instance_blocks: dict[str, BlockIR] = {}
        self.taps: list[str] = []
        self.counter = 0
        self.frames: list[Frame] = []
        self.scope = Scope()
        self.results: list[str] | None = None
        self.return_tree: Tree | None = None
        self.number_values: dict[str, sympy.Expr] = {}

    # ---------------------------------------------------------------- nodes
    def fresh(self, stem: str) -> str:
        """Node ids double as variable names in emitted Python, so they are identifiers."""
        self.counter += 1
        return f"{stem.replace(chr(39), '_p')}_{self.counter}"

    def add(self, op: str, inputs: list[str], attrs: dict[str, Any], types: list[WireType], where: Any,
            name: str | None = None, regions: list[Region] | None = None) -> Node:
        node = Node(id=self.fresh(name or op), op=op, inputs=inputs, attrs=attrs, types=types,
                    loc=loc_of(where), regions=regions or [], name=name)
        self.frames[-1].nodes.append(node)
        self.node_index[node.id] = node
        return node

    def type_of(self, node_id: str) -> WireType:
        return self.node_index[node_id].type

    def add_op(self, op: str, inputs: list[str], attrs: dict[str, Any], where: Any,
               spans: dict[str, Span] | None = None) -> Node:
        """``spans``: finer places for the typing rule's errors (an option, the operator, an axis)."""
        opdef = OPS[op]
        ctx = TypeCtx(span=span_of(where) if where is not None else None, sizes=self.spec.size,
                      known_axis=self.spec.known_axis,
                      unify=lambda axis, size, what: self.spec.unify(axis, size, what, where),
                      spans={k: v for k, v in (spans or {}).items() if v is not None},
                      input_ops=[self.node_index[i].op if i in self.node_index else "" for i in inputs])
        in_types = [self.type_of(i) for i in inputs]
        try:
            types = opdef.infer(ctx, in_types, attrs)
        except NcdError as exc:
            if exc.span is not None or ctx.span is None:
                raise
            raise NcdError(exc.message, ctx.span, hint=exc.hint) from None
        types = dtypes.check(opdef.dtypes, ctx, op, in_types, [self.number_value(i) for i in inputs], types)
        if types and types[0].dtype in ("int", "bool"):
            # `ids + 1`: the literal is an integer too (lowered as 1, not 1.0); `where(m, b, 0)` of a
            # boolean b: the 0 is False (where's condition keeps its own type)
            # A comparison's literal follows the wire it is compared with, not the boolean result:
            # `x > 0.5` keeps 0.5 a float, `ids == 2` makes 2 an integer.
            compared = [t.dtype for i, t in zip(inputs, in_types) if self.number_value(i) is None]
            for k, i in enumerate(inputs):
                if self.number_value(i) is not None and not (types[0].dtype == "bool" and role(op) == CHOOSE and k == 0):
                    dtype = (compared[0] if compared else "float") if role(op) == COMPARISON else types[0].dtype
                    self.node_index[i].types = [self.node_index[i].type.model_copy(update={"dtype": dtype})]
        return self.add(op, inputs, attrs, types, where)

    def number(self, value: sympy.Expr, where: Any) -> Node:
        text = "" if self.frames[-1].scratch else sz.to_text(value)  # a scratch node's text is never read
        node = self.add(NUMBER_NODE, [], {"value": text}, [WireType(axes=(), lifted=False)], where)
        self.number_values[node.id] = value
        return node

    def number_value(self, node_id: str) -> sympy.Expr | None:
        """The sympy value of a number node (kept beside the IR's text form, which is slow to re-parse)."""
        return self.number_values.get(node_id)

    # ---------------------------------------------------------------- types
    def axis_name(self, tok: Token | Tree) -> str:
        name = self.spec.subst_axis(str(tok), self.subst)
        if not self.spec.known_axis(name):
            hint = _did_you_mean(name, self.spec.axes) or f"declare it: axis {name}"
            raise err(f"unknown axis {name}", tok, hint=hint)
        return name

    def wire_type(self, tree: Tree, lifted: bool, dtype: Token | None = None) -> WireType:
        """``dtype``: the ``int`` / ``bool`` written after a port's type (a float wire when absent)."""
        kind = str(dtype) if dtype is not None else "float"
        if tree.data == "any_type":
            return WireType(axes=(), lifted=lifted, dtype=kind)
        axes = [self.axis_name(t) for t in tree.children if t is not None]
        for i, a in enumerate(axes):
            if a in axes[:i]:
                raise err(f"axis {a} appears twice in one type", tree.children[i],
                          hint="a second wire of the same axis is written with a prime: " + a + "'")
        return WireType(axes=tuple(axes), lifted=lifted, dtype=kind)

    # ---------------------------------------------------------------- build
    def build(self) -> BlockIR:
        name_tok, _params, *rest = self.tree.children
        body = rest[-1]
        ret_tree = rest[-2]
        args = [a for a in rest[:-2] if a is not None]
        self.node_index: dict[str, Node] = {}
        top = Frame(nodes=[], kind="block")
        self.frames.append(top)
        ports: list[Port] = []
        for arg in args:
            aname, atype, dtype = arg.children
            t = self.wire_type(atype, lifted=True, dtype=dtype)
            self.check_new_name(str(aname), aname)
            if str(aname) in self.scope.names:
                raise err(f"block {self.key} has two inputs named {aname}", aname, hint="rename one of them")
            node = self.add(INPUT, [], {"index": len(ports)}, [t], aname, name=str(aname))
            ports.append(Port(name=str(aname), type=t))
            self.scope.names[str(aname)] = Binding("value", node.id)
        outputs = [self.wire_type(t.children[0], lifted=True, dtype=t.children[1]) for t in ret_tree.children]
        self.statements(body.children)
        if self.results is None:
            raise err(f"block {self.key} does not return anything", name_tok, hint="end the block with return ...")
        results = self.check_return(outputs)
        return BlockIR(key=self.key, name=str(name_tok), inputs=ports,
                       outputs=[self.type_of(r) for r in results], params=self.params,
                       instances=list(self.instances.values()), taps=self.taps, nodes=top.nodes,
                       results=results, loc=loc_of(name_tok))

    def check_return(self, outputs: list[WireType]) -> list[str]:
        assert self.results is not None
        where = self.return_tree
        if len(self.results) != len(outputs):
            raise err(f"block {self.key} declares {len(outputs)} outputs but returns {len(self.results)}", where,
                      hint=f"declare what it returns: -> {', '.join(self.type_text(self.type_of(r)) for r in self.results)}"
                           f" (or return {len(outputs)} value{'s' if len(outputs) != 1 else ''})")
        fixed = []
        exprs = where.children if len(where.children) == len(self.results) else where.children * len(self.results)
        for rid, want, expr in zip(self.results, outputs, exprs):  # `return G(x)`: one expression, its values
            got = self.type_of(rid)
            if sorted(got.axes) != sorted(want.axes):
                raise err(f"wrong return type: the block declares {want} but returns a wire with axes {got}",
                          expr, hint="contract or reduce the extra axes, or fix the declared type")
            if got.dtype != want.dtype:
                suffix = "" if got.dtype == "float" else f" {got.dtype}"
                kinds = {"int": "an integer", "bool": "a boolean", "float": "a float"}
                raise err(f"wrong return type: the block declares {kinds[want.dtype]} wire {want} but returns "
                          f"{kinds[got.dtype]} wire", expr, hint=f"declare it: -> [{', '.join(want.axes)}]{suffix}" if got.dtype != "float"
                          else "declare the output a float wire: drop the int/bool after its type")
            if got.axes != want.axes:
                rid = self.add_op("annotate", [rid], {"axes": list(want.axes)}, where).id
            fixed.append(rid)
        return fixed

    @staticmethod
    def type_text(t: WireType) -> str:
        """A wire type as a block declares it (``[D]``, ``[T] int``), for hints to paste."""
        return f"[{', '.join(t.axes)}]" + ("" if t.dtype == "float" else f" {t.dtype}")

    def check_new_name(self, name: str, where: Any) -> None:
        if name in RESERVED:
            raise err(f"{name} is a reserved name", where, hint="pick another name")
        binding = self.scope.lookup(name)
        if binding is not None and binding.kind in ("instance", "param"):
            raise err(f"{name} is already defined in this block", where,
                      hint=f"give each {binding.kind} its own name")

    # ---------------------------------------------------------------- statements
    def statements(self, stmts: list[Any]) -> None:
        for stmt in stmts:
            if not isinstance(stmt, Tree):
                continue
            if self.results is not None and self.frames[-1].kind == "block":
                raise err("statement after return", stmt, hint="return must be the last statement of a block")
            getattr(self, f"stmt_{stmt.data}")(stmt)

    def stmt_assign(self, tree: Tree) -> None:
        *targets, expr = tree.children
        value = self.expr(expr)
        node = self.node_index[value]
        names = [str(t) for t in targets]
        if len(names) == 1:
            if len(node.types) != 1:
                raise err(f"this expression gives {len(node.types)} values; unpack them: a, b = ...", targets[0],
                          hint=f"write {len(node.types)} names on the left: "
                               f"{', '.join([names[0]] + [f'{names[0]}{i}' for i in range(2, len(node.types) + 1)])} = ...")
            self.bind_value(names[0], value, targets[0])
            return
        if len(node.types) != len(names):
            raise err(f"{len(names)} names on the left but the expression gives {len(node.types)} values", targets[0],
                      hint=f"write {len(node.types)} name{'s' if len(node.types) != 1 else ''} on the left: "
                           f"{', '.join(names[:len(node.types)] + [f'v{i}' for i in range(len(names), len(node.types))])} = ...")
        for i, (name, tok) in enumerate(zip(names, targets)):
            part = self.add(TUPLE_GET, [value], {"index": i}, [node.types[i]], tok, name=name)
            self.bind_value(name, part.id, tok)

    def bind_value(self, name: str, node_id: str, where: Any) -> None:
        existing = self.scope.lookup(name)
        if existing is not None and existing.kind in ("param", "instance"):
            raise err(f"{name} is a {existing.kind} of this block and cannot be reassigned", where,
                      hint=f"give the new value its own name: {name}2 = ...")
        if existing is not None and existing.kind == "index":
            raise err(f"{name} is a loop index and cannot be reassigned", where,
                      hint=f"give the new value its own name: {name}2 = ...")
        if self.spec.known_axis(name) and existing is None:
            raise err(f"{name} is an axis; a value cannot share its name", where, hint="use a lowercase name")
        if self.node_index[node_id].name is None:
            self.node_index[node_id].name = name
        self.scope.names[name] = Binding("value", node_id)

    def stmt_local_axis(self, tree: Tree) -> None:
        for axis_def in tree.children:
            self.spec.declare_axis(axis_def, self.subst, self.numbers)
            name = str(axis_def.children[0])
            if axis_def.children[1] is not None:
                self.spec._check_axis_size(name, axis_def.children[1])

    def stmt_const_decl(self, tree: Tree) -> None:
        self.const_value(tree, global_decl=False)

    def stmt_const_list(self, tree: Tree) -> None:
        self.const_value(tree, global_decl=False)

    def stmt_param_decl(self, tree: Tree, kind: str = PARAM) -> None:
        *names, type_tree, init = tree.children
        t = self.wire_type(type_tree, lifted=False)
        if init is None and kind == PARAM:
            raise err(f"param {names[0]} needs an initialiser", names[0],
                      hint=f"param {names[0]}: {type_tree_text(type_tree)} init normal(0, 0.02)")
        for tok in names:
            region = self.init_region(init, t, None, kind)
            self.declare_param(str(tok), kind, t, region, tok)

    def stmt_buffer_decl(self, tree: Tree) -> None:
        self.stmt_param_decl(tree, kind=BUFFER)

    def stmt_param_formula(self, tree: Tree) -> None:
        name, binders, init = tree.children
        axes, index_names = self.binders(binders)
        t = WireType(axes=tuple(axes), lifted=False)
        region = self.init_region(init, t, dict(zip(index_names, axes)), PARAM)
        self.declare_param(str(name), PARAM, t, region, name)

    def binders(self, tree: Tree) -> tuple[list[str], list[str]]:
        axes, names = [], []
        for binder in tree.children:
            var, axis = binder.children
            axes.append(self.axis_name(axis))
            names.append(str(var))
        return axes, names

    def declare_param(self, name: str, kind: str, t: WireType, init: Region, where: Any) -> None:
        check_attribute_name(name, where)
        self.check_new_name(name, where)
        if self.scope.lookup(name) is not None:
            raise err(f"{name} is already defined in this block", where, hint="give each param its own name")
        self.params.append(ParamDef(name=name, kind=kind, type=t, init=init, loc=loc_of(where)))
        node = self.add(kind, [], {"name": name}, [t], where, name=name)
        self.scope.names[name] = Binding("param", node.id)

    def init_region(self, init: Tree | None, t: WireType, index_vars: dict[str, str] | None, kind: str) -> Region:
        """The nodes that compute a parameter's first value (never run again after construction)."""
        frame = Frame(nodes=[], kind="init")
        self.frames.append(frame)
        saved = self.scope
        self.scope = Scope(parent=None)
        for name, binding in saved.names.items():
            if binding.kind == "number":
                self.scope.names[name] = binding
        try:
            if init is None:
                # Only a buffer may omit its init (it starts as ones): stmt_param_decl refuses a
                # param without one, located at its name, before it gets here; the grammar gives
                # every `param p[i: A] init ...` and `const` an init.
                assert kind == BUFFER, f"an init region of a {kind} without an initialiser"
                value = self.add(INIT_FILL, [], {"value": 1.0}, [t], None).id
            else:
                expr = init.children[0]
                if index_vars:
                    for var, axis in index_vars.items():
                        idx = self.add_op("idx", [], {"axis": axis}, expr)
                        self.scope.names[var] = Binding("value", idx.id)
                value = self.init_expr(expr, t)
            got = self.type_of(value)
            if not set(got.axes) <= set(t.axes):
                extra = [a for a in got.axes if a not in t.axes]
                raise err(f"the initial value has axes {got} but the parameter is {t}: "
                          f"{', '.join(extra)} not on the parameter", init,
                          hint=f"add {', '.join(extra)} to the parameter's axes, or reduce them in the initial "
                               f"value: sum(..., over = {extra[0]})")
            result = self.add(MATERIALIZE, [value], {"axes": list(t.axes)}, [t], init)
        finally:
            self.scope = saved
            self.frames.pop()
        return Region(kind="init", nodes=frame.nodes, results=[result.id])

    def init_expr(self, tree: Tree, t: WireType) -> str:
        if tree.data == "name" and str(tree.children[0]) in ("zeros", "ones"):  # `init zeros` = zeros()
            return self.add(INIT_RANDOM, [], {"dist": str(tree.children[0]), "args": []}, [t], tree).id
        if tree.data == "call" and str(tree.children[0]) in INITIALISERS:
            fname = str(tree.children[0])
            args = [a for a in tree.children[1:] if a is not None]
            values = []
            for a in args:
                if a.data != "pos_arg":
                    raise err(f"{fname} takes positional numbers", a,
                              hint=f"drop the names: {fname}({', '.join(INITIALISERS[fname].args)}) with numbers")
                vid = self.expr(a.children[0])
                v = self.number_value(vid)
                if v is None:
                    raise err(f"the arguments of {fname} must be numbers", a,
                              hint=f"write a number, a constant or a size expression (D^-0.5): {fname}({', '.join(INITIALISERS[fname].args)})")
                if v.is_number and fname != "const" and not abs(float(v)) <= FLOAT32_MAX:
                    raise err(f"the arguments of {fname} must be finite numbers within float32's range, not {v}",
                              a, hint="weights are drawn in the default dtype (float32 unless set otherwise)")
                values.append(sz.to_text(v))
            row = INITIALISERS[fname]
            if len(values) != len(row.args):
                raise err(f"{fname} takes {len(row.args)} arguments, got {len(values)}", tree,
                          hint=f"{fname}({', '.join(row.args)})")
            nums = [sz.parse(v) for v in values]  # symbolic where a size is bound only at load
            problem = _init_problem(fname, tuple(nums))
            if problem is not None:
                message, hint, at = problem
                raise err(message, args[at], hint=hint)
            return self.add(INIT_RANDOM, [], {"dist": fname, "args": values}, [t], tree).id
        try:
            return self.expr(tree)
        except NcdError as error:
            if tree.data == "name" and error.message == f"unknown name {tree.children[0]}":
                name = str(tree.children[0])
                raise err(f"unknown initialiser {name}", tree, hint=_did_you_mean(name, INITIALISERS)
                          or "write one of: " + ", ".join(f"{r.name}({', '.join(r.args)})" if r.args else r.name
                                                          for r in INITIALISERS.values())
                          + ", or a formula over index variables") from None
            raise

    def stmt_use_decl(self, tree: Tree) -> None:
        for item in tree.children:
            name_tok, block_tok, params, repeat = item.children
            name = str(name_tok)
            check_attribute_name(name, name_tok)
            self.check_new_name(name, name_tok)
            if self.scope.lookup(name) is not None or name in self.instances:
                raise err(f"{name} is already defined in this block", name_tok, hint="give each instance its own name")
            args: list[tuple[str | None, Tree]] = []
            if params is not None:
                for p in params.children:
                    key, value = p.children
                    args.append((str(key) if key is not None else None, value))
            block = self.spec.specialise(str(block_tok), args, block_tok, self)
            count = None
            if repeat is not None:
                count = int(str(repeat.children[0]))
                if count < 1:
                    raise err("a repeat count must be at least 1", repeat, hint=f"use l = {block.name} × 1, or drop the × to use one copy")
                if count > MAX_REPEAT:
                    raise err(f"a repeat count must be at most {MAX_REPEAT}, got {count}", repeat,
                              hint="each of the N copies is a separate module with its own weights")
                if len(block.inputs) != 1 or len(block.outputs) != 1 or \
                        sorted(block.inputs[0].type.axes) != sorted(block.outputs[0].axes):
                    raise err(f"{block.name} × {count} chains the block into itself, so it needs one input and "
                              f"one output of the same axes", repeat,
                              hint=f"drop the × {count} and call the instance where you need it, or declare {count} "
                                   f"instances (use a = {block.name}, b = {block.name}, ...)")
            self.instances[name] = InstanceDef(name=name, block=block.key, repeat=count, loc=loc_of(name_tok))
            self.instance_blocks[name] = block
            self.scope.names[name] = Binding("instance", name)

    def stmt_tap(self, tree: Tree) -> None:
        name_tok, expr = tree.children
        name = str(name_tok)
        if name in self.taps:
            raise err(f"tap {name} is defined twice", name_tok, hint="give each tap its own name")
        check_attribute_name(name, name_tok)
        value = self.expr(expr)
        node = self.add(TAP, [value], {"name": name}, [self.type_of(value)], name_tok, name=name)
        self.taps.append(name)
        self.bind_value(name, node.id, name_tok)

    def stmt_return_stmt(self, tree: Tree) -> None:
        if self.frames[-1].kind != "block":
            raise err("return inside a loop body", tree, hint="scan bodies end with emit, repeat bodies reassign")
        results = [self.expr(e) for e in tree.children]
        many = [(rid, e) for rid, e in zip(results, tree.children) if len(self.node_index[rid].types) != 1]
        if many and len(results) == 1:  # `return G(x)` of a block with several outputs returns them all
            node = self.node_index[results[0]]
            results = [self.add(TUPLE_GET, [node.id], {"index": i}, [t], tree.children[0]).id
                       for i, t in enumerate(node.types)]
        elif many:
            rid, where = many[0]
            raise err(f"this expression gives {len(self.node_index[rid].types)} values inside a return of several",
                      where, hint="unpack it first (a, b = ...), then return the values by name")
        self.results = results
        self.return_tree = tree

    def stmt_emit_stmt(self, tree: Tree) -> None:
        frame = self.frames[-1]
        if frame.kind != SCAN:
            raise err("emit outside a scan", tree, hint="emit builds a scan's output; a block uses return")
        if frame.emitted is not None:
            raise err("a scan emits once per step", tree, hint="emit a, b emits two sequences")
        frame.emitted = [self.expr(e) for e in tree.children]

    def stmt_halt_stmt(self, tree: Tree) -> None:
        frame = self.frames[-1]
        if frame.kind != HALTING:
            raise err("halt outside a halting loop", tree,
                      hint="halt ends the body of halting n max M mix graves carry (...) { ... }; elsewhere drop it")
        frame.halt = self.expr(tree.children[0])

    def stmt_repeat_stmt(self, tree: Tree) -> None:
        count_tree, *body = tree.children
        count = self.const_int(count_tree, "a repeat count")
        trips = count * self.frames[-1].trips
        if trips > MAX_REPEAT:
            what = f"got {count}" if count == trips else f"got {count} inside loops that already run {trips // count} times"
            raise err(f"a repeat runs its body at most {MAX_REPEAT} times in all, {what}", count_tree,
                      hint="the same cap as `use l = B × N`")
        carried = [n for n in assigned_names(body) if (b := self.scope.lookup(n)) is not None and b.kind == "value"]
        if not carried:
            raise err("this repeat body changes nothing outside it", tree,
                      hint="reassign a value of the block inside the body: x = layer(x)")
        init_ids = [self.scope.lookup(n).ref for n in carried]
        region, results = self.region(REPEAT, body, [(n, self.type_of(i)) for n, i in zip(carried, init_ids)],
                                      tree, extra_args=[], trips=count)
        node = self.add(REPEAT, init_ids, {"count": count, "names": carried}, [self.type_of(i) for i in init_ids],
                        tree, regions=[region])
        for i, name in enumerate(carried):
            part = self.add(TUPLE_GET, [node.id], {"index": i}, [node.types[i]], tree, name=name)
            self.scope.names[name] = Binding("value", part.id)

    def region(self, kind: str, body: list[Any], carries: list[tuple[str, WireType]], where: Any,
               extra_args: list[tuple[str, str, dict[str, Any]]], trips: int = 1) -> tuple[Region, Frame]:
        """Build a nested body with its carried names bound to fresh region arguments."""
        frame = Frame(nodes=[], kind=kind, trips=self.frames[-1].trips * trips)
        self.frames.append(frame)
        saved = self.scope
        self.scope = Scope(parent=saved)
        args = []
        try:
            for name, t in carries:
                arg = self.add(REGION_ARG, [], {"name": name}, [t], where, name=name)
                self.scope.names[name] = Binding("value", arg.id)
                args.append(arg.id)
            for name, binding_kind, attrs in extra_args:
                arg = self.add(LOOP_INDEX, [], attrs, [WireType(axes=(), lifted=False, dtype="int")], where,
                               name=name)
                self.scope.names[name] = Binding(binding_kind, arg.id)
                args.append(arg.id)
            self.statements(body)
            results = []
            for name, t in carries:
                rid = self.scope.lookup(name).ref
                got = self.type_of(rid)
                if sorted(got.axes) != sorted(t.axes):
                    loc = self.node_index[rid].loc  # the expression last assigned to it
                    raise NcdError(f"{name} enters the loop as {t} but leaves the step as {got}",
                                   Span(loc.line, loc.col) if loc else span_of(where),
                                   hint="the carried state must keep its axes")
                if got.dtype == "int" and t.dtype != "int":
                    loc = self.node_index[rid].loc
                    raise NcdError(f"{name} enters the loop as a float wire but leaves the step as an integer wire",
                                   Span(loc.line, loc.col) if loc else span_of(where),
                                   hint="convert it: as_float(...)")
                if got.axes != t.axes:
                    rid = self.add_op("annotate", [rid], {"axes": list(t.axes)}, where).id
                results.append(rid)
        finally:
            self.scope = saved
            self.frames.pop()
        defined = {n.id for n in frame.nodes}
        region = Region(kind=kind, args=args, nodes=frame.nodes, results=results)
        region_captures = sorted({i for n in walk(frame.nodes) for i in n.inputs if i not in defined
                                  and i not in _region_ids(frame.nodes)})
        frame.captures = region_captures
        return region, frame
