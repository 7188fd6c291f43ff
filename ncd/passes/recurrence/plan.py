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


class WeightRef(BaseModel):
    """A weight as the spec holds it: a node of the scan's block (a parameter or a step-invariant
    captured value) sliced along gate axes, or a number; the torch backend builds torch's weight
    matrices from these at every call, so gradients reach the spec's own parameters."""

    node: str = ""  # "" for a number or the identity
    selects: list[tuple[str, int]] = []  # (axis, index) slices, in order
    axes: list[str] = []  # its axes once sliced
    in_axis: str | None = None  # the contracted axis (a weight matrix); None for a bias
    value: float | None = None  # a number
    coef: float = 1.0  # a factor in front (−1 for a GRU written with 1 − z)
    identity: bool = False  # the input step itself, unprojected (W_ih = coef·I)


class GateWeights(BaseModel):
    """One gate's pieces: its pre-activation is Σ inp·x + Σ bias + Σ rec·h (+ Σ bias_h under GRU's r)."""

    rec: list[WeightRef] = []
    inp: list[WeightRef] = []
    bias: list[WeightRef] = []
    bias_h: list[WeightRef] = []


class CellMatch(BaseModel):
    """A scan proved to be a standard cell, gates in torch's order (LSTM i, f, g, o; GRU r, z, n)."""

    cell: Literal["rnn_tanh", "rnn_relu", "gru", "lstm"]
    gates: list[GateWeights]
    input: str  # the input sequence's node id in the scan's block
    input_axes: list[str]  # its core axes (the scanned axis and the input axis)
    input_axis: str | None  # the input axis
    hidden: int  # which carry is h
    cell_carry: int | None = None  # LSTM: which carry is c
    state_axis: str


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
    invariant: list[str] = []  # step node ids that depend on neither the state nor the step: hoisted
    cell: CellMatch | None = None  # the standard cell the step is (fused_rnn runs it)
    cell_reason: str = ""  # why the step is no standard cell, when it is none

