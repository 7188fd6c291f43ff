"""Packed variable-length batches at the module level: ``module(x, cu_seqlens=offsets, ...)``.

fla's convention (docs/kernels.md, "Packed variable-length batches"): N sequences laid end to end
along the scanned axis of inputs with a lead batch of 1 (or none), ``cu_seqlens`` their offsets
``[N + 1]``. Every state then has a leading N (one per sequence): ``initial_state`` entries are
``[N, ...]``, and so are the final states. This module runs the whole compiled module once per
sequence, from that sequence's initial states (the state interface of ncd/state.py), and joins
the results: outputs over the scanned axis are concatenated along it, outputs without it get a
leading N, final states are stacked. Segmenting the whole module is what makes every op correct
at the boundaries (a causal conv or an attention over T must not see the previous sequence), not
only the scans; the Triton kernels' native packed path is for direct calls of gla / delta_rule /
diag_scan.
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import Tensor

from ncd.backends.triton.packed import check_cu_seqlens, lengths
from ncd.errors import NcdError
from ncd.ir import Node, SpecIR

HINT = ("cu_seqlens = torch.tensor([0, T_1, T_1 + T_2, ..., total]) (int64), the inputs packed along the scanned "
        "axis with a batch of 1 (fla's convention)")


def scanned_axes(spec: SpecIR) -> set[str]:
    """The axis names any scan of the spec walks (in any block, nested regions included)."""
    found: set[str] = set()

    def walk(nodes: list[Node]) -> Iterator[Node]:
        for node in nodes:
            yield node
            for region in node.regions:
                yield from walk(region.nodes)

    for block in spec.blocks.values():
        for node in walk(block.nodes):
            if node.op == "scan" and node.attrs.get("axis"):
                found.add(str(node.attrs["axis"]))
    return found


def packed_axis(module: Any) -> str:
    """The axis the inputs are packed along: the one scanned axis that the module's inputs carry."""
    program = module._ncd_program
    scanned = scanned_axes(module._ncd_spec)
    carried = [a for a in dict.fromkeys(a for _, _, axes, _ in program.inputs for a in axes) if a in scanned]
    if len(carried) == 1:
        return carried[0]
    if not carried:
        raise NcdError(f"cu_seqlens packs sequences along a scanned axis, but no input of block {program.key} has one "
                       f"(scanned axes: {', '.join(sorted(scanned)) or 'none: the spec has no scan'})",
                       module._ncd_block_span, hint="call the module without cu_seqlens")
    raise NcdError(f"cu_seqlens is ambiguous: the inputs of block {program.key} carry several scanned axes "
                   f"({', '.join(carried)})", module._ncd_block_span,
                   hint="pack one axis: call the module once per sequence without cu_seqlens")


def _positions(module: Any, inputs: tuple[Any, ...], axis: str) -> tuple[list[int | None], bool, int]:
    """Where `axis` sits in each input (None: the input does not have it), whether the inputs have
    a lead batch, and the packed length."""
    where: list[int | None] = []
    batched: set[bool] = set()
    total: set[int] = set()
    for x, (_, port, axes, _) in zip(inputs, module._ncd_program.inputs):
        if axis not in axes or not isinstance(x, Tensor):
            where.append(None)
            continue
        lead = x.dim() - len(axes)
        if lead < 0 or lead > 1 or (lead == 1 and x.shape[0] != 1):
            raise NcdError(f"with cu_seqlens, input {port} must be packed into a batch of 1 or none: shape "
                           f"[1, {', '.join(axes)}] or [{', '.join(axes)}], got {tuple(x.shape)}",
                           module._ncd_port_spans.get(port), hint=HINT)
        batched.add(lead == 1)
        where.append(lead + axes.index(axis))
        total.add(int(x.shape[lead + axes.index(axis)]))
    if len(batched) > 1:
        raise NcdError("with cu_seqlens, the packed inputs must all have a batch of 1 or all none",
                       module._ncd_block_span, hint=HINT)
    if len(total) > 1:
        raise NcdError(f"the packed inputs disagree on the length of axis {axis}: {sorted(total)}",
                       module._ncd_block_span, hint=HINT)
    return where, batched == {True}, total.pop()


def _one(t: Tensor, i: int, batched: bool) -> Tensor:
    """Sequence i's slice of a [N, ...] tensor, shaped as one call with (or without) a batch of 1."""
    return t[i:i + 1] if batched else t[i]


def _join(parts: list[Tensor], batched: bool) -> Tensor:
    return torch.cat(parts, 0) if batched else torch.stack(parts, 0)


def run_packed(module: Any, inputs: tuple[Any, ...], cu_seqlens: Any,
               initial_state: Mapping[str, Tensor] | None, return_state: bool) -> Any:
    """The module on packed inputs: each sequence alone, results joined (see the module docstring)."""
    axis = packed_axis(module)
    where, batched, total = _positions(module, inputs, axis)
    like = next(x for x, w in zip(inputs, where) if w is not None)
    try:
        offsets = check_cu_seqlens(cu_seqlens, total, like.device)
    except ValueError as exc:
        raise NcdError(f"{exc} (axis {axis})", module._ncd_block_span, hint=HINT) from None
    sizes = lengths(offsets)
    n = len(sizes)
    states = dict(initial_state or {})
    for name, value in states.items():
        if isinstance(value, Tensor) and (value.dim() == 0 or value.shape[0] != n):
            spec = module.state_spec().get(name)
            per = "" if spec is None else ", " + ", ".join("?" if s is None else str(s) for s in spec.shape)
            raise NcdError(f"with cu_seqlens of {n} sequences, initial state {name} needs one state per sequence: "
                           f"shape ({n}{per}), got {tuple(value.shape)}", module._ncd_block_span,
                           hint="stack one initial state per sequence along a new first dim, or leave it out")
    split = [torch.split(x, sizes, dim=w) if w is not None else None for x, w in zip(inputs, where)]
    outs: list[Any] = []
    finals: list[dict[str, Tensor]] = []
    for i in range(n):
        seq_inputs = tuple(x if s is None else s[i] for x, s in zip(inputs, split))
        seq_state = {k: _one(v, i, batched) if isinstance(v, Tensor) else v for k, v in states.items()}
        out, final = module(*seq_inputs, initial_state=seq_state or None, return_state=True)
        outs.append(out)
        finals.append(final)
    joined = _join_outputs(module, outs, axis, batched)
    if not return_state:
        return joined
    return joined, {name: _join([f[name] for f in finals], batched) for name in finals[0]}


def _join_outputs(module: Any, outs: list[Any], axis: str, batched: bool) -> Any:
    """Concatenate each output over the packed axis where it has it; stack the others (one per sequence)."""
    types = module._ncd_spec.blocks[module._ncd_block].outputs
    single = not isinstance(outs[0], tuple)
    columns = [[o] for o in outs] if single else [list(o) for o in outs]
    joined = []
    for j, wire in enumerate(types):
        parts = [c[j] for c in columns]
        if axis in wire.axes:
            dim = parts[0].dim() - len(wire.axes) + wire.axes.index(axis)
            joined.append(torch.cat(parts, dim))
            continue
        if len({tuple(p.shape) for p in parts}) > 1:
            raise NcdError(f"output {j} has no axis {axis} but its shape differs between the packed sequences "
                           f"({sorted({tuple(p.shape) for p in parts})}), so it cannot be stacked",
                           module._ncd_block_span, hint="call the module once per sequence without cu_seqlens")
        joined.append(_join(parts, batched))
    return joined[0] if single else tuple(joined)
