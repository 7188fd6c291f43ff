"""Expressions of a block body: names, arithmetic, contraction, views, op and block calls."""
from __future__ import annotations

import math
from typing import Any

import sympy
from lark import Token, Tree

from ncd import sizes as sz
from ncd.errors import NcdError, Span
from ncd.frontend.common import (
    NAMED_CONSTANTS,
    Binding,
    Frame,
    Scope,
    _did_you_mean,
    check_attribute_name,
    checked_number,
    err,
    loc_of,
    number_literal,
)
from ncd.frontend.parser import span_of
from ncd.ir import (CALL, CONST, MATERIALIZE, NUMBER_NODE, InstanceDef, Node, ParamDef, Region, WireType,
                    call_output_types)
from ncd.limits import MAX_CONST_LIST, MAX_EXPR_DEPTH
from ncd.ops import OPS, arith
from ncd.ops.init import FLOAT32_MAX, INITIALISERS
from ncd.ops.base import AXES, AXES_OR_MAP, DIV, AXIS, AXIS_MAP, FLAG, NAME, NUMBER, NUMBERS, FoldError



def _arity_hint(name: str, doc: str, want: str, too_many: bool, options: list[str]) -> str:
    """Too many inputs to an op with unset options: its options are named, not positional."""
    if too_many and options:
        named = ", ".join(f"{k} = ..." for k in options)
        return f"options are named: {name}(x, {named}) ({doc})" if doc else f"options are named: {name}(x, {named})"
    return f"{name}: {doc}" if doc else f"pass {want} inputs"

class ExpressionBuilder:
    """Mixin of BlockBuilder: one ``expr_<rule>`` method per expression rule of the grammar."""

    def const_int(self, tree: Tree, what: str) -> int:
        vid = self.expr(tree)
        value = self.number_value(vid)
        if value is None or not value.is_number or not value.is_integer or value < 0:
            raise err(f"{what} must be a whole number known when the spec is checked", tree,
                      hint="write a number such as 3, or arithmetic of numbers and sized axes (D / 2)")
        return int(value)

    def expr(self, tree: Tree | Token) -> str:
        if isinstance(tree, Token):
            raise err(f"unexpected {tree}", tree, hint="write an expression: a name, a number or a call")
        method = getattr(self, f"expr_{tree.data}", None)
        if method is None:
            raise err(f"{tree.data} is not allowed here", tree, hint="write an expression: a name, a number or a call")
        depth = self.__dict__.get("_expr_depth", 0)
        if depth >= MAX_EXPR_DEPTH:  # refused here, at its place, before Python's stack runs out
            raise err(f"this expression nests more than {MAX_EXPR_DEPTH} levels deep (calls inside calls, or a "
                      f"chain of operators, each counts a level)", tree,
                      hint="name the intermediate values: y = ...; z = f(y)")
        self._expr_depth = depth + 1
        try:
            return method(tree)
        finally:
            self._expr_depth = depth

    def expr_number(self, tree: Tree) -> str:
        return self.number(number_literal(tree.children[0]), tree).id

    def expr_name(self, tree: Tree) -> str:
        name = str(tree.children[0])
        binding = self.scope.lookup(name)
        if binding is not None:
            if binding.kind == "value" or binding.kind == "param":
                return binding.ref
            if binding.kind == "number":
                return self.number(sz.parse(binding.ref), tree).id
            if binding.kind == "index":
                return binding.ref
            raise err(f"{name} is a block instance; call it: {name}(...)", tree, hint=f"write {name}(x) with its inputs")
        if name in self.numbers:
            return self.number(self.numbers[name], tree).id
        if name in NAMED_CONSTANTS:
            return self.number(NAMED_CONSTANTS[name], tree).id
        axis = self.spec.subst_axis(name, self.subst)
        if self.spec.known_axis(axis):
            return self.number(self.spec.size(axis), tree).id
        if name in self.spec.global_consts:
            return self.const_value(self.spec.global_consts[name], global_decl=True)
        options = self.scope.all_names() | set(self.spec.axes)
        raise err(f"unknown name {name}", tree, hint=_did_you_mean(name, options)
                  or f"assign it before this line ({name} = ...), or declare it: axis {name} / const {name} = ...")

    def const_value(self, tree: Tree, global_decl: bool) -> str:
        name_tok = tree.children[0]
        name = str(name_tok)
        check_attribute_name(name, name_tok)
        existing = self.scope.lookup(name)
        if existing is not None:
            if global_decl:
                return existing.ref
            raise err(f"{name} is already defined in this block", name_tok,
                      hint=f"give the constant its own name: const {name}2 ...")
        if tree.data == "const_list":
            return self.const_list(tree)
        _, binders, type_tree, expr = tree.children
        index_vars: dict[str, str] = {}
        if binders is not None:
            axes, names = self.binders(binders)
            index_vars = dict(zip(names, axes))
        # A formula with no axes is just a number: fold it.
        if binders is None and type_tree is None:
            vid = self.expr(expr)
            if self.number_value(vid) is not None:
                self.scope_root().names[name] = Binding("number", sz.to_text(self.number_value(vid)))
                return vid
            raise err(f"constant {name} must be a number, or declare its axes: const {name}[i: A] = ...", expr,
                      hint=f"a wire-valued formula is a constant with axes: const {name}[i: A] = ...; or compute it "
                           f"in the block: {name} = ...")
        t = WireType(axes=tuple(index_vars.values()), lifted=False) if binders is not None else \
            self.wire_type(type_tree, lifted=False)
        init = Tree("init", [expr], meta=expr.meta)
        region = self.init_region(init, t, index_vars or None, CONST)
        self.params.append(ParamDef(name=name, kind=CONST, type=t, init=region, loc=loc_of(name_tok)))
        node = Node(id=self.fresh(name), op=CONST, attrs={"name": name}, types=[t], loc=loc_of(name_tok),
                    name=name)
        self.frames[0].nodes.insert(0, node)
        self.node_index[node.id] = node
        self.scope_root().names[name] = Binding("param", node.id)
        return node.id

    def const_list(self, tree: Tree) -> str:
        """`const a[P] = [v0, v1, ...]`: a constant wire over P from numbers known now, as many as P's size."""
        name_tok, axis_tok, *items = tree.children
        name, axis = str(name_tok), self.axis_name(axis_tok)
        if len(items) > MAX_CONST_LIST:
            raise err(f"constant {name} lists {len(items)} numbers, more than the limit of {MAX_CONST_LIST}",
                      items[MAX_CONST_LIST], hint="compute a long table with a formula: const a[i: P] = ...")
        frame = Frame(nodes=[], kind="init", scratch=True)  # the items' nodes are thrown away: only their values stay
        self.frames.append(frame)
        try:
            values = []
            for item in items:
                value = self.number_value(self.expr(item))
                if value is None or not value.is_number or not value.is_extended_real:
                    raise err(f"the items of constant {name} must be numbers known when the spec is checked", item,
                              hint="write numbers or arithmetic of numbers, named constants (pi) and axis sizes")
                values.append(float(value))
        finally:
            self.frames.pop()
        if not all(math.isfinite(v) for v in values):
            bad = next(i for i, v in zip(items, values) if not math.isfinite(v))
            raise err(f"the items of constant {name} must be finite numbers", bad,
                      hint="write finite numbers (inf and nan are not list items)")
        self.spec.unify(axis, sympy.Integer(len(values)), f"the length of the list of constant {name}",
                        items[0] if items else tree)
        t = WireType(axes=(axis,), lifted=False)
        region = Region(kind="init", nodes=[], results=[])
        self.frames.append(Frame(nodes=region.nodes, kind="init"))
        try:
            listed = self.add("values", [], {"axis": axis, "values": values}, [t], tree)
            region.results.append(self.add(MATERIALIZE, [listed.id], {"axes": [axis]}, [t], tree).id)
        finally:
            self.frames.pop()
        self.params.append(ParamDef(name=name, kind=CONST, type=t, init=region, loc=loc_of(name_tok)))
        node = Node(id=self.fresh(name), op=CONST, attrs={"name": name}, types=[t], loc=loc_of(name_tok), name=name)
        self.frames[0].nodes.insert(0, node)
        self.node_index[node.id] = node
        self.scope_root().names[name] = Binding("param", node.id)
        return node.id

    def scope_root(self) -> Scope:
        scope = self.scope
        while scope.parent is not None:
            scope = scope.parent
        return scope

    def fold(self, op: str, ids: list[str], tree: Tree, operands: list[Any] | None = None) -> str | None:
        """The op's value where every input is a number known now (its row's ``fold``), else None;
        ``operands``: the trees of the operands, for errors that point at one of them."""
        values = [self.number_value(i) for i in ids]
        if arith(op) == DIV and values[1] is not None and values[1] == 0:
            # 1 / 0 points at the whole number; a wire / 0 (inf or nan everywhere) at the divisor
            at = operands[1] if operands and values[0] is None else tree
            raise err("division by zero", at, hint="divide by a non-zero number")
        rule = OPS[op].fold
        if rule is None or not values or any(v is None for v in values):
            return None
        try:
            result = rule(*values)
        except FoldError as exc:
            raise err(str(exc), tree, hint=exc.hint) from None
        return self.number(checked_number(result, tree), tree).id

    def _binary(self, tree: Tree, op: str) -> str:
        ids = [self.expr(c) for c in tree.children]
        folded = self.fold(op, ids, tree, list(tree.children))
        if folded is not None:
            return folded
        return self.add_op(op, ids, {}, tree).id

    def expr_add(self, tree: Tree) -> str:
        return self._binary(tree, "add")

    def expr_sub(self, tree: Tree) -> str:
        return self._binary(tree, "sub")

    def expr_mul(self, tree: Tree) -> str:
        return self._binary(tree, "mul")

    def expr_div(self, tree: Tree) -> str:
        return self._binary(tree, "div")

    def expr_pow(self, tree: Tree) -> str:
        return self._binary(tree, "pow")

    def expr_neg(self, tree: Tree) -> str:
        vid = self.expr(tree.children[0])
        folded = self.fold("neg", [vid], tree)
        return folded if folded is not None else self.add_op("neg", [vid], {}, tree).id

    def expr_compare(self, tree: Tree) -> str:
        left, cmp, right = tree.children
        return self.add_op("compare", [self.expr(left), self.expr(right)], {"cmp": str(cmp)}, tree).id

    def expr_contract(self, tree: Tree) -> str:
        left, axes_tree, right = tree.children
        axes = None if axes_tree is None else self.distinct_axes(axes_tree.children, "@[...]")
        lid, rid = self.expr(left), self.expr(right)
        at_op = self.symbol_after(left, "@")
        for side, vid in (("left", lid), ("right", rid)):
            if self.number_value(vid) is not None:
                raise NcdError(f"the {side} operand of @ is a number; use * to scale", at_op or span_of(tree),
                               hint="write a * x: a number scales a wire, @ contracts two wires")
        spans = {"@": at_op}
        if axes_tree is not None:
            spans.update({f"axis {a}": span_of(t) for a, t in zip(axes, axes_tree.children)})
        return self.add_op("contract", [lid, rid], {"axes": axes}, tree, spans=spans).id

    def symbol_after(self, item: Tree, symbol: str) -> Span | None:
        """Where an operator the grammar drops from the tree (``@``) is: the first one after ``item``."""
        end = getattr(getattr(item, "meta", None), "end_pos", None)
        source = self.spec.source
        at = source.find(symbol, end) if end is not None else -1
        if at < 0:
            return None
        return Span(source.count("\n", 0, at) + 1, at - source.rfind("\n", 0, at))

    def expr_annotate(self, tree: Tree) -> str:
        value, type_tree = tree.children
        vid = self.expr(value)
        want = self.wire_type(type_tree, lifted=True)
        return self.add_op("annotate", [vid], {"axes": list(want.axes)}, type_tree).id

    def expr_view(self, tree: Tree) -> str:
        value, *items = tree.children
        vid = self.expr(value)
        for item in items:
            if item.data == "rename":
                src, dst = (self.axis_name(t) for t in item.children)
                vid = self.add_op("rename", [vid], {"src": src, "dst": dst}, item).id
            elif item.data == "reshape":
                src, dst = (self.distinct_axes(g.children, "one side of ->") for g in item.children)
                vid = self.add_op("reshape", [vid], {"src": src, "dst": dst}, item).id
            elif item.data == "range_slice":
                vid = self.range_slice(vid, item)
            elif item.data == "select_axis":
                axis_tok, index_tree = item.children
                vid = self.select(vid, self.axis_name(axis_tok), index_tree, item)
            else:
                vid = self.select(vid, None, item.children[0], item)
        return vid

    def range_slice(self, vid: str, item: Tree) -> str:
        """``x[T = a:b as S]``: bounds known when the spec is checked (numbers, axis sizes)."""
        axis_tok, start_tree, colon, stop_tree, dst_tok = item.children
        axis = self.axis_name(axis_tok)
        if dst_tok is None:
            raise err(f"name the slice's axis: x[{axis} = ... as S]", colon,
                      hint=f"a slice is a new axis with its own size: declare it (axis S) and write "
                           f"x[{axis} = a:b as S]")
        attrs: dict[str, Any] = {"axis": axis, "dst": self.axis_name(dst_tok)}
        for key, tree in (("start", start_tree), ("stop", stop_tree)):
            if tree is None:
                continue
            frame = self.frames[-1].nodes
            mark = len(frame)
            value = self.number_value(self.expr(tree))
            if value is not None and all(n.op == NUMBER_NODE for n in frame[mark:]):
                del frame[mark:]  # the bound lives in the attribute: no number nodes left to lower
            if value is None:
                raise err(f"the {key} of a slice must be known when the spec is checked (a number or axis sizes)",
                          tree, hint="slice by numbers or sizes: x[T = 1:T - 1 as S]; pick one position with x[t] or x[T = i]")
            attrs[key] = sz.to_text(value)
        return self.add_op("slice", [vid], attrs, item).id

    def select(self, vid: str, axis: str | None, index_tree: Tree, where: Tree) -> str:
        if isinstance(index_tree, Tree) and index_tree.data == "name":
            binding = self.scope.lookup(str(index_tree.children[0]))
            if binding is not None and binding.kind == "index":
                index_node = self.node_index[binding.ref]
                loop_axis = index_node.attrs.get("axis")
                if axis is None and loop_axis is not None:
                    axis = loop_axis
                    if axis not in self.type_of(vid).axes:
                        raise err(f"this wire has no axis {axis} to index with {index_tree.children[0]}; its axes "
                                  f"are {self.type_of(vid)}", where,
                                  hint=f"index a wire that has {axis} (x[{index_tree.children[0]}]), or name the axis: "
                                       f"x[A = {index_tree.children[0]}]")
                return self.add_op("select", [vid, binding.ref], {"axis": axis}, where).id
        index_id = self.expr(index_tree)
        if self.number_value(index_id) is None and axis is not None:  # E[V = ids]: a lookup by a wire
            return self.add_op("lookup", [vid, index_id], {"axis": axis}, where).id
        self.check_select_index(index_id, axis, index_tree)
        index = self.const_int(index_tree, "an index")
        node = self.add_op("select", [vid], {"axis": axis, "index": index}, where)
        axis = node.attrs["axis"]
        bound = self.spec.bound_size(axis)
        if bound is not None and index >= bound:
            raise err(f"index {index} is out of range for axis {axis} of size {bound}", where,
                      hint=f"indices along {axis} run from 0 to {bound - 1}")
        return node.id

    def check_select_index(self, index_id: str, axis: str | None, tree: Tree) -> None:
        """x[T = -1] and x[T = T - 1] of a free T: say what selects the last position instead."""
        value = self.number_value(index_id)
        name = axis or "T"
        last = (f"x[{name} = -1: as L][L = 0] (a one-position slice, declared: axis L), "
                f"or give {name} a size")
        if value is not None and value.is_number and value.is_integer and value < 0:
            raise err(f"index {value} is negative: positions along {name} run from 0", tree,
                      hint=f"the last position is x[{name} = {name} - 1] once {name} is sized; for any size: {last}")
        if value is not None and not value.is_number and value.free_symbols:
            free = ", ".join(sorted(str(s) for s in value.free_symbols))
            raise err(f"the index {value} depends on the size of {free}, which is not known when the spec is "
                      "checked", tree, hint=f"for the last position at any size: {last}")

    # ---------------------------------------------------------------- calls
    def expr_call(self, tree: Tree) -> str:
        name_tok, *args = tree.children
        name = str(name_tok)
        args = [a for a in args if a is not None]
        binding = self.scope.lookup(name)
        if binding is not None and binding.kind == "instance":
            return self.call_instance(name, args, tree)
        if name in OPS and OPS[name].syntax is not None:
            raise err(f"{name} is not a function: it is written {OPS[name].syntax}", name_tok,
                      hint=f"write {OPS[name].syntax}" + (f" ({OPS[name].doc})" if OPS[name].doc else ""))
        if name in OPS:
            return self.call_op(name, args, tree)
        if name in INITIALISERS:
            raise err(f"{name}(...) is an initialiser: use it after init", tree,
                      hint=f"declare a parameter with it: param W: [A] init {name}(...)")
        if name in self.spec.block_trees:
            block = self.spec.specialise(name, [], name_tok, self)
            if self.spec.has_weights(block):
                raise err(f"block {name} has parameters: instantiate it with use {name.lower()} = {name}",
                          name_tok, hint="each use declares its own weights; calling one instance twice shares them")
            hidden = f"_{name}_{len(self.instances)}"
            self.instances[hidden] = InstanceDef(name=hidden, block=block.key, loc=loc_of(name_tok))
            self.instance_blocks[hidden] = block
            return self.call_instance(hidden, args, tree)
        options = set(OPS) | set(self.spec.block_trees) | {n for n, b in self.scope_items() if b.kind == "instance"}
        python = name in ("eval", "exec", "compile", "open", "print", "getattr") or name.startswith("__")
        raise err(f"unknown function {name}", name_tok, hint=_did_you_mean(name, options) or (
            "specs are data, not Python: Python code is never executed" if python
            else f"define it as a block, block {name}(x: [A]) -> [A] {{ ... }}, or pick an op of docs/language.md's "
                 f"op reference"))

    def scope_items(self):
        scope: Scope | None = self.scope
        while scope is not None:
            yield from scope.names.items()
            scope = scope.parent

    def call_op(self, name: str, args: list[Tree], tree: Tree) -> str:
        positional = [a.children[0] for a in args if a.data == "pos_arg"]
        keywords = {str(a.children[0]): (a.children[1], a) for a in args if a.data == "kw_arg"}
        if name in ("max", "min") and len(positional) == 2 and not keywords:  # max(a, b): elementwise
            name = {"max": "maximum", "min": "minimum"}[name]
        opdef = OPS[name]
        low, high = opdef.arity
        attrs: dict[str, Any] = {}
        kw_specs = dict(opdef.kwargs)
        if high == 0 and positional and kw_specs:  # idx(A): the axis may be given positionally
            first = next(iter(kw_specs))
            keywords.setdefault(first, (positional.pop(0), tree))
        if not low <= len(positional) <= high:
            want = f"{low}" if low == high else f"{low} to {high}"
            raise err(f"{name} takes {want} inputs, got {len(positional)}", tree,
                      hint=_arity_hint(name, opdef.doc, want, len(positional) > high,
                                       [k for k in kw_specs if k not in keywords]))
        for key, (value, at) in keywords.items():
            spec = kw_specs.get(key)
            if spec is None:
                allowed = ", ".join(kw_specs) or "none"
                raise err(f"{name} has no option {key}", at, hint=f"its options: {allowed}")
            attrs[key] = self.kw_value(spec.kind, value, at, spec.names)
        for key, spec in kw_specs.items():
            if key not in attrs:
                if spec.required:
                    raise err(f"{name} needs {key} = ...", tree,
                              hint=f"add {key} = ... to the call" + (f" ({opdef.doc})" if opdef.doc else ""))
                if spec.default is not None:
                    attrs[key] = spec.default
        inputs = [self.expr(p) for p in positional]
        if not keywords:
            folded = self.fold(name, inputs, tree, positional)
            if folded is not None:
                return folded
        spans = {key: span_of(value) for key, (value, _) in keywords.items()}
        return self.add_op(name, inputs, attrs, tree, spans=spans).id

    def kw_value(self, kind: str, value: Tree, where: Tree, names: tuple[str, ...] = ()) -> Any:
        word = str(value.children[0]) if isinstance(value, Tree) and value.data == "name" else None
        if kind in (NAME, FLAG, NUMBERS) and word is not None and (kind != NUMBERS or word in names):
            choices = ("true", "false") if kind == FLAG else names
            if word not in choices:
                raise err(f"{word} is not one of this option's words", value,
                          hint=f"write one of: {', '.join(choices)}")
            return word == "true" if kind == FLAG else word
        if kind in (NAME, FLAG):
            raise err("expected a word", where, hint=f"write one of: {', '.join(('true', 'false') if kind == FLAG else names)}")
        if kind == NUMBERS and isinstance(value, Tree) and value.data in ("number_list", "axis_list"):
            items = [Tree("number", [c]) if value.data == "number_list" else Tree("name", [c]) for c in value.children]
            return [self.kw_value(NUMBER, item, where) for item in items]
        if kind == NUMBERS:
            kind = NUMBER
        if kind == AXIS:
            if not (isinstance(value, Tree) and value.data == "name"):
                raise err("expected an axis name", where,
                          hint="axes are named, never numbered: write over = T, not over = 1")
            return self.axis_name(value.children[0])
        if kind == AXES:
            if isinstance(value, Tree) and value.data == "name":
                return [self.axis_name(value.children[0])]
            if isinstance(value, Tree) and value.data == "axis_list":
                key = where.children[0] if isinstance(where, Tree) and where.data == "kw_arg" else None
                return self.distinct_axes(value.children, f"{key} = [...]" if key is not None else "this list")
            raise err("expected an axis name or a list of axes [A, B]", where,
                      hint="axes are named, never numbered: write over = D or over = [D, E], not over = 1")
        if kind == AXES_OR_MAP and isinstance(value, Tree) and value.data in ("name", "axis_list"):
            same = self.kw_value(AXES, value, where)
            return {"src": same, "dst": list(same)}
        if kind in (AXIS_MAP, AXES_OR_MAP):
            if isinstance(value, Tree) and value.data == "axis_map":
                src, dst = (self._axis_side(c) for c in value.children)
                return {"src": src, "dst": dst}
            raise err("expected an axis map: A -> B or [A1, A2] -> B", where, hint="write the map with an arrow: A -> B")
        if kind == NUMBER:
            vid = self.expr(value)
            number = self.number_value(vid)
            if number is None or not number.is_number:
                raise err("expected a number", where, hint="write a number, a constant or a size expression known at check time")
            option = float(number)
            if math.isfinite(option) and abs(option) > FLOAT32_MAX:  # torch refuses the scalar for a float32 wire
                raise err(f"the number {option:.3g} is out of float32's range (±3.4e38)", value,
                          hint="the options of an op are float32 numbers (inf is allowed)")
            return option
        raise err(f"unsupported option kind {kind}", where, hint="this is a bug in ncd's op table: please report it")

    def distinct_axes(self, tokens: list[Token], what: str) -> list[str]:
        """Axis names of a list an op reads (``over = [A, B]``, ``@[A]``, ``[A B -> S]``): each once."""
        names: list[str] = []
        for tok in tokens:
            name = self.axis_name(tok)
            if name in names:
                raise err(f"axis {name} appears twice in {what}", tok, hint="name each axis once")
            names.append(name)
        return names

    def _axis_side(self, side: Tree | Token) -> list[str]:
        if isinstance(side, Token):
            return [self.axis_name(side)]
        return self.distinct_axes(side.children, "one side of ->")

    def call_instance(self, name: str, args: list[Tree], tree: Tree) -> str:
        block = self.instance_blocks[name]
        inst = self.instances[name]
        if any(a.data == "kw_arg" for a in args):
            raise err("block inputs are positional", tree, hint="drop the names: write f(x, y), in the order the block declares")
        ids = [self.expr(a.children[0]) for a in args]
        if len(ids) != len(block.inputs):
            raise err(f"{block.name} takes {len(block.inputs)} inputs, got {len(ids)}", tree,
                      hint=f"pass {len(block.inputs)}: {tree.children[0]}({', '.join(p.name for p in block.inputs)})")
        lifted: list[str] = []
        for vid, port in zip(ids, block.inputs):
            got = self.type_of(vid)
            if got.dtype != port.type.dtype and not (port.type.dtype == "float" and got.dtype == "bool"):
                raise err(f"{block.name} expects {port.name} to be {port.type.dtype} but got a {got.dtype} wire",
                          tree, hint="convert it: as_float(ids)" if port.type.dtype == "float" else
                          f"declare the wire {port.type.dtype} where it enters the spec: ids: [T] {port.type.dtype}")
            missing = [a for a in port.type.axes if a not in got.axes]
            if missing:
                raise err(f"{block.name} expects {port.name}: {port.type} but got a wire with axes {got} "
                          f"(missing {', '.join(missing)})", tree,
                          hint="rename or reshape the wire's axes to the block's: x[A as B]")
            lifted += [a for a in got.axes if a not in port.type.axes and a not in lifted]
        for out in block.outputs:
            clash = [a for a in lifted if a in out.axes]
            if clash:
                raise err(f"{block.name} is lifted over axis {clash[0]} but also produces it", tree,
                          hint=f"rename the caller's axis first: x[{clash[0]} as {clash[0]}']")
        outputs = call_output_types(lifted, block.outputs, any(self.type_of(v).lifted for v in ids))
        attrs = {"instance": name, "block": block.key, "lift": lifted,
                 "ports": [list(p.type.axes) for p in block.inputs], "repeat": inst.repeat}
        return self.add(CALL, ids, attrs, outputs, tree).id
