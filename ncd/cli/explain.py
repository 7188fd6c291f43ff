"""`--explain`: for each scan, where it is, what it scans and carries, its class, backend and why."""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from ncd.cli.common import fmt_axes
from ncd.ir import REGION_ARG, SCAN


def explain_loops(ir: Any, scan_backend: str = "auto", passes: Any = None,
                  rows: int = 1) -> Iterator[dict[str, Any]]:
    """One record per scan: where it is, what it scans and carries, its class, backend and why,
    and every candidate backend's predicted time at ``rows`` batch rows (``predictions``).

    The pipeline's recurrence pass (ncd/pipeline.py, ncd/passes/recurrence) classifies each scan
    and chooses its backend; this prints its plans (``passes``, or the pipeline's passes run on
    ``ir`` with ``scan_backend``), the ones the compiled module runs.
    """
    from ncd.backends.pytorch.implementations import implementation
    from ncd.ir import walk
    from ncd.pipeline import run_passes
    from ncd.sizes import AxisSizes

    sizes = AxisSizes.of(ir)

    passes = passes if passes is not None else run_passes(ir, scan_backend)
    plans = passes.scan_plans()
    states = _state_names(ir, passes)
    statements = _step_statements(ir, passes)
    for block in ir.blocks.values():
        for node in walk(block.nodes):
            if node.op != SCAN:
                continue
            region = node.regions[0] if node.regions else None
            args = {n.attrs.get("name", n.name): n for n in (region.nodes if region else [])
                    if n.op == REGION_ARG and n.id in region.args}
            carries = [{"name": name, "axes": list(args[name].type.axes) if name in args else None}
                       for name in node.attrs.get("carries", [])]
            plan = plans[(block.key, node.id)]
            axes = [c["axes"] for c in carries]
            T = sizes.bound(node.attrs.get("axis", ""))
            N = _elements(sizes, axes)
            hidden = sizes.bound(plan.cell.state_axis) if plan.cell is not None else None
            kind = f"{'linear' if plan.linear else 'nonlinear'}, {plan.structure}"
            backend, reason = plan.backend, plan.reason
            yield {
                "block": block.key,
                "node": node.id,
                "line": node.loc.line if node.loc else None,
                "col": node.loc.col if node.loc else None,
                "file": node.loc.file if node.loc else None,  # an imported block's own spec file
                "axis": node.attrs.get("axis"),
                "reverse": bool(node.attrs.get("reverse")),
                "carries": carries,
                "class": kind,
                "backend": backend,
                "implementation": implementation(backend, head_dim=_head_dim(ir, plan)),
                "reason": reason,
                "requested": node.attrs.get("backend"),
                "predictions": _predictions(plan, rows, T, N, hidden, statements.get((block.key, node.id))),
                "states": None if states is None else states.get((block.key, node.id), []),
            }


def _head_dim(ir: Any, plan: Any) -> int | None:
    """max(K, V) of a gla / delta scan where the sizes are bound (wider heads run the PyTorch twin)."""
    from ncd.sizes import resolve

    layout = plan.kernel_layout
    if layout is None:
        return None
    sizes = {name: axis.size for name, axis in ir.axes.items()}
    dims = [resolve(axis, sizes, ir.bindings) for axis in (layout.key, layout.value)]
    return max(int(d) for d in dims) if all(d.is_Integer for d in dims) else None


def _state_names(ir: Any, passes: Any) -> dict[tuple[str, str], list[str]] | None:
    """(block key, scan node id) -> the state names its carries have in the entry's module
    (docs/language.md, "State in and out"); None where the spec cannot be lowered yet (free sizes)."""
    from ncd import state
    from ncd.backends.pytorch.program import lower_spec
    from ncd.errors import NcdError

    try:
        programs = lower_spec(ir, passes.scan_plans(), passes.fusion)
    except NcdError:
        return None
    out: dict[tuple[str, str], list[str]] = {}
    key_of = {}
    for key, program in programs.items():
        for stmt in program.body:
            key_of[id(stmt)] = key
    for entry in state.walk(programs, ir.entry):
        out.setdefault((key_of[id(entry.loop)], entry.loop.node_id), []).append(entry.name)
    return out


def _elements(sizes: Any, axes: list[list[str] | None]) -> int | None:
    """Carried elements per row: every carry's bound size (None while one is free or unknown)."""
    total = 0
    for carry in axes:
        if carry is None:
            return None
        n = 1
        for axis in carry:
            size = sizes.bound(axis)
            if size is None:
                return None
            n *= size
        total += n
    return total


def _predictions(plan: Any, rows: int, T: int | None, N: int | None, hidden: int | None,
                 statements: int | None = None) -> dict[str, Any]:
    """Per device kind (float32): each candidate backend's predicted seconds forward and
    forward+backward (None: no calibrated model), what auto runs by the model, and which candidates
    it times on the first call instead (``auto_measures``: predicted too close to call); for kinds with no
    calibration, the uncalibrated roofline estimate (``roofline``); or why there are no numbers."""
    from ncd.backends.pytorch import scan_cost

    if T is None or N is None:
        return {"rows": rows, "T": T, "N": N, "note": "bind the scanned axis and the carries' axes (--set) "
                                                      "for predicted times"}
    count = statements or scan_cost.PARAGRU_STATEMENTS
    out: dict[str, Any] = {"rows": rows, "T": T, "N": N, "statements": count, "devices": {}}
    for device in scan_cost.DEVICE_KINDS:
        passes = {}
        for backward, mode in ((False, "fwd"), (True, "fwd+bwd")):
            passes[mode] = {"seconds": scan_cost.plan_predictions(plan, device, "float32", rows, T, N, backward,
                                                                  hidden, count),
                            "auto_runs": scan_cost.auto_runs(plan, device, "float32", rows, T, N, backward,
                                                             hidden, count),
                            "auto_measures": scan_cost.auto_measures(plan, device, "float32", rows, T, N,
                                                                     backward, hidden, count)}
            if device != "cpu":
                passes[mode]["roofline"] = scan_cost.roofline_predictions(plan, rows, T, N, backward, hidden, count)
        out["devices"][device] = passes
    return out


def _step_statements(ir: Any, passes: Any) -> dict[tuple[str, str], int]:
    """(block key, scan node id) -> the statements its step runs each step (the loop's dispatch
    term in the cost model); empty where the spec cannot be lowered yet (free sizes)."""
    from ncd.backends.pytorch.auto_scan import step_statements
    from ncd.backends.pytorch.program import Loop, lower_spec
    from ncd.errors import NcdError

    try:
        programs = lower_spec(ir, passes.scan_plans(), passes.fusion)
    except NcdError:
        return {}
    out: dict[tuple[str, str], int] = {}

    def visit(key: str, body: list[Any]) -> None:
        for stmt in body:
            if isinstance(stmt, Loop):
                if stmt.kind == SCAN:
                    out[(key, stmt.node_id)] = step_statements(stmt)
                visit(key, stmt.body)

    for key, program in programs.items():
        visit(key, program.body)
    return out


def explain_text(ir: Any, scan_backend: str = "auto", emitted: bool = False, passes: Any = None,
                 rows: int = 1) -> str:
    lines = []
    records = list(explain_loops(ir, scan_backend, passes, rows))
    for rec in records:
        where = f"{rec.get('file') or ir.name}:{rec['line']}:{rec['col']}" if rec["line"] else ir.name
        carries = ", ".join(f"{c['name']}: {fmt_axes(c['axes'])}" if c["axes"] is not None else c["name"]
                            for c in rec["carries"])
        direction = " reverse" if rec["reverse"] else ""
        lines.append(f"{where}: scan over {rec['axis']}{direction} in block {rec['block']}, carry ({carries})")
        lines.append(f"    class: {rec['class']}")
        lines.append(f"    backend: {rec['backend']}")
        lines.append(f"    runs here as: {rec['implementation']}")
        lines.append(f"    why: {rec['reason']}")
        if rec["states"] is None:
            lines.append("    state: bind the free sizes (--set) to name its states")
        elif rec["states"]:
            lines.append(f"    state: {', '.join(rec['states'])} (initial_state= / return_state=)")
        else:
            lines.append("    state: none (it runs inside another loop, or in an instance called more than once, "
                         "or outside the entry)")
        lines.extend(_prediction_lines(rec["predictions"]))
    if records:
        from ncd.backends.pytorch.packable import summary

        packed = summary(ir)
        if packed is not None:
            lines.append(packed)
    if records and emitted and not _emitter_runs_plans():
        lines.append("note: the emitted Python runs every scan as the sequential loop, except fused_rnn ones "
                     "(torch's fused RNN operator, as here); the backends above are those of the in-process "
                     "module (ncd.load, ncd run)")
    return "\n".join(lines) if lines else f"{ir.name}: no scans (feed-forward)"


def _prediction_lines(pred: dict[str, Any]) -> list[str]:
    if "note" in pred:
        return [f"    predicted: {pred['note']}"]
    lines = [f"    predicted, float32, {pred['rows']} batch row{'s' if pred['rows'] != 1 else ''}, "
             f"T = {pred['T']}, N = {pred['N']}, {pred['statements']} statements a step "
             "(backends/pytorch/scan_cost.py):"]
    for device, passes in pred["devices"].items():
        if all(t is None for got in passes.values() for t in got["seconds"].values()):
            runs = {got["auto_runs"] for got in passes.values()}
            lines.append(f"      {device}: no calibrated model; auto runs {', '.join(sorted(runs))} (the pass's "
                         "choice by class)")
            for mode, got in passes.items():
                if any(t is not None for t in got.get("roofline", {}).values()):
                    lines.append(f"      {device} {mode}, uncalibrated roofline ({_roofline_gpu()}): "
                                 f"{_shown(got['roofline'])}")
            continue
        for mode, got in passes.items():
            known = {b: t for b, t in got["seconds"].items() if t is not None}
            best = f"; cheapest predicted {min(known, key=known.__getitem__)}" if known else ""
            runs = f"auto runs {got['auto_runs']}"
            if got.get("auto_measures"):
                runs = (f"auto times {', '.join(got['auto_measures'])} on the first call of these sizes (predicted "
                        f"within {scan_cost_margin()}x of each other, or within the models' error) and runs the fastest")
            lines.append(f"      {device} {mode}: {_shown(got['seconds'])}{best}; {runs}")
    return lines


def scan_cost_margin() -> str:
    from ncd.backends.pytorch import scan_cost

    return f"{scan_cost.MEASURE_MARGIN:g}"


def _shown(seconds: dict[str, float | None]) -> str:
    from ncd.analysis.timing import format_seconds

    return ", ".join(f"{b} {format_seconds(t)}" if t is not None else f"{b} no model" for b, t in seconds.items())


def _roofline_gpu() -> str:
    """The roofline's stated assumptions, in words."""
    from ncd.analysis.timing import GPUS
    from ncd.backends.pytorch import scan_cost

    return f"{GPUS[scan_cost.ROOFLINE_GPU]['name']} datasheet, {scan_cost.LAUNCH_S * 1e6:g} µs per launch"


def _emitter_runs_plans() -> bool:
    import inspect

    from ncd.backends.pytorch.emit import emit_python

    return "plans" in inspect.signature(emit_python).parameters
