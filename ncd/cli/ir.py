"""`ncd ir`: a checked spec's IR as a summary or JSON; `--from-json` reads that JSON back."""
from __future__ import annotations

import argparse
import sys
from typing import Any

from ncd.cli.common import add_block, axis_size, fmt_axes, spec_sizes
from ncd.cli.options import add_sizes, bound_sizes
from ncd.errors import NcdError
from ncd.source import decode, read_text


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser("ir", help="print a spec's IR",
                              description="Print the checked IR: a summary, or with --json the full IR "
                                          "(which --from-json reads back).")
    p.add_argument("path", metavar="PATH", nargs="?")
    p.add_argument("--from-json", metavar="FILE", help="read IR JSON (from `ncd ir --json`; `-` = stdin)")
    add_sizes(p)
    add_block(p)
    p.add_argument("--json", action="store_true", help="print the IR as JSON")
    p.set_defaults(func=run)
    return p


def ir_summary(ir: Any) -> str:
    lines = [f"spec {ir.name}" + (f" — {ir.meta.title}" if ir.meta.title else "")]
    if ir.meta.paper:
        lines.append(f"paper: {ir.meta.paper}")
    axes = []
    for name, a in ir.axes.items():
        size = axis_size(ir, name)
        axes.append(f"{name}={size}" if size is not None else (f"{name}={a.size}" if a.size else f"{name} (free)"))
    lines.append("axes: " + ", ".join(axes))
    lines.append(f"entry: {ir.entry}" + (f" (entries sharing weights: {', '.join(ir.entries)})"
                                          if len(ir.entries) > 1 else ""))
    for key, block in ir.blocks.items():
        ins = ", ".join(f"{p.name}: {p.type}" for p in block.inputs)
        outs = ", ".join(str(t) for t in block.outputs)
        lines.append(f"block {key}({ins}) -> {outs}    {len(block.nodes)} nodes")
        for p in block.params:
            lines.append(f"    {p.kind} {p.name}: {fmt_axes(p.type.axes)}")
        for inst in block.instances:
            times = f" × {inst.repeat}" if inst.repeat else ""
            lines.append(f"    use {inst.name} = {inst.block}{times}")
        for tap in block.taps:
            lines.append(f"    tap {tap}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    if (args.path is None) == (args.from_json is None):
        raise NcdError("give either a spec PATH or --from-json FILE", hint="ncd ir spec.ncd --json > ir.json; "
                       "ncd ir --from-json ir.json")
    if args.from_json is not None:
        if args.from_json == "-":
            text = decode(sys.stdin.buffer.read(), "<stdin>", "IR JSON")
        else:
            text = read_text(args.from_json, "IR JSON file")
        from ncd.verify import load_ir_json

        ir = load_ir_json(text, "<stdin>" if args.from_json == "-" else args.from_json)
    else:
        import ncd

        ir = ncd.check(args.path, block=args.block, sizes=spec_sizes(args.path, bound_sizes(args)))
    print(ir.model_dump_json(indent=2) if args.json else ir_summary(ir))
    return 0
