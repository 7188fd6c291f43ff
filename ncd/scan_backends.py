"""The scan backends: one registry that check, `--explain`, the CLI's `--help`, the analyzer and
the torch backend all read.

Each entry says which recurrence plans it admits (``admits``: None, or why not), which of the
analyzer's cost strategies describes it (``strategy``, see ncd/analysis/scan_costs.py), and how to
fix a refusal (``hint``). The core knows nothing of torch: a backend registers the runner that
executes a backend's plans (``register_runner``); the names and the admission rules live here
so that `ncd check` can reject `scan ... via newtn` without importing a backend.
"""
from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from ncd.errors import NcdError, Span


class PlanLike(Protocol):
    """What admission reads of a scan plan (ncd.passes.recurrence.ScanPlan)."""

    linear: bool
    structure: str
    kernel: dict[str, str] | None
    reason: str
    cell: Any  # the standard cell the step is (ncd.passes.recurrence.plan.CellMatch), or None
    cell_reason: str


Admits = Callable[[PlanLike], "str | None"]


@dataclass(frozen=True)
class ScanBackend:
    name: str
    doc: str
    strategy: str  # the analyzer's cost strategy for scans run this way
    admits: Admits  # None: the backend runs this plan; otherwise why it cannot
    hint: str  # what to use instead, when it cannot


def _kind(plan: PlanLike) -> str:
    return f"{'linear' if plan.linear else 'nonlinear'} and {plan.structure}"


def _any(plan: PlanLike) -> str | None:
    return None


def _diagonal_scan(plan: PlanLike) -> str | None:
    if plan.linear and plan.structure in ("diagonal", "gla"):
        return None
    return f"it needs a step that is affine and elementwise in the state; this scan is {_kind(plan)}"


def _fft(plan: PlanLike) -> str | None:
    if plan.linear and plan.structure == "time_invariant":
        return None
    return f"it needs a linear step whose transition does not change over the steps; this scan is {_kind(plan)}"


def _kernel(structure: str, form: str) -> Admits:
    """A chunked kernel runs its own recurrence only (the GLA kernel is no delta rule, nor back)."""
    def admits(plan: PlanLike) -> str | None:
        if plan.kernel is not None and plan.structure == structure:
            return None
        if plan.kernel is not None:
            return f"it needs the step in its form, {form}; this scan is {plan.structure}"
        return f"it needs the step in the kernel's form; this scan is {plan.structure}: {plan.reason}"
    return admits


def _cell(plan: PlanLike) -> str | None:
    if plan.cell is not None:
        return None
    return f"it needs a step that is exactly an Elman, GRU or LSTM cell; {plan.cell_reason or 'this one is not'}"


BACKENDS: dict[str, ScanBackend] = {b.name: b for b in (
    ScanBackend("sequential", "the step as a loop over the scanned axis", "sequential", _any, ""),
    ScanBackend("newton", "a parallel Newton solve over time (ParaRNN); dense Jacobians only for tiny states",
                "newton", _any, "use 'sequential'"),
    ScanBackend("scan", "a parallel diagonal linear scan", "parallel_scan", _diagonal_scan,
                "use 'newton' for nonlinear elementwise steps, or 'sequential'"),
    ScanBackend("fft", "a causal convolution computed by FFT (time-invariant linear steps)", "fft", _fft,
                "use 'sequential'"),
    ScanBackend("gla", "the chunked gated-linear-attention kernel", "chunked",
                _kernel("gla", "S = α·S + k·v read out by q @[K] S"), "use 'sequential' or 'auto'"),
    ScanBackend("delta", "the chunked delta-rule kernel", "chunked",
                _kernel("delta", "S − β·k·(k @[K] S) + β·k·v read out by q @[K] S"), "use 'sequential' or 'auto'"),
    ScanBackend("fused_rnn", "torch's fused RNN operator (nn.RNN/GRU/LSTM's kernel) for a proven Elman, GRU or "
                "LSTM step", "fused_rnn", _cell, "use 'sequential' or 'auto'"),
)}
# The analyzer's cost strategies (ncd/analysis/scan_costs.py) and which recurrences each can run:
# the linear-only ones need an affine step, fft a time-invariant one, fused_rnn a step proved to be
# a standard cell; None: a scan with no plan.
STRATEGY_ADMITS: dict[str, Callable[[PlanLike | None], bool]] = {
    "sequential": lambda plan: True,
    "newton": lambda plan: True,
    "fused_rnn": lambda plan: plan is not None and plan.cell is not None,
    "parallel_scan": lambda plan: plan is not None and plan.linear,
    "chunked": lambda plan: plan is not None and plan.linear,
    "attention_form": lambda plan: plan is not None and plan.linear,
    "fft": lambda plan: plan is not None and plan.structure == "time_invariant",
}
AUTO = "auto"  # not a backend: the recurrence pass chooses one per scan
NAMES: tuple[str, ...] = (AUTO, *BACKENDS)  # the order --help and the hints list them in

_RUNNERS: dict[str, Any] = {}


def names_text() -> str:
    return ", ".join(NAMES)


def lookup(name: str, span: Span | None = None, *, what: str = "scan backend") -> str:
    """``name`` if it is a backend (or ``auto``); otherwise an NcdError at ``span`` that lists the
    names and suggests the closest one."""
    if name in NAMES:
        return name
    close = difflib.get_close_matches(name, NAMES, n=1)
    guess = f"did you mean {close[0]!r}? " if close else ""
    raise NcdError(f"unknown {what} {name!r}", span, hint=f"{guess}choose one of {names_text()}")


def admit(name: str, plan: PlanLike, span: Span | None = None) -> None:
    """Raise an NcdError at ``span`` when backend ``name`` cannot run ``plan``."""
    backend = BACKENDS[lookup(name, span)] if name != AUTO else None
    if backend is None:
        return
    why = backend.admits(plan)
    if why is not None:
        raise NcdError(f"scan backend {name!r} cannot run this scan: {why}", span, hint=backend.hint or None)


def strategy(name: str) -> str:
    """The analyzer's cost strategy for a backend name."""
    backend = BACKENDS.get(name)
    return backend.strategy if backend is not None else name


def strategy_applies(name: str, plan: PlanLike | None) -> bool:
    """Whether the cost strategy ``name`` can run a scan planned as ``plan`` (None: no plan)."""
    admits = STRATEGY_ADMITS.get(name)
    return admits(plan) if admits is not None else True


def register_runner(name: str, runner: Any) -> None:
    """A backend says how it runs scans planned for ``name`` (the torch backend does, at import)."""
    lookup(name)
    _RUNNERS[name] = runner


def registered() -> tuple[str, ...]:
    """The backends some backend has registered a runner for."""
    return tuple(_RUNNERS)


def runner(name: str) -> Any:
    """The runner a backend registered for ``name``; an NcdError where none did."""
    found = _RUNNERS.get(name)
    if found is None:
        raise NcdError(f"no runner is registered for scan backend {name!r}",
                       hint="load the spec through ncd.load, which registers the torch backend's runners")
    return found
