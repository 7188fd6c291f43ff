"""Triton diagonal scan h_t = a_t * h_{t-1} + x_t, forward and backward.

Each program owns BD channels of one batch row and walks time in tiles of BT steps: a tile
is loaded whole, scanned in registers with `tl.associative_scan` over the pairs (a, x) under
(a1, x1) then (a2, x2) = (a1 a2, a2 x1 + x2), and the carry h from the previous tile is
folded in as h_t = A_t h_carry + X_t.  Channels are the contiguous axis, so every load is
coalesced.  The backward is the same scan run backwards in time on (a_{t+1}, dh_t):
lambda_t = dh_t + a_{t+1} lambda_{t+1}; dx_t = lambda_t; da_t = lambda_t h_{t-1}.

``reverse`` scans h_t = a_t * h_{t+1} + x_t: both kernels work in walk order ``pos`` and read
time T-1-pos, so nothing is flipped or copied (the Newton solver's adjoint is such a scan).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ncd.backends.triton._common import acc_dtype, store_dtype, tl_acc
from ncd.backends.triton.packed_jit import seq_bounds


@triton.jit
def _compose(a1, x1, a2, x2):
    # first apply (a1, x1), then (a2, x2)
    return a1 * a2, a2 * x1 + x2


@triton.jit
def _time(pos, T, REVERSE: tl.constexpr):
    # walk position -> time index: the reverse scan walks time from the end
    if REVERSE:
        return T - 1 - pos
    else:
        return pos


@triton.jit
def _scan_fwd_kernel(a, x, h0, h, hT, cu, T, D, HAS_H0: tl.constexpr, BT: tl.constexpr,
                     BD: tl.constexpr, ACC: tl.constexpr, REVERSE: tl.constexpr,
                     VARLEN: tl.constexpr):
    i_d = tl.program_id(0)
    i_b = tl.program_id(1).to(tl.int64)
    bos, T = seq_bounds(i_b, cu, T, VARLEN)
    offs_d = i_d * BD + tl.arange(0, BD)
    md = offs_d < D
    rows = tl.arange(0, BT)
    if HAS_H0:
        carry = tl.load(h0 + i_b * D + offs_d, mask=md, other=0.0).to(ACC)
    else:
        carry = tl.zeros([BD], dtype=ACC)
    for t0 in range(0, T, BT):
        pos = t0 + rows
        m = (pos < T)[:, None] & md[None, :]
        ptr = (bos + _time(pos, T, REVERSE))[:, None] * D + offs_d[None, :]
        av = tl.load(a + ptr, mask=m, other=1.0).to(ACC)
        xv = tl.load(x + ptr, mask=m, other=0.0).to(ACC)
        A, X = tl.associative_scan((av, xv), 0, _compose)
        hv = A * carry[None, :] + X
        tl.store(h + ptr, hv.to(h.dtype.element_ty), mask=m)
        # rows past T are identities, so the last row is h at walk position min(t0 + BT, T) - 1
        carry = tl.sum(tl.where(rows[:, None] == BT - 1, hv, 0.0), axis=0)
    tl.store(hT + i_b * D + offs_d, carry.to(hT.dtype.element_ty), mask=md)


@triton.jit
def _scan_bwd_kernel(a, h, h0, dh, dhT, da, dx, dh0, cu, T, D, HAS_H0: tl.constexpr,
                     HAS_DHT: tl.constexpr, BT: tl.constexpr, BD: tl.constexpr,
                     ACC: tl.constexpr, REVERSE: tl.constexpr, VARLEN: tl.constexpr):
    i_d = tl.program_id(0)
    i_b = tl.program_id(1).to(tl.int64)
    bos, T = seq_bounds(i_b, cu, T, VARLEN)
    offs_d = i_d * BD + tl.arange(0, BD)
    md = offs_d < D
    rows = tl.arange(0, BT)
    if HAS_H0:
        hinit = tl.load(h0 + i_b * D + offs_d, mask=md, other=0.0).to(ACC)
    else:
        hinit = tl.zeros([BD], dtype=ACC)
    # lambda_T := dhT with a_T := 1 makes the last step lambda_{T-1} = dh_{T-1} + dhT
    if HAS_DHT:
        carry = tl.load(dhT + i_b * D + offs_d, mask=md, other=0.0).to(ACC)
    else:
        carry = tl.zeros([BD], dtype=ACC)
    for r0 in range(0, T, BT):
        pos = T - 1 - r0 - rows               # tile rows run backwards along the walk
        valid = pos >= 0
        m = valid[:, None] & md[None, :]
        row = bos
        ptr = (row + _time(pos, T, REVERSE))[:, None] * D + offs_d[None, :]
        mn = (valid & (pos + 1 < T))[:, None] & md[None, :]
        a_next = tl.load(a + (row + _time(pos + 1, T, REVERSE))[:, None] * D + offs_d[None, :],
                         mask=mn, other=1.0).to(ACC)
        g = tl.load(dh + ptr, mask=m, other=0.0).to(ACC)
        A, G = tl.associative_scan((a_next, g), 0, _compose)
        lam = A * carry[None, :] + G
        mp = (valid & (pos >= 1))[:, None] & md[None, :]
        hprev = tl.load(h + (row + _time(pos - 1, T, REVERSE))[:, None] * D + offs_d[None, :],
                        mask=mp, other=0.0).to(ACC)
        hprev += tl.where((pos == 0)[:, None], hinit[None, :], 0.0)
        tl.store(dx + ptr, lam.to(dx.dtype.element_ty), mask=m)
        tl.store(da + ptr, (lam * hprev).to(da.dtype.element_ty), mask=m)
        # rows before pos = 0 are identities, so after the last tile carry = lambda at pos 0
        carry = tl.sum(tl.where(rows[:, None] == BT - 1, lam, 0.0), axis=0)
    if HAS_H0:
        a0 = tl.load(a + (bos + _time(0, T, REVERSE)) * D + offs_d, mask=md, other=0.0).to(ACC)
        tl.store(dh0 + i_b * D + offs_d, (a0 * carry).to(dh0.dtype.element_ty), mask=md)


def _blocks(T: int, D: int) -> tuple[int, int]:
    BD = 32        # 128-byte rows: coalesced, and many programs to hide the sequential walk
    BT = min(64, triton.next_power_of_2(max(T, 16)))
    return BT, BD


def scan_fwd(a: torch.Tensor, x: torch.Tensor, h0: torch.Tensor | None, reverse: bool = False,
             cu_seqlens: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Launch the forward scan on contiguous a, x, h0; returns (h in x.dtype, the last state of
    the walk in float32: h_{T-1}, or h_0 when ``reverse``). With ``cu_seqlens`` (checked
    offsets, a, x [1, T, D]) every packed sequence is scanned alone and h0, h_T are [N, D]."""
    B, T, D = x.shape
    N = B if cu_seqlens is None else cu_seqlens.numel() - 1
    h = torch.empty_like(x, dtype=store_dtype(x.dtype, x.device))
    hT = torch.empty(N, D, device=x.device, dtype=acc_dtype(x.dtype))
    if T == 0:
        hT.copy_(h0 if h0 is not None else torch.zeros_like(hT))
        return h.to(x.dtype), hT
    BT, BD = _blocks(T, D)
    _scan_fwd_kernel[(triton.cdiv(D, BD), N)](
        a, x, h0 if h0 is not None else x, h, hT, cu_seqlens if cu_seqlens is not None else x,
        T, D, HAS_H0=h0 is not None, BT=BT, BD=BD, ACC=tl_acc(x.dtype), REVERSE=reverse,
        VARLEN=cu_seqlens is not None, num_warps=4)
    return h.to(x.dtype), hT


def scan_bwd(a: torch.Tensor, h: torch.Tensor, h0: torch.Tensor | None, dh: torch.Tensor,
             dhT: torch.Tensor | None, reverse: bool = False,
             cu_seqlens: torch.Tensor | None = None):
    """Reverse scan for (da, dx, dh0) from the saved a, h, h0 and the incoming dh, dh_T."""
    B, T, D = h.shape
    N = B if cu_seqlens is None else cu_seqlens.numel() - 1
    da = torch.empty_like(a, dtype=store_dtype(a.dtype, a.device))
    dx = torch.empty_like(h, dtype=store_dtype(h.dtype, h.device))
    dh0 = torch.empty_like(h0, dtype=store_dtype(h0.dtype, h0.device)) if h0 is not None else None
    if T == 0:
        if dh0 is not None:
            dh0.copy_(dhT if dhT is not None else torch.zeros_like(dh0))
        return da.to(a.dtype), dx.to(h.dtype), dh0.to(h0.dtype) if h0 is not None else None
    BT, BD = _blocks(T, D)
    _scan_bwd_kernel[(triton.cdiv(D, BD), N)](
        a, h, h0 if h0 is not None else h, dh, dhT if dhT is not None else h,
        da, dx, dh0 if dh0 is not None else h, cu_seqlens if cu_seqlens is not None else h,
        T, D, HAS_H0=h0 is not None, HAS_DHT=dhT is not None, BT=BT, BD=BD,
        ACC=tl_acc(h.dtype), REVERSE=reverse, VARLEN=cu_seqlens is not None, num_warps=4)
    return da.to(a.dtype), dx.to(h.dtype), dh0.to(h0.dtype) if h0 is not None else None


class DiagScanFunction(torch.autograd.Function):
    """Triton forward and backward; the backward re-reads h instead of recomputing it."""

    @staticmethod
    def forward(ctx, a, x, h0, reverse, cu_seqlens=None):
        a, x = a.contiguous(), x.contiguous()
        h0c = h0.contiguous() if h0 is not None else None
        h, hT = scan_fwd(a, x, h0c, reverse, cu_seqlens)
        ctx.save_for_backward(a, h, h0c)
        ctx.reverse, ctx.cu_seqlens = reverse, cu_seqlens
        return h, hT

    @staticmethod
    def backward(ctx, dh, dhT):
        a, h, h0 = ctx.saved_tensors
        dh = torch.zeros_like(h) if dh is None else dh.contiguous()
        dhT = dhT.contiguous() if dhT is not None else None
        da, dx, dh0 = scan_bwd(a, h, h0, dh, dhT, ctx.reverse, ctx.cu_seqlens)
        return da, dx, dh0, None, None


def diag_scan_triton(a: torch.Tensor, x: torch.Tensor, h0: torch.Tensor | None = None,
                     reverse: bool = False, cu_seqlens: torch.Tensor | None = None
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """Unchecked entry to the Triton path (`diag_scan` validates and dispatches)."""
    return DiagScanFunction.apply(a, x, h0, reverse, cu_seqlens)
