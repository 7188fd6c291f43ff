"""Roofline time estimates: each op takes max(FLOPs / peak, bytes / bandwidth) on a named GPU.

Peaks are the vendors' dense (no sparsity) datasheet numbers for the SXM parts. ``matmul`` is
the tensor-core peak for the dtype — float32 matmuls run at the plain fp32 rate, as torch does
by default (``torch.backends.cuda.matmul.allow_tf32 = False``); ``vector`` is the CUDA-core rate
for elementwise work. Override any number with ``roofline(..., peak_flops=, bandwidth=)`` or
``ncd cost --peak-tflops --bandwidth-gbs``.
"""
from __future__ import annotations

from typing import Any

from ncd.errors import NcdError

T = 1e12
GPUS: dict[str, dict[str, Any]] = {
    "h100": {"name": "NVIDIA H100 SXM5 80GB", "bandwidth": 3.35e12,
             "matmul": {"float32": 67 * T, "bfloat16": 989 * T, "float16": 989 * T, "float64": 67 * T},
             "vector": {"float32": 67 * T, "bfloat16": 134 * T, "float16": 134 * T, "float64": 34 * T}},
    "h200": {"name": "NVIDIA H200 SXM 141GB", "bandwidth": 4.8e12,
             "matmul": {"float32": 67 * T, "bfloat16": 989 * T, "float16": 989 * T, "float64": 67 * T},
             "vector": {"float32": 67 * T, "bfloat16": 134 * T, "float16": 134 * T, "float64": 34 * T}},
    "a100": {"name": "NVIDIA A100 SXM4 80GB", "bandwidth": 2.039e12,
             "matmul": {"float32": 19.5 * T, "bfloat16": 312 * T, "float16": 312 * T, "float64": 19.5 * T},
             "vector": {"float32": 19.5 * T, "bfloat16": 78 * T, "float16": 78 * T, "float64": 9.7 * T}},
}
_CANON = {"fp32": "float32", "float": "float32", "bf16": "bfloat16", "fp16": "float16", "half": "float16",
          "fp64": "float64", "double": "float64"}


def gpu_spec(gpu: str, dtype: str, peak_flops: float | None = None, bandwidth: float | None = None) -> dict:
    key = gpu.lower().replace("nvidia", "").replace("-", "").replace(" ", "")
    if key not in GPUS:
        raise NcdError(f"unknown GPU {gpu!r}", hint=f"choose one of {', '.join(GPUS)}, or give --peak-tflops "
                                                  "and --bandwidth-gbs")
    spec = GPUS[key]
    dtype = _CANON.get(dtype, dtype)
    matmul = peak_flops or spec["matmul"][dtype]
    vector = peak_flops or spec["vector"][dtype]
    return {"gpu": key, "name": spec["name"], "dtype": dtype, "matmul_flops_per_s": matmul,
            "vector_flops_per_s": vector, "bandwidth_bytes_per_s": bandwidth or spec["bandwidth"]}


def roofline(report, gpu: str = "h100", *, peak_flops: float | None = None,
             bandwidth: float | None = None) -> dict[str, Any]:
    """Seconds for one forward and one forward+backward pass, op by op (eager, unfused).

    The backward pass of an op moves about twice its forward bytes (reads the saved tensors and
    the incoming gradient, writes a gradient per input). ``ideal_s`` is the fused bound: all the
    FLOPs at peak, or the inputs, outputs and parameters moved once, whichever is slower.
    """
    spec = gpu_spec(gpu, report.dtype, peak_flops, bandwidth)
    mm, vec, bw = spec["matmul_flops_per_s"], spec["vector_flops_per_s"], spec["bandwidth_bytes_per_s"]
    fwd = bwd = 0.0
    for op in report.ops:
        values = [report.number(getattr(op, k)) for k in
                  ("matmul_flops_fwd", "flops_fwd", "matmul_flops_bwd", "flops_bwd", "traffic_bytes")]
        if any(v is None for v in values):
            return {**spec, "time_fwd_s": None, "time_fwd_bwd_s": None, "ideal_s": None,
                    "note": "bind every axis (--set) for a time estimate"}
        mm_f, all_f, mm_b, all_b, traffic = values
        fwd += max(mm_f / mm + (all_f - mm_f) / vec, traffic / bw)
        bwd += max(mm_b / mm + (all_b - mm_b) / vec, 2 * traffic / bw)
    total = report.numbers(report.total)
    needed = [total[k] for k in ("flops_fwd", "flops_bwd", "min_traffic_bytes")]
    if any(v is None for v in needed):  # a spec with no ops still moves its (unbound) inputs
        return {**spec, "time_fwd_s": None, "time_fwd_bwd_s": None, "ideal_s": None,
                "note": "bind every axis (--set) for a time estimate"}
    flops_fwd, flops_bwd, min_traffic = needed
    ideal = max((flops_fwd + flops_bwd) / mm, min_traffic / bw)
    return {**spec, "time_fwd_s": fwd, "time_fwd_bwd_s": fwd + bwd, "ideal_s": ideal}


def format_seconds(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    for unit, scale in (("s", 1), ("ms", 1e-3), ("µs", 1e-6)):
        if seconds >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds / 1e-9:.3g} ns"
