"""Packed variable-length batches at the module level: ``module(x, cu_seqlens=offsets, ...)``.

fla's convention (docs/language.md, "Packed variable-length batches"): N sequences laid end to
end along the scanned axis of inputs with a lead batch of 1 (or none), ``cu_seqlens`` their
offsets ``[N + 1]`` (a repeated offset is an empty sequence). Every state then has a leading N
(one per sequence): ``initial_state`` entries are ``[N, ...]``, and so are the final states.

Two ways to run it, the result the same. Where only scans let a position see another
(backends/pytorch/packable.py reads that off the IR and the op table), the module runs ONCE on
the packed batch and every scan over the packed axis restarts at each offset from that
sequence's state (``segmented``: the scan's own runner per sequence, its step reading the
packed wires at their packed positions). Anything else (a causal conv, an attention or a
reduction over T) runs the whole module once per sequence and joins the results: outputs over
the packed axis concatenated along it, outputs without it stacked with a leading N, final
states stacked. ``module.packed_path`` says which ran, and why.
"""
from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import Tensor

from ncd.backends.pytorch import runtime
from ncd.errors import NcdError
from ncd.ir import SCAN, Node, SpecIR

HINT = runtime.packed_hint()


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
            if node.op == SCAN and node.attrs.get("axis"):
                found.add(str(node.attrs["axis"]))
    return found


def carried_scanned_axes(spec: SpecIR, program: Any) -> list[str]:
    """The scanned axes the block's inputs carry, in input order: one is the packed axis."""
    scanned = scanned_axes(spec)
    return [a for a in dict.fromkeys(a for _, _, axes, _ in program.inputs for a in axes) if a in scanned]


def no_packed_axis(spec: SpecIR, program: Any, carried: list[str]) -> str:
    """Why a block has no packed axis (its inputs carry no scanned axis, or several)."""
    if not carried:
        return (f"cu_seqlens packs sequences along a scanned axis, but no input of block {program.key} has one "
                f"(scanned axes: {', '.join(sorted(scanned_axes(spec))) or 'none: the spec has no scan'})")
    return f"cu_seqlens is ambiguous: the inputs of block {program.key} carry several scanned axes ({', '.join(carried)})"


def packed_axis(module: Any) -> str:
    """The axis the inputs are packed along: the one scanned axis that the module's inputs carry."""
    program, spec = module._ncd_program, module._ncd_spec
    carried = carried_scanned_axes(spec, program)
    if len(carried) == 1:
        return carried[0]
    hint = "call the module without cu_seqlens" if not carried else \
        "pack one axis: call the module once per sequence without cu_seqlens"
    raise NcdError(no_packed_axis(spec, program, carried), module._ncd_block_span, hint=hint)


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


PACKING = "_ncd_packing"  # a module's __dict__ entry while a packed call runs natively
ONE_CALL = "one call: every scan over {axis} restarts at the offsets"


class Packing:
    """A native packed call's layout: the packed axis, the host offsets, batch of 1 or none."""

    def __init__(self, axis: str, offsets: list[int], batched: bool) -> None:
        self.axis, self.offsets, self.batched = axis, offsets, batched
        self.segments = list(zip(offsets[:-1], offsets[1:]))


def segment_key(loop: Any) -> str:
    """Where a scan's runner finds the positions [start, stop) of the sequence it runs now."""
    return f"{loop.node_id}#segment"


def segment_of(env: Mapping[str, Any], loop: Any) -> tuple[int, int] | None:
    """The sequence this scan runs now (packed positions [start, stop)), or None: all of the axis."""
    return env.get(segment_key(loop))


def packed_key(loop: Any) -> str:
    """Where a scan whose kernel takes the offsets itself (gla, delta) finds the packing."""
    return f"{loop.node_id}#packed"


def packed_of(env: Mapping[str, Any], loop: Any) -> Packing | None:
    """The packing this scan runs natively now (its kernel takes the offsets), or None."""
    return env.get(packed_key(loop))


def packed_kernel(fn: Any, operands: list[Tensor], state0: Tensor, packing: Packing, reverse: bool,
                  **options: Any) -> tuple[Tensor, Tensor]:
    """One call of a chunked kernel (gla, delta_rule) on [rows, T, H, ...] operands packed along
    T, with ``state0`` a row of [rows·H, K, V] states per sequence: the rows join the heads of
    a batch of 1 and the kernel takes the offsets (``cu_seqlens``). Operands of a reverse scan
    arrive flipped along T, so its sequences arrive last first. An empty sequence is left out
    of the kernel's offsets (they must increase) and keeps its initial state.
    Returns (out [rows, T, H, V], final [N, rows·H, K, V])."""
    rows, T = operands[0].shape[:2]
    flat = [x.transpose(0, 1).reshape(1, T, rows * x.shape[2], *x.shape[3:]) for x in operands]
    order = list(range(len(packing.segments)))[::-1] if reverse else list(range(len(packing.segments)))
    keep = [i for i in order if packing.segments[i][1] > packing.segments[i][0]]
    cu = [0]
    for i in keep:
        cu.append(cu[-1] + packing.segments[i][1] - packing.segments[i][0])
    index = torch.tensor(keep, device=state0.device)
    out, final = fn(*flat, initial_state=state0.index_select(0, index).contiguous(),
                    cu_seqlens=torch.tensor(cu, device=state0.device), **options)
    out = out.reshape(T, rows, operands[0].shape[2], *out.shape[3:]).transpose(0, 1)
    return out, state0.index_copy(0, index, final.to(state0.dtype))


NATIVE_KERNELS = ("gla", "delta")  # scan backends whose kernel takes cu_seqlens from a packed call


def segmented(loop: Any, run: Any, inits: list[Any]) -> Any:
    """A scan statement that, in a native packed call (``PACKING`` set) and over the packed axis,
    runs its runner once per sequence: from that sequence's initial carries (``initial_state``
    rows, else the spec's value), its outputs concatenated along the axis, its final carries
    stacked (an empty sequence adds no output; its final state is its initial one)."""

    @functools.wraps(run)
    def run_scan(env: dict[str, Any], m: Any) -> None:
        packing = m.__dict__.get(PACKING)
        if packing is None or loop.kind != SCAN or loop.axis != packing.axis:
            return run(env, m)
        if loop.backend in NATIVE_KERNELS:
            env[packed_key(loop)] = packing
            try:
                return run(env, m)
            finally:
                env.pop(packed_key(loop), None)
        _run_segments(loop, run, inits, packing, env, m)

    return run_scan


def _run_segments(loop: Any, run: Any, inits: list[Any], packing: Packing, env: dict[str, Any], m: Any) -> None:
    from ncd.backends.pytorch.module import carry_inits

    io = m.__dict__.get("_ncd_state_io")
    session, prefix = io if io is not None else ({"initial": {}}, "")
    keys = [prefix + name for name in loop.state_names]
    given = {k: session["initial"][k] for k in keys if k in session["initial"]}
    outs: list[Any] = []
    finals: list[list[Any] | None] = []
    starts: list[list[Any]] = []
    key = segment_key(loop)
    try:
        for i, (start, stop) in enumerate(packing.segments):
            mine = {"initial": {k: runtime.packed_row(v, i, packing.batched) for k, v in given.items()}, "final": {}}
            m.__dict__["_ncd_state_io"] = (mine, prefix)
            if start == stop:
                starts.append(carry_inits(loop, inits, env, m))
                finals.append(None)
                continue
            env[key] = (start, stop)
            run(env, m)
            outs.append(env[loop.target])
            finals.append([mine["final"].get(k) for k in keys])
            starts.append([])
    finally:
        env.pop(key, None)
        if io is None:
            m.__dict__.pop("_ncd_state_io", None)
        else:
            m.__dict__["_ncd_state_io"] = io
    single = not isinstance(outs[0], tuple)
    columns = [[o] for o in outs] if single else [list(o) for o in outs]
    joined = [torch.cat([c[j] for c in columns], dim) for j, dim in enumerate(loop.emit_dims)]
    env[loop.target] = joined[0] if single else tuple(joined)
    if not keys:
        return
    like = next(f for f in finals if f is not None)
    for j, name in enumerate(loop.state_names):
        if like[j] is None:
            continue
        parts = [f[j] if f is not None else _as_final(s[j], like[j]) for f, s in zip(finals, starts)]
        runtime.state_out(m, name, runtime.packed_join(parts, packing.batched, len(loop.state_axes[j])))


def _as_final(initial: Any, like: Tensor) -> Tensor:
    """An empty sequence's final carry: its initial one, shaped as the other sequences' finals."""
    value = torch.as_tensor(initial, dtype=like.dtype, device=like.device)
    return torch.broadcast_to(value, like.shape)


def native_blocker(module: Any, axis: str) -> str | None:
    """Why this module packed along `axis` runs once per sequence (None: it runs as one call)."""
    cache = module.__dict__.setdefault("_ncd_packable", {})
    if axis not in cache:
        from ncd.backends.pytorch.packable import native_blocker as blocker

        cache[axis] = blocker(module._ncd_spec, module._ncd_block, axis)
    return cache[axis]


def run_packed(module: Any, inputs: tuple[Any, ...], cu_seqlens: Any,
               initial_state: Mapping[str, Tensor] | None, return_state: bool) -> Any:
    """The module on packed inputs: one call where only scans mix positions, else each sequence
    alone, results joined (see the module docstring)."""
    axis = packed_axis(module)
    _, batched, total = _positions(module, inputs, axis)
    try:
        sizes = runtime.packed_lengths(cu_seqlens, total)
    except runtime.InputError as exc:
        raise NcdError(f"{exc} (axis {axis})", module._ncd_block_span, hint=exc.hint) from None
    n = len(sizes)
    states = dict(initial_state or {})
    for name, value in states.items():
        if isinstance(value, Tensor) and (value.dim() == 0 or value.shape[0] != n):
            spec = module.state_spec().get(name)
            per = "" if spec is None else ", " + ", ".join("?" if s is None else str(s) for s in spec.shape)
            raise NcdError(f"with cu_seqlens of {n} sequences, initial state {name} needs one state per sequence: "
                           f"shape ({n}{per}), got {tuple(value.shape)}", module._ncd_block_span,
                           hint="stack one initial state per sequence along a new first dim, or leave it out")
    offsets = [0]
    for size in sizes:
        offsets.append(offsets[-1] + size)
    why = native_blocker(module, axis)
    if why is None:
        module.packed_path = ONE_CALL.format(axis=axis)
        return _run_native(module, inputs, Packing(axis, offsets, batched), states, return_state)
    module.packed_path = f"once per sequence: {why}"
    program = module._ncd_program
    outputs = [wire.axes for wire in module._ncd_spec.blocks[module._ncd_block].outputs]
    try:
        return runtime.run_packed_each(module, inputs, [axes for _, _, axes, _ in program.inputs], outputs, axis,
                                       cu_seqlens, states, return_state)
    except runtime.InputError as exc:
        raise NcdError(str(exc), module._ncd_block_span, hint=exc.hint) from None


def _run_native(module: Any, inputs: tuple[Any, ...], packing: Packing, states: dict[str, Tensor],
                return_state: bool) -> Any:
    """One call of the module with every scan over the packed axis segmented (``segmented``)."""
    inner = list(module.modules())
    for sub in inner:
        sub.__dict__[PACKING] = packing
    try:
        if states or return_state:
            return module._run_with_state(inputs, states or None, return_state)
        return module._run(inputs)
    finally:
        for sub in inner:
            sub.__dict__.pop(PACKING, None)
