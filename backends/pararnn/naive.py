"""Slow twins: the sequential cell loop and the sequential linear scan.

Every fast path in this package is tested against these. They are written for clarity, not
speed: one Python step per time step.

Shapes used throughout the package
----------------------------------
* states ``h``: ``[B, T, N]``; initial state ``h0``: ``[B, N]``; inputs ``xs``: ``[B, T, E]``.
* diagonal Jacobians / scan coefficients ``a``: ``[B, T, N]`` (``kind="diag"``).
* block Jacobians ``a``: ``[B, T, NB, k, k]`` with vectors ``b``: ``[B, T, NB, k]``
  (``kind="block"``); state element ``j`` belongs to block ``j // k`` (contiguous blocks), so a
  state of ``N`` elements is viewed as ``[NB = N // k, k]``. A dense Jacobian is the block case
  with one block of size ``N``.
"""
from __future__ import annotations

from typing import Callable, Literal

import torch
from torch import Tensor

from ncd.backends.triton.diagonal.naive import naive_diag_scan

Cell = Callable[..., Tensor]
ScanKind = Literal["diag", "block"]


def acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """Accumulation dtype: float32 for half types (and float32), float64 stays float64."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def sequential_loop(cell: Cell, h0: Tensor, xs: Tensor, *params: Tensor) -> Tensor:
    """h_t = cell(h_{t-1}, x_t, *params) for t = 0..T-1, one step at a time.

    h0: [B, N], xs: [B, T, E] -> [B, T, N] (in the dtype the cell returns). Differentiable by
    plain autograd, which makes it the reference for the adjoint backward too.
    """
    h = h0
    out = []
    for x_t in xs.unbind(1):  # unbind, not xs[:, t]: one stacked gradient, not T full-size ones
        h = cell(h, x_t, *params)
        out.append(h)
    return torch.stack(out, dim=1)


def _matvec(a: Tensor, y: Tensor) -> Tensor:
    return (a @ y.unsqueeze(-1)).squeeze(-1)


def scan_naive(
    a: Tensor,
    b: Tensor,
    kind: ScanKind = "diag",
    reverse: bool = False,
    initial: Tensor | None = None,
) -> Tensor:
    """Sequential linear recurrence y_t = a_t y_{t-1} + b_t (reverse: y_t = a_t y_{t+1} + b_t).

    a: [B, T, N] (diag) or [B, T, NB, k, k] (block); b: [B, T, N] or [B, T, NB, k];
    initial: the state before the first step (y_{-1}, or y_T when reversed), zero if None.
    Accumulates in float32 (float64 stays float64); returns b's dtype.
    """
    if kind == "diag":  # the kernels package's sequential reference
        return naive_diag_scan(a, b, initial, reverse)[0].to(b.dtype)
    dt = acc_dtype(b.dtype)
    a32, b32 = a.to(dt), b.to(dt)
    T = b.shape[1]
    y = torch.zeros_like(b32[:, 0]) if initial is None else initial.to(dt)
    out = [None] * T
    order = range(T - 1, -1, -1) if reverse else range(T)
    for t in order:
        y = _matvec(a32[:, t], y) + b32[:, t]
        out[t] = y
    return torch.stack(out, dim=1).to(b.dtype)
