"""Time windows of a Newton solve: which steps one evaluation of the cell covers.

Evaluating the cell for all B·T rows at once keeps every intermediate of the cell (and its
autograd graph, for the Jacobian) alive for the whole sequence: ~15 copies of the state sequence
on top of what the solver itself needs. Evaluated a window of steps at a time, that transient is
bounded by the window, and the solver's own buffers (iterate, residual, Jacobian) are what grows
with T. A window covers all B rows and a contiguous range of steps, so the shifted iterate, the
inner scan (carried from window to window) and the adjoint's reverse scan split the same way.

A cell reads its per-step inputs from `xs` (sliced here along T). A cell that reads them from its
parameters instead (the compiled spec's step reads its captured sequences) says along which dim
each parameter holds one entry per step (`StepAxis`); those are sliced to the window too, and
their gradients put back in place.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Sequence, Union

import torch
from torch import Tensor

Chunk = Union[Literal["auto", "all"], int]

# "auto" on a CPU: state elements (B · steps · N) per evaluation. A few MiB per copy: large enough
# that per-op overhead is paid rarely, small enough that the cell's transient stays cache-sized.
CHUNK_ELEMENTS = 1 << 18


@dataclass(frozen=True)
class StepAxis:
    """A parameter that holds one entry per step along `dim` (reversed: step s is entry T-1-s,
    a reverse scan's captured sequence)."""

    dim: int
    reverse: bool = False


def window_steps(chunk: Chunk, B: int, T: int, N: int, device: torch.device) -> int:
    """Steps per evaluation. "auto": `CHUNK_ELEMENTS` state elements on a CPU; all T on an
    accelerator (one launch per op over the whole sequence is what is fast there)."""
    if chunk == "all":
        return T
    if chunk == "auto":
        if device.type != "cpu":
            return T
        return max(1, min(T, CHUNK_ELEMENTS // max(1, B * N)))
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"chunk must be 'auto', 'all' or a number of steps >= 1, got {chunk!r}")
    return min(T, chunk)


def windows(T: int, steps: int) -> list[slice]:
    """[0, T) cut into consecutive windows of `steps` (the last one shorter)."""
    return [slice(t, min(t + steps, T)) for t in range(0, T, steps)]


def window_params(params: Sequence[Tensor], axes: Sequence[StepAxis | None] | None, w: slice, T: int
                  ) -> tuple[Tensor, ...]:
    """The parameters a window's evaluation reads: per-step ones narrowed to its steps (views)."""
    if axes is None or (w.start == 0 and w.stop == T):
        return tuple(params)
    out = []
    for p, ax in zip(params, axes):
        if ax is not None:
            start = T - w.stop if ax.reverse else w.start
            p = p.narrow(ax.dim, start, w.stop - w.start)
        out.append(p)
    return tuple(out)


def check_axes(params: Sequence[Tensor], axes: Sequence[StepAxis | None] | None, T: int) -> None:
    """Each per-step parameter has T entries along its axis."""
    if axes is None:
        return
    if len(axes) != len(params):
        raise ValueError(f"step_axes has {len(axes)} entries for {len(params)} parameters")
    for i, (p, ax) in enumerate(zip(params, axes)):
        if ax is not None and p.shape[ax.dim] != T:
            raise ValueError(f"parameter {i} has {p.shape[ax.dim]} entries along dim {ax.dim}, "
                             f"not one per step (T = {T})")


class ParamGrads:
    """Gradients of the parameters, summed over windows: a shared parameter's add up, a per-step
    parameter's fill in its window."""

    def __init__(self, params: Sequence[Tensor], axes: Sequence[StepAxis | None] | None, T: int) -> None:
        self.params, self.T = params, T
        self.axes = list(axes) if axes is not None else [None] * len(params)
        self.grads: list[Tensor | None] = [None] * len(params)

    def add(self, i: int, w: slice, g: Tensor) -> None:
        ax = self.axes[i]
        if ax is None or (w.start == 0 and w.stop == self.T):
            self.grads[i] = g if self.grads[i] is None else self.grads[i] + g
            return
        if self.grads[i] is None:
            self.grads[i] = torch.zeros_like(self.params[i], dtype=g.dtype)
        start = self.T - w.stop if ax.reverse else w.start
        self.grads[i].narrow(ax.dim, start, w.stop - w.start).copy_(g)

    def get(self, i: int) -> Tensor:
        g = self.grads[i]
        return torch.zeros_like(self.params[i]) if g is None else g
