"""The repeat cap composed across blocks: the times a loop body runs in all, per call of the entry.

Within one block the builder multiplies nested ``repeat`` and ``halting`` counts (docs/limits.md);
a block that loops, called inside another block's loop (or chained ``× N``), multiplies the same
way, so ``repeat 1000 { x = b(x) }`` around a block that repeats 1000 times is refused at the call
that makes the product pass ``MAX_REPEAT``, not run a million times.
"""
from __future__ import annotations

from ncd.errors import NcdError
from ncd.ir import CALL, HALTING, REPEAT, BlockIR, Node, SpecIR
from ncd.limits import MAX_REPEAT


def check_unrolled(ir: SpecIR) -> None:
    """Raise a located NcdError where loops nested through block calls run more than MAX_REPEAT
    times in all."""
    memo: dict[str, int] = {}

    def work(key: str) -> int:
        """The largest product of loop counts on any path through block ``key`` (1: no loop)."""
        if key not in memo:
            memo[key] = 1  # a cycle cannot occur (the builder refuses recursion); this guards it
            memo[key] = scope(ir.blocks[key], ir.blocks[key].nodes, 1)
        return memo[key]

    def scope(block: BlockIR, nodes: list[Node], outer: int) -> int:
        most = outer
        for node in nodes:
            count = _loop_count(node)
            if node.op == CALL and node.attrs.get("block") in ir.blocks:
                inner = work(node.attrs["block"])
                copies = int(node.attrs.get("repeat") or 1)
                total = outer * copies * inner
                if total > MAX_REPEAT and inner > 1:
                    around = f"loops that run {outer} times around " if outer > 1 else ""
                    chained = f"{copies} chained copies of " if copies > 1 else ""
                    raise NcdError(f"a loop body would run {total} times in all: {around}{chained}block "
                                   f"{node.attrs['block']}, whose own loops run {inner} times; the limit is "
                                   f"{MAX_REPEAT}", node.loc.span if node.loc else None,
                                   hint="the same cap as `use l = B × N` and `repeat N` (docs/limits.md)")
                most = max(most, total)
            if outer * count > MAX_REPEAT:  # within one block (the builder refuses it as it goes; an IR JSON may not)
                raise NcdError(f"a loop body would run {outer * count} times in all: a loop of {count} inside loops "
                               f"that run {outer} times; the limit is {MAX_REPEAT}",
                               node.loc.span if node.loc else None,
                               hint="the same cap as `use l = B × N` and `repeat N` (docs/limits.md)")
            for region in node.regions:
                most = max(most, scope(block, region.nodes, outer * count))
        return most

    work(ir.entry)
    for key in ir.blocks:
        work(key)


def _loop_count(node: Node) -> int:
    if node.op == REPEAT:
        return int(node.attrs.get("count") or 1)
    if node.op == HALTING:
        return int(node.attrs.get("max") or 1)
    return 1
