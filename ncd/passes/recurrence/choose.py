"""Choose each scan's backend from its class, and hold a requested one to what it can run
(the admission rules are the scan-backend registry's, ncd/scan_backends.py)."""
from __future__ import annotations

from ncd.passes.recurrence.plan import Structure


CELL_NAMES = {"lstm": "LSTM", "gru": "GRU", "rnn_tanh": "Elman (tanh)", "rnn_relu": "Elman (ReLU)"}


def choose_backend(structure: Structure, linear: bool, requested: str | None,
                   kernel_matched: bool = False, unmatched: str | None = None,
                   cell: str | None = None, cell_miss: str | None = None) -> tuple[str, str]:
    """``unmatched``: for a gla/delta step the kernel did not take, what did not fit. ``cell``:
    the standard cell the step was proved to be (ncd/passes/recurrence/cells.py); ``cell_miss``:
    for a nonlinear step that is none, why."""
    if requested not in (None, "auto"):
        return requested, f"backend {requested} requested"
    if cell is not None:
        return "fused_rnn", (f"the step is exactly torch's {CELL_NAMES[cell]} cell (gates and weights read off "
                             f"the spec, permuted to torch's layout): torch's fused RNN operator")
    backend, why = _by_class(structure, linear, kernel_matched, unmatched)
    if cell_miss and not linear:
        why = f"{why}; not torch's fused RNN cell: {cell_miss}"
    return backend, why


def _by_class(structure: Structure, linear: bool, kernel_matched: bool,
              unmatched: str | None) -> tuple[str, str]:
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
