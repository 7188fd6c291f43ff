"""Diagonal linear scan h_t = a_t * h_{t-1} + x_t (Triton, with naive and PyTorch twins).

The one diagonal scan: the torch backend's linear scans and the Newton solver's inner scans
(`ncd.backends.pararnn.scan`) both run it."""
from __future__ import annotations

import torch

from ncd.backends.triton._common import check_dtype, check_ndim, check_same_device, check_shape, pick_backend
from ncd.backends.triton.diagonal.chunk_torch import diag_scan_torch
from ncd.backends.triton.diagonal.naive import naive_diag_scan

__all__ = ["diag_scan", "naive_diag_scan", "diag_scan_torch"]  # diag_scan_triton: in .chunk (imports triton)


def diag_scan(a: torch.Tensor, x: torch.Tensor, h0: torch.Tensor | None = None, *,
              reverse: bool = False, backend: str = "auto") -> tuple[torch.Tensor, torch.Tensor]:
    """Diagonal recurrence h_t = a_t * h_{t-1} + x_t, elementwise over channels.

    Args:
        a: [B, T, D] decay (any sign; zero allowed).
        x: [B, T, D] input, same dtype as ``a``.
        h0: [B, D] initial state, or None for zeros.
        reverse: scan backwards in time, h_t = a_t * h_{t+1} + x_t (h0 is then the state after
            the last step).
        backend: 'auto' (Triton on CUDA, PyTorch elsewhere), 'triton' or 'torch'.

    Returns:
        h: [B, T, D] every state, in x.dtype.
        h_T: [B, D] final state of the walk (h_0 when ``reverse``), float32 (float64 for
            float64 inputs).
    """
    check_ndim("x", x, 3, "[B, T, D]")
    check_ndim("a", a, 3, "[B, T, D]")
    check_shape("a", a, tuple(x.shape), "[B, T, D]")
    check_dtype("x", x)
    check_dtype("a", a)
    if a.dtype != x.dtype:
        raise ValueError(f"a and x must share a dtype, got a {a.dtype} and x {x.dtype}")
    if h0 is not None:
        check_ndim("h0", h0, 2, "[B, D]")
        check_shape("h0", h0, (x.shape[0], x.shape[2]), "[B, D]")
        check_dtype("h0", h0)
    check_same_device(a=a, x=x, h0=h0)
    if pick_backend(backend, x.device) == "torch":
        return diag_scan_torch(a, x, h0, reverse)
    from ncd.backends.triton.diagonal.chunk import diag_scan_triton  # imports triton: only where the kernel launches

    return diag_scan_triton(a, x, h0, reverse)
