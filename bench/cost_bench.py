#!/usr/bin/env python3
"""Speed of the analyses: symbolic costing and rendering of the whole spec library.

Budgets: costing every library spec symbolically (formulas in the axis symbols, no sizes bound)
in under 2 s; rendering every spec to DOT and, where Graphviz is installed, to SVG in under 10 s.
Specs are checked first (not timed: that is bench/frontend.py's budget). Wall time decides, the
process CPU time is printed beside it (a shared machine inflates wall time). A spec that fails
is reported, not fatal (the library is edited concurrently).

Usage: python bench/cost_bench.py [--json]
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
COST_BUDGET_S = 2.0
RENDER_BUDGET_S = 10.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    import ncd
    from ncd.analysis import analyze
    from ncd.backends.graphviz import render, render_dot

    specs = sorted((ROOT / "specs").glob("*.ncd"))
    irs, failed = {}, {}
    for spec in specs:
        try:
            irs[spec.stem] = ncd.check(spec)
        except ncd.NcdError as exc:
            failed[spec.stem] = exc.message
    analyze(irs[next(iter(irs))])  # warm imports (sympy, the op table), not the budget's concern

    rows = []
    wall0, cpu0 = time.perf_counter(), time.process_time()
    for name, ir in irs.items():
        t0 = time.perf_counter()
        report = analyze(ir)
        str(report.total["flops_fwd"])
        rows.append({"spec": name, "cost_ms": 1e3 * (time.perf_counter() - t0)})
    cost_wall, cost_cpu = time.perf_counter() - wall0, time.process_time() - cpu0

    have_dot = shutil.which("dot") is not None
    wall0, cpu0 = time.perf_counter(), time.process_time()
    with tempfile.TemporaryDirectory() as tmp:
        for row in rows:
            t0 = time.perf_counter()
            ir = irs[row["spec"]]
            if have_dot:
                render(ir, Path(tmp) / f"{row['spec']}.svg")
            else:
                render_dot(ir)
            row["render_ms"] = 1e3 * (time.perf_counter() - t0)
    render_wall, render_cpu = time.perf_counter() - wall0, time.process_time() - cpu0

    result = {"specs": len(irs), "failed": failed, "cost_s": cost_wall, "cost_cpu_s": cost_cpu,
              "render_s": render_wall, "render_cpu_s": render_cpu, "render_format": "svg" if have_dot else "dot",
              "cost_ok": cost_wall < COST_BUDGET_S, "render_ok": render_wall < RENDER_BUDGET_S, "rows": rows}
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"{'spec':<28}{'cost ms':>10}{'render ms':>11}")
        for row in rows:
            print(f"{row['spec']:<28}{row['cost_ms']:>10.1f}{row['render_ms']:>11.1f}")
        for name, message in failed.items():
            print(f"{name:<28}  failed to check: {message}")
        print(f"cost all {len(irs)} specs symbolically: {cost_wall:.2f} s wall ({cost_cpu:.2f} s CPU), "
              f"budget {COST_BUDGET_S:.0f} s: {'ok' if result['cost_ok'] else 'OVER'}")
        print(f"render all to {result['render_format']}: {render_wall:.2f} s wall ({render_cpu:.2f} s CPU in "
              f"python, dot in subprocesses), budget {RENDER_BUDGET_S:.0f} s: {'ok' if result['render_ok'] else 'OVER'}")
    return 0 if result["cost_ok"] and result["render_ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
