"""Which implementation runs a scan backend on a device, in words.

`ncd run` and `ncd compile --explain` print it, so a user sees whether the Triton kernels or
their PyTorch twins ran: the default install has no triton, and 'auto' keeps Triton to CUDA
tensors (its CPU interpreter is for tests). The parallel runner asks `kernel_backend` what to
dispatch to and records `implementation` for what it ran, so the two cannot disagree.
"""
from __future__ import annotations

import torch

from ncd.backends.pararnn.scan import auto_inner_scan
from ncd.backends.triton._common import MAX_HEAD_DIM, auto_backend, torch_reason


def default_device() -> torch.device:
    """The device `ncd run` and a plain `ncd.load` module run on: CUDA where present."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def kernel_backend(backend: str, device: torch.device, dtype: torch.dtype, head_dim: int | None = None) -> str:
    """'triton' or 'torch': what a parallel scan backend dispatches to on ``device``
    (the Newton solver's inner scans keep float64 in PyTorch, see `auto_inner_scan`; gla and
    delta heads wider than the Triton kernels take, ``head_dim`` = max(K, V), run the twin)."""
    if backend == "newton":
        return auto_inner_scan(device, dtype)
    if backend in ("gla", "delta") and head_dim is not None and head_dim > MAX_HEAD_DIM:
        return "torch"
    return auto_backend(device)


def implementation(backend: str, device: torch.device | str | None = None,
                   dtype: torch.dtype = torch.float32, head_dim: int | None = None) -> str:
    """E.g. 'Triton chunked kernel' or 'chunked PyTorch (triton not installed)' for gla."""
    device = default_device() if device is None else torch.device(device)
    triton = kernel_backend(backend, device, dtype, head_dim) == "triton"
    why = "float64" if auto_backend(device) == "triton" else torch_reason(device)
    if backend in ("gla", "delta") and auto_backend(device) == "triton" and not triton:
        why = f"head dim {head_dim} > {MAX_HEAD_DIM}, the most the Triton kernels take"
    if backend in ("gla", "delta"):
        return "Triton chunked kernel" if triton else f"chunked PyTorch ({why})"
    if backend == "scan":
        return "Triton diagonal scan" if triton else f"PyTorch parallel scan ({why})"
    if backend == "newton":
        return ("Newton iterations, Triton linear scans" if triton
                else f"Newton iterations, PyTorch parallel scans ({why})")
    if backend == "fused_rnn":
        return "torch's fused RNN operator (cuDNN)" if device.type == "cuda" else "torch's fused RNN operator"
    if backend == "fft":
        return "FFT convolution (PyTorch)"
    return "sequential loop (PyTorch)"
