"""Compiled lstm / gru / rnn_tanh / rnn_relu specs against torch.nn.LSTM / GRU / RNN, same weights.

Both sides run forward+backward (and forward alone) on the same input, weights copied from the
torch module with ``ncd.interop.load_torch``, interleaved in one process so machine load hits
both alike; the figure is the median of the ratios of paired repeats. One thread by default.

    taskset -c 0 .venv/bin/python bench/rnn_vs_torch.py [--sizes 8x256x64x128 ...] [--backend auto]
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

import ncd
from ncd.interop import load_torch

CELLS = {
    "lstm": lambda E, D: torch.nn.LSTM(E, D, batch_first=True),
    "gru": lambda E, D: torch.nn.GRU(E, D, batch_first=True),
    "rnn_tanh": lambda E, D: torch.nn.RNN(E, D, batch_first=True),
    "rnn_relu": lambda E, D: torch.nn.RNN(E, D, nonlinearity="relu", batch_first=True),
}


def _time(fn, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def measure(cell: str, B: int, T: int, E: int, D: int, backend: str, repeats: int, backward: bool) -> tuple[float, float, float]:
    """(median ncd seconds, median torch seconds, median of paired ratios)."""
    ref = CELLS[cell](E, D)
    compiled = ncd.load(f"specs/{cell}.ncd", scan_backend=backend, T=T, E=E, D=D)
    load_torch(compiled, ref)
    x = torch.randn(B, T, E)

    def run_ncd():
        xx = x.requires_grad_(backward)
        y = compiled(xx)
        if backward:
            y.sum().backward()

    def run_torch():
        xx = x.requires_grad_(backward)
        y = ref(xx)[0]
        if backward:
            y.sum().backward()

    for fn in (run_ncd, run_torch):  # warm up (oneDNN primitives, allocator)
        fn(), fn()
    ours, theirs = [], []
    for _ in range(repeats):
        ours += _time(run_ncd, 1)
        theirs += _time(run_torch, 1)
    ratios = [a / b for a, b in zip(ours, theirs)]
    return statistics.median(ours), statistics.median(theirs), statistics.median(ratios)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="*", default=["8x256x64x128", "1x512x32x64", "32x128x64x256"],
                        help="BxTxExD")
    parser.add_argument("--cells", nargs="*", default=list(CELLS))
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s), backend {args.backend}, median of {args.repeats}")
    print(f"{'cell':9} {'B x T x E x D':16} {'pass':8} {'ncd ms':>9} {'torch ms':>9} {'ratio':>6}")
    for size in args.sizes:
        B, T, E, D = (int(v) for v in size.split("x"))
        for cell in args.cells:
            for backward in (False, True):
                ours, theirs, ratio = measure(cell, B, T, E, D, args.backend, args.repeats, backward)
                print(f"{cell:9} {size:16} {'fwd+bwd' if backward else 'fwd':8} {ours * 1e3:9.2f} "
                      f"{theirs * 1e3:9.2f} {ratio:6.2f}", flush=True)


if __name__ == "__main__":
    main()
