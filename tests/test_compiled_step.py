"""compile_steps: the sequential loop's step as a torch.compile graph equals the eager loop,
outputs and every gradient; steps it must not compile, and compile failures, run eagerly."""
from __future__ import annotations

import pytest
import torch

import ncd

SIZES = dict(block="LeakyRNN", T=12, E=3, D=16, C=2)
DROPOUT_RNN = """
axis T, E = 3, D = 8
block Net(x: [T, E]) -> [T, D] {
  param W: [E, D] init normal(0, 0.3)
  param U: [D', D] init normal(0, 0.3)
  return scan t over T carry (h: [D] = 0) {
    h = tanh(dropout(x[t] @[E] W, p = 0.5) + h[D as D'] @[D'] U)
    emit h
  }
}
"""


def _pair(**compile_steps):
    torch.manual_seed(0)
    eager = ncd.load("specs/leaky_rnn.ncd", **SIZES)
    compiled = ncd.load("specs/leaky_rnn.ncd", **SIZES, **compile_steps)
    compiled.load_state_dict(eager.state_dict())
    return eager, compiled


def _statuses(module) -> list[str]:
    return [s.compiled_step.status for s in module._ncd_run.steps if hasattr(s, "compiled_step")]


def _same_forward_and_gradients(eager, compiled, x):
    y0, y1 = eager(x), compiled(x)
    torch.testing.assert_close(y1, y0, rtol=1e-5, atol=1e-6)
    y0.square().sum().backward()
    y1.square().sum().backward()
    for (name, p), q in zip(eager.named_parameters(), compiled.parameters()):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-5, atol=1e-6, msg=name)


def test_a_traced_step_equals_the_loop_and_compiles_once_per_shape():
    """backend "eager": dynamo traces the step into a graph (no code generation, so fast);
    t turns symbolic after its second value, so a call of T steps makes at most two graphs,
    and a second call of the same shape makes none."""
    from torch._dynamo.utils import counters

    eager, compiled = _pair(compile_steps="eager")
    x = torch.randn(4, 12, 3)
    before = counters["stats"]["unique_graphs"]
    _same_forward_and_gradients(eager, compiled, x)
    assert _statuses(compiled) == ["compiled (torch.compile, backend eager)"]
    first = counters["stats"]["unique_graphs"] - before
    assert 1 <= first <= 2
    compiled(x)
    assert counters["stats"]["unique_graphs"] - before == first


def test_off_by_default_and_a_failing_compile_falls_back_to_eager(monkeypatch):
    eager, compiled = _pair()
    x = torch.randn(2, 12, 3)
    compiled(x)
    assert _statuses(compiled) == ["eager (compile_steps off)"]

    def broken(fn, **kwargs):
        def fails(*args):
            raise RuntimeError("no C++ compiler found")
        return fails

    monkeypatch.setattr(torch, "compile", broken)
    eager, compiled = _pair(compile_steps=True)
    _same_forward_and_gradients(eager, compiled, x)
    (status,) = _statuses(compiled)
    assert status.startswith("eager: torch.compile failed (RuntimeError: no C++ compiler found")


def test_a_step_that_draws_stays_eager_and_draws_what_eager_draws():
    """A compiled graph would draw from another stream than the module's generator."""
    torch.manual_seed(0)
    eager = ncd.load(DROPOUT_RNN, seed=3)
    compiled = ncd.load(DROPOUT_RNN, seed=3, compile_steps="eager")
    compiled.load_state_dict(eager.state_dict())
    x = torch.randn(2, 5, 3)
    assert torch.equal(compiled(x), eager(x))
    assert _statuses(compiled) == ["eager: the step draws random numbers or updates running statistics"]


def test_compile_steps_takes_a_bool_or_a_backend_name():
    with pytest.raises(ncd.NcdError, match="compile_steps must be True, False or a torch.compile backend name"):
        ncd.load("specs/leaky_rnn.ncd", **SIZES, compile_steps=3)


@pytest.mark.slow
def test_an_inductor_compiled_step_equals_the_loop():
    """The default backend (inductor: generated C++ on a CPU; tens of seconds to compile here)."""
    eager, compiled = _pair(compile_steps=True)
    _same_forward_and_gradients(eager, compiled, torch.randn(4, 12, 3))
    assert _statuses(compiled) == ["compiled (torch.compile, backend inductor)"]
