"""`ncd run`: load a spec, run it on random inputs, print shapes, parameters and a checksum."""
from __future__ import annotations

import argparse
import contextlib
import math
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from ncd.cli.common import add_block, BATCH_AXIS, DEFAULT_BATCH, axis_size, declared_axes, emit_json, fmt_axes, known_sizes
from ncd.cli.options import add_scan_backend, add_sizes, bound_sizes, seed_value
from ncd.errors import NcdError
from ncd.ir import INPUT

if TYPE_CHECKING:
    from ncd.backends.pytorch.allocation import Tensor


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser("run", help="run a spec on random inputs",
                              description=f"Load a spec, run it on random inputs (leading batch axis {BATCH_AXIS}, "
                                          f"default {DEFAULT_BATCH}, then each input's axes) and print shapes, "
                                          "parameter count and a checksum.")
    p.add_argument("path", metavar="PATH")
    add_sizes(p, f"bind axis sizes ({BATCH_AXIS} sets the batch)")
    add_block(p)
    p.add_argument("--backward", action="store_true", help="also back-propagate the sum of the outputs")
    p.add_argument("--json", action="store_true", help="print a JSON object")
    p.add_argument("--seed", type=seed_value, default=0,
                   help="seed for parameters and inputs, 0 to 2^64-1 (default 0)")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    add_scan_backend(p)
    p.add_argument("--fuse-scans", action="store_true",
                   help="compile each Newton step of the newton-backed scans into one fused graph "
                        "(torch.compile; the first call compiles)")
    p.add_argument("--memory-limit", metavar="SIZE", default=None,
                   help="bytes the parameters, buffers and inputs may take, e.g. 8GB or 512MiB (default: "
                        "half of this process's memory, or NCD_MEMORY_LIMIT; docs/limits.md)")
    p.set_defaults(func=run)
    return p


def _input_shape(ir: Any, port: Any, batch: int | None) -> tuple[int, ...]:
    shape = []
    for axis in port.type.axes:
        size = axis_size(ir, axis)
        if size is None:
            raise NcdError(f"input {port.name} {fmt_axes(port.type.axes)}: axis {axis} has no size",
                           hint=f"bind it: ncd run {ir.name} --set {axis.rstrip(chr(39))}=N")
        shape.append(size)
    if port.type.lifted and batch is not None:
        shape.insert(0, batch)
    return tuple(shape)


def _input_tensors(entry: Any, shapes: list[tuple[int, ...]], dtype: Any, backward: bool) -> list[Tensor]:
    """The random inputs `ncd run` creates (their gradients too with --backward), at their ports."""
    import torch

    from ncd.backends.pytorch.allocation import Tensor

    width = torch.tensor([], dtype=dtype).element_size()
    ports = [n for n in entry.nodes if n.op == INPUT]
    spans = [n.loc.span if n.loc else None for n in ports] if len(ports) == len(shapes) else [None] * len(shapes)
    return [Tensor(f"input {p.name}", s, 2 if backward else 1, width, span)
            for p, s, span in zip(entry.inputs, shapes, spans)]


@contextlib.contextmanager
def _out_of_memory_as_error() -> Iterator[None]:
    """The activations are not budgeted in advance: an allocator failure becomes an NcdError."""
    import torch

    try:
        yield
    except (torch.OutOfMemoryError, MemoryError, RuntimeError) as exc:
        text = str(exc)
        if isinstance(exc, RuntimeError) and not isinstance(exc, torch.OutOfMemoryError) and \
                "can't allocate memory" not in text and "out of memory" not in text:
            raise
        first = text.splitlines()[0][:200] if text else "MemoryError"
        raise NcdError(f"ran out of memory while running the spec: {first}",
                       hint="bind smaller sizes (a smaller batch: --set B=...), or raise --memory-limit") from None


def run_spec(path: str, sizes: dict[str, int], *, seed: int = 0, dtype: str = "float32",
             backward: bool = False, scan_backend: str = "auto", fuse_scans: bool = False,
             memory_limit: int | str | None = None, block: str | None = None) -> dict[str, Any]:
    """Load a spec, run it on random inputs; the record `ncd run --json` prints.

    The inputs, then the parameters with the inputs, are compared with the memory limit before
    they are allocated (docs/limits.md); an allocator failure while running is an NcdError too."""
    import torch

    from ncd.api import load_compiled, run_pipeline
    from ncd.backends.pytorch.implementations import implementation
    from ncd.backends.pytorch.allocation import Tensor, check_budget
    from ncd.limits import default_memory_limit, parse_bytes
    from ncd.samples import random_input

    limit = default_memory_limit() if memory_limit is None else parse_bytes(memory_limit, "--memory-limit")

    declared = declared_axes(path)
    spec_sizes = dict(sizes)
    batch: int | None = DEFAULT_BATCH
    if BATCH_AXIS not in declared:
        batch = spec_sizes.pop(BATCH_AXIS, DEFAULT_BATCH)
    compiled = run_pipeline(path, block=block, scan_backend=scan_backend, sizes=spec_sizes)  # the passes run once
    ir = compiled.ir
    entry = ir.entry_block
    if BATCH_AXIS in declared and any(BATCH_AXIS in p.type.axes for p in entry.inputs):
        batch = None  # the spec names its batch axis itself
    elif BATCH_AXIS in declared:
        batch = axis_size(ir, BATCH_AXIS) or DEFAULT_BATCH
    shapes = [_input_shape(ir, port, batch) for port in entry.inputs]
    torch_dtype = {"float32": torch.float32, "float64": torch.float64}[dtype]

    wanted = _input_tensors(entry, shapes, torch_dtype, backward)
    check_budget(wanted, limit, f"the inputs of {entry.name}")  # before loading: the shapes alone may be absurd
    torch.manual_seed(seed)
    module = load_compiled(compiled, fuse_scans=fuse_scans, memory_limit=limit).to(torch_dtype)
    held = sum(t.numel() for t in module.state_dict().values())
    check_budget(wanted + [Tensor(f"the parameters and buffers of {entry.name}", (held,), 1, wanted[0].itemsize
                                  if wanted else 4, None)], limit, f"running {entry.name}")
    inputs = [random_input(port.type, shape, torch_dtype, backward) for port, shape in zip(entry.inputs, shapes)]
    start = time.perf_counter()
    with _out_of_memory_as_error(), torch.set_grad_enabled(backward):
        out = module(*inputs)
        outs = list(out) if isinstance(out, tuple) else [out]
        total = sum(o.sum() for o in outs)
        forward_ms = (time.perf_counter() - start) * 1e3
        ran = _implementations_ran(module)
        record: dict[str, Any] = {
            "spec": path,
            "entry": entry.name,
            "sizes": {**({BATCH_AXIS: batch} if batch is not None else {}), **known_sizes(ir)},
            "dtype": dtype,
            "seed": seed,
            "inputs": [{"name": p.name, "axes": ([BATCH_AXIS] if p.type.lifted and batch is not None else [])
                        + list(p.type.axes), "shape": list(s)} for p, s in zip(entry.inputs, shapes)],
            "outputs": [],
            "params": sum(p.numel() for p in module.parameters()),
            "scans": [{"line": p.loc.line if p.loc else None, "file": p.loc.file if p.loc else None,
                       "axis": p.axis, "backend": p.backend,
                       "implementation": ran.get((p.block, p.node)) or implementation(p.backend, None, torch_dtype),
                       "fused": fuse_scans and p.backend == "newton"}
                      for p in getattr(module, "scan_plans", [])],
            "checksum": float(total.detach()),
            "abs_sum": float(sum(o.detach().double().abs().sum() for o in outs)),  # a bool output has no abs
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


def _implementations_ran(module: Any) -> dict[tuple[str, str], str]:
    """What each parallel scan ran in the forward just done (Triton kernel or PyTorch twin), keyed
    like the scan plans; a scan not recorded is described by `implementation` for this machine."""
    from ncd.backends.pytorch.module import CompiledModule

    ran: dict[tuple[str, str], str] = {}
    for sub in module.modules():
        for scan in sub.parallel_scans() if isinstance(sub, CompiledModule) else ():
            if scan.implementation is not None:
                ran[(scan.loop.plan.block, scan.loop.plan.node)] = scan.implementation
    return ran


def run(args: argparse.Namespace) -> int:
    record = run_spec(args.path, bound_sizes(args), seed=args.seed, dtype=args.dtype, backward=args.backward,
                      scan_backend=args.scan_backend, fuse_scans=args.fuse_scans,
                      memory_limit=args.memory_limit, block=args.block)
    if args.json:
        emit_json(record)
        return 0
    print(f"{record['spec']}: entry {record['entry']}, {record['dtype']}, seed {record['seed']}")
    print("  sizes:   " + ", ".join(f"{k}={v}" for k, v in sorted(record["sizes"].items())))
    for item in record["inputs"]:
        print(f"  input   {item['name']}: {fmt_axes(item['axes'])} = {tuple(item['shape'])}")
    for i, item in enumerate(record["outputs"]):
        print(f"  output  {i}: {fmt_axes(item['axes'])} = {tuple(item['shape'])}")
    print(f"  params:  {record['params']:,}")
    for scan in record["scans"]:
        where = f"line {scan['line']}" + (f" of {scan['file']}" if scan.get("file") else "")
        print(f"  scan    {where} over {scan['axis']}: {scan['backend']}: {scan['implementation']}")
    print(f"  checksum: sum {record['checksum']:.6g}, sum of |.| {record['abs_sum']:.6g} "
          f"(of the outputs)   forward {record['forward_ms']:.1f} ms")
    if "grad_norm" in record:
        print(f"  grad-norm (parameters): {record['grad_norm']:.6g}   backward {record['backward_ms']:.1f} ms")
    return 0
