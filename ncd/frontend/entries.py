"""`entry A, B`: several entry blocks of one spec that load one state_dict.

A Pointer network trains with a teacher-forced decoder and runs greedily; both are entry blocks of
one spec over the same weights. The builder builds every declared entry and checks here that their
weights agree (the same state_dict names, kinds and axes), so a state_dict saved from one loads
into any other, and ``module.entry("B")`` can share the very same tensors.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from lark import Token

from ncd.frontend.common import _did_you_mean, err
from ncd.ir import CONST, BlockIR

if TYPE_CHECKING:
    from ncd.frontend.builder import SpecBuilder


def weights(blocks: dict[str, BlockIR], key: str, prefix: str = "") -> dict[str, tuple[str, tuple[str, ...]]]:
    """Every parameter and buffer a block's module holds, by state_dict name: (kind, axes)."""
    block = blocks[key]
    out = {prefix + p.name: (p.kind, p.type.axes) for p in block.params if p.kind != CONST}
    for inst in block.instances:
        if inst.block not in blocks:
            continue
        if inst.repeat:
            for i in range(inst.repeat):
                out.update(weights(blocks, inst.block, f"{prefix}{inst.name}.{i}."))
        else:
            out.update(weights(blocks, inst.block, f"{prefix}{inst.name}."))
    return out


def entry_set(builder: "SpecBuilder", declared: list[Token]) -> list[str]:
    """Build each declared entry block; their keys, in declaration order ([] without a declaration)."""
    keys: list[str] = []
    first: tuple[str, dict[str, tuple[str, tuple[str, ...]]]] | None = None
    for tok in declared:
        name = str(tok)
        if name not in builder.block_trees:
            raise err(f"entry {name} is not a block of this spec", tok,
                      hint=_did_you_mean(name, builder.block_trees) or "define it: block " + name + "(...) -> ...")
        if name in [builder.blocks[k].name for k in keys]:
            raise err(f"entry {name} is listed twice", tok, hint="list each entry block once")
        block = builder.specialise(name, [], tok, None)
        keys.append(block.key)
        held = weights(builder.blocks, block.key)
        if first is None:
            first = (name, held)
            continue
        base, expected = first
        for path in sorted(set(expected) | set(held)):
            if expected.get(path) == held.get(path):
                continue
            if path not in held:
                what = f"{base} has {_describe(path, expected[path])} and {name} has not"
            elif path not in expected:
                what = f"{name} has {_describe(path, held[path])} and {base} has not"
            else:
                what = f"{base} has {_describe(path, expected[path])}, {name} {_describe(path, held[path])}"
            raise err(f"entry blocks {base} and {name} must hold the same weights to share them: {what}", tok,
                      hint="give every entry block the same `use` instances and params (same names, same axes), "
                           "even where one entry leaves some unused")
    return keys


def _describe(path: str, weight: tuple[str, tuple[str, ...]]) -> str:
    kind, axes = weight
    return f"{kind} {path} [{', '.join(axes)}]"
