"""Triton chunked gated linear attention, forward and backward.

Layout [B, T, H, K]; any T: rows past T load as zeros, which is exactly "no token", since
k = v = 0 adds nothing and g = 0 decays nothing.  Forward, three launches:
  1. `_cumsum_kernel`  b = chunk-local cumulative sum of the log gates   grid (NT, B*H)
  2. `_state_kernel`   walks the chunks in order, writes the state at every chunk start
                       and the final state                               grid (V/BV, B*H)
  3. `_output_kernel`  one program per sub-chunk of BC rows: inter-chunk term from the
                       stored state, earlier sub-chunks through the factorised (stable)
                       form, its own sub-chunk row by row              grid (V/BV, NT*NS, B*H)
Backward, three launches, reusing b and the chunk-start states from the forward:
  4. `_dstate_kernel`  walks the chunks backwards: state gradient at every chunk end, dh0
  5. `_dqkv_kernel`    dq, dk, dv of one sub-chunk (same split as 3)    grid (NT*NS, B*H)
  6. `_dg_kernel`      dg = reverse cumsum over T of q*dq - k*dk, plus the final-state term
See chunk_torch.py for the forward formulas; the gradient formulas sit on the kernels.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .._common import acc_dtype, dot_precision, store_dtype, tl_acc


@triton.jit
def _cumsum_kernel(g, b, T, H, K, C: tl.constexpr, BK: tl.constexpr, ACC: tl.constexpr):
    i_n, i_bh = tl.program_id(0), tl.program_id(1)
    i_b, i_h = (i_bh // H).to(tl.int64), i_bh % H
    offs_t = i_n * C + tl.arange(0, C)
    offs_k = tl.arange(0, BK)
    m = (offs_t < T)[:, None] & (offs_k < K)[None, :]
    ptr = ((i_b * T + offs_t) * H + i_h)[:, None] * K + offs_k[None, :]
    x = tl.load(g + ptr, mask=m, other=0.0).to(ACC)
    tl.store(b + ptr, tl.cumsum(x, axis=0), mask=m)


@triton.jit
def _state_kernel(k, v, b, hs, h0, hT, T, H, K, V, NT, HAS_H0: tl.constexpr,
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
        rk = ((i_b * T + offs_t) * H + i_h)[:, None] * K + offs_k[None, :]
        rv = ((i_b * T + offs_t) * H + i_h)[:, None] * V + offs_v[None, :]
        kc = tl.load(k + rk, mask=mt[:, None] & mk[None, :], other=0.0).to(ACC)
        bc = tl.load(b + rk, mask=mt[:, None] & mk[None, :], other=0.0).to(ACC)
        vc = tl.load(v + rv, mask=mt[:, None] & mv[None, :], other=0.0).to(ACC)
        t_last = tl.minimum(n * C + C, T) - 1
        bl = tl.load(b + ((i_b * T + t_last) * H + i_h) * K + offs_k, mask=mk, other=0.0)
        kd = kc * tl.exp(bl[None, :] - bc)
        S = S * tl.exp(bl)[:, None] + tl.dot(tl.trans(kd), vc, input_precision=PREC)
    tl.store(hT + i_bh.to(tl.int64) * K * V + kv_off, S.to(hT.dtype.element_ty), mask=mkv)


@triton.jit
def _output_kernel(q, k, v, b, hs, o, scale, T, H, K, V, NT, C: tl.constexpr,
                   BC: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr, ACC: tl.constexpr,
                   PREC: tl.constexpr):
    i_v, i_c, i_bh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    i_b, i_h = (i_bh // H).to(tl.int64), i_bh % H
    NS: tl.constexpr = C // BC
    n, i = i_c // NS, i_c % NS
    t0 = n * C + i * BC
    if t0 >= T:
        return
    offs_t = t0 + tl.arange(0, BC)
    offs_k = tl.arange(0, BK)
    offs_v = i_v * BV + tl.arange(0, BV)
    mt, mk, mv = offs_t < T, offs_k < K, offs_v < V
    rk = ((i_b * T + offs_t) * H + i_h)[:, None] * K + offs_k[None, :]
    qv = tl.load(q + rk, mask=mt[:, None] & mk[None, :], other=0.0).to(ACC) * scale
    bq = tl.load(b + rk, mask=mt[:, None] & mk[None, :], other=0.0).to(ACC)
    # inter-chunk: (q_t exp b_t) S_n
    S = tl.load(hs + (i_bh.to(tl.int64) * NT + n) * K * V + offs_k[:, None] * V
                + offs_v[None, :], mask=mk[:, None] & mv[None, :], other=0.0)
    acc = tl.dot(qv * tl.exp(bq), S, input_precision=PREC)
    # earlier sub-chunks j < i, factorised through r = b at row t0 (exponents <= 0)
    r = tl.load(b + ((i_b * T + t0) * H + i_h) * K + offs_k, mask=mk, other=0.0).to(ACC)
    qg = tl.where(mt[:, None] & mk[None, :], qv * tl.exp(bq - r[None, :]), 0.0)
    for j in range(0, i):
        offs_s = n * C + j * BC + tl.arange(0, BC)
        ms = offs_s < T
        sk = ((i_b * T + offs_s) * H + i_h)[:, None] * K + offs_k[None, :]
        sv = ((i_b * T + offs_s) * H + i_h)[:, None] * V + offs_v[None, :]
        kj = tl.load(k + sk, mask=ms[:, None] & mk[None, :], other=0.0).to(ACC)
        bj = tl.load(b + sk, mask=ms[:, None] & mk[None, :], other=0.0).to(ACC)
        vj = tl.load(v + sv, mask=ms[:, None] & mv[None, :], other=0.0).to(ACC)
        A = tl.dot(qg, tl.trans(kj * tl.exp(r[None, :] - bj)), input_precision=PREC)
        acc += tl.dot(A, vj, input_precision=PREC)
    # own sub-chunk, one source row s at a time, exponent masked to s <= t before exp
    for jj in range(0, BC):
        s = t0 + jj
        ok = (tl.zeros([BK], dtype=tl.int32) + s) < T     # tensor, not scalar, mask
        krow = tl.load(k + ((i_b * T + s) * H + i_h) * K + offs_k, mask=mk & ok, other=0.0)
        brow = tl.load(b + ((i_b * T + s) * H + i_h) * K + offs_k, mask=mk & ok, other=0.0)
        okv = (tl.zeros([BV], dtype=tl.int32) + s) < T
        vrow = tl.load(v + ((i_b * T + s) * H + i_h) * V + offs_v, mask=mv & okv, other=0.0)
        e = tl.where((offs_t >= s)[:, None], bq - brow.to(ACC)[None, :], float("-inf"))
        w = tl.sum(qv * krow.to(ACC)[None, :] * tl.exp(e), axis=1)
        acc += w[:, None] * vrow.to(ACC)[None, :]
    ro = ((i_b * T + offs_t) * H + i_h)[:, None] * V + offs_v[None, :]
    tl.store(o + ro, acc.to(o.dtype.element_ty), mask=mt[:, None] & mv[None, :])


def gla_fwd(q, k, v, g, scale: float, h0, chunk_size: int = 64, sub_chunk: int = 16):
    """Triton forward. Inputs contiguous [B, T, H, *].

    Returns (o in q.dtype, S_T float32, b = chunk-local gate cumsum, hs = chunk-start states);
    the last two are kept for the backward.
    """
    B, T, H, K = q.shape
    V = v.shape[-1]
    C, BC = chunk_size, min(sub_chunk, chunk_size)
    dt = acc_dtype(q.dtype)
    ACC, PREC = tl_acc(q.dtype), dot_precision(q.dtype)
    hT = torch.empty(B, H, K, V, device=q.device, dtype=dt)
    o = torch.empty_like(v, dtype=store_dtype(q.dtype, q.device))
    if T == 0:
        hT.copy_(h0 if h0 is not None else torch.zeros_like(hT))
        return o.to(q.dtype), hT, None, None
    NT = triton.cdiv(T, C)
    BK = triton.next_power_of_2(max(K, 16))
    BV = min(64, triton.next_power_of_2(max(V, 16)))
    b = torch.empty(B, T, H, K, device=q.device, dtype=dt)
    _cumsum_kernel[(NT, B * H)](g, b, T, H, K, C=C, BK=BK, ACC=ACC)
    hs = torch.empty(B, H, NT, K, V, device=q.device, dtype=dt)
    _state_kernel[(triton.cdiv(V, BV), B * H)](
        k, v, b, hs, h0 if h0 is not None else hs, hT, T, H, K, V, NT,
        HAS_H0=h0 is not None, C=C, BK=BK, BV=BV, ACC=ACC, PREC=PREC, num_warps=4,
        num_stages=2)
    _output_kernel[(triton.cdiv(V, BV), NT * (C // BC), B * H)](
        q, k, v, b, hs, o, scale, T, H, K, V, NT, C=C, BC=BC, BK=BK, BV=BV, ACC=ACC,
        PREC=PREC, num_warps=4)
    return o.to(q.dtype), hT, b, hs


@triton.jit
def _dstate_kernel(q, do, b, dhs, dhT, dh0, scale, T, H, K, V, NT, HAS_DHT: tl.constexpr,
                   HAS_H0: tl.constexpr, C: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
                   ACC: tl.constexpr, PREC: tl.constexpr):
    """Walk the chunks backwards: dS_n = exp(b_C) dS_{n+1} + sum_t (q_t exp b_t)^T do_t.

    Stores the gradient at every chunk's END (dhs[n]) and, at the start, dS_0 = dh0.
    """
    i_v, i_bh = tl.program_id(0), tl.program_id(1)
    i_b, i_h = (i_bh // H).to(tl.int64), i_bh % H
    offs_k = tl.arange(0, BK)
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
        tl.store(dhs + (i_bh.to(tl.int64) * NT + n) * K * V + kv_off, dS, mask=mkv)
        offs_t = n * C + tl.arange(0, C)
        mt = offs_t < T
        rk = ((i_b * T + offs_t) * H + i_h)[:, None] * K + offs_k[None, :]
        rv = ((i_b * T + offs_t) * H + i_h)[:, None] * V + offs_v[None, :]
        mk2 = mt[:, None] & mk[None, :]
        qc = tl.load(q + rk, mask=mk2, other=0.0).to(ACC) * scale
        bc = tl.load(b + rk, mask=mk2, other=0.0)
        doc = tl.load(do + rv, mask=mt[:, None] & mv[None, :], other=0.0).to(ACC)
        t_last = tl.minimum(n * C + C, T) - 1
        bl = tl.load(b + ((i_b * T + t_last) * H + i_h) * K + offs_k, mask=mk, other=0.0)
        qe = tl.where(mk2, qc * tl.exp(bc), 0.0)
        dS = dS * tl.exp(bl)[:, None] + tl.dot(tl.trans(qe), doc, input_precision=PREC)
    if HAS_H0:
        tl.store(dh0 + i_bh.to(tl.int64) * K * V + kv_off, dS.to(dh0.dtype.element_ty), mask=mkv)


@triton.jit
def _dqkv_kernel(q, k, v, b, hs, dhs, do, dq, dk, dv, dqk, scale, T, H, K, V, NT,
                 C: tl.constexpr, BC: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
                 ACC: tl.constexpr, PREC: tl.constexpr):
    """dq, dk, dv of one sub-chunk of BC rows (all of K and V in one program).

      dq_t = scale [exp(b_t) (do_t S_n^T) + sum_{s<=t} (do_t.v_s) k_s exp(b_t - b_s)]
      dk_s = exp(b_C - b_s) (v_s dS_{n+1}^T) + sum_{t>=s} (do_t.v_s) scale q_t exp(b_t - b_s)
      dv_s = (k_s exp(b_C - b_s)) dS_{n+1} + sum_{t>=s} A_ts do_t
    Other sub-chunks go through the factorised form with a reference row r (exponents <= 0),
    the own sub-chunk row by row.  Also writes q*dq - k*dk, whose reverse cumsum is dg.
    """
    i_c, i_bh = tl.program_id(0), tl.program_id(1)
    i_b, i_h = (i_bh // H).to(tl.int64), i_bh % H
    NS: tl.constexpr = C // BC
    n, i = i_c // NS, i_c % NS
    t0 = n * C + i * BC
    if t0 >= T:
        return
    nsv = tl.minimum(NS, (T - n * C + BC - 1) // BC)   # sub-chunks of this chunk inside T
    rows = tl.arange(0, BC)
    offs_t = t0 + rows
    offs_k = tl.arange(0, BK)
    offs_v = tl.arange(0, BV)
    mt, mk, mv = offs_t < T, offs_k < K, offs_v < V
    mk2 = mt[:, None] & mk[None, :]
    mv2 = mt[:, None] & mv[None, :]
    base = (i_b * T + offs_t) * H + i_h
    rk = base[:, None] * K + offs_k[None, :]
    rv = base[:, None] * V + offs_v[None, :]
    q_raw = tl.load(q + rk, mask=mk2, other=0.0).to(ACC)
    kv = tl.load(k + rk, mask=mk2, other=0.0).to(ACC)
    bq = tl.load(b + rk, mask=mk2, other=0.0)
    vv = tl.load(v + rv, mask=mv2, other=0.0).to(ACC)
    dov = tl.load(do + rv, mask=mv2, other=0.0).to(ACC)
    st_off = (i_bh.to(tl.int64) * NT + n) * K * V + offs_k[:, None] * V + offs_v[None, :]
    mkv = mk[:, None] & mv[None, :]
    S = tl.load(hs + st_off, mask=mkv, other=0.0)
    dS = tl.load(dhs + st_off, mask=mkv, other=0.0)
    t_last = tl.minimum(n * C + C, T) - 1
    bl = tl.load(b + ((i_b * T + t_last) * H + i_h) * K + offs_k, mask=mk, other=0.0)
    decay_to_end = tl.where(mk2, tl.exp(bl[None, :] - bq), 0.0)
    # inter-chunk terms
    dq_acc = tl.dot(dov, tl.trans(S), input_precision=PREC) * tl.where(mk2, tl.exp(bq), 0.0)
    dk_acc = tl.dot(vv, tl.trans(dS), input_precision=PREC) * decay_to_end
    dv_acc = tl.dot(kv * decay_to_end, dS, input_precision=PREC)
    # earlier sub-chunks (sources of dq), reference r = b at row t0
    r = tl.load(b + ((i_b * T + t0) * H + i_h) * K + offs_k, mask=mk, other=0.0)
    dq_far = tl.zeros([BC, BK], dtype=ACC)
    for j in range(0, i):
        offs_s = n * C + j * BC + rows
        bs_ = (i_b * T + offs_s) * H + i_h
        sk = bs_[:, None] * K + offs_k[None, :]
        sv = bs_[:, None] * V + offs_v[None, :]
        kj = tl.load(k + sk, mask=mk[None, :], other=0.0).to(ACC)
        bj = tl.load(b + sk, mask=mk[None, :], other=0.0)
        vj = tl.load(v + sv, mask=mv[None, :], other=0.0).to(ACC)
        dA = tl.dot(dov, tl.trans(vj), input_precision=PREC)               # [t in i, s in j]
        dq_far += tl.dot(dA, kj * tl.exp(r[None, :] - bj), input_precision=PREC)
    dq_acc += dq_far * tl.where(mk2, tl.exp(bq - r[None, :]), 0.0)
    # later sub-chunks (targets of dk, dv), reference r_j = b at their first row
    for j in range(i + 1, nsv):
        offs_u = n * C + j * BC + rows
        mu = offs_u < T
        bu_ = (i_b * T + offs_u) * H + i_h
        uk = bu_[:, None] * K + offs_k[None, :]
        uv = bu_[:, None] * V + offs_v[None, :]
        mu2 = mu[:, None] & mk[None, :]
        qj = tl.load(q + uk, mask=mu2, other=0.0).to(ACC) * scale
        bj = tl.load(b + uk, mask=mu2, other=0.0)
        doj = tl.load(do + uv, mask=mu[:, None] & mv[None, :], other=0.0).to(ACC)
        rj = tl.load(b + ((i_b * T + n * C + j * BC) * H + i_h) * K + offs_k, mask=mk, other=0.0)
        qg = tl.where(mu2, qj * tl.exp(bj - rj[None, :]), 0.0)             # [t in j, K]
        kg = tl.where(mk2, tl.exp(rj[None, :] - bq), 0.0)                   # [s in i, K]
        A = tl.dot(qg, tl.trans(kv * kg), input_precision=PREC)            # [t in j, s in i]
        dv_acc += tl.dot(tl.trans(A), doj, input_precision=PREC)
        dA = tl.dot(doj, tl.trans(vv), input_precision=PREC)               # [t in j, s in i]
        dk_acc += tl.dot(tl.trans(dA), qg, input_precision=PREC) * kg
    # own sub-chunk, one row jj at a time: as a source s (dq) and as a target t (dk, dv)
    for jj in range(0, BC):
        t = t0 + jj
        okk = (tl.zeros([BK], dtype=tl.int32) + t) < T
        okv = (tl.zeros([BV], dtype=tl.int32) + t) < T
        okr = (tl.zeros([BC], dtype=tl.int32) + t) < T
        row = (i_b * T + t) * H + i_h
        k_r = tl.load(k + row * K + offs_k, mask=mk & okk, other=0.0).to(ACC)
        q_r = tl.load(q + row * K + offs_k, mask=mk & okk, other=0.0).to(ACC) * scale
        b_r = tl.load(b + row * K + offs_k, mask=mk & okk, other=0.0)
        v_r = tl.load(v + row * V + offs_v, mask=mv & okv, other=0.0).to(ACC)
        do_r = tl.load(do + row * V + offs_v, mask=mv & okv, other=0.0).to(ACC)
        # row jj as source s: rows t >= s of this sub-chunk
        e_src = tl.where(((offs_t >= t) & okr & mt)[:, None], bq - b_r[None, :], float("-inf"))
        dA_src = tl.sum(dov * v_r[None, :], axis=1)
        dq_acc += dA_src[:, None] * k_r[None, :] * tl.exp(e_src)
        # row jj as target t: rows s <= t of this sub-chunk
        e_tgt = tl.where(((offs_t <= t) & okr & mt)[:, None], b_r[None, :] - bq, float("-inf"))
        w_tgt = tl.exp(e_tgt)
        dA_tgt = tl.sum(vv * do_r[None, :], axis=1)
        dk_acc += dA_tgt[:, None] * q_r[None, :] * w_tgt
        A_tgt = tl.sum(kv * q_r[None, :] * w_tgt, axis=1)
        dv_acc += A_tgt[:, None] * do_r[None, :]
    dq_acc = dq_acc * scale
    tl.store(dq + rk, dq_acc.to(dq.dtype.element_ty), mask=mk2)
    tl.store(dk + rk, dk_acc.to(dk.dtype.element_ty), mask=mk2)
    tl.store(dv + rv, dv_acc.to(dv.dtype.element_ty), mask=mv2)
    tl.store(dqk + rk, q_raw * dq_acc - kv * dk_acc, mask=mk2)


@triton.jit
def _dg_kernel(dqk, hT, dhT, dg, T, H, K, V, NT, HAS_DHT: tl.constexpr, C: tl.constexpr,
               BK: tl.constexpr, BV: tl.constexpr, ACC: tl.constexpr):
    """dg_t = sum_{u >= t} (q_u dq_u - k_u dk_u) + rowsum(S_T * dS_T), over the whole sequence."""
    i_bh = tl.program_id(0)
    i_b, i_h = (i_bh // H).to(tl.int64), i_bh % H
    offs_k = tl.arange(0, BK)
    mk = offs_k < K
    carry = tl.zeros([BK], dtype=ACC)
    if HAS_DHT:
        for v0 in range(0, V, BV):
            offs_v = v0 + tl.arange(0, BV)
            m = mk[:, None] & (offs_v < V)[None, :]
            off = i_bh.to(tl.int64) * K * V + offs_k[:, None] * V + offs_v[None, :]
            sT = tl.load(hT + off, mask=m, other=0.0).to(ACC)
            dsT = tl.load(dhT + off, mask=m, other=0.0).to(ACC)
            carry += tl.sum(sT * dsT, axis=1)
    for i in range(NT):
        n = NT - 1 - i
        offs_t = n * C + tl.arange(0, C)
        m = (offs_t < T)[:, None] & mk[None, :]
        rk = ((i_b * T + offs_t) * H + i_h)[:, None] * K + offs_k[None, :]
        x = tl.load(dqk + rk, mask=m, other=0.0)
        rc = tl.cumsum(x, axis=0, reverse=True) + carry[None, :]
        tl.store(dg + rk, rc.to(dg.dtype.element_ty), mask=m)
        carry += tl.sum(x, axis=0)


def gla_bwd(q, k, v, g, scale, h0, b, hs, hT, do, dhT, chunk_size: int = 64,
            sub_chunk: int = 16):
    """Triton backward from the forward's b and hs. Returns (dq, dk, dv, dg, dh0)."""
    B, T, H, K = q.shape
    V = v.shape[-1]
    C, BC = chunk_size, min(sub_chunk, chunk_size)
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
    NT = triton.cdiv(T, C)
    BK = triton.next_power_of_2(max(K, 16))
    BVf = triton.next_power_of_2(max(V, 16))
    BV = min(64, BVf)
    dhs = torch.empty_like(hs)
    _dstate_kernel[(triton.cdiv(V, BV), B * H)](
        q, do, b, dhs, dhT if dhT is not None else hs, dh0 if dh0 is not None else hs, scale,
        T, H, K, V, NT, HAS_DHT=dhT is not None, HAS_H0=h0 is not None, C=C, BK=BK, BV=BV,
        ACC=ACC, PREC=PREC, num_warps=4, num_stages=2)
    dqk = torch.empty(B, T, H, K, device=q.device, dtype=dt)
    _dqkv_kernel[(NT * (C // BC), B * H)](
        q, k, v, b, hs, dhs, do, dq, dk, dv, dqk, scale, T, H, K, V, NT, C=C, BC=BC, BK=BK,
        BV=BVf, ACC=ACC, PREC=PREC, num_warps=8,
        num_stages=1)
    _dg_kernel[(B * H,)](dqk, hT, dhT if dhT is not None else hT, dg, T, H, K, V, NT,
                         HAS_DHT=dhT is not None, C=C, BK=BK, BV=BV, ACC=ACC, num_warps=4)
    dh0 = dh0.to(h0.dtype) if dh0 is not None else None
    return dq.to(q.dtype), dk.to(q.dtype), dv.to(q.dtype), dg.to(q.dtype), dh0


class GLAFunction(torch.autograd.Function):
    """Triton forward and backward; the backward reuses the forward's chunk-start states."""

    @staticmethod
    def forward(ctx, q, k, v, g, h0, scale, chunk_size, sub_chunk):
        q, k, v, g = (t.contiguous() for t in (q, k, v, g))
        h0 = h0.contiguous() if h0 is not None else None
        o, hT, b, hs = gla_fwd(q, k, v, g, scale, h0, chunk_size, sub_chunk)
        ctx.save_for_backward(q, k, v, g, h0, b, hs, hT)
        ctx.cfg = (scale, chunk_size, sub_chunk)
        return o, hT

    @staticmethod
    def backward(ctx, do, dhT):
        q, k, v, g, h0, b, hs, hT = ctx.saved_tensors
        scale, chunk_size, sub_chunk = ctx.cfg
        do = torch.zeros_like(v, dtype=q.dtype) if do is None else do.contiguous()
        dhT = dhT.contiguous() if dhT is not None else None
        dq, dk, dv, dg, dh0 = gla_bwd(q, k, v, g, scale, h0, b, hs, hT, do, dhT,
                                      chunk_size, sub_chunk)
        return dq, dk, dv, dg, dh0, None, None, None


def gla_triton(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, g: torch.Tensor,
               scale: float, h0: torch.Tensor | None = None, chunk_size: int = 64,
               sub_chunk: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """Unchecked entry to the Triton path (`gla` validates and dispatches)."""
    return GLAFunction.apply(q, k, v, g, h0, scale, chunk_size, sub_chunk)
