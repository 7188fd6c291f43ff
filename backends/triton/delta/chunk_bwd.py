"""Delta-rule backward: intra-chunk dU, state-gradient walk, dq/dk/dW, the triangular-inverse
step for dv/dk/dbeta (see chunk.py)."""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ncd.backends.triton._common import acc_dtype, dot_precision, sm_count, store_dtype, tl_acc
from ncd.backends.triton.delta.blocks import DeltaBlocks, launch_tiles, vtile, walk_vtile
from ncd.backends.triton.packed import ChunkGrid
from ncd.backends.triton.packed_jit import chunk_seq, walk_seq


@triton.jit
def _dv_local_kernel(q, k, do, du, cu, cseq, co, T, H, K, V, NT, C: tl.constexpr,
                     BK: tl.constexpr, BV: tl.constexpr, ACC: tl.constexpr, PREC: tl.constexpr,
                     VARLEN: tl.constexpr):
    """dU = tril(Q K^T)^T dO, unscaled (_dstate multiplies by scale when it adds K dS):
    the pseudo-values' gradient through the chunk's own outputs."""
    i_n, i_bh = tl.program_id(0), tl.program_id(1)
    tok, T, n, _ = chunk_seq(i_n, i_bh, H, T, NT, cu, cseq, co, VARLEN)
    rows = tl.arange(0, C)
    offs_t = n * C + rows
    mt = offs_t < T
    base = tok + offs_t * H
    A = tl.zeros([C, C], dtype=ACC)
    for k0 in range(0, K, BK):
        offs_k = k0 + tl.arange(0, BK)
        rk = base[:, None] * K + offs_k[None, :]
        mk2 = mt[:, None] & (offs_k < K)[None, :]
        qc = tl.load(q + rk, mask=mk2, other=0.0).to(ACC)
        kc = tl.load(k + rk, mask=mk2, other=0.0).to(ACC)
        A += tl.dot(kc, tl.trans(qc), input_precision=PREC)      # (Q K^T)^T
    A = tl.where(rows[:, None] <= rows[None, :], A, 0.0)
    for v0 in range(0, V, BV):
        offs_v = v0 + tl.arange(0, BV)
        rv = base[:, None] * V + offs_v[None, :]
        mv2 = mt[:, None] & (offs_v < V)[None, :]
        doc = tl.load(do + rv, mask=mv2, other=0.0).to(ACC)
        tl.store(du + rv, tl.dot(A, doc, input_precision=PREC), mask=mv2)


@triton.jit
def _tile(p, base, mt, k0, K, BK: tl.constexpr):
    """[C, BK] tile of a [B, T, H, K] tensor: rows `base` (masked by mt), columns k0.."""
    offs_k = k0 + tl.arange(0, BK)
    return tl.load(p + base[:, None] * K + offs_k[None, :],
                   mask=mt[:, None] & (offs_k < K)[None, :], other=0.0)


@triton.jit
def _dstate_step(q, k, w, base, mt, dS, doc, dU, k0, K, scale, BK: tl.constexpr,
                 ACC: tl.constexpr, PREC: tl.constexpr):
    """dS += scale Q^T dO - W^T dU on the K-rows k0..k0+BK."""
    qc = _tile(q, base, mt, k0, K, BK).to(ACC)
    wc = _tile(w, base, mt, k0, K, BK)
    dS += tl.dot(tl.trans(qc), doc * scale, input_precision=PREC)
    dS -= tl.dot(tl.trans(wc), dU, input_precision=PREC)
    return dS


@triton.jit
def _dstate_kernel(q, k, w, do, dhs, du, dhT, dh0, cu, co, scale, T, H, K, V,
                   HAS_DHT: tl.constexpr, HAS_H0: tl.constexpr, C: tl.constexpr,
                   BK: tl.constexpr, NKB: tl.constexpr, BV: tl.constexpr, ACC: tl.constexpr,
                   PREC: tl.constexpr, VARLEN: tl.constexpr):
    """Walk the chunks backwards with dS = gradient of the state at the chunk's end:
         dU   = scale tril(Q K^T)^T dO + K dS    (du holds the first term from _dv_local;
                                                   the sum is stored in place)
         dS  <- dS + scale Q^T dO - W^T dU        (gradient at the chunk's start)
    Stores dS at every chunk end (dhs[n]) and dS_0 = dh0.  The [K, BV] tile of dS is held as
    NKB <= 4 row blocks of BK (dS1..dS4), so the [C, K] operands load a block at a time.
    """
    i_v, i_bh = tl.program_id(0), tl.program_id(1)
    tok, T, NT, s0, ss = walk_seq(i_bh, H, T, C, cu, co, VARLEN)
    offs_k = tl.arange(0, BK)
    offs_v = i_v * BV + tl.arange(0, BV)
    mv = offs_v < V
    kv_off = offs_k[:, None] * V + offs_v[None, :]
    m1 = (offs_k < K)[:, None] & mv[None, :]
    m2 = (offs_k + BK < K)[:, None] & mv[None, :]
    m3 = (offs_k + 2 * BK < K)[:, None] & mv[None, :]
    m4 = (offs_k + 3 * BK < K)[:, None] & mv[None, :]
    rows = tl.arange(0, C)
    dS1 = tl.zeros([BK, BV], dtype=ACC)
    dS2 = tl.zeros([BK, BV], dtype=ACC)
    dS3 = tl.zeros([BK, BV], dtype=ACC)
    dS4 = tl.zeros([BK, BV], dtype=ACC)
    if HAS_DHT:
        p_dht = dhT + i_bh.to(tl.int64) * K * V + kv_off
        dS1 = tl.load(p_dht, mask=m1, other=0.0).to(ACC)
        if NKB > 1:
            dS2 = tl.load(p_dht + BK * V, mask=m2, other=0.0).to(ACC)
        if NKB > 2:
            dS3 = tl.load(p_dht + 2 * BK * V, mask=m3, other=0.0).to(ACC)
        if NKB > 3:
            dS4 = tl.load(p_dht + 3 * BK * V, mask=m4, other=0.0).to(ACC)
    for i in range(NT):
        n = NT - 1 - i
        p_dhs = dhs + (s0 + n * ss) * K * V + kv_off
        tl.store(p_dhs, dS1, mask=m1)
        if NKB > 1:
            tl.store(p_dhs + BK * V, dS2, mask=m2)
        if NKB > 2:
            tl.store(p_dhs + 2 * BK * V, dS3, mask=m3)
        if NKB > 3:
            tl.store(p_dhs + 3 * BK * V, dS4, mask=m4)
        offs_t = n * C + rows
        mt = offs_t < T
        base = tok + offs_t * H
        rv = base[:, None] * V + offs_v[None, :]
        mv2 = mt[:, None] & mv[None, :]
        doc = tl.load(do + rv, mask=mv2, other=0.0).to(ACC)
        dU = tl.load(du + rv, mask=mv2, other=0.0) * scale
        dU += tl.dot(_tile(k, base, mt, 0, K, BK).to(ACC), dS1, input_precision=PREC)
        if NKB > 1:
            dU += tl.dot(_tile(k, base, mt, BK, K, BK).to(ACC), dS2, input_precision=PREC)
        if NKB > 2:
            dU += tl.dot(_tile(k, base, mt, 2 * BK, K, BK).to(ACC), dS3, input_precision=PREC)
        if NKB > 3:
            dU += tl.dot(_tile(k, base, mt, 3 * BK, K, BK).to(ACC), dS4, input_precision=PREC)
        tl.store(du + rv, dU, mask=mv2)
        dS1 = _dstate_step(q, k, w, base, mt, dS1, doc, dU, 0, K, scale, BK, ACC, PREC)
        if NKB > 1:
            dS2 = _dstate_step(q, k, w, base, mt, dS2, doc, dU, BK, K, scale, BK, ACC, PREC)
        if NKB > 2:
            dS3 = _dstate_step(q, k, w, base, mt, dS3, doc, dU, 2 * BK, K, scale, BK, ACC,
                               PREC)
        if NKB > 3:
            dS4 = _dstate_step(q, k, w, base, mt, dS4, doc, dU, 3 * BK, K, scale, BK, ACC,
                               PREC)
    if HAS_H0:
        p_dh0 = dh0 + i_bh.to(tl.int64) * K * V + kv_off
        tl.store(p_dh0, dS1.to(dh0.dtype.element_ty), mask=m1)
        if NKB > 1:
            tl.store(p_dh0 + BK * V, dS2.to(dh0.dtype.element_ty), mask=m2)
        if NKB > 2:
            tl.store(p_dh0 + 2 * BK * V, dS3.to(dh0.dtype.element_ty), mask=m3)
        if NKB > 3:
            tl.store(p_dh0 + 3 * BK * V, dS4.to(dh0.dtype.element_ty), mask=m4)


@triton.jit
def _dqkw_kernel(q, k, hs, dhs, un, du, do, dq, dk1, dw, cu, cseq, co, scale, T, H, K, V, NT,
                 C: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr, ACC: tl.constexpr,
                 PREC: tl.constexpr, VARLEN: tl.constexpr):
    """Per chunk and K-tile, with S = state at the chunk's start, dS = gradient at its end,
    accumulated over V-tiles:
         dAo = tril(dO U^T) scale
         dQ  = dO S^T scale + dAo K
         dK1 = dAo^T Q + U dS^T                   (dK's direct part; stored in float32)
         dW  = -dU S^T                            (stored in float32)
    """
    i_k, i_n, i_bh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    tok, T, n, srow = chunk_seq(i_n, i_bh, H, T, NT, cu, cseq, co, VARLEN)
    rows = tl.arange(0, C)
    offs_t = n * C + rows
    offs_k = i_k * BK + tl.arange(0, BK)
    mt, mk = offs_t < T, offs_k < K
    base = tok + offs_t * H
    st = srow * K * V
    dqc = tl.zeros([C, BK], dtype=ACC)
    dkc = tl.zeros([C, BK], dtype=ACC)
    dwc = tl.zeros([C, BK], dtype=ACC)
    dA = tl.zeros([C, C], dtype=ACC)
    for v0 in range(0, V, BV):
        offs_v = v0 + tl.arange(0, BV)
        mv = offs_v < V
        rv = base[:, None] * V + offs_v[None, :]
        mv2 = mt[:, None] & mv[None, :]
        doc = tl.load(do + rv, mask=mv2, other=0.0).to(ACC)
        uc = tl.load(un + rv, mask=mv2, other=0.0)
        duc = tl.load(du + rv, mask=mv2, other=0.0)
        kv = offs_k[:, None] * V + offs_v[None, :]
        mkv = mk[:, None] & mv[None, :]
        S = tl.load(hs + st + kv, mask=mkv, other=0.0)
        dS = tl.load(dhs + st + kv, mask=mkv, other=0.0)
        dqc += tl.dot(doc, tl.trans(S), input_precision=PREC)
        dkc += tl.dot(uc, tl.trans(dS), input_precision=PREC)
        dwc -= tl.dot(duc, tl.trans(S), input_precision=PREC)
        dA += tl.dot(doc, tl.trans(uc), input_precision=PREC)
    dA = tl.where(rows[:, None] >= rows[None, :], dA, 0.0) * scale
    rk = base[:, None] * K + offs_k[None, :]
    mk2 = mt[:, None] & mk[None, :]
    qc = tl.load(q + rk, mask=mk2, other=0.0).to(ACC)
    kc = tl.load(k + rk, mask=mk2, other=0.0).to(ACC)
    dqc = dqc * scale + tl.dot(dA, kc, input_precision=PREC)
    dkc += tl.dot(tl.trans(dA), qc, input_precision=PREC)
    tl.store(dq + rk, dqc.to(dq.dtype.element_ty), mask=mk2)
    tl.store(dk1 + rk, dkc, mask=mk2)
    tl.store(dw + rk, dwc, mask=mk2)


@triton.jit
def _wy_bwd_kernel(k, v, beta, Mi, du, dw, dk1, dk, dv, dbeta, cu, cseq, co, T, H, K, V, NT,
                   C: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr, ACC: tl.constexpr,
                   PREC: tl.constexpr, VARLEN: tl.constexpr):
    """Per chunk, through W = M Kb, U0 = M Vb (Kb = beta K, Vb = beta V), M = (I + L)^-1,
    L = tril(beta K K^T, -1):
         dVb = M^T dU,  dKb = M^T dW,  dM = dW Kb^T + dU Vb^T
         dL  = -M^T dM M^T on the strict lower triangle
         dV  = beta dVb
         dK  = dK1 + beta (dKb + dL K) + dL^T Kb
         dbeta = rowsum(dVb * V + dKb * K + K * (dL K))   [rowsum(dL * K K^T) = rowsum(K * dL K)]
    V-tiles first (dv, dbeta's V part, dU Vb^T), then K-tiles for dW Kb^T, then K-tiles for dk.
    """
    i_n, i_bh = tl.program_id(0), tl.program_id(1)
    tok, T, n, _ = chunk_seq(i_n, i_bh, H, T, NT, cu, cseq, co, VARLEN)
    rows = tl.arange(0, C)
    offs_t = n * C + rows
    mt = offs_t < T
    base = tok + offs_t * H
    bc = tl.load(beta + base, mask=mt, other=0.0).to(ACC)
    Mt = tl.trans(tl.load(Mi + base[:, None] * C + rows[None, :], mask=mt[:, None], other=0.0))
    dM = tl.zeros([C, C], dtype=ACC)
    db = tl.zeros([C], dtype=ACC)
    for v0 in range(0, V, BV):
        offs_v = v0 + tl.arange(0, BV)
        rv = base[:, None] * V + offs_v[None, :]
        mv2 = mt[:, None] & (offs_v < V)[None, :]
        duc = tl.load(du + rv, mask=mv2, other=0.0)
        vc = tl.load(v + rv, mask=mv2, other=0.0).to(ACC)
        dVb = tl.dot(Mt, duc, input_precision=PREC)
        tl.store(dv + rv, (bc[:, None] * dVb).to(dv.dtype.element_ty), mask=mv2)
        db += tl.sum(dVb * vc, axis=1)
        dM += tl.dot(duc, tl.trans(vc * bc[:, None]), input_precision=PREC)
    for k0 in range(0, K, BK):
        offs_k = k0 + tl.arange(0, BK)
        rk = base[:, None] * K + offs_k[None, :]
        mk2 = mt[:, None] & (offs_k < K)[None, :]
        dwc = tl.load(dw + rk, mask=mk2, other=0.0)
        kc = tl.load(k + rk, mask=mk2, other=0.0).to(ACC)
        dM += tl.dot(dwc, tl.trans(kc * bc[:, None]), input_precision=PREC)
    dL = -tl.dot(tl.dot(Mt, dM, input_precision=PREC), Mt, input_precision=PREC)
    dL = tl.where(rows[:, None] > rows[None, :], dL, 0.0)
    for k0 in range(0, K, BK):
        offs_k = k0 + tl.arange(0, BK)
        rk = base[:, None] * K + offs_k[None, :]
        mk2 = mt[:, None] & (offs_k < K)[None, :]
        dwc = tl.load(dw + rk, mask=mk2, other=0.0)
        kc = tl.load(k + rk, mask=mk2, other=0.0).to(ACC)
        dKb = tl.dot(Mt, dwc, input_precision=PREC)
        dLK = tl.dot(dL, kc, input_precision=PREC)
        dkc = tl.load(dk1 + rk, mask=mk2, other=0.0) + bc[:, None] * (dKb + dLK)
        dkc += tl.dot(tl.trans(dL), kc * bc[:, None], input_precision=PREC)
        tl.store(dk + rk, dkc.to(dk.dtype.element_ty), mask=mk2)
        db += tl.sum((dKb + dLK) * kc, axis=1)
    tl.store(dbeta + base, db.to(dbeta.dtype.element_ty), mask=mt)


def delta_rule_bwd(q, k, v, beta, scale, h0, extras, do, dhT, chunk_size: int = 64,
                   blocks: DeltaBlocks | None = None, cu_seqlens: torch.Tensor | None = None):
    """Triton backward from the forward's (M, U, hs, W). Returns (dq, dk, dv, dbeta, dh0)."""
    B, T, H, K = q.shape
    V = v.shape[-1]
    C = chunk_size
    dt = acc_dtype(q.dtype)
    ACC, PREC = tl_acc(q.dtype), dot_precision(q.dtype)
    sd = store_dtype(q.dtype, q.device)
    dq, dk = torch.empty_like(q, dtype=sd), torch.empty_like(k, dtype=sd)
    dv = torch.empty_like(v, dtype=sd)
    dbeta = torch.empty_like(beta, dtype=store_dtype(beta.dtype, beta.device))
    dh0 = torch.empty_like(h0, dtype=store_dtype(h0.dtype, h0.device)) if h0 is not None else None
    if T == 0:
        if dh0 is not None:
            dh0.copy_(dhT if dhT is not None else torch.zeros_like(dh0))
        return dq.to(q.dtype), dk.to(q.dtype), dv.to(q.dtype), dbeta.to(beta.dtype), dh0
    M, un, hs, w = extras
    grid = ChunkGrid(cu_seqlens, C, B, T, q)
    N, NT, GB, VARLEN = grid.seqs, grid.chunks, grid.batch, grid.varlen
    cu, cseq, co = grid.cu, grid.cseq, grid.co
    b, BK, BV, BKF = launch_tiles(blocks, q.dtype, K, V)
    BVS = vtile(b.bv_dstate, V)
    if blocks is None:
        BVS = walk_vtile(BVS, N * H, V, sm_count(q.device))
    BKS = max(BKF // 4, min(b.bk_dstate, BKF))
    dhs = torch.empty_like(hs)
    du = torch.empty(B, T, H, V, device=q.device, dtype=dt)
    _dv_local_kernel[(NT, GB * H)](q, k, do, du, cu, cseq, co, T, H, K, V, NT, C=C, BK=BK,
                                   BV=BV, ACC=ACC, PREC=PREC, VARLEN=VARLEN,
                                   num_warps=b.num_warps)
    _dstate_kernel[(triton.cdiv(V, BVS), N * H)](
        q, k, w, do, dhs, du, dhT if dhT is not None else hs, dh0 if dh0 is not None else hs,
        cu, co, scale, T, H, K, V, HAS_DHT=dhT is not None, HAS_H0=h0 is not None, C=C,
        BK=BKS, NKB=triton.cdiv(K, BKS), BV=BVS, ACC=ACC, PREC=PREC, VARLEN=VARLEN,
        num_warps=b.dstate_warps, num_stages=b.state_stages)
    dk1 = torch.empty(B, T, H, K, device=q.device, dtype=dt)
    dw = torch.empty(B, T, H, K, device=q.device, dtype=dt)
    _dqkw_kernel[(triton.cdiv(K, BK), NT, GB * H)](
        q, k, hs, dhs, un, du, do, dq, dk1, dw, cu, cseq, co, scale, T, H, K, V, NT, C=C,
        BK=BK, BV=BV, ACC=ACC, PREC=PREC, VARLEN=VARLEN, num_warps=b.num_warps)
    _wy_bwd_kernel[(NT, GB * H)](
        k, v, beta, M, du, dw, dk1, dk, dv, dbeta, cu, cseq, co, T, H, K, V, NT, C=C, BK=BK,
        BV=BV, ACC=ACC, PREC=PREC, VARLEN=VARLEN, num_warps=b.inv_warps)
    dh0 = dh0.to(h0.dtype) if dh0 is not None else None
    return dq.to(q.dtype), dk.to(q.dtype), dv.to(q.dtype), dbeta.to(beta.dtype), dh0
