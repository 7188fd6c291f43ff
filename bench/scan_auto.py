"""`auto` against the fastest backend for paragru on the CPU: calibrate the cost model, then check it.

--calibrate: time paragru's sequential loop and Newton on a calibration grid (forward under
no_grad, and forward+backward), fit the models of ncd/backends/pytorch/scan_cost.py by
least squares on relative error (non-negative coefficients), and print the constants to paste
into CPU there.
--table (default): on an evaluation grid (B, T, D, fwd / fwd+bwd), time sequential, newton
and auto (what the module runs when left to choose), and print a markdown table: each
backend's median, the fastest, auto's choice and auto's time over the fastest.

    taskset -c 0 .venv/bin/python bench/scan_auto.py --calibrate
    taskset -c 0 .venv/bin/python bench/scan_auto.py --table
"""
from __future__ import annotations

import argparse
import itertools
import statistics
import time

import torch

import ncd
from ncd.backends.pytorch import scan_cost

E = 32


def modules(D: int) -> dict[str, torch.nn.Module]:
    out = {}
    for backend in ("sequential", "newton", "auto"):
        torch.manual_seed(0)
        out[backend] = ncd.load("specs/paragru.ncd", scan_backend=backend, E=E, D=D, H=4)
    for m in out.values():
        m.load_state_dict(out["sequential"].state_dict())
    return out


def timed(m: torch.nn.Module, x: torch.Tensor, backward: bool, repeats: int) -> float:
    def once() -> None:
        if backward:
            m(x).sum().backward()
        else:
            with torch.no_grad():
                m(x)

    once()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        once()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


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


def calibrate(repeats: int) -> None:
    samples: dict[tuple[str, str], list] = {}
    for B, T, D in itertools.product((1, 8), (128, 512), (16, 128)):
        ms = modules(D)
        x = torch.randn(B, T, E)
        for backward in (False, True):
            mode = "fwd+bwd" if backward else "fwd"
            for backend in ("sequential", "newton"):
                t = timed(ms[backend], x, backward, repeats)
                samples.setdefault((mode, backend), []).append((scan_cost.features(backend, B, T, D), t))
                print(f"B{B} T{T} D{D} {mode} {backend}: {t * 1e3:.2f} ms", flush=True)
    constants = {mode: {b: fit(samples[(mode, b)]) for b in ("sequential", "newton")} for mode in ("fwd", "fwd+bwd")}
    print("CPU =", {m: {b: tuple(float(f"{c:.3g}") for c in cs) for b, cs in v.items()} for m, v in constants.items()})


def table(repeats: int) -> None:
    print("| B | T | D | pass | sequential ms | newton ms | fastest | auto runs | auto ms | auto / fastest |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    within = total = 0
    points = [*itertools.product((1, 8), (256, 1024), (32, 128)), (8, 256, 128), (1, 4096, 128)]
    for B, T, D in points:
        ms = modules(D)
        x = torch.randn(B, T, E)
        for backward in (False, True):
            times = {b: timed(ms[b], x, backward, repeats) for b in ("sequential", "newton", "auto")}
            fastest = min(("sequential", "newton"), key=times.__getitem__)
            choice, _ = scan_cost.cheaper("cpu", "float32", B, T, D, backward)
            ratio = times["auto"] / times[fastest]
            total += 1
            within += ratio <= 1.1
            print(f"| {B} | {T} | {D} | {'fwd+bwd' if backward else 'fwd'} | {times['sequential'] * 1e3:.1f} | "
                  f"{times['newton'] * 1e3:.1f} | {fastest} | {choice} | {times['auto'] * 1e3:.1f} | {ratio:.2f} |",
                  flush=True)
    print(f"\nauto within 1.1x of the fastest at {within} of {total} points")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calibrate", action="store_true")
    parser.add_argument("--table", action="store_true", help="the evaluation table (the default)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    calibrate(args.repeats) if args.calibrate else table(args.repeats)


if __name__ == "__main__":
    main()
