"""Decoding one token with the step module: its cost at position 1k and at 16k (issue 16).

For each spec the full module prefills P positions of random input and returns its final state
(`return_state=True`); the step module (`module.step_module()`, the same weights) then advances
one position from that state, timed over --repeats calls at each position, the two positions
interleaved call by call, no autograd: the fastest call (what the work costs: a busy machine only
adds to it) and the median. A scan carries a fixed-size state, so its step
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


# A contrast: causal self-attention steps with a KV cache that grows with the position, so its
# step costs O(P). The full module returns no cache, so the cache is random keys and values of
# the cache's shape at P positions (the cost depends on the shape only); no step == full check.
CAUSAL = """
# One causal self-attention layer with a residual (the contrast row of bench/decode.py)
axis T, D = 64, H = 4, K = 16

block CausalAttention(x: [T, D]) -> [T, D] {
    param Wq, Wk, Wv: [D, H, K] init normal(0, D^-0.5)
    param Wo: [H, K, D] init normal(0, (H * K)^-0.5)
    q = x @[D] Wq
    k = (x @[D] Wk)[T as T']
    v = (x @[D] Wv)[T as T']
    a = softmax(where(idx(T') <= idx(T), q @[K] k / sqrt(K), -inf), over = T')
    return x + (a @[T'] v) @[H, K] Wo
}
"""


def cached(positions: list[int]) -> tuple[object, list[tuple[torch.Tensor, dict]], float, int]:
    """``prefilled`` for the attention layer: random caches of each position's length."""
    torch.manual_seed(0)
    step = ncd.load(CAUSAL).step_module()
    at = []
    for p in positions:
        state = {name: torch.randn(1, p, *shape[1:]) for name, (_, shape) in step.state_spec().items()}
        at.append((torch.randn(1, 64), state))
    return step, at, float("nan"), sum(v.numel() for v in at[0][1].values())


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


def timed(step, at: list[tuple[torch.Tensor, dict]], repeats: int) -> list[list[float]]:
    """Seconds per step at each position, every call, the positions interleaved call by call so
    that a busy machine slows them alike."""
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
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--specs", nargs="*", default=[*SPECS, "attention"], choices=[*SPECS, "attention"])
    parser.add_argument("--positions", nargs=2, type=int, default=[1024, 16384])
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.positions, args.repeats = [64, 256], 20
    torch.set_num_threads(args.threads)
    lo, hi = args.positions
    print(f"torch {torch.__version__}, {args.threads} thread(s), batch 1, float32, "
          f"{args.repeats} steps at each position")
    print("best = the fastest call (what the work costs; load only adds), median = the typical call")
    print(f"{'spec':10} {'state@lo':>8} {f'best µs @ {lo}':>16} {f'best µs @ {hi}':>16} {'ratio':>6} "
          f"{f'median @ {lo}':>14} {f'median @ {hi}':>14} {'ratio':>6} {'max |step - full|':>18}")
    for name in args.specs:
        step, at, gap, elements = cached([lo, hi]) if name == "attention" else prefilled(name, [lo, hi])
        t_lo, t_hi = timed(step, at, args.repeats)
        best = [min(t_lo) * 1e6, min(t_hi) * 1e6]
        mid = [statistics.median(t_lo) * 1e6, statistics.median(t_hi) * 1e6]
        print(f"{name:10} {elements:8d} {best[0]:16.1f} {best[1]:16.1f} {best[1] / best[0]:6.2f} "
              f"{mid[0]:14.1f} {mid[1]:14.1f} {mid[1] / mid[0]:6.2f} {gap:18.1e}")


if __name__ == "__main__":
    main()
