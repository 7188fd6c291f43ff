"""Chunked Triton scan for y_t = a_t y_{t-1} + b_t with k×k block coefficients; diagonal
coefficients run the one diagonal scan kernel (`ncd.backends.triton.diagonal.chunk`).

Three launches, all accumulating in float32:

1. `reduce`: each program takes one chunk of CHUNK steps for one batch row and a tile of
   blocks, runs the recurrence sequentially in registers from a zero
   state and writes the chunk's aggregate pair (A_c = a_end ⋯ a_start, B_c = its output).
2. `carry`: one program per (batch row, tile) walks the NC = ceil(T / CHUNK) chunk aggregates in
   order, carry_c = A_c carry_{c-1} + B_c, writing each chunk's incoming state.
3. `rescan`: every chunk re-runs its recurrence from its incoming state and stores y.

Reverse scans index time as T-1-pos, so nothing is flipped or copied. Steps past T in the last
chunk load a = 0, b = 0; that only corrupts the last chunk's aggregate, which nothing reads.
Tested on the CPU under TRITON_INTERPRET=1 against `naive.scan_naive`.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from ncd.backends.pararnn.naive import ScanKind


@triton.jit
def _time_index(pos, T, REVERSE: tl.constexpr):
    if REVERSE:
        return T - 1 - pos
    else:
        return pos


# ------------------------------------------------- block: a [B, T, NB, K, K], b [B, T, NB, K]
@triton.jit
def _block_reduce_kernel(a_ptr, b_ptr, A_ptr, Bc_ptr, T, NB, NC,
                         K: tl.constexpr, KP: tl.constexpr, CHUNK: tl.constexpr,
                         BLOCK_NB: tl.constexpr, REVERSE: tl.constexpr):
    c = tl.program_id(0)
    bi = tl.program_id(1).to(tl.int64)
    p = tl.program_id(2) * BLOCK_NB + tl.arange(0, BLOCK_NB)
    i = tl.arange(0, KP)
    mp = p < NB
    mi = i < K
    m_vec = mp[:, None] & mi[None, :]
    m_mat = m_vec[:, :, None] & mi[None, None, :]
    eye = tl.where(i[:, None] == i[None, :], 1.0, 0.0)
    acc_a = tl.zeros([BLOCK_NB, KP, KP], dtype=tl.float32) + eye[None, :, :]
    acc_b = tl.zeros([BLOCK_NB, KP], dtype=tl.float32)
    for s in range(CHUNK):
        pos = c * CHUNK + s
        t = _time_index(pos, T, REVERSE)
        row = (bi * T + t) * NB + p                                   # [BLOCK_NB]
        off_v = row[:, None] * K + i[None, :]
        off_m = off_v[:, :, None] * K + i[None, None, :]
        a = tl.load(a_ptr + off_m, mask=m_mat & ((pos + p * 0) < T)[:, None, None], other=0.0).to(tl.float32)
        b = tl.load(b_ptr + off_v, mask=m_vec & ((pos + p * 0) < T)[:, None], other=0.0).to(tl.float32)
        acc_a = tl.sum(a[:, :, :, None] * acc_a[:, None, :, :], axis=2)   # a @ acc_a
        acc_b = tl.sum(a * acc_b[:, None, :], axis=2) + b                # a @ acc_b + b
    row = (bi * NC + c) * NB + p
    off_v = row[:, None] * K + i[None, :]
    tl.store(A_ptr + off_v[:, :, None] * K + i[None, None, :], acc_a, mask=m_mat)
    tl.store(Bc_ptr + off_v, acc_b, mask=m_vec)


@triton.jit
def _block_carry_kernel(A_ptr, Bc_ptr, C_ptr, init_ptr, NB, NC,
                        K: tl.constexpr, KP: tl.constexpr, HAS_INIT: tl.constexpr,
                        BLOCK_NB: tl.constexpr):
    bi = tl.program_id(0).to(tl.int64)
    p = tl.program_id(1) * BLOCK_NB + tl.arange(0, BLOCK_NB)
    i = tl.arange(0, KP)
    m_vec = (p < NB)[:, None] & (i < K)[None, :]
    m_mat = m_vec[:, :, None] & (i < K)[None, None, :]
    if HAS_INIT:
        carry = tl.load(init_ptr + (bi * NB + p)[:, None] * K + i[None, :], mask=m_vec, other=0.0).to(tl.float32)
    else:
        carry = tl.zeros([BLOCK_NB, KP], dtype=tl.float32)
    for c in range(NC):
        off_v = ((bi * NC + c) * NB + p)[:, None] * K + i[None, :]
        tl.store(C_ptr + off_v, carry, mask=m_vec)
        A = tl.load(A_ptr + off_v[:, :, None] * K + i[None, None, :], mask=m_mat, other=0.0)
        carry = tl.sum(A * carry[:, None, :], axis=2) + tl.load(Bc_ptr + off_v, mask=m_vec, other=0.0)


@triton.jit
def _block_rescan_kernel(a_ptr, b_ptr, C_ptr, y_ptr, T, NB, NC,
                         K: tl.constexpr, KP: tl.constexpr, CHUNK: tl.constexpr,
                         BLOCK_NB: tl.constexpr, REVERSE: tl.constexpr):
    c = tl.program_id(0)
    bi = tl.program_id(1).to(tl.int64)
    p = tl.program_id(2) * BLOCK_NB + tl.arange(0, BLOCK_NB)
    i = tl.arange(0, KP)
    m_vec = (p < NB)[:, None] & (i < K)[None, :]
    m_mat = m_vec[:, :, None] & (i < K)[None, None, :]
    y = tl.load(C_ptr + ((bi * NC + c) * NB + p)[:, None] * K + i[None, :], mask=m_vec, other=0.0)
    for s in range(CHUNK):
        pos = c * CHUNK + s
        t = _time_index(pos, T, REVERSE)
        off_v = ((bi * T + t) * NB + p)[:, None] * K + i[None, :]
        off_m = off_v[:, :, None] * K + i[None, None, :]
        a = tl.load(a_ptr + off_m, mask=m_mat & ((pos + p * 0) < T)[:, None, None], other=0.0).to(tl.float32)
        b = tl.load(b_ptr + off_v, mask=m_vec & ((pos + p * 0) < T)[:, None], other=0.0).to(tl.float32)
        y = tl.sum(a * y[:, None, :], axis=2) + b
        tl.store(y_ptr + off_v, y.to(y_ptr.dtype.element_ty), mask=m_vec & ((pos + p * 0) < T)[:, None])


# ---------------------------------------------------------------------------- launcher
def scan_triton(
    a: Tensor,
    b: Tensor,
    kind: ScanKind = "diag",
    reverse: bool = False,
    initial: Tensor | None = None,
    chunk: int = 64,
    block_n: int | None = None,
) -> Tensor:
    """Same contract as `naive.scan_naive`; shapes are checked by `scan.linear_scan`. ``chunk``
    and ``block_n`` tile the block kernels; the diagonal kernel picks its own tiles."""
    if kind == "diag":
        from ncd.backends.triton.diagonal.chunk import scan_fwd

        init = initial.contiguous() if initial is not None else None
        return scan_fwd(a.contiguous(), b.contiguous(), init, reverse)[0]
    a, b = a.contiguous(), b.contiguous()
    B, T = b.shape[:2]
    NC = triton.cdiv(T, chunk)
    y = torch.empty_like(b)
    init = initial.contiguous() if initial is not None else b  # dummy pointer when absent
    NB, K = b.shape[2], b.shape[3]
    KP = triton.next_power_of_2(K)
    bnb = block_n or max(1, min(64, triton.next_power_of_2(NB), 256 // (KP * KP) or 1))
    A = torch.empty(B, NC, NB, K, K, dtype=torch.float32, device=b.device)
    Bc = torch.empty(B, NC, NB, K, dtype=torch.float32, device=b.device)
    C = torch.empty_like(Bc)
    grid = (NC, B, triton.cdiv(NB, bnb))
    _block_reduce_kernel[grid](a, b, A, Bc, T, NB, NC, K=K, KP=KP, CHUNK=chunk,
                               BLOCK_NB=bnb, REVERSE=reverse)
    _block_carry_kernel[(B, triton.cdiv(NB, bnb))](A, Bc, C, init, NB, NC, K=K, KP=KP,
                                                   HAS_INIT=initial is not None, BLOCK_NB=bnb)
    _block_rescan_kernel[grid](a, b, C, y, T, NB, NC, K=K, KP=KP, CHUNK=chunk,
                               BLOCK_NB=bnb, REVERSE=reverse)
    return y
