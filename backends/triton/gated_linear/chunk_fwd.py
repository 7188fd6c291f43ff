"""GLA forward: gate cumsum, chunk-state walk, intra-chunk weights, output (see chunk.py)."""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ncd.backends.triton._common import acc_dtype, dot_precision, sm_count, store_dtype, tl_acc
from ncd.backends.triton.packed import Packing
from ncd.backends.triton.packed_jit import chunk_seq, walk_seq
from ncd.backends.triton.gated_linear.tiles import (
    GLATiles,
    check_sizes,
    default_tiles,
    tile_width,
    walk_tiles,
    wide_warps,
)


@triton.jit
def _cumsum_kernel(g, b, cu, cseq, co, T, H, K, NT, C: tl.constexpr, BK: tl.constexpr,
                   ACC: tl.constexpr, VARLEN: tl.constexpr):
    i_k, i_n, i_bh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    tok, T, n, _ = chunk_seq(i_n, i_bh, H, T, NT, cu, cseq, co, VARLEN)
    offs_t = n * C + tl.arange(0, C)
    offs_k = i_k * BK + tl.arange(0, BK)
    m = (offs_t < T)[:, None] & (offs_k < K)[None, :]
    off = offs_t[:, None] * (H * K) + offs_k[None, :]
    x = tl.load(g + tok * K + off, mask=m, other=0.0).to(ACC)
    tl.store(b + tok * K + off, tl.cumsum(x, axis=0), mask=m)


@triton.jit
def _state_kernel(k, v, b, hs, h0, hT, cu, co, T, H, K, V, HAS_H0: tl.constexpr,
                  C: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr, ACC: tl.constexpr,
                  PREC: tl.constexpr, VARLEN: tl.constexpr):
    """One (BK, BV) tile of the state through all chunks: hs[n] = state at chunk n's start."""
    i_kv, i_bh = tl.program_id(0), tl.program_id(1)
    NV = tl.cdiv(V, BV)
    i_k, i_v = i_kv // NV, i_kv % NV
    tok, T, NT, s0, ss = walk_seq(i_bh, H, T, C, cu, co, VARLEN)
    k, b, v = k + tok * K, b + tok * K, v + tok * V
    offs_k = i_k * BK + tl.arange(0, BK)
    offs_v = i_v * BV + tl.arange(0, BV)
    mk, mv = offs_k < K, offs_v < V
    mkv = mk[:, None] & mv[None, :]
    kv_off = offs_k[:, None] * V + offs_v[None, :]
    if HAS_H0:
        S = tl.load(h0 + i_bh.to(tl.int64) * K * V + kv_off, mask=mkv, other=0.0).to(ACC)
    else:
        S = tl.zeros([BK, BV], dtype=ACC)
    for n in range(NT):
        tl.store(hs + (s0 + n * ss) * K * V + kv_off, S, mask=mkv)
        offs_t = n * C + tl.arange(0, C)
        mt = offs_t < T
        rk = offs_t[:, None] * (H * K) + offs_k[None, :]
        mk2 = mt[:, None] & mk[None, :]
        kc = tl.load(k + rk, mask=mk2, other=0.0).to(ACC)
        bc = tl.load(b + rk, mask=mk2, other=0.0)
        vc = tl.load(v + offs_t[:, None] * (H * V) + offs_v[None, :],
                     mask=mt[:, None] & mv[None, :], other=0.0).to(ACC)
        t_last = tl.minimum(n * C + C, T) - 1
        bl = tl.load(b + t_last * (H * K) + offs_k, mask=mk, other=0.0)
        kd = kc * tl.exp(tl.where(mk2, bl[None, :] - bc, float("-inf")))
        S = S * tl.exp(bl)[:, None] + tl.dot(tl.trans(kd), vc, input_precision=PREC)
    tl.store(hT + i_bh.to(tl.int64) * K * V + kv_off, S.to(hT.dtype.element_ty), mask=mkv)


@triton.jit
def _intra_kernel(q, k, b, A, cu, cseq, co, scale, T, H, K, NT, C: tl.constexpr,
                  BC: tl.constexpr, BK: tl.constexpr, ACC: tl.constexpr, PREC: tl.constexpr,
                  VARLEN: tl.constexpr):
    """Rows of sub-chunk i of chunk n against the whole chunk:

      A_ts = scale sum_k q_tk k_sk exp(b_tk - b_sk) for s <= t, else 0.
    Earlier sub-chunks (s < t0) through the reference r = b at row t0: (q exp(b_t - r)) .
    (k exp(r - b_s)), both exponents <= 0; the own sub-chunk one column s at a time.
    """
    i_c, i_bh = tl.program_id(0), tl.program_id(1)
    NS: tl.constexpr = C // BC
    tok, T, n, _ = chunk_seq(i_c // NS, i_bh, H, T, NT, cu, cseq, co, VARLEN)
    i = i_c % NS
    q, k, b, A = q + tok * K, k + tok * K, b + tok * K, A + tok * C
    t0 = n * C + i * BC
    if t0 >= T:
        return
    offs_t = t0 + tl.arange(0, BC)
    offs_s = n * C + tl.arange(0, C)
    cols = tl.arange(0, C)
    mt = offs_t < T
    acc = tl.zeros([BC, C], dtype=ACC)
    for k0 in range(0, K, BK):
        offs_k = k0 + tl.arange(0, BK)
        mk = offs_k < K
        mtk = mt[:, None] & mk[None, :]
        rt = offs_t[:, None] * (H * K) + offs_k[None, :]
        qt = tl.load(q + rt, mask=mtk, other=0.0).to(ACC)
        bt = tl.load(b + rt, mask=mtk, other=0.0)
        r = tl.load(b + t0 * (H * K) + offs_k, mask=mk, other=0.0)
        qg = qt * tl.exp(tl.where(mtk, bt - r[None, :], float("-inf")))
        early = (offs_s < t0)[:, None] & mk[None, :]
        rs = offs_s[:, None] * (H * K) + offs_k[None, :]
        ks = tl.load(k + rs, mask=early, other=0.0).to(ACC)
        bs = tl.load(b + rs, mask=early, other=0.0)
        kg = ks * tl.exp(tl.where(early, r[None, :] - bs, float("-inf")))
        acc += tl.dot(qg, tl.trans(kg), input_precision=PREC)
        # own sub-chunk: column s = t0 + jj
        for jj in range(BC):
            s = t0 + jj
            ok = (tl.zeros([BK], dtype=tl.int32) + s) < T     # tensor, not scalar, mask
            krow = tl.load(k + s * (H * K) + offs_k, mask=mk & ok, other=0.0).to(ACC)
            brow = tl.load(b + s * (H * K) + offs_k, mask=mk & ok, other=0.0)
            e = tl.where(((offs_t >= s) & mt)[:, None] & mk[None, :], bt - brow[None, :],
                         float("-inf"))
            w = tl.sum(qt * krow[None, :] * tl.exp(e), axis=1)
            acc += tl.where(cols[None, :] == i * BC + jj, w[:, None], 0.0)
    tl.store(A + offs_t[:, None] * (H * C) + cols[None, :], acc * scale, mask=mt[:, None])


@triton.jit
def _output_kernel(q, b, v, hs, A, o, cu, cseq, co, scale, T, H, K, V, NT, C: tl.constexpr,
                   BK: tl.constexpr, BV: tl.constexpr, ACC: tl.constexpr, PREC: tl.constexpr,
                   VARLEN: tl.constexpr):
    """o_t = scale (q_t exp b_t) hs[n] + sum_s A_ts v_s for chunk n, one V tile."""
    i_v, i_n, i_bh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    tok, T, n, srow = chunk_seq(i_n, i_bh, H, T, NT, cu, cseq, co, VARLEN)
    q, b, v, A, o = q + tok * K, b + tok * K, v + tok * V, A + tok * C, o + tok * V
    hs = hs + srow * K * V
    offs_t = n * C + tl.arange(0, C)
    offs_v = i_v * BV + tl.arange(0, BV)
    cols = tl.arange(0, C)
    mt, mv = offs_t < T, offs_v < V
    acc = tl.zeros([C, BV], dtype=ACC)
    for k0 in range(0, K, BK):
        offs_k = k0 + tl.arange(0, BK)
        mk = offs_k < K
        mtk = mt[:, None] & mk[None, :]
        rk = offs_t[:, None] * (H * K) + offs_k[None, :]
        qc = tl.load(q + rk, mask=mtk, other=0.0).to(ACC)
        bc = tl.load(b + rk, mask=mtk, other=0.0)
        h = tl.load(hs + offs_k[:, None] * V + offs_v[None, :],
                    mask=mk[:, None] & mv[None, :], other=0.0)
        acc += tl.dot(qc * tl.exp(bc), h, input_precision=PREC)
    acc = acc * scale
    a = tl.load(A + offs_t[:, None] * (H * C) + cols[None, :], mask=mt[:, None], other=0.0)
    mtv = mt[:, None] & mv[None, :]
    rv = offs_t[:, None] * (H * V) + offs_v[None, :]
    vc = tl.load(v + rv, mask=mtv, other=0.0).to(ACC)
    acc += tl.dot(a, vc, input_precision=PREC)
    tl.store(o + rv, acc.to(o.dtype.element_ty), mask=mtv)



def gla_fwd(q, k, v, g, scale: float, h0, chunk_size: int = 64, sub_chunk: int = 16,
            tiles: GLATiles | None = None, cu_seqlens: torch.Tensor | None = None):
    """Triton forward. Inputs contiguous [B, T, H, *]; with ``cu_seqlens`` (checked offsets,
    B = 1) each packed sequence runs alone, its chunks starting at its own offset, and h0, S_T
    are [N, H, K, V].

    Returns (o in q.dtype, S_T float32, saved) where saved = (b, hs, A) is kept for the
    backward: b the chunk-local gate cumsum, hs the chunk-start states ([B, H, NT, K, V], or
    [chunks, H, K, V] packed), A the intra-chunk weights (None when T = 0).
    """
    B, T, H, K = q.shape
    V = v.shape[-1]
    C, BC = chunk_size, min(sub_chunk, chunk_size)
    tuned = tiles is None
    tiles = tiles or default_tiles(q.dtype)
    dt = acc_dtype(q.dtype)
    ACC, PREC = tl_acc(q.dtype), dot_precision(q.dtype)
    pk = Packing(cu_seqlens, C) if cu_seqlens is not None else None
    N = pk.seqs if pk else B
    hT = torch.empty(N, H, K, V, device=q.device, dtype=dt)
    o = torch.empty_like(v, dtype=store_dtype(q.dtype, q.device))
    if T == 0:
        hT.copy_(h0 if h0 is not None else torch.zeros_like(hT))
        return o.to(q.dtype), hT, None
    check_sizes(T, H, K, V, C)
    NT = pk.chunks if pk else triton.cdiv(T, C)
    GB = 1 if pk else B                   # the chunk grids' batch: packed chunks are all in NT
    cu, cseq, co = (pk.cu, pk.cseq, pk.co) if pk else (q, q, q)
    VARLEN = pk is not None
    BK, BV = tile_width(K, tiles.BK), tile_width(V, tiles.BV)
    NK, NV = triton.cdiv(K, BK), triton.cdiv(V, BV)
    b = torch.empty(B, T, H, K, device=q.device, dtype=dt)
    _cumsum_kernel[(NK, NT, GB * H)](g, b, cu, cseq, co, T, H, K, NT, C=C, BK=BK, ACC=ACC,
                                     VARLEN=VARLEN, num_warps=4)
    hs = (torch.empty(NT, H, K, V, device=q.device, dtype=dt) if pk else
          torch.empty(B, H, NT, K, V, device=q.device, dtype=dt))
    WK, WV = walk_tiles(N * H, K, V, BK, BV, sm_count(q.device)) if tuned else (BK, BV)
    _state_kernel[(triton.cdiv(K, WK) * triton.cdiv(V, WV), N * H)](
        k, v, b, hs, h0 if h0 is not None else hs, hT, cu, co, T, H, K, V,
        HAS_H0=h0 is not None, C=C, BK=WK, BV=WV, ACC=ACC, PREC=PREC, VARLEN=VARLEN,
        num_warps=4, num_stages=2)
    A = torch.empty(B, T, H, C, device=q.device, dtype=dt)
    _intra_kernel[(NT * (C // BC), GB * H)](
        q, k, b, A, cu, cseq, co, scale, T, H, K, NT, C=C, BC=BC, BK=BK, ACC=ACC, PREC=PREC,
        VARLEN=VARLEN, num_warps=4, num_stages=2)
    _output_kernel[(NV, NT, GB * H)](
        q, b, v, hs, A, o, cu, cseq, co, scale, T, H, K, V, NT, C=C, BK=BK, BV=BV, ACC=ACC,
        PREC=PREC, VARLEN=VARLEN, num_warps=wide_warps(PREC), num_stages=2)
    return o.to(q.dtype), hT, (b, hs, A)
