"""`ncd compile`: a spec with its sizes bound, written as readable Python source, or exported
with torch.export (``--emit export -o model.pt2``: free axes stay dynamic, see ncd/export.py)."""
from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from ncd.cli.common import add_block, spec_sizes, write_output
from ncd.cli.explain import explain_text
from ncd.cli.options import add_scan_backend, add_sizes, bound_sizes
from ncd.errors import NcdError


def _emit_python(compiled: Any, args: argparse.Namespace) -> str:
    from ncd.backends.pytorch.emit import emit_python

    ir = compiled.ir
    try:
        return emit_python(ir, class_name=args.class_name, passes=compiled.passes)
    except NcdError as err:
        raise err.located(None, ir.name) from None


def _emit_step(compiled: Any, args: argparse.Namespace) -> str:
    """The step module (ncd/passes/step.py): one position, the scans' states by name."""
    from ncd.backends.pytorch.emit_step import emit_step
    from ncd.passes.step import step_plan
    from ncd.pipeline import run_passes

    try:
        plan = step_plan(compiled.ir, args.step_axis)
        passes = run_passes(plan.ir)
    except NcdError as err:
        raise err.located(compiled.source, compiled.name) from None
    try:
        return emit_step(plan, passes, class_name=args.class_name, full=(compiled.ir, compiled.passes))
    except NcdError as err:
        raise err.located(None, compiled.ir.name) from None


EMITTERS: dict[str, Callable[[Any, argparse.Namespace], str]] = {"python": _emit_python, "step": _emit_step}


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser("compile", help="emit a spec as Python source or a torch.export program",
                              description="Compile a spec with its sizes bound and write readable Python source "
                                          "(needs only torch to import), or with --emit export a torch.export "
                                          "program (.pt2; torch.export.load) whose free axes and batch dims "
                                          "are dynamic.")
    p.add_argument("path", metavar="PATH")
    add_sizes(p)
    add_block(p)
    p.add_argument("--emit", choices=sorted([*EMITTERS, "export"]), default="python",
                   help="python (default): readable source; step: the step module for decoding (one position, "
                        "the scans' states by name); export: a torch.export program (needs -o FILE.pt2)")
    p.add_argument("--step-axis", metavar="AXIS", default=None,
                   help="with --emit step: the axis it steps along (default: the one the scans scan)")
    p.add_argument("-o", "--output", metavar="FILE", help="output file; `-` or none: stdout")
    p.add_argument("--class-name", metavar="NAME", help="class name of the entry block")
    add_scan_backend(p, "with --explain: plan every scan with this backend")
    p.add_argument("--explain", action="store_true",
                   help="for each scan: location, axis, carries, class and chosen backend "
                        "(to stderr when the source goes to stdout), and every candidate backend's predicted "
                        "time per device kind where the sizes are bound")
    p.add_argument("--explain-rows", type=int, default=1, metavar="N",
                   help="with --explain: the batch rows (lifted dims) the predicted times are for (default 1)")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from ncd.api import run_pipeline

    if args.class_name is not None and not args.class_name.isidentifier():
        raise NcdError(f"--class-name {args.class_name!r} is not a Python identifier")
    if args.emit == "export":
        return _export(args)
    scan_backend = args.scan_backend if args.explain else "auto"  # the option only steers --explain
    compiled = run_pipeline(args.path, block=args.block, scan_backend=scan_backend,
                            sizes=spec_sizes(args.path, bound_sizes(args)))
    ir = compiled.ir
    source = EMITTERS[args.emit](compiled, args)
    to_stdout = args.output in (None, "-")
    if to_stdout:
        sys.stdout.write(source)
    else:
        write_output(args.output, source)
    if args.explain:
        if args.explain_rows < 1:
            raise NcdError(f"--explain-rows must be at least 1, got {args.explain_rows}")
        print(explain_text(ir, scan_backend, emitted=True, passes=compiled.passes, rows=args.explain_rows),
              file=sys.stderr if to_stdout else sys.stdout)
    if not to_stdout:
        print(f"wrote {args.output} ({args.emit}, {source.count(chr(10))} lines)")
    return 0


def _export(args: argparse.Namespace) -> int:
    import ncd
    from ncd.export import save_program

    if args.output in (None, "-"):
        raise NcdError("--emit export writes a binary program: name the file", hint="add -o model.pt2")
    model = ncd.load(args.path, block=args.block, sizes=spec_sizes(args.path, bound_sizes(args)))
    program = save_program(model, args.output)
    dims = ", ".join(f"{axis} {how}" for axis, how in program.ncd_dims.items())
    print(f"wrote {args.output} (torch.export; dynamic: batch" + (f", {dims}" if dims else "") + ")")
    return 0
