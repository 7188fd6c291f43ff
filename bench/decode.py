"""Decoding one token with the step module: its cost at position 1k and at 16k (issue 16).

For each spec the full module prefills P positions of random input and returns its final state
(`return_state=True`); the step module (`module.step_module()`, the same weights) then advances
one position from that state, timed: the median of --repeats calls at each position, the two
positions interleaved call by call, no autograd. A scan carries a fixed-size state, so its step
costs the same at any position: the ratio 16k / 1k is about 1. The step's output is checked
against the full module run over P + 1 positions (max |diff|, float32).

    taskset -c 0 .venv/bin/python bench/decode.py [--positions 1024 16384] [--repeats 200]
    .venv/bin/python bench/decode.py --quick          # positions 64 and 256, a smoke run
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

import ncd

# spec, its sizes, the input width (a float input [B, T, width]); small layers, as a decoder's
# per-token cost on a CPU is dominated by fixed overheads at these sizes either way.
SPECS = {
    "gla": ("gla", {"D": 64, "H": 4, "K": 8, "V": 16, "R": 16}, 64),
    "deltanet": ("deltanet", {"D": 64, "H": 4, "K": 16, "V": 16}, 64),
    "paragru": ("paragru", {"E": 64, "D": 64, "H": 4}, 64),
    "lstm": ("lstm", {"E": 64, "D": 64}, 64),
}


def prefilled(name: str, positions: list[int]) -> tuple[object, list[tuple[torch.Tensor, dict]], float, int]:
    """The step module and, per position P, the next input and the full module's final state
    after P positions; the largest |step − full| at those positions; the state's element count."""
    spec, sizes, width = SPECS[name]
    torch.manual_seed(0)
    full = ncd.load(spec, **sizes)
    step = full.step_module()
    x = torch.randn(1, max(positions) + 1, width)
    at, gap = [], 0.0
    with torch.no_grad():
        reference = full(x)
        for p in positions:
            _, state = full(x[:, :p], return_state=True)
            out, _ = step(x[:, p], state=state)
            gap = max(gap, (out - reference[:, p]).abs().max().item())
            at.append((x[:, p], state))
    return step, at, gap, sum(v.numel() for v in at[0][1].values())


def timed(step, at: list[tuple[torch.Tensor, dict]], repeats: int) -> list[float]:
    """Median seconds per step at each position, the positions interleaved call by call so that
    a busy machine slows them alike."""
    times: list[list[float]] = [[] for _ in at]
    with torch.no_grad():
        for _ in range(5):  # warm-up
            for x, state in at:
                step(x, state=state)
        for _ in range(repeats):
            for i, (x, state) in enumerate(at):
                began = time.perf_counter()
                step(x, state=state)
                times[i].append(time.perf_counter() - began)
    return [statistics.median(t) for t in times]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--specs", nargs="*", default=list(SPECS), choices=list(SPECS))
    parser.add_argument("--positions", nargs=2, type=int, default=[1024, 16384])
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.positions, args.repeats = [64, 256], 20
    torch.set_num_threads(args.threads)
    lo, hi = args.positions
    print(f"torch {torch.__version__}, {args.threads} thread(s), batch 1, float32, median of {args.repeats} steps")
    print(f"{'spec':10} {'state':>6} {f'µs @ {lo}':>11} {f'µs @ {hi}':>11} {'ratio':>6} {'max |step - full|':>18}")
    for name in args.specs:
        step, at, gap, elements = prefilled(name, [lo, hi])
        t_lo, t_hi = timed(step, at, args.repeats)
        print(f"{name:10} {elements:6d} {t_lo * 1e6:11.1f} {t_hi * 1e6:11.1f} {t_hi / t_lo:6.2f} {gap:18.1e}")


if __name__ == "__main__":
    main()
