"""`ncd render`: draw a spec as a Neural Circuit Diagram (Graphviz).

Wire into ncd/cli.py with ``cli_render.add_parser(sub)`` and ``COMMANDS["render"] = cli_render.run``.
"""
from __future__ import annotations

import argparse
import sys


def add_parser(subparsers) -> argparse.ArgumentParser:
    from ncd.cli import _size_item

    p = subparsers.add_parser(
        "render", help="draw a spec as a diagram (svg, pdf, png or dot)",
        description="Render a spec in Neural-Circuit-Diagram style: wires coloured and labelled by axis, "
                    "learned ops bold, blocks as clusters, scans as loops. svg/pdf/png need the Graphviz "
                    "`dot` binary (`make dot`); .dot output and stdout do not.")
    p.add_argument("path", metavar="PATH")
    p.add_argument("-o", "--output", metavar="FILE",
                   help="output file: .svg, .pdf, .png or .dot (default: DOT text on stdout)")
    p.add_argument("--set", metavar="AX=N", nargs="+", action="extend", type=_size_item,
                   help="bind axis sizes shown on the wires, e.g. --set T=128 (put PATH before --set)")
    p.add_argument("--depth", type=int, default=None, metavar="N",
                   help="draw N levels of blocks open; deeper blocks collapse to one box (default: all)")
    p.add_argument("--expand", metavar="BLOCK", help="draw this block (a block or instance name) instead of the entry")
    p.add_argument("--theme", default="paper", help="paper (default, colour) or plain (black and white)")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    import ncd
    from ncd.backends.graphviz import render, render_dot
    from ncd.cli import _spec_sizes

    sizes = dict(getattr(args, "set", None) or [])
    ir = ncd.check(args.path, **_spec_sizes(args.path, sizes))
    if not args.output or args.output == "-":
        sys.stdout.write(render_dot(ir, depth=args.depth, expand=args.expand, theme=args.theme))
        return 0
    out = render(ir, args.output, depth=args.depth, expand=args.expand, theme=args.theme)
    print(f"wrote {out}")
    return 0
