"""The recurrence pass: classify every scan by how its new state depends on the carried state,
match the chunked kernels' forms, and choose a backend.

Three steps, one module each: ``classify`` (an abstract interpretation of the step: degree in
the state, mixing axes, cross-carry dependence, time variation), ``match`` (the gla/delta
kernels' operand forms and layouts), ``choose`` (the backend, held to what the scan-backend
registry, ncd/scan_backends.py, admits). ``plan`` holds the result: one ScanPlan per scan.
"""
from __future__ import annotations

from ncd import scan_backends
from ncd.errors import NcdError
from ncd.ir import CALL, PURE_STRUCTURAL, SCAN, TAP, BlockIR, Node, SpecIR, walk
from ncd.ops import OPS, role
from ncd.ops.base import PICK
from ncd.ops.random import in_order
from ncd.passes.recurrence.cells import match_cell
from ncd.passes.recurrence.choose import choose_backend
from ncd.passes.recurrence.classify import NONLINEAR, StepAnalysis, Value, base, classify_step
from ncd.passes.recurrence.match import match_delta, match_gla
from ncd.passes.recurrence.plan import KernelLayout, ScanPlan, Structure


# What a step-invariant statement may be to be computed once, before the loop: every op-table
# row that neither draws random numbers nor updates buffers (OpDef.random / OpDef.stateful), and
# the pure structural kinds (ncd/ir.py). Anything else (a tap's hook, a call, a nested loop) stays in the step.
HOISTABLE = frozenset(name for name, row in OPS.items() if not (row.random or row.stateful)) | PURE_STRUCTURAL


def plan_scan(block: BlockIR, node: Node, requested: str | None, spec: SpecIR | None = None) -> ScanPlan:
    """One scan's plan: its class, the kernel operands where a kernel's form matched, its backend."""
    region = node.regions[0]
    n_carry = len(node.attrs["carries"])
    found = classify_step(node, spec)
    kernel, layout, unmatched = None, None, None
    if found.structure in ("gla", "delta"):
        if len(region.results) != n_carry + 1:
            unmatched = f"the step emits {len(region.results) - n_carry} values; the kernels give one read-out"
        else:
            matcher = match_gla if found.structure == "gla" else match_delta
            matched = matcher(found.analysis, region.args[0], region.results[0], region.results[1])
            if isinstance(matched, str):
                unmatched = matched
            else:
                kernel, layout = matched
    cell = match_cell(block, node, spec) if not found.linear else "the step is affine in the state"
    cell_match = None if isinstance(cell, str) else cell
    backend, why = choose_backend(found.structure, found.linear, requested, kernel is not None, unmatched,
                                  cell_match.cell if cell_match else None, cell if isinstance(cell, str) else None)
    ordered = in_order(region.nodes, spec)  # the parallel backends would run every step at once
    if ordered is None and _computes_with_index(region):
        ordered = "index"
    if ordered is None and _holds_scan(region.nodes, spec):
        ordered = "nested"
    if ordered is None and _holds(region.nodes, spec, TAP):
        ordered = "taps"
    if ordered is not None:
        what = {"random": "draws random numbers", "stateful": "updates running statistics",
                "index": "computes with its step index", "nested": "holds a scan of its own",
                "taps": "taps a value (its hooks see one step at a time)"}[ordered]
        if requested not in (None, "auto", "sequential"):
            raise NcdError(f"this scan {what}, so it cannot run via {requested}",
                           node.loc.span if node.loc else None,
                           hint="drop the via: such a scan runs as the sequential loop, one step after "
                                "another, as the emitted Python runs it")
        backend, why = "sequential", f"its step {what}, so it runs as the sequential loop"
    state_free = [n.id for n in walk(region.nodes) if found.analysis.value(n.id).degree == 0]
    invariant = [n.id for n in region.nodes if n.op in HOISTABLE and found.analysis.value(n.id).degree == 0
                 and not found.analysis.value(n.id).varies]
    plan = ScanPlan(block=block.key, node=node.id, loc=node.loc, axis=node.attrs["axis"],
                    carries=list(node.attrs["carries"]), linear=found.linear, requested=requested,
                    structure=found.structure, block_size=found.block_size, backend=backend,
                    reason=f"{found.reason}; {why}", kernel=kernel, kernel_layout=layout, state_free=state_free,
                    cell=cell_match, cell_reason=cell if isinstance(cell, str) else "", invariant=invariant)
    admitted = [name for name, b in scan_backends.BACKENDS.items() if b.admits(plan) is None]
    if requested in (None, "auto") and ordered is None and backend != "fused_rnn" and len(admitted) > 1:
        plan.reason += (f"; at run time auto picks per call among {', '.join(admitted)} (every backend that "
                        "admits this scan) by the calibrated cost model where it has one (backends/pytorch/"
                        "scan_cost.py: a CPU in float32), timing on a shape's first call those predicted too "
                        "close to call")
    return plan


def _holds_scan(nodes: list[Node], spec: SpecIR | None) -> bool:
    """A scan inside the step (or inside a block it calls): the parallel backends evaluate the
    step at every position at once, which an inner scan's own runner cannot take part in."""
    return _holds(nodes, spec, SCAN)


def _holds(nodes: list[Node], spec: SpecIR | None, kind: str, depth: int = 0) -> bool:
    """A node of this kind in the step or in a block it calls. A tap there must see each step's
    value: the parallel backends would hand its hooks every position at once, per solver iterate."""
    for node in walk(nodes):
        if node.op == kind:
            return True
        if node.op == CALL and spec is not None and depth < 32:
            callee = spec.blocks.get(node.attrs.get("block"))
            if callee is not None and _holds(callee.nodes, spec, kind, depth + 1):
                return True
    return False


def _computes_with_index(region) -> bool:
    """The parallel backends stand the index for every step at once, which only selecting
    (``x[t]``) understands; arithmetic on it (``sqrt(t + 1)``) needs the loop's one step at a time."""
    index = region.args[-1]
    return any(index in node.inputs and not (role(node.op) == PICK and node.inputs.index(index) > 0)
               for node in walk(region.nodes))


def plan_scans(spec: SpecIR, backend: str = "auto") -> list[ScanPlan]:
    """Every scan of every block, classified; ``backend`` is the caller's override ("auto": each
    scan's own ``via`` or the pass's choice). A requested backend that cannot run a scan's plan,
    or an unknown name, is an NcdError (at the scan)."""
    scan_backends.lookup(backend)
    plans = []
    for block in spec.blocks.values():
        for node in walk(block.nodes):
            if node.op == SCAN:
                requested = node.attrs.get("backend") if backend == "auto" else backend
                plan = plan_scan(block, node, requested, spec)
                scan_backends.admit(plan.backend, plan, node.loc.span if node.loc else None)
                plans.append(plan)
    return plans


__all__ = ["match_cell", "KernelLayout", "NONLINEAR", "ScanPlan", "StepAnalysis", "Structure", "Value", "base", "choose_backend",
           "classify_step", "match_delta", "match_gla", "plan_scan", "plan_scans"]
