"""Triton chunked gated linear attention, forward and backward.

Layout [B, T, H, K]; any T: rows past T load as zeros, which is exactly "no token", since
k = v = 0 adds nothing and g = 0 decays nothing.  C = chunk_size, BC = sub_chunk, NT chunks,
NS = C / BC sub-chunks per chunk; the state dimensions are tiled BK x BV (`GLATiles`; the
launchers take 64 x 64 for half inputs, 64 x 32 for float32/64, see `default_tiles`), NK = K / BK
and NV = V / BV tiles.  No program holds more than one BK x BV state tile or one [C, C] block,
so nothing large lives in registers (at the benchmark shape every launch compiles for sm_90
without spills, see `python -m ncd.backends.triton.aot --only gla`).  Pointers are a 64-bit
base per (batch, head) plus int32 tile offsets, which keeps the address registers few.

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

import dataclasses

import torch
import triton
import triton.language as tl

from .._common import acc_dtype, dot_precision, sm_count, store_dtype, tl_acc


@dataclasses.dataclass(frozen=True)
class GLATiles:
    """Tile sizes (powers of two >= 16), clipped to the head dims by the launchers.

    BK x BV is the state tile of the state walks and the K and V tiles of the output, dv and
    dq/dk launches; BV_dqk the V step the dq/dk kernel loops over.  `default_tiles` picks
    them per dtype for an H100; tests pass 16s to walk several tiles at small K, V.
    """

    BK: int = 64
    BV: int = 64
    BV_dqk: int = 32


def default_tiles(dtype: torch.dtype) -> GLATiles:
    # float32/64 dots run on FMA units with their operands in registers: narrower V tiles
    return GLATiles() if dtype in (torch.float16, torch.bfloat16) else GLATiles(BV=32)


def _tile(n: int, cap: int) -> int:
    return min(cap, triton.next_power_of_2(max(n, 16)))


def _walk_tiles(BH: int, K: int, V: int, BK: int, BV: int, sms: int) -> tuple[int, int]:
    """State tiles of the sequential chunk walks (`_state`, `_dstate`).

    A walk is the critical path: each program visits all NT chunks in order, and there is one
    program per (batch x head, state tile). With few batch x head pairs (B2 H16: 32) the
    default 64 x 64 tiles give fewer programs than SMs and leave the card idle while a few
    programs walk; narrower tiles (down to 32) split the same work over more SMs.
    """
    while BH * triton.cdiv(K, BK) * triton.cdiv(V, BV) < sms and max(BK, BV) > 32:
        if BV >= BK:
            BV //= 2
        else:
            BK //= 2
    return BK, BV


def _wide_warps(prec: str) -> int:
    """Warps of the output and dq/dk/dg launches: 8 where the dots run on FMA units with
    their operands in registers (exact float32/64), 4 on tensor cores (tf32)."""
    return 4 if prec == "tf32" else 8


@triton.jit
def _cumsum_kernel(g, b, T, H, K, C: tl.constexpr, BK: tl.constexpr, ACC: tl.constexpr):
    i_k, i_n, i_bh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    tok = (i_bh // H).to(tl.int64) * T * H + i_bh % H
    offs_t = i_n * C + tl.arange(0, C)
    offs_k = i_k * BK + tl.arange(0, BK)
    m = (offs_t < T)[:, None] & (offs_k < K)[None, :]
    off = offs_t[:, None] * (H * K) + offs_k[None, :]
    x = tl.load(g + tok * K + off, mask=m, other=0.0).to(ACC)
    tl.store(b + tok * K + off, tl.cumsum(x, axis=0), mask=m)


@triton.jit
def _state_kernel(k, v, b, hs, h0, hT, T, H, K, V, NT, HAS_H0: tl.constexpr,
                  C: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr, ACC: tl.constexpr,
                  PREC: tl.constexpr):
    """One (BK, BV) tile of the state through all chunks: hs[n] = state at chunk n's start."""
    i_kv, i_bh = tl.program_id(0), tl.program_id(1)
    NV = tl.cdiv(V, BV)
    i_k, i_v = i_kv // NV, i_kv % NV
    tok = (i_bh // H).to(tl.int64) * T * H + i_bh % H
    k, b, v = k + tok * K, b + tok * K, v + tok * V
    offs_k = i_k * BK + tl.arange(0, BK)
    offs_v = i_v * BV + tl.arange(0, BV)
    mk, mv = offs_k < K, offs_v < V
    mkv = mk[:, None] & mv[None, :]
    kv_off = offs_k[:, None] * V + offs_v[None, :]
    hs = hs + i_bh.to(tl.int64) * NT * K * V
    if HAS_H0:
        S = tl.load(h0 + i_bh.to(tl.int64) * K * V + kv_off, mask=mkv, other=0.0).to(ACC)
    else:
        S = tl.zeros([BK, BV], dtype=ACC)
    for n in range(NT):
        tl.store(hs + n * K * V + kv_off, S, mask=mkv)
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
def _intra_kernel(q, k, b, A, scale, T, H, K, C: tl.constexpr, BC: tl.constexpr,
                  BK: tl.constexpr, ACC: tl.constexpr, PREC: tl.constexpr):
    """Rows of sub-chunk i of chunk n against the whole chunk:

      A_ts = scale sum_k q_tk k_sk exp(b_tk - b_sk) for s <= t, else 0.
    Earlier sub-chunks (s < t0) through the reference r = b at row t0: (q exp(b_t - r)) .
    (k exp(r - b_s)), both exponents <= 0; the own sub-chunk one column s at a time.
    """
    i_c, i_bh = tl.program_id(0), tl.program_id(1)
    tok = (i_bh // H).to(tl.int64) * T * H + i_bh % H
    q, k, b, A = q + tok * K, k + tok * K, b + tok * K, A + tok * C
    NS: tl.constexpr = C // BC
    n, i = i_c // NS, i_c % NS
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
def _output_kernel(q, b, v, hs, A, o, scale, T, H, K, V, NT, C: tl.constexpr,
                   BK: tl.constexpr, BV: tl.constexpr, ACC: tl.constexpr, PREC: tl.constexpr):
    """o_t = scale (q_t exp b_t) hs[n] + sum_s A_ts v_s for chunk n, one V tile."""
    i_v, n, i_bh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    tok = (i_bh // H).to(tl.int64) * T * H + i_bh % H
    q, b, v, A, o = q + tok * K, b + tok * K, v + tok * V, A + tok * C, o + tok * V
    hs = hs + (i_bh.to(tl.int64) * NT + n) * K * V
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


def _check_sizes(T, H, K, V, C):
    # offsets inside one (batch, head) sequence, or its run of chunk states, are int32
    if T * H * max(K, V, C) >= 2 ** 31 or triton.cdiv(T, C) * K * V >= 2 ** 31:
        raise ValueError(f"gla: T * H * max(K, V) and (T / chunk_size) * K * V must stay "
                         f"below 2**31, got T={T}, H={H}, K={K}, V={V}")


def gla_fwd(q, k, v, g, scale: float, h0, chunk_size: int = 64, sub_chunk: int = 16,
            tiles: GLATiles | None = None):
    """Triton forward. Inputs contiguous [B, T, H, *].

    Returns (o in q.dtype, S_T float32, saved) where saved = (b, hs, A) is kept for the
    backward: b the chunk-local gate cumsum, hs the chunk-start states, A the intra-chunk
    weights (None when T = 0).
    """
    B, T, H, K = q.shape
    V = v.shape[-1]
    C, BC = chunk_size, min(sub_chunk, chunk_size)
    tuned = tiles is None
    tiles = tiles or default_tiles(q.dtype)
    dt = acc_dtype(q.dtype)
    ACC, PREC = tl_acc(q.dtype), dot_precision(q.dtype)
    hT = torch.empty(B, H, K, V, device=q.device, dtype=dt)
    o = torch.empty_like(v, dtype=store_dtype(q.dtype, q.device))
    if T == 0:
        hT.copy_(h0 if h0 is not None else torch.zeros_like(hT))
        return o.to(q.dtype), hT, None
    _check_sizes(T, H, K, V, C)
    NT = triton.cdiv(T, C)
    BK, BV = _tile(K, tiles.BK), _tile(V, tiles.BV)
    NK, NV = triton.cdiv(K, BK), triton.cdiv(V, BV)
    b = torch.empty(B, T, H, K, device=q.device, dtype=dt)
    _cumsum_kernel[(NK, NT, B * H)](g, b, T, H, K, C=C, BK=BK, ACC=ACC, num_warps=4)
    hs = torch.empty(B, H, NT, K, V, device=q.device, dtype=dt)
    WK, WV = _walk_tiles(B * H, K, V, BK, BV, sm_count(q.device)) if tuned else (BK, BV)
    _state_kernel[(triton.cdiv(K, WK) * triton.cdiv(V, WV), B * H)](
        k, v, b, hs, h0 if h0 is not None else hs, hT, T, H, K, V, NT,
        HAS_H0=h0 is not None, C=C, BK=WK, BV=WV, ACC=ACC, PREC=PREC, num_warps=4,
        num_stages=2)
    A = torch.empty(B, T, H, C, device=q.device, dtype=dt)
    _intra_kernel[(NT * (C // BC), B * H)](
        q, k, b, A, scale, T, H, K, C=C, BC=BC, BK=BK, ACC=ACC, PREC=PREC, num_warps=4,
        num_stages=2)
    _output_kernel[(NV, NT, B * H)](
        q, b, v, hs, A, o, scale, T, H, K, V, NT, C=C, BK=BK, BV=BV, ACC=ACC, PREC=PREC,
        num_warps=_wide_warps(PREC), num_stages=2)
    return o.to(q.dtype), hT, (b, hs, A)


@triton.jit
def _dstate_kernel(q, do, b, dhs, dhT, dh0, scale, T, H, K, V, NT, HAS_DHT: tl.constexpr,
                   HAS_H0: tl.constexpr, C: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
                   ACC: tl.constexpr, PREC: tl.constexpr):
    """Walk the chunks backwards: dS_n = exp(b_C) dS_{n+1} + sum_t (q_t exp b_t)^T do_t.

    Stores the gradient at every chunk's END (dhs[n]) and, at the start, dS_0 = dh0.
    """
    i_kv, i_bh = tl.program_id(0), tl.program_id(1)
    NV = tl.cdiv(V, BV)
    i_k, i_v = i_kv // NV, i_kv % NV
    tok = (i_bh // H).to(tl.int64) * T * H + i_bh % H
    q, b, do = q + tok * K, b + tok * K, do + tok * V
    dhs = dhs + i_bh.to(tl.int64) * NT * K * V
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
        tl.store(dhs + n * K * V + kv_off, dS, mask=mkv)
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
def _dA_kernel(v, do, dA, T, H, V, C: tl.constexpr, BV: tl.constexpr, ACC: tl.constexpr,
               PREC: tl.constexpr):
    """dA_ts = do_t . v_s for s <= t in chunk n (0 above the diagonal)."""
    n, i_bh = tl.program_id(0), tl.program_id(1)
    tok = (i_bh // H).to(tl.int64) * T * H + i_bh % H
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
def _dv_kernel(k, b, do, A, dhs, dv, T, H, K, V, NT, C: tl.constexpr, BK: tl.constexpr,
               BV: tl.constexpr, ACC: tl.constexpr, PREC: tl.constexpr):
    """dv_s = sum_{t >= s} A_ts do_t + (k_s exp(b_C - b_s)) dS_{n+1}, chunk n, one V tile."""
    i_v, n, i_bh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    tok = (i_bh // H).to(tl.int64) * T * H + i_bh % H
    k, b, do, A, dv = k + tok * K, b + tok * K, do + tok * V, A + tok * C, dv + tok * V
    dhs = dhs + (i_bh.to(tl.int64) * NT + n) * K * V
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
def _dqk_intra_kernel(q, k, b, dA, dq, dk, scale, T, H, K, C: tl.constexpr,
                      BC: tl.constexpr, BK: tl.constexpr, ACC: tl.constexpr,
                      PREC: tl.constexpr):
    """Intra-chunk parts of dq, dk for the rows of sub-chunk i, one K tile:

      dq_t = scale sum_{s <= t} dA_ts k_s exp(b_t - b_s)
      dk_s = scale sum_{t >= s} dA_ts q_t exp(b_t - b_s)
    Earlier sources (dq) through r = b at row t0, later targets (dk) through r_e = b at the
    sub-chunk's last row (all exponents <= 0); the own sub-chunk one row at a time.
    """
    i_k, i_c, i_bh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    tok = (i_bh // H).to(tl.int64) * T * H + i_bh % H
    q, k, b, dA = q + tok * K, k + tok * K, b + tok * K, dA + tok * C
    dq, dk = dq + tok * K, dk + tok * K
    NS: tl.constexpr = C // BC
    n, i = i_c // NS, i_c % NS
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
def _dqkg_kernel(q, k, v, b, hs, dhs, do, dq_in, dk_in, dq, dk, dg, scale, T, H, K, V, NT,
                 C: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr, ACC: tl.constexpr,
                 PREC: tl.constexpr):
    """Chunk n, one K tile; adds the inter-chunk terms to the intra parts dq_in, dk_in:

      dq_t += scale exp(b_t) (do_t S_n^T),   dk_s += exp(b_C - b_s) (v_s dS_{n+1}^T)
    and dg_t = sum_{u >= t} (q_u dq_u - k_u dk_u) over the sequence, i.e. the in-chunk
    reverse cumsum plus the carry of all later chunks and of S_T, rowsum(S_end * dS_end)
    = exp(b_C) rowsum(S_n * dS_{n+1}) + sum_s k_s dk_s(inter).
    """
    i_k, n, i_bh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    tok = (i_bh // H).to(tl.int64) * T * H + i_bh % H
    q, k, b, v, do = q + tok * K, k + tok * K, b + tok * K, v + tok * V, do + tok * V
    dq_in, dk_in, dq, dk, dg = (dq_in + tok * K, dk_in + tok * K, dq + tok * K,
                                dk + tok * K, dg + tok * K)
    st = (i_bh.to(tl.int64) * NT + n) * K * V
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
            sub_chunk: int = 16, tiles: GLATiles | None = None):
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
    _check_sizes(T, H, K, V, C)
    b, hs, A = saved
    NT = triton.cdiv(T, C)
    BK, BV = _tile(K, tiles.BK), _tile(V, tiles.BV)
    NK, NV = triton.cdiv(K, BK), triton.cdiv(V, BV)
    dhs = torch.empty_like(hs)
    WK, WV = _walk_tiles(B * H, K, V, BK, BV, sm_count(q.device)) if tuned else (BK, BV)
    _dstate_kernel[(triton.cdiv(K, WK) * triton.cdiv(V, WV), B * H)](
        q, do, b, dhs, dhT if dhT is not None else hs, dh0 if dh0 is not None else hs, scale,
        T, H, K, V, NT, HAS_DHT=dhT is not None, HAS_H0=h0 is not None, C=C, BK=WK, BV=WV,
        ACC=ACC, PREC=PREC, num_warps=4, num_stages=2)
    dA = torch.empty(B, T, H, C, device=q.device, dtype=dt)
    _dA_kernel[(NT, B * H)](v, do, dA, T, H, V, C=C, BV=BV, ACC=ACC, PREC=PREC, num_warps=4,
                            num_stages=2)
    _dv_kernel[(NV, NT, B * H)](k, b, do, A, dhs, dv, T, H, K, V, NT, C=C, BK=BK, BV=BV,
                                ACC=ACC, PREC=PREC, num_warps=4, num_stages=2)
    wide = _wide_warps(PREC)
    dq_in = torch.empty(B, T, H, K, device=q.device, dtype=dt)
    dk_in = torch.empty(B, T, H, K, device=q.device, dtype=dt)
    _dqk_intra_kernel[(NK, NT * (C // BC), B * H)](
        q, k, b, dA, dq_in, dk_in, scale, T, H, K, C=C, BC=BC, BK=BK, ACC=ACC, PREC=PREC,
        num_warps=4, num_stages=2)
    _dqkg_kernel[(NK, NT, B * H)](
        q, k, v, b, hs, dhs, do, dq_in, dk_in, dq, dk, dg, scale, T, H, K, V, NT, C=C, BK=BK,
        BV=_tile(V, tiles.BV_dqk), ACC=ACC, PREC=PREC, num_warps=wide,
        num_stages=2)
    dh0 = dh0.to(h0.dtype) if dh0 is not None else None
    return dq.to(q.dtype), dk.to(q.dtype), dv.to(q.dtype), dg.to(q.dtype), dh0


class GLAFunction(torch.autograd.Function):
    """Triton forward and backward; the backward reuses the forward's b, hs and A."""

    @staticmethod
    def forward(ctx, q, k, v, g, h0, scale, chunk_size, sub_chunk, tiles=None):
        q, k, v, g = (t.contiguous() for t in (q, k, v, g))
        h0 = h0.contiguous() if h0 is not None else None
        o, hT, saved = gla_fwd(q, k, v, g, scale, h0, chunk_size, sub_chunk, tiles)
        ctx.save_for_backward(q, k, v, g, h0, hT, *(saved or (None, None, None)))
        ctx.cfg = (scale, chunk_size, sub_chunk, tiles)
        return o, hT

    @staticmethod
    def backward(ctx, do, dhT):
        q, k, v, g, h0, hT, *saved = ctx.saved_tensors
        scale, chunk_size, sub_chunk, tiles = ctx.cfg
        do = torch.zeros_like(v, dtype=q.dtype) if do is None else do.contiguous()
        dhT = dhT.contiguous() if dhT is not None else None
        dq, dk, dv, dg, dh0 = gla_bwd(q, k, v, g, scale, h0, tuple(saved), hT, do, dhT,
                                      chunk_size, sub_chunk, tiles)
        return dq, dk, dv, dg, dh0, None, None, None, None


def gla_triton(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, g: torch.Tensor,
               scale: float, h0: torch.Tensor | None = None, chunk_size: int = 64,
               sub_chunk: int = 16, tiles: GLATiles | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Unchecked entry to the Triton path (`gla` validates and dispatches); `tiles` picks
    the state tile sizes (default `GLATiles()`)."""
    return GLAFunction.apply(q, k, v, g, h0, scale, chunk_size, sub_chunk, tiles)
