"""The compiled leaky_rnn spec's sequential path against the same cell written by hand as a
PyTorch loop (what a user would write instead), forward+backward, same weights.

The hand loop hoists what a careful user hoists (τ = clamp(tau, 1), 1 − 1/τ, W ⊙ M, the input
projection for all t at once) and stacks the states at the end. Paired repeats, interleaved in
one process; the figure is the median of the per-repeat ratios. One thread by default.

    taskset -c 0 .venv/bin/python bench/leaky_loop.py [--sizes 8x256x500 ...] [--repeats 15]
"""
from __future__ import annotations

import argparse
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
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s), median of {args.repeats} paired repeats")
    print(f"{'B x T x D':12} {'pass':8} {'ncd ms':>9} {'hand ms':>9} {'ratio':>6}")
    for size in args.sizes:
        B, T, D = (int(v) for v in size.split("x"))
        m = ncd.load("specs/leaky_rnn.ncd", block="LeakyRNN", T=T, E=3, D=D, C=2)
        x = torch.randn(B, T, 3)
        with torch.no_grad():
            torch.testing.assert_close(m(x), hand_loop(m, x), atol=1e-4, rtol=1e-4)
        for backward in (False, True):
            def ours():
                y = m(x)
                if backward:
                    y.sum().backward()

            def theirs():
                y = hand_loop(m, x)
                if backward:
                    y.sum().backward()

            ours(), theirs()
            a, b = [], []
            for _ in range(args.repeats):
                for fn, acc in ((ours, a), (theirs, b)):
                    start = time.perf_counter()
                    fn()
                    acc.append(time.perf_counter() - start)
            ratio = statistics.median(x / y for x, y in zip(a, b))
            print(f"{size:12} {'fwd+bwd' if backward else 'fwd':8} {statistics.median(a) * 1e3:9.2f} "
                  f"{statistics.median(b) * 1e3:9.2f} {ratio:6.2f}", flush=True)


if __name__ == "__main__":
    main()
