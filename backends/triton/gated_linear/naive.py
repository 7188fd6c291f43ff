"""Sequential reference for gated linear attention, one time step at a time in float32."""
from __future__ import annotations

import torch


def naive_gla(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, g: torch.Tensor,
              scale: float | None = None, h0: torch.Tensor | None = None
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """S_t = diag(exp g_t) S_{t-1} + k_t^T v_t;  o_t = (scale q_t) S_t.

    q, k, g: [B, T, H, K]; v: [B, T, H, V]; h0: [B, H, K, V] or None.
    Returns (o [B, T, H, V], S_T [B, H, K, V]) in float32 (float64 for float64 inputs).
    """
    dt = torch.float64 if q.dtype == torch.float64 else torch.float32
    B, T, H, K = q.shape
    V = v.shape[-1]
    scale = K ** -0.5 if scale is None else scale
    q, k, v, g = (t.to(dt) for t in (q, k, v, g))
    S = q.new_zeros(B, H, K, V) if h0 is None else h0.to(dt)
    out = []
    for t in range(T):
        S = S * g[:, t].exp()[..., None] + k[:, t, :, :, None] * v[:, t, :, None, :]
        out.append(torch.einsum("bhk,bhkv->bhv", q[:, t] * scale, S))
    o = torch.stack(out, 1) if out else v.new_zeros(B, 0, H, V)
    return o, S
