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
with separate constants for forward alone (no autograd graph) and forward+backward. The CPU
float32 constants were fitted by `bench/scan_auto.py --calibrate` (docs/benchmarks.md); other
device kinds and dtypes have no calibration, and there Newton stays what the pass chose.
"""
from __future__ import annotations

import math

# bench/scan_auto.py --calibrate (B 1, 8; T 128, 512; D 16, 128), 2026-12-02 00:25 UTC, this 2-core
# CPU under heavy load (8 sessions), one thread, float32
CPU: dict[str, dict[str, tuple[float, ...]]] = {
    "fwd": {"sequential": (0.0015, 0.0), "newton": (0.0, 0.0494, 4.86e-06, 0.0)},
    "fwd+bwd": {"sequential": (0.00349, 8.32e-06), "newton": (0.361, 0.0, 4.42e-06, 0.0)},
}
MODELS = {("cpu", "float32"): CPU}


def features(backend: str, rows: int, T: int, N: int) -> tuple[float, ...]:
    if backend == "sequential":
        return (float(T), float(T * rows * N))
    log_t = math.log2(max(T, 2))
    work = float(rows * T * N)
    return (1.0, log_t, work, work * log_t)


def predict(backend: str, device: str, dtype: str, rows: int, T: int, N: int, backward: bool) -> float | None:
    """Seconds, or None where this device kind and dtype have no calibrated model."""
    model = MODELS.get((device, dtype))
    if model is None:
        return None
    coefficients = model["fwd+bwd" if backward else "fwd"][backend]
    return sum(c * f for c, f in zip(coefficients, features(backend, rows, T, N)))


def cheaper(device: str, dtype: str, rows: int, T: int, N: int, backward: bool) -> tuple[str, dict[str, float]]:
    """The backend predicted fastest among sequential and newton, and every prediction; newton
    where the device kind and dtype have no model."""
    predictions = {b: predict(b, device, dtype, rows, T, N, backward) for b in ("sequential", "newton")}
    if any(p is None for p in predictions.values()):
        return "newton", {}
    known = {b: float(p) for b, p in predictions.items() if p is not None}
    return min(known, key=known.__getitem__), known
