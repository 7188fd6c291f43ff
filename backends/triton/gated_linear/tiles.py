"""Tile sizes and launch checks shared by the GLA forward and backward launchers."""
from __future__ import annotations

import dataclasses

import torch
import triton


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


def tile_width(n: int, cap: int) -> int:
    return min(cap, triton.next_power_of_2(max(n, 16)))


def walk_tiles(BH: int, K: int, V: int, BK: int, BV: int, sms: int) -> tuple[int, int]:
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


def wide_warps(prec: str) -> int:
    """Warps of the output and dq/dk/dg launches: 8 where the dots run on FMA units with
    their operands in registers (exact float32/64), 4 on tensor cores (tf32)."""
    return 4 if prec == "tf32" else 8



def check_sizes(T, H, K, V, C):
    # offsets inside one (batch, head) sequence, or its run of chunk states, are int32
    if T * H * max(K, V, C) >= 2 ** 31 or triton.cdiv(T, C) * K * V >= 2 ** 31:
        raise ValueError(f"gla: T * H * max(K, V) and (T / chunk_size) * K * V must stay "
                         f"below 2**31, got T={T}, H={H}, K={K}, V={V}")

