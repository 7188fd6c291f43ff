"""Newton's peak memory grows by a few copies of the state sequence per step (not timed).

Measured, not timed: a dispatch mode counts the bytes of every tensor storage created while it
is on, until the storage is freed, and records the peak. The slope between two lengths, in
copies of the state sequence (B·N numbers per step), is what grows with T; the window's own
transient and one-off allocations cancel."""
from __future__ import annotations

import weakref

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

import ncd
import ncd.backends.pararnn.chunks as chunks
from pararnn_import import P


class LiveBytes(TorchDispatchMode):
    """Peak bytes of storages created under the mode and still alive (a view's storage is its
    base's: counted only if the base was made under the mode)."""

    def __init__(self) -> None:
        super().__init__()
        self.live: dict[int, int] = {}
        self.now = self.peak = 0

    def _free(self, key: int) -> None:
        self.now -= self.live.pop(key, 0)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {t.untyped_storage().data_ptr() for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)}
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor) and t.device.type == "cpu":
                storage = t.untyped_storage()
                key = storage.data_ptr()
                if storage.nbytes() and key not in self.live and key not in inputs:
                    self.live[key] = storage.nbytes()
                    self.now += storage.nbytes()
                    self.peak = max(self.peak, self.now)
                    weakref.finalize(storage, self._free, key)
        return out


def _peak(run) -> int:
    with LiveBytes() as mode:
        run()
    return mode.peak


def _slope(make, T1: int, T2: int, per_step_bytes: int) -> float:
    """Peak growth per step in units of `per_step_bytes`; make(T) builds the inputs (not
    counted) and returns the run to measure."""
    return (_peak(make(T2)) - _peak(make(T1))) / ((T2 - T1) * per_step_bytes)


@pytest.mark.parametrize("backward", [False, True], ids=["fwd", "fwd+bwd"])
def test_solver_keeps_three_copies_of_the_state_sequence(monkeypatch, backward):
    """The solver's own buffers: the iterate, r and J (forward; the backward keeps h and
    writes the input gradient). Inputs u [B, T, 3N] are made outside the measurement."""
    monkeypatch.setattr(chunks, "CHUNK_ELEMENTS", 1024)  # 32 steps
    B, N = 2, 16
    cell = P.ParaGRU(8, N)
    a = cell.a.detach().clone().requires_grad_(backward)

    def make(T: int):
        u = torch.randn(B, T, 3 * N, requires_grad=backward)
        h0 = torch.zeros(B, N)
        solver = P.NewtonSolver("diag")

        def run() -> None:
            if backward:
                solver(cell.recurrent, h0, u, a).sum().backward()
            else:
                with torch.no_grad():
                    solver(cell.recurrent, h0, u, a)
        return run

    slope = _slope(make, 64, 256, B * N * 4)
    # fwd+bwd: h and the input gradient [B, T, 3N] (4 copies); J is not kept (windowed)
    assert slope <= (3.5 if not backward else 4.5), f"{slope:.1f} copies of the state sequence per step"


@pytest.fixture(scope="module")
def paragru() -> torch.nn.Module:
    """The compiled paragru under Newton, loaded once for both passes."""
    torch.manual_seed(0)
    return ncd.load("specs/paragru.ncd", scan_backend="newton", E=8, D=16, H=2)


@pytest.mark.parametrize("backward", [False, True], ids=["fwd", "fwd+bwd"])
def test_compiled_spec_newton_memory_is_linear_with_a_small_slope(monkeypatch, backward, paragru):
    """Windows of 32 steps, T = 64 and 256 (2 and 8 windows): per step, the three hoisted gate
    projections the scan reads and the solver's iterate, r and J (6 copies); the backward's
    peak is the projections, their gradients and h (7: a windowed solve does not keep J, the
    adjoint recomputes it per window). Before windows (and before the block dropped dead
    values) this was ~26 forward."""
    monkeypatch.setattr(chunks, "CHUNK_ELEMENTS", 32 * 16)
    m = paragru

    def make(T: int):
        x = torch.randn(1, T, 8)

        def run() -> None:
            if backward:
                m(x).sum().backward()
            else:
                with torch.no_grad():
                    m(x)
        return run

    slope = _slope(make, 64, 256, 16 * 4)
    assert slope <= (6.5 if not backward else 7.5), f"{slope:.2f} copies of the state sequence per step"
