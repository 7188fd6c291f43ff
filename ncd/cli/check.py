"""`ncd check`: parse and type-check specs, one `ok PATH: signature` line or a located error each."""
from __future__ import annotations

import argparse
import sys
from typing import Any

from ncd.cli.common import add_block, emit_json, fmt_axes, spec_sizes
from ncd.cli.options import add_sizes, bound_sizes
from ncd.errors import NcdError
from ncd.ir import WireType


def port_type(t: WireType) -> str:
    """A port's type as the spec writes it: its axes, then ``int`` or ``bool`` where not float."""
    return fmt_axes(t.axes) + ("" if t.dtype == "float" else f" {t.dtype}")


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser("check", help="parse and type-check specs",
                              description="Parse and type-check each spec; print `ok PATH: signature` or the error.")
    p.add_argument("paths", metavar="PATH", nargs="+")
    add_sizes(p)
    add_block(p)
    p.add_argument("--json", action="store_true", help="print a JSON list of results")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    import ncd

    bound = bound_sizes(args)
    results: list[dict[str, Any]] = []
    failed = 0
    for path in args.paths:
        try:
            ir = ncd.check(path, block=args.block, sizes=spec_sizes(path, bound))
        except NcdError as err:
            err = err.located(None, path)
            failed += 1
            results.append({"spec": path, "ok": False, "error": err.to_json()})
            if not args.json:
                print(str(err), file=sys.stderr)
            continue
        entry = ir.entry_block
        signature = (f"{entry.name}(" + ", ".join(f"{p.name}: {port_type(p.type)}" for p in entry.inputs)
                     + ") -> " + ", ".join(port_type(t) for t in entry.outputs))
        results.append({"spec": path, "ok": True, "entry": entry.name, "signature": signature,
                        "blocks": len(ir.blocks)})
        if not args.json:
            print(f"ok {path}: {signature}")
    if args.json:
        emit_json(results)
    return 1 if failed else 0
