"""`ncd render`: draw a spec as a Neural Circuit Diagram (Graphviz)."""
from __future__ import annotations

import argparse
import sys
from typing import Any

from ncd.cli.common import add_block, spec_sizes
from ncd.analysis.annotate import METRICS
from ncd.cli.options import add_sizes, bound_sizes
from ncd.errors import NcdError


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "render", help="draw a spec as a diagram (svg, pdf, png, dot or TikZ .tex)",
        description="Render a spec in Neural-Circuit-Diagram style: wires coloured and labelled by axis, "
                    "learned ops bold, blocks as clusters, scans as loops. svg/pdf/png and .tex (TikZ, laid out "
                    "by Graphviz) need the Graphviz `dot` binary (`make dot`); .dot output and stdout do not.")
    p.add_argument("path", metavar="PATH")
    p.add_argument("-o", "--output", metavar="FILE",
                   help="output file: .svg, .pdf, .png, .dot or .tex (TikZ) (default: DOT text on stdout)")
    add_sizes(p, "bind axis sizes shown on the wires")
    add_block(p)
    p.add_argument("--depth", type=int, default=None, metavar="N",
                   help="draw N levels of blocks open; deeper blocks collapse to one box (default: all)")
    p.add_argument("--expand", metavar="BLOCK", help="draw this block (a block or instance name) instead of the entry")
    p.add_argument("--theme", default="paper", help="paper (default, colour) or plain (black and white)")
    p.add_argument("--standalone", action="store_true",
                   help="with .tex: a whole standalone document (pdflatex fig.tex), not a tikzpicture to \\input")
    p.add_argument("--annotate", choices=METRICS, metavar="COST",
                   help="write each op's and block's cost on its box: flops, params, memory or time (the same "
                        "analysis as `ncd cost`; numbers at the --set sizes, the batch B among them, else formulas)")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    import ncd
    from ncd.backends.graphviz import render, render_dot

    sizes = bound_sizes(args)
    ir = ncd.check(args.path, block=args.block, sizes=spec_sizes(args.path, sizes))
    if not args.output or args.output == "-":
        sys.stdout.write(render_dot(ir, depth=args.depth, expand=args.expand, theme=args.theme,
                                    annotate=args.annotate, sizes=sizes))
        return 0
    if args.standalone and not args.output.lower().endswith(".tex"):
        raise NcdError("--standalone is for TikZ output", hint="name the output FILE.tex")
    out = render(ir, args.output, depth=args.depth, expand=args.expand, theme=args.theme,
                 standalone=args.standalone, annotate=args.annotate, sizes=sizes)
    print(f"wrote {out}")
    return 0
