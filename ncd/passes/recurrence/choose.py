"""Choose each scan's backend from its class, and hold a requested one to what it can run
(the admission rules are the scan-backend registry's, ncd/scan_backends.py)."""
from __future__ import annotations

from ncd.passes.recurrence.plan import Structure


def choose_backend(structure: Structure, linear: bool, requested: str | None,
                   kernel_matched: bool = False, unmatched: str | None = None) -> tuple[str, str]:
    """``unmatched``: for a gla/delta step the kernel did not take, what did not fit."""
    if requested not in (None, "auto"):
        return requested, f"backend {requested} requested"
    if linear:
        if structure == "diagonal":
            return "scan", "runs as a parallel diagonal scan (Triton on CUDA, a log-depth PyTorch scan on a CPU)"
        if structure == "gla":
            if kernel_matched:
                return "gla", ("runs as the chunked gated-linear-attention kernel (Triton on CUDA, its chunked "
                               "PyTorch twin on a CPU)")
            return "scan", ("runs as a parallel diagonal scan over the state's axes, not the GLA kernel, which "
                            "takes S = α·S + k·v read out by q @[K] S with head axes elementwise: "
                            f"{unmatched or 'the step is not in that form'}")
        if structure == "time_invariant":
            return "fft", "runs as a causal convolution with kernel Aⁱ computed by FFT"
        if structure == "delta":
            if kernel_matched:
                return "delta", "runs as the chunked delta-rule kernel (Triton on CUDA, its chunked PyTorch twin on a CPU)"
            return "sequential", ("runs as the sequential loop, not the delta kernel, which takes "
                                  "S − β·k·(k @[K] S) + β·k·v read out by q @[K] S with head axes elementwise: "
                                  f"{unmatched or 'the step is not in that form'}")
        return "sequential", "no parallel lowering for this affine class yet"
    if structure in ("diagonal", "block"):
        return "newton", "solved in parallel over time by Newton's method (ParaRNN)"
    return "sequential", "a dense nonlinear step stays a sequential loop (Newton would need the full Jacobian)"
