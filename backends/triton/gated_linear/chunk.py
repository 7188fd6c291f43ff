"""Triton chunked gated linear attention, forward and backward.

Layout [B, T, H, K]; any T: rows past T load as zeros, which is exactly "no token", since
k = v = 0 adds nothing and g = 0 decays nothing.  C = chunk_size, BC = sub_chunk, NT chunks,
NS = C / BC sub-chunks per chunk; the state dimensions are tiled BK x BV (`GLATiles`; the
launchers take 64 x 64 for half inputs, 64 x 32 for float32/64, see `default_tiles`), NK = K / BK
and NV = V / BV tiles.  No program holds more than one BK x BV state tile or one [C, C] block,
so nothing large lives in registers (at the benchmark shape every launch compiles for sm_90
without spills, see `python -m ncd.backends.triton.aot --only gla`).  Pointers are a 64-bit
base per (batch, head) plus int32 tile offsets, which keeps the address registers few.
The forward kernels and their launcher live in chunk_fwd.py, the backward's in chunk_bwd.py,
tile sizes in tiles.py; this module ties them into the autograd Function.

Forward, four launches:
  1. `_cumsum_kernel`  b = chunk-local cumsum of the log gates            grid (NK, NT, B*H)
  2. `_state_kernel`   walks the chunks in order for one (BK, BV) tile of the state (each
                       tile evolves alone: S <- diag(exp b_C) S + (k exp(b_C - b))^T v);
                       writes the state at every chunk start (hs) and the final state
                                                                          grid (NK*NV, B*H)
  3. `_intra_kernel`   A = scale * q k^T weighted by exp(b_t - b_s), s <= t, for one
                       sub-chunk of rows against its whole chunk: earlier sub-chunks by one
                       dot through the factorised (stable) form, its own sub-chunk row by
                       row; loops over K tiles; stored [B, T, H, C]        grid (NT*NS, B*H)
  4. `_output_kernel`  o = scale (q exp b) hs[n] + A v for one chunk of rows and one V tile,
                       looping over K tiles                                grid (NV, NT, B*H)
The forward keeps b, hs (float32 [B, H, NT, K, V]) and A (float32 [B, T, H, C]) for the
backward, five launches:
  5. `_dstate_kernel`  walks the chunks backwards per (BK, BV) tile: the state gradient at
                       every chunk end (dhs) and dh0                      grid (NK*NV, B*H)
  6. `_dA_kernel`      dA = do v^T, masked to s <= t, looping over V tiles  grid (NT, B*H)
  7. `_dv_kernel`      dv = A^T do + (k exp(b_C - b)) dhs[n], looping over K tiles
                                                                          grid (NV, NT, B*H)
  8. `_dqk_intra_kernel`  the intra-chunk parts of dq, dk from dA for one sub-chunk and one
                       K tile (other sub-chunks factorised, its own row by row), float32
                                                                          grid (NK, NT*NS, B*H)
  9. `_dqkg_kernel`    adds the inter-chunk parts of dq, dk (looping over V tiles through
                       hs[n] and dhs[n]) and dg = in-chunk reverse cumsum of q dq - k dk
                       plus the chunk's carry rowsum(S_end * dS_end)      grid (NK, NT, B*H)
See chunk_torch.py for the forward formulas; the gradient formulas sit on the kernels.
"""
from __future__ import annotations

import torch

from ncd.backends.triton.gated_linear.chunk_bwd import gla_bwd
from ncd.backends.triton.gated_linear.chunk_fwd import gla_fwd
from ncd.backends.triton.gated_linear.tiles import GLATiles, default_tiles

__all__ = ["GLAFunction", "GLATiles", "default_tiles", "gla_bwd", "gla_fwd", "gla_triton"]


class GLAFunction(torch.autograd.Function):
    """Triton forward and backward; the backward reuses the forward's b, hs and A."""

    @staticmethod
    def forward(ctx, q, k, v, g, h0, scale, chunk_size, sub_chunk, tiles=None, cu_seqlens=None):
        q, k, v, g = (t.contiguous() for t in (q, k, v, g))
        h0 = h0.contiguous() if h0 is not None else None
        o, hT, saved = gla_fwd(q, k, v, g, scale, h0, chunk_size, sub_chunk, tiles, cu_seqlens)
        ctx.save_for_backward(q, k, v, g, h0, hT, *(saved or (None, None, None)))
        ctx.cfg = (scale, chunk_size, sub_chunk, tiles, cu_seqlens)
        return o, hT

    @staticmethod
    def backward(ctx, do, dhT):
        q, k, v, g, h0, hT, *saved = ctx.saved_tensors
        scale, chunk_size, sub_chunk, tiles, cu_seqlens = ctx.cfg
        do = torch.zeros_like(v, dtype=q.dtype) if do is None else do.contiguous()
        dhT = dhT.contiguous() if dhT is not None else None
        dq, dk, dv, dg, dh0 = gla_bwd(q, k, v, g, scale, h0, tuple(saved), hT, do, dhT,
                                      chunk_size, sub_chunk, tiles, cu_seqlens)
        return dq, dk, dv, dg, dh0, None, None, None, None, None


def gla_triton(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, g: torch.Tensor,
               scale: float, h0: torch.Tensor | None = None, chunk_size: int = 64,
               sub_chunk: int = 16, tiles: GLATiles | None = None,
               cu_seqlens: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Unchecked entry to the Triton path (`gla` validates and dispatches); `tiles` picks
    the state tile sizes (default `GLATiles()`); `cu_seqlens` checked packed offsets."""
    return GLAFunction.apply(q, k, v, g, h0, scale, chunk_size, sub_chunk, tiles, cu_seqlens)
