"""Chunked gated linear attention in plain PyTorch: the same algorithm as the Triton kernels.

Serves as the CPU fallback (backend='torch', and 'auto' without CUDA) and as the float64
gradcheck target; autograd differentiates it.

Within a chunk of C steps let b_t = g_1 + ... + g_t (chunk-local, <= 0 and non-increasing).
  inter:  o_t += (q_t * exp b_t) S_0,   S_C = exp(b_C) * S_0 + sum_s (k_s * exp(b_C - b_s))^T v_s
  intra:  o_t += sum_{s<=t} [sum_k q_tk k_sk exp(b_tk - b_sk)] v_s
The intra weights are split into sub-chunks of BC steps (secondary chunking, GLA paper 4.2):
a block (i > j) factorises through the first position r of sub-chunk i as
(q_t exp(b_t - b_r)) . (k_s exp(b_r - b_s)), both exponents <= 0, so nothing overflows;
diagonal blocks are computed elementwise with the exponent masked before exp.
"""
from __future__ import annotations

import torch

from ncd.backends.triton._common import acc_dtype, to_chunks


def gla_torch(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, g: torch.Tensor,
              scale: float | None = None, h0: torch.Tensor | None = None,
              chunk_size: int = 64, sub_chunk: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """q, k, g: [B, T, H, K]; v: [B, T, H, V]; h0: [B, H, K, V] or None.

    Returns (o [B, T, H, V] in q.dtype, S_T [B, H, K, V] float32/float64).
    """
    dt = acc_dtype(q.dtype)
    B, T, H, K = q.shape
    V = v.shape[-1]
    C = chunk_size
    BC = min(sub_chunk, C)
    NS = C // BC
    scale = K ** -0.5 if scale is None else scale
    S = q.new_zeros(B, H, K, V, dtype=dt) if h0 is None else h0.to(dt)
    if T == 0:
        return v.new_zeros(B, 0, H, V, dtype=q.dtype), S
    qc, kc, vc, gc = (to_chunks(t, C, dt) for t in (q, k, v, g))
    qc = qc * scale
    NT = qc.shape[2]
    b = gc.cumsum(-2)                                              # [B, H, NT, C, K]

    # intra-chunk weights A [.., C, C] from sub-chunk blocks
    qs, ks, bs = (t.reshape(B, H, NT, NS, BC, K) for t in (qc, kc, b))
    r = bs[..., 0, :]                                              # [.., NS, K]
    qg = qs * torch.exp(bs - r[..., None, :])                      # [.., NS, BC, K]
    below = torch.ones(NS, NS, dtype=torch.bool, device=q.device).tril(-1)
    expo = r[..., :, None, None, :] - bs[..., None, :, :, :]       # [.., NS_i, NS_j, BC, K]
    expo = torch.where(below[:, :, None, None], expo, torch.full_like(expo, -float("inf")))
    kg = ks[..., None, :, :, :] * torch.exp(expo)
    A = torch.einsum("...icK,...ijsK->...icjs", qg, kg)           # [.., NS, BC, NS, BC]
    causal = torch.ones(BC, BC, dtype=torch.bool, device=q.device).tril()
    d = bs[..., :, None, :] - bs[..., None, :, :]                  # [.., NS, BC, BC, K]
    d = torch.where(causal[:, :, None], d, torch.full_like(d, -float("inf")))
    Ad = (qs[..., :, None, :] * ks[..., None, :, :] * torch.exp(d)).sum(-1)
    eye = torch.eye(NS, dtype=dt, device=q.device)[:, None, :, None]
    A = A + Ad.unsqueeze(-2) * eye
    o = A.reshape(B, H, NT, C, C) @ vc

    # inter-chunk: sequential over chunks
    b_last = b[..., -1, :]                                         # [B, H, NT, K]
    qd = qc * torch.exp(b)
    kd = kc * torch.exp(b_last[..., None, :] - b)
    inter = []
    for n in range(NT):
        inter.append(qd[:, :, n] @ S)
        S = torch.exp(b_last[:, :, n])[..., None] * S + kd[:, :, n].transpose(-1, -2) @ vc[:, :, n]
    o = o + torch.stack(inter, 2)
    o = o.reshape(B, H, NT * C, V)[:, :, :T].transpose(1, 2)
    return o.to(q.dtype), S
