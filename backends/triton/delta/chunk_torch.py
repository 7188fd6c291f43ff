"""Chunked delta rule in plain PyTorch (WY / UT transform): the Triton kernels' algorithm.

CPU fallback (backend='torch', and 'auto' without CUDA) and float64 gradcheck target;
autograd differentiates it.  Per chunk of C steps with state S at its start, the pseudo-values
u_t = beta_t (v_t - k_t S_{t-1}) satisfy the unit lower-triangular system
    (I + tril(diag(beta) K K^T, -1)) U = diag(beta) V - diag(beta) K S
so with M = (I + tril(diag(beta) K K^T, -1))^{-1}:  W = M diag(beta) K,  U0 = M diag(beta) V,
    U = U0 - W S,   O = Q S + tril(Q K^T) U,   S_next = S + K^T U.
W and U0 do not depend on S, so they are computed for all chunks at once.
"""
from __future__ import annotations

import torch

from ncd.backends.triton._common import acc_dtype, to_chunks


def delta_rule_torch(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, beta: torch.Tensor,
                     scale: float | None = None, h0: torch.Tensor | None = None,
                     chunk_size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """q, k: [B, T, H, K]; v: [B, T, H, V]; beta: [B, T, H]; h0: [B, H, K, V] or None.

    Returns (o [B, T, H, V] in q.dtype, S_T [B, H, K, V] float32/float64).
    """
    dt = acc_dtype(q.dtype)
    B, T, H, K = q.shape
    V = v.shape[-1]
    C = chunk_size
    scale = K ** -0.5 if scale is None else scale
    S = q.new_zeros(B, H, K, V, dtype=dt) if h0 is None else h0.to(dt)
    if T == 0:
        return v.new_zeros(B, 0, H, V, dtype=q.dtype), S
    qc, kc, vc = (to_chunks(t, C, dt) for t in (q, k, v))
    bc = to_chunks(beta[..., None], C, dt)                       # [B, H, NT, C, 1]
    qc = qc * scale
    NT = qc.shape[2]
    eye = torch.eye(C, dtype=dt, device=q.device)
    L = torch.tril(bc * (kc @ kc.transpose(-1, -2)), -1)
    W = torch.linalg.solve_triangular(eye + L, bc * kc, upper=False, unitriangular=True)
    U0 = torch.linalg.solve_triangular(eye + L, bc * vc, upper=False, unitriangular=True)
    Aqk = torch.tril(qc @ kc.transpose(-1, -2))
    out = []
    for n in range(NT):
        U = U0[:, :, n] - W[:, :, n] @ S
        out.append(qc[:, :, n] @ S + Aqk[:, :, n] @ U)
        S = S + kc[:, :, n].transpose(-1, -2) @ U
    o = torch.stack(out, 2).reshape(B, H, NT * C, V)[:, :, :T].transpose(1, 2)
    return o.to(q.dtype), S
