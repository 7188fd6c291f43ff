"""Triton chunked delta rule (WY / UT transform), forward and backward.

Layout [B, T, H, K]; rows past T load as k = v = beta = 0, which leaves the state unchanged.
No program holds a whole [K, V] state: the state walks keep a [K, BV] tile (all of K, so the
contraction over K stays in one program) and grid over V-tiles; every other kernel streams
[C, BK] / [C, BV] / [BK, BV] tiles through loops over K or V.  The tile sizes come from a
`DeltaBlocks` the launcher picks per dtype (`default_blocks`), or the caller passes.
The forward kernels and their launcher live in chunk_fwd.py, the backward's in chunk_bwd.py,
tile sizes in blocks.py; this module ties them into the autograd Function.
Forward, three launches:
  1. `_prep_kernel`     per chunk: A = tril(diag(beta) K K^T, -1) over K-tiles, then
                        M = (I + A)^{-1} by forward substitution, stored; W = M (beta K) per
                        K-tile and U0 = M (beta V) per V-tile                grid (NT, B*H)
  2. `_state_kernel`    walks the chunks with a [K, BVS] state tile: U = U0 - W S (stored),
                        S += K^T U; stores the chunk-start states and the final state
                                                                        grid (V/BVS, B*H)
  3. `_output_kernel`   O = Q S + tril(Q K^T) U, Q S and Q K^T accumulated over K-tiles
                                                                     grid (V/BV, NT, B*H)
Backward, four launches, reusing M, W, U and the chunk-start states from the forward:
  4. `_dv_local_kernel` dU = tril(Q K^T)^T dO per V-tile (the intra-chunk part; no state)
                                                                             grid (NT, B*H)
  5. `_dstate_kernel`   walks the chunks backwards with a [K, BVS] tile of dS, held as up to
                        four row blocks: dU = scale dU + K dS (in place), dS += scale Q^T dO
                        - W^T dU; stores dS at every chunk end (dhs), dh0 grid (V/BVS, B*H)
  6. `_dqkw_kernel`     per chunk and K-tile, over V-tiles: dq (final), the direct part of
                        dK and dW = -dU S^T (float32 scratch)        grid (K/BK, NT, B*H)
  7. `_wy_bwd_kernel`   per chunk, through the triangular inverse: dv and dbeta's V part per
                        V-tile, dM, dL = -M^T dM M^T, then dk and the rest of dbeta per
                        K-tile                                               grid (NT, B*H)
See chunk_torch.py for the derivation of the forward; the gradients sit on the kernels.
"""
from __future__ import annotations

import torch

from ncd.backends.triton.delta.blocks import DeltaBlocks, default_blocks
from ncd.backends.triton.delta.chunk_bwd import delta_rule_bwd
from ncd.backends.triton.delta.chunk_fwd import delta_rule_fwd

__all__ = ["DeltaBlocks", "DeltaRuleFunction", "default_blocks", "delta_rule_bwd", "delta_rule_fwd",
           "delta_rule_triton"]


class DeltaRuleFunction(torch.autograd.Function):
    """Triton forward and backward; the backward reuses M, W, U and the chunk-start states."""

    @staticmethod
    def forward(ctx, q, k, v, beta, h0, scale, chunk_size, cu_seqlens=None):
        q, k, v, beta = (t.contiguous() for t in (q, k, v, beta))
        h0 = h0.contiguous() if h0 is not None else None
        o, hT, extras = delta_rule_fwd(q, k, v, beta, scale, h0, chunk_size,
                                       cu_seqlens=cu_seqlens)
        ctx.save_for_backward(q, k, v, beta, h0, *(extras or ()))
        ctx.cfg = (scale, chunk_size, extras is not None, cu_seqlens)
        return o, hT

    @staticmethod
    def backward(ctx, do, dhT):
        q, k, v, beta, h0, *extras = ctx.saved_tensors
        scale, chunk_size, has_extras, cu_seqlens = ctx.cfg
        do = torch.zeros_like(v, dtype=q.dtype) if do is None else do.contiguous()
        dhT = dhT.contiguous() if dhT is not None else None
        grads = delta_rule_bwd(q, k, v, beta, scale, h0, extras if has_extras else None, do,
                               dhT, chunk_size, cu_seqlens=cu_seqlens)
        return (*grads, None, None, None)


def delta_rule_triton(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, beta: torch.Tensor,
                      scale: float, h0: torch.Tensor | None = None, chunk_size: int = 64,
                      cu_seqlens: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Unchecked entry to the Triton path (`delta_rule` validates and dispatches);
    `cu_seqlens` checked packed offsets."""
    return DeltaRuleFunction.apply(q, k, v, beta, h0, scale, chunk_size, cu_seqlens)
