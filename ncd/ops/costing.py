"""The small vocabulary op-table cost rules are written in (read by ncd.analysis.cost).

A cost rule is ``cost(node, in_types, size) -> dict``; ``size(axis)`` is the axis' size as a
sympy expression and ``size("...")`` the product of the lifted (broadcast) axes the node runs
over. It returns any of:

- ``flops``: forward FLOPs of elementwise/reduction work;
- ``matmul``: forward FLOPs of contractions (one multiply-add = 2 FLOPs);
- ``bwd`` / ``matmul_bwd``: one entry per input, the FLOPs computing that input's gradient
  (counted only where the input needs one);
- ``saves``: what autograd keeps for the backward pass, a list of ``Save``;
- ``layout``: the output's memory order — ``"natural"`` (a fresh contiguous tensor, the default),
  ``"follow"`` (as its first full-rank input: elementwise ops) or a tuple of axis names with
  ``"..."`` for the lifted dims (a contraction's output is a permuted view of its bmm result).

Conventions (documented in docs/cost.md): elementwise ops cost ``per`` FLOPs per output element
(1 for arithmetic, a few for transcendental functions); their gradients cost about as much
again per input. The numbers torch's FlopCounterMode checks are only the contractions.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Callable

import sympy

from ncd.ir import Node, WireType

Size = Callable[[str], Any]


@dataclass(frozen=True)
class Save:
    """One tensor autograd saves.

    ``what``: ``"in"`` (input ``index``), ``"out"`` (output ``index``) or ``"new"`` (a tensor
    the op makes, of ``numel`` elements, e.g. layer norm's mean and 1/σ); ``when``: ``"any"``
    (saved when any input needs a gradient), the input index whose gradient needs it, or
    ``("scalar", i)`` / ``("tensor", i)``: only when input i is / is not a Python number.
    ``groups``: for a saved input, how the op views it (a contraction reshapes its operand into
    these groups of axes, in this order); the analyzer decides whether that is a view of the
    input's storage or a copy from the input's memory order.
    """

    what: str
    index: int = 0
    when: Any = "any"
    numel: Any = None
    groups: tuple[tuple[str, ...], ...] | None = None
    dtype: str | None = None


def numel(t: WireType, size: Size) -> sympy.Expr:
    """Elements on a wire: its core axes times, when it is lifted, the lifted axes."""
    n = sympy.Mul(*[size(a) for a in t.axes]) if t.axes else sympy.Integer(1)
    return n * size("...") if t.lifted else n


def elementwise(per: int = 1, grad: int = 1, saves: Sequence[Save] = ()):
    """An op costing ``per`` FLOPs per output element; each input's gradient ``grad`` per element."""

    def cost(node: Node, ins: Sequence[WireType], size: Size) -> dict[str, Any]:
        n = numel(node.type, size)
        return {"flops": per * n, "bwd": tuple(grad * n for _ in ins), "saves": _sized(saves, n),
                "layout": "follow"}

    return cost


def free(node: Node, ins: Sequence[WireType], size: Size) -> dict[str, Any]:
    """No arithmetic: views, renames, selections."""
    return {"flops": 0, "bwd": tuple(0 for _ in ins), "layout": "view"}


def copy(node: Node, ins: Sequence[WireType], size: Size) -> dict[str, Any]:
    """Moves data (concat, stack): no FLOPs, a fresh tensor."""
    return {"flops": 0, "bwd": tuple(0 for _ in ins)}


def reduction(per: int = 1, grad: int = 1, saves: Sequence[Save] = ()):
    """Reads every input element ``per`` times (sum, max, ...); the gradient broadcasts back."""

    def cost(node: Node, ins: Sequence[WireType], size: Size) -> dict[str, Any]:
        n = numel(ins[0], size)
        return {"flops": per * n, "bwd": (grad * n,), "saves": list(saves)}

    return cost


def normalise(per: int, grad: int, saves: Sequence[Save] = (), stats: bool = False):
    """Softmax/norms: ``per`` FLOPs per element; ``stats``: also saves two statistics per row."""

    def cost(node: Node, ins: Sequence[WireType], size: Size) -> dict[str, Any]:
        n = numel(ins[0], size)
        over = node.attrs["over"]
        over = over if isinstance(over, (list, tuple)) else [over]
        rows = n / sympy.Mul(*[size(a) for a in over])
        extra = _sized(saves, rows)
        if stats:
            extra += [Save("new", numel=rows), Save("new", numel=rows)]
        return {"flops": per * n, "bwd": (grad * n,), "saves": extra}

    return cost


def _sized(saves: Sequence[Save], n: Any) -> list[Save]:
    """Fill in the size of ``Save("new")`` entries written without one (``numel="out"``/``"rows"``)."""
    return [Save(s.what, s.index, s.when, n, s.groups, s.dtype) if isinstance(s.numel, str) else s
            for s in saves]


FusedCost = Callable[[list[WireType], Size, list[str]], dict[str, Any]]


def fused_norm(flops: int, bwd: tuple[int, int, int], saves: Sequence[Save]) -> FusedCost:
    """The cost rule of a norm's fused-affine call (``Affine.cost``, the fusion pass's norm_affine),
    over the fused operands (x, γ, β) and the normalised axes: ``flops`` per element of x forward,
    ``bwd`` per element for each operand's gradient; a save's ``numel`` ``"rows"`` is one per
    normalised row, ``"all"`` one per element of x."""
    def rule(ins: list[WireType], size: Size, over: list[str]) -> dict[str, Any]:
        n = numel(ins[0], size)
        counts = {"rows": n / sympy.Mul(*[size(a) for a in over]), "all": n}
        made = [Save(s.what, s.index, s.when, counts.get(s.numel, s.numel) if isinstance(s.numel, str) else s.numel,
                     s.groups, s.dtype) for s in saves]
        return {"flops": flops * n, "bwd": tuple(k * n for k in bwd), "saves": made}
    return rule

