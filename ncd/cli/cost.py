"""`ncd cost`: FLOPs, parameters, activation memory and a roofline time for a spec."""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ncd.cli.common import add_block, spec_sizes
from ncd.cli.options import add_sizes, bound_sizes, positive_float

COLUMNS = (("flops_fwd", "FLOPs fwd"), ("flops_bwd", "FLOPs bwd"), ("matmul_flops_fwd", "matmul fwd"),
           ("matmul_flops_bwd", "matmul bwd"), ("params", "params"), ("activation_bytes", "activations"),
           ("traffic_bytes", "traffic"))
BYTES = {"activation_bytes", "traffic_bytes", "param_bytes", "min_traffic_bytes", "buffer_bytes"}


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "cost", help="FLOPs, parameters, memory and time of a spec",
        description="Cost a spec: forward/backward FLOPs (matmul apart), parameters, activation bytes saved "
                    "for backward, memory traffic, as formulas in the axis sizes and as numbers where bound; "
                    "the entry is lifted over the batch axis B. Scans: each strategy's cost and the chosen one.")
    p.add_argument("path", metavar="PATH")
    add_sizes(p, "bind axis sizes (B is the batch)")
    add_block(p)
    p.add_argument("--dtype", default="float32", help="float32 (default), bf16, fp16 or float64")
    p.add_argument("--gpu", default="h100", help="GPU for the roofline estimate: h100 (default), h200, a100")
    p.add_argument("--peak-tflops", type=positive_float, metavar="X", help="override the GPU's peak (TFLOP/s)")
    p.add_argument("--bandwidth-gbs", type=positive_float, metavar="X", help="override the GPU's memory bandwidth (GB/s)")
    p.add_argument("--by", choices=("op", "block"), help="one row per op or per block instance")
    p.add_argument("--formula", action="store_true", help="print the formulas in the axis sizes")
    p.add_argument("--input-grad", action="store_true", help="the inputs need gradients too (default: only parameters)")
    p.add_argument("--json", action="store_true", help="print a JSON object (total, blocks, ops, scans, roofline)")
    p.set_defaults(func=run)
    return p


def cost_report(path: str, sizes: dict[str, int], *, dtype: str = "float32", input_grad: bool = False,
                block: str | None = None):
    from ncd.analysis import analyze
    from ncd.api import run_pipeline

    compiled = run_pipeline(path, block=block, sizes=spec_sizes(path, sizes))
    return analyze(compiled.ir, sizes, dtype=dtype, input_grad=input_grad, passes=compiled.passes)


def run(args: argparse.Namespace) -> int:
    from ncd.analysis import roofline

    report = cost_report(args.path, bound_sizes(args), dtype=args.dtype, input_grad=args.input_grad,
                         block=args.block)
    roof = roofline(report, args.gpu, peak_flops=args.peak_tflops * 1e12 if args.peak_tflops else None,
                    bandwidth=args.bandwidth_gbs * 1e9 if args.bandwidth_gbs else None)
    if args.json:
        json.dump(report.to_json(roof), sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    sys.stdout.write(format_report(report, roof, by=args.by, formula=args.formula))
    return 0


def format_report(report, roof: dict[str, Any] | None = None, *, by: str | None = None, formula: bool = False) -> str:
    from ncd.analysis.format import human, pretty
    from ncd.analysis.timing import format_seconds

    lines = []
    sizes = " ".join(f"{k}={v}" for k, v in report.to_json()["sizes"].items())
    lines.append(f"{report.ir.name} (entry {report.ir.entry}), {report.dtype}, lifted over "
                 f"{report.size.batch}; {sizes or 'no sizes bound'}")
    rows: list[tuple[str, dict]] = []
    if by == "block":
        rows = [(path, f) for path, f in report.blocks.items()]
    elif by == "op":
        rows = [(f"{o.path}/{o.id} {o.op}", {k: getattr(o, k) for k, _ in COLUMNS if hasattr(o, k)})
                for o in report.ops]
    rows.append(("total", report.total))
    width = max(len(r[0]) for r in rows) + 2
    columns = COLUMNS
    if report.total.get("buffers", 0) != 0:  # running statistics, masks: state beside the parameters
        columns = (*COLUMNS[:5], ("buffer_bytes", "buffers"), *COLUMNS[5:])
    header = "".join(f"{title:>13}" for _, title in columns)
    lines.append(f"{'':<{width}}{header}")
    for name, formulas in rows:
        cells = []
        for key, _ in columns:
            if key not in formulas:
                cells.append(f"{'':>13}")
                continue
            value = report.number(formulas[key])
            cells.append(f"{human(value, 'B' if key in BYTES else ''):>13}")
        lines.append(f"{name:<{width}}{''.join(cells)}")
    unbound = report.size.unbound(report.total["flops_fwd"])
    if unbound:
        lines.append(f"(bind {', '.join(unbound)} with --set for numbers)")
    if formula:
        lines.append("")
        lines.append("formulas (total):")
        for key in ("flops_fwd", "flops_bwd", "matmul_flops_fwd", "matmul_flops_bwd", "params",
                    *(("buffer_bytes",) if report.total.get("buffers", 0) != 0 else ()),
                    "activation_bytes", "min_traffic_bytes"):
            lines.append(f"  {key:<18} = {pretty(report.total[key])}")
        if by == "block":
            for path, f in report.blocks.items():
                lines.append(f"  {path}: matmul fwd = {pretty(f['matmul_flops_fwd'])}")
    for scan in report.scans:
        lines.append("")
        lines.append(f"scan {scan.id} over {scan.axis} in {scan.path}: chosen {scan.chosen}, backend "
                     f"{scan.backend}" + (f" ({scan.reason})" if scan.reason else ""))
        for name, st in scan.strategies.items():
            flops = report.number(st["flops"])
            depth = report.number(st["depth"])
            shown = human(flops) if flops is not None else pretty(st["flops"])
            extra = ", ".join(f"{k} {report.number(v)}" for k, v in st.items()
                              if k not in ("flops", "depth", "applicable"))
            if not report.number(st.get("applicable", 1)):
                extra = "not for this recurrence" + (f", {extra}" if extra else "")
            mark = "*" if name == scan.chosen else " "
            lines.append(f"  {mark} {name:<14} FLOPs {shown:>12}   depth "
                         f"{(f'{depth:.3g}' if isinstance(depth, float) else depth) if depth is not None else '-'}"
                         + (f"   ({extra})" if extra else ""))
    if roof is not None:
        lines.append("")
        lines.append(f"roofline on {roof['name']} ({roof['dtype']}): forward {format_seconds(roof.get('time_fwd_s'))}, "
                     f"forward+backward {format_seconds(roof.get('time_fwd_bwd_s'))}, fused bound "
                     f"{format_seconds(roof.get('ideal_s'))}" + (f"  [{roof['note']}]" if roof.get("note") else ""))
    return "\n".join(lines) + "\n"
