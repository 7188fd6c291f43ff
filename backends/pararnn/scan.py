"""Parallel linear scan y_t = a_t y_{t-1} + b_t over T, the linear solve inside each Newton step.

Diagonal coefficients run the one diagonal scan of the kernels package
(`ncd.backends.triton.diagonal`: its PyTorch twin on CPU, its Triton kernel on CUDA); k×k block
coefficients run the same odd-even PyTorch scan with matrix products, or the chunked Triton block
kernels in `scan_triton.py`.
"""
from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from ncd.backends.pararnn.naive import ScanKind, acc_dtype, scan_naive
from ncd.backends.triton._common import auto_backend, require_triton
from ncd.backends.triton.diagonal.chunk_torch import diag_scan_torch, odd_even_scan

InnerScan = Literal["auto", "torch", "triton", "naive"]  # the linear scan's implementation, not a scan backend


def _matmul(a2: Tensor, a1: Tensor) -> Tensor:
    return a2 @ a1


def _matvec(a: Tensor, y: Tensor) -> Tensor:
    return (a @ y.unsqueeze(-1)).squeeze(-1)


def _identity_blocks(a0: Tensor) -> Tensor:
    """The neutral coefficient for one time step of a block scan: identity blocks."""
    k = a0.shape[-1]
    return torch.eye(k, dtype=a0.dtype, device=a0.device).expand_as(a0).clone()


def scan_parallel(
    a: Tensor,
    b: Tensor,
    kind: ScanKind = "diag",
    reverse: bool = False,
    initial: Tensor | None = None,
) -> Tensor:
    """Log-depth PyTorch scan; same contract as `naive.scan_naive` (float32 accumulation)."""
    if kind == "diag":
        return diag_scan_torch(a, b, initial, reverse)[0]
    dt = acc_dtype(b.dtype)
    a32, b32 = a.to(dt), b.to(dt)
    if reverse:
        a32, b32 = a32.flip(1), b32.flip(1)
    if initial is not None:  # fold the initial state into the first step's offset
        b32 = b32.clone()
        b32[:, 0] += _matvec(a32[:, 0], initial.to(dt))
    y = odd_even_scan(a32, b32, _matmul, _matvec, _identity_blocks)
    if reverse:
        y = y.flip(1)
    return y.to(b.dtype)


def _check(a: Tensor, b: Tensor, kind: str, initial: Tensor | None) -> None:
    if kind == "diag":
        if a.shape != b.shape or b.dim() != 3:
            raise ValueError(
                f"diag scan wants a and b of shape [B, T, N]; got a {tuple(a.shape)}, b {tuple(b.shape)}"
            )
    elif kind == "block":
        if b.dim() != 4 or a.shape != (*b.shape, b.shape[-1]):
            raise ValueError(
                "block scan wants a [B, T, NB, k, k] and b [B, T, NB, k]; "
                f"got a {tuple(a.shape)}, b {tuple(b.shape)}"
            )
    else:
        raise ValueError(f"scan kind must be 'diag' or 'block', got {kind!r}")
    if b.shape[1] == 0:
        raise ValueError("scan over T = 0 steps")
    if initial is not None and initial.shape != (b.shape[0], *b.shape[2:]):
        raise ValueError(
            f"initial state shape {tuple(initial.shape)} != {(b.shape[0], *b.shape[2:])}"
        )


def auto_inner_scan(device: torch.device, dtype: torch.dtype) -> str:
    """What backend "auto" runs: Triton on CUDA tensors where triton is installed, except for
    float64 (the Triton kernels accumulate in float32); the PyTorch parallel scan elsewhere."""
    return "torch" if dtype == torch.float64 else auto_backend(device)


def linear_scan(
    a: Tensor,
    b: Tensor,
    kind: ScanKind = "diag",
    reverse: bool = False,
    initial: Tensor | None = None,
    backend: InnerScan = "auto",
) -> Tensor:
    """Solve y_t = a_t y_{t-1} + b_t (or y_t = a_t y_{t+1} + b_t when `reverse`) for all t.

    a: [B, T, N] (diag) or [B, T, NB, k, k] (block); b: [B, T, N] or [B, T, NB, k];
    initial: [B, N] / [B, NB, k], the state before the first step (zero if None).
    Returns y with b's shape and dtype; accumulates in float32 (float64 stays float64).
    backend "auto": Triton on CUDA tensors (float64 excepted: the kernels accumulate in
    float32), the PyTorch parallel scan elsewhere.
    """
    _check(a, b, kind, initial)
    if backend == "auto":
        backend = auto_inner_scan(b.device, b.dtype)
    if backend == "naive":
        return scan_naive(a, b, kind, reverse, initial)
    if backend == "torch":
        return scan_parallel(a, b, kind, reverse, initial)
    if backend == "triton":
        require_triton()
        from ncd.backends.pararnn.scan_triton import scan_triton  # imports triton: only where the kernel launches

        return scan_triton(a, b, kind, reverse, initial)
    raise ValueError(f"unknown scan backend {backend!r}; use auto, torch, triton or naive")
