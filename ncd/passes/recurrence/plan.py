"""What the recurrence pass decides for each scan, as data: `ncd compile --explain` prints it, the
torch backend runs it, the analyzer costs it."""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

from ncd.ir import Loc

Structure = Literal["diagonal", "block", "dense", "gla", "delta", "time_invariant", "affine"]



class KernelLayout(BaseModel):
    """How a gla/delta step's axes map onto the kernels' [B, T, H, K] / [B, H, K, V] layouts."""

    key: str  # K: the read-out's contraction axis
    value: str  # V: the one state axis that only v carries (not q, k, the gate or β)
    heads: list[str]  # the state's other axes, in its declared order; flattened into the kernel's H
    state: list[str]  # the state's axes as declared (the layout of the initial state)
    out: list[str]  # the emitted read-out's axes
    operands: dict[str, list[str]]  # q, k, v, g|gate|beta: each one's axes in the IR


class ScanPlan(BaseModel):
    """What the pass decided for one scan; `ncd compile --explain` prints it."""

    block: str
    node: str
    loc: Loc | None
    axis: str
    carries: list[str]
    linear: bool
    structure: Structure
    block_size: int | None = None
    backend: str
    reason: str
    requested: str | None = None
    kernel: dict[str, str] | None = None  # gla/delta: step node ids of q, k, v, g|gate|beta (see match_*)
    kernel_layout: KernelLayout | None = None  # gla/delta: their axes against the kernel's
    state_free: list[str] = []  # step node ids that do not depend on the state

