"""Triton chunked delta rule (WY / UT transform), forward and backward.

Layout [B, T, H, K]; rows past T load as k = v = beta = 0, which leaves the state unchanged.
Forward, three launches:
  1. `_prep_kernel`    per chunk: M = (I + tril(diag(beta) K K^T, -1))^{-1} by forward
                       substitution in registers, then W = M (beta K), U0 = M (beta V)
                                                                         grid (NT, B*H)
  2. `_state_kernel`   walks the chunks: U = U0 - W S (stored), S += K^T U; stores the
                       state at each chunk start and the final state     grid (V/BV, B*H)
  3. `_output_kernel`  O = Q S + tril(Q K^T) U                            grid (V/BV, NT, B*H)
Backward, two launches, reusing M, W, U and the chunk-start states from the forward:
  4. `_dstate_kernel`  walks the chunks backwards: dU and the state gradient, dh0
  5. `_dqkvb_kernel`   dq, dk, dv, dbeta of one chunk, through the triangular inverse
                                                                         grid (NT, B*H)
See chunk_torch.py for the derivation of the forward; the gradients sit on the kernels.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .._common import acc_dtype, dot_precision, store_dtype, tl_acc


@triton.jit
def _prep_kernel(k, v, beta, w, u, m_out, T, H, K, V, C: tl.constexpr, BK: tl.constexpr,
                 BV: tl.constexpr, ACC: tl.constexpr, PREC: tl.constexpr):
    i_n, i_bh = tl.program_id(0), tl.program_id(1)
    i_b, i_h = (i_bh // H).to(tl.int64), i_bh % H
    offs_t = i_n * C + tl.arange(0, C)
    offs_k = tl.arange(0, BK)
    offs_v = tl.arange(0, BV)
    mt = offs_t < T
    rk = ((i_b * T + offs_t) * H + i_h)[:, None] * K + offs_k[None, :]
    rv = ((i_b * T + offs_t) * H + i_h)[:, None] * V + offs_v[None, :]
    mk2 = mt[:, None] & (offs_k < K)[None, :]
    mv2 = mt[:, None] & (offs_v < V)[None, :]
    kc = tl.load(k + rk, mask=mk2, other=0.0).to(ACC)
    vc = tl.load(v + rv, mask=mv2, other=0.0).to(ACC)
    bc = tl.load(beta + (i_b * T + offs_t) * H + i_h, mask=mt, other=0.0).to(ACC)
    rows = tl.arange(0, C)
    kb = kc * bc[:, None]
    # X = M - I solves X_i = a_i + a_i X row by row, a = -tril(diag(beta) K K^T, -1);
    # row i of X still holds a_i when its turn comes, and a_i only reaches rows j < i
    X = -tl.dot(kb, tl.trans(kc), input_precision=PREC)
    X = tl.where(rows[:, None] > rows[None, :], X, 0.0)
    for i in range(1, C):
        a_i = tl.sum(tl.where(rows[:, None] == i, X, 0.0), axis=0)
        new = a_i + tl.sum(a_i[:, None] * X, axis=0)
        X = tl.where(rows[:, None] == i, new[None, :], X)
    M = X + tl.where(rows[:, None] == rows[None, :], 1.0, 0.0)
    rm = ((i_b * T + offs_t) * H + i_h)[:, None] * C + rows[None, :]
    tl.store(m_out + rm, M, mask=mt[:, None])
    tl.store(w + rk, tl.dot(M, kb, input_precision=PREC), mask=mk2)
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
        rk = ((i_b * T + offs_t) * H + i_h)[:, None] * K + offs_k[None, :]
        rv = ((i_b * T + offs_t) * H + i_h)[:, None] * V + offs_v[None, :]
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
    offs_t = i_n * C + tl.arange(0, C)
    offs_k = tl.arange(0, BK)
    offs_v = i_v * BV + tl.arange(0, BV)
    mt, mk, mv = offs_t < T, offs_k < K, offs_v < V
    rk = ((i_b * T + offs_t) * H + i_h)[:, None] * K + offs_k[None, :]
    rv = ((i_b * T + offs_t) * H + i_h)[:, None] * V + offs_v[None, :]
    mk2 = mt[:, None] & mk[None, :]
    mv2 = mt[:, None] & mv[None, :]
    qc = tl.load(q + rk, mask=mk2, other=0.0).to(ACC) * scale
    kc = tl.load(k + rk, mask=mk2, other=0.0).to(ACC)
    uc = tl.load(un + rv, mask=mv2, other=0.0)
    S = tl.load(hs + (i_bh.to(tl.int64) * NT + i_n) * K * V + offs_k[:, None] * V
                + offs_v[None, :], mask=mk[:, None] & mv[None, :], other=0.0)
    rows = tl.arange(0, C)
    A = tl.dot(qc, tl.trans(kc), input_precision=PREC)
    A = tl.where(rows[:, None] >= rows[None, :], A, 0.0)
    acc = tl.dot(qc, S, input_precision=PREC) + tl.dot(A, uc, input_precision=PREC)
    tl.store(o + rv, acc.to(o.dtype.element_ty), mask=mv2)


def delta_rule_fwd(q, k, v, beta, scale: float, h0, chunk_size: int = 64):
    """Triton forward. Inputs contiguous.

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
    NT = triton.cdiv(T, C)
    BK = triton.next_power_of_2(max(K, 16))
    BVf = triton.next_power_of_2(max(V, 16))
    BV = min(64, BVf)
    w = torch.empty(B, T, H, K, device=q.device, dtype=dt)
    u = torch.empty(B, T, H, V, device=q.device, dtype=dt)
    M = torch.empty(B, T, H, C, device=q.device, dtype=dt)
    _prep_kernel[(NT, B * H)](k, v, beta, w, u, M, T, H, K, V, C=C, BK=BK, BV=BVf, ACC=ACC,
                              PREC=PREC, num_warps=4)
    un = torch.empty_like(u)
    hs = torch.empty(B, H, NT, K, V, device=q.device, dtype=dt)
    _state_kernel[(triton.cdiv(V, BV), B * H)](
        k, w, u, un, hs, h0 if h0 is not None else hs, hT, T, H, K, V, NT,
        HAS_H0=h0 is not None, C=C, BK=BK, BV=BV, ACC=ACC, PREC=PREC, num_warps=4,
        num_stages=2)
    _output_kernel[(triton.cdiv(V, BV), NT, B * H)](
        q, k, un, hs, o, scale, T, H, K, V, NT, C=C, BK=BK, BV=BV, ACC=ACC, PREC=PREC,
        num_warps=4)
    return o.to(q.dtype), hT, (M, un, hs, w)


@triton.jit
def _dstate_kernel(q, k, w, do, dhs, du, dhT, dh0, scale, T, H, K, V, NT,
                   HAS_DHT: tl.constexpr, HAS_H0: tl.constexpr, C: tl.constexpr,
                   BK: tl.constexpr, BV: tl.constexpr, ACC: tl.constexpr, PREC: tl.constexpr):
    """Walk the chunks backwards with dS = gradient of the state at the chunk's end:
         dU   = tril(Q K^T)^T dO + K dS               (stored: the pseudo-values' gradient)
         dS  <- dS + Q^T dO - W^T dU                   (gradient at the chunk's start)
    Stores dS at every chunk end (dhs[n]) and dS_0 = dh0.
    """
    i_v, i_bh = tl.program_id(0), tl.program_id(1)
    i_b, i_h = (i_bh // H).to(tl.int64), i_bh % H
    offs_k = tl.arange(0, BK)
    offs_v = i_v * BV + tl.arange(0, BV)
    mk, mv = offs_k < K, offs_v < V
    mkv = mk[:, None] & mv[None, :]
    kv_off = offs_k[:, None] * V + offs_v[None, :]
    rows = tl.arange(0, C)
    if HAS_DHT:
        dS = tl.load(dhT + i_bh.to(tl.int64) * K * V + kv_off, mask=mkv, other=0.0).to(ACC)
    else:
        dS = tl.zeros([BK, BV], dtype=ACC)
    for i in range(NT):
        n = NT - 1 - i
        tl.store(dhs + (i_bh.to(tl.int64) * NT + n) * K * V + kv_off, dS, mask=mkv)
        offs_t = n * C + rows
        mt = offs_t < T
        rk = ((i_b * T + offs_t) * H + i_h)[:, None] * K + offs_k[None, :]
        rv = ((i_b * T + offs_t) * H + i_h)[:, None] * V + offs_v[None, :]
        mk2 = mt[:, None] & mk[None, :]
        mv2 = mt[:, None] & mv[None, :]
        qc = tl.load(q + rk, mask=mk2, other=0.0).to(ACC) * scale
        kc = tl.load(k + rk, mask=mk2, other=0.0).to(ACC)
        wc = tl.load(w + rk, mask=mk2, other=0.0)
        doc = tl.load(do + rv, mask=mv2, other=0.0).to(ACC)
        A = tl.dot(qc, tl.trans(kc), input_precision=PREC)
        A = tl.where(rows[:, None] >= rows[None, :], A, 0.0)
        dU = tl.dot(tl.trans(A), doc, input_precision=PREC) + tl.dot(kc, dS, input_precision=PREC)
        tl.store(du + rv, dU, mask=mv2)
        dS += tl.dot(tl.trans(qc), doc, input_precision=PREC)
        dS -= tl.dot(tl.trans(wc), dU, input_precision=PREC)
    if HAS_H0:
        tl.store(dh0 + i_bh.to(tl.int64) * K * V + kv_off, dS.to(dh0.dtype.element_ty), mask=mkv)


@triton.jit
def _dqkvb_kernel(q, k, v, beta, Mi, hs, dhs, un, du, do, dq, dk, dv, dbeta, scale, T, H, K, V,
                  NT, C: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr, ACC: tl.constexpr,
                  PREC: tl.constexpr):
    """Per chunk, with S = state at its start and dS = gradient at its end:
         dQ = [dO S^T + tril(dO U^T) K] scale
         dK = tril(dO U^T)^T (scale Q) + U dS^T  + (through W, U0 below)
         dW = -dU S^T;  W = M Kb, U0 = M Vb (Kb = beta K, Vb = beta V)
         dKb = M^T dW, dVb = M^T dU, dM = dW Kb^T + dU Vb^T
         M = (I + L)^-1  =>  dL = -M^T dM M^T on the strict lower triangle, L = tril(beta K K^T)
         dK += beta dKb + beta (dL K) + dL^T Kb,  dV = beta dVb,
         dbeta = rowsum(dKb * K + dVb * V + dL * K K^T)
    """
    i_n, i_bh = tl.program_id(0), tl.program_id(1)
    i_b, i_h = (i_bh // H).to(tl.int64), i_bh % H
    rows = tl.arange(0, C)
    offs_t = i_n * C + rows
    offs_k = tl.arange(0, BK)
    offs_v = tl.arange(0, BV)
    mt, mk, mv = offs_t < T, offs_k < K, offs_v < V
    mk2 = mt[:, None] & mk[None, :]
    mv2 = mt[:, None] & mv[None, :]
    base = (i_b * T + offs_t) * H + i_h
    rk = base[:, None] * K + offs_k[None, :]
    rv = base[:, None] * V + offs_v[None, :]
    qc = tl.load(q + rk, mask=mk2, other=0.0).to(ACC) * scale
    kc = tl.load(k + rk, mask=mk2, other=0.0).to(ACC)
    vc = tl.load(v + rv, mask=mv2, other=0.0).to(ACC)
    bc = tl.load(beta + base, mask=mt, other=0.0).to(ACC)
    M = tl.load(Mi + base[:, None] * C + rows[None, :], mask=mt[:, None], other=0.0)
    U = tl.load(un + rv, mask=mv2, other=0.0)
    dU = tl.load(du + rv, mask=mv2, other=0.0)
    doc = tl.load(do + rv, mask=mv2, other=0.0).to(ACC)
    st = (i_bh.to(tl.int64) * NT + i_n) * K * V + offs_k[:, None] * V + offs_v[None, :]
    mkv = mk[:, None] & mv[None, :]
    S = tl.load(hs + st, mask=mkv, other=0.0)
    dS = tl.load(dhs + st, mask=mkv, other=0.0)
    causal = rows[:, None] >= rows[None, :]
    dAo = tl.where(causal, tl.dot(doc, tl.trans(U), input_precision=PREC), 0.0)
    dqc = (tl.dot(doc, tl.trans(S), input_precision=PREC)
           + tl.dot(dAo, kc, input_precision=PREC)) * scale
    dkc = tl.dot(tl.trans(dAo), qc, input_precision=PREC)
    dkc += tl.dot(U, tl.trans(dS), input_precision=PREC)
    dW = -tl.dot(dU, tl.trans(S), input_precision=PREC)
    Kb = kc * bc[:, None]
    Vb = vc * bc[:, None]
    dM = tl.dot(dW, tl.trans(Kb), input_precision=PREC) + tl.dot(dU, tl.trans(Vb),
                                                                 input_precision=PREC)
    Mt = tl.trans(M)
    dKb = tl.dot(Mt, dW, input_precision=PREC)
    dVb = tl.dot(Mt, dU, input_precision=PREC)
    dL = -tl.dot(tl.dot(Mt, dM, input_precision=PREC), Mt, input_precision=PREC)
    dL = tl.where(rows[:, None] > rows[None, :], dL, 0.0)
    KK = tl.dot(kc, tl.trans(kc), input_precision=PREC)
    dkc += bc[:, None] * (dKb + tl.dot(dL, kc, input_precision=PREC))
    dkc += tl.dot(tl.trans(dL), Kb, input_precision=PREC)
    db = tl.sum(dKb * kc, axis=1) + tl.sum(dVb * vc, axis=1) + tl.sum(dL * KK, axis=1)
    tl.store(dq + rk, dqc.to(dq.dtype.element_ty), mask=mk2)
    tl.store(dk + rk, dkc.to(dk.dtype.element_ty), mask=mk2)
    tl.store(dv + rv, (bc[:, None] * dVb).to(dv.dtype.element_ty), mask=mv2)
    tl.store(dbeta + base, db.to(dbeta.dtype.element_ty), mask=mt)


def delta_rule_bwd(q, k, v, beta, scale, h0, extras, do, dhT, chunk_size: int = 64):
    """Triton backward from the forward's (M, U, hs). Returns (dq, dk, dv, dbeta, dh0)."""
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
    NT = triton.cdiv(T, C)
    BK = triton.next_power_of_2(max(K, 16))
    BVf = triton.next_power_of_2(max(V, 16))
    BV = min(64, BVf)
    dhs = torch.empty_like(hs)
    du = torch.empty(B, T, H, V, device=q.device, dtype=dt)
    _dstate_kernel[(triton.cdiv(V, BV), B * H)](
        q, k, w, do, dhs, du, dhT if dhT is not None else hs, dh0 if dh0 is not None else hs,
        scale, T, H, K, V, NT, HAS_DHT=dhT is not None, HAS_H0=h0 is not None, C=C, BK=BK,
        BV=BV, ACC=ACC, PREC=PREC, num_warps=4, num_stages=2)
    _dqkvb_kernel[(NT, B * H)](
        q, k, v, beta, M, hs, dhs, un, du, do, dq, dk, dv, dbeta, scale, T, H, K, V, NT, C=C,
        BK=BK, BV=BVf, ACC=ACC, PREC=PREC, num_warps=8,
        num_stages=1)
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
