"""The compiled leaky_rnn spec's sequential path against the same cell written by hand as a
PyTorch loop (what a user would write instead), forward+backward, same weights.

The hand loop hoists what a careful user hoists (τ = clamp(tau, 1), 1 − 1/τ, W ⊙ M, the input
projection for all t at once) and stacks the states at the end. Paired repeats, interleaved in
one process; the figure is the median of the per-repeat ratios. One thread by default.

    taskset -c 0 .venv/bin/python bench/leaky_loop.py [--sizes 8x256x500 ...] [--repeats 15]

--compile-steps [BACKEND]: also time the spec loaded with compile_steps (each step a
torch.compile graph, default backend inductor) beside the other two, after one untimed call
that compiles it (the compile time is printed apart).
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
import torch.nn.functional as F

import ncd


def hand_loop(m, x: torch.Tensor) -> torch.Tensor:
    """r_t = LeakyReLU((1 − 1/τ) r + (r (W ⊙ M) + b + x_t W_in + b_in) / τ), y_t = r_t W_out + b_out."""
    taus = torch.clamp(m.tau, min=1)
    keep = 1 - 1 / taus
    W = m.W * m.M
    u = x @ m.W_in + m.b_in
    r = x.new_zeros(x.shape[0], W.shape[1])
    outs = []
    for t in range(x.shape[1]):
        r = F.leaky_relu(keep * r + (r @ W + m.b + u[:, t]) / taus, 0.01)
        outs.append(r)
    return torch.stack(outs, 1) @ m.W_out + m.b_out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="*", default=["8x256x128", "8x256x500", "1x1024x64"], help="BxTxD")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--compile-steps", nargs="?", const="inductor", default=None, metavar="BACKEND")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s), median of {args.repeats} paired repeats, "
          f"load average {os.getloadavg()[0]:.1f}")
    extra = f" {'compiled ms':>11} {'ratio':>6}" if args.compile_steps else ""
    print(f"{'B x T x D':12} {'pass':8} {'ncd ms':>9} {'hand ms':>9} {'ratio':>6}{extra}")
    for size in args.sizes:
        B, T, D = (int(v) for v in size.split("x"))
        m = ncd.load("specs/leaky_rnn.ncd", block="LeakyRNN", T=T, E=3, D=D, C=2)
        x = torch.randn(B, T, 3)
        with torch.no_grad():
            torch.testing.assert_close(m(x), hand_loop(m, x), atol=1e-4, rtol=1e-4)
        compiled = None
        if args.compile_steps:
            compiled = ncd.load("specs/leaky_rnn.ncd", block="LeakyRNN", T=T, E=3, D=D, C=2,
                                compile_steps=args.compile_steps)
            compiled.load_state_dict(m.state_dict())
        for backward in (False, True):
            def run(fn):
                def once():
                    y = fn(x)
                    if backward:
                        y.sum().backward()
                return once

            sides = [run(m), run(lambda x: hand_loop(m, x))]
            if compiled is not None:
                start = time.perf_counter()
                run(compiled)()
                print(f"  compile_steps={args.compile_steps}: first {'fwd+bwd' if backward else 'fwd'} call "
                      f"(compiling) {time.perf_counter() - start:.1f} s", flush=True)
                sides.append(run(compiled))
            for side in sides:
                side()
            times: list[list[float]] = [[] for _ in sides]
            for _ in range(args.repeats):
                for side, acc in zip(sides, times):
                    start = time.perf_counter()
                    side()
                    acc.append(time.perf_counter() - start)
            ratio = statistics.median(a / b for a, b in zip(times[0], times[1]))
            line = (f"{size:12} {'fwd+bwd' if backward else 'fwd':8} {statistics.median(times[0]) * 1e3:9.2f} "
                    f"{statistics.median(times[1]) * 1e3:9.2f} {ratio:6.2f}")
            if compiled is not None:
                ratio_c = statistics.median(a / b for a, b in zip(times[2], times[1]))
                line += f" {statistics.median(times[2]) * 1e3:11.2f} {ratio_c:6.2f}"
            print(line, flush=True)


if __name__ == "__main__":
    main()
