"""The `ncd` command line: check, compile, run, list and inspect specs.

Each subcommand is one ``cmd_<name>(args) -> int`` function registered in ``COMMANDS``; ``main``
turns every ``NcdError`` into its located message (or, with ``--json``, its ``to_json()``
object) and exit code 1, so a user never sees a Python traceback for a mistake in a spec.
Exit codes: 0 ok, 1 a spec or usage error, 2 a command-line syntax error (argparse).
"""
from __future__ import annotations

import argparse
import json
import math
import re
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from ncd.errors import NcdError

BATCH_AXIS = "B"  # the library's batch axis: the leading, lifted dimension of `ncd run` inputs
DEFAULT_BATCH = 2


# ----------------------------------------------------------------------------- helpers
def _size_item(text: str) -> tuple[str, int]:
    """argparse type for `--set AX=N`."""
    match = re.fullmatch(r"\s*([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(\d+)\s*", text)
    if not match:
        raise argparse.ArgumentTypeError(f"expected AXIS=SIZE (like D=64), got {text!r}")
    if int(match.group(2)) < 1:
        raise argparse.ArgumentTypeError(f"size of {match.group(1)} must be at least 1")
    return match.group(1), int(match.group(2))


def _sizes(args: argparse.Namespace) -> dict[str, int]:
    return dict(getattr(args, "set", None) or [])


def _declared_axes(path: str) -> set[str]:
    """Axis names a spec declares (a check with nothing bound: cheap, and errors surface here)."""
    import ncd

    return set(ncd.check(path).axes)


def _spec_sizes(path: str, sizes: dict[str, int]) -> dict[str, int]:
    """The --set sizes to bind in the spec: the batch axis B is ours unless the spec declares it."""
    if BATCH_AXIS in sizes and BATCH_AXIS not in _declared_axes(path):
        return {k: v for k, v in sizes.items() if k != BATCH_AXIS}
    return sizes


def axis_size(ir: Any, axis: str) -> int | None:
    """The bound size of an axis of a checked spec (primes share their axis' size), or None."""
    import sympy

    from ncd import sizes as sz

    table = {name: a.size for name, a in ir.axes.items()}
    base = axis
    definition = ir.axes.get(axis)
    if definition is not None and definition.prime_of:
        base = definition.prime_of
    elif axis not in table:
        base = axis.rstrip("'")
    expr = sz.resolve(base, table, ir.bindings)
    return int(expr) if isinstance(expr, sympy.Integer) else None


def _known_sizes(ir: Any) -> dict[str, int]:
    sizes = {name: axis_size(ir, name) for name in ir.axes}
    return {name: size for name, size in sizes.items() if size is not None}


def _fmt_axes(axes: Sequence[str]) -> str:
    return "[" + ", ".join(axes) + "]"


def _emit_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2))


# ----------------------------------------------------------------------------- check
def cmd_check(args: argparse.Namespace) -> int:
    import ncd

    sizes = _sizes(args)
    results: list[dict[str, Any]] = []
    failed = 0
    for path in args.paths:
        try:
            ir = ncd.check(path, **_spec_sizes(path, sizes))
        except NcdError as err:
            err = err.located(None, path)
            failed += 1
            results.append({"spec": path, "ok": False, "error": err.to_json()})
            if not args.json:
                print(str(err), file=sys.stderr)
            continue
        entry = ir.entry_block
        signature = (f"{entry.name}(" + ", ".join(f"{p.name}: {_fmt_axes(p.type.axes)}" for p in entry.inputs)
                     + ") -> " + ", ".join(_fmt_axes(t.axes) for t in entry.outputs))
        results.append({"spec": path, "ok": True, "entry": entry.name, "signature": signature,
                        "blocks": len(ir.blocks)})
        if not args.json:
            print(f"ok {path}: {signature}")
    if args.json:
        _emit_json(results)
    return 1 if failed else 0


# ----------------------------------------------------------------------------- compile
def explain_loops(ir: Any, scan_backend: str = "auto") -> Iterator[dict[str, Any]]:
    """One record per scan: where it is, what it scans and carries, its class, backend and why.

    The recurrence pass (ncd.passes.recurrence.plan_scans) classifies each scan and chooses its
    backend; where that pass is absent every scan is reported as the sequential loop.
    """
    from ncd.ir import walk

    plans: dict[tuple[str, str], Any] = {}
    try:
        from ncd.passes.recurrence import plan_scans
    except ImportError:
        plan_scans = None
    if plan_scans is not None:
        plans = {(p.block, p.node): p for p in plan_scans(ir, scan_backend)}
    for block in ir.blocks.values():
        for node in walk(block.nodes):
            if node.op != "scan":
                continue
            region = node.regions[0] if node.regions else None
            args = {n.attrs.get("name", n.name): n for n in (region.nodes if region else [])
                    if n.op == "region_arg" and n.id in region.args}
            carries = [{"name": name, "axes": list(args[name].type.axes) if name in args else None}
                       for name in node.attrs.get("carries", [])]
            plan = plans.get((block.key, node.id))
            if plan is not None:
                kind = f"{'linear' if plan.linear else 'nonlinear'}, {plan.structure}"
                backend, reason = plan.backend, plan.reason
            else:
                kind, backend, reason = "unclassified", "sequential", "no recurrence pass is available"
            yield {
                "block": block.key,
                "node": node.id,
                "line": node.loc.line if node.loc else None,
                "col": node.loc.col if node.loc else None,
                "axis": node.attrs.get("axis"),
                "reverse": bool(node.attrs.get("reverse")),
                "carries": carries,
                "class": kind,
                "backend": backend,
                "reason": reason,
                "requested": node.attrs.get("backend"),
            }


def _explain_text(ir: Any, scan_backend: str = "auto", emitted: bool = False) -> str:
    lines = []
    records = list(explain_loops(ir, scan_backend))
    for rec in records:
        where = f"{ir.name}:{rec['line']}:{rec['col']}" if rec["line"] else ir.name
        carries = ", ".join(f"{c['name']}: {_fmt_axes(c['axes'])}" if c["axes"] is not None else c["name"]
                            for c in rec["carries"])
        direction = " reverse" if rec["reverse"] else ""
        lines.append(f"{where}: scan over {rec['axis']}{direction} in block {rec['block']}, carry ({carries})")
        lines.append(f"    class: {rec['class']}")
        lines.append(f"    backend: {rec['backend']}")
        lines.append(f"    why: {rec['reason']}")
    if records and emitted and not _emitter_runs_plans():
        lines.append("note: the emitted Python runs every scan as the sequential loop; the backends above are "
                     "those of the in-process module (ncd.load, ncd run)")
    return "\n".join(lines) if lines else f"{ir.name}: no scans (feed-forward)"


def _emitter_runs_plans() -> bool:
    import inspect

    from ncd.backends.pytorch.emit import emit_python

    return "plans" in inspect.signature(emit_python).parameters


def _emit_python(ir: Any, args: argparse.Namespace) -> str:
    from ncd.backends.pytorch.emit import emit_python

    try:
        return emit_python(ir, class_name=args.class_name)
    except NcdError as err:
        raise err.located(None, ir.name) from None


EMITTERS: dict[str, Callable[[Any, argparse.Namespace], str]] = {"python": _emit_python}


def cmd_compile(args: argparse.Namespace) -> int:
    import ncd

    if args.class_name is not None and not args.class_name.isidentifier():
        raise NcdError(f"--class-name {args.class_name!r} is not a Python identifier")
    ir = ncd.check(args.path, **_spec_sizes(args.path, _sizes(args)))
    source = EMITTERS[args.emit](ir, args)
    to_stdout = args.output in (None, "-")
    if to_stdout:
        sys.stdout.write(source)
    else:
        Path(args.output).write_text(source, encoding="utf-8")
    if args.explain:
        print(_explain_text(ir, args.scan_backend, emitted=True), file=sys.stderr if to_stdout else sys.stdout)
    if not to_stdout:
        print(f"wrote {args.output} ({args.emit}, {source.count(chr(10))} lines)")
    return 0


# ----------------------------------------------------------------------------- run
def _input_shape(ir: Any, port: Any, batch: int | None) -> tuple[int, ...]:
    shape = []
    for axis in port.type.axes:
        size = axis_size(ir, axis)
        if size is None:
            raise NcdError(f"input {port.name} {_fmt_axes(port.type.axes)}: axis {axis} has no size",
                           hint=f"bind it: ncd run {ir.name} --set {axis.rstrip(chr(39))}=N")
        shape.append(size)
    if port.type.lifted and batch is not None:
        shape.insert(0, batch)
    return tuple(shape)


def run_spec(path: str, sizes: dict[str, int], *, seed: int = 0, dtype: str = "float32",
             backward: bool = False, scan_backend: str = "auto", fuse_scans: bool = False) -> dict[str, Any]:
    """Load a spec, run it on random inputs; the record `ncd run --json` prints."""
    import torch

    import ncd

    declared = _declared_axes(path)
    spec_sizes = dict(sizes)
    batch: int | None = DEFAULT_BATCH
    if BATCH_AXIS not in declared:
        batch = spec_sizes.pop(BATCH_AXIS, DEFAULT_BATCH)
    ir = ncd.check(path, **spec_sizes)
    entry = ir.entry_block
    if BATCH_AXIS in declared and any(BATCH_AXIS in p.type.axes for p in entry.inputs):
        batch = None  # the spec names its batch axis itself
    elif BATCH_AXIS in declared:
        batch = axis_size(ir, BATCH_AXIS) or DEFAULT_BATCH
    shapes = [_input_shape(ir, port, batch) for port in entry.inputs]
    torch_dtype = {"float32": torch.float32, "float64": torch.float64}[dtype]

    torch.manual_seed(seed)
    module = ncd.load(path, scan_backend=scan_backend, fuse_scans=fuse_scans, **spec_sizes).to(torch_dtype)
    inputs = [torch.randn(shape, dtype=torch_dtype, requires_grad=backward) for shape in shapes]
    start = time.perf_counter()
    with torch.set_grad_enabled(backward):
        out = module(*inputs)
        outs = list(out) if isinstance(out, tuple) else [out]
        total = sum(o.sum() for o in outs)
        forward_ms = (time.perf_counter() - start) * 1e3
        record: dict[str, Any] = {
            "spec": path,
            "entry": entry.name,
            "sizes": {**({BATCH_AXIS: batch} if batch is not None else {}), **_known_sizes(ir)},
            "dtype": dtype,
            "seed": seed,
            "inputs": [{"name": p.name, "axes": ([BATCH_AXIS] if p.type.lifted and batch is not None else [])
                        + list(p.type.axes), "shape": list(s)} for p, s in zip(entry.inputs, shapes)],
            "outputs": [],
            "params": sum(p.numel() for p in module.parameters()),
            "scans": [{"line": p.loc.line if p.loc else None, "axis": p.axis, "backend": p.backend,
                       "fused": fuse_scans and p.backend == "newton"}
                      for p in getattr(module, "scan_plans", [])],
            "checksum": float(total.detach()),
            "abs_sum": float(sum(o.detach().abs().sum() for o in outs)),
            "forward_ms": round(forward_ms, 3),
        }
        lead = [BATCH_AXIS] if batch is not None else []
        for wire, o in zip(entry.outputs, outs):
            extra = o.dim() - len(wire.axes)
            record["outputs"].append({"axes": (lead if extra == len(lead) else ["…"] * extra) + list(wire.axes),
                                      "shape": list(o.shape)})
        if backward:
            if not isinstance(total, torch.Tensor) or not total.requires_grad:
                raise NcdError("--backward: the outputs depend on no parameter or input",
                               hint="run without --backward")
            start = time.perf_counter()
            total.backward()
            record["backward_ms"] = round((time.perf_counter() - start) * 1e3, 3)
            sq = sum(float(p.grad.double().pow(2).sum()) for p in module.parameters() if p.grad is not None)
            record["grad_norm"] = math.sqrt(sq)
            sq_in = sum(float(x.grad.double().pow(2).sum()) for x in inputs if x.grad is not None)
            record["input_grad_norm"] = math.sqrt(sq_in)
    return record


def cmd_run(args: argparse.Namespace) -> int:
    record = run_spec(args.path, _sizes(args), seed=args.seed, dtype=args.dtype, backward=args.backward,
                      scan_backend=args.scan_backend, fuse_scans=args.fuse_scans)
    if args.json:
        _emit_json(record)
        return 0
    print(f"{record['spec']}: entry {record['entry']}, {record['dtype']}, seed {record['seed']}")
    print("  sizes:   " + ", ".join(f"{k}={v}" for k, v in sorted(record["sizes"].items())))
    for item in record["inputs"]:
        print(f"  input   {item['name']}: {_fmt_axes(item['axes'])} = {tuple(item['shape'])}")
    for i, item in enumerate(record["outputs"]):
        print(f"  output  {i}: {_fmt_axes(item['axes'])} = {tuple(item['shape'])}")
    print(f"  params:  {record['params']:,}")
    for scan in record["scans"]:
        print(f"  scan    line {scan['line']} over {scan['axis']}: {scan['backend']}")
    print(f"  checksum: sum {record['checksum']:.6g}, sum of |.| {record['abs_sum']:.6g} "
          f"(of the outputs)   forward {record['forward_ms']:.1f} ms")
    if "grad_norm" in record:
        print(f"  grad-norm (parameters): {record['grad_norm']:.6g}   backward {record['backward_ms']:.1f} ms")
    return 0


# ----------------------------------------------------------------------------- list
def library_table() -> list[dict[str, str]]:
    from ncd.frontend.builder import read_meta
    from ncd.library import library_specs

    rows = []
    for path in library_specs():
        meta = read_meta(path.read_text(encoding="utf-8"))
        rows.append({"name": path.stem, "title": meta.title, "paper": meta.paper, "path": str(path)})
    return rows


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def cmd_list(args: argparse.Namespace) -> int:
    rows = library_table()
    if args.json:
        _emit_json(rows)
        return 0
    if not rows:
        print("the library is empty")
        return 0
    width = max(len(r["name"]) for r in rows)
    for r in rows:
        print(f"{r['name']:<{width}}  {_clip(r['title'], 90)}")
        if r["paper"]:
            print(f"{'':<{width}}  paper: {_clip(r['paper'], 83)}")
    return 0


# ----------------------------------------------------------------------------- ir
def ir_summary(ir: Any) -> str:
    lines = [f"spec {ir.name}" + (f" — {ir.meta.title}" if ir.meta.title else "")]
    if ir.meta.paper:
        lines.append(f"paper: {ir.meta.paper}")
    axes = []
    for name, a in ir.axes.items():
        size = axis_size(ir, name)
        axes.append(f"{name}={size}" if size is not None else (f"{name}={a.size}" if a.size else f"{name} (free)"))
    lines.append("axes: " + ", ".join(axes))
    lines.append(f"entry: {ir.entry}")
    for key, block in ir.blocks.items():
        ins = ", ".join(f"{p.name}: {p.type}" for p in block.inputs)
        outs = ", ".join(str(t) for t in block.outputs)
        lines.append(f"block {key}({ins}) -> {outs}    {len(block.nodes)} nodes")
        for p in block.params:
            lines.append(f"    {p.kind} {p.name}: {_fmt_axes(p.type.axes)}")
        for inst in block.instances:
            times = f" × {inst.repeat}" if inst.repeat else ""
            lines.append(f"    use {inst.name} = {inst.block}{times}")
        for tap in block.taps:
            lines.append(f"    tap {tap}")
    return "\n".join(lines)


def cmd_ir(args: argparse.Namespace) -> int:
    from ncd.ir import SpecIR

    if (args.path is None) == (args.from_json is None):
        raise NcdError("give either a spec PATH or --from-json FILE", hint="ncd ir spec.ncd --json > ir.json; "
                       "ncd ir --from-json ir.json")
    if args.from_json is not None:
        try:
            text = sys.stdin.read() if args.from_json == "-" else Path(args.from_json).read_text(encoding="utf-8")
        except OSError as exc:
            raise NcdError(f"cannot read {args.from_json}: {exc.strerror}") from None
        from pydantic import ValidationError

        try:
            ir = SpecIR.model_validate_json(text)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first.get("loc", ()))
            raise NcdError(f"{args.from_json} is not ncd IR JSON: {where}: {first.get('msg')}",
                           hint="write it with ncd ir PATH --json") from None
    else:
        import ncd

        ir = ncd.check(args.path, **_spec_sizes(args.path, _sizes(args)))
    print(ir.model_dump_json(indent=2) if args.json else ir_summary(ir))
    return 0


# ----------------------------------------------------------------------------- parser
def cmd_render(args: argparse.Namespace) -> int:
    from ncd import cli_render

    return cli_render.run(args)


def cmd_cost(args: argparse.Namespace) -> int:
    from ncd import cli_cost

    return cli_cost.run(args)


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "check": cmd_check, "compile": cmd_compile, "run": cmd_run, "list": cmd_list, "ir": cmd_ir,
    "render": cmd_render, "cost": cmd_cost,
}


def _add_sizes(p: argparse.ArgumentParser, what: str = "bind axis sizes") -> None:
    p.add_argument("--set", metavar="AX=N", nargs="+", action="extend", type=_size_item,
                   help=f"{what}, e.g. --set D=64 H=4 (put PATHs before --set)")


def _scan_backend_names(live: bool) -> str:
    """The backends' names for --help. Importing the backend pulls in torch, which `ncd check`
    never needs, so the list is read only when help is shown; an unknown name is rejected by
    compile_module with the current list either way."""
    if not live:
        return "see --help"
    from ncd.backends.pytorch import SCAN_BACKENDS

    return ", ".join(SCAN_BACKENDS)


def _add_scan_backend(p: argparse.ArgumentParser, live: bool, what: str = "run every scan with this backend") -> None:
    p.add_argument("--scan-backend", default="auto", metavar="NAME",
                   help=f"{what} ({_scan_backend_names(live)}; default auto: the recurrence pass decides)")


def build_parser(help_wanted: bool = True) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ncd", description="Neural-Circuit-Diagram specs (.ncd) → PyTorch.",
        epilog="A PATH is a .ncd file or the name of a library spec (see `ncd list`). "
               "Exit codes: 0 ok, 1 spec or usage error, 2 bad command line.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("check", help="parse and type-check specs",
                       description="Parse and type-check each spec; print `ok PATH: signature` or the error.")
    p.add_argument("paths", metavar="PATH", nargs="+")
    _add_sizes(p)
    p.add_argument("--json", action="store_true", help="print a JSON list of results")

    p = sub.add_parser("compile", help="emit a spec as Python source",
                       description="Compile a spec with its sizes bound and write readable Python source "
                                   "(needs only torch to import).")
    p.add_argument("path", metavar="PATH")
    _add_sizes(p)
    p.add_argument("--emit", choices=sorted(EMITTERS), default="python", help="what to emit (default python)")
    p.add_argument("-o", "--output", metavar="FILE", help="output file; `-` or none: stdout")
    p.add_argument("--class-name", metavar="NAME", help="class name of the entry block")
    _add_scan_backend(p, help_wanted, "with --explain: plan every scan with this backend")
    p.add_argument("--explain", action="store_true",
                   help="for each scan: location, axis, carries, class and chosen backend "
                        "(to stderr when the source goes to stdout)")

    p = sub.add_parser("run", help="run a spec on random inputs",
                       description=f"Load a spec, run it on random inputs (leading batch axis {BATCH_AXIS}, "
                                   f"default {DEFAULT_BATCH}, then each input's axes) and print shapes, "
                                   "parameter count and a checksum.")
    p.add_argument("path", metavar="PATH")
    _add_sizes(p, f"bind axis sizes ({BATCH_AXIS} sets the batch)")
    p.add_argument("--backward", action="store_true", help="also back-propagate the sum of the outputs")
    p.add_argument("--json", action="store_true", help="print a JSON object")
    p.add_argument("--seed", type=int, default=0, help="seed for parameters and inputs (default 0)")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    _add_scan_backend(p, help_wanted)
    p.add_argument("--fuse-scans", action="store_true",
                   help="compile each Newton step of the newton-backed scans into one fused graph "
                        "(torch.compile; the first call compiles)")

    p = sub.add_parser("list", help="list the bundled spec library",
                       description="List the library specs: name, title and paper (headers only).")
    p.add_argument("--json", action="store_true", help="print a JSON list")

    p = sub.add_parser("ir", help="print a spec's IR",
                       description="Print the checked IR: a summary, or with --json the full IR "
                                   "(which --from-json reads back).")
    p.add_argument("path", metavar="PATH", nargs="?")
    p.add_argument("--from-json", metavar="FILE", help="read IR JSON (from `ncd ir --json`; `-` = stdin)")
    _add_sizes(p)
    p.add_argument("--json", action="store_true", help="print the IR as JSON")

    from ncd import cli_cost, cli_render  # their own modules: each adds a subcommand and its runner

    for extra in (cli_render, cli_cost):
        extra.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(help_wanted=any(a in ("-h", "--help") for a in argv))
    args = parser.parse_args(argv)  # exits 2 on a bad command line, 0 on --help
    try:
        return COMMANDS[args.command](args)
    except NcdError as err:
        err = err.located(None, getattr(args, "path", None) or f"ncd {args.command}")
        if getattr(args, "json", False):
            _emit_json({"ok": False, "error": err.to_json()})
        else:
            print(str(err), file=sys.stderr)
        return 1
    except BrokenPipeError:  # `ncd ... | head`
        return 0


if __name__ == "__main__":
    sys.exit(main())
