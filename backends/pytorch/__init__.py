"""The PyTorch backend: IR → an in-process module, or readable Python source of the same module."""
from __future__ import annotations

from ncd.backends.pytorch.module import CompiledModule
from ncd.backends.pytorch.program import lower_spec

from ncd.ir import SpecIR

SCAN_BACKENDS = ("auto", "sequential", "newton", "scan", "fft", "gla", "delta")


def compile_module(ir: SpecIR, scan_backend: str = "auto", fuse_scans: bool = False) -> CompiledModule:
    """``scan_backend`` overrides every scan's backend ("auto": the recurrence pass decides).
    ``fuse_scans`` runs each Newton step of every newton-backed scan as one torch.compile'd graph
    (see `NewtonSolver`'s ``fuse``): worth its compile time on a GPU, for long sequences."""
    from ncd.errors import NcdError
    from ncd.passes.recurrence import plan_scans

    if scan_backend not in SCAN_BACKENDS:
        hint = f"choose one of {', '.join(SCAN_BACKENDS)}"
        raise NcdError(f"unknown scan backend {scan_backend!r}", hint=hint)
    plans = plan_scans(ir, scan_backend)
    for plan in plans:
        _check_plan(plan)
    module = CompiledModule(ir, lower_spec(ir, {(p.block, p.node): p for p in plans}), ir.entry)
    module.scan_plans = plans
    if fuse_scans:
        for sub in module.modules():
            for scan in sub.parallel_scans() if isinstance(sub, CompiledModule) else ():
                if getattr(scan, "solver", None) is not None:
                    scan.solver.fuse = True
    return module


def _check_plan(plan) -> None:
    from ncd.errors import NcdError

    span = plan.loc.span if plan.loc else None
    if plan.backend == "scan" and not (plan.linear and plan.structure in ("diagonal", "gla")):
        raise NcdError(f"scan backend 'scan' needs a step that is affine and elementwise in the state; this scan "
                       f"is {'linear' if plan.linear else 'nonlinear'} and {plan.structure}", span,
                       hint="use 'newton' for nonlinear elementwise steps, or 'sequential'")
    if plan.backend == "fft" and not (plan.linear and plan.structure == "time_invariant"):
        raise NcdError(f"scan backend 'fft' needs a linear step whose transition does not change over the "
                       f"steps; this scan is {'linear' if plan.linear else 'nonlinear'} and {plan.structure}",
                       span, hint="use 'sequential'")
    if plan.backend in ("gla", "delta") and plan.kernel is None:
        raise NcdError(f"scan backend {plan.backend!r} needs the step in the kernel's form; this scan is "
                       f"{plan.structure}: {plan.reason}", span, hint="use 'sequential' or 'auto'")
    if plan.backend == "newton" and plan.linear is False and plan.structure == "dense":
        return  # dense Newton: allowed when asked for, meant for tiny states
    if plan.backend not in SCAN_BACKENDS:
        raise NcdError(f"scan backend {plan.backend!r} is not available", span,
                       hint=f"choose one of {', '.join(SCAN_BACKENDS)}")


__all__ = ["CompiledModule", "compile_module", "lower_spec"]
