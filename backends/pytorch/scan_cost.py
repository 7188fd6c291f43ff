"""Predicted run time of a scan under each backend `auto` may pick between at run time, per
device kind, from the sizes of the call at hand (batch rows, steps T, state size N).

The recurrence pass picks Newton for a nonlinear step elementwise in the state, but whether
Newton beats the loop depends on sizes the pass does not know (the batch is lifted, T is often
free): on a CPU, forward, a batch of 8 at N = 128 makes Newton several times slower than the
loop, while at batch 1, T = 4096, forward+backward it is an order of magnitude faster. So when
`auto` chose Newton, the runner asks this model before each call and runs the sequential loop
where that is predicted cheaper (`--explain` says so; the call records what ran).

Models (seconds), with w = rows·T·N the elements of the state sequence:
    sequential: T·(a₀ + a₁·rows·N)                       (per-step dispatch, then work)
    newton:     b₀ + b₁·log₂T + b₂·w + b₃·w·log₂T          (iterations × evaluations and
                                                          log-depth scans over all steps)
    fused_rnn:  T·(c₀ + c₁·rows·N²)                       (torch's fused RNN operator: a
                                                          per-step cost, then the N×N
                                                          recurrent products per row; one
                                                          model per cell, whose kernels differ)
with separate constants for forward alone (no autograd graph) and forward+backward. The CPU
float32 constants were fitted by `bench/scan_auto.py --calibrate` (sequential and newton, on
paragru) and `--calibrate-fused` (fused_rnn, on rnn_tanh, gru and lstm) (docs/benchmarks.md).
Newton's model holds for an elementwise (diagonal or block) step; a dense one needs N
Jacobian-vector products per step and has no model. Other backends (scan, fft, gla, delta),
other device kinds and other dtypes have no calibration: there the pass's class-based choice
stands, and `--explain` says "no model".
"""
from __future__ import annotations

import math
from typing import Any

from ncd import scan_backends

# bench/scan_auto.py --calibrate (B 1, 8; T 128, 512; D 16, 128; median of 3 interleaved repeats; fitted
# with a load factor per point), 2026-12-02 03:00 UTC, this 2-core CPU under heavy load (8 sessions, load
# average 11-13), one thread, float32
CPU: dict[str, dict[str, tuple[float, ...]]] = {
    "fwd": {"sequential": (0.00127, 4.5e-07), "newton": (0.419, 0.00118, 2.32e-07, 5.52e-07),
            # bench/scan_auto.py --calibrate-fused (B 1, 8; T 128, 512; D 32, 128), 2026-12-02 02:40 UTC, loaded
            "fused_rnn.rnn_tanh": (1.36e-05, 2.38e-09), "fused_rnn.gru": (6.52e-05, 6.28e-09),
            "fused_rnn.lstm": (1.93e-05, 1.45e-09)},
    "fwd+bwd": {"sequential": (0.00714, 0.0), "newton": (1.04, 0.0, 5.52e-07, 0.0),
                "fused_rnn.rnn_tanh": (0.000259, 8.59e-09), "fused_rnn.gru": (0.000898, 2.34e-08),
                "fused_rnn.lstm": (2.83e-05, 6.5e-09)},
}
MODELS = {("cpu", "float32"): CPU}
DEVICE_KINDS = ("cpu", "cuda")  # what --explain predicts for (float32)
# fused_rnn's models are per cell ("fused_rnn.gru"); rnn_relu runs rnn_tanh's kernel
FUSED_MODEL = {"rnn_tanh": "rnn_tanh", "rnn_relu": "rnn_tanh", "gru": "gru", "lstm": "lstm"}


def features(backend: str, rows: int, T: int, N: int) -> tuple[float, ...]:
    if backend == "sequential":
        return (float(T), float(T * rows * N))
    if backend.startswith("fused_rnn"):
        return (float(T), float(T * rows * N * N))
    log_t = math.log2(max(T, 2))
    work = float(rows * T * N)
    return (1.0, log_t, work, work * log_t)


def predict(backend: str, device: str, dtype: str, rows: int, T: int, N: int, backward: bool) -> float | None:
    """Seconds, or None where this backend (``fused_rnn.<cell>`` for torch's operator), device
    kind and dtype have no calibrated model."""
    model = MODELS.get((device, dtype))
    if model is None:
        return None
    coefficients = model["fwd+bwd" if backward else "fwd"].get(backend)
    if coefficients is None:
        return None
    return sum(c * f for c, f in zip(coefficients, features(backend, rows, T, N)))


def cheaper(device: str, dtype: str, rows: int, T: int, N: int, backward: bool) -> tuple[str, dict[str, float]]:
    """The backend predicted fastest among sequential and newton, and every prediction; newton
    where the device kind and dtype have no model."""
    predictions = {b: predict(b, device, dtype, rows, T, N, backward) for b in ("sequential", "newton")}
    if any(p is None for p in predictions.values()):
        return "newton", {}
    known = {b: float(p) for b, p in predictions.items() if p is not None}
    return min(known, key=known.__getitem__), known


def candidates(plan: scan_backends.PlanLike) -> list[str]:
    """Every backend that can run this plan (the registry's admission rules), in its order."""
    return [name for name, backend in scan_backends.BACKENDS.items() if backend.admits(plan) is None]


def plan_predictions(plan: Any, device: str, dtype: str, rows: int, T: int, N: int,
                     backward: bool, hidden: int | None = None) -> dict[str, float | None]:
    """Each candidate backend's predicted seconds for this plan (None: no model for it here).
    ``N``: the carried elements per row (every carry); ``hidden``: a fused cell's hidden size."""
    out: dict[str, float | None] = {}
    for backend in candidates(plan):
        if backend == "newton" and plan.structure not in ("diagonal", "block"):
            out[backend] = None  # a dense Jacobian: N JVPs per step, not what was calibrated
        elif backend == "fused_rnn":
            out[backend] = predict(f"fused_rnn.{FUSED_MODEL[plan.cell.cell]}", device, dtype, rows, T,
                                   hidden or N, backward)
        else:
            out[backend] = predict(backend, device, dtype, rows, T, N, backward)
    return out


def auto_runs(plan: Any, device: str, dtype: str, rows: int, T: int, N: int, backward: bool) -> str:
    """What `auto` runs at these sizes: the pass's backend, or the loop where the pass chose
    Newton and the loop is predicted cheaper (the module's run-time rule, module.py)."""
    if plan.backend == "newton" and plan.requested in (None, "auto"):
        return cheaper(device, dtype, rows, T, N, backward)[0]
    return plan.backend
