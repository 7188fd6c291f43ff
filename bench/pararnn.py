"""Benchmark: ParaRNN Newton solve vs sequential loops (never a test).

CPU (always): ParaGRU forward (and with --backward, forward+backward), Newton vs the eager
sequential loop, T = 1k..16k; reports Newton iterations, final residual and max |Δ| to the loop.
"newton" takes Jacobians by JVP (the generic path); "newton-cf" passes the closed-form diagonal
Jacobian `ParaGRU.recurrent_value_and_jacobian` as `jac_fn` (what a compiler could emit);
"newton-fused" is the generic path with `fuse=True` (each Newton step one torch.compile'd graph;
the first call per shape compiles, in the untimed warm-up).
CUDA (when present): forward and forward+backward, B ∈ {1, 8, 16}, N ∈ {256, 1024},
T = 1k..64k, fp32 and bf16, Newton vs the eager loop, a loop over a torch.compile'd cell step
(compiling the whole T-step loop would unroll it) and cuDNN torch.nn.GRU at the same hidden
size (a dense GRU: more FLOPs per step, but the standard fast baseline), plus peak memory.

    python bench/pararnn.py [--quick] [--json] [--backward] [--B 1] [--N 64] [--T 1024 2048 ...]

--vs-pararnn-torch: the compiled `paragru` spec (ncd.load, Newton and sequential backends)
beside pararnn-torch's ParaGRU(mix='diag') in its ParaRNN layer (solver 'newton' and
'sequential'), same sizes, CPU, forward (no_grad) and forward+backward (`pip install
pararnn-torch==0.17.4`, the `test` extra), medians of interleaved rounds of CPU time. --memory: peak
resident memory of a Newton forward
(and forward+backward) of the compiled spec at each T, each T in a fresh process.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time

import torch

import ncd.backends.pararnn as P


GPU = "cuda"  # the device bench_cuda runs on (a dry run on the CPU may patch it)


def _sync(device: str) -> None:
    if device != "cpu":
        torch.cuda.synchronize()


def _time_ms(fn, device: str, repeat: int, warmup: int = 1) -> float:
    """Median wall time of fn() in ms, synchronising around each call."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def _peak_mb(fn, device: str) -> float | None:
    if device == "cpu":
        return None
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() / 2**20


def _runners(model: P.ParaGRU, xs: torch.Tensor, backward: bool, solver: P.NewtonSolver,
             compiled_step=None):
    """name -> zero-arg callable running forward (and backward) once."""
    def wrap(forward):
        if not backward:
            def run():
                with torch.no_grad():
                    forward()
            return run

        def run_bwd():
            model.zero_grad(set_to_none=True)
            forward().float().square().mean().backward()
        return run_bwd

    solver_cf = P.NewtonSolver("diag", jac_fn=P.ParaGRU.recurrent_value_and_jacobian)
    solver_fused = P.NewtonSolver("diag", fuse=True)
    runs = {
        "newton": wrap(lambda: model(xs, solver=solver)),
        "newton-cf": wrap(lambda: model(xs, solver=solver_cf)),
        "newton-fused": wrap(lambda: model(xs, solver=solver_fused)),
        "loop": wrap(lambda: model(xs, mode="sequential")),
    }
    if compiled_step is not None:
        def compiled_loop():
            u = xs @ model.W + model.b
            h = xs.new_zeros(xs.shape[0], model.state_size)
            out = []
            for t in range(xs.shape[1]):
                h = compiled_step(h, u[:, t], model.a)
                out.append(h)
            return torch.stack(out, 1)
        runs["compiled-loop"] = wrap(compiled_loop)
    return runs


def bench_cpu(args) -> list[dict]:
    rows = []
    gen = torch.Generator().manual_seed(0)
    model = P.ParaGRU(args.E, args.N, generator=gen)
    for T in args.T:
        xs = torch.randn(args.B, T, args.E, generator=gen)
        solver = P.NewtonSolver("diag")
        with torch.no_grad():
            h_newton = model(xs, solver=solver)
            h_loop = model(xs, mode="sequential")
        err = (h_newton - h_loop).abs().max().item()
        for mode in (["fwd", "fwd+bwd"] if args.backward else ["fwd"]):
            runs = _runners(model, xs, mode == "fwd+bwd", solver)
            t_loop = _time_ms(runs["loop"], "cpu", args.repeat)
            t_newton = _time_ms(runs["newton"], "cpu", args.repeat)
            t_cf = _time_ms(runs["newton-cf"], "cpu", args.repeat)
            t_fused = _time_ms(runs["newton-fused"], "cpu", args.repeat)
            rows.append(dict(device="cpu", mode=mode, dtype="float32", B=args.B, N=args.N, T=T,
                             loop_ms=t_loop, newton_ms=t_newton, speedup=t_loop / t_newton,
                             newton_cf_ms=t_cf, speedup_cf=t_loop / t_cf,
                             newton_fused_ms=t_fused, speedup_fused=t_loop / t_fused,
                             iterations=solver.stats.last_iterations,
                             residual=solver.stats.last_residual, max_abs_diff=err,
                             fallbacks=solver.stats.fallbacks))
    return rows


def bench_cuda(args) -> list[dict]:
    rows = []
    dev = GPU
    compiled_step = torch.compile(P.ParaGRU.recurrent)
    for dtype in (torch.float32, torch.bfloat16):
        for N in args.cuda_N:
            gen = torch.Generator().manual_seed(0)
            model = P.ParaGRU(args.E, N, generator=gen).to(dev, dtype)
            gru = torch.nn.GRU(args.E, N, batch_first=True).to(dev, dtype)
            for B in args.cuda_B:
                for T in args.cuda_T:
                    xs = torch.randn(B, T, args.E, device=dev, dtype=dtype)
                    solver = P.NewtonSolver("diag")
                    for mode in ("fwd", "fwd+bwd"):
                        bwd = mode == "fwd+bwd"
                        runs = _runners(model, xs, bwd, solver, compiled_step)
                        if bwd:
                            runs["cudnn-gru"] = lambda: gru(xs)[0].float().square().mean().backward()
                        else:
                            def cudnn_fwd():
                                with torch.no_grad():
                                    gru(xs)
                            runs["cudnn-gru"] = cudnn_fwd
                        row = dict(device=torch.cuda.get_device_name(), mode=mode,
                                   dtype=str(dtype).replace("torch.", ""), B=B, N=N, T=T)
                        for name, fn in runs.items():
                            if name != "newton" and T > args.loop_max_T and "loop" in name:
                                continue  # a 64k-step Python loop per repeat is minutes
                            row[f"{name}_ms"] = _time_ms(fn, dev, args.repeat)
                            row[f"{name}_peak_mb"] = _peak_mb(fn, dev)
                        row["iterations"] = solver.stats.last_iterations
                        row["residual"] = solver.stats.last_residual
                        row["fallbacks"] = solver.stats.fallbacks
                        rows.append(row)
                        print(_fmt_row(row), file=sys.stderr)
    return rows


NEWTON_RUNS = ("newton", "newton-cf", "newton-fused")


def targets(rows: list[dict]) -> list[dict]:
    """Issue 3's targets per CUDA fwd+bwd row: the fastest Newton variant at least 20x faster
    than cuDNN nn.GRU and at least 100x faster than the eager loop (T >= 4096)."""
    out = []
    for r in rows:
        if r["device"] == "cpu" or r["mode"] != "fwd+bwd":
            continue
        timed = {n: r[f"{n}_ms"] for n in NEWTON_RUNS if r.get(f"{n}_ms") is not None}
        if not timed:
            continue
        best = min(timed, key=timed.get)
        for anchor, want in (("cudnn-gru", 20.0), ("loop", 100.0)):
            if r.get(f"{anchor}_ms") is not None and (anchor != "loop" or r["T"] >= 4096):
                ratio = r[f"{anchor}_ms"] / timed[best]
                out.append({"dtype": r["dtype"], "B": r["B"], "N": r["N"], "T": r["T"],
                            "newton": best, "anchor": anchor, "ratio": ratio, "target": want,
                            "met": ratio >= want})
    return out


def _fmt_row(r: dict) -> str:
    return "  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in r.items())


def _table(rows: list[dict]) -> str:
    if not rows:
        return ""
    keys = [k for k in rows[0] if k != "device"]
    for r in rows:
        keys += [k for k in r if k not in keys and k != "device"]
    head = "| " + " | ".join(keys) + " |\n|" + "---|" * len(keys) + "\n"

    def cell(v):
        if v is None:
            return "-"
        if isinstance(v, float):
            return f"{v:.3g}" if (abs(v) < 1e-2 or abs(v) >= 1e4) and v != 0 else f"{v:.2f}"
        return str(v)
    return head + "\n".join("| " + " | ".join(cell(r.get(k)) for k in keys) + " |" for r in rows)


def bench_vs_pararnn_torch(args) -> None:
    """ncd's compiled paragru against pararnn-torch's ParaGRU(mix='diag'), each with its own loop."""
    import importlib
    import os

    import ncd

    here = os.path.dirname(os.path.abspath(__file__))  # this file is bench/pararnn.py: not the package
    saved = sys.path[:]
    sys.path = [p for p in sys.path if os.path.abspath(p or ".") != here]
    try:
        pararnn = importlib.import_module("pararnn")
    finally:
        sys.path = saved

    print(f"# torch {torch.__version__}, {torch.get_num_threads()} thread(s), B={args.B} E={args.E} N={args.N}, "
          f"median of {args.repeat} interleaved rounds of CPU time (time.thread_time: one torch thread, so "
          f"steady on a loaded machine); ratio = ncd / pararnn-torch")
    print("| pass | T | ncd newton ms | pararnn-torch newton ms | ratio | ncd loop ms | pararnn-torch loop ms | ratio |")
    print("|---|---|---|---|---|---|---|---|")
    ours = {b: ncd.load("specs/paragru.ncd", scan_backend=b, E=args.E, D=args.N, H=4) for b in ("newton", "sequential")}
    cell = pararnn.ParaGRU(args.E, args.N, mix="diag")
    theirs = {b: pararnn.ParaRNN(cell, solver=b) for b in ("newton", "sequential")}
    for T in args.T:
        xs = torch.randn(args.B, T, args.E)
        for backward in (False, True):
            def run(m):
                def once():
                    if backward:
                        out = m(xs)
                        (out[0] if isinstance(out, tuple) else out).sum().backward()
                    else:
                        with torch.no_grad():
                            m(xs)
                return once
            runs = {f"{side}-{b}": run(mods[b]) for side, mods in (("ncd", ours), ("pt", theirs))
                    for b in ("newton", "sequential")}
            t = _interleaved_cpu_ms(runs, args.repeat)
            print(f"| {'fwd+bwd' if backward else 'fwd'} | {T} | {t['ncd-newton']:.1f} | {t['pt-newton']:.1f} | "
                  f"{t['ncd-newton'] / t['pt-newton']:.2f} | {t['ncd-sequential']:.1f} | {t['pt-sequential']:.1f} | "
                  f"{t['ncd-sequential'] / t['pt-sequential']:.2f} |", flush=True)


def _interleaved_cpu_ms(runs: dict, repeat: int) -> dict:
    """name -> median CPU ms of each run, one warm-up each, then `repeat` rounds that run every
    variant once in turn (so load on a shared machine hits all of them alike)."""
    for fn in runs.values():
        fn()
    times: dict = {name: [] for name in runs}
    for _ in range(repeat):
        for name, fn in runs.items():
            t0 = time.thread_time()
            fn()
            times[name].append((time.thread_time() - t0) * 1e3)
    return {name: statistics.median(ts) for name, ts in times.items()}


_MEMORY_CHILD = """
import resource, sys, torch, ncd
torch.set_num_threads(1)
B, T, E, N, backward = (int(v) for v in sys.argv[1:6])
m = ncd.load("specs/paragru.ncd", scan_backend="newton", E=E, D=N, H=4)
x = torch.randn(B, T, E)
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
if backward:
    m(x).sum().backward()
else:
    with torch.no_grad():
        m(x)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base)
"""


def bench_memory(args) -> None:
    """Peak RSS growth (KiB → MiB) of one Newton call, each T in a fresh process; the state
    sequence itself is B·T·N·4 bytes."""
    import os
    import subprocess

    print(f"# peak resident memory above the loaded module, B={args.B} E={args.E} N={args.N}, float32")
    print("| pass | T | peak MiB | state sequence MiB | peak / state |")
    print("|---|---|---|---|---|")
    for backward in (0, 1):
        for T in args.T:
            # fixed mmap threshold: every large tensor is its own mapping, returned when freed, so
            # peak RSS is the peak of live tensors (glibc's sliding threshold keeps freed blocks)
            env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")
            out = subprocess.run([sys.executable, "-c", _MEMORY_CHILD, str(args.B), str(T), str(args.E), str(args.N),
                                  str(backward)], capture_output=True, text=True, check=True, env=env)
            peak = int(out.stdout.split()[-1]) / 1024
            state = args.B * T * args.N * 4 / 2**20
            print(f"| {'fwd+bwd' if backward else 'fwd'} | {T} | {peak:.1f} | {state:.2f} | {peak / state:.1f} |",
                  flush=True)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="T = 1k, 2k only; 1 repeat; small CUDA grid")
    ap.add_argument("--json", action="store_true", help="print JSON rows instead of a table")
    ap.add_argument("--backward", action="store_true", help="CPU: also time forward+backward")
    ap.add_argument("--B", type=int, default=1)
    ap.add_argument("--N", type=int, default=64)
    ap.add_argument("--E", type=int, default=16)
    ap.add_argument("--T", type=int, nargs="+", default=[1024, 2048, 4096, 8192, 16384])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--cuda-B", type=int, nargs="+", default=[1, 8, 16])
    ap.add_argument("--cuda-N", type=int, nargs="+", default=[256, 1024])
    ap.add_argument("--cuda-T", type=int, nargs="+", default=[1024, 4096, 16384, 65536])
    ap.add_argument("--loop-max-T", type=int, default=16384,
                    help="CUDA: skip the Python-loop baselines above this T")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch CPU threads (0: torch's default); 1 is steadier on a shared box")
    ap.add_argument("--no-cuda", action="store_true")
    ap.add_argument("--vs-pararnn-torch", action="store_true", help="compiled paragru vs pararnn-torch's ParaGRU")
    ap.add_argument("--memory", action="store_true", help="peak memory of Newton at each T (fresh processes)")
    ap.add_argument("--no-cpu", action="store_true", help="skip the CPU table (on a GPU machine)")
    args = ap.parse_args(argv)
    if args.quick:
        args.T, args.repeat = [t for t in args.T if t <= 2048] or args.T[:1], 1
        args.cuda_B, args.cuda_N, args.cuda_T = [1, 8], [256], [1024, 4096]
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.vs_pararnn_torch:
        return bench_vs_pararnn_torch(args)
    if args.memory:
        return bench_memory(args)
    rows = [] if args.no_cpu else bench_cpu(args)
    if torch.cuda.is_available() and not args.no_cuda:
        rows += bench_cuda(args)
    if args.json:
        print(json.dumps(dict(machine=platform.processor() or platform.machine(),
                              torch=torch.__version__, threads=torch.get_num_threads(), rows=rows,
                              targets=targets(rows)),
                         indent=1))
    else:
        print(f"# torch {torch.__version__}, {torch.get_num_threads()} CPU threads, "
              f"{'cuda: ' + torch.cuda.get_device_name() if torch.cuda.is_available() else 'no cuda'}")
        print(_table([r for r in rows if r["device"] == "cpu"]))
        gpu = [r for r in rows if r["device"] != "cpu"]
        if gpu:
            print(f"\n# {gpu[0]['device']}\n" + _table(gpu))
            for t in targets(gpu):
                print(f"target {t['dtype']} B{t['B']} N{t['N']} T{t['T']}: {t['newton']} is "
                      f"{t['ratio']:.1f}x faster than {t['anchor']} (want >= {t['target']:g}x) "
                      f"{'met' if t['met'] else 'NOT met'}")


if __name__ == "__main__":
    main()
