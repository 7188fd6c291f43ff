"""Gated linear attention (Yang et al. 2023), chunkwise: Triton, naive and PyTorch twins."""
from __future__ import annotations

import torch

from ncd.backends.triton._common import (
    check_chunk,
    check_dtype,
    check_head_dims,
    check_ndim,
    check_qkv,
    check_same_device,
    check_shape,
    pick_backend,
)
from ncd.backends.triton.gated_linear.chunk_torch import gla_torch
from ncd.backends.triton.gated_linear.naive import naive_gla
from ncd.backends.triton.packed import check_cu_seqlens, check_packed_batch, segmented

__all__ = ["gla", "gla_torch", "naive_gla"]  # gla_triton: in .chunk (imports triton)


def gla(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, g: torch.Tensor,
        scale: float | None = None, initial_state: torch.Tensor | None = None, *,
        chunk_size: int = 64, sub_chunk: int = 16, backend: str = "auto",
        cu_seqlens: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Gated linear attention: S_t = diag(exp g_t) S_{t-1} + k_t^T v_t,  o_t = (scale q_t) S_t.

    Args:
        q, k: [B, T, H, K] queries and keys.
        v: [B, T, H, V] values.
        g: [B, T, H, K] log forget gates, g = log(alpha) <= 0 (e.g. F.logsigmoid(.)).
        scale: multiplies q; default K ** -0.5.
        initial_state: [B, H, K, V] S_0, or None for zeros.
        chunk_size: 16, 32 or 64; sub_chunk: 16 (secondary chunking inside a chunk).
        backend: 'auto' (Triton on CUDA, PyTorch elsewhere), 'triton' or 'torch'.
        cu_seqlens: [N + 1] int offsets of N sequences packed along T (fla's convention; then
            B = 1 and initial_state, S_T are [N, H, K, V]): each sequence runs alone from its
            own state, natively in the Triton kernels (chunks restart at every offset), one
            sequence at a time in the PyTorch twin.

    Returns:
        o: [B, T, H, V] in q.dtype.
        S_T: [B, H, K, V] final state, float32 (float64 for float64 inputs).
    """
    B, T, H, K, V = check_qkv(q, k, v)
    check_ndim("g", g, 4, "[B, T, H, K]")
    check_shape("g", g, (B, T, H, K), "[B, T, H, K]")
    check_dtype("g", g)
    if g.dtype != q.dtype:
        raise ValueError(f"g must share q's dtype {q.dtype}, got {g.dtype}")
    N, layout = B, "[B, H, K, V]"
    if cu_seqlens is not None:
        check_packed_batch("q", q)
        cu_seqlens = check_cu_seqlens(cu_seqlens, T, q.device)
        N, layout = cu_seqlens.numel() - 1, "[N, H, K, V]"
    if initial_state is not None:
        check_ndim("initial_state", initial_state, 4, layout)
        check_shape("initial_state", initial_state, (N, H, K, V), layout)
        check_dtype("initial_state", initial_state)
    check_chunk(chunk_size, sub_chunk)
    check_same_device(q=q, k=k, v=v, g=g, initial_state=initial_state)
    scale = K ** -0.5 if scale is None else float(scale)
    backend = pick_backend(backend, q.device)
    check_head_dims(K, V, backend)
    if backend == "torch":
        if cu_seqlens is not None:
            return segmented(lambda *t: gla_torch(*t[:4], scale, t[4], chunk_size, sub_chunk),
                             [q, k, v, g], initial_state, cu_seqlens)
        return gla_torch(q, k, v, g, scale, initial_state, chunk_size, sub_chunk)
    from ncd.backends.triton.gated_linear.chunk import gla_triton  # imports triton: only where the kernel launches

    return gla_triton(q, k, v, g, scale, initial_state, chunk_size, sub_chunk,
                      cu_seqlens=cu_seqlens)
