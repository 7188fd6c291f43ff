"""Parse tree → typed IR. Every wire gets its axes here; every mistake is reported here.

The builder specialises each block once per distinct set of bracket arguments (axis identities,
numbers), checks its body with the op table's typing rules, and records block calls together
with the axes they are lifted over.
"""
from __future__ import annotations

import difflib
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from fractions import Fraction
from functools import lru_cache
from typing import Any

import sympy
from lark import Token, Tree

from ncd import sizes as sz
from ncd.errors import NcdError, Span
from ncd.frontend.parser import parse, span_of
from ncd.ir import (AxisDef, BlockIR, InstanceDef, Loc, Node, ParamDef, Port, Region, SpecIR, SpecMeta,
                    WireType)
from ncd.ops import OPS
from ncd.ops.base import AXES, AXES_OR_MAP, AXIS, AXIS_MAP, NUMBER, TypeCtx
from ncd.ops.layout import union_axes

MAX_REPEAT = 4096  # `use layers = Block × N` builds N modules: beyond this it is a typo, not a model
INITIALISERS = ("normal", "uniform", "zeros", "ones", "const", "trunc_normal")
NUMERIC_FUNCS = {"sqrt": sympy.sqrt, "exp": sympy.exp, "log": sympy.log, "abs": sympy.Abs}
NAMED_CONSTANTS = {"pi": sympy.pi, "inf": sympy.oo}
RESERVED = {"forward", "training", "taps", "state_dict", "parameters", "modules", "children", "to", "cuda",
            "cpu", "type", "float", "double", "half", "train", "eval", "apply", "zero_grad", "self"}
# Params, buffers, instances and taps become attributes of a torch module (taps: keys of a ModuleDict),
# so the public attributes of nn.Module and nn.ModuleDict (torch 2.x) cannot be their names.
RESERVED |= set("""T_destination add_module bfloat16 buffers call_super_init compile dump_patches extra_repr
    get_buffer get_extra_state get_parameter get_submodule ipu load_state_dict mtia named_buffers named_children
    named_modules named_parameters register_backward_hook register_buffer register_forward_hook
    register_forward_pre_hook register_full_backward_hook register_full_backward_pre_hook
    register_load_state_dict_post_hook register_load_state_dict_pre_hook register_module register_parameter
    register_state_dict_post_hook register_state_dict_pre_hook requires_grad_ set_extra_state set_submodule
    share_memory to_empty xpu clear items keys pop update values""".split())


def loc_of(item: Tree | Token | None) -> Loc | None:
    span = span_of(item) if item is not None else None
    return Loc(line=span.line, col=span.col) if span else None


def err(message: str, item: Tree | Token | None, hint: str | None = None) -> NcdError:
    return NcdError(message, span_of(item) if item is not None else None, hint=hint)


# Numbers are exact (sympy rationals) while the spec is checked, and become float64 in the module:
# keep them within its range, so folding `D^-1e9` or printing `1e99999` cannot run for minutes.
MAX_BITS = 1100  # 2^1100 > 1.8e308, float64's largest
FLOAT32_MAX = 3.4028234663852886e38


def number_literal(tok: Token) -> sympy.Expr:
    """A NUMBER token as an exact rational, read without sympy's string parser (`05`, `1.` are fine)."""
    text = str(tok)
    mantissa, _, exponent = text.lower().partition("e")
    if len(mantissa) > 330 or (exponent and abs(int(exponent)) > 330):
        raise err(f"the number {text[:20]}{'...' if len(text) > 20 else ''} is out of range", tok,
                  hint="numbers in a spec stay within float64's range (about 1e-308 to 1e308)")
    value = Fraction(text)
    return sympy.Rational(value.numerator, value.denominator)


def checked_power(a: sympy.Expr, b: sympy.Expr, where: Tree) -> sympy.Expr:
    """a ** b, refused before sympy computes an exact power with millions of digits."""
    if a.is_number and b.is_number and a != 0:
        try:
            bits = abs(float(b) * math.log2(abs(complex(a))))
        except (TypeError, ValueError, OverflowError):
            bits = math.inf
        if bits > MAX_BITS:
            raise err("this power is out of range of a float64", where)
    elif b.is_number and b.is_real and abs(b) > 64:
        raise err("an axis size may be raised to a power of at most 64", where)
    return checked_number(a**b, where)


def checked_number(value: sympy.Expr, where: Tree) -> sympy.Expr:
    """A folded number, refused where it is not a real number or not representable as a float64."""
    if not value.is_number:
        return value
    if value.has(sympy.zoo, sympy.nan) or value.is_extended_real is False:
        raise err(f"this evaluates to {value}, which is not a real number", where)
    if value.is_Rational and max(abs(value.p), value.q).bit_length() > MAX_BITS:
        raise err("this number is out of range of a float64", where)
    return value


@lru_cache(maxsize=None)
def _size_safe(name: str) -> bool:
    """Whether an axis name survives the IR's size text unchanged (not pi, oo, sqrt, lambda, None...)."""
    try:
        return sz.parse(sz.to_text(sz.symbol(name) + 1)) == sz.symbol(name) + 1
    except Exception:  # noqa: BLE001 - sympy's parser rejects the name outright (a Python keyword)
        return False


def type_tree_text(tree: Tree) -> str:
    """A type as the user wrote it, for hints."""
    if tree.data == "any_type":
        return "[..]"
    return "[" + ", ".join(str(t) for t in tree.children if t is not None) + "]"


def _did_you_mean(name: str, options: Iterable[str]) -> str | None:
    close = difflib.get_close_matches(name, list(options), n=1)
    return f"did you mean {close[0]}?" if close else None


# ----------------------------------------------------------------------------------- scopes
@dataclass
class Binding:
    kind: str  # value | instance | index | number
    ref: str  # node id, instance name or sympy text


@dataclass
class Scope:
    names: dict[str, Binding] = field(default_factory=dict)
    parent: "Scope | None" = None

    def lookup(self, name: str) -> Binding | None:
        scope: Scope | None = self
        while scope is not None:
            if name in scope.names:
                return scope.names[name]
            scope = scope.parent
        return None

    def all_names(self) -> set[str]:
        out: set[str] = set()
        scope: Scope | None = self
        while scope is not None:
            out |= set(scope.names)
            scope = scope.parent
        return out


@dataclass
class Frame:
    """One nested body under construction (block body or a region)."""

    nodes: list[Node]
    kind: str  # block | scan | repeat | halting | init
    emitted: list[str] | None = None
    halt: str | None = None
    captures: list[str] = field(default_factory=list)


# ----------------------------------------------------------------------------------- spec level
class SpecBuilder:
    def __init__(self, source: str, name: str, bindings: dict[str, int], entry: str | None) -> None:
        self.source = source
        self.name = name
        self.bindings = dict(bindings)
        self.tree = parse(source, name)
        self.axes: dict[str, AxisDef] = {}
        self.axis_trees: dict[str, Tree] = {}
        self.inferred: dict[str, sympy.Expr] = {}
        self.block_trees: dict[str, Tree] = {}
        self.global_consts: dict[str, Tree] = {}
        self.blocks: dict[str, BlockIR] = {}
        self.building: list[str] = []
        self.entry_name = entry
        self._size_cache: dict[tuple[str, int, int], sympy.Expr] = {}
        self._collect()

    # ---------------------------------------------------------------- declarations
    def _collect(self) -> None:
        for item in self.tree.children:
            if not isinstance(item, Tree):
                continue
            if item.data == "axis_decl":
                for axis_def in item.children:
                    self.declare_axis(axis_def, {}, {})
            elif item.data == "block":
                name = str(item.children[0])
                if name in self.block_trees:
                    prev = self.block_trees[name].children[0]
                    raise err(f"block {name} is defined twice (first at line {prev.line})", item.children[0],
                              hint="rename one of them")
                if name in OPS or name in INITIALISERS:
                    raise err(f"block {name} has the name of a built-in op", item.children[0],
                              hint="rename the block")
                self.block_trees[name] = item
            elif item.data == "const_decl":
                name = str(item.children[0])
                if name in self.global_consts:
                    raise err(f"constant {name} is defined twice", item.children[0])
                self.global_consts[name] = item
        for name, value in self.bindings.items():
            if name not in self.axes:
                raise NcdError(f"{name}={value} is bound, but the spec declares no axis {name}",
                               hint=_did_you_mean(name, self.axes) or f"axes: {', '.join(sorted(self.axes))}")
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                loc = self.axes[name].loc
                raise NcdError(f"axis {name} must be bound to a positive integer, got {value!r}",
                               Span(loc.line, loc.col) if loc else None)
        for name, tree in self.axis_trees.items():
            self._check_axis_size(name, tree)
        if not self.block_trees:
            raise NcdError("the spec defines no block", Span(1, 1), hint="add block Name(x: [A]) -> [A] { ... }")

    def declare_axis(self, axis_def: Tree, subst: dict[str, str], numbers: dict[str, sympy.Expr]) -> None:
        name_tok, size_tree = axis_def.children
        name = str(name_tok)
        if "'" in name:
            raise err(f"axis {name} is a prime: primes exist for every axis and are not declared", name_tok)
        if not _size_safe(name):
            raise err(f"{name} cannot name an axis: sizes are written with sympy, where {name} means something else",
                      name_tok, hint="pick another name")
        size = None
        if size_tree is not None:
            size = self.size_expr(size_tree, subst, numbers)
        if name in self.axes:
            old = self.axes[name]
            same = (old.size is None and size is None) or (
                old.size is not None and size is not None and sympy.simplify(sz.parse(old.size) - size) == 0)
            if not same:
                raise err(f"axis {name} is declared twice (first at line {old.loc.line if old.loc else '?'})",
                          name_tok, hint=f"declare an axis once; a second wire of the same axis is {name}'")
            return
        self.axes[name] = AxisDef(name=name, size=sz.to_text(size) if size is not None else None, loc=loc_of(name_tok))
        if size_tree is not None:
            self.axis_trees[name] = size_tree

    def _check_axis_size(self, name: str, tree: Tree) -> None:
        value = self.size(name)
        if value.is_number:
            if not value.is_integer:
                raise err(f"axis {name} has size {value}, which is not a whole number", tree,
                          hint="a derived size must divide exactly (check the bound sizes)")
            if value <= 0:
                raise err(f"axis {name} has size {value}; sizes must be positive", tree)
        # A literal size (`axis D = 512`) is a default the caller may rebind; a derived one is checked.
        literal = isinstance(tree, Tree) and tree.data == "number"
        if name in self.bindings and self.axes[name].size is not None and not literal:
            declared = self.resolve_declared(name)
            if declared.is_number and declared != self.bindings[name]:
                raise err(f"axis {name} is declared with size {declared} but bound to {self.bindings[name]}", tree)

    def resolve_declared(self, name: str) -> sympy.Expr:
        sizes = {k: v.size for k, v in self.axes.items()}
        return sz.resolve(name, sizes, {k: v for k, v in self.bindings.items() if k != name})

    def size_expr(self, tree: Tree | Token, subst: dict[str, str], numbers: dict[str, sympy.Expr]) -> sympy.Expr:
        """An axis-size expression (numbers, axis names, + - * / ^)."""
        if isinstance(tree, Token):
            raise err("expected a size expression", tree)
        kind = tree.data
        if kind == "number":
            return number_literal(tree.children[0])
        if kind == "name":
            name = str(tree.children[0])
            if name in numbers:
                return numbers[name]
            name = self.subst_axis(name, subst)
            if name not in self.axes and self.base_axis(name) not in self.axes:
                raise err(f"unknown axis {name}", tree, hint=_did_you_mean(name, self.axes) or "declare it: axis "
                          + name)
            return sz.symbol(name)
        ops = {"add": sympy.Add, "mul": sympy.Mul}
        if kind in ("add", "mul"):
            a, b = (self.size_expr(c, subst, numbers) for c in tree.children)
            return ops[kind](a, b)
        if kind == "sub":
            a, b = (self.size_expr(c, subst, numbers) for c in tree.children)
            return a - b
        if kind == "div":
            a, b = (self.size_expr(c, subst, numbers) for c in tree.children)
            return a / b
        if kind == "pow":
            a, b = (self.size_expr(c, subst, numbers) for c in tree.children)
            return checked_power(a, b, tree)
        if kind == "neg":
            return -self.size_expr(tree.children[0], subst, numbers)
        raise err("a size must be written with numbers, axis names and + - * / ^", tree)

    # ---------------------------------------------------------------- axis sizes
    @staticmethod
    def base_axis(name: str) -> str:
        return name.rstrip("'")

    @staticmethod
    def subst_axis(name: str, subst: dict[str, str]) -> str:
        base = name.rstrip("'")
        primes = len(name) - len(base)
        return subst.get(base, base) + "'" * primes if base in subst else name

    def known_axis(self, name: str) -> bool:
        return name in self.axes or self.base_axis(name) in self.axes

    def size(self, name: str) -> sympy.Expr:
        """The size of an axis after bindings, derived sizes and inference (symbols where free)."""
        base = self.base_axis(name)
        key = (base, len(self.axes), len(self.inferred))  # sizes only change when these grow
        cached = self._size_cache.get(key)
        if cached is not None:
            return cached
        if base in self.bindings:
            return sympy.Integer(self.bindings[base])
        sizes = {k: v.size for k, v in self.axes.items()}
        expr = sz.resolve(base, sizes, self.bindings)
        if base in self.inferred and expr == sz.symbol(base):
            expr = self.inferred[base]
        subs = {s: self.inferred[s.name] for s in expr.free_symbols if s.name in self.inferred and s.name != base}
        expr = expr.subs(subs) if subs else expr
        self._size_cache[key] = expr
        return expr

    def unify(self, axis: str, size: sympy.Expr, what: str, where: Tree | Token | None) -> None:
        base = self.base_axis(axis)
        current = self.size(base)
        size = sympy.simplify(size)
        if current == sz.symbol(base) and self.axes.get(base) is not None and self.axes[base].size is None:
            if size != current:
                own = [s for s in size.free_symbols if self.base_axis(s.name) == base]
                if own and size.subs({s: sz.symbol(base) for s in own}) == current:
                    return  # D' has D's size: nothing to infer
                if own:
                    raise err(f"axis {axis} would have size {size} ({what}), which depends on {base} itself",
                              where, hint=f"this needs two different axes where it uses {base}")
                self.inferred[base] = size
            return
        diff = sympy.simplify(current - size)
        if diff != 0 and (diff.is_number or not diff.free_symbols):
            raise err(f"axis {axis} has size {current} here, but {what} is {size}", where,
                      hint=f"make the sizes agree (axis {base} is declared at line "
                           f"{self.axes[base].loc.line if self.axes.get(base) and self.axes[base].loc else '?'})")

    def bound_size(self, name: str) -> int | None:
        value = self.size(name)
        return int(value) if value.is_number and value.is_integer else None

    # ---------------------------------------------------------------- blocks
    def specialise(self, name: str, args: list[tuple[str | None, Tree]], where: Tree | Token | None,
                   caller: "BlockBuilder | None") -> BlockIR:
        tree = self.block_trees.get(name)
        if tree is None:
            raise err(f"unknown block {name}", where, hint=_did_you_mean(name, self.block_trees))
        params_tree = tree.children[1]
        declared = [] if params_tree is None else params_tree.children
        subst: dict[str, str] = {}
        numbers: dict[str, sympy.Expr] = {}
        positional = [a for k, a in args if k is None]
        keyword = {k: a for k, a in args if k is not None}
        if len(positional) > len(declared):
            raise err(f"block {name} takes {len(declared)} bracket arguments, got {len(positional)}", where)
        for i, param in enumerate(declared):
            pname, default = str(param.children[0]), param.children[1]
            value = positional[i] if i < len(positional) else keyword.pop(pname, None)
            if default is None:  # an axis parameter: bound to an axis of the caller
                if value is None:
                    raise err(f"block {name} needs axis argument {pname}", where,
                              hint=f"write {name}[{pname} = SomeAxis]")
                if not (isinstance(value, Tree) and value.data == "name"):
                    raise err(f"{pname} of block {name} is an axis parameter: pass an axis name", value)
                axis = str(value.children[0])
                if caller is not None:
                    axis = self.subst_axis(axis, caller.subst)
                if not self.known_axis(axis):
                    raise err(f"unknown axis {axis}", value, hint=_did_you_mean(axis, self.axes))
                subst[pname] = axis
            else:
                source = value if value is not None else default
                ctx_subst = caller.subst if (caller is not None and value is not None) else subst
                ctx_numbers = caller.numbers if (caller is not None and value is not None) else numbers
                numbers[pname] = self.size_expr(source, ctx_subst, ctx_numbers)
        if keyword:
            extra = next(iter(keyword))
            raise err(f"block {name} has no parameter {extra}", keyword[extra])
        key = name
        if subst or numbers:
            parts = [f"{k}={v}" for k, v in subst.items()] + [f"{k}={sz.to_text(v)}" for k, v in numbers.items()]
            key = f"{name}[{','.join(parts)}]"
        if key in self.blocks:
            return self.blocks[key]
        if key in self.building:
            chain = " → ".join([*self.building[self.building.index(key):], key])
            raise err(f"blocks call each other in a cycle: {chain}", where,
                      hint="a block cannot contain itself; use repeat or a scan for recurrence")
        self.building.append(key)
        try:
            block = BlockBuilder(self, tree, key, subst, numbers).build()
        finally:
            self.building.pop()
        self.blocks[key] = block
        return block

    def has_weights(self, block: BlockIR) -> bool:
        """Learned parameters or buffers anywhere inside (constants recompute, so they don't count)."""
        if any(p.kind != "const" for p in block.params):
            return True
        return any(self.has_weights(self.blocks[i.block]) for i in block.instances if i.block in self.blocks)

    def build(self) -> SpecIR:
        entry = self.entry_name or list(self.block_trees)[-1]
        if entry not in self.block_trees:
            raise NcdError(f"the spec has no block {entry}", hint=_did_you_mean(str(entry), self.block_trees))
        entry_block = self.specialise(entry, [], self.block_trees[entry].children[0], None)
        axes = dict(self.axes)
        for name, size in self.inferred.items():
            axes[name] = axes[name].model_copy(update={"size": sz.to_text(size)})
        return SpecIR(name=self.name, axes=axes, bindings=self.bindings, blocks=self.blocks,
                      entry=entry_block.key, meta=read_meta(self.source))


def read_meta(source: str) -> SpecMeta:
    """The header comment: first line is the title; a `# paper: ...` line names the paper."""
    title, paper = "", ""
    for line in source.splitlines():
        text = line.strip()
        if not text:
            continue
        if not text.startswith("#"):
            break
        body = text.lstrip("#").strip()
        if body.lower().startswith("paper:"):
            paper = body.split(":", 1)[1].strip()
        elif not title and body:
            title = body
    return SpecMeta(title=title, paper=paper)


# ----------------------------------------------------------------------------------- block level
class BlockBuilder:
    def __init__(self, spec: SpecBuilder, tree: Tree, key: str, subst: dict[str, str],
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
                      spans={k: v for k, v in (spans or {}).items() if v is not None})
        types = opdef.infer(ctx, [self.type_of(i) for i in inputs], attrs)
        return self.add(op, inputs, attrs, types, where)

    def number(self, value: sympy.Expr, where: Any) -> Node:
        node = self.add("number", [], {"value": sz.to_text(value)}, [WireType(axes=(), lifted=False)], where)
        self.number_values[node.id] = value
        return node

    def number_value(self, node_id: str) -> sympy.Expr | None:
        """The sympy value of a number node (kept beside the IR's text form, which is slow to re-parse)."""
        return self.number_values.get(node_id)

    # ---------------------------------------------------------------- types
    def axis_name(self, tok: Token | Tree) -> str:
        name = self.spec.subst_axis(str(tok), self.subst)
        if not self.spec.known_axis(name):
            raise err(f"unknown axis {name}", tok, hint=_did_you_mean(name, self.spec.axes) or f"declare it: axis {name}")
        return name

    def wire_type(self, tree: Tree, lifted: bool) -> WireType:
        if tree.data == "any_type":
            return WireType(axes=(), lifted=lifted)
        axes = [self.axis_name(t) for t in tree.children if t is not None]
        for i, a in enumerate(axes):
            if a in axes[:i]:
                raise err(f"axis {a} appears twice in one type", tree.children[i],
                          hint="a second wire of the same axis is written with a prime: " + a + "'")
        return WireType(axes=tuple(axes), lifted=lifted)

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
            aname, atype = arg.children
            t = self.wire_type(atype, lifted=True)
            self.check_new_name(str(aname), aname)
            if str(aname) in self.scope.names:
                raise err(f"block {self.key} has two inputs named {aname}", aname, hint="rename one of them")
            node = self.add("input", [], {"index": len(ports)}, [t], aname, name=str(aname))
            ports.append(Port(name=str(aname), type=t))
            self.scope.names[str(aname)] = Binding("value", node.id)
        outputs = [self.wire_type(t, lifted=True) for t in ret_tree.children]
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
            raise err(f"block {self.key} declares {len(outputs)} outputs but returns {len(self.results)}", where)
        fixed = []
        for rid, want, expr in zip(self.results, outputs, where.children):
            got = self.type_of(rid)
            if sorted(got.axes) != sorted(want.axes):
                raise err(f"wrong return type: the block declares {want} but returns a wire with axes {got}",
                          expr, hint="contract or reduce the extra axes, or fix the declared type")
            if got.axes != want.axes:
                rid = self.add_op("annotate", [rid], {"axes": list(want.axes)}, where).id
            fixed.append(rid)
        return fixed

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
                raise err(f"this expression gives {len(node.types)} values; unpack them: a, b = ...", targets[0])
            self.bind_value(names[0], value, targets[0])
            return
        if len(node.types) != len(names):
            raise err(f"{len(names)} names on the left but the expression gives {len(node.types)} values", targets[0])
        for i, (name, tok) in enumerate(zip(names, targets)):
            part = self.add("tuple_get", [value], {"index": i}, [node.types[i]], tok, name=name)
            self.bind_value(name, part.id, tok)

    def bind_value(self, name: str, node_id: str, where: Any) -> None:
        existing = self.scope.lookup(name)
        if existing is not None and existing.kind in ("param", "instance"):
            raise err(f"{name} is a {existing.kind} of this block and cannot be reassigned", where)
        if existing is not None and existing.kind == "index":
            raise err(f"{name} is a loop index and cannot be reassigned", where)
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

    def stmt_param_decl(self, tree: Tree, kind: str = "param") -> None:
        *names, type_tree, init = tree.children
        t = self.wire_type(type_tree, lifted=False)
        if init is None and kind == "param":
            raise err(f"param {names[0]} needs an initialiser", names[0],
                      hint=f"param {names[0]}: {type_tree_text(type_tree)} init normal(0, 0.02)")
        for tok in names:
            region = self.init_region(init, t, None, kind)
            self.declare_param(str(tok), kind, t, region, tok)

    def stmt_buffer_decl(self, tree: Tree) -> None:
        self.stmt_param_decl(tree, kind="buffer")

    def stmt_param_formula(self, tree: Tree) -> None:
        name, binders, init = tree.children
        axes, index_names = self.binders(binders)
        t = WireType(axes=tuple(axes), lifted=False)
        region = self.init_region(init, t, dict(zip(index_names, axes)), "param")
        self.declare_param(str(name), "param", t, region, name)

    def binders(self, tree: Tree) -> tuple[list[str], list[str]]:
        axes, names = [], []
        for binder in tree.children:
            var, axis = binder.children
            axes.append(self.axis_name(axis))
            names.append(str(var))
        return axes, names

    def declare_param(self, name: str, kind: str, t: WireType, init: Region, where: Any) -> None:
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
                default = "ones" if kind == "buffer" else None
                if default is None:
                    raise err("a param needs an initialiser", None)
                value = self.add("init_fill", [], {"value": 1.0}, [t], None).id
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
                          f"{', '.join(extra)} not on the parameter", init)
            result = self.add("materialize", [value], {"axes": list(t.axes)}, [t], init)
        finally:
            self.scope = saved
            self.frames.pop()
        return Region(kind="init", nodes=frame.nodes, results=[result.id])

    def init_expr(self, tree: Tree, t: WireType) -> str:
        if tree.data == "name" and str(tree.children[0]) in ("zeros", "ones"):  # `init zeros` = zeros()
            return self.add("init_random", [], {"dist": str(tree.children[0]), "args": []}, [t], tree).id
        if tree.data == "call" and str(tree.children[0]) in INITIALISERS:
            fname = str(tree.children[0])
            args = [a for a in tree.children[1:] if a is not None]
            values = []
            for a in args:
                if a.data != "pos_arg":
                    raise err(f"{fname} takes positional numbers", a)
                vid = self.expr(a.children[0])
                v = self.number_value(vid)
                if v is None:
                    raise err(f"the arguments of {fname} must be numbers", a)
                if v.is_number and fname != "const" and not abs(float(v)) <= FLOAT32_MAX:
                    raise err(f"the arguments of {fname} must be finite numbers within float32's range, not {v}",
                              a, hint="weights are drawn in the default dtype (float32 unless set otherwise)")
                values.append(sz.to_text(v))
            want = {"normal": 2, "uniform": 2, "trunc_normal": 2, "zeros": 0, "ones": 0, "const": 1}[fname]
            if len(values) != want:
                raise err(f"{fname} takes {want} arguments, got {len(values)}", tree)
            nums = [sz.parse(v) for v in values]  # symbolic where a size is bound only at load
            if fname in ("normal", "trunc_normal") and nums[1].is_number and nums[1] < 0:
                raise err(f"the standard deviation of {fname} is negative: {values[1]}", args[1],
                          hint=f"{fname}(mean, std) with std >= 0")
            if fname == "uniform" and (nums[0] - nums[1]).is_number and nums[0] > nums[1]:
                raise err(f"uniform({values[0]}, {values[1]}): the lower bound is above the upper", args[0],
                          hint="uniform(low, high) with low <= high")
            if fname == "uniform" and (nums[1] - nums[0]).is_number and nums[1] - nums[0] > FLOAT32_MAX:
                raise err(f"uniform({values[0]}, {values[1]}): the range is wider than float32's largest number",
                          args[0])
            return self.add("init_random", [], {"dist": fname, "args": values}, [t], tree).id
        return self.expr(tree)

    def stmt_use_decl(self, tree: Tree) -> None:
        for item in tree.children:
            name_tok, block_tok, params, repeat = item.children
            name = str(name_tok)
            self.check_new_name(name, name_tok)
            if self.scope.lookup(name) is not None or name in self.instances:
                raise err(f"{name} is already defined in this block", name_tok)
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
                    raise err("a repeat count must be at least 1", repeat)
                if count > MAX_REPEAT:
                    raise err(f"a repeat count must be at most {MAX_REPEAT}, got {count}", repeat,
                              hint="each of the N copies is a separate module with its own weights")
                if len(block.inputs) != 1 or len(block.outputs) != 1 or \
                        sorted(block.inputs[0].type.axes) != sorted(block.outputs[0].axes):
                    raise err(f"{block.name} × {count} chains the block into itself, so it needs one input and "
                              f"one output of the same axes", repeat)
            self.instances[name] = InstanceDef(name=name, block=block.key, repeat=count, loc=loc_of(name_tok))
            self.instance_blocks[name] = block
            self.scope.names[name] = Binding("instance", name)

    def stmt_tap(self, tree: Tree) -> None:
        name_tok, expr = tree.children
        name = str(name_tok)
        if name in self.taps:
            raise err(f"tap {name} is defined twice", name_tok, hint="give each tap its own name")
        if name in RESERVED:
            raise err(f"{name} is a reserved name", name_tok, hint="pick another name")
        value = self.expr(expr)
        node = self.add("tap", [value], {"name": name}, [self.type_of(value)], name_tok, name=name)
        self.taps.append(name)
        self.bind_value(name, node.id, name_tok)

    def stmt_return_stmt(self, tree: Tree) -> None:
        if self.frames[-1].kind != "block":
            raise err("return inside a loop body", tree, hint="scan bodies end with emit, repeat bodies reassign")
        self.results = [self.expr(e) for e in tree.children]
        self.return_tree = tree

    def stmt_emit_stmt(self, tree: Tree) -> None:
        frame = self.frames[-1]
        if frame.kind != "scan":
            raise err("emit outside a scan", tree, hint="emit builds a scan's output; a block uses return")
        if frame.emitted is not None:
            raise err("a scan emits once per step", tree, hint="emit a, b emits two sequences")
        frame.emitted = [self.expr(e) for e in tree.children]

    def stmt_halt_stmt(self, tree: Tree) -> None:
        frame = self.frames[-1]
        if frame.kind != "halting":
            raise err("halt outside a halting loop", tree)
        frame.halt = self.expr(tree.children[0])

    def stmt_repeat_stmt(self, tree: Tree) -> None:
        count_tree, *body = tree.children
        count = self.const_int(count_tree, "a repeat count")
        carried = [n for n in assigned_names(body) if (b := self.scope.lookup(n)) is not None and b.kind == "value"]
        if not carried:
            raise err("this repeat body changes nothing outside it", tree,
                      hint="reassign a value of the block inside the body: x = layer(x)")
        init_ids = [self.scope.lookup(n).ref for n in carried]
        region, results = self.region("repeat", body, [(n, self.type_of(i)) for n, i in zip(carried, init_ids)],
                                      tree, extra_args=[])
        node = self.add("repeat", init_ids, {"count": count, "names": carried}, [self.type_of(i) for i in init_ids],
                        tree, regions=[region])
        for i, name in enumerate(carried):
            part = self.add("tuple_get", [node.id], {"index": i}, [node.types[i]], tree, name=name)
            self.scope.names[name] = Binding("value", part.id)

    def region(self, kind: str, body: list[Any], carries: list[tuple[str, WireType]], where: Any,
               extra_args: list[tuple[str, str, dict[str, Any]]]) -> tuple[Region, Frame]:
        """Build a nested body with its carried names bound to fresh region arguments."""
        frame = Frame(nodes=[], kind=kind)
        self.frames.append(frame)
        saved = self.scope
        self.scope = Scope(parent=saved)
        args = []
        try:
            for name, t in carries:
                arg = self.add("region_arg", [], {"name": name}, [t], where, name=name)
                self.scope.names[name] = Binding("value", arg.id)
                args.append(arg.id)
            for name, binding_kind, attrs in extra_args:
                arg = self.add("loop_index", [], attrs, [WireType(axes=(), lifted=False, dtype="int")], where,
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
                if got.axes != t.axes:
                    rid = self.add_op("annotate", [rid], {"axes": list(t.axes)}, where).id
                results.append(rid)
        finally:
            self.scope = saved
            self.frames.pop()
        defined = {n.id for n in frame.nodes}
        region = Region(kind=kind, args=args, nodes=frame.nodes, results=results)
        region_captures = sorted({i for n in _walk(frame.nodes) for i in n.inputs if i not in defined
                                  and i not in _region_ids(frame.nodes)})
        frame.captures = region_captures
        return region, frame

    # ---------------------------------------------------------------- expressions
    def const_int(self, tree: Tree, what: str) -> int:
        vid = self.expr(tree)
        value = self.number_value(vid)
        if value is None or not value.is_number or not value.is_integer or value < 0:
            raise err(f"{what} must be a whole number known when the spec is checked", tree)
        return int(value)

    def expr(self, tree: Tree | Token) -> str:
        if isinstance(tree, Token):
            raise err(f"unexpected {tree}", tree)
        method = getattr(self, f"expr_{tree.data}", None)
        if method is None:
            raise err(f"{tree.data} is not allowed here", tree)
        return method(tree)

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
            raise err(f"{name} is a block instance; call it: {name}(...)", tree)
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
        raise err(f"unknown name {name}", tree, hint=_did_you_mean(name, options))

    def const_value(self, tree: Tree, global_decl: bool) -> str:
        name_tok, binders, type_tree, expr = tree.children
        name = str(name_tok)
        if name in RESERVED:
            raise err(f"{name} is a reserved name", name_tok, hint="pick another name")
        existing = self.scope.lookup(name)
        if existing is not None:
            if global_decl:
                return existing.ref
            raise err(f"{name} is already defined in this block", name_tok)
        index_vars: dict[str, str] = {}
        if binders is not None:
            axes, names = self.binders(binders)
            index_vars = dict(zip(names, axes))
        # A formula with no axes is just a number: fold it.
        if binders is None and type_tree is None:
            vid = self.expr(expr)
            if self.number_value(vid) is not None:
                self.scope_root().names[name] = Binding("number", self.node_index[vid].attrs["value"])
                return vid
            raise err(f"constant {name} must be a number, or declare its axes: const {name}[i: A] = ...", expr)
        t = WireType(axes=tuple(index_vars.values()), lifted=False) if binders is not None else \
            self.wire_type(type_tree, lifted=False)
        init = Tree("init", [expr], meta=expr.meta)
        region = self.init_region(init, t, index_vars or None, "const")
        self.params.append(ParamDef(name=name, kind="const", type=t, init=region, loc=loc_of(name_tok)))
        node = Node(id=self.fresh(name), op="const", attrs={"name": name}, types=[t], loc=loc_of(name_tok),
                    name=name)
        self.frames[0].nodes.insert(0, node)
        self.node_index[node.id] = node
        self.scope_root().names[name] = Binding("param", node.id)
        return node.id

    def scope_root(self) -> Scope:
        scope = self.scope
        while scope.parent is not None:
            scope = scope.parent
        return scope

    def fold(self, op: str, ids: list[str], tree: Tree) -> str | None:
        values = [self.number_value(i) for i in ids]
        if any(v is None for v in values):
            return None
        a = values[0]
        if op == "neg":
            return self.number(-a, tree).id
        b = values[1]
        if op == "div" and b == 0:
            raise err("division by zero", tree)
        result = {"add": lambda: a + b, "sub": lambda: a - b, "mul": lambda: a * b, "div": lambda: a / b,
                  "pow": lambda: checked_power(a, b, tree)}[op]()
        return self.number(checked_number(result, tree), tree).id

    def _binary(self, tree: Tree, op: str) -> str:
        ids = [self.expr(c) for c in tree.children]
        folded = self.fold(op, ids, tree)
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
        axes = None if axes_tree is None else [self.axis_name(t) for t in axes_tree.children]
        lid, rid = self.expr(left), self.expr(right)
        at_op = self.symbol_after(left, "@")
        for side, vid in (("left", lid), ("right", rid)):
            if self.number_value(vid) is not None:
                raise NcdError(f"the {side} operand of @ is a number; use * to scale", at_op or span_of(tree))
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
                src, dst = ([self.axis_name(t) for t in g.children] for g in item.children)
                vid = self.add_op("reshape", [vid], {"src": src, "dst": dst}, item).id
            elif item.data == "select_axis":
                axis_tok, index_tree = item.children
                vid = self.select(vid, self.axis_name(axis_tok), index_tree, item)
            else:
                vid = self.select(vid, None, item.children[0], item)
        return vid

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
                                  f"are {self.type_of(vid)}", where)
                return self.add_op("select", [vid, binding.ref], {"axis": axis}, where).id
        index = self.const_int(index_tree, "an index")
        node = self.add_op("select", [vid], {"axis": axis, "index": index}, where)
        axis = node.attrs["axis"]
        bound = self.spec.bound_size(axis)
        if bound is not None and index >= bound:
            raise err(f"index {index} is out of range for axis {axis} of size {bound}", where,
                      hint=f"indices along {axis} run from 0 to {bound - 1}")
        return node.id

    # ---------------------------------------------------------------- calls
    def expr_call(self, tree: Tree) -> str:
        name_tok, *args = tree.children
        name = str(name_tok)
        args = [a for a in args if a is not None]
        binding = self.scope.lookup(name)
        if binding is not None and binding.kind == "instance":
            return self.call_instance(name, args, tree)
        if name in NUMERIC_FUNCS and len(args) == 1 and args[0].data == "pos_arg":
            vid = self.expr(args[0].children[0])
            value = self.number_value(vid)
            if value is not None:
                return self.number(checked_number(NUMERIC_FUNCS[name](value), tree), tree).id
        if name in OPS:
            return self.call_op(name, args, tree)
        if name in INITIALISERS:
            raise err(f"{name}(...) is an initialiser: use it after init", tree)
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
            "specs are data, not Python: Python code is never executed" if python else None))

    def scope_items(self):
        scope: Scope | None = self.scope
        while scope is not None:
            yield from scope.names.items()
            scope = scope.parent

    def call_op(self, name: str, args: list[Tree], tree: Tree) -> str:
        opdef = OPS[name]
        positional = [a.children[0] for a in args if a.data == "pos_arg"]
        keywords = {str(a.children[0]): (a.children[1], a) for a in args if a.data == "kw_arg"}
        low, high = opdef.arity
        attrs: dict[str, Any] = {}
        kw_specs = dict(opdef.kwargs)
        if high == 0 and positional and kw_specs:  # idx(A): the axis may be given positionally
            first = next(iter(kw_specs))
            keywords.setdefault(first, (positional.pop(0), tree))
        if not low <= len(positional) <= high:
            want = f"{low}" if low == high else f"{low} to {high}"
            raise err(f"{name} takes {want} inputs, got {len(positional)}", tree,
                      hint=f"{name}: {opdef.doc}" if opdef.doc else None)
        for key, (value, at) in keywords.items():
            spec = kw_specs.get(key)
            if spec is None:
                allowed = ", ".join(kw_specs) or "none"
                raise err(f"{name} has no option {key}", at, hint=f"its options: {allowed}")
            attrs[key] = self.kw_value(spec.kind, value, at)
        for key, spec in kw_specs.items():
            if key not in attrs:
                if spec.required:
                    raise err(f"{name} needs {key} = ...", tree, hint=opdef.doc or None)
                if spec.default is not None:
                    attrs[key] = spec.default
        inputs = [self.expr(p) for p in positional]
        if name in ("add", "sub", "mul", "div", "pow"):
            folded = self.fold(name, inputs, tree)
            if folded is not None:
                return folded
        spans = {key: span_of(value) for key, (value, _) in keywords.items()}
        return self.add_op(name, inputs, attrs, tree, spans=spans).id

    def kw_value(self, kind: str, value: Tree, where: Tree) -> Any:
        if kind == AXIS:
            if not (isinstance(value, Tree) and value.data == "name"):
                raise err("expected an axis name", where)
            return self.axis_name(value.children[0])
        if kind == AXES:
            if isinstance(value, Tree) and value.data == "name":
                return [self.axis_name(value.children[0])]
            if isinstance(value, Tree) and value.data == "axis_list":
                return [self.axis_name(t) for t in value.children]
            raise err("expected an axis name or a list of axes [A, B]", where)
        if kind == AXES_OR_MAP and isinstance(value, Tree) and value.data in ("name", "axis_list"):
            same = self.kw_value(AXES, value, where)
            return {"src": same, "dst": list(same)}
        if kind in (AXIS_MAP, AXES_OR_MAP):
            if isinstance(value, Tree) and value.data == "axis_map":
                src, dst = (self._axis_side(c) for c in value.children)
                return {"src": src, "dst": dst}
            raise err("expected an axis map: A -> B or [A1, A2] -> B", where)
        if kind == NUMBER:
            vid = self.expr(value)
            number = self.number_value(vid)
            if number is None or not number.is_number:
                raise err("expected a number", where)
            return float(number)
        raise err(f"unsupported option kind {kind}", where)

    def _axis_side(self, side: Tree | Token) -> list[str]:
        if isinstance(side, Token):
            return [self.axis_name(side)]
        return [self.axis_name(t) for t in side.children]

    def call_instance(self, name: str, args: list[Tree], tree: Tree) -> str:
        block = self.instance_blocks[name]
        inst = self.instances[name]
        if any(a.data == "kw_arg" for a in args):
            raise err("block inputs are positional", tree)
        ids = [self.expr(a.children[0]) for a in args]
        if len(ids) != len(block.inputs):
            raise err(f"{block.name} takes {len(block.inputs)} inputs, got {len(ids)}", tree)
        lifted: list[str] = []
        for vid, port in zip(ids, block.inputs):
            got = self.type_of(vid)
            missing = [a for a in port.type.axes if a not in got.axes]
            if missing:
                raise err(f"{block.name} expects {port.name}: {port.type} but got a wire with axes {got} "
                          f"(missing {', '.join(missing)})", tree,
                          hint="rename or reshape the wire's axes to the block's: x[A as B]")
            lifted += [a for a in got.axes if a not in port.type.axes and a not in lifted]
        outputs = []
        for out in block.outputs:
            clash = [a for a in lifted if a in out.axes]
            if clash:
                raise err(f"{block.name} is lifted over axis {clash[0]} but also produces it", tree,
                          hint=f"rename the caller's axis first: x[{clash[0]} as {clash[0]}']")
            if out.lifted:
                outputs.append(WireType(axes=tuple(lifted) + out.axes, lifted=True))
            else:
                outputs.append(WireType(axes=out.axes, lifted=False))
        attrs = {"instance": name, "block": block.key, "lift": lifted,
                 "ports": [list(p.type.axes) for p in block.inputs], "repeat": inst.repeat}
        node = self.add("call", ids, attrs, outputs, tree)
        if len(outputs) == 1:
            return node.id
        return node.id

    # ---------------------------------------------------------------- loops
    def carries(self, carry_tree: Tree | None, where: Tree) -> tuple[list[tuple[str, WireType]], list[str]]:
        if carry_tree is None:
            return [], []
        carries, inits = [], []
        for item in carry_tree.children:
            name_tok, type_tree, init_tree = item.children
            t = self.wire_type(type_tree, lifted=True)
            name = str(name_tok)
            if name in [c[0] for c in carries]:
                raise err(f"carry {name} is declared twice", name_tok, hint="give each carried state its own name")
            if init_tree is None:
                init = self.number(sympy.Integer(0), name_tok).id
            else:
                init = self.expr(init_tree)
            got = self.type_of(init)
            if self.number_value(init) is None and sorted(got.axes) != sorted(t.axes):
                if set(got.axes) < set(t.axes) or not got.axes:
                    init = self.add("broadcast", [init], {"axes": list(t.axes)}, [t], init_tree).id
                else:
                    raise err(f"carry {name} is declared {t} but starts as a wire with axes {got}", init_tree)
            elif self.number_value(init) is None and got.axes != t.axes:
                init = self.add_op("annotate", [init], {"axes": list(t.axes)}, init_tree).id
            carries.append((name, t))
            inits.append(init)
        return carries, inits

    def expr_scan(self, tree: Tree) -> str:
        var_tok, axis_tok, reverse, carry_tree, via, *body = tree.children
        axis = self.axis_name(axis_tok)
        if carry_tree is None:
            raise err("scan without carry: a scan needs a state carried from step to step", tree,
                      hint="scan t over T carry (h: [D] = 0) { ... }")
        carries, inits = self.carries(carry_tree, tree)
        region, frame = self.region("scan", body, carries, tree,
                                    extra_args=[(str(var_tok), "index", {"axis": axis, "name": str(var_tok)})])
        if frame.emitted is None:
            raise err("this scan emits nothing", tree, hint="add emit h as the step's output")
        region.results += frame.emitted
        emitted_types = [self.type_of_any(e, region) for e in frame.emitted]
        for e, t in zip(frame.emitted, emitted_types):
            if axis in t.axes:
                raise err(f"a step's output already has the scanned axis {axis}", tree)
        out_types = [WireType(axes=(axis, *t.axes), lifted=True) for t in emitted_types]
        attrs = {"axis": axis, "reverse": reverse is not None, "backend": str(via.children[0]) if via else None,
                 "carries": [c[0] for c in carries], "n_emit": len(frame.emitted),
                 "captures": frame.captures}
        node = self.add("scan", inits, attrs, out_types, tree, regions=[region])
        if len(out_types) > 1:
            return node.id
        return node.id

    def type_of_any(self, node_id: str, region: Region) -> WireType:
        return self.node_index[node_id].type

    def expr_halting(self, tree: Tree) -> str:
        var_tok, max_tree, eps_tree, carry_tree, *body = tree.children
        max_steps = self.const_int(max_tree, "the maximum number of steps")
        if max_steps < 1:
            raise err("a halting loop needs at least one step", max_tree)
        eps = 0.01
        if eps_tree is not None:
            vid = self.expr(eps_tree.children[0])
            value = self.number_value(vid)
            if value is None or not value.is_number or not 0 < value < 1:
                raise err("eps must be a number in (0, 1)", eps_tree)
            eps = float(value)
        if carry_tree is None:
            raise err("halting loop without carry", tree, hint="halting n max 8 carry (s: [T, D] = x) { ... }")
        carries, inits = self.carries(carry_tree, tree)
        region, frame = self.region("halting", body, carries, tree,
                                    extra_args=[(str(var_tok), "index", {"axis": None, "name": str(var_tok)})])
        if frame.halt is None:
            raise err("this halting loop never says when to halt", tree, hint="end the body with halt p")
        p_type = self.node_index[frame.halt].type
        for name, t in carries:
            if not set(p_type.axes) <= set(t.axes):
                raise err(f"the halting probability has axes {p_type}, not all on carry {name} {t}", tree)
        region.results.append(frame.halt)
        outs = [t for _, t in carries] + [WireType(axes=p_type.axes, lifted=True)]
        attrs = {"max": max_steps, "eps": eps, "carries": [c[0] for c in carries],
                 "halt_axes": list(p_type.axes), "captures": frame.captures}
        return self.add("halting", inits, attrs, outs, tree, regions=[region]).id


def assigned_names(stmts: list[Any]) -> list[str]:
    out: list[str] = []
    for stmt in stmts:
        if isinstance(stmt, Tree) and stmt.data == "assign":
            for target in stmt.children[:-1]:
                if str(target) not in out:
                    out.append(str(target))
    return out


def _walk(nodes: list[Node]):
    for n in nodes:
        yield n
        for r in n.regions:
            yield from _walk(r.nodes)


def _region_ids(nodes: list[Node]) -> set[str]:
    return {n.id for n in _walk(nodes)}


def build_spec(source: str, name: str = "<spec>", bindings: dict[str, int] | None = None,
               entry: str | None = None) -> SpecIR:
    try:
        return SpecBuilder(source, name, bindings or {}, entry).build()
    except NcdError as exc:
        raise exc.located(source, name) from None
    except RecursionError:
        raise NcdError("the spec nests too deeply", Span(1, 1)).located(source, name) from None
    except Exception as exc:  # noqa: BLE001 - the API boundary's safety net, not error handling
        # Every mistake in a spec is reported where it is detected, with its place; reaching this
        # line is a bug in ncd. Users still get an NcdError, the original stays its __cause__, and the
        # fuzz tests (tests/test_fuzz.py) fail on any "internal error".
        raise NcdError(f"internal error: {type(exc).__name__}: {exc}",
                       hint="this is a bug in ncd, not in the spec: please report it with the spec"
                       ).located(source, name) from exc
