"""How many bytes loading a spec allocates, compared with the memory limit before anything is.

The lowering knows every parameter's, buffer's and constant's exact shape and every instance's
repeat count, so the total is exact arithmetic on Python ints: a `D = 10^15` weight or
`use l = L × 4096` of 2048² weights is an NcdError naming the biggest tensors, not an allocator
traceback or a machine out of memory.
"""
from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ncd.errors import NcdError, Span
from ncd.ir import BUFFER, CONST, PARAM, SpecIR, walk
from ncd.limits import MAX_SIZE_VALUE, format_bytes


@dataclass(frozen=True)
class Tensor:
    """One tensor a load allocates: where it is declared, its shape, how many copies."""

    what: str  # "parameter W of block F"
    shape: tuple[int, ...]
    copies: int
    itemsize: int
    span: Span | None

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.numel * self.itemsize * self.copies


def load_tensors(spec: SpecIR, programs: dict, key: str, copies: int = 1) -> list[Tensor]:
    """Every tensor that building block ``key`` (and its instances) allocates."""
    program = programs[key]
    block = spec.blocks[key]
    spans = {p.name: p.loc.span for p in block.params if p.loc}
    spans.update({i.name: i.loc.span for i in block.instances if i.loc})
    width = torch.get_default_dtype().itemsize
    out = []
    for init in program.inits:
        # a constant keeps a float64 master beside its default-dtype copy
        itemsize = width + 8 if init.kind == CONST else width
        kind = {PARAM: "parameter", BUFFER: "buffer", CONST: "constant"}.get(init.kind, init.kind)
        out.append(Tensor(f"{kind} {init.name} of block {block.name}", tuple(init.shape), copies, itemsize,
                          spans.get(init.name, block.loc.span if block.loc else None)))
    for name, block_key, repeat in program.instances:
        out.extend(load_tensors(spec, programs, block_key, copies * (repeat or 1)))
    return out


def check_shape(shape: tuple[int, ...], what: str, span: Span | None = None) -> None:
    """Each dimension and the element count within int64 (torch's shapes)."""
    numel = math.prod(shape)
    if any(d > MAX_SIZE_VALUE for d in shape) or numel > MAX_SIZE_VALUE:
        raise NcdError(f"{what} has shape {list(shape)}: {numel:.3g} elements, more than torch's limit of "
                       f"2^63 - 1", span, hint="bind smaller sizes")


def check_budget(tensors: list[Tensor], limit: int, doing: str) -> None:
    """Refuse when the tensors' bytes exceed ``limit``, naming the largest."""
    for t in tensors:
        check_shape(t.shape, t.what, t.span)
    total = sum(t.nbytes for t in tensors)
    if total <= limit:
        return
    biggest = max(tensors, key=lambda t: t.nbytes)
    times = f" × {biggest.copies} copies" if biggest.copies > 1 else ""
    raise NcdError(f"{doing} would allocate {format_bytes(total)}, more than the memory limit of "
                   f"{format_bytes(limit)}; the largest is {biggest.what}, shape {list(biggest.shape)}{times} "
                   f"({format_bytes(biggest.nbytes)})", biggest.span,
                   hint="bind smaller sizes, or raise the limit: ncd.load(..., memory_limit=...) or "
                        "ncd run --memory-limit SIZE (or NCD_MEMORY_LIMIT)")


def wire_tensors(spec: SpecIR, bound: Callable[[str], int | None]) -> list[Tensor]:
    """The value each node computes, per example (lifted axes excluded), where all its axes are bound.

    Not a budget of the forward pass (values are freed as it goes), but one value larger than the
    whole limit cannot be computed: a padding of 10^12 is refused here, at the op that pads.
    """
    width = torch.get_default_dtype().itemsize
    bound = functools.lru_cache(maxsize=None)(bound)
    out = []
    for block in spec.blocks.values():
        for node in walk(block.nodes):
            for wire in node.types:
                sizes = [bound(a) for a in wire.axes]
                if wire.axes and all(s is not None for s in sizes):
                    out.append(Tensor(f"the value computed here ({node.op} in block {block.name})",
                                      tuple(sizes), 1, width, node.loc.span if node.loc else None))
    return out


def check_values(tensors: list[Tensor], limit: int) -> None:
    """Refuse the first value whose bytes alone exceed ``limit``."""
    for t in tensors:
        check_shape(t.shape, t.what, t.span)
        if t.nbytes > limit:
            raise NcdError(f"{t.what} has shape {list(t.shape)}, {format_bytes(t.nbytes)} per example, more than "
                           f"the memory limit of {format_bytes(limit)}", t.span,
                           hint="bind smaller sizes, or raise the limit: ncd.load(..., memory_limit=...) or "
                                "ncd run --memory-limit SIZE (or NCD_MEMORY_LIMIT)")
