"""What the commands share beyond options: the batch axis, sizes of a checked spec, output helpers."""
from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ncd.errors import NcdError

BATCH_AXIS = "B"  # the library's batch axis: the leading, lifted dimension of `ncd run` inputs
DEFAULT_BATCH = 2


def add_block(p: Any) -> None:
    """`--block NAME`: the entry block to use instead of the spec's default (ncd.load(..., block=))."""
    p.add_argument("--block", metavar="NAME", default=None,
                   help="use this block as the entry (one of `entry A, B`, or any block); default: the first "
                        "declared entry, else the last block")


def declared_axes(path: str) -> set[str]:
    """Axis names a spec declares: a build with nothing bound (no passes: the command that asks
    runs the whole pipeline once, after), and build errors surface here, located."""
    from ncd import pipeline
    from ncd.api import read_spec

    source, name = read_spec(path)
    return set(pipeline.build(source, name).axes)


def spec_sizes(path: str, sizes: dict[str, int]) -> dict[str, int]:
    """The --set sizes to bind in the spec: the batch axis B is ours unless the spec declares it."""
    if BATCH_AXIS in sizes and BATCH_AXIS not in declared_axes(path):
        return {k: v for k, v in sizes.items() if k != BATCH_AXIS}
    return sizes


def axis_size(ir: Any, axis: str) -> int | None:
    """The bound size of an axis of a checked spec (primes share their axis' size), or None."""
    from ncd import sizes as sz

    return sz.AxisSizes.of(ir).bound(axis)


def known_sizes(ir: Any) -> dict[str, int]:
    """Every axis of a checked spec whose size is a number."""
    found = {name: axis_size(ir, name) for name in ir.axes}
    return {name: size for name, size in found.items() if size is not None}


def fmt_axes(axes: Sequence[str]) -> str:
    return "[" + ", ".join(axes) + "]"


def emit_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2))


def write_output(path: str, text: str) -> None:
    """Write a command's output file; a path that cannot be written is an NcdError naming it."""
    try:
        Path(path).write_text(text, encoding="utf-8")
    except OSError as exc:
        raise NcdError(f"cannot write {path}: {exc.strerror or exc}", hint="choose a writable output path") from None
