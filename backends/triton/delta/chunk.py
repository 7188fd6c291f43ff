"""Triton chunked delta rule (WY / UT transform), forward and backward.

Layout [B, T, H, K]; rows past T load as k = v = beta = 0, which leaves the state unchanged.
No program holds a whole [K, V] state: the state walks keep a [K, BV] tile (all of K, so the
contraction over K stays in one program) and grid over V-tiles; every other kernel streams
[C, BK] / [C, BV] / [BK, BV] tiles through loops over K or V.  The tile sizes come from a
`DeltaBlocks` the launcher picks per dtype (`default_blocks`), or the caller passes.
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

import dataclasses

import torch
import triton
import triton.language as tl

from .._common import acc_dtype, dot_precision, sm_count, store_dtype, tl_acc


@dataclasses.dataclass(frozen=True)
class DeltaBlocks:
    """Tile sizes (powers of two >= 16, clamped to K and V) and warps of the launches.

    bk, bv: K- and V-tiles of the per-chunk kernels' loops (_prep, _output, _dv_local,
        _dqkw, _wy_bwd), of _output's grid over V and of _dqkw's grid over K.
    bv_state: V-tile of the forward walk (_state holds a [K, bv_state] tile of S).
    bv_dstate, bk_dstate: the backward walk (_dstate) holds a [K, bv_dstate] tile of dS as
        cdiv(K, bk_dstate) <= 4 row blocks (bk_dstate is raised to K/4 where needed).
    """

    bk: int = 32
    bv: int = 32
    bv_state: int = 32
    bv_dstate: int = 64
    bk_dstate: int = 64
    num_warps: int = 4          # _output, _dv_local, _dqkw
    inv_warps: int = 4          # _prep, _wy_bwd (the kernels holding [C, C] matrices)
    state_warps: int = 4
    dstate_warps: int = 8
    state_stages: int = 2


def default_blocks(dtype: torch.dtype) -> DeltaBlocks:
    """Chosen with `python -m ncd.backends.triton.aot` for sm_90 at K = V = 128: no spills.

    Half inputs run tensor-core (tf32) dots.  float32/64 'ieee' dots lower to FMA loops that
    keep whole operand row-blocks in registers (ptxas spills once a dot passes ~1024 MACs per
    thread), so they get small tiles and 8 warps everywhere."""
    if dtype in (torch.float16, torch.bfloat16):
        return DeltaBlocks()
    return DeltaBlocks(bk=32, bv=16, bv_state=16, bv_dstate=16, bk_dstate=64, num_warps=8,
                       inv_warps=16, state_warps=8, dstate_warps=8)


def _tiles(blocks: DeltaBlocks | None, dtype: torch.dtype, K: int, V: int):
    """(blocks, BK, BV, BKF): loop tiles clamped to the head dims, BKF = all of K."""
    b = blocks or default_blocks(dtype)
    for f in dataclasses.fields(b):
        x = getattr(b, f.name)
        if f.name.startswith("b") and (x < 16 or x & (x - 1)):
            raise ValueError(f"DeltaBlocks.{f.name} must be a power of two >= 16, got {x}")
    BKF = triton.next_power_of_2(max(K, 16))
    BVF = triton.next_power_of_2(max(V, 16))
    return b, min(b.bk, BKF), min(b.bv, BVF), BKF


def _vtile(x: int, V: int) -> int:
    return min(x, triton.next_power_of_2(max(V, 16)))


def _walk_vtile(BV: int, BH: int, V: int, sms: int) -> int:
    """V-tile of a sequential chunk walk (`_state`, `_dstate`): one program per (batch x head,
    V-tile) visits every chunk in order, so with few batch x heads narrow the tile (down to
    16) until the programs at least fill the SMs once."""
    while BH * triton.cdiv(V, BV) < sms and BV > 16:
        BV //= 2
    return BV


@triton.jit
def _prep_kernel(k, v, beta, w, u, m_out, T, H, K, V, C: tl.constexpr, BK: tl.constexpr,
                 BV: tl.constexpr, ACC: tl.constexpr, PREC: tl.constexpr):
    i_n, i_bh = tl.program_id(0), tl.program_id(1)
    i_b, i_h = (i_bh // H).to(tl.int64), i_bh % H
    rows = tl.arange(0, C)
    offs_t = i_n * C + rows
    mt = offs_t < T
    base = (i_b * T + offs_t) * H + i_h
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
def _state_kernel(k, w, u, un, hs, h0, hT, T, H, K, V, NT, HAS_H0: tl.constexpr,
                  C: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr, ACC: tl.constexpr,
                  PREC: tl.constexpr):
    i_v, i_bh = tl.program_id(0), tl.program_id(1)
    i_b, i_h = (i_bh // H).to(tl.int64), i_bh % H
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
        tl.store(hs + (i_bh.to(tl.int64) * NT + n) * K * V + kv_off, S, mask=mkv)
        offs_t = n * C + tl.arange(0, C)
        mt = offs_t < T
        base = (i_b * T + offs_t) * H + i_h
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
def _output_kernel(q, k, un, hs, o, scale, T, H, K, V, NT, C: tl.constexpr, BK: tl.constexpr,
                   BV: tl.constexpr, ACC: tl.constexpr, PREC: tl.constexpr):
    i_v, i_n, i_bh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    i_b, i_h = (i_bh // H).to(tl.int64), i_bh % H
    rows = tl.arange(0, C)
    offs_t = i_n * C + rows
    offs_v = i_v * BV + tl.arange(0, BV)
    mt, mv = offs_t < T, offs_v < V
    base = (i_b * T + offs_t) * H + i_h
    s_base = hs + (i_bh.to(tl.int64) * NT + i_n) * K * V
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
                   blocks: DeltaBlocks | None = None):
    """Triton forward. Inputs contiguous; `blocks` overrides the tile sizes (tests).

    Returns (o in q.dtype, S_T float32, extras) where extras = (M, U, hs, W) -- the per-chunk
    inverse, the pseudo-values, the chunk-start states and W = M (beta K) -- are kept for the
    backward.
    """
    B, T, H, K = q.shape
    V = v.shape[-1]
    C = chunk_size
    dt = acc_dtype(q.dtype)
    ACC, PREC = tl_acc(q.dtype), dot_precision(q.dtype)
    hT = torch.empty(B, H, K, V, device=q.device, dtype=dt)
    o = torch.empty_like(v, dtype=store_dtype(q.dtype, q.device))
    if T == 0:
        hT.copy_(h0 if h0 is not None else torch.zeros_like(hT))
        return o.to(q.dtype), hT, None
    b, BK, BV, BKF = _tiles(blocks, q.dtype, K, V)
    BVS = _vtile(b.bv_state, V)
    if blocks is None:
        BVS = _walk_vtile(BVS, B * H, V, sm_count(q.device))
    NT = triton.cdiv(T, C)
    w = torch.empty(B, T, H, K, device=q.device, dtype=dt)
    u = torch.empty(B, T, H, V, device=q.device, dtype=dt)
    M = torch.empty(B, T, H, C, device=q.device, dtype=dt)
    _prep_kernel[(NT, B * H)](k, v, beta, w, u, M, T, H, K, V, C=C, BK=BK, BV=BV, ACC=ACC,
                              PREC=PREC, num_warps=b.inv_warps)
    un = torch.empty_like(u)
    hs = torch.empty(B, H, NT, K, V, device=q.device, dtype=dt)
    _state_kernel[(triton.cdiv(V, BVS), B * H)](
        k, w, u, un, hs, h0 if h0 is not None else hs, hT, T, H, K, V, NT,
        HAS_H0=h0 is not None, C=C, BK=BKF, BV=BVS, ACC=ACC, PREC=PREC,
        num_warps=b.state_warps, num_stages=b.state_stages)
    _output_kernel[(triton.cdiv(V, BV), NT, B * H)](
        q, k, un, hs, o, scale, T, H, K, V, NT, C=C, BK=BK, BV=BV, ACC=ACC, PREC=PREC,
        num_warps=b.num_warps)
    return o.to(q.dtype), hT, (M, un, hs, w)


@triton.jit
def _dv_local_kernel(q, k, do, du, T, H, K, V, C: tl.constexpr, BK: tl.constexpr,
                     BV: tl.constexpr, ACC: tl.constexpr, PREC: tl.constexpr):
    """dU = tril(Q K^T)^T dO, unscaled (_dstate multiplies by scale when it adds K dS):
    the pseudo-values' gradient through the chunk's own outputs."""
    i_n, i_bh = tl.program_id(0), tl.program_id(1)
    i_b, i_h = (i_bh // H).to(tl.int64), i_bh % H
    rows = tl.arange(0, C)
    offs_t = i_n * C + rows
    mt = offs_t < T
    base = (i_b * T + offs_t) * H + i_h
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
def _dstate_kernel(q, k, w, do, dhs, du, dhT, dh0, scale, T, H, K, V, NT,
                   HAS_DHT: tl.constexpr, HAS_H0: tl.constexpr, C: tl.constexpr,
                   BK: tl.constexpr, NKB: tl.constexpr, BV: tl.constexpr, ACC: tl.constexpr,
                   PREC: tl.constexpr):
    """Walk the chunks backwards with dS = gradient of the state at the chunk's end:
         dU   = scale tril(Q K^T)^T dO + K dS    (du holds the first term from _dv_local;
                                                   the sum is stored in place)
         dS  <- dS + scale Q^T dO - W^T dU        (gradient at the chunk's start)
    Stores dS at every chunk end (dhs[n]) and dS_0 = dh0.  The [K, BV] tile of dS is held as
    NKB <= 4 row blocks of BK (dS1..dS4), so the [C, K] operands load a block at a time.
    """
    i_v, i_bh = tl.program_id(0), tl.program_id(1)
    i_b, i_h = (i_bh // H).to(tl.int64), i_bh % H
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
        p_dhs = dhs + (i_bh.to(tl.int64) * NT + n) * K * V + kv_off
        tl.store(p_dhs, dS1, mask=m1)
        if NKB > 1:
            tl.store(p_dhs + BK * V, dS2, mask=m2)
        if NKB > 2:
            tl.store(p_dhs + 2 * BK * V, dS3, mask=m3)
        if NKB > 3:
            tl.store(p_dhs + 3 * BK * V, dS4, mask=m4)
        offs_t = n * C + rows
        mt = offs_t < T
        base = (i_b * T + offs_t) * H + i_h
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
def _dqkw_kernel(q, k, hs, dhs, un, du, do, dq, dk1, dw, scale, T, H, K, V, NT,
                 C: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr, ACC: tl.constexpr,
                 PREC: tl.constexpr):
    """Per chunk and K-tile, with S = state at the chunk's start, dS = gradient at its end,
    accumulated over V-tiles:
         dAo = tril(dO U^T) scale
         dQ  = dO S^T scale + dAo K
         dK1 = dAo^T Q + U dS^T                   (dK's direct part; stored in float32)
         dW  = -dU S^T                            (stored in float32)
    """
    i_k, i_n, i_bh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    i_b, i_h = (i_bh // H).to(tl.int64), i_bh % H
    rows = tl.arange(0, C)
    offs_t = i_n * C + rows
    offs_k = i_k * BK + tl.arange(0, BK)
    mt, mk = offs_t < T, offs_k < K
    base = (i_b * T + offs_t) * H + i_h
    st = (i_bh.to(tl.int64) * NT + i_n) * K * V
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
def _wy_bwd_kernel(k, v, beta, Mi, du, dw, dk1, dk, dv, dbeta, T, H, K, V, C: tl.constexpr,
                   BK: tl.constexpr, BV: tl.constexpr, ACC: tl.constexpr, PREC: tl.constexpr):
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
    i_b, i_h = (i_bh // H).to(tl.int64), i_bh % H
    rows = tl.arange(0, C)
    offs_t = i_n * C + rows
    mt = offs_t < T
    base = (i_b * T + offs_t) * H + i_h
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
                   blocks: DeltaBlocks | None = None):
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
    b, BK, BV, BKF = _tiles(blocks, q.dtype, K, V)
    BVS = _vtile(b.bv_dstate, V)
    if blocks is None:
        BVS = _walk_vtile(BVS, B * H, V, sm_count(q.device))
    BKS = max(BKF // 4, min(b.bk_dstate, BKF))
    NT = triton.cdiv(T, C)
    dhs = torch.empty_like(hs)
    du = torch.empty(B, T, H, V, device=q.device, dtype=dt)
    _dv_local_kernel[(NT, B * H)](q, k, do, du, T, H, K, V, C=C, BK=BK, BV=BV, ACC=ACC,
                                  PREC=PREC, num_warps=b.num_warps)
    _dstate_kernel[(triton.cdiv(V, BVS), B * H)](
        q, k, w, do, dhs, du, dhT if dhT is not None else hs, dh0 if dh0 is not None else hs,
        scale, T, H, K, V, NT, HAS_DHT=dhT is not None, HAS_H0=h0 is not None, C=C, BK=BKS,
        NKB=triton.cdiv(K, BKS), BV=BVS, ACC=ACC, PREC=PREC, num_warps=b.dstate_warps,
        num_stages=b.state_stages)
    dk1 = torch.empty(B, T, H, K, device=q.device, dtype=dt)
    dw = torch.empty(B, T, H, K, device=q.device, dtype=dt)
    _dqkw_kernel[(triton.cdiv(K, BK), NT, B * H)](
        q, k, hs, dhs, un, du, do, dq, dk1, dw, scale, T, H, K, V, NT, C=C, BK=BK, BV=BV,
        ACC=ACC, PREC=PREC, num_warps=b.num_warps)
    _wy_bwd_kernel[(NT, B * H)](
        k, v, beta, M, du, dw, dk1, dk, dv, dbeta, T, H, K, V, C=C, BK=BK, BV=BV, ACC=ACC,
        PREC=PREC, num_warps=b.inv_warps)
    dh0 = dh0.to(h0.dtype) if dh0 is not None else None
    return dq.to(q.dtype), dk.to(q.dtype), dv.to(q.dtype), dbeta.to(beta.dtype), dh0
class DeltaRuleFunction(torch.autograd.Function):
    """Triton forward and backward; the backward reuses M, W, U and the chunk-start states."""

    @staticmethod
    def forward(ctx, q, k, v, beta, h0, scale, chunk_size):
        q, k, v, beta = (t.contiguous() for t in (q, k, v, beta))
        h0 = h0.contiguous() if h0 is not None else None
        o, hT, extras = delta_rule_fwd(q, k, v, beta, scale, h0, chunk_size)
        ctx.save_for_backward(q, k, v, beta, h0, *(extras or ()))
        ctx.cfg = (scale, chunk_size, extras is not None)
        return o, hT

    @staticmethod
    def backward(ctx, do, dhT):
        q, k, v, beta, h0, *extras = ctx.saved_tensors
        scale, chunk_size, has_extras = ctx.cfg
        do = torch.zeros_like(v, dtype=q.dtype) if do is None else do.contiguous()
        dhT = dhT.contiguous() if dhT is not None else None
        grads = delta_rule_bwd(q, k, v, beta, scale, h0, extras if has_extras else None, do,
                               dhT, chunk_size)
        return (*grads, None, None)


def delta_rule_triton(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, beta: torch.Tensor,
                      scale: float, h0: torch.Tensor | None = None, chunk_size: int = 64
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """Unchecked entry to the Triton path (`delta_rule` validates and dispatches)."""
    return DeltaRuleFunction.apply(q, k, v, beta, h0, scale, chunk_size)
