"""What a spec costs: FLOPs forward and backward, parameters, saved activations, memory traffic.

The analyzer walks the IR once as an abstract interpreter. Every value it meets carries the
storage it lives in (a token: views share their source's), its memory order (to tell when
``torch.einsum`` must copy an operand before its bmm), and whether it needs a gradient. Each op's
FLOPs and saved tensors come from its op-table entry (``OpDef.cost``, see ncd/ops/costing.py);
op_costs.py adds them up over blocks, lifted (broadcast) axes, scans and repeats, scan_costs.py
costs each way to run a scan, report.py sums it all up. This module is the entry: ``analyze``.

The size symbols and the counting conventions (what a FLOP and a saved byte are, what
``FlopCounterMode`` agrees with) are written once, in op_costs.py's docstring.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ncd.analysis.op_costs import Analyzer
from ncd.analysis.report import CostReport
from ncd.errors import NcdError
from ncd.ir import SpecIR

__all__ = ["CostReport", "analyze"]


def analyze(ir: SpecIR, sizes: Mapping[str, int] | None = None, *, dtype: str = "float32",
            input_grad: bool = False, batch: str = "B", passes: Any = None) -> CostReport:
    """Cost of a checked spec: formulas in its axis symbols, numbers at ``sizes`` and its bindings.
    ``passes``: the pipeline's (ncd/pipeline.py) scan and fusion plans; None: run them on ``ir``."""
    passes = passes if passes is not None else _passes(ir)
    return CostReport(Analyzer(ir, sizes, dtype=dtype, input_grad=input_grad, batch=batch, passes=passes).run())


def _passes(ir: SpecIR) -> Any:
    """The pipeline's passes for an IR handed in without them; where the recurrence pass refuses
    it (an IR from JSON naming a backend its scan cannot use), every scan costs as the loop."""
    from ncd.pipeline import Passes, run_passes
    from ncd.passes.fusion import plan_fusions

    try:
        return run_passes(ir)
    except NcdError:
        return Passes(fusion=plan_fusions(ir))
