"""Diagonal linear scan h_t = a_t * h_{t-1} + x_t (Triton, with naive and PyTorch twins).

The one diagonal scan: the torch backend's linear scans and the Newton solver's inner scans
(`ncd.backends.pararnn.scan`) both run it."""
from __future__ import annotations

import torch

from ncd.backends.triton._common import check_dtype, check_ndim, check_same_device, check_shape, pick_backend
from ncd.backends.triton.diagonal.chunk_torch import diag_scan_torch
from ncd.backends.triton.diagonal.naive import naive_diag_scan
from ncd.backends.triton.packed import check_cu_seqlens, check_packed_batch, segmented

__all__ = ["diag_scan", "naive_diag_scan", "diag_scan_torch"]  # diag_scan_triton: in .chunk (imports triton)


def diag_scan(a: torch.Tensor, x: torch.Tensor, h0: torch.Tensor | None = None, *,
              reverse: bool = False, backend: str = "auto", cu_seqlens: torch.Tensor | None = None
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """Diagonal recurrence h_t = a_t * h_{t-1} + x_t, elementwise over channels.

    Args:
        a: [B, T, D] decay (any sign; zero allowed).
        x: [B, T, D] input, same dtype as ``a``.
        h0: [B, D] initial state, or None for zeros.
        reverse: scan backwards in time, h_t = a_t * h_{t+1} + x_t (h0 is then the state after
            the last step).
        backend: 'auto' (Triton on CUDA, PyTorch elsewhere), 'triton' or 'torch'.
        cu_seqlens: [N + 1] int offsets of N sequences packed along T (fla's convention; then
            B = 1, h0 and h_T are [N, D]): each sequence is scanned alone from its own h0,
            natively by the Triton kernels, one sequence at a time by the PyTorch twin.

    Returns:
        h: [B, T, D] every state, in x.dtype.
        h_T: [B, D] final state of the walk (h_0 when ``reverse``), float32 (float64 for
            float64 inputs); [N, D] with cu_seqlens.
    """
    check_ndim("x", x, 3, "[B, T, D]")
    check_ndim("a", a, 3, "[B, T, D]")
    check_shape("a", a, tuple(x.shape), "[B, T, D]")
    check_dtype("x", x)
    check_dtype("a", a)
    if a.dtype != x.dtype:
        raise ValueError(f"a and x must share a dtype, got a {a.dtype} and x {x.dtype}")
    rows, layout = x.shape[0], "[B, D]"
    if cu_seqlens is not None:
        check_packed_batch("x", x)
        cu_seqlens = check_cu_seqlens(cu_seqlens, x.shape[1], x.device)
        rows, layout = cu_seqlens.numel() - 1, "[N, D]"
    if h0 is not None:
        check_ndim("h0", h0, 2, layout)
        check_shape("h0", h0, (rows, x.shape[2]), layout)
        check_dtype("h0", h0)
    check_same_device(a=a, x=x, h0=h0)
    if pick_backend(backend, x.device) == "torch":
        if cu_seqlens is not None:
            return segmented(lambda a_i, x_i, h_i: diag_scan_torch(a_i, x_i, h_i, reverse),
                             [a, x], h0, cu_seqlens)
        return diag_scan_torch(a, x, h0, reverse)
    from ncd.backends.triton.diagonal.chunk import diag_scan_triton  # imports triton: only where the kernel launches

    return diag_scan_triton(a, x, h0, reverse, cu_seqlens)
