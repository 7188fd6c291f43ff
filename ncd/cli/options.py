"""The options several commands share, parsed and range-checked once: `--set`, `--seed`,
`--scan-backend` and positive numbers.

A bad value is a command-line error (argparse, exit code 2) that names the option and the value,
so no command ever sees a size of 0, a seed torch refuses, or a NaN peak.
"""
from __future__ import annotations

import argparse
import math
import re
from collections.abc import Sequence
from typing import Any

MAX_SIZE = 2**63 - 1  # torch sizes are int64; the builder and the loader apply tighter, named limits
MAX_SEED = 2**64 - 1  # torch.manual_seed accepts [-2^63, 2^64)
_SIZE_ITEM = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_]*'*)\s*=\s*([0-9]+)\s*")


def size_item(text: str) -> tuple[str, int]:
    """argparse type for one `AX=N` of `--set`: a name and a positive int64."""
    match = _SIZE_ITEM.fullmatch(text)
    if not match:
        raise argparse.ArgumentTypeError(f"expected AXIS=SIZE (like D=64), got {text!r}")
    name, value = match.group(1), int(match.group(2))
    if value < 1:
        raise argparse.ArgumentTypeError(f"the size of {name} must be at least 1, got {value}")
    if value > MAX_SIZE:
        raise argparse.ArgumentTypeError(f"the size of {name} must be at most 2^63-1, got {match.group(2)}")
    return name, value


class SetSizes(argparse.Action):
    """`--set A=1 B=2 [--set C=3]`: one dict over every occurrence; an axis given twice is an error
    naming it (rather than the last value silently winning)."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: str | Sequence[Any] | None, option_string: str | None = None) -> None:
        sizes: dict[str, int] = dict(getattr(namespace, self.dest, None) or {})
        for name, value in values or []:
            if name in sizes:
                raise argparse.ArgumentError(self, f"axis {name} is set twice ({name}={sizes[name]} and "
                                                   f"{name}={value}); give each axis once")
            sizes[name] = value
        setattr(namespace, self.dest, sizes)


def add_sizes(p: argparse.ArgumentParser, what: str = "bind axis sizes") -> None:
    p.add_argument("--set", metavar="AX=N", nargs="+", action=SetSizes, type=size_item, default={},
                   help=f"{what}, e.g. --set D=64 H=4 (each axis once; put PATHs before --set)")


def bound_sizes(args: argparse.Namespace) -> dict[str, int]:
    """The `--set` sizes of a parsed command line (a fresh dict)."""
    return dict(getattr(args, "set", None) or {})


def seed_value(text: str) -> int:
    """argparse type for `--seed`: an integer torch.manual_seed accepts."""
    try:
        value = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer seed, got {text!r}") from None
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"the seed must be between 0 and 2^64-1, got {text}")
    return value


def positive_float(text: str) -> float:
    """argparse type for rates such as `--peak-tflops`: a finite number above 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"expected a finite number above 0, got {text}")
    return value


def add_scan_backend(p: argparse.ArgumentParser, what: str = "run every scan with this backend") -> None:
    """--scan-backend, its --help listing the scan-backend registry's names (ncd/scan_backends.py):
    the same list an unknown name's error hint gives."""
    from ncd import scan_backends

    p.add_argument("--scan-backend", default="auto", metavar="NAME",
                   help=f"{what} ({scan_backends.names_text()}; default auto: the recurrence pass decides)")
