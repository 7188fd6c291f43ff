"""`auto` against the fastest backend on the CPU: calibrate the cost model, then check it.

--calibrate: time paragru's sequential loop and Newton on a calibration grid (forward under
no_grad, and forward+backward), fit the models of backends/pytorch/scan_cost.py by
least squares on relative error (non-negative coefficients; with a load factor per point,
``fit_with_load``, on the wall clock), and print the constants and each model's residual to paste into CPU there (``--from-log FILE``
refits from an earlier run's printed times).
--calibrate-fused: the same for fused_rnn (torch's fused RNN operator), one model per cell,
timing the compiled `rnn_tanh`, `gru` and `lstm` specs (auto runs them as fused_rnn).
--calibrate-linear: the same for the linear backends, each timed beside its own spec's
sequential loop (and Newton where it applies): scan on mamba_negeig, fft on lssl, gla on gla,
delta on deltanet; prints the constants of every backend (the loop's are printed for
comparison: the pasted ones stay paragru's).
--table-linear: the evaluation table for the linear specs (mamba_negeig, gla): every backend
auto may pick between for the scan, and auto itself.
--table (default): on an evaluation grid (B, T, D, fwd / fwd+bwd), time sequential, newton
and auto (what the module runs when left to choose), and print a markdown table: each
backend's median, the fastest, auto's choice (what the auto module ran: the model's cheapest,
or, where candidates were predicted within 2x, the one it timed fastest on its first call), the
chosen backend's time over the fastest and the auto module's own time over the fastest.

The machine this runs on is shared, so every timing is interleaved: one repeat runs each side
once, in turn, and the figures are medians over repeats (the load drifts between repeats, not
between the sides of one). With one thread (the default) the clock is the process's CPU time
(``--clock cpu``, the clock auto itself times with: other processes' time slices do not enter
it); ``--clock wall`` times the wall clock (what a quiet machine shows; use it there, or with
``--threads`` above 1).

    taskset -c 0 .venv/bin/python bench/scan_auto.py --calibrate
    taskset -c 0 .venv/bin/python bench/scan_auto.py --calibrate-fused
    taskset -c 0 .venv/bin/python bench/scan_auto.py --calibrate-linear
    taskset -c 0 .venv/bin/python bench/scan_auto.py --table
    taskset -c 0 .venv/bin/python bench/scan_auto.py --table-linear
    taskset -c 0 .venv/bin/python bench/scan_auto.py --grid --repeats 5   # both tables, one summary
"""
from __future__ import annotations

import argparse
import itertools
import math
import os
import statistics
import time
from collections.abc import Callable

import torch

import ncd
from ncd.backends.pytorch import auto_scan, scan_cost

E = 32
BACKENDS = ("sequential", "newton", "auto")
CELLS = ("rnn_tanh", "gru", "lstm")


def modules(D: int) -> dict[str, torch.nn.Module]:
    out = {}
    for backend in BACKENDS:
        torch.manual_seed(0)
        out[backend] = ncd.load("specs/paragru.ncd", scan_backend=backend, E=E, D=D, H=4)
    for m in out.values():
        m.load_state_dict(out["sequential"].state_dict())
    return out


def runner(m: torch.nn.Module, x: torch.Tensor, backward: bool) -> Callable[[], None]:
    def once() -> None:
        if backward:
            m(x).sum().backward()
        else:
            with torch.no_grad():
                m(x)

    return once


CLOCK: Callable[[], float] = time.process_time  # main() sets it from --clock


def interleaved(runs: dict[str, Callable[[], None]], repeats: int) -> dict[str, float]:
    """Median seconds of each run, the runs taking turns within every repeat (one warm-up each)."""
    for run in runs.values():
        run()
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            start = CLOCK()
            run()
            times[name].append(CLOCK() - start)
    return {name: statistics.median(ts) for name, ts in times.items()}


def fit(rows: list[tuple[tuple[float, ...], float]]) -> tuple[float, ...]:
    """Non-negative least squares on relative error: drop negative coefficients and refit."""
    n = len(rows[0][0])
    active = list(range(n))
    while True:
        A = torch.tensor([[f[i] / t for i in active] for f, t in rows], dtype=torch.float64)
        b = torch.ones(len(rows), dtype=torch.float64)
        sol = torch.linalg.lstsq(A, b.unsqueeze(1)).solution.squeeze(1).tolist()
        if all(c >= 0 for c in sol):
            out = [0.0] * n
            for i, c in zip(active, sol):
                out[i] = c
            return tuple(out)
        active = [i for i, c in zip(active, sol) if c >= 0]


def fit_with_load(points: list[dict[str, tuple[tuple[float, ...], float]]],
                  backends: tuple[str, ...]) -> dict[str, tuple[float, ...]]:
    """Fit each backend's model when every point's times carry a common factor of their own.

    The backends of one point are timed interleaved, so they share that moment's load; between
    points the load drifts (by 2x on the shared machine). Model: t[p, b] = L[p] · f_b(p), with
    L[p] the point's load factor (geometric mean 1). Alternate: fit each f_b to t / L by ``fit``,
    then set L[p] to the geometric mean of t[p, b] / f_b(p) over the backends; a few rounds.
    """
    load = [1.0] * len(points)
    constants: dict[str, tuple[float, ...]] = {}
    for _ in range(20):
        constants = {b: fit([(p[b][0], p[b][1] / load[i]) for i, p in enumerate(points)]) for b in backends}
        ratios = []
        for p in points:
            logs = [math.log(p[b][1] / max(sum(c * f for c, f in zip(constants[b], p[b][0])), 1e-12))
                    for b in backends]
            ratios.append(sum(logs) / len(logs))
        mean = sum(ratios) / len(ratios)
        load = [math.exp(r - mean) for r in ratios]
    return constants


def residual(points: list[dict[str, tuple[tuple[float, ...], float]]], backend: str,
             constants: tuple[float, ...]) -> float:
    """Root mean square of log(measured / predicted) over the points: the model's error, which
    sets how close two predictions must be for auto to time them (scan_cost.RESIDUALS)."""
    logs = [math.log(p[backend][1] / max(sum(c * f for c, f in zip(constants, p[backend][0])), 1e-12))
            for p in points]
    return math.sqrt(sum(x * x for x in logs) / len(logs))


def _print_constants(samples: dict[str, list[dict]], backends: tuple[str, ...]) -> None:
    """The fitted constants and each model's residual. On the CPU clock the plain fit (other
    processes' time slices are not in the times); on the wall clock with a load factor per point."""
    constants = {mode: fit_with_load(samples[mode], backends) if CLOCK is time.perf_counter
                 else {b: fit([p[b] for p in samples[mode]]) for b in backends} for mode in ("fwd", "fwd+bwd")}
    print("CPU =", {m: {b: tuple(float(f"{c:.3g}") for c in cs) for b, cs in v.items()} for m, v in constants.items()})
    print("RESIDUALS =", {m: {b: round(residual(samples[m], b, cs), 2) for b, cs in v.items()}
                          for m, v in constants.items()})


def calibrate(repeats: int, log: str | None = None) -> None:
    samples: dict[str, list[dict]] = {"fwd": [], "fwd+bwd": []}
    if log is not None:  # refit from an earlier run's printed times (lines "B1 T128 D16 fwd newton: 1.2 ms")
        found: dict[tuple, dict] = {}
        for line in open(log):
            parts = line.replace(":", "").split()
            if len(parts) == 7 and parts[0][0] == "B" and parts[4] in ("sequential", "newton"):
                B, T, D = int(parts[0][1:]), int(parts[1][1:]), int(parts[2][1:])
                point = found.setdefault((B, T, D, parts[3]), {})
                point[parts[4]] = (scan_cost.features(parts[4], B, T, D), float(parts[5]) / 1e3)
        for (_, _, _, mode), point in found.items():
            samples[mode].append(point)
        return _print_constants(samples, ("sequential", "newton"))
    for B, T, D in itertools.product((1, 8), (32, 128, 512), (16, 128)):
        ms = modules(D)
        x = torch.randn(B, T, E)
        for backward in (False, True):
            mode = "fwd+bwd" if backward else "fwd"
            times = interleaved({b: runner(ms[b], x, backward) for b in ("sequential", "newton")}, repeats)
            samples[mode].append({b: (scan_cost.features(b, B, T, D), t) for b, t in times.items()})
            for backend, t in times.items():
                print(f"B{B} T{T} D{D} {mode} {backend}: {t * 1e3:.2f} ms", flush=True)
    _print_constants(samples, ("sequential", "newton"))


def calibrate_fused(repeats: int) -> None:
    """One model per cell: torch's operator runs each on its own kernels (their per-step costs differ)."""
    samples: dict[str, list[dict]] = {"fwd": [], "fwd+bwd": []}
    for B, T, D in itertools.product((1, 8), (128, 512), (32, 128)):
        ms = {cell: ncd.load(f"specs/{cell}.ncd", E=E, D=D) for cell in CELLS}
        assert all(m.scan_plans[0].backend == "fused_rnn" for m in ms.values())
        x = torch.randn(B, T, E)
        for backward in (False, True):
            mode = "fwd+bwd" if backward else "fwd"
            times = interleaved({cell: runner(m, x, backward) for cell, m in ms.items()}, repeats)
            samples[mode].append({f"fused_rnn.{cell}": (scan_cost.features("fused_rnn", B, T, D), t)
                                  for cell, t in times.items()})
            for cell, t in times.items():
                print(f"{cell} B{B} T{T} D{D} {mode}: {t * 1e3:.2f} ms", flush=True)
    _print_constants(samples, tuple(f"fused_rnn.{cell}" for cell in CELLS))


# spec: (input width axis, the size variants {name: sizes}, backends to time beside each other, the
# calibration's T: short, where the loop and the parallel backends cross, the loop slow beyond)
LINEAR: dict[str, tuple[str, dict[str, dict[str, int]], tuple[str, ...], tuple[int, ...]]] = {
    "mamba_negeig": ("D", {"D16": {"D": 16, "N": 8}, "D64": {"D": 64, "N": 8}}, ("sequential", "newton", "scan"),
                     (16, 64, 256)),
    "lssl": ("H", {"H4": {"H": 4, "N": 16}, "H16": {"H": 16, "N": 16}}, ("sequential", "fft"), (16, 64)),
    "gla": ("D", {"D64": {"D": 64, "H": 4, "K": 8, "V": 16}, "D128": {"D": 128, "H": 4, "K": 16, "V": 32}},
            ("sequential", "scan", "gla"), (16, 64, 256)),
    "deltanet": ("D", {"D64": {"D": 64, "H": 2, "K": 32, "V": 32}, "D128": {"D": 128, "H": 4, "K": 32, "V": 32}},
                 ("sequential", "delta"), (16, 64, 256)),
}


def spec_modules(spec: str, sizes: dict[str, int], backends: tuple[str, ...]) -> dict[str, torch.nn.Module]:
    """The spec under each backend (and ``auto``), with the same weights."""
    out = {}
    for backend in backends:
        torch.manual_seed(0)
        out[backend] = ncd.load(f"specs/{spec}.ncd", scan_backend=backend, **sizes)
    for m in out.values():
        m.load_state_dict(out[backends[0]].state_dict())
    return out


def scan_of(m: torch.nn.Module) -> auto_scan.AutoScan | None:
    """The module's one scan under auto (a sub-block's included)."""
    found = auto_scan.auto_scans(m)
    return found[0] if found else None


def call_features(m: torch.nn.Module, x: torch.Tensor, backward: bool) -> dict[str, tuple[float, ...]]:
    """Each timed backend's model terms at this call: the sizes the auto module's scan reads."""
    scan = scan_of(m)
    assert scan is not None, "auto does not choose for this scan"
    seen: list[tuple] = []
    original = scan.choice

    def record(key, *call):  # the call's (device, dtype, rows, T, N, grad) as auto sees it
        seen.append(key)
        return original(key, *call)

    scan.choice = record  # type: ignore[method-assign]
    runner(m, x, backward)()
    scan.choice = original  # type: ignore[method-assign]
    _, _, rows, T, N, _ = seen[0]
    return {b: scan_cost.features(scan_cost._key(b, scan.loop.plan) or b, rows, T, N, scan.statements)
            for b in scan_cost.switchable(scan.loop.plan)}


def calibrate_linear(repeats: int, specs: list[str], log: str | None = None) -> None:
    """Each spec's backends timed side by side; the constants are fitted per model key
    (``sequential.linear``, ``newton.linear``, ``scan``, ...). ``log``: refit from a run's output."""
    logged: dict[tuple, float] = {}
    if log is not None:  # lines "mamba_negeig D16 B1 T16 fwd sequential: 11.62 ms"
        for line in open(log):
            parts = line.replace(":", "").split()
            if len(parts) == 8 and parts[0] in LINEAR and parts[7] == "ms":
                logged[(parts[0], parts[1], int(parts[2][1:]), int(parts[3][1:]), parts[4], parts[5])] = \
                    float(parts[6]) / 1e3
    for spec in specs:
        width, variants, backends, lengths = LINEAR[spec]
        samples: dict[str, list[dict]] = {"fwd": [], "fwd+bwd": []}
        keys: tuple[str, ...] = ()
        for (name, sizes), B, T in itertools.product(variants.items(), (1, 8), lengths):
            ms = spec_modules(spec, sizes, ("auto",) if log else (*backends, "auto"))
            plan = scan_of(ms["auto"]).loop.plan
            key = {b: scan_cost._key(b, plan) or b for b in backends}
            keys = tuple(key[b] for b in backends)
            x = torch.randn(B, T, sizes[width])
            for backward in (False, True):
                mode = "fwd+bwd" if backward else "fwd"
                feats = call_features(ms["auto"], x, backward)
                if log is not None:
                    times = {b: logged[(spec, name, B, T, mode, b)] for b in backends}
                else:
                    times = interleaved({b: runner(ms[b], x, backward) for b in backends}, repeats)
                samples[mode].append({key[b]: (feats[b], t) for b, t in times.items()})
                for backend, t in times.items():
                    if log is None:
                        print(f"{spec} {name} B{B} T{T} {mode} {backend}: {t * 1e3:.2f} ms", flush=True)
        print(spec, end=" ")
        _print_constants(samples, keys)


def table_linear(repeats: int, specs: list[str], lengths: tuple[int, ...] = (16, 128, 1024)) -> tuple[int, int]:
    print(f"load average at start {os.getloadavg()[0]:.1f}; medians of {repeats} interleaved repeats")
    within = auto_within = total = 0
    for spec in specs:
        width, variants, _, _ = LINEAR[spec]
        print(f"\n{spec}\n")
        for (name, sizes), B, T in itertools.product(variants.items(), (1, 8), lengths):
            probe = ncd.load(f"specs/{spec}.ncd", **sizes)
            scan = scan_of(probe)
            backends = tuple(scan_cost.switchable(scan.loop.plan))
            if name == next(iter(variants)) and B == 1 and T == lengths[0]:
                print("| sizes | B | T | pass | " + " | ".join(f"{b} ms" for b in backends)
                      + " | fastest | auto runs | chosen / fastest | auto ms | auto / fastest |")
                print("|---" * (len(backends) + 9) + "|")
            ms = spec_modules(spec, sizes, (*backends, "auto"))
            x = torch.randn(B, T, sizes[width])
            for backward in (False, True):
                times = interleaved({b: runner(ms[b], x, backward) for b in (*backends, "auto")}, repeats)
                fastest = min(backends, key=times.__getitem__)
                choice = scan_of(ms["auto"]).ran
                chosen, auto = times[choice] / times[fastest], times["auto"] / times[fastest]
                total += 1
                within += chosen <= 1.1
                auto_within += auto <= 1.1
                cells = " | ".join(f"{times[b] * 1e3:.1f}" for b in backends)
                print(f"| {name} | {B} | {T} | {'fwd+bwd' if backward else 'fwd'} | {cells} | {fastest} | {choice} "
                      f"| {chosen:.2f} | {times['auto'] * 1e3:.1f} | {auto:.2f} |", flush=True)
    print(f"\nthe chosen backend within 1.1x of the fastest at {within} of {total} points; "
          f"the auto module's own time at {auto_within} of {total}; load average at end {os.getloadavg()[0]:.1f}")
    return within, total


def table(repeats: int) -> tuple[int, int]:
    print(f"load average at start {os.getloadavg()[0]:.1f}; medians of {repeats} interleaved repeats")
    print("| B | T | D | pass | sequential ms | newton ms | fastest | auto runs | chosen / fastest "
          "| auto ms | auto / fastest |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    chosen_within = auto_within = total = 0
    points = [*itertools.product((1, 8), (256, 1024), (32, 128)), (8, 256, 128), (1, 4096, 128), (1, 64, 32)]
    for B, T, D in points:
        ms = modules(D)
        x = torch.randn(B, T, E)
        for backward in (False, True):
            times = interleaved({b: runner(ms[b], x, backward) for b in BACKENDS}, repeats)
            fastest = min(("sequential", "newton"), key=times.__getitem__)
            choice = scan_of(ms["auto"]).ran  # the model's choice, or the measured one where it is close
            chosen, auto = times[choice] / times[fastest], times["auto"] / times[fastest]
            total += 1
            chosen_within += chosen <= 1.1
            auto_within += auto <= 1.1
            print(f"| {B} | {T} | {D} | {'fwd+bwd' if backward else 'fwd'} | {times['sequential'] * 1e3:.1f} | "
                  f"{times['newton'] * 1e3:.1f} | {fastest} | {choice} | {chosen:.2f} | {times['auto'] * 1e3:.1f} "
                  f"| {auto:.2f} |", flush=True)
    print(f"\nthe chosen backend within 1.1x of the fastest at {chosen_within} of {total} points; "
          f"the auto module's own time at {auto_within} of {total}; load average at end {os.getloadavg()[0]:.1f}")
    return chosen_within, total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calibrate", action="store_true")
    parser.add_argument("--calibrate-fused", action="store_true")
    parser.add_argument("--from-log", metavar="FILE", help="with --calibrate or --calibrate-linear: refit from an earlier run's output")
    parser.add_argument("--calibrate-linear", action="store_true")
    parser.add_argument("--table", action="store_true", help="the evaluation table (the default)")
    parser.add_argument("--table-linear", action="store_true")
    parser.add_argument("--grid", action="store_true", help="both tables (paragru, then the linear specs) and one summary")
    parser.add_argument("--specs", nargs="+", default=None, help="with --calibrate-linear / --table-linear")
    parser.add_argument("--lengths", nargs="+", type=int, default=[16, 128, 1024], help="with --table-linear: T")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--clock", choices=("cpu", "wall"), default=None,
                        help="process CPU time (the default on one thread) or the wall clock (the default on several)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    global CLOCK
    CLOCK = time.process_time if (args.clock or ("cpu" if args.threads == 1 else "wall")) == "cpu" else time.perf_counter
    print(f"clock: {'process CPU time' if CLOCK is time.process_time else 'wall'}; threads {args.threads}")
    if args.calibrate:
        calibrate(args.repeats, args.from_log)
    elif args.calibrate_fused:
        calibrate_fused(args.repeats)
    elif args.calibrate_linear:
        calibrate_linear(args.repeats, args.specs or list(LINEAR), args.from_log)
    elif args.grid:
        counts = [table(args.repeats), table_linear(args.repeats, args.specs or ["mamba_negeig", "gla"],
                                                    tuple(args.lengths))]
        print(f"\ngrid: the chosen backend within 1.1x of the fastest at {sum(c[0] for c in counts)} of "
              f"{sum(c[1] for c in counts)} points (paragru {counts[0][0]}/{counts[0][1]}, "
              f"linear {counts[1][0]}/{counts[1][1]})")
    elif args.table_linear:
        table_linear(args.repeats, args.specs or ["mamba_negeig", "gla"], tuple(args.lengths))
    else:
        table(args.repeats)


if __name__ == "__main__":
    main()
