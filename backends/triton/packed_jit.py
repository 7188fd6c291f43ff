"""Triton helpers that map a program to its sequence: a batch row of a padded [B, T] batch, or
one sequence of a packed batch (`VARLEN`, fla's cu_seqlens; see packed.py).

Every kernel addresses a token as `tok + t * H` (t local to its sequence, `tok` = first token
times H plus the head) and a saved per-chunk state by a row index: [B, H, NT] for a padded batch,
[NT_all, H] for a packed one (chunks numbered over the whole batch).  Imports triton.
"""
from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def seq_bounds(i_b, cu, T, VARLEN: tl.constexpr):
    """(first token, length) of batch row or packed sequence i_b."""
    if VARLEN:
        bos = tl.load(cu + i_b).to(tl.int64)
        T_seq = (tl.load(cu + i_b + 1).to(tl.int64) - bos).to(tl.int32)
    else:
        bos = i_b.to(tl.int64) * T
        T_seq = T
    return bos, T_seq


@triton.jit
def walk_seq(i_bh, H, T, C: tl.constexpr, cu, co, VARLEN: tl.constexpr):
    """For a state walk over (sequence x head) i_bh: (tok, length, chunks, state row of the
    first chunk, row stride between chunks)."""
    i_b, i_h = i_bh // H, i_bh % H
    bos, T_seq = seq_bounds(i_b, cu, T, VARLEN)
    NT = tl.cdiv(T_seq, C)
    if VARLEN:
        s0 = tl.load(co + i_b).to(tl.int64) * H + i_h
        ss = H
    else:
        s0 = i_bh.to(tl.int64) * NT
        ss = 1
    return bos * H + i_h, T_seq, NT, s0, ss


@triton.jit
def chunk_seq(i_n, i_bh, H, T, NT, cu, cseq, co, VARLEN: tl.constexpr):
    """For a chunk program (grid chunk i_n, grid batch x head i_bh; packed: all chunks, heads):
    (tok, sequence length, chunk index inside the sequence, state row of that chunk)."""
    if VARLEN:
        i_b = tl.load(cseq + i_n).to(tl.int64)
        n = i_n - tl.load(co + i_b)
        bos, T_seq = seq_bounds(i_b, cu, T, VARLEN)
        tok = bos * H + i_bh
        srow = i_n.to(tl.int64) * H + i_bh
    else:
        tok = (i_bh // H).to(tl.int64) * T * H + i_bh % H
        T_seq = T
        n = i_n
        srow = i_bh.to(tl.int64) * NT + i_n
    return tok, T_seq, n, srow
