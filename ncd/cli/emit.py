"""`ncd compile`: a spec with its sizes bound, written as readable Python source."""
from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ncd.cli.common import spec_sizes
from ncd.cli.explain import explain_text
from ncd.cli.options import add_scan_backend, add_sizes, bound_sizes
from ncd.errors import NcdError


def _emit_python(ir: Any, args: argparse.Namespace) -> str:
    from ncd.backends.pytorch.emit import emit_python

    try:
        return emit_python(ir, class_name=args.class_name)
    except NcdError as err:
        raise err.located(None, ir.name) from None


EMITTERS: dict[str, Callable[[Any, argparse.Namespace], str]] = {"python": _emit_python}


def add_parser(subparsers: Any, live_help: bool = True) -> argparse.ArgumentParser:
    p = subparsers.add_parser("compile", help="emit a spec as Python source",
                              description="Compile a spec with its sizes bound and write readable Python source "
                                          "(needs only torch to import).")
    p.add_argument("path", metavar="PATH")
    add_sizes(p)
    p.add_argument("--emit", choices=sorted(EMITTERS), default="python", help="what to emit (default python)")
    p.add_argument("-o", "--output", metavar="FILE", help="output file; `-` or none: stdout")
    p.add_argument("--class-name", metavar="NAME", help="class name of the entry block")
    add_scan_backend(p, live_help, "with --explain: plan every scan with this backend")
    p.add_argument("--explain", action="store_true",
                   help="for each scan: location, axis, carries, class and chosen backend "
                        "(to stderr when the source goes to stdout)")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    import ncd

    if args.class_name is not None and not args.class_name.isidentifier():
        raise NcdError(f"--class-name {args.class_name!r} is not a Python identifier")
    ir = ncd.check(args.path, **spec_sizes(args.path, bound_sizes(args)))
    source = EMITTERS[args.emit](ir, args)
    to_stdout = args.output in (None, "-")
    if to_stdout:
        sys.stdout.write(source)
    else:
        Path(args.output).write_text(source, encoding="utf-8")
    if args.explain:
        print(explain_text(ir, args.scan_backend, emitted=True), file=sys.stderr if to_stdout else sys.stdout)
    if not to_stdout:
        print(f"wrote {args.output} ({args.emit}, {source.count(chr(10))} lines)")
    return 0
