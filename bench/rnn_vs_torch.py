"""Compiled lstm / gru / rnn_tanh / rnn_relu specs against torch.nn.LSTM / GRU / RNN, same weights.

Both sides run forward+backward (and forward alone) on the same input, weights copied from the
torch module with ``ncd.interop.load_torch``, interleaved in one process so machine load hits
both alike; the figure is the median of the ratios of paired repeats. One thread by default.
``--emitted`` adds the spec's emitted Python (``ncd compile``, which calls the same operator) as
a third side; ``--no-grad`` runs the forward pass under ``torch.no_grad()`` (inference), not
with the weights' graph recorded. The default sizes include small ones (B1 T32), where the
per-call cost around torch's operator shows most. ``--clock cpu`` times with the process's CPU
time instead of the wall clock: on a loaded machine the wall time of a millisecond call is
mostly waiting for a core, which the CPU time leaves out (one torch thread: the backward runs
on the calling thread too).

    taskset -c 0 .venv/bin/python bench/rnn_vs_torch.py [--sizes 8x256x64x128 ...] [--backend auto]
"""
from __future__ import annotations

import argparse
import importlib.util
import statistics
import tempfile
import time
from pathlib import Path

import torch

import ncd
from ncd.interop import load_torch

CELLS = {
    "lstm": lambda E, D: torch.nn.LSTM(E, D, batch_first=True),
    "gru": lambda E, D: torch.nn.GRU(E, D, batch_first=True),
    "rnn_tanh": lambda E, D: torch.nn.RNN(E, D, batch_first=True),
    "rnn_relu": lambda E, D: torch.nn.RNN(E, D, nonlinearity="relu", batch_first=True),
}
SIZES = ["8x256x64x128", "1x512x32x64", "32x64x64x256", "1x32x16x32", "4x64x32x64", "16x16x64x64"]


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
clock = time.perf_counter


def _time(fn) -> float:
    start = clock()
    fn()
    return clock() - start


def emitted_module(cell: str, T: int, E: int, D: int, folder: Path) -> torch.nn.Module:
    """The spec's emitted Python (what ``ncd compile`` writes), imported from ``folder``."""
    from ncd.backends.pytorch.emit import emit_python

    path = folder / f"emitted_{cell}_{T}_{E}_{D}.py"
    path.write_text(emit_python(ncd.check(f"specs/{cell}.ncd", T=T, E=E, D=D), class_name="Entry"))
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # the file ncd just generated from a library spec
    return module.Entry()


def measure(cell: str, B: int, T: int, E: int, D: int, backend: str, repeats: int, backward: bool,
            no_grad: bool, folder: Path | None) -> list[tuple[float, float]]:
    """Per side after torch (ncd, then the emitted Python with ``folder``): (median seconds, median
    of the ratios to torch's paired repeats); torch's own median last, as (seconds, 1.0)."""
    ref = CELLS[cell](E, D)
    compiled = ncd.load(f"specs/{cell}.ncd", scan_backend=backend, T=T, E=E, D=D)
    load_torch(compiled, ref)
    sides = [compiled]
    if folder is not None:
        emitted = emitted_module(cell, T, E, D, folder)
        emitted.load_state_dict(compiled.state_dict())
        sides.append(emitted)
    x = torch.randn(B, T, E)

    def runner(module, take_first: bool):
        def run():
            xx = x.requires_grad_(backward)
            if backward:
                y = module(xx)
                (y[0] if take_first else y).sum().backward()
                return
            with torch.no_grad() if no_grad else torch.enable_grad():
                module(xx)
        return run

    fns = [runner(s, False) for s in sides] + [runner(ref, True)]
    for fn in fns:  # warm up (oneDNN primitives, allocator)
        fn(), fn()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for side, fn in zip(times, fns):
            side.append(_time(fn))
    theirs = times[-1]
    out = [(statistics.median(t), statistics.median(a / b for a, b in zip(t, theirs))) for t in times[:-1]]
    return out + [(statistics.median(theirs), 1.0)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="*", default=SIZES, help="BxTxExD")
    parser.add_argument("--cells", nargs="*", default=list(CELLS))
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--emitted", action="store_true", help="also time the emitted Python")
    parser.add_argument("--no-grad", action="store_true", help="forward under torch.no_grad()")
    parser.add_argument("--clock", choices=list(CLOCKS), default="wall")
    args = parser.parse_args()
    global clock
    clock = CLOCKS[args.clock]
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s), backend {args.backend}, median of {args.repeats}, {args.clock} clock"
          f"{', forward under no_grad' if args.no_grad else ''}")
    extra = f" {'emitted ms':>10} {'ratio':>6}" if args.emitted else ""
    print(f"{'cell':9} {'B x T x E x D':16} {'pass':8} {'ncd ms':>9} {'ratio':>6}{extra} {'torch ms':>9}")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) if args.emitted else None
        for size in args.sizes:
            B, T, E, D = (int(v) for v in size.split("x"))
            for cell in args.cells:
                for backward in (False, True):
                    sides = measure(cell, B, T, E, D, args.backend, args.repeats, backward, args.no_grad, folder)
                    cols = " ".join(f"{s * 1e3:9.3f} {r:6.2f}" if i == 0 else f"{s * 1e3:10.3f} {r:6.2f}"
                                    for i, (s, r) in enumerate(sides[:-1]))
                    print(f"{cell:9} {size:16} {'fwd+bwd' if backward else 'fwd':8} {cols} {sides[-1][0] * 1e3:9.3f}",
                          flush=True)


if __name__ == "__main__":
    main()
