"""Delta-rule forward: UT transform, chunk-state walk, output (see chunk.py)."""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ncd.backends.triton._common import acc_dtype, dot_precision, sm_count, store_dtype, tl_acc
from ncd.backends.triton.delta.blocks import DeltaBlocks, launch_tiles, vtile, walk_vtile
from ncd.backends.triton.packed import Packing
from ncd.backends.triton.packed_jit import chunk_seq, walk_seq


@triton.jit
def _prep_kernel(k, v, beta, w, u, m_out, cu, cseq, co, T, H, K, V, NT, C: tl.constexpr,
                 BK: tl.constexpr, BV: tl.constexpr, ACC: tl.constexpr, PREC: tl.constexpr,
                 VARLEN: tl.constexpr):
    i_n, i_bh = tl.program_id(0), tl.program_id(1)
    tok, T, n, _ = chunk_seq(i_n, i_bh, H, T, NT, cu, cseq, co, VARLEN)
    rows = tl.arange(0, C)
    offs_t = n * C + rows
    mt = offs_t < T
    base = tok + offs_t * H
    bc = tl.load(beta + base, mask=mt, other=0.0).to(ACC)
    A = tl.zeros([C, C], dtype=ACC)
    for k0 in range(0, K, BK):
        offs_k = k0 + tl.arange(0, BK)
        mk2 = mt[:, None] & (offs_k < K)[None, :]
        kc = tl.load(k + base[:, None] * K + offs_k[None, :], mask=mk2, other=0.0).to(ACC)
        A += tl.dot(kc, tl.trans(kc), input_precision=PREC)
    # X = M - I solves X_i = a_i + a_i X row by row, a = -tril(diag(beta) K K^T, -1);
    # row i of X still holds a_i when its turn comes, and a_i only reaches rows j < i
    X = tl.where(rows[:, None] > rows[None, :], -A * bc[:, None], 0.0)
    for i in range(1, C):
        a_i = tl.sum(tl.where(rows[:, None] == i, X, 0.0), axis=0)
        new = a_i + tl.sum(a_i[:, None] * X, axis=0)
        X = tl.where(rows[:, None] == i, new[None, :], X)
    M = X + tl.where(rows[:, None] == rows[None, :], 1.0, 0.0)
    tl.store(m_out + base[:, None] * C + rows[None, :], M, mask=mt[:, None])
    for k0 in range(0, K, BK):
        offs_k = k0 + tl.arange(0, BK)
        mk2 = mt[:, None] & (offs_k < K)[None, :]
        rk = base[:, None] * K + offs_k[None, :]
        kc = tl.load(k + rk, mask=mk2, other=0.0).to(ACC)
        tl.store(w + rk, tl.dot(M, kc * bc[:, None], input_precision=PREC), mask=mk2)
    for v0 in range(0, V, BV):
        offs_v = v0 + tl.arange(0, BV)
        mv2 = mt[:, None] & (offs_v < V)[None, :]
        rv = base[:, None] * V + offs_v[None, :]
        vc = tl.load(v + rv, mask=mv2, other=0.0).to(ACC)
        tl.store(u + rv, tl.dot(M, vc * bc[:, None], input_precision=PREC), mask=mv2)


@triton.jit
def _state_kernel(k, w, u, un, hs, h0, hT, cu, co, T, H, K, V, HAS_H0: tl.constexpr,
                  C: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr, ACC: tl.constexpr,
                  PREC: tl.constexpr, VARLEN: tl.constexpr):
    i_v, i_bh = tl.program_id(0), tl.program_id(1)
    tok, T, NT, s0, ss = walk_seq(i_bh, H, T, C, cu, co, VARLEN)
    offs_k = tl.arange(0, BK)
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
        base = tok + offs_t * H
        rk = base[:, None] * K + offs_k[None, :]
        rv = base[:, None] * V + offs_v[None, :]
        mk2 = mt[:, None] & mk[None, :]
        mv2 = mt[:, None] & mv[None, :]
        kc = tl.load(k + rk, mask=mk2, other=0.0).to(ACC)
        wc = tl.load(w + rk, mask=mk2, other=0.0)
        uc = tl.load(u + rv, mask=mv2, other=0.0) - tl.dot(wc, S, input_precision=PREC)
        tl.store(un + rv, uc, mask=mv2)
        S += tl.dot(tl.trans(kc), uc, input_precision=PREC)
    tl.store(hT + i_bh.to(tl.int64) * K * V + kv_off, S.to(hT.dtype.element_ty), mask=mkv)


@triton.jit
def _output_kernel(q, k, un, hs, o, cu, cseq, co, scale, T, H, K, V, NT, C: tl.constexpr,
                   BK: tl.constexpr, BV: tl.constexpr, ACC: tl.constexpr, PREC: tl.constexpr,
                   VARLEN: tl.constexpr):
    i_v, i_n, i_bh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    tok, T, n, srow = chunk_seq(i_n, i_bh, H, T, NT, cu, cseq, co, VARLEN)
    rows = tl.arange(0, C)
    offs_t = n * C + rows
    offs_v = i_v * BV + tl.arange(0, BV)
    mt, mv = offs_t < T, offs_v < V
    base = tok + offs_t * H
    s_base = hs + srow * K * V
    acc = tl.zeros([C, BV], dtype=ACC)
    A = tl.zeros([C, C], dtype=ACC)
    for k0 in range(0, K, BK):
        offs_k = k0 + tl.arange(0, BK)
        mk = offs_k < K
        rk = base[:, None] * K + offs_k[None, :]
        mk2 = mt[:, None] & mk[None, :]
        qc = tl.load(q + rk, mask=mk2, other=0.0).to(ACC)
        kc = tl.load(k + rk, mask=mk2, other=0.0).to(ACC)
        S = tl.load(s_base + offs_k[:, None] * V + offs_v[None, :],
                    mask=mk[:, None] & mv[None, :], other=0.0)
        acc += tl.dot(qc, S, input_precision=PREC)
        A += tl.dot(qc, tl.trans(kc), input_precision=PREC)
    A = tl.where(rows[:, None] >= rows[None, :], A, 0.0)
    rv = base[:, None] * V + offs_v[None, :]
    mv2 = mt[:, None] & mv[None, :]
    uc = tl.load(un + rv, mask=mv2, other=0.0)
    acc += tl.dot(A, uc, input_precision=PREC)
    tl.store(o + rv, (acc * scale).to(o.dtype.element_ty), mask=mv2)


def delta_rule_fwd(q, k, v, beta, scale: float, h0, chunk_size: int = 64,
                   blocks: DeltaBlocks | None = None, cu_seqlens: torch.Tensor | None = None):
    """Triton forward. Inputs contiguous; `blocks` overrides the tile sizes (tests); with
    ``cu_seqlens`` (checked offsets, B = 1) each packed sequence runs alone from its own
    state, chunks restarting at its offset, and h0, S_T are [N, H, K, V].

    Returns (o in q.dtype, S_T float32, extras) where extras = (M, U, hs, W) -- the per-chunk
    inverse, the pseudo-values, the chunk-start states and W = M (beta K) -- are kept for the
    backward.
    """
    B, T, H, K = q.shape
    V = v.shape[-1]
    C = chunk_size
    dt = acc_dtype(q.dtype)
    ACC, PREC = tl_acc(q.dtype), dot_precision(q.dtype)
    pk = Packing(cu_seqlens, C) if cu_seqlens is not None else None
    N = pk.seqs if pk else B
    hT = torch.empty(N, H, K, V, device=q.device, dtype=dt)
    o = torch.empty_like(v, dtype=store_dtype(q.dtype, q.device))
    if T == 0:
        hT.copy_(h0 if h0 is not None else torch.zeros_like(hT))
        return o.to(q.dtype), hT, None
    b, BK, BV, BKF = launch_tiles(blocks, q.dtype, K, V)
    BVS = vtile(b.bv_state, V)
    if blocks is None:
        BVS = walk_vtile(BVS, N * H, V, sm_count(q.device))
    NT = pk.chunks if pk else triton.cdiv(T, C)
    GB = 1 if pk else B                   # the chunk grids' batch: packed chunks are all in NT
    cu, cseq, co = (pk.cu, pk.cseq, pk.co) if pk else (q, q, q)
    VARLEN = pk is not None
    w = torch.empty(B, T, H, K, device=q.device, dtype=dt)
    u = torch.empty(B, T, H, V, device=q.device, dtype=dt)
    M = torch.empty(B, T, H, C, device=q.device, dtype=dt)
    _prep_kernel[(NT, GB * H)](k, v, beta, w, u, M, cu, cseq, co, T, H, K, V, NT, C=C, BK=BK,
                               BV=BV, ACC=ACC, PREC=PREC, VARLEN=VARLEN,
                               num_warps=b.inv_warps)
    un = torch.empty_like(u)
    hs = (torch.empty(NT, H, K, V, device=q.device, dtype=dt) if pk else
          torch.empty(B, H, NT, K, V, device=q.device, dtype=dt))
    _state_kernel[(triton.cdiv(V, BVS), N * H)](
        k, w, u, un, hs, h0 if h0 is not None else hs, hT, cu, co, T, H, K, V,
        HAS_H0=h0 is not None, C=C, BK=BKF, BV=BVS, ACC=ACC, PREC=PREC, VARLEN=VARLEN,
        num_warps=b.state_warps, num_stages=b.state_stages)
    _output_kernel[(triton.cdiv(V, BV), NT, GB * H)](
        q, k, un, hs, o, cu, cseq, co, scale, T, H, K, V, NT, C=C, BK=BK, BV=BV, ACC=ACC,
        PREC=PREC, VARLEN=VARLEN, num_warps=b.num_warps)
    return o.to(q.dtype), hT, (M, un, hs, w)
