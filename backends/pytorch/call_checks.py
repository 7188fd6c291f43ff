"""What a call of a loaded module is checked against before any op runs.

A free axis is sized by the caller's input, so some of the spec's size constraints can only be
checked at call time: a derived axis must divide (``S = T / P``), a window must fit (a conv's or
pool's inferred output ``T2 = (T - K) / 2 + 1`` must be at least 1), an axis carried by two inputs
must have one size, and no value the forward computes may exceed the memory limit. Checked here,
at the module's entry, each is an ``NcdError`` naming the axis, its constraint and the spec line
(a torch reshape or conv would stop with a raw ``RuntimeError`` instead). The sympy work runs once
per distinct set of input sizes.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import sympy
import torch

from ncd import sizes as sz
from ncd.errors import NcdError, Span
from ncd.ir import INPUT, SpecIR, walk
from ncd.limits import MAX_SIZE_VALUE, format_bytes

_CACHE_ENTRIES = 256  # distinct input-size tuples remembered per module
MEMORY_HINT = ("bind smaller sizes or pass a smaller input, or raise the limit: ncd.load(..., memory_limit=...) "
               "or ncd run --memory-limit SIZE (or NCD_MEMORY_LIMIT)")


@dataclass(frozen=True)
class SizeRule:
    """An axis whose size is a formula in free axes: it must come out a whole number ≥ 1."""

    axis: str
    size: sympy.Expr  # in the free axes, the user's bindings substituted
    declared: str  # the formula as declared (``T/P``), for the message
    where: str  # "axis S" or "the output of maxpool"
    span: Span | None
    window: int | None = None  # the kernel or pool size of the op that produces the axis
    order: int = -1  # the producing op's place in program order (an axis fed by another first)


@dataclass(frozen=True)
class Value:
    """A value the forward computes: its per-example element count in the free axes."""

    what: str
    numel: sympy.Expr
    span: Span | None


class CallContract:
    """The entry block's size constraints and value sizes, checked against each call's inputs."""

    def __init__(self, spec: SpecIR, key: str, limit: int | None) -> None:
        self.axes = sz.AxisSizes.of(spec)
        block = spec.blocks[key]
        self.ports = [(p.name, p.type.axes, n.loc.span if n.loc else None)
                      for p, n in zip(block.inputs, [n for n in block.nodes if n.op == INPUT])]
        self.free = {sz.base_axis(a) for _, axes, _ in self.ports for a in axes if self.axes.bound(a) is None}
        self.rules = self._rules(spec) if self.free else []
        self.limit = limit
        self.values = self._values(spec) if limit is not None else []
        self._seen: dict[tuple, None] = {}

    # ------------------------------------------------------------------ built once, at load
    def _rules(self, spec: SpecIR) -> list[SizeRule]:
        producers: dict[str, tuple[str, Span | None, int | None, int]] = {}
        used: set[str] = set()
        order = 0
        for block in spec.blocks.values():
            for node in walk(block.nodes):
                order += 1
                for t in node.types:
                    used.update(sz.base_axis(a) for a in t.axes)
                over = node.attrs.get("over")
                if isinstance(over, dict):
                    kernel = node.attrs.get("kernel")
                    for i, axis in enumerate(over.get("dst") or []):
                        window = node.attrs.get("size")
                        if isinstance(kernel, list) and i < len(kernel):
                            window = self.axes.bound(str(kernel[i]))
                        window = int(window) if isinstance(window, (int, float)) and window == int(window) else None
                        producers.setdefault(sz.base_axis(axis), (node.op, node.loc.span if node.loc else None,
                                                                  window, order))
        rules = []
        for name, axis in spec.axes.items():
            if axis.prime_of or name in self.free or name not in used or axis.size is None:
                continue
            value = self.axes.expr(name)
            names = {s.name for s in value.free_symbols}
            if not names or not names <= self.free:
                continue
            op, span, window, place = producers.get(name, (None, None, None, -1))
            where = f"axis {name} (the output of {op})" if op else f"axis {name}"
            rules.append(SizeRule(name, value, axis.size, where, span or (axis.loc.span if axis.loc else None),
                                  window, place))
        return sorted(rules, key=lambda r: r.order)

    def _values(self, spec: SpecIR) -> list[Value]:
        out = []
        for block in spec.blocks.values():
            for node in walk(block.nodes):
                for wire in node.types:
                    if not wire.axes:
                        continue
                    numel = sympy.Integer(1)
                    for a in wire.axes:
                        numel = numel * self.axes.expr(a)
                    if numel.free_symbols and not {s.name for s in numel.free_symbols} <= self.free:
                        continue
                    out.append(Value(f"the value computed here ({node.op} in block {block.name})", numel,
                                     node.loc.span if node.loc else None))
        return out

    # ------------------------------------------------------------------ checked per call
    def check(self, inputs: Sequence[torch.Tensor]) -> None:
        """Raise an NcdError (unlocated: the module adds the source) if this call cannot run."""
        shapes = tuple(tuple(x.shape) for x in inputs)
        if shapes in self._seen or not all(type(d) is int for shape in shapes for d in shape):
            return  # checked already, or traced with symbolic sizes (torch.export, fx)
        if shapes in self._seen:
            return
        free = self._free_sizes(inputs)
        self._check_tied(free)
        self._check_rules(free)
        self._check_values(free, inputs)
        if len(self._seen) >= _CACHE_ENTRIES:
            self._seen.clear()
        self._seen[shapes] = None

    def _free_sizes(self, inputs: Sequence[torch.Tensor]) -> dict[str, tuple[int, str, Span | None]]:
        found: dict[str, tuple[int, str, Span | None]] = {}
        for (port, axes, span), x in zip(self.ports, inputs):
            for axis, size in zip(axes, x.shape[x.dim() - len(axes):]):
                base = sz.base_axis(axis)
                if base not in self.free:
                    continue
                seen = found.get(base)
                if seen is not None and seen[0] != size:
                    raise NcdError(f"axis {base} has size {seen[0]} in input {seen[1]} but {size} in input {port}: "
                                   f"one axis has one size", span,
                                   hint=f"pass inputs whose {base} dims agree")
                found.setdefault(base, (int(size), port, span))
        return found

    def _check_tied(self, free: dict[str, tuple[int, str, Span | None]]) -> None:
        """An input axis the checker sized from another (``x[A as C]`` makes ``C = A``) must have
        the size the other's input gives it: one axis, one size."""
        for axis, (size, port, span) in free.items():
            value = self.axes.expr(axis)
            names = sorted(s.name for s in value.free_symbols)
            if value == sz.symbol(axis) or any(n not in free or n == axis for n in names):
                continue
            want = value.subs({sz.symbol(n): free[n][0] for n in names})
            if want == size:
                continue
            given = ", ".join(f"{n} = {free[n][0]} (input {free[n][1]})" for n in names)
            raise NcdError(f"axis {axis} has size {size} in input {port}, but the spec ties it to "
                           f"{sz.to_text(value)}, which is {sz.to_text(want)} with {given}", span,
                           hint=f"pass inputs whose sizes agree: {axis} = {sz.to_text(value)}")

    def _check_rules(self, free: dict[str, tuple[int, str, Span | None]]) -> None:
        for rule in self.rules:
            names = sorted(s.name for s in rule.size.free_symbols)
            if any(n not in free for n in names):
                continue
            value = rule.size.subs({sz.symbol(n): free[n][0] for n in names})
            if value.is_integer and 1 <= value <= MAX_SIZE_VALUE:
                continue
            given = ", ".join(f"{n} = {free[n][0]} (input {free[n][1]})" for n in names)
            shown = sz.to_text(value) if value.is_Rational else str(value)
            raise NcdError(f"{rule.where} = {rule.declared} is {shown} with {given}: {self._constraint(rule, names)}",
                           rule.span, hint="pass an input whose size meets the constraint, or bind the axis "
                                           f"when loading (ncd.load(..., {names[0]}=...))")

    def _constraint(self, rule: SizeRule, names: list[str]) -> str:
        """The constraint in words: the smallest size that gives an output, or divisibility."""
        value = sz.simplify(rule.size)
        if len(names) == 1 and (rule.order >= 0 or value.has(sympy.floor, sympy.ceiling)):
            n = sz.symbol(names[0])
            lo, hi = 1, 2 ** 62
            if value.subs(n, hi) >= 1:
                while lo < hi:
                    mid = (lo + hi) // 2
                    lo, hi = (lo, mid) if value.subs(n, mid) >= 1 else (mid + 1, hi)
                small = f"{names[0]} is too small for a window of {rule.window}" if rule.window else \
                    f"{names[0]} is too small"
                return f"{small}: it needs {names[0]} ≥ {lo}"
        num, den = sympy.fraction(sympy.together(value))
        if den != 1 and den.is_number:
            return f"it must be a whole number ≥ 1, so {sz.to_text(num)} must be a positive multiple of {den}"
        return "it must be a whole number ≥ 1"

    def _check_values(self, free: dict[str, tuple[int, str, Span | None]], inputs: Sequence[torch.Tensor]) -> None:
        if self.limit is None or not self.values:
            return
        lead = 1
        itemsize = max((x.element_size() for x in inputs if x.is_floating_point()),
                       default=torch.get_default_dtype().itemsize)
        for (_, axes, _), x in zip(self.ports, inputs):
            lead = max(lead, math.prod(x.shape[: x.dim() - len(axes)]))
        subs = {sz.symbol(n): v for n, (v, _, _) in free.items()}
        for value in self.values:
            numel = value.numel.subs(subs) if value.numel.free_symbols else value.numel
            if numel.free_symbols:
                continue
            nbytes = int(numel) * lead * itemsize
            if nbytes > self.limit:
                raise NcdError(f"{value.what} would take {format_bytes(nbytes)} at this call's sizes "
                               f"({int(numel)} elements per example × {lead} lifted), more than the memory limit "
                               f"of {format_bytes(self.limit)}", value.span, hint=MEMORY_HINT)
