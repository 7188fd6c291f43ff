"""Compile our Triton kernels for a GPU that is not here, and read what each one costs it.

A GPU is lent to few sessions, but Triton's wheel carries the NVIDIA compiler chain (LLVM to
PTX, then ptxas), so every kernel can be compiled on a CPU-only machine for the card we
benchmark on.  ptxas then tells us what decides whether a kernel runs fast at all: registers per
thread, bytes spilled to local memory, shared memory per program and hence occupancy.  A kernel
that spills or does not fit in shared memory is found here, before a device call is spent.

The launches are the real ones: each workload calls our launch wrappers on ``meta`` tensors of
the benchmark's shapes while `recorded_launches` stands in for `JITFunction.run`, so the
block sizes, warps and stages compiled are exactly those the wrappers choose.

Run it as ``python -m ncd.backends.triton.aot`` (``--json`` for machines); it needs the
kernels imported as JIT functions, i.e. TRITON_INTERPRET unset.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from typing import Any

import torch

LAUNCH_OPTIONS = ("num_warps", "num_stages", "num_ctas", "maxnreg")
TORCH_TO_TRITON = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16",
                   torch.float64: "fp64", torch.int32: "i32", torch.int64: "i64",
                   torch.bool: "i1"}


@dataclasses.dataclass(frozen=True)
class Card:
    """The per-SM limits occupancy is computed from (CUDA occupancy calculator's rules)."""

    name: str
    arch: int
    sms: int
    regs_per_sm: int = 65536
    max_warps_per_sm: int = 64
    max_blocks_per_sm: int = 32
    smem_per_sm: int = 233472          # 228 KiB
    smem_per_block: int = 232448       # 227 KiB usable by one program
    smem_reserved_per_block: int = 1024


CARDS = {"h100": Card("H100 SXM", 90, 132), "h200": Card("H200", 90, 132)}


@dataclasses.dataclass(frozen=True)
class Launch:
    """One kernel launch as a wrapper issued it: arguments bound to names, plus options."""

    kernel: Any                  # triton.runtime.jit.JITFunction
    grid: tuple[int, ...]
    args: dict[str, Any]
    options: dict[str, int]

    @property
    def name(self) -> str:
        return self.kernel.fn.__name__

    @property
    def programs(self) -> int:
        return math.prod(self.grid)


@dataclasses.dataclass(frozen=True)
class Resources:
    """What ptxas reports for one compiled launch, and the occupancy that follows."""

    workload: str
    kernel: str
    grid: tuple[int, ...]
    num_warps: int
    num_stages: int
    registers: int
    spill_stores: int
    spill_loads: int
    stack_bytes: int
    shared_bytes: int
    blocks_per_sm: int
    limited_by: str

    @property
    def spills(self) -> bool:
        return self.spill_stores > 0 or self.spill_loads > 0


@contextlib.contextmanager
def recorded_launches() -> Iterator[list[Launch]]:
    """Within the block, launching a JIT kernel records it instead of running it.

    Patches the class (restored on exit), so it is for this tool only, one thread at a time.
    """
    from triton.runtime.jit import JITFunction

    launches: list[Launch] = []
    original = JITFunction.run

    def record(self, *args, grid, warmup=False, **kwargs):
        options = {k: kwargs.pop(k) for k in LAUNCH_OPTIONS if k in kwargs}
        bound = dict(zip(self.arg_names, args))
        bound.update(kwargs)
        missing = [n for n in self.arg_names if n not in bound]
        if missing:
            raise TypeError(f"{self.fn.__name__}: launch leaves {missing} unset")
        grid = grid(bound) if callable(grid) else grid
        launches.append(Launch(self, tuple(int(g) for g in grid), bound, options))

    JITFunction.run = record
    try:
        yield launches
    finally:
        JITFunction.run = original


def _signature(launch: Launch) -> tuple[dict[str, str], dict[tuple[int, ...], Any],
                                        dict[tuple[int, ...], list]]:
    """Triton signature, constexprs and attributes, specialised as the JIT would at run time:
    pointers 16-byte aligned, integers equal to 1 folded, multiples of 16 marked so."""
    sig: dict[str, str] = {}
    constexprs: dict[tuple[int, ...], Any] = {}
    attrs: dict[tuple[int, ...], list] = {}
    for i, (name, param) in enumerate(zip(launch.kernel.arg_names, launch.kernel.params)):
        value = launch.args[name]
        if param.is_constexpr or value is None:
            sig[name] = "constexpr"
            constexprs[(i,)] = value
        elif isinstance(value, torch.Tensor):
            sig[name] = "*" + TORCH_TO_TRITON[value.dtype]
            attrs[(i,)] = [["tt.divisibility", 16]]
        elif isinstance(value, bool):
            sig[name] = "i1"
        elif isinstance(value, int):
            if value == 1:
                sig[name] = "constexpr"
                constexprs[(i,)] = 1
                continue
            sig[name] = "i32" if -2**31 <= value < 2**31 else "i64"
            if value % 16 == 0:
                attrs[(i,)] = [["tt.divisibility", 16]]
        elif isinstance(value, float):
            sig[name] = "fp32"
        else:
            raise TypeError(f"{launch.name}: cannot type argument {name}={value!r}")
    return sig, constexprs, attrs


def _ptxas(arch: int) -> str:
    """The ptxas Triton itself uses for `arch` (its wheel bundles one per PTX version)."""
    from triton.backends.nvidia.compiler import get_ptxas

    path = get_ptxas(arch).path
    if not path or not os.path.exists(path):
        raise RuntimeError(f"this Triton install has no ptxas for sm_{arch} (looked at {path})")
    return path


_PTXAS_USAGE = re.compile(r"Used (\d+) registers")
_PTXAS_STACK = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, "
                          r"(\d+) bytes spill loads")


def _ptxas_usage(ptx: str, arch: int) -> tuple[int, int, int, int]:
    """(registers, stack bytes, spill-store bytes, spill-load bytes) from `ptxas -v`, run
    with the flags Triton's own cubin step passes."""
    suffix = "a" if arch >= 90 else ""
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "k.ptx")
        with open(src, "w") as f:
            f.write(ptx)
        proc = subprocess.run([_ptxas(arch), "-v", "--regAllocOptLevel=2",
                               f"--gpu-name=sm_{arch}{suffix}", src,
                               "-o", os.path.join(tmp, "k.cubin")],
                              capture_output=True, text=True, check=True)
    log = proc.stdout + proc.stderr
    regs, stack = _PTXAS_USAGE.search(log), _PTXAS_STACK.search(log)
    if regs is None or stack is None:
        raise RuntimeError(f"unexpected ptxas output:\n{log}")
    return int(regs.group(1)), int(stack.group(1)), int(stack.group(2)), int(stack.group(3))


def occupancy(card: Card, registers: int, num_warps: int, shared: int) -> tuple[int, str]:
    """Programs resident per SM, and which limit binds (registers, warps or shared memory)."""
    warp_regs = math.ceil(registers * 32 / 256) * 256          # allocated per warp, 256 at a time
    limits = {
        "registers": card.regs_per_sm // (warp_regs * num_warps),
        "warps": card.max_warps_per_sm // num_warps,
        "blocks": card.max_blocks_per_sm,
    }
    if shared:
        limits["shared"] = card.smem_per_sm // (shared + card.smem_reserved_per_block)
    if shared > card.smem_per_block:
        return 0, "shared"
    binding = min(limits, key=lambda k: limits[k])
    return limits[binding], binding


def compile_launch(launch: Launch, card: Card, workload: str = "") -> Resources:
    """Compile one recorded launch for `card` and read its resources."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    sig, constexprs, attrs = _signature(launch)
    src = ASTSource(launch.kernel, sig, constexprs=constexprs, attrs=attrs)
    num_warps = launch.options.get("num_warps", 4)
    num_stages = launch.options.get("num_stages", 3)
    compiled = triton.compile(src, target=GPUTarget("cuda", card.arch, 32),
                              options={"num_warps": num_warps, "num_stages": num_stages})
    regs, stack, stores, loads = _ptxas_usage(compiled.asm["ptx"], card.arch)
    shared = int(compiled.metadata.shared)
    blocks, limit = occupancy(card, regs, num_warps, shared)
    return Resources(workload, launch.name, launch.grid, num_warps, num_stages, regs, stores,
                     loads, stack, shared, blocks, limit)


# ------------------------------------------------------------------------------ workloads
def _meta(*shape: int, dtype: torch.dtype) -> torch.Tensor:
    return torch.empty(*shape, device="meta", dtype=dtype)


def _gla(B: int, T: int, H: int, K: int, V: int, dtype: torch.dtype) -> None:
    from ncd.backends.triton.gated_linear.chunk import gla_bwd, gla_fwd

    q, k, g = (_meta(B, T, H, K, dtype=dtype) for _ in range(3))
    v = _meta(B, T, H, V, dtype=dtype)
    h0 = _meta(B, H, K, V, dtype=torch.float32)
    o, hT, saved = gla_fwd(q, k, v, g, K ** -0.5, h0)
    gla_bwd(q, k, v, g, K ** -0.5, h0, saved, hT, torch.empty_like(o), torch.empty_like(hT))


def _delta(B: int, T: int, H: int, K: int, V: int, dtype: torch.dtype) -> None:
    from ncd.backends.triton.delta.chunk import delta_rule_bwd, delta_rule_fwd

    q, k = _meta(B, T, H, K, dtype=dtype), _meta(B, T, H, K, dtype=dtype)
    v, beta = _meta(B, T, H, V, dtype=dtype), _meta(B, T, H, dtype=dtype)
    h0 = _meta(B, H, K, V, dtype=torch.float32)
    o, hT, extras = delta_rule_fwd(q, k, v, beta, K ** -0.5, h0)
    delta_rule_bwd(q, k, v, beta, K ** -0.5, h0, extras, torch.empty_like(o),
                   torch.empty_like(hT))


def _diag_scan(B: int, T: int, D: int, dtype: torch.dtype) -> None:
    from ncd.backends.triton.diagonal.chunk import scan_bwd, scan_fwd

    a, x = _meta(B, T, D, dtype=dtype), _meta(B, T, D, dtype=dtype)
    h, _ = scan_fwd(a, x, None)
    scan_bwd(a, h, None, torch.empty_like(h), None)


def _newton_scan(B: int, T: int, N: int, k: int | None) -> None:
    from ncd.backends.pararnn.scan_triton import scan_triton

    if k is None:
        a, b = _meta(B, T, N, dtype=torch.float32), _meta(B, T, N, dtype=torch.float32)
        scan_triton(a, b, "diag")
        scan_triton(a, b, "diag", reverse=True)
    else:
        a = _meta(B, T, N // k, k, k, dtype=torch.float32)
        b = _meta(B, T, N // k, k, dtype=torch.float32)
        scan_triton(a, b, "block")
        scan_triton(a, b, "block", reverse=True)


def workloads() -> dict[str, Callable[[], None]]:
    """The benchmark shapes of issues 3 and 4 (bench/linear.py, bench/pararnn.py)."""
    bf16, fp32 = torch.bfloat16, torch.float32
    return {
        "gla B8 T2048 H16 K=V=128 bf16": lambda: _gla(8, 2048, 16, 128, 128, bf16),
        "gla B2 T8192 H16 K=V=128 bf16": lambda: _gla(2, 8192, 16, 128, 128, bf16),
        "gla B8 T2048 H16 K=V=128 fp32": lambda: _gla(8, 2048, 16, 128, 128, fp32),
        "gla B8 T2048 H16 K=V=64 bf16": lambda: _gla(8, 2048, 16, 64, 64, bf16),
        "delta B8 T2048 H16 K=V=128 bf16": lambda: _delta(8, 2048, 16, 128, 128, bf16),
        "delta B8 T2048 H16 K=V=128 fp32": lambda: _delta(8, 2048, 16, 128, 128, fp32),
        "diag_scan [8, 4096, 8192] fp32": lambda: _diag_scan(8, 4096, 8192, fp32),
        "diag_scan [8, 4096, 8192] bf16": lambda: _diag_scan(8, 4096, 8192, bf16),
        "newton diag B16 T4096 N1024": lambda: _newton_scan(16, 4096, 1024, None),
        "newton block2 B16 T4096 N1024": lambda: _newton_scan(16, 4096, 1024, 2),
    }


def report(card: Card, only: str | None = None,
           progress: Callable[[str], None] | None = None) -> list[Resources]:
    """Compile every recorded launch of every workload (whose name contains `only`)."""
    out: list[Resources] = []
    for name, run in workloads().items():
        if only and only not in name:
            continue
        with recorded_launches() as launches:
            run()
        seen: set[tuple] = set()
        for launch in launches:
            key = (launch.name, tuple(sorted((k, repr(v)) for k, v in launch.options.items())),
                   tuple(sorted((k, v) for k, v in launch.args.items()
                                if not isinstance(v, torch.Tensor))))
            if key in seen:
                continue
            seen.add(key)
            if progress:
                progress(f"{name}: {launch.name}")
            out.append(compile_launch(launch, card, name))
    return out


def format_table(rows: list[Resources], card: Card) -> str:
    head = (f"{'workload':34} {'kernel':22} {'warps':>5} {'stg':>3} {'regs':>4} {'spill B':>8} "
            f"{'smem KiB':>8} {'blk/SM':>6} {'limit':>9} {'waves':>6}")
    lines = [f"compiled for {card.name} (sm_{card.arch}a, {card.sms} SMs)", head,
             "-" * len(head)]
    for r in rows:
        waves = math.prod(r.grid) / max(1, card.sms * r.blocks_per_sm)
        lines.append(f"{r.workload[:34]:34} {r.kernel[:22]:22} {r.num_warps:5d} "
                     f"{r.num_stages:3d} {r.registers:4d} {r.spill_stores + r.spill_loads:8d} "
                     f"{r.shared_bytes / 1024:8.1f} {r.blocks_per_sm:6d} {r.limited_by:>9} "
                     f"{waves:6.2f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ncd.backends.triton.aot",
        description="Compile ncd's Triton kernels for a GPU offline and report registers, "
                    "spills, shared memory and occupancy per launch.")
    parser.add_argument("--card", choices=sorted(CARDS), default="h100")
    parser.add_argument("--only", help="only workloads whose name contains this")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET", "0") == "1":
        parser.error("unset TRITON_INTERPRET: the interpreter replaces the JIT kernels")
    card = CARDS[args.card]

    def progress(msg: str) -> None:
        print(f"compiling {msg}", file=sys.stderr, flush=True)

    rows = report(card, args.only, None if args.json else progress)
    if args.json:
        print(json.dumps({"card": dataclasses.asdict(card),
                          "launches": [dataclasses.asdict(r) for r in rows]}, indent=1))
    else:
        print(format_table(rows, card))
    return 0


if __name__ == "__main__":
    sys.exit(main())
