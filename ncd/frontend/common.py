"""What every part of the builder shares: locations, errors, checked numbers and scopes."""
from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass, field
from fractions import Fraction
from functools import lru_cache
from typing import Any

import sympy
from lark import Token, Tree

from ncd import sizes as sz
from ncd.errors import NcdError
from ncd.frontend.parser import span_of
from ncd.ir import Loc, Node, walk
from ncd.ops.base import FoldError
from ncd.ops.elementwise import MAX_BITS, fold_pow

from ncd.limits import MAX_REPEAT  # noqa: F401  (re-exported for the builder)
NAMED_CONSTANTS = {"pi": sympy.pi, "inf": sympy.oo}
RESERVED = {"forward", "training", "manual_seed", "taps", "state_dict", "parameters", "modules", "children", "to", "cuda",
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
# and the compiled module's own methods and attributes (backends/pytorch/module.py, compile_module)
RESERVED |= {"contiguous_parameters", "entry", "initial_state", "locate_errors", "parallel_scans", "scan_plans", "set_call_contract",
             "state_spec", "step_module"}


def check_attribute_name(name: str, where: Tree | Token | None) -> None:
    """Params, buffers, constants, instances and taps become attributes of a torch module."""
    if name in RESERVED:
        raise err(f"{name} is a reserved name", where, hint="pick another name")
    if name.startswith("_"):  # torch.nn.Module's internals (_parameters, _apply, ...) and ncd's (_ncd_*)
        stem = name.lstrip("_") or "w"
        raise err(f"{name}: names of params, buffers, constants, instances and taps cannot start with _", where,
                  hint=f"pick another name, e.g. {stem if stem not in RESERVED else stem + '1'}")


def loc_of(item: Tree | Token | None) -> Loc | None:
    span = span_of(item) if item is not None else None
    return Loc(line=span.line, col=span.col) if span else None


def err(message: str, item: Tree | Token | None, hint: str | None = None) -> NcdError:
    return NcdError(message, span_of(item) if item is not None else None, hint=hint)


# Numbers are exact (sympy rationals) while the spec is checked, and become float64 in the module:
# keep them within its range, so folding `D^-1e9` or printing `1e99999` cannot run for minutes.


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
    """a ** b in a size expression: the pow row's fold, located at ``where``."""
    try:
        return checked_number(fold_pow(a, b), where)
    except FoldError as exc:
        raise err(str(exc), where, hint=exc.hint) from None


def checked_number(value: sympy.Expr, where: Tree) -> sympy.Expr:
    """A folded number, refused where it is not a real number or not representable as a float64."""
    if not value.is_number:
        return value
    if value.has(sympy.zoo, sympy.nan) or value.is_extended_real is False:
        raise err(f"this evaluates to {value}, which is not a real number", where,
                  hint="change the numbers so the result is finite and real (no 0^-1, no sqrt of a negative)")
    if value.is_Rational and max(abs(value.p), value.q).bit_length() > MAX_BITS:
        raise err("this number is out of range of a float64", where,
                  hint="use numbers within float64's range (about 1e-308 to 1e308)")
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
    trips: int = 1  # how many times the body runs per call of the block (nested repeat counts multiply)
    # The frame's nodes are thrown away and only their values read (a listed constant's items): its
    # number nodes skip printing their value, which for 0.3 * sqrt(2) / D costs ~1 ms in sympy.
    scratch: bool = False


def assigned_names(stmts: list[Any]) -> list[str]:
    """Names the statements assign, those of nested `repeat` bodies included (a repeat reassigns
    the enclosing scope's names), in order of first assignment."""
    out: list[str] = []
    pending = list(reversed(stmts))
    while pending:
        stmt = pending.pop()
        if isinstance(stmt, Tree) and stmt.data == "assign":
            for target in stmt.children[:-1]:
                if str(target) not in out:
                    out.append(str(target))
        elif isinstance(stmt, Tree) and stmt.data == "repeat_stmt":
            pending.extend(reversed(stmt.children[1:]))
    return out


def _region_ids(nodes: list[Node]) -> set[str]:
    return {n.id for n in walk(nodes)}
