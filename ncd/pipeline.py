"""The one pipeline: parse → build → verify → passes, and their results handed on as data.

Every consumer starts here: ``ncd.check`` and ``ncd.load`` (ncd/api.py), the torch backend
(which lowers from ``Passes``), the analyzer (which costs from the same ``Passes``), the renderer
(which draws the built IR) and `ncd compile --explain` (which prints the scan plans). No backend
or analysis runs a pass of its own: the recurrence pass (ncd/passes/recurrence) and the fusion
pass (ncd/passes/fusion.py) run here, once, and the IR is verified after the build and after
every pass that changed it (an IR equal to the one just verified is not checked twice).
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from pydantic import BaseModel, Field
from pydantic_core import PydanticSerializationError

from ncd.errors import NcdError
from ncd.ir import SpecIR
from ncd.passes.fusion import FusionPlan, plan_fusions
from ncd.passes.recurrence import ScanPlan, plan_scans
from ncd.verify import verify as verify_ir


class Passes(BaseModel):
    """What the passes decided, as data: one ScanPlan per scan, the fusion plan of every block."""

    scan_backend: str = "auto"  # the caller's override every scan plan was made under
    scans: list[ScanPlan] = Field(default_factory=list)
    fusion: FusionPlan = Field(default_factory=FusionPlan)

    def scan_plans(self) -> dict[tuple[str, str], ScanPlan]:
        """(block key, scan node id) → its plan."""
        return {(p.block, p.node): p for p in self.scans}


@dataclass(frozen=True)
class Compiled:
    """A spec through the whole pipeline."""

    source: str
    name: str
    ir: SpecIR
    passes: Passes


def verify(ir: SpecIR) -> None:
    """Re-check the IR (after the build and after every pass): a pass that breaks it fails here."""
    verify_ir(ir)


def build(source: str, name: str, sizes: Mapping[str, int] | None = None, block: str | None = None) -> SpecIR:
    """Parse and build (the builder type-checks as it goes), then verify."""
    from ncd.frontend.builder import build_spec

    ir = build_spec(source, name, dict(sizes or {}), block)
    _located(verify, ir, source, name)
    return ir


def run_passes(ir: SpecIR, scan_backend: str = "auto", verified: bool = False) -> Passes:
    """The recurrence pass (each scan's class and backend, held to what the scan-backend registry
    admits) and the fusion pass, the IR verified after each. ``scan_backend`` overrides every
    scan's backend; an unknown name, or one a scan's class does not admit, is an NcdError.
    ``verified``: the caller has just verified ``ir`` (``build``), so it is not checked again
    before the first pass."""
    checked = _fingerprint(ir) if verified else None
    scans = plan_scans(ir, scan_backend)
    checked = _reverify(ir, checked)
    fusion = plan_fusions(ir)
    _reverify(ir, checked)
    return Passes(scan_backend=scan_backend, scans=scans, fusion=fusion)


def _fingerprint(ir: SpecIR) -> bytes | dict:
    """The IR's whole content, every field: equal content, equal verdict. JSON bytes (a fraction
    of a verification; a plain-data copy costs as much as one, in the garbage collector), or the
    plain data where JSON cannot encode a text of the IR (a lone surrogate in a title)."""
    try:
        return ir.__pydantic_serializer__.to_json(ir)
    except PydanticSerializationError:
        return ir.__pydantic_serializer__.to_python(ir)


def _reverify(ir: SpecIR, checked: bytes | dict | None) -> bytes | dict:
    """Verify ``ir`` after a pass unless its content equals that of the IR last verified
    (``checked``): today's passes plan without editing the IR, and the verifier re-run on an
    unchanged IR can only repeat its verdict. A pass that edits the IR is verified."""
    now = _fingerprint(ir)
    if now != checked:
        verify(ir)
    return now


def compile_spec(source: str, name: str, sizes: Mapping[str, int] | None = None, block: str | None = None,
                 scan_backend: str = "auto") -> Compiled:
    """The whole pipeline on spec text: every error located in ``source``."""
    ir = build(source, name, sizes, block)
    passes = _located(run_passes, ir, source, name, scan_backend, True)
    return Compiled(source, name, ir, passes)


def _located(fn, ir: SpecIR, source: str, name: str, *args):
    try:
        return fn(ir, *args)
    except NcdError as exc:
        raise exc.located(source, name) from None
