"""Predicted run time of a scan under each backend `auto` may pick between at run time, per
device kind, from the sizes of the call at hand (batch rows, steps T, state size N, and the
statements the step runs).

The recurrence pass picks a backend by the step's class, but which of the backends it admits is
fastest depends on sizes the pass does not know (the batch is lifted, T is often free): on a CPU,
forward, a batch of 8 at N = 128 makes Newton several times slower than the loop, while at
batch 1, T = 4096, forward+backward it is an order of magnitude faster; a short linear scan runs
faster as the loop than as a parallel scan. So `auto` asks this model at each call (cached per
call shape, backends/pytorch/auto_scan.py) and runs the admitted backend predicted cheapest;
where several are predicted within ``margin`` of the cheapest (closer than the fit can
resolve: 2×, or two standard errors of the models' calibration residuals where wider), auto times those on the call's first occurrence and runs the fastest.

CPU models (seconds), float32, with w = rows·T·N the elements of the state sequence and S the
statements one step runs:
    sequential: T·(a₀·S + a₁·rows·N)                     (per-statement dispatch, then work)
    newton:     b₀ + b₁·log₂T + b₂·w + b₃·w·log₂T          (iterations × evaluations and
    scan:       the same form                             log-depth scans over all steps)
    fft:        d₀ + d₁·rows·N³·log₂T + d₂·w·N + d₃·w·log₂T (the powers Aⁱ by log₂T batched
                                                          products, the kernel applied per
                                                          frequency, the FFTs)
    gla, delta: e₀ + e₁·c + e₂·rows·c + e₃·rows·c·C·N     (the chunked twin, c = ⌈T/C⌉ chunks
                                                          of C = 64 steps: per-chunk dispatch,
                                                          each row's intra-chunk products, the
                                                          state over the padded chunk; a
                                                          T = 16 call costs what T = 64 does)
    fused_rnn:  T·(c₀ + c₁·rows·N²)                       (torch's fused RNN operator: a
                                                          per-step cost, then the N×N
                                                          recurrent products per row; one
                                                          model per cell, whose kernels differ)
with separate constants for forward alone (no autograd graph) and forward+backward. For a
linear step the loop, Newton and the diagonal scan have constants per class ("scan.diagonal",
"sequential.gla", "newton.diagonal"; ``_key``): each class's were fitted on one spec of it, beside
its parallel backend in the same run, because the loop's per-statement cost differs between
steps (gla's einsums cost several times mamba's elementwise products) and Newton on a linear
step stops after one iteration; a spec whose step ops cost more or less than its class's
representative is mispredicted by that ratio. Fitted by
`bench/scan_auto.py` (docs/benchmarks.md): `--calibrate` (sequential and newton, on paragru),
`--calibrate-fused` (fused_rnn, on rnn_tanh, gru and lstm) and `--calibrate-linear` (scan on
mamba_negeig, fft on lssl, gla and delta on gla and deltanet, each beside its sequential loop).
Newton's model holds for an elementwise (diagonal or block) step; a dense one needs N
Jacobian-vector products per step and has no model.

GPU kinds ("cuda") have no calibration (no GPU measurements were made): `--explain` shows a
stated roofline-style estimate there, labelled uncalibrated (``roofline``), and at run time the
pass's class-based choice stands on them, as it does for other dtypes.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ncd import scan_backends

# bench/scan_auto.py --calibrate --repeats 3 (B 1, 8; T 32, 128, 512; D 16, 128; median of 3 interleaved
# repeats of the process's CPU time; plain fit), 2026-12-02 18:44 UTC, this 2-core CPU at load average 2-3,
# one thread, float32. The loop's per-step term is per statement (paragru's step runs PARAGRU_STATEMENTS), so
# paragru's predictions are those fitted. (The 14:20 UTC fit put the loop 3x slower than it runs now.)
PARAGRU_STATEMENTS = 17
CPU: dict[str, dict[str, tuple[float, ...]]] = {
    "fwd": {"sequential": (3.48e-06, 8.55e-09), "newton": (0.00196, 0.00022, 0.0, 2.05e-08),
            # bench/scan_auto.py --calibrate-fused (B 1, 8; T 128, 512; D 32, 128), 2026-12-02 18:47 UTC, load 2-3
            "fused_rnn.rnn_tanh": (3.41e-06, 5.52e-10), "fused_rnn.gru": (4.9e-06, 1.34e-09),
            "fused_rnn.lstm": (5.58e-07, 4.96e-10)},
    "fwd+bwd": {"sequential": (1.25e-05, 8.28e-08), "newton": (0.00211, 0.000596, 0.0, 2.72e-08),
                "fused_rnn.rnn_tanh": (3.05e-05, 1.29e-09), "fused_rnn.gru": (8.36e-05, 3.54e-09),
                "fused_rnn.lstm": (4.34e-06, 1.03e-09)},
}
# bench/scan_auto.py --calibrate-linear --repeats 3 (B 1, 8; two sizes each; T 16, 64, 256, lssl 16, 64, whose
# FFT path is slow), 2026-12-02 18:44-18:51 UTC, load average 2-3, one thread, float32, CPU time, plain fit:
# each class's loop, Newton and parallel backend fitted on its spec, side by side
LINEAR_CPU: dict[str, dict[str, tuple[float, ...]]] = {
    "fwd": {"sequential.diagonal": (5.27e-06, 1.38e-08), "newton.diagonal": (0.0015, 0.0, 1.79e-08, 3.85e-09),
           "scan.diagonal": (0.000966, 0.0, 1.11e-08, 2.07e-09), "sequential.gla": (6.42e-06, 5.96e-09),
           "scan.gla": (0.00103, 0.0, 2.3e-08, 0.0), "gla": (0.000838, 0.0, 0.000114, 5.22e-09),
           "sequential.time_invariant": (1.18e-05, 0.0), "fft": (0.00193, 0.0, 3.14e-08, 0.0),
           "sequential.delta": (7.24e-06, 2.15e-09), "delta": (0.00078, 0.000397, 2.72e-14, 1.67e-09)},
    "fwd+bwd": {"sequential.diagonal": (1.96e-05, 1.01e-07), "newton.diagonal": (0.00182, 0.000268, 1e-07, 0.0),
               "scan.diagonal": (0.00195, 4.71e-05, 7.71e-08, 1.59e-09), "sequential.gla": (2.55e-05, 2.86e-08),
               "scan.gla": (0.00286, 0.0, 4.94e-08, 3.83e-09), "gla": (0.00122, 0.000812, 0.000242, 1.11e-08),
               "sequential.time_invariant": (4e-05, 3.5e-08), "fft": (0.00462, 0.0, 1.17e-07, 0.0),
               "sequential.delta": (2.78e-05, 1.73e-08), "delta": (0.00168, 0.00142, 6.77e-14, 4.44e-09)},
}
for _mode, _models in LINEAR_CPU.items():
    CPU[_mode].update(_models)
# rms of log(measured / predicted) over each model's calibration points (printed by the same runs): how
# loose the model is, which widens the window of predictions auto times (``margin``)
RESIDUALS: dict[str, dict[str, float]] = {
    "fwd": {"sequential.diagonal": 0.2, "newton.diagonal": 0.17, "scan.diagonal": 0.17, "sequential.gla": 0.23,
           "scan.gla": 0.26, "gla": 0.16, "sequential.time_invariant": 0.22, "fft": 0.3,
           "sequential.delta": 0.18, "delta": 0.27, "sequential": 0.16, "newton": 0.23},
    "fwd+bwd": {"sequential.diagonal": 0.41, "newton.diagonal": 0.16, "scan.diagonal": 0.09,
               "sequential.gla": 0.25, "scan.gla": 0.16, "gla": 0.1, "sequential.time_invariant": 0.3,
               "fft": 0.18, "sequential.delta": 0.22, "delta": 0.14, "sequential": 0.46, "newton": 0.12},
}
MODELS = {("cpu", "float32"): CPU}
DEVICE_KINDS = ("cpu", "cuda")  # what --explain predicts for (float32)
# fused_rnn's models are per cell ("fused_rnn.gru"); rnn_relu runs rnn_tanh's kernel
FUSED_MODEL = {"rnn_tanh": "rnn_tanh", "rnn_relu": "rnn_tanh", "gru": "gru", "lstm": "lstm"}
PARALLEL_FORM = ("newton", "scan")  # b₀ + b₁·log₂T + b₂·w + b₃·w·log₂T
CHUNKED = ("gla", "delta")
CHUNK = 64  # the chunked kernels' chunk_size (backends/triton/gated_linear, delta)


@dataclass(frozen=True)
class CallSizes:
    """What one call of a scan looks like to the models: batch rows, steps, carried elements per
    row, a fused cell's hidden size and the statements one step runs (the loop's dispatch)."""

    rows: int
    T: int
    N: int
    hidden: int | None = None
    statements: int = PARAGRU_STATEMENTS


def features(backend: str, rows: int, T: int, N: int, statements: int = PARAGRU_STATEMENTS) -> tuple[float, ...]:
    """The terms of ``backend``'s model (``fused_rnn.<cell>`` for torch's operator): ``N`` is the
    hidden size for fused_rnn, the carried elements per row otherwise."""
    log_t = math.log2(max(T, 2))
    work = float(rows * T * N)
    if backend.startswith("sequential"):
        return (float(T * statements), work)
    if backend.startswith("fused_rnn"):
        return (float(T), work * N)
    if backend == "fft":
        return (1.0, float(rows) * N ** 3 * log_t, work * N, work * log_t)
    if backend in CHUNKED:
        chunks = float(math.ceil(T / CHUNK))
        return (1.0, chunks, rows * chunks, rows * chunks * CHUNK * N)
    return (1.0, log_t, work, work * log_t)


def _key(backend: str, plan: Any) -> str | None:
    """The model a backend of this plan is predicted by, or None where none applies."""
    if backend == "fused_rnn":
        return f"fused_rnn.{FUSED_MODEL[plan.cell.cell]}" if getattr(plan, "cell", None) is not None else None
    if backend == "newton" and getattr(plan, "structure", "diagonal") not in ("diagonal", "block"):
        return None  # a dense Jacobian: N JVPs per step, not what was calibrated
    if backend in ("sequential", "newton", "scan") and getattr(plan, "linear", False):
        return f"{backend}.{plan.structure}"  # fitted on that class's spec, beside its parallel backend
    return backend


def predict(backend: str, device: str, dtype: str, rows: int, T: int, N: int, backward: bool,
            statements: int = PARAGRU_STATEMENTS) -> float | None:
    """Seconds, or None where this backend (``fused_rnn.<cell>`` for torch's operator), device
    kind and dtype have no calibrated model."""
    model = MODELS.get((device, dtype))
    if model is None:
        return None
    coefficients = model["fwd+bwd" if backward else "fwd"].get(backend)
    if coefficients is None:
        return None
    return sum(c * f for c, f in zip(coefficients, features(backend, rows, T, N, statements)))


def cheaper(device: str, dtype: str, rows: int, T: int, N: int, backward: bool) -> tuple[str, dict[str, float]]:
    """The backend predicted fastest among sequential and newton (paragru's step), and every
    prediction; newton where the device kind and dtype have no model."""
    predictions = {b: predict(b, device, dtype, rows, T, N, backward) for b in ("sequential", "newton")}
    if any(p is None for p in predictions.values()):
        return "newton", {}
    known = {b: float(p) for b, p in predictions.items() if p is not None}
    return min(known, key=known.__getitem__), known


def candidates(plan: scan_backends.PlanLike) -> list[str]:
    """Every backend that can run this plan (the registry's admission rules), in its order."""
    return [name for name, backend in scan_backends.BACKENDS.items() if backend.admits(plan) is None]


def plan_predictions(plan: Any, device: str, dtype: str, rows: int, T: int, N: int,
                     backward: bool, hidden: int | None = None,
                     statements: int = PARAGRU_STATEMENTS) -> dict[str, float | None]:
    """Each candidate backend's predicted seconds for this plan (None: no calibrated model for it
    here). ``N``: the carried elements per row (every carry); ``hidden``: a fused cell's hidden size."""
    out: dict[str, float | None] = {}
    for backend in candidates(plan):
        key = _key(backend, plan)
        size = (hidden or N) if backend == "fused_rnn" else N
        out[backend] = None if key is None else predict(key, device, dtype, rows, T, size, backward, statements)
    return out


def switchable(plan: Any) -> list[str]:
    """The backends `auto` may pick between at run time for this plan: the admitted ones with a
    model. A proven cell stays on fused_rnn: lowering folds its block's input projection into
    torch's operator (program.py, _prune_for_fused), so the loop would lack its input."""
    if plan.backend == "fused_rnn":
        return ["fused_rnn"]
    return [b for b in candidates(plan) if _key(b, plan) is not None]


def choose(plan: Any, device: str, dtype: str, call: CallSizes, backward: bool) -> tuple[str, dict[str, float]]:
    """What `auto` runs for this call: the backend predicted cheapest among ``switchable`` ones
    with a calibrated model here, and those predictions; the pass's backend (and no predictions)
    where it has no model here, so cannot be compared (other device kinds and dtypes)."""
    seconds = plan_predictions(plan, device, dtype, call.rows, call.T, call.N, backward, call.hidden,
                               call.statements)
    allowed = switchable(plan)
    known = {b: t for b, t in seconds.items() if t is not None and b in allowed}
    if plan.backend not in known:
        return plan.backend, {}
    return min(known, key=known.__getitem__), known


MEASURE_MARGIN = 2.0  # candidates predicted within this factor of the cheapest are timed by auto, not guessed
MEASURE_SIGMAS = 2.0  # ...or within this many standard errors of the two models' log ratio, where wider


def within(seconds: dict[str, float], margin: float) -> list[str]:
    """The backends predicted within ``margin`` times the cheapest prediction (cheapest first):
    those the model cannot tell apart, which `auto` measures (auto_scan.py)."""
    if not seconds:
        return []
    best = min(seconds.values())
    return sorted((b for b, t in seconds.items() if t <= margin * best), key=seconds.__getitem__)


def margin(plan: Any, first: str, other: str, backward: bool) -> float:
    """How many times the cheapest prediction (``first``'s) ``other``'s may be and still be
    timed: MEASURE_MARGIN, widened to MEASURE_SIGMAS standard errors of log(other / first) where
    the two models' calibration residuals (RESIDUALS: rms of log measured / predicted) say
    the model is that loose."""
    spread = RESIDUALS["fwd+bwd" if backward else "fwd"]
    error = math.hypot(spread.get(_key(first, plan) or first, 0.0), spread.get(_key(other, plan) or other, 0.0))
    return max(MEASURE_MARGIN, math.exp(MEASURE_SIGMAS * error))


def close(plan: Any, seconds: dict[str, float], backward: bool) -> list[str]:
    """The candidates `auto` times (cheapest predicted first): those predicted within ``margin``
    of the cheapest, where the model cannot tell them apart."""
    if not seconds:
        return []
    first = min(seconds, key=seconds.__getitem__)
    return sorted((b for b, t in seconds.items() if t <= margin(plan, first, b, backward) * seconds[first]),
                  key=seconds.__getitem__)


def auto_measures(plan: Any, device: str, dtype: str, rows: int, T: int, N: int, backward: bool,
                  hidden: int | None = None, statements: int = PARAGRU_STATEMENTS) -> list[str]:
    """The backends `auto` times on the first call of these sizes (predicted within
    ``margin`` of the cheapest; auto_scan.py), cheapest predicted first; [] where the model
    decides alone (one candidate that close, no model here, or a requested backend)."""
    if plan.requested not in (None, "auto"):
        return []
    known = choose(plan, device, dtype, CallSizes(rows, T, N, hidden, statements), backward)[1]
    timed = close(plan, known, backward)
    return timed if len(timed) > 1 else []


def auto_runs(plan: Any, device: str, dtype: str, rows: int, T: int, N: int, backward: bool,
              hidden: int | None = None, statements: int = PARAGRU_STATEMENTS) -> str:
    """What `auto` runs at these sizes (the module's run-time rule, auto_scan.py): the pass's
    backend where the scan asked for one, else the cheapest prediction (``choose``)."""
    if plan.requested not in (None, "auto"):
        return plan.backend
    return choose(plan, device, dtype, CallSizes(rows, T, N, hidden, statements), backward)[0]


# GPU kinds: a stated roofline-style estimate, not calibrated (no GPU was measured). The step's
# FLOPs are taken as one per carried element per statement (the step's true arithmetic is the
# analyzer's, which the run time does not have), each strategy's FLOPs are then the analyzer's
# formulas (ncd/analysis/scan_costs.py), every FLOP elementwise at 12 bytes (two float32 reads,
# one write) except torch's fused cells (their N×N products are matmuls), and each kernel launch
# costs LAUNCH_S; time = launches·LAUNCH_S + max(FLOPs / vector peak, bytes / bandwidth), the
# backward pass twice the forward's.
LAUNCH_S = 5e-6
ROOFLINE_GPU = "h100"
GATES = {"rnn_tanh": 1, "rnn_relu": 1, "gru": 3, "lstm": 4}


def roofline(backend: str, plan: Any, rows: int, T: int, N: int, backward: bool, hidden: int | None = None,
             statements: int = PARAGRU_STATEMENTS, gpu: str = ROOFLINE_GPU) -> float:
    """Seconds on ``gpu`` by the stated, uncalibrated roofline above (float32)."""
    import sympy

    from ncd.analysis.scan_costs import NEWTON_ITERATIONS, scan_strategies
    from ncd.analysis.timing import gpu_spec

    spec = gpu_spec(gpu, "float32")
    structure = getattr(plan, "structure", "dense")
    strategies = scan_strategies(sympy.Integer(statements * rows * N), sympy.Integer(T), sympy.Integer(rows * N),
                                 sympy.Integer(rows), structure if structure != "gla" else "diagonal",
                                 getattr(plan, "block_size", None))
    log_t = math.log2(max(T, 2))
    if backend == "fused_rnn":
        size = hidden or N
        gates = GATES.get(getattr(getattr(plan, "cell", None), "cell", "gru"), 3)
        flops, launches = 2.0 * T * rows * gates * size * size, 2 * T
        compute = flops / spec["matmul_flops_per_s"]
        traffic = 4.0 * (gates * size * size + 3 * T * rows * gates * size)
    else:
        strategy = {"scan": "parallel_scan", "gla": "chunked", "delta": "chunked"}.get(backend, backend)
        flops = float(strategies[strategy]["flops"])
        launches = {"sequential": T * statements, "newton": NEWTON_ITERATIONS * (2 * statements + 2),
                    "scan": 2 * statements + 1, "fft": 2 * statements + math.ceil(N / max(T, 1)) + log_t + 6,
                    "gla": statements + 2, "delta": statements + 2}.get(backend, statements)
        compute, traffic = flops / spec["vector_flops_per_s"], 12.0 * flops
    seconds = launches * LAUNCH_S + max(compute, traffic / spec["bandwidth_bytes_per_s"])
    return 3 * seconds if backward else seconds


def roofline_predictions(plan: Any, rows: int, T: int, N: int, backward: bool, hidden: int | None = None,
                         statements: int = PARAGRU_STATEMENTS) -> dict[str, float | None]:
    """Each candidate's uncalibrated GPU estimate (None: no model of it, as on the CPU)."""
    return {b: None if _key(b, plan) is None else roofline(b, plan, rows, T, N, backward, hidden, statements)
            for b in candidates(plan)}
