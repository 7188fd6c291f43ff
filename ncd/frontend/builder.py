"""Parse tree → typed IR. Every wire gets its axes here; every mistake is reported here.

The builder specialises each block once per distinct set of bracket arguments (axis identities,
numbers), checks its body with the op table's typing rules, and records block calls together
with the axes they are lifted over.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import sympy
from lark import Token, Tree

from ncd import sizes as sz
from ncd.errors import NcdError, Span, source_lines
from ncd.frontend.block import BlockBuilder
from ncd.frontend import imports as imports_mod
from ncd.frontend.entries import entry_set
from ncd.frontend.imports import Origin
from ncd.frontend.common import (
    _did_you_mean,
    _size_safe,
    checked_power,
    err,
    loc_of,
    number_literal,
)
from ncd.frontend.parser import parse
from ncd.ir import CONST, AxisDef, BlockIR, Loc, SpecIR, SpecMeta, walk
from ncd.frontend.unrolled import check_unrolled
from ncd import limits
from ncd.limits import MAX_BLOCK_NESTING, MAX_SIZE_VALUE
from ncd.ops import OPS
from ncd.ops.init import INITIALISERS


# ----------------------------------------------------------------------------------- spec level
@dataclass(frozen=True)
class Inference:
    """Where a free axis got its size from an op (a rename, a slice, a reshape...): quoted when a
    size fixed late is what makes an earlier op impossible."""

    axis: str
    size: sympy.Expr
    what: str
    line: int | None


class SpecBuilder:
    def __init__(self, source: str, name: str, bindings: dict[str, int], entry: str | None,
                 seeded: tuple[dict[str, sympy.Expr], list[Inference]] = ({}, [])) -> None:
        self.source = source
        self.name = name
        self.bindings = dict(bindings)
        self.tree = parse(source, name)
        self.axes: dict[str, AxisDef] = {}
        self.axis_trees: dict[str, Tree] = {}
        # free axes sized by an op, each in the axes still free (rewritten as more are inferred);
        # a second build starts from the first one's (``seeded``), so every typing rule sees them
        self.inferred: dict[str, sympy.Expr] = dict(seeded[0])
        self.seeded_from: list[Inference] = list(seeded[1])
        self.inferences: dict[str, Inference] = {}
        self.late: list[Inference] = []  # inferences of axes some op had already used symbolically
        self._first_use: dict[str, int] = {}  # axis → the unify count when its symbolic size was first read
        self._unifies = 0
        self.block_trees: dict[str, Tree] = {}
        self.global_consts: dict[str, Tree] = {}
        self.blocks: dict[str, BlockIR] = {}
        self.building: list[str] = []
        self.entry_name = entry
        self.entry_decl: Tree | None = None
        self.own_blocks: list[str] = []  # this file's blocks, in order (the last is the default entry)
        self.origins: dict[str, Origin] = {}  # imported block → the file its text (and its errors) are in
        self._size_cache: dict[tuple[str, int, int], sympy.Expr] = {}
        self._sizes_text: tuple[int, dict[str, str | None]] = (-1, {})  # (len(axes) when built, name -> size)
        self._collect()

    # ---------------------------------------------------------------- declarations
    def _collect(self) -> None:
        imports: list[Tree] = []
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
                self.own_blocks.append(name)
            elif item.data == "import_decl":
                imports.append(item)
            elif item.data == "entry_decl":
                if self.entry_decl is not None:
                    raise err(f"a second entry declaration (the first is at line {self.entry_decl.meta.line})",
                              item, hint="list every entry block in one declaration: entry Train, Greedy")
                self.entry_decl = item
            elif item.data in ("const_decl", "const_list"):
                name = str(item.children[0])
                if name in self.global_consts:
                    raise err(f"constant {name} is defined twice", item.children[0],
                              hint=f"delete one of the two, or rename it: const {name}2 = ...")
                self.global_consts[name] = item
        if imports:
            self._import(imports)
        for name in [n for n in self.bindings if "'" in n and self.base_axis(n) in self.axes]:
            # a primed axis exists wherever its base does and shares its size: T'=5 binds T
            value, base = self.bindings.pop(name), self.base_axis(name)
            if self.bindings.setdefault(base, value) != value:
                raise NcdError(f"{name}={value} is bound, but {name} shares the size of {base}, bound to "
                               f"{self.bindings[base]}", hint=f"bind {base} only")
        for name, value in self.bindings.items():
            if name not in self.axes:
                raise NcdError(f"{name}={value} is bound, but the spec declares no axis {name}",
                               hint=_did_you_mean(name, self.axes) or f"axes: {', '.join(sorted(self.axes))}")
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                loc = self.axes[name].loc
                raise NcdError(f"axis {name} must be bound to a positive integer, got {value!r}",
                               Span(loc.line, loc.col) if loc else None,
                               hint=f"bind a whole number of at least 1: --set {name}=4 (ncd.load(..., {name}=4))")
            if value > MAX_SIZE_VALUE:
                loc = self.axes[name].loc
                raise NcdError(f"axis {name} is bound to {value}, more than the limit of {MAX_SIZE_VALUE} (2^63 - 1)",
                               Span(loc.line, loc.col) if loc else None,
                               hint="sizes are tensor dimensions: they must fit in an int64")
        self._solve_derived_bindings()
        for name, tree in self.axis_trees.items():
            self._check_axis_size(name, tree)
        if not self.block_trees:
            raise NcdError("the spec defines no block", Span(1, 1), hint="add block Name(x: [A]) -> [A] { ... }")

    def _import(self, imports: list[Tree]) -> None:
        """Bring the imported blocks, with their files' axes and constants the spec lacks (imports.py)."""
        root = imports_mod.root_of(self.name)
        chain = [] if self.name.startswith("<") else [Path(self.name).resolve()]
        ns = imports_mod.Namespace(blocks={n: (t, None) for n, t in self.block_trees.items()},
                                   axes=[(d, None) for d in self._own_axis_defs()],
                                   consts={n: (t, None) for n, t in self.global_consts.items()})
        budget = imports_mod.Budget()
        for item in imports:
            imports_mod.bring(ns, item, root, root, chain, budget)
        for name, (tree, origin) in ns.blocks.items():
            if origin is not None:
                self.block_trees[name] = tree
                self.origins[name] = origin
        for axis_def, origin in ns.axes:
            if origin is not None and str(axis_def.children[0]) not in self.axes:
                try:
                    self.declare_axis(axis_def, {}, {})
                except NcdError as exc:
                    raise exc.located(origin.source, origin.name) from None
        for name, (tree, origin) in ns.consts.items():
            if origin is not None:
                self.global_consts[name] = tree

    def _own_axis_defs(self) -> list[Tree]:
        return [d for item in self.tree.children if isinstance(item, Tree) and item.data == "axis_decl"
                for d in item.children]

    def declare_axis(self, axis_def: Tree, subst: dict[str, str], numbers: dict[str, sympy.Expr]) -> None:
        name_tok, size_tree = axis_def.children
        name = str(name_tok)
        if "'" in name:
            raise err(f"axis {name} is a prime: primes exist for every axis and are not declared", name_tok,
                      hint=f"declare the base axis ({name.replace(chr(39), '')}) and use {name} where you need it")
        if not _size_safe(name):
            raise err(f"{name} cannot name an axis: sizes are written with sympy, where {name} means something else",
                      name_tok, hint="pick another name")
        size = None
        if size_tree is not None:
            size = self.size_expr(size_tree, subst, numbers)
            self.bounded(size, f"the size of axis {name}", size_tree)
        if name in self.axes:
            old = self.axes[name]
            same = (old.size is None and size is None) or (
                old.size is not None and size is not None and sz.simplify_bounded(sz.parse(old.size) - size, f"the size of axis {name}") == 0)
            if not same and old.loc is not None and loc_of(name_tok) == old.loc:  # one declaration, two uses
                raise err(f"axis {name} would have two sizes, {old.size} and {sz.to_text(size) if size is not None else 'free'}, "
                          f"in two uses of the block that declares it (an axis has one size in a spec)", name_tok,
                          hint=f"make {name} an axis parameter of the block ([..., {name}]) and pass a top-level axis "
                               f"per size, or use the block with one set of bracket arguments")
            if not same:
                raise err(f"axis {name} is declared twice (first at line {old.loc.line if old.loc else '?'})",
                          name_tok, hint=f"declare an axis once; a second wire of the same axis is {name}'")
            return
        self.axes[name] = AxisDef(name=name, size=sz.to_text(size) if size is not None else None, loc=loc_of(name_tok))
        if size_tree is not None:
            self.axis_trees[name] = size_tree

    def _solve_derived_bindings(self) -> None:
        """A bound derived axis (``axis Y = 4 * Yq``, bound Y = 8) fixes the free axis it is
        derived from (Yq = 2); one that no whole size satisfies (Y = 5) is an error at its
        declaration naming the constraint, not a shape mismatch deep in torch."""
        changed = True
        while changed:
            changed = False
            for name, tree in self.axis_trees.items():
                if name not in self.bindings or (isinstance(tree, Tree) and tree.data == "number"):
                    continue
                declared = self.resolve_declared(name)
                free = [s for s in declared.free_symbols if s.name in self.axes and self.axes[s.name].size is None]
                if declared.is_number or len(free) != 1 or len(declared.free_symbols) != 1:
                    continue
                if sz.size_degree(declared) > 4:  # beyond closed forms sympy.solve may run for minutes
                    continue
                (symbol,) = free
                bound = self.bindings[name]
                try:
                    roots = sympy.solve(sympy.Eq(declared, bound), symbol)
                except (NotImplementedError, ValueError):  # not a polynomial sympy can invert: leave it
                    continue
                whole = [r for r in roots if r.is_integer and r.is_positive]
                if not whole:
                    raise err(f"axis {name} = {declared} is bound to {bound}, but no whole size of {symbol.name} "
                              f"gives {bound}", tree,
                              hint=f"bind {name} to a size its declaration allows (e.g. {declared.subs(symbol, 1)}, "
                                   f"{declared.subs(symbol, 2)}, ...), or bind {symbol.name} instead")
                self.bindings[symbol.name] = int(whole[0])
                self._size_cache.clear()
                changed = True

    def _check_axis_size(self, name: str, tree: Tree) -> None:
        value = self.size(name)
        if value.is_number:
            if not value.is_integer:
                raise err(f"axis {name} has size {value}, which is not a whole number", tree,
                          hint="a derived size must divide exactly (check the bound sizes)")
            if value <= 0:
                raise err(f"axis {name} has size {value}; sizes must be positive", tree,
                          hint="write a size of at least 1 (check the bound sizes of the axes it is derived from)")
            if value > MAX_SIZE_VALUE:
                raise err(f"axis {name} has size {value}, more than the limit of {MAX_SIZE_VALUE} (2^63 - 1)", tree,
                          hint="sizes are tensor dimensions: they must fit in an int64")
        # A literal size (`axis D = 512`) is a default the caller may rebind; a derived one is checked.
        literal = isinstance(tree, Tree) and tree.data == "number"
        if name in self.bindings and self.axes[name].size is not None and not literal:
            declared = self.resolve_declared(name)
            if declared.is_number and declared != self.bindings[name]:
                raise err(f"axis {name} is declared with size {declared} but bound to {self.bindings[name]}", tree,
                          hint=f"bind {name} to {declared}, or leave it unbound (its size is derived)")

    @staticmethod
    def bounded(size: sympy.Expr, what: str, where: Tree | Token | None) -> None:
        """Refuse a size whose degree is beyond the limit (before sympy expands or simplifies it)."""
        try:
            sz.check_degree(size, what)
        except NcdError as exc:
            raise err(exc.message, where, hint=exc.hint) from None

    def resolve_declared(self, name: str) -> sympy.Expr:
        sizes = {k: v.size for k, v in self.axes.items()}
        return sz.resolve(name, sizes, {k: v for k, v in self.bindings.items() if k != name})

    def size_expr(self, tree: Tree | Token, subst: dict[str, str], numbers: dict[str, sympy.Expr]) -> sympy.Expr:
        """An axis-size expression (numbers, axis names, + - * / ^)."""
        if isinstance(tree, Token):
            raise err("expected a size expression", tree, hint="a size is numbers and axis names with + - * / ^ and sqrt: 4 * D")
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
        if kind == "call" and str(tree.children[0]) == "sqrt":  # `axis M = sqrt(N)`: whole once N is known
            args = tree.children[1:]
            if len(args) != 1 or not isinstance(args[0], Tree) or args[0].data != "pos_arg":
                raise err("sqrt in a size takes one argument", tree, hint="axis M = sqrt(N)")
            return checked_power(self.size_expr(args[0].children[0], subst, numbers), sympy.Rational(1, 2), tree)
        raise err("a size must be written with numbers, axis names, + - * / ^ and sqrt", tree,
                  hint="e.g. axis K = D / H, axis M = sqrt(N)")

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
        if self._sizes_text[0] != len(self.axes):  # rebuilt only when an axis is added (else quadratic)
            self._sizes_text = (len(self.axes), {k: v.size for k, v in self.axes.items()})
        try:
            expr = sz.resolve(base, self._sizes_text[1], self.bindings)
            if base in self.inferred and expr == sz.symbol(base):
                expr = self.inferred[base]
            subs = {s: self.inferred[s.name] for s in expr.free_symbols
                    if s.name in self.inferred and s.name != base}
            expr = sz.substitute(expr, subs, f"the size of axis {base}") if subs else expr
        except NcdError as exc:
            if exc.span is not None or base not in self.axes or self.axes[base].loc is None:
                raise
            loc = self.axes[base].loc
            raise NcdError(exc.message, Span(loc.line, loc.col), hint=exc.hint) from None
        for symbol in expr.free_symbols:
            self._first_use.setdefault(symbol.name, self._unifies)
        self._size_cache[key] = expr
        return expr

    def unify(self, axis: str, size: sympy.Expr, what: str, where: Tree | Token | None) -> None:
        """``axis`` has ``size`` here (an op computed it): a free axis takes it, a sized one must
        equal it, and where the two differ as formulas the equation sizes a free axis in them
        (``x[A as C]`` with ``C = 3`` and a free ``A`` makes ``A = 3``)."""
        self._unifies += 1
        base = self.base_axis(axis)
        current = self.size(base)
        self.bounded(size, f"the size of axis {axis} ({what})", where)
        size = sz.simplify(size)
        if size.is_number and size < 1:  # a window larger than its (padded) axis, a stride past the end
            raise err(f"axis {axis} would have size {size} ({what}); a size must be at least 1", where,
                      hint="make the input axis larger, or the window (kernel, dilation, pool size) smaller")
        if current == sz.symbol(base) and self.axes.get(base) is not None and self.axes[base].size is None:
            if size != current:
                own = [s for s in size.free_symbols if self.base_axis(s.name) == base]
                if own and size.subs({s: sz.symbol(base) for s in own}) == current:
                    return  # D' has D's size: nothing to infer
                if own:
                    raise err(f"axis {axis} would have size {size} ({what}), which depends on {base} itself",
                              where, hint=f"this needs two different axes where it uses {base}")
                self._infer(base, size, what, where)
            return
        diff = sz.simplify_bounded(current - size, f"the size of axis {axis} ({what})")
        if diff != 0 and (diff.is_number or not diff.free_symbols):
            raise err(f"axis {axis} has size {current} here, but {what} is {size}", where,
                      hint=f"make the sizes agree (axis {base} is declared at line "
                           f"{self.axes[base].loc.line if self.axes.get(base) and self.axes[base].loc else '?'})")
        if diff != 0:
            self._solve(axis, current, size, what, where)

    def _solve(self, axis: str, current: sympy.Expr, size: sympy.Expr, what: str, where: Tree | Token | None) -> None:
        """``current = size`` as formulas in free axes: size one free axis from it (the one the op's
        side names first), or refuse a relation no single free axis can satisfy."""
        equation = current - size
        ordered = sorted(size.free_symbols, key=str) + sorted(current.free_symbols - size.free_symbols, key=str)
        free = [s for s in ordered if self.axes.get(s.name) is not None and self.axes[s.name].size is None
                and s.name not in self.bindings and s.name not in self.inferred]
        for symbol in free:
            roots = None
            if sz.size_degree(equation) <= 4:  # beyond closed forms sympy.solve may run for minutes
                try:
                    roots = sympy.solve(equation, symbol)
                except (NotImplementedError, ValueError):
                    pass
            if roots is not None:
                roots = [r for r in roots if not r.is_number or (r.is_integer and r.is_positive)]
            elif equation.free_symbols == {symbol}:  # floor of a strided window: search the whole sizes
                roots = [sympy.Integer(n) for n in sz.whole_roots(equation, symbol)]
            else:
                continue
            if len(roots) == 1:
                self._infer(symbol.name, roots[0], f"{axis} has size {current}, and {what} is {size}", where)
                return
            if len(roots) > 1 and all(r.is_number for r in roots):
                shown = ", ".join(str(r) for r in roots[:3]) + (", ..." if len(roots) > 3 else "")
                raise err(f"axis {axis} has size {current} here, and {what} is {size}: several sizes of "
                          f"{symbol.name} give that ({shown}), so it cannot be told from {axis}", where,
                          hint=f"bind {symbol.name} as well: --set {symbol.name}={roots[0]}")
        names = ", ".join(s.name for s in free) or ", ".join(sorted(s.name for s in equation.free_symbols))
        base = self.base_axis(axis)
        line = self.axes[base].loc.line if self.axes.get(base) and self.axes[base].loc else "?"
        raise err(f"axis {axis} has size {current} here, but {what} is {size}, and no whole size of "
                  f"{names} makes them equal", where,
                  hint=f"make the sizes agree (axis {base} is declared at line {line}), or bind the free axes "
                       f"so that both sides have one size")

    def _infer(self, name: str, size: sympy.Expr, what: str, where: Tree | Token | None) -> None:
        """Record a free axis's size; one an op already read symbolically calls for a second build."""
        if size.is_number and not size.is_integer:
            raise err(f"axis {name} would have size {size} ({what}), which is not a whole number", where,
                      hint=f"make the sizes agree so that {name} comes out a whole number")
        symbol = sz.symbol(name)
        for other, value in self.inferred.items():
            if symbol in value.free_symbols:
                self.inferred[other] = sz.simplify(value.xreplace({symbol: size}))
        self.inferred[name] = size
        loc = loc_of(where)
        found = Inference(name, size, what, loc.line if loc else None)
        self.inferences[name] = found
        if self._first_use.get(name, self._unifies) < self._unifies:
            self.late.append(found)

    def bound_size(self, name: str) -> int | None:
        value = self.size(name)
        return int(value) if value.is_number and value.is_integer else None

    # ---------------------------------------------------------------- blocks
    def specialise(self, name: str, args: list[tuple[str | None, Tree]], where: Tree | Token | None,
                   caller: "BlockBuilder | None") -> BlockIR:
        tree = self.block_trees.get(name)
        if tree is None:
            raise err(f"unknown block {name}", where, hint=_did_you_mean(name, self.block_trees)
                      or f"define block {name}(x: [A]) -> [A] {{ ... }}, or import it: import {name} from ./file.ncd")
        params_tree = tree.children[1]
        declared = [] if params_tree is None else params_tree.children
        subst: dict[str, str] = {}
        numbers: dict[str, sympy.Expr] = {}
        positional = [a for k, a in args if k is None]
        keyword = {k: a for k, a in args if k is not None}
        if len(positional) > len(declared):
            raise err(f"block {name} takes {len(declared)} bracket arguments, got {len(positional)}", where,
                      hint=f"pass {len(declared)}: {name}[{', '.join(str(p.children[0]) for p in declared)}]" if declared
                      else f"drop the brackets: use l = {name}")
        for i, param in enumerate(declared):
            pname, default = str(param.children[0]), param.children[1]
            value = positional[i] if i < len(positional) else keyword.pop(pname, None)
            if default is None:  # an axis parameter: bound to an axis of the caller
                if value is None:
                    raise err(f"block {name} needs axis argument {pname}", where,
                              hint=f"bind it where the block is used: use b = {name}[{pname} = SomeAxis], "
                                        "then call b(...) (a direct call takes no brackets)")
                if not (isinstance(value, Tree) and value.data == "name"):
                    raise err(f"{pname} of block {name} is an axis parameter: pass an axis name", value,
                              hint=f"declare an axis (axis A = ...) and pass it: {name}[{pname} = A]")
                axis = str(value.children[0])
                if caller is not None:
                    axis = self.subst_axis(axis, caller.subst)
                if not self.known_axis(axis):
                    raise err(f"unknown axis {axis}", value, hint=_did_you_mean(axis, self.axes) or f"declare it: axis {axis}")
                subst[pname] = axis
            else:
                source = value if value is not None else default
                ctx_subst = caller.subst if (caller is not None and value is not None) else subst
                ctx_numbers = caller.numbers if (caller is not None and value is not None) else numbers
                numbers[pname] = self.size_expr(source, ctx_subst, ctx_numbers)
        if keyword:
            extra = next(iter(keyword))
            raise err(f"block {name} has no parameter {extra}", keyword[extra],
                      hint=_did_you_mean(extra, [str(p.children[0]) for p in declared])
                      or (f"its parameters: {', '.join(str(p.children[0]) for p in declared)}" if declared
                          else f"drop the brackets: use l = {name}"))
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
        if len(self.building) >= MAX_BLOCK_NESTING:
            raise err(f"blocks nest {len(self.building) + 1} deep here ({self.building[0]} → ... → {key}), more "
                      f"than the limit of {MAX_BLOCK_NESTING}", where,
                      hint="a model is a few levels of blocks; repeat a block with `use l = B × N` instead")
        self.building.append(key)
        try:
            block = BlockBuilder(self, tree, key, subst, numbers).build()
            if self.origins.get(name) is not None:
                _stamp_file(block, self.origins[name].name)
        except NcdError as exc:
            _note_binding(exc, key, subst, where)
            origin = self.origins.get(name)
            if origin is not None:  # a mistake inside an imported block: quote its own file
                raise exc.located(origin.source, origin.name) from None
            raise
        finally:
            self.building.pop()
        self.blocks[key] = block
        return block

    def has_weights(self, block: BlockIR) -> bool:
        """Learned parameters or buffers anywhere inside (constants recompute, so they don't count)."""
        if any(p.kind != CONST for p in block.params):
            return True
        return any(self.has_weights(self.blocks[i.block]) for i in block.instances if i.block in self.blocks)

    def build(self) -> SpecIR:
        declared = [] if self.entry_decl is None else self.entry_decl.children
        entry = self.entry_name or (str(declared[0]) if declared else self.own_blocks[-1] if self.own_blocks
                                    else list(self.block_trees)[-1])
        if entry not in self.block_trees:
            where = declared[0] if declared and self.entry_name is None else None  # `entry Nope`: at the name
            raise err(f"the spec has no block {entry}", where, hint=_did_you_mean(str(entry), self.block_trees)
                      or f"blocks: {', '.join(self.block_trees)}")
        entry_block = self.specialise(entry, [], self.block_trees[entry].children[0], None)
        entries = entry_set(self, declared)
        axes = dict(self.axes)
        for name, size in self.inferred.items():
            axes[name] = axes[name].model_copy(update={"size": sz.to_text(size)})
        ir = SpecIR(name=self.name, axes=axes, bindings=self.bindings, blocks=self.blocks,
                    entry=entry_block.key, entries=entries, meta=read_meta(self.source))
        check_unrolled(ir)  # the repeat cap, composed across block calls
        return ir


def read_meta(source: str) -> SpecMeta:
    """The header comment: first line is the title; a `# paper: ...` line names the paper."""
    title, paper = "", ""
    for line in source_lines(source):
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




def build_sized(source: str, name: str, bindings: dict[str, int], entry: str | None) -> SpecIR:
    """Build, and build again from the inferred sizes while an op sized an axis that an earlier op
    had read as free (``x[L1 as A]`` after ``x[A = 1:A as L0]`` fixes ``A = 1``, so the slice is
    empty): every typing rule then sees the sizes the spec ends with, and its error says which
    inference made it so."""
    seeded: tuple[dict[str, sympy.Expr], list[Inference]] = ({}, [])
    for _ in range(limits.MAX_SIZE_REBUILDS):
        try:
            builder = SpecBuilder(source, name, bindings, entry, seeded)
            ir = builder.build()
        except NcdError as exc:
            raise _with_inferences(exc, seeded[1]) from None
        if not builder.late:
            return ir
        seeded = (dict(builder.inferred), [*seeded[1], *builder.late])
    # Returning this IR would let an op typed before the last inference keep a size it no longer has.
    last = builder.late[-1]
    raise NcdError(f"sizes fixed late re-checked the spec {limits.MAX_SIZE_REBUILDS} times and axis {last.axis} "
                   f"was still sized after an earlier op read it (the limit of {limits.MAX_SIZE_REBUILDS} builds, "
                   "ncd.limits.MAX_SIZE_REBUILDS)", Span(last.line or 1, 1),
                   hint=f"declare the size where the axis is declared: axis {last.axis} = {sz.to_text(last.size)}")


def _with_inferences(exc: NcdError, late: list[Inference]) -> NcdError:
    """Say which late inference made the op at fault impossible."""
    if not late:
        return exc
    notes = "; ".join(f"{i.axis} = {sz.to_text(i.size)} from line {i.line if i.line else '?'} ({i.what})"
                      for i in late[:3])
    exc.message = f"{exc.message} [sizes inferred later in the spec: {notes}]"
    exc.args = (exc.message,)
    return exc


def build_spec(source: str, name: str = "<spec>", bindings: dict[str, int] | None = None,
               entry: str | None = None) -> SpecIR:
    try:
        return build_sized(source, name, bindings or {}, entry)
    except NcdError as exc:
        raise exc.located(source, name) from None
    except RecursionError:
        raise NcdError("the spec nests too deeply", Span(1, 1),
                       hint="name the inner parts of deeply nested expressions: a = ...; b = f(a)").located(source, name) from None
    except Exception as exc:  # noqa: BLE001 - the API boundary's safety net, not error handling
        # Every mistake in a spec is reported where it is detected, with its place; reaching this
        # line is a bug in ncd. Users still get an NcdError, the original stays its __cause__, and the
        # fuzz tests (tests/test_fuzz.py) fail on any "internal error".
        raise NcdError(f"internal error: {type(exc).__name__}: {exc}",
                       hint="this is a bug in ncd, not in the spec: please report it with the spec"
                       ).located(source, name) from exc


def _note_binding(exc: NcdError, key: str, subst: dict[str, str], where: Tree | Token | None) -> None:
    """An error inside a block specialised with axis arguments that names one of them: the
    block's text shows the parameter (``[I, D]``), the error its binding (``[D, D]``), so the
    hint says which use bound it, where the fix may be (``use l = RNN[D]`` at line 11)."""
    named = [k for k, v in subst.items() if re.search(rf"(?<![\w']){re.escape(v)}(?![\w'])", exc.message)]
    if not named or "specialised here as" in (exc.hint or ""):
        return
    line = getattr(where, "line", None) or getattr(getattr(where, "meta", None), "line", None)
    binding = ", ".join(f"{k} := {subst[k]}" for k in named)
    exc.hint = (f"{exc.hint}; " if exc.hint else "") + (
        f"the block is specialised here as {key} ({binding}, by the use at line {line})" if line
        else f"the block is specialised here as {key} ({binding})")


def _stamp_file(block: BlockIR, file: str) -> None:
    """An imported block's places name its own file, so what the IR locates later (a scan in
    --explain, a backend refused at load, a run-time shape error) quotes that file, not the importer."""
    def stamped(loc: Loc | None) -> Loc | None:
        return loc.model_copy(update={"file": file}) if loc is not None else None

    block.loc = stamped(block.loc)
    for node in walk(block.nodes):
        node.loc = stamped(node.loc)
    for item in (*block.params, *block.instances, *block.inputs):
        if hasattr(item, "loc"):
            item.loc = stamped(item.loc)
