"""The step index of a scan or a halting loop used as a number (``sqrt(t + 1)``, ``t > 1``), not
only to select ``x[t]``: it checks, so it runs — on the sequential loop, in-process and emitted.

The reference is the step written plainly in PyTorch from the spec's own equation."""

import math

import torch

import ncd
from ncd.api import run_pipeline
from ncd.backends.pytorch.emit import emit_python
from test_core import load_emitted

SPEC = """
axis T = 5
axis D = 3
block F(x: [T, D]) -> [T, D] {
    return scan t over T carry (h: [D] = 0) {
        h = tanh(h * exp(-t / 4) + x[t] * sqrt(t + 1)) + where(t > 1, x[t], 0) + t * x[t]
        emit h
    }
}
"""


def reference(x: torch.Tensor) -> torch.Tensor:
    h = torch.zeros(x.shape[0], x.shape[-1], dtype=x.dtype)
    out = []
    for t in range(x.shape[1]):
        xt = x[:, t]
        h = torch.tanh(h * math.exp(-t / 4) + xt * math.sqrt(t + 1)) \
            + (xt if t > 1 else torch.zeros_like(xt)) + t * xt
        out.append(h)
    return torch.stack(out, 1)


def test_index_arithmetic_runs_and_equals_the_plain_loop(tmp_path):
    m = ncd.load(SPEC).double()
    x = torch.randn(2, 5, 3, dtype=torch.float64, requires_grad=True)
    y = m(x)
    torch.testing.assert_close(y, reference(x), rtol=1e-10, atol=1e-10)
    (g,) = torch.autograd.grad(y.sum(), x)
    (g_ref,) = torch.autograd.grad(reference(x).sum(), x)
    torch.testing.assert_close(g, g_ref, rtol=1e-10, atol=1e-10)
    emitted = load_emitted(emit_python(ncd.check(SPEC), class_name="Entry"), tmp_path).Entry().double()
    assert torch.equal(emitted(x), y)


def test_such_a_scan_runs_as_the_loop_and_a_parallel_request_is_refused():
    (plan,) = run_pipeline(SPEC).passes.scans
    assert plan.backend == "sequential" and "step index" in plan.reason
    try:
        ncd.load(SPEC.replace("= 0) {", "= 0) via newton {"))
    except ncd.NcdError as err:
        assert "step index" in str(err)
    else:
        raise AssertionError("via newton on a scan that computes with its index must be refused")
