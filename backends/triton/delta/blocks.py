"""Tile sizes and warps shared by the delta-rule forward and backward launchers."""
from __future__ import annotations

import dataclasses

import torch
import triton


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


def launch_tiles(blocks: DeltaBlocks | None, dtype: torch.dtype, K: int, V: int):
    """(blocks, BK, BV, BKF): loop tiles clamped to the head dims, BKF = all of K."""
    b = blocks or default_blocks(dtype)
    for f in dataclasses.fields(b):
        x = getattr(b, f.name)
        if f.name.startswith("b") and (x < 16 or x & (x - 1)):
            raise ValueError(f"DeltaBlocks.{f.name} must be a power of two >= 16, got {x}")
    BKF = triton.next_power_of_2(max(K, 16))
    BVF = triton.next_power_of_2(max(V, 16))
    return b, min(b.bk, BKF), min(b.bv, BVF), BKF


def vtile(x: int, V: int) -> int:
    return min(x, triton.next_power_of_2(max(V, 16)))


def walk_vtile(BV: int, BH: int, V: int, sms: int) -> int:
    """V-tile of a sequential chunk walk (`_state`, `_dstate`): one program per (batch x head,
    V-tile) visits every chunk in order, so with few batch x heads narrow the tile (down to
    16) until the programs at least fill the SMs once."""
    while BH * triton.cdiv(V, BV) < sms and BV > 16:
        BV //= 2
    return BV
