"""GLA backward: state-gradient walk, dA, dv, intra- and inter-chunk dq/dk with dg (see
chunk.py)."""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ncd.backends.triton._common import acc_dtype, dot_precision, sm_count, store_dtype, tl_acc
from ncd.backends.triton.packed import ChunkGrid
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
def _dstate_kernel(q, do, b, dhs, dhT, dh0, cu, co, scale, T, H, K, V,
                   HAS_DHT: tl.constexpr, HAS_H0: tl.constexpr, C: tl.constexpr,
                   BK: tl.constexpr, BV: tl.constexpr, ACC: tl.constexpr, PREC: tl.constexpr,
                   VARLEN: tl.constexpr):
    """Walk the chunks backwards: dS_n = exp(b_C) dS_{n+1} + sum_t (q_t exp b_t)^T do_t.

    Stores the gradient at every chunk's END (dhs[n]) and, at the start, dS_0 = dh0.
    """
    i_kv, i_bh = tl.program_id(0), tl.program_id(1)
    NV = tl.cdiv(V, BV)
    i_k, i_v = i_kv // NV, i_kv % NV
    tok, T, NT, s0, ss = walk_seq(i_bh, H, T, C, cu, co, VARLEN)
    q, b, do = q + tok * K, b + tok * K, do + tok * V
    offs_k = i_k * BK + tl.arange(0, BK)
    offs_v = i_v * BV + tl.arange(0, BV)
    mk, mv = offs_k < K, offs_v < V
    mkv = mk[:, None] & mv[None, :]
    kv_off = offs_k[:, None] * V + offs_v[None, :]
    if HAS_DHT:
        dS = tl.load(dhT + i_bh.to(tl.int64) * K * V + kv_off, mask=mkv, other=0.0).to(ACC)
    else:
        dS = tl.zeros([BK, BV], dtype=ACC)
    for i in range(NT):
        n = NT - 1 - i
        tl.store(dhs + (s0 + n * ss) * K * V + kv_off, dS, mask=mkv)
        offs_t = n * C + tl.arange(0, C)
        mt = offs_t < T
        rk = offs_t[:, None] * (H * K) + offs_k[None, :]
        mk2 = mt[:, None] & mk[None, :]
        qc = tl.load(q + rk, mask=mk2, other=0.0).to(ACC) * scale
        bc = tl.load(b + rk, mask=mk2, other=0.0)
        doc = tl.load(do + offs_t[:, None] * (H * V) + offs_v[None, :],
                      mask=mt[:, None] & mv[None, :], other=0.0).to(ACC)
        t_last = tl.minimum(n * C + C, T) - 1
        bl = tl.load(b + t_last * (H * K) + offs_k, mask=mk, other=0.0)
        qe = qc * tl.exp(tl.where(mk2, bc, float("-inf")))
        dS = dS * tl.exp(bl)[:, None] + tl.dot(tl.trans(qe), doc, input_precision=PREC)
    if HAS_H0:
        tl.store(dh0 + i_bh.to(tl.int64) * K * V + kv_off, dS.to(dh0.dtype.element_ty),
                 mask=mkv)


@triton.jit
def _dA_kernel(v, do, dA, cu, cseq, co, T, H, V, NT, C: tl.constexpr, BV: tl.constexpr,
               ACC: tl.constexpr, PREC: tl.constexpr, VARLEN: tl.constexpr):
    """dA_ts = do_t . v_s for s <= t in chunk n (0 above the diagonal)."""
    i_n, i_bh = tl.program_id(0), tl.program_id(1)
    tok, T, n, _ = chunk_seq(i_n, i_bh, H, T, NT, cu, cseq, co, VARLEN)
    v, do, dA = v + tok * V, do + tok * V, dA + tok * C
    offs_t = n * C + tl.arange(0, C)
    cols = tl.arange(0, C)
    mt = offs_t < T
    acc = tl.zeros([C, C], dtype=ACC)
    for v0 in range(0, V, BV):
        offs_v = v0 + tl.arange(0, BV)
        m = mt[:, None] & (offs_v < V)[None, :]
        rv = offs_t[:, None] * (H * V) + offs_v[None, :]
        doc = tl.load(do + rv, mask=m, other=0.0).to(ACC)
        vc = tl.load(v + rv, mask=m, other=0.0).to(ACC)
        acc += tl.dot(doc, tl.trans(vc), input_precision=PREC)
    acc = tl.where(cols[None, :] <= cols[:, None], acc, 0.0)
    tl.store(dA + offs_t[:, None] * (H * C) + cols[None, :], acc, mask=mt[:, None])


@triton.jit
def _dv_kernel(k, b, do, A, dhs, dv, cu, cseq, co, T, H, K, V, NT, C: tl.constexpr,
               BK: tl.constexpr, BV: tl.constexpr, ACC: tl.constexpr, PREC: tl.constexpr,
               VARLEN: tl.constexpr):
    """dv_s = sum_{t >= s} A_ts do_t + (k_s exp(b_C - b_s)) dS_{n+1}, chunk n, one V tile."""
    i_v, i_n, i_bh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    tok, T, n, srow = chunk_seq(i_n, i_bh, H, T, NT, cu, cseq, co, VARLEN)
    k, b, do, A, dv = k + tok * K, b + tok * K, do + tok * V, A + tok * C, dv + tok * V
    dhs = dhs + srow * K * V
    offs_t = n * C + tl.arange(0, C)
    offs_v = i_v * BV + tl.arange(0, BV)
    cols = tl.arange(0, C)
    mt, mv = offs_t < T, offs_v < V
    mtv = mt[:, None] & mv[None, :]
    rv = offs_t[:, None] * (H * V) + offs_v[None, :]
    a = tl.load(A + offs_t[:, None] * (H * C) + cols[None, :], mask=mt[:, None], other=0.0)
    doc = tl.load(do + rv, mask=mtv, other=0.0).to(ACC)
    acc = tl.dot(tl.trans(a), doc, input_precision=PREC)
    t_last = tl.minimum(n * C + C, T) - 1
    for k0 in range(0, K, BK):
        offs_k = k0 + tl.arange(0, BK)
        mk = offs_k < K
        mtk = mt[:, None] & mk[None, :]
        rk = offs_t[:, None] * (H * K) + offs_k[None, :]
        kc = tl.load(k + rk, mask=mtk, other=0.0).to(ACC)
        bc = tl.load(b + rk, mask=mtk, other=0.0)
        bl = tl.load(b + t_last * (H * K) + offs_k, mask=mk, other=0.0)
        kd = kc * tl.exp(tl.where(mtk, bl[None, :] - bc, float("-inf")))
        dh = tl.load(dhs + offs_k[:, None] * V + offs_v[None, :],
                     mask=mk[:, None] & mv[None, :], other=0.0)
        acc += tl.dot(kd, dh, input_precision=PREC)
    tl.store(dv + rv, acc.to(dv.dtype.element_ty), mask=mtv)


@triton.jit
def _dqk_intra_kernel(q, k, b, dA, dq, dk, cu, cseq, co, scale, T, H, K, NT,
                      C: tl.constexpr, BC: tl.constexpr, BK: tl.constexpr, ACC: tl.constexpr,
                      PREC: tl.constexpr, VARLEN: tl.constexpr):
    """Intra-chunk parts of dq, dk for the rows of sub-chunk i, one K tile:

      dq_t = scale sum_{s <= t} dA_ts k_s exp(b_t - b_s)
      dk_s = scale sum_{t >= s} dA_ts q_t exp(b_t - b_s)
    Earlier sources (dq) through r = b at row t0, later targets (dk) through r_e = b at the
    sub-chunk's last row (all exponents <= 0); the own sub-chunk one row at a time.
    """
    i_k, i_c, i_bh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    NS: tl.constexpr = C // BC
    tok, T, n, _ = chunk_seq(i_c // NS, i_bh, H, T, NT, cu, cseq, co, VARLEN)
    i = i_c % NS
    q, k, b, dA = q + tok * K, k + tok * K, b + tok * K, dA + tok * C
    dq, dk = dq + tok * K, dk + tok * K
    t0 = n * C + i * BC
    if t0 >= T:
        return
    t_e = tl.minimum(t0 + BC, T) - 1
    rows = tl.arange(0, BC)
    offs_t = t0 + rows
    offs_c = n * C + tl.arange(0, C)
    cols = tl.arange(0, C)
    offs_k = i_k * BK + tl.arange(0, BK)
    mt, mc, mk = offs_t < T, offs_c < T, offs_k < K
    mtk = mt[:, None] & mk[None, :]
    rk = offs_t[:, None] * (H * K) + offs_k[None, :]
    rc = offs_c[:, None] * (H * K) + offs_k[None, :]
    bt = tl.load(b + rk, mask=mtk, other=0.0)
    r = tl.load(b + t0 * (H * K) + offs_k, mask=mk, other=0.0)
    re = tl.load(b + t_e * (H * K) + offs_k, mask=mk, other=0.0)
    # dq from earlier sub-chunks: [BC, C] rows of dA (zero where s >= t0 by the kg mask)
    early = (offs_c < t0)[:, None] & mk[None, :]
    kc = tl.load(k + rc, mask=early, other=0.0).to(ACC)
    bc = tl.load(b + rc, mask=early, other=0.0)
    kg = kc * tl.exp(tl.where(early, r[None, :] - bc, float("-inf")))
    dA_rows = tl.load(dA + offs_t[:, None] * (H * C) + cols[None, :], mask=mt[:, None],
                      other=0.0)
    dq_acc = tl.dot(dA_rows, kg, input_precision=PREC)
    dq_acc = dq_acc * tl.exp(tl.where(mtk, bt - r[None, :], float("-inf")))
    # dk from later sub-chunks: [C, BC] columns of dA (zero where t <= t_e by the qg mask)
    late = ((offs_c > t_e) & mc)[:, None] & mk[None, :]
    qc = tl.load(q + rc, mask=late, other=0.0).to(ACC)
    bc = tl.load(b + rc, mask=late, other=0.0)
    qg = qc * tl.exp(tl.where(late, bc - re[None, :], float("-inf")))
    dA_cols = tl.load(dA + offs_c[:, None] * (H * C) + (i * BC + rows)[None, :],
                      mask=mc[:, None], other=0.0)
    dk_acc = tl.dot(tl.trans(dA_cols), qg, input_precision=PREC)
    dk_acc = dk_acc * tl.exp(tl.where(mtk, re[None, :] - bt, float("-inf")))
    # own sub-chunk, row jj as a source s (dq) and as a target t (dk)
    for jj in range(BC):
        t = t0 + jj
        okk = (tl.zeros([BK], dtype=tl.int32) + t) < T
        okr = (tl.zeros([BC], dtype=tl.int32) + t) < T
        k_r = tl.load(k + t * (H * K) + offs_k, mask=mk & okk, other=0.0).to(ACC)
        q_r = tl.load(q + t * (H * K) + offs_k, mask=mk & okk, other=0.0).to(ACC)
        b_r = tl.load(b + t * (H * K) + offs_k, mask=mk & okk, other=0.0)
        dA_col = tl.load(dA + offs_t * (H * C) + i * BC + jj, mask=mt & okr, other=0.0)
        e_src = tl.where(((offs_t >= t) & mt & okr)[:, None] & mk[None, :],
                         bt - b_r[None, :], float("-inf"))
        dq_acc += dA_col[:, None] * k_r[None, :] * tl.exp(e_src)
        dA_row = tl.load(dA + t * (H * C) + i * BC + rows, mask=mt & okr, other=0.0)
        e_tgt = tl.where(((offs_t <= t) & mt & okr)[:, None] & mk[None, :],
                         b_r[None, :] - bt, float("-inf"))
        dk_acc += dA_row[:, None] * q_r[None, :] * tl.exp(e_tgt)
    tl.store(dq + rk, dq_acc * scale, mask=mtk)
    tl.store(dk + rk, dk_acc * scale, mask=mtk)


@triton.jit
def _dqkg_kernel(q, k, v, b, hs, dhs, do, dq_in, dk_in, dq, dk, dg, cu, cseq, co, scale, T, H,
                 K, V, NT, C: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
                 ACC: tl.constexpr, PREC: tl.constexpr, VARLEN: tl.constexpr):
    """Chunk n, one K tile; adds the inter-chunk terms to the intra parts dq_in, dk_in:

      dq_t += scale exp(b_t) (do_t S_n^T),   dk_s += exp(b_C - b_s) (v_s dS_{n+1}^T)
    and dg_t = sum_{u >= t} (q_u dq_u - k_u dk_u) over the sequence, i.e. the in-chunk
    reverse cumsum plus the carry of all later chunks and of S_T, rowsum(S_end * dS_end)
    = exp(b_C) rowsum(S_n * dS_{n+1}) + sum_s k_s dk_s(inter).
    """
    i_k, i_n, i_bh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    tok, T, n, srow = chunk_seq(i_n, i_bh, H, T, NT, cu, cseq, co, VARLEN)
    q, k, b, v, do = q + tok * K, k + tok * K, b + tok * K, v + tok * V, do + tok * V
    dq_in, dk_in, dq, dk, dg = (dq_in + tok * K, dk_in + tok * K, dq + tok * K,
                                dk + tok * K, dg + tok * K)
    st = srow * K * V
    hs, dhs = hs + st, dhs + st
    offs_t = n * C + tl.arange(0, C)
    offs_k = i_k * BK + tl.arange(0, BK)
    mt, mk = offs_t < T, offs_k < K
    mtk = mt[:, None] & mk[None, :]
    dq_acc = tl.zeros([C, BK], dtype=ACC)
    dk_acc = tl.zeros([C, BK], dtype=ACC)
    hdh = tl.zeros([BK], dtype=ACC)
    for v0 in range(0, V, BV):
        offs_v = v0 + tl.arange(0, BV)
        mv = offs_v < V
        mtv = mt[:, None] & mv[None, :]
        rv = offs_t[:, None] * (H * V) + offs_v[None, :]
        doc = tl.load(do + rv, mask=mtv, other=0.0).to(ACC)
        vc = tl.load(v + rv, mask=mtv, other=0.0).to(ACC)
        mkv = mk[:, None] & mv[None, :]
        h = tl.load(hs + offs_k[:, None] * V + offs_v[None, :], mask=mkv, other=0.0)
        dh = tl.load(dhs + offs_k[:, None] * V + offs_v[None, :], mask=mkv, other=0.0)
        dq_acc += tl.dot(doc, tl.trans(h), input_precision=PREC)
        dk_acc += tl.dot(vc, tl.trans(dh), input_precision=PREC)
        hdh += tl.sum(h * dh, axis=1)
    rk = offs_t[:, None] * (H * K) + offs_k[None, :]
    t_last = tl.minimum(n * C + C, T) - 1
    bc = tl.load(b + rk, mask=mtk, other=0.0)
    bl = tl.load(b + t_last * (H * K) + offs_k, mask=mk, other=0.0)
    dq_t = tl.load(dq_in + rk, mask=mtk, other=0.0) + dq_acc * scale * tl.exp(
        tl.where(mtk, bc, float("-inf")))
    tl.store(dq + rk, dq_t.to(dq.dtype.element_ty), mask=mtk)
    x = tl.load(q + rk, mask=mtk, other=0.0).to(ACC) * dq_t
    dk_x = dk_acc * tl.exp(tl.where(mtk, bl[None, :] - bc, float("-inf")))
    dk_t = tl.load(dk_in + rk, mask=mtk, other=0.0) + dk_x
    tl.store(dk + rk, dk_t.to(dk.dtype.element_ty), mask=mtk)
    kc = tl.load(k + rk, mask=mtk, other=0.0).to(ACC)
    carry = tl.exp(bl) * hdh + tl.sum(kc * dk_x, axis=0)
    x -= kc * dk_t
    dg_t = tl.cumsum(x, axis=0, reverse=True) + carry[None, :]
    tl.store(dg + rk, dg_t.to(dg.dtype.element_ty), mask=mtk)


def gla_bwd(q, k, v, g, scale, h0, saved, hT, do, dhT, chunk_size: int = 64,
            sub_chunk: int = 16, tiles: GLATiles | None = None,
            cu_seqlens: torch.Tensor | None = None):
    """Triton backward from the forward's saved (b, hs, A). Returns (dq, dk, dv, dg, dh0)."""
    B, T, H, K = q.shape
    V = v.shape[-1]
    C, BC = chunk_size, min(sub_chunk, chunk_size)
    tuned = tiles is None
    tiles = tiles or default_tiles(q.dtype)
    dt = acc_dtype(q.dtype)
    ACC, PREC = tl_acc(q.dtype), dot_precision(q.dtype)
    sd = store_dtype(q.dtype, q.device)
    dq, dk = torch.empty_like(q, dtype=sd), torch.empty_like(k, dtype=sd)
    dv, dg = torch.empty_like(v, dtype=sd), torch.empty_like(g, dtype=sd)
    dh0 = torch.empty_like(h0, dtype=store_dtype(h0.dtype, h0.device)) if h0 is not None else None
    if T == 0:
        if dh0 is not None:
            dh0.copy_(dhT if dhT is not None else torch.zeros_like(dh0))
        return dq.to(q.dtype), dk.to(q.dtype), dv.to(q.dtype), dg.to(q.dtype), dh0
    check_sizes(T, H, K, V, C)
    b, hs, A = saved
    grid = ChunkGrid(cu_seqlens, C, B, T, q)
    N, NT, GB, VARLEN = grid.seqs, grid.chunks, grid.batch, grid.varlen
    cu, cseq, co = grid.cu, grid.cseq, grid.co
    BK, BV = tile_width(K, tiles.BK), tile_width(V, tiles.BV)
    NK, NV = triton.cdiv(K, BK), triton.cdiv(V, BV)
    dhs = torch.empty_like(hs)
    WK, WV = walk_tiles(N * H, K, V, BK, BV, sm_count(q.device)) if tuned else (BK, BV)
    _dstate_kernel[(triton.cdiv(K, WK) * triton.cdiv(V, WV), N * H)](
        q, do, b, dhs, dhT if dhT is not None else hs, dh0 if dh0 is not None else hs, cu, co,
        scale, T, H, K, V, HAS_DHT=dhT is not None, HAS_H0=h0 is not None, C=C, BK=WK,
        BV=WV, ACC=ACC, PREC=PREC, VARLEN=VARLEN, num_warps=4, num_stages=2)
    dA = torch.empty(B, T, H, C, device=q.device, dtype=dt)
    _dA_kernel[(NT, GB * H)](v, do, dA, cu, cseq, co, T, H, V, NT, C=C, BV=BV, ACC=ACC,
                             PREC=PREC, VARLEN=VARLEN, num_warps=4, num_stages=2)
    _dv_kernel[(NV, NT, GB * H)](k, b, do, A, dhs, dv, cu, cseq, co, T, H, K, V, NT, C=C,
                                 BK=BK, BV=BV, ACC=ACC, PREC=PREC, VARLEN=VARLEN, num_warps=4,
                                 num_stages=2)
    wide = wide_warps(PREC)
    dq_in = torch.empty(B, T, H, K, device=q.device, dtype=dt)
    dk_in = torch.empty(B, T, H, K, device=q.device, dtype=dt)
    _dqk_intra_kernel[(NK, NT * (C // BC), GB * H)](
        q, k, b, dA, dq_in, dk_in, cu, cseq, co, scale, T, H, K, NT, C=C, BC=BC, BK=BK,
        ACC=ACC, PREC=PREC, VARLEN=VARLEN, num_warps=4, num_stages=2)
    _dqkg_kernel[(NK, NT, GB * H)](
        q, k, v, b, hs, dhs, do, dq_in, dk_in, dq, dk, dg, cu, cseq, co, scale, T, H, K, V, NT,
        C=C, BK=BK, BV=tile_width(V, tiles.BV_dqk), ACC=ACC, PREC=PREC, VARLEN=VARLEN,
        num_warps=wide, num_stages=2)
    dh0 = dh0.to(h0.dtype) if dh0 is not None else None
    return dq.to(q.dtype), dk.to(q.dtype), dv.to(q.dtype), dg.to(q.dtype), dh0
