"""Sequential reference for the diagonal scan: one time step at a time, float32 (or float64)."""
from __future__ import annotations

import torch


def naive_diag_scan(a: torch.Tensor, x: torch.Tensor, h0: torch.Tensor | None = None,
                    reverse: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """h_t = a_t * h_{t-1} + x_t (``reverse``: h_t = a_t * h_{t+1} + x_t).  a, x: [B, T, D];
    h0: [B, D], the state before the first step of the walk, or None (zeros).

    Returns (h [B, T, D], the walk's last state [B, D]) in float32 (float64 if the inputs are
    float64).
    """
    dt = torch.float64 if x.dtype == torch.float64 else torch.float32
    a, x = a.to(dt), x.to(dt)
    h = x.new_zeros(x.shape[0], x.shape[2]) if h0 is None else h0.to(dt)
    T = x.shape[1]
    out: list[torch.Tensor] = [h] * T
    for t in (range(T - 1, -1, -1) if reverse else range(T)):
        h = a[:, t] * h + x[:, t]
        out[t] = h
    hs = torch.stack(out, 1) if out else x.new_zeros(x.shape)
    return hs, h
