"""Costs to write on a diagram's boxes (``ncd render --annotate``), from the same analysis as
``ncd cost``: each op's and each block instance's FLOPs, parameters, memory or roofline time, as
a number at the bound sizes or, where an axis is free, as the formula.

- flops: forward FLOPs of the op / of everything in the block.
- params: a parameter's element count / the block's parameters.
- memory: the bytes an op moves (its traffic) / the activation bytes a block saves for backward.
- time: the op's roofline time forward (max of FLOPs at peak and bytes at bandwidth) / the sum
  over the block's ops; needs every axis bound (``--set B=8 T=128``).
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import sympy

from ncd.errors import NcdError
from ncd.ir import PARAM, SpecIR

METRICS = ("flops", "params", "memory", "time")


@dataclass
class Annotations:
    metric: str
    ops: dict[tuple[str, str], str] = field(default_factory=dict)  # (block path, node id) → text
    blocks: dict[str, str] = field(default_factory=dict)  # block path → text
    params: dict[tuple[str, str], str] = field(default_factory=dict)  # (block path, param name) → text


def annotations(ir: SpecIR, metric: str, sizes: Mapping[str, int] | None = None, *, gpu: str = "h100",
                dtype: str = "float32") -> Annotations:
    from ncd.analysis import analyze
    from ncd.analysis.format import human, pretty
    from ncd.analysis.timing import format_seconds, gpu_spec

    if metric not in METRICS:
        raise NcdError(f"cannot annotate {metric!r}", hint=f"choose one of {', '.join(METRICS)}")
    report = analyze(ir, sizes, dtype=dtype)
    out = Annotations(metric)

    def show(expr, unit: str = "") -> str:
        value = report.number(expr)
        return human(value, unit) if value is not None else pretty(sympy.expand(expr))

    if metric == "flops":
        out.ops = {(o.path, o.id): f"{show(o.flops_fwd)} FLOPs" for o in report.ops if report.number(o.flops_fwd) != 0}
        out.blocks = {p: f"{show(f['flops_fwd'])} FLOPs" for p, f in report.blocks.items()}
    elif metric == "params":
        for path, key in report.analyzer.blocks.items():
            for p in ir.blocks[key].params:
                if p.kind == PARAM:
                    count = sympy.Mul(*[report.size(a) for a in p.type.axes])
                    out.params[(path, p.name)] = f"{show(count)} params"
        out.blocks = {p: f"{show(f['params'])} params" for p, f in report.blocks.items()}
    elif metric == "memory":
        out.ops = {(o.path, o.id): f"moves {show(o.traffic_bytes, 'B')}" for o in report.ops
                   if report.number(o.traffic_bytes) != 0}
        out.blocks = {p: f"saves {show(f['activation_bytes'], 'B')}" for p, f in report.blocks.items()}
    else:
        spec = gpu_spec(gpu, dtype)
        seconds: dict[tuple[str, str], float] = {}
        for o in report.ops:
            values = [report.number(x) for x in (o.matmul_flops_fwd, o.flops_fwd, o.traffic_bytes)]
            if any(v is None for v in values):
                free = report.size.unbound(o.flops_fwd + o.traffic_bytes)
                raise NcdError(f"--annotate time needs every axis bound; {', '.join(free)} is free",
                               hint=f"bind it: --set {free[0] if free else 'B'}=...")
            mm, total, traffic = values
            seconds[(o.path, o.id)] = max(mm / spec["matmul_flops_per_s"]
                                          + (total - mm) / spec["vector_flops_per_s"],
                                          traffic / spec["bandwidth_bytes_per_s"])
        out.ops = {k: format_seconds(v) for k, v in seconds.items() if v > 0}
        for path in report.blocks:
            inside = sum(v for (p, _), v in seconds.items() if p == path or p.startswith(path + "/"))
            out.blocks[path] = f"{format_seconds(inside)} on {gpu}"
    return out
