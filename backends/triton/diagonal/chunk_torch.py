"""PyTorch twin of the Triton scan (the CPU path, the float64 gradcheck target, and the Newton
solver's inner scan on CPU: `ncd.backends.pararnn.scan` runs its block scans through the same
`odd_even_scan`).

The pairs (a_t, x_t) compose associatively, (a1, x1) then (a2, x2) = (a2 a1, a2 x1 + x2), so the
recurrence is a prefix scan. `odd_even_scan` pairs neighbours, scans the half-length sequence of
pairs recursively and fills in the other half (odd-even / Blelloch style): O(T) work, log2(T)
depth, each level a handful of batched tensor ops. Plain autograd differentiates it; nothing
divides by products of a, so a_t = 0 or a_t < 0 are safe.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from ncd.backends.triton._common import acc_dtype

Compose = Callable[[Tensor, Tensor], Tensor]  # (later coefficient, earlier one) -> their product


def odd_even_scan(a: Tensor, b: Tensor, compose: Compose, apply: Compose, identity: Callable[[Tensor], Tensor]
                  ) -> Tensor:
    """Inclusive scan y_t = a_t y_{t-1} + b_t from a zero state along dim 1 (T >= 1), in a's dtype.

    ``compose(a2, a1)`` multiplies coefficients, ``apply(a, y)`` applies one to a state and
    ``identity(a[:, :1])`` is the neutral coefficient: elementwise for the diagonal scan, k×k
    matrices for the block scan."""
    T = b.shape[1]
    if T == 1:
        return b.clone()
    if T % 2:  # pad with the neutral step (identity, 0) so pairs line up; cut it off after
        a = torch.cat([a, identity(a[:, :1])], dim=1)
        b = torch.cat([b, torch.zeros_like(b[:, :1])], dim=1)
    a_e, a_o = a[:, 0::2], a[:, 1::2]
    b_e, b_o = b[:, 0::2], b[:, 1::2]
    # pair (2i, 2i+1) composed: its result is y at the odd positions
    y_o = odd_even_scan(compose(a_o, a_e), apply(a_o, b_e) + b_o, compose, apply, identity)
    y_e = b_e.clone()
    y_e[:, 1:] += apply(a_e[:, 1:], y_o[:, :-1])
    y = torch.stack([y_e, y_o], dim=2).flatten(1, 2)
    return y[:, :T]


def _mul(a: Tensor, y: Tensor) -> Tensor:
    return a * y


def diag_scan_torch(a: Tensor, x: Tensor, h0: Tensor | None = None, reverse: bool = False
                    ) -> tuple[Tensor, Tensor]:
    """a, x: [B, T, D]; h0: [B, D] or None. Returns (h [B, T, D] in x.dtype, the walk's last state
    [B, D] in float32, float64 kept: h_{T-1}, or h_0 when ``reverse``)."""
    dt = acc_dtype(x.dtype)
    A, X = a.to(dt), x.to(dt)
    if x.shape[1] == 0:
        hT = torch.zeros_like(X[:, 0]) if h0 is None else h0.to(dt)
        return x.clone(), hT
    if reverse:
        A, X = A.flip(1), X.flip(1)
    if h0 is not None:  # fold the initial state into the first step's offset
        X = torch.cat([X[:, :1] + A[:, :1] * h0.to(dt)[:, None], X[:, 1:]], 1)
    h = odd_even_scan(A, X, _mul, _mul, torch.ones_like)
    hT = h[:, -1]
    if reverse:
        h = h.flip(1)
    return h.to(x.dtype), hT
