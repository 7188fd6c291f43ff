"""Delta rule (DeltaNet), chunked WY/UT form: Triton, naive and PyTorch twins."""
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
from ncd.backends.triton.delta.chunk_torch import delta_rule_torch
from ncd.backends.triton.delta.naive import naive_delta_rule
from ncd.backends.triton.packed import check_cu_seqlens, check_packed_batch, segmented

__all__ = ["delta_rule", "delta_rule_torch", "naive_delta_rule"]  # delta_rule_triton: in .chunk (imports triton)


def delta_rule(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, beta: torch.Tensor,
               scale: float | None = None, initial_state: torch.Tensor | None = None, *,
               chunk_size: int = 64, backend: str = "auto", cu_seqlens: torch.Tensor | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Delta rule: S_t = (I - beta_t k_t k_t^T) S_{t-1} + beta_t k_t v_t^T,  o_t = (scale q_t) S_t.

    Args:
        q, k: [B, T, H, K]; keys are usually L2-normalised by the caller.
        v: [B, T, H, V].
        beta: [B, T, H] write strength; (0, 2) keeps the transition's eigenvalues in (-1, 1].
        scale: multiplies q; default K ** -0.5.
        initial_state: [B, H, K, V] S_0, or None for zeros.
        chunk_size: 16, 32 or 64.
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
    check_ndim("beta", beta, 3, "[B, T, H]")
    check_shape("beta", beta, (B, T, H), "[B, T, H]")
    check_dtype("beta", beta)
    N, layout = B, "[B, H, K, V]"
    if cu_seqlens is not None:
        check_packed_batch("q", q)
        cu_seqlens = check_cu_seqlens(cu_seqlens, T, q.device)
        N, layout = cu_seqlens.numel() - 1, "[N, H, K, V]"
    if initial_state is not None:
        check_ndim("initial_state", initial_state, 4, layout)
        check_shape("initial_state", initial_state, (N, H, K, V), layout)
        check_dtype("initial_state", initial_state)
    check_chunk(chunk_size)
    check_same_device(q=q, k=k, v=v, beta=beta, initial_state=initial_state)
    scale = K ** -0.5 if scale is None else float(scale)
    backend = pick_backend(backend, q.device)
    check_head_dims(K, V, backend)
    if backend == "torch":
        if cu_seqlens is not None:
            return segmented(lambda *t: delta_rule_torch(*t[:4], scale, t[4], chunk_size),
                             [q, k, v, beta], initial_state, cu_seqlens)
        return delta_rule_torch(q, k, v, beta, scale, initial_state, chunk_size)
    from ncd.backends.triton.delta.chunk import delta_rule_triton  # imports triton: only where the kernel launches

    return delta_rule_triton(q, k, v, beta, scale, initial_state, chunk_size, cu_seqlens)
