"""The PyTorch backend: IR → an in-process module, or readable Python source of the same module.

It lowers from the pipeline's results (ncd/pipeline.py: the scan plans and the fusion plan);
it runs no pass of its own."""
from __future__ import annotations

from typing import Any

from ncd import scan_backends
from ncd.backends.pytorch.call_checks import CallContract
from ncd.backends.pytorch.allocation import check_budget, check_values, load_tensors, wire_tensors
from ncd.backends.pytorch.module import CompiledModule
from ncd.backends.pytorch.program import SizeTable, lower_spec
from ncd.ir import SpecIR
from ncd.limits import default_memory_limit
from ncd.pipeline import Passes

SCAN_BACKENDS = scan_backends.NAMES  # the registry's names (ncd/scan_backends.py), "auto" first


def compile_module(ir: SpecIR, scan_backend: str = "auto", fuse_scans: bool = False,
                   passes: Passes | None = None, memory_limit: int | None = None,
                   module_class: type[CompiledModule] = CompiledModule,
                   records: dict[str, list[Any]] | None = None) -> CompiledModule:
    """The module of a checked IR, lowered from the pipeline's ``passes`` (None: the pipeline
    runs them here, with ``scan_backend`` overriding every scan's backend; "auto": the recurrence
    pass decides). ``fuse_scans`` runs each Newton step of every newton-backed scan as one
    torch.compile'd graph (see `NewtonSolver`'s ``fuse``): worth its compile time on a GPU, for
    long sequences. ``memory_limit`` (bytes; default ``ncd.limits.default_memory_limit()``) caps
    what the parameters, buffers and constants may take, checked before any is allocated, and
    each value a call computes at its input's sizes, checked when it is called (docs/limits.md).
    ``module_class``: the top module's class (the step module's, backends/pytorch/step.py);
    ``records``: the caches and windows a prefill module hands its state session
    (ncd/passes/step.py StepPlan.records)."""
    if passes is None:
        from ncd.pipeline import run_passes

        passes = run_passes(ir, scan_backend)
    programs = lower_spec(ir, passes.scan_plans(), passes.fusion, records)
    limit = default_memory_limit() if memory_limit is None else memory_limit
    check_budget(load_tensors(ir, programs, ir.entry), limit, f"loading {ir.entry}")
    check_values(wire_tensors(ir, SizeTable(ir).bound), limit)
    module = module_class(ir, programs, ir.entry)
    module.scan_plans = passes.scans
    module.set_call_contract(CallContract(ir, ir.entry, limit))
    if fuse_scans:
        for sub in module.modules():
            for scan in sub.parallel_scans() if isinstance(sub, CompiledModule) else ():
                if getattr(scan, "solver", None) is not None:
                    scan.solver.fuse = True
    return module


__all__ = ["CompiledModule", "SCAN_BACKENDS", "compile_module", "lower_spec"]
