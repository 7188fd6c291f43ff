"""`--explain`: for each scan, where it is, what it scans and carries, its class, backend and why."""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from ncd.cli.common import fmt_axes


def explain_loops(ir: Any, scan_backend: str = "auto", passes: Any = None) -> Iterator[dict[str, Any]]:
    """One record per scan: where it is, what it scans and carries, its class, backend and why.

    The pipeline's recurrence pass (ncd/pipeline.py, ncd/passes/recurrence) classifies each scan
    and chooses its backend; this prints its plans (``passes``, or the pipeline's passes run on
    ``ir`` with ``scan_backend``), the ones the compiled module runs.
    """
    from ncd.backends.pytorch.implementations import implementation
    from ncd.ir import walk
    from ncd.pipeline import run_passes

    plans = (passes if passes is not None else run_passes(ir, scan_backend)).scan_plans()
    for block in ir.blocks.values():
        for node in walk(block.nodes):
            if node.op != "scan":
                continue
            region = node.regions[0] if node.regions else None
            args = {n.attrs.get("name", n.name): n for n in (region.nodes if region else [])
                    if n.op == "region_arg" and n.id in region.args}
            carries = [{"name": name, "axes": list(args[name].type.axes) if name in args else None}
                       for name in node.attrs.get("carries", [])]
            plan = plans[(block.key, node.id)]
            kind = f"{'linear' if plan.linear else 'nonlinear'}, {plan.structure}"
            backend, reason = plan.backend, plan.reason
            yield {
                "block": block.key,
                "node": node.id,
                "line": node.loc.line if node.loc else None,
                "col": node.loc.col if node.loc else None,
                "axis": node.attrs.get("axis"),
                "reverse": bool(node.attrs.get("reverse")),
                "carries": carries,
                "class": kind,
                "backend": backend,
                "implementation": implementation(backend),
                "reason": reason,
                "requested": node.attrs.get("backend"),
            }


def explain_text(ir: Any, scan_backend: str = "auto", emitted: bool = False, passes: Any = None) -> str:
    lines = []
    records = list(explain_loops(ir, scan_backend, passes))
    for rec in records:
        where = f"{ir.name}:{rec['line']}:{rec['col']}" if rec["line"] else ir.name
        carries = ", ".join(f"{c['name']}: {fmt_axes(c['axes'])}" if c["axes"] is not None else c["name"]
                            for c in rec["carries"])
        direction = " reverse" if rec["reverse"] else ""
        lines.append(f"{where}: scan over {rec['axis']}{direction} in block {rec['block']}, carry ({carries})")
        lines.append(f"    class: {rec['class']}")
        lines.append(f"    backend: {rec['backend']}")
        lines.append(f"    runs here as: {rec['implementation']}")
        lines.append(f"    why: {rec['reason']}")
    if records and emitted and not _emitter_runs_plans():
        lines.append("note: the emitted Python runs every scan as the sequential loop, except fused_rnn ones "
                     "(torch's fused RNN operator, as here); the backends above are those of the in-process "
                     "module (ncd.load, ncd run)")
    return "\n".join(lines) if lines else f"{ir.name}: no scans (feed-forward)"


def _emitter_runs_plans() -> bool:
    import inspect

    from ncd.backends.pytorch.emit import emit_python

    return "plans" in inspect.signature(emit_python).parameters
