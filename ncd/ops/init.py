"""The initialiser table: ``param W: [D, F] init normal(0, 0.02)`` — one row per initialiser.

Each row holds its argument names, the checks its arguments must pass (run by the builder on
exact numbers where the spec fixes them, and again by the lowering once every size is bound)
and its torch lowering, an ``Expr`` like an op's: the interpreter and the emitted Python draw
from torch's default generator in the same order, so a seed reproduces the same weights.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from ncd.ops.base import BinOp, Expr, call, lit

FLOAT32_MAX = 3.4028234663852886e38  # parameters start in the default dtype, float32

# (message, hint, index of the argument at fault) or None
Problem = tuple[str, str, int] | None
CheckFn = Callable[[Sequence[Any]], Problem]
LowerFn = Callable[[tuple[float, ...], tuple[int, ...]], Expr]


@dataclass(frozen=True)
class InitDef:
    """One initialiser: ``args`` names its positional numbers, ``check`` refuses impossible ones
    (given exact sympy numbers at check time or floats at load time; a symbolic argument is
    skipped until its sizes are bound), ``lower`` builds the torch call for a shape."""

    name: str
    args: tuple[str, ...]
    lower: LowerFn
    check: CheckFn | None = None
    doc: str = ""


def _known(*values: Any) -> bool:
    return all(not hasattr(v, "is_number") or v.is_number for v in values)


def _std(name: str, positive: bool = False) -> CheckFn:
    """``positive``: a zero std is refused too (trunc_normal_ divides by it)."""
    def check(args: Sequence[Any]) -> Problem:
        std = args[1]
        if _known(std) and std < 0:
            return (f"the standard deviation of {name} is negative: {std}", f"{name}(mean, std) with std >= 0", 1)
        if positive and _known(std) and std == 0:
            return (f"the standard deviation of {name} is 0", f"{name}(mean, std) with std > 0, e.g. {name}(0, 0.02)", 1)
        return None

    return check


def _uniform_check(args: Sequence[Any]) -> Problem:
    low, high = args
    width = high - low  # a number even where both bounds are the same size expression
    if _known(width) and width < 0:
        return (f"uniform({low}, {high}): the lower bound is above the upper", "uniform(low, high) with low <= high", 0)
    if _known(width) and width > FLOAT32_MAX:
        return (f"uniform({low}, {high}): the range is wider than float32's largest number",
                "uniform(low, high) with high - low below 3.4e38", 0)
    return None


def _empty(shape: tuple[int, ...]) -> Expr:
    return call("torch.empty", lit(shape))


def _trunc_normal(args: tuple[float, ...], shape: tuple[int, ...]) -> Expr:
    mean, std = args
    return call("torch.nn.init.trunc_normal_", _empty(shape), lit(mean), lit(std),
                BinOp("-", lit(mean), lit(2 * std)), BinOp("+", lit(mean), lit(2 * std)))


ROWS: tuple[InitDef, ...] = (
    InitDef("normal", ("mean", "std"), lambda a, s: call("torch.nn.init.normal_", _empty(s), lit(a[0]), lit(a[1])),
            _std("normal"), "Gaussian N(mean, std²)"),
    InitDef("trunc_normal", ("mean", "std"), _trunc_normal, _std("trunc_normal", positive=True),
            "Gaussian N(mean, std²) redrawn outside mean ± 2·std (torch.nn.init.trunc_normal_)"),
    InitDef("uniform", ("low", "high"), lambda a, s: call("torch.nn.init.uniform_", _empty(s), lit(a[0]), lit(a[1])),
            _uniform_check, "uniform on [low, high)"),
    InitDef("zeros", (), lambda a, s: call("torch.zeros", lit(s)), doc="all 0 (also `init zeros`)"),
    InitDef("ones", (), lambda a, s: call("torch.ones", lit(s)), doc="all 1 (also `init ones`)"),
    InitDef("const", ("value",), lambda a, s: call("torch.full", lit(s), lit(a[0])), doc="every entry the value"),
)

INITIALISERS = MappingProxyType({row.name: row for row in ROWS})
