"""PyTorch twin of the Triton scan (CPU fallback and float64 gradcheck target).

Blocked doubling scan (Hillis-Steele): log2(T) out-of-place steps, each composing every step
with the one `step` places before it: (a, x) o (a', x') = (a a', a x' + x).  Plain autograd
differentiates it; no division by products of a, so a_t = 0 or a_t < 0 are safe.
"""
from __future__ import annotations

import torch

from ncd.backends.triton._common import acc_dtype


def diag_scan_torch(a: torch.Tensor, x: torch.Tensor, h0: torch.Tensor | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """a, x: [B, T, D]; h0: [B, D] or None. Returns (h [B, T, D] in x.dtype, h_T [B, D] fp32)."""
    dt = acc_dtype(x.dtype)
    out_dtype = x.dtype
    A, X = a.to(dt), x.to(dt)
    if h0 is not None:
        X = torch.cat([X[:, :1] + A[:, :1] * h0.to(dt)[:, None], X[:, 1:]], 1)
    T = X.shape[1]
    step = 1
    while step < T:
        X = torch.cat([X[:, :step], X[:, step:] + A[:, step:] * X[:, :-step]], 1)
        A = torch.cat([A[:, :step], A[:, step:] * A[:, :-step]], 1)
        step *= 2
    if T == 0:
        hT = (torch.zeros_like(X[:, 0]) if h0 is None else h0.to(dt))
    else:
        hT = X[:, -1]
    return X.to(out_dtype), hT
