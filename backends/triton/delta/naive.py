"""Sequential reference for the delta rule (DeltaNet), one time step at a time in float32."""
from __future__ import annotations

import torch


def naive_delta_rule(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, beta: torch.Tensor,
                     scale: float | None = None, h0: torch.Tensor | None = None
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """S_t = (I - beta_t k_t k_t^T) S_{t-1} + beta_t k_t v_t^T;  o_t = (scale q_t) S_t.

    q, k: [B, T, H, K]; v: [B, T, H, V]; beta: [B, T, H]; h0: [B, H, K, V] or None.
    Returns (o [B, T, H, V], S_T [B, H, K, V]) in float32 (float64 for float64 inputs).
    """
    dt = torch.float64 if q.dtype == torch.float64 else torch.float32
    B, T, H, K = q.shape
    V = v.shape[-1]
    scale = K ** -0.5 if scale is None else scale
    q, k, v, beta = (t.to(dt) for t in (q, k, v, beta))
    S = q.new_zeros(B, H, K, V) if h0 is None else h0.to(dt)
    out = []
    for t in range(T):
        kt = k[:, t]
        u = beta[:, t, :, None] * (v[:, t] - torch.einsum("bhk,bhkv->bhv", kt, S))
        S = S + kt[..., None] * u[..., None, :]
        out.append(torch.einsum("bhk,bhkv->bhv", q[:, t] * scale, S))
    o = torch.stack(out, 1) if out else v.new_zeros(B, 0, H, V)
    return o, S
