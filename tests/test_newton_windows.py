"""A compiled spec's Newton scan evaluated a window of steps at a time (the solver's "auto" chunk
with a tiny element budget) equals the sequential loop: outputs and every gradient, forward and
reverse scans, captured sequences read as x[t] cut to each window."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

import ncd
import ncd.backends.pararnn.chunks as chunks

SPECS = Path(__file__).resolve().parents[1] / "specs"

REVERSE = """
axis T, E = 3, D = 4
block Rev(x: [T, E]) -> [T, D] {
    param W, V: [E, D] init normal(0, 0.5)
    param a: [D] init uniform(-1, 1)
    u = x @[E] W
    return scan t over T reverse carry (h: [D] = 0) {
        h = tanh(a * h + u[t] + x[t] @[E] V)
        emit h * 2
    }
}
"""


def _pair(spec, **sizes):
    torch.manual_seed(0)
    seq = ncd.load(spec, scan_backend="sequential", **sizes).double()
    par = ncd.load(spec, scan_backend="newton", **sizes).double()
    par.load_state_dict(seq.state_dict())
    return seq, par


@pytest.mark.parametrize("budget", [1, 96])
@pytest.mark.parametrize("spec, sizes, width", [
    (SPECS / "paragru.ncd", dict(E=8, D=8, H=2), 8),
    (SPECS / "paralstm.ncd", dict(E=8, D=8, H=2), 8),
    (REVERSE, {}, 3),
], ids=["paragru", "paralstm", "reverse"])
def test_windows_of_steps_equal_the_loop(monkeypatch, budget, spec, sizes, width):
    monkeypatch.setattr(chunks, "CHUNK_ELEMENTS", budget)
    seq, par = _pair(spec, **sizes)
    x = torch.randn(3, 13, width, dtype=torch.float64, requires_grad=True)
    ys, yp = seq(x), par(x)
    (scan,) = par.parallel_scans()
    assert scan.solver.chunk == "auto" and scan.stats.fallbacks == 0
    torch.testing.assert_close(yp, ys, rtol=0, atol=1e-10)
    gs = torch.autograd.grad(ys.sin().sum(), [x, *seq.parameters()])
    gp = torch.autograd.grad(yp.sin().sum(), [x, *par.parameters()])
    for a, b in zip(gp, gs):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-8)
