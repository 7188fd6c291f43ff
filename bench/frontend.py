#!/usr/bin/env python3
"""Front-end speed: parse + type-check + build (ncd.check) and load (ncd.load) of every library spec.

Budget: the whole library checked and loaded in under 2 s on one CPU core, grammar construction
included (a cold `ncd check specs/*.ncd` must feel instant). The verdict uses wall time; the
process CPU time is printed beside it, since a shared machine inflates wall time.

Rows: one per spec in specs/ — check ms (parse, type-check, IR), load ms (check again, lower, build
the nn.Module, initialise parameters at the spec's declared sizes). Each number is the first
(cold for that spec) run; `--repeat N` reports the median of N runs instead. A spec that needs a
size bound to load gets its free axes bound to 8 (reported in the `bound` column); a spec that
fails is reported, not fatal (the library is edited concurrently).
The first row is the one-off construction of the LALR parser from grammar/ncd.lark. The last rows
are generated specs, checked only: `synthetic/consts` (200 number constants over sizes, pi and
square roots, a 1000-item listed constant, a HiPPO formula constant, all folded by the builder) and
`synthetic/convs` (a deep stack of reflect- and circular-padded convolutions over free axes, the
sizes sympy folds and checks at every layer). They are outside the library's budget.

Usage: python bench/frontend.py [--repeat N] [--json] [--threads N]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUDGET_S = 2.0
FREE_SIZE = 8


CPU_MS: list[float] = []  # process CPU time of every timed call (robust to a busy shared machine)


def _ms(fn, repeat: int) -> tuple[float, object]:
    times, cpu, result = [], [], None
    for _ in range(repeat):
        start, start_cpu = time.perf_counter(), time.process_time()
        result = fn()
        times.append((time.perf_counter() - start) * 1e3)
        cpu.append((time.process_time() - start_cpu) * 1e3)
    CPU_MS.append(statistics.median(cpu))
    return statistics.median(times), result


def synthetic_specs() -> dict[str, str]:
    """Large generated specs (deterministic text) for the folding and size work the library only
    touches lightly."""
    consts = ["axis D = 64, T, P, N = 16"]
    for i in range(200):
        a, b, c, d = (i % 9) + 1, (i % 7) + 2, (i % 47) + 2, (i % 5) + 2
        consts.append(f"const c{i} = {a} / {b} + sqrt({c}) * D^-0.5 - pi / {d}")
    consts.append("const L[P] = [" + ", ".join(f"{(k * 7919) % 1000003 / 1000003:.6f} * sqrt(2) / D"
                                            for k in range(1000)) + "]")
    consts.append("const A[n: N, k: N'] = where(n > k, -sqrt(2 * n + 1) * sqrt(2 * k + 1), where(n == k, -(n + 1), 0))")
    consts += ["block F(x: [T, D]) -> [T, D] {", "  param W: [D, D'] init uniform(-D^-0.5, D^-0.5)", "  y = x"]
    consts += ["  y = y + " + " + ".join(f"c{i} * x" for i in range(20 * j, 20 * j + 20)) for j in range(10)]
    consts += ["  return (y @[D] W)[D' as D] * L[P = 3] + sum(A, over = [N, N'])", "}"]
    levels = 4
    convs = ["axis C = 4, K = 3, L = 3, " + ", ".join(f"Y{i}, X{i}" for i in range(levels + 1)),
             f"block F(x: [C, Y0, X0]) -> [C, Y{levels}, X{levels}] {{", "  param W: [C, C', K, L] init normal(0, 0.1)"]
    for i in range(levels):
        mode = ("reflect", "circular")[i % 2]
        convs.append(f"  x = relu(conv(x, W, over = [Y{i}, X{i}] -> [Y{i + 1}, X{i + 1}], kernel = [K, L], stride = 2, "
                     f"padding = 1, padding_mode = {mode}))[C' as C]")
        convs.append(f"  x = relu(conv(x, W, over = [Y{i + 1}, X{i + 1}], kernel = [K, L], padding = 1, "
                     f"padding_mode = {mode}))[C' as C]")
    convs += ["  return x", "}"]
    return {"synthetic/consts": "\n".join(consts), "synthetic/convs": "\n".join(convs)}


def bench(repeat: int = 1) -> dict:
    import torch

    import ncd
    from ncd.frontend.parser import parser

    CPU_MS.clear()
    grammar_ms, _ = _ms(parser, 1)  # the LALR tables, built once per process

    rows = []
    for path in sorted((ROOT / "specs").glob("*.ncd")):
        row = {"spec": path.stem, "check_ms": None, "load_ms": None, "params": None, "bound": {}, "error": None}
        try:
            row["check_ms"], ir = _ms(lambda: ncd.check(path), repeat)
            sizes: dict[str, int] = {}
            try:
                row["load_ms"], module = _ms(lambda: ncd.load(path), repeat)
            except ncd.NcdError:
                sizes = {a: FREE_SIZE for a, d in ir.axes.items() if d.size is None and not d.prime_of}
                row["bound"] = sizes
                row["load_ms"], module = _ms(lambda: ncd.load(path, **sizes), repeat)
            row["params"] = sum(p.numel() for p in module.parameters())
        except Exception as exc:  # noqa: BLE001 — report and go on: specs are written concurrently
            row["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
        rows.append(row)
    library_cpu_ms = sum(CPU_MS)
    extra = []
    for name, source in synthetic_specs().items():
        row = {"spec": name, "check_ms": None, "load_ms": None, "params": None, "bound": {}, "error": None}
        try:
            row["check_ms"], _ = _ms(lambda: ncd.check(source), repeat)
        except Exception as exc:  # noqa: BLE001 — reported like a library spec
            row["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
        extra.append(row)
    total_ms = grammar_ms + sum((r["check_ms"] or 0) + (r["load_ms"] or 0) for r in rows)
    return {
        "grammar_ms": round(grammar_ms, 2),
        "rows": [{**r, "check_ms": r["check_ms"] and round(r["check_ms"], 2),
                  "load_ms": r["load_ms"] and round(r["load_ms"], 2)} for r in rows],
        "total_ms": round(total_ms, 1),
        "synthetic": [{**r, "check_ms": r["check_ms"] and round(r["check_ms"], 2)} for r in extra],
        "total_cpu_ms": round(library_cpu_ms, 1),
        "budget_ms": BUDGET_S * 1e3,
        "within_budget_wall": total_ms <= BUDGET_S * 1e3,
        "within_budget_cpu": library_cpu_ms <= BUDGET_S * 1e3,
        "load_average": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "cpus": os.cpu_count(),
        "repeat": repeat,
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": sys.version.split()[0],
    }


def print_table(result: dict) -> None:
    print(f"{'spec':<30} {'check ms':>9} {'load ms':>9} {'params':>11}  note")
    print(f"{'(grammar: LALR tables)':<30} {result['grammar_ms']:>9.1f} {'':>9} {'':>11}")
    for r in result["rows"]:
        if r["error"]:
            check = f"{r['check_ms']:.1f}" if r["check_ms"] is not None else "-"
            print(f"{r['spec']:<30} {check:>9} {'-':>9} {'-':>11}  FAILED {r['error'][:60]}")
            continue
        note = "bound " + ", ".join(f"{k}={v}" for k, v in r["bound"].items()) if r["bound"] else ""
        print(f"{r['spec']:<30} {r['check_ms']:>9.1f} {r['load_ms']:>9.1f} {r['params']:>11,}  {note}")
    for r in result.get("synthetic", []):
        check = f"{r['check_ms']:.1f}" if r["check_ms"] is not None else "-"
        print(f"{r['spec']:<30} {check:>9} {'':>9} {'':>11}  {'FAILED ' + r['error'][:60] if r['error'] else 'check only'}")

    def verdict(ok: bool) -> str:
        return "within" if ok else "OVER"

    print(f"total for {len(result['rows'])} specs: {result['total_ms']:.0f} ms wall "
          f"({verdict(result['within_budget_wall'])} the {result['budget_ms'] / 1e3:.0f} s budget), "
          f"{result['total_cpu_ms']:.0f} ms CPU ({verdict(result['within_budget_cpu'])})")
    print(f"  (load average {result['load_average']} on {result['cpus']} CPUs: wall time counts other processes; {'median of ' + str(result['repeat']) if result['repeat'] > 1 else 'first run'}"
          f", torch {result['torch']}, {result['torch_threads']} threads)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=1, help="median of N runs per spec (default 1: cold)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of the table")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import torch

    torch.set_num_threads(args.threads)
    result = bench(max(1, args.repeat))
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print_table(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
