"""Every Triton launch at the benchmark shapes compiles for an H100 (sm_90) and fits it.

No GPU is needed: Triton's wheel carries LLVM and ptxas, and `ncd.backends.triton.aot` compiles
the launches our wrappers issue and reads ptxas's report. A launch that needs more shared memory
than an SM has cannot start on the card at all; registers spilled to local memory make a
kernel slow. ptxas is the oracle here, not our code. Runs in a subprocess because the kernels
must be JIT functions, and this test session imports them under TRITON_INTERPRET.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

triton = pytest.importorskip("triton")


def _has_cuda_toolchain() -> bool:
    try:
        from triton.backends.nvidia.compiler import get_ptxas
        return os.path.exists(get_ptxas(90).path)
    except (ImportError, AttributeError, RuntimeError):  # no NVIDIA backend in this build
        return False


pytestmark = pytest.mark.skipif(not _has_cuda_toolchain(),
                                reason="this Triton build carries no NVIDIA backend/ptxas")

# The shapes the issues' speed targets are judged at: these must not spill.
SPEED_CRITICAL = [
    "gla B8 T2048 H16 K=V=128 bf16",
    "gla B2 T8192 H16 K=V=128 bf16",
    "delta B8 T2048 H16 K=V=128 bf16",
    "diag_scan [8, 4096, 8192] fp32",
    "newton diag B16 T4096 N1024",
    "newton block2 B16 T4096 N1024",
]
# Shapes that must run correctly (fit on the card) even if a spill costs some speed.
MUST_FIT = [
    "gla B8 T2048 H16 K=V=128 fp32",
    "gla B8 T2048 H16 K=V=64 bf16",
    "delta B8 T2048 H16 K=V=128 fp32",
    "diag_scan [8, 4096, 8192] bf16",
]


def compile_report(workload: str) -> list[dict]:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    proc = subprocess.run([sys.executable, "-m", "ncd.backends.triton.aot", "--json",
                           "--only", workload], capture_output=True, text=True, env=env, check=False,
                          timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    launches = [r for r in json.loads(proc.stdout)["launches"] if r["workload"] == workload]
    assert launches, f"no launches recorded for {workload!r}"
    return launches


def describe(r: dict) -> str:
    return (f"{r['kernel']}: {r['registers']} regs, {r['spill_stores']}+{r['spill_loads']} B "
            f"spilled, {r['shared_bytes'] / 1024:.0f} KiB shared, {r['blocks_per_sm']}/SM "
            f"({r['limited_by']})")


@pytest.mark.parametrize("workload", SPEED_CRITICAL)
def test_benchmark_launches_fit_without_spills(workload):
    rows = compile_report(workload)
    bad = [describe(r) for r in rows
           if r["blocks_per_sm"] < 1 or r["spill_stores"] or r["spill_loads"]]
    assert not bad, f"{workload}: " + "; ".join(bad)


@pytest.mark.parametrize("workload", MUST_FIT)
def test_other_launches_fit(workload):
    rows = compile_report(workload)
    bad = [describe(r) for r in rows if r["blocks_per_sm"] < 1]
    assert not bad, f"{workload}: " + "; ".join(bad)
