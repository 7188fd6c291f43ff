"""Both ACT forms of a halting loop against plain PyTorch loops written here from their definitions.

The only references are the papers, so each oracle below writes the equations out per position,
in float64, over states computed for every step (no early stop, no shared code with the runtime):

- Graves (2016), "Adaptive Computation Time for Recurrent Neural Networks", eqs. 7-14: the
  halting step N is the first n with Σ_{m≤n} h_m ≥ 1 − ε, capped at the maximum M; the remainder
  R = 1 − Σ_{n<N} h_n; p_n = h_n before N and R at N; output Σ p_n s_n; ponder cost N + R.
- tensor2tensor's Universal Transformer (Dehghani et al. 2018, its `act` loop as described in
  the paper's appendix): a unit halts when Σ h would exceed 1 − ε, taking the remainder; the
  state is interpolated acc ← s·w + acc·(1 − w); a unit still running at M gets no remainder.

Step indices start at 0 (the body adds 0.1·n, so an off-by-one shows).
"""
from __future__ import annotations

import importlib.util
import random

import pytest
import torch

import ncd
from ncd.backends.pytorch.emit import emit_python

SPEC = """
axis T, D
block ACT(x: [T, D]) -> [T, D], [T], [T] {{
    param W: [D, D'] init normal(0, 0.7)
    param w: [D] init normal(0, 1)
    param b: [] init zeros
    y, one, ponder = halting n max {max} eps {eps} mix {mix} carry (s: [T, D] = x, u: [T] = 1) {{
        s = tanh(s @[D] W)[D' as D] + 0.1 * n
        halt sigmoid(s @[D] w + b)
    }}
    return y, one, ponder
}}
"""


def steps(m, x: torch.Tensor, max_steps: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Every state s_n and halting probability h_n, n = 0 .. M-1, for all positions."""
    states, probs, s = [], [], x
    for n in range(max_steps):
        s = torch.tanh(s @ m.W) + 0.1 * n
        states.append(s)
        probs.append(torch.sigmoid(s @ m.w + m.b))
    return states, probs


def graves(states, probs, eps: float):
    """Graves (2016) eqs. 7-14, one position at a time."""
    max_steps = len(states)
    y = torch.zeros_like(states[0])
    ponder = torch.zeros_like(probs[0])
    weight_sum = torch.zeros_like(probs[0])
    for pos in range(probs[0].numel()):
        idx = torch.unravel_index(torch.tensor(pos), probs[0].shape)
        total = 0.0
        for n in range(max_steps):
            h = probs[n][idx]
            if total + h >= 1 - eps or n == max_steps - 1:  # N = n + 1 (paper's steps count from 1)
                remainder = 1 - total
                y[idx] = y[idx] + remainder * states[n][idx]
                weight_sum[idx] = total + remainder
                ponder[idx] = (n + 1) + remainder
                break
            total = total + h
            y[idx] = y[idx] + h * states[n][idx]
    return y, weight_sum, ponder


def interpolate(states, probs, eps: float):
    """tensor2tensor's ACT, one position at a time."""
    y = torch.zeros_like(states[0])
    ponder = torch.zeros_like(probs[0])
    for pos in range(probs[0].numel()):
        idx = torch.unravel_index(torch.tensor(pos), probs[0].shape)
        total, updates, remainder, acc = 0.0, 0, 0.0, torch.zeros_like(states[0][idx])
        for n in range(len(states)):
            h = probs[n][idx]
            updates += 1
            if total + h > 1 - eps:
                remainder = 1 - total
                acc = states[n][idx] * remainder + acc * (1 - remainder)
                break
            total = total + h
            acc = states[n][idx] * h + acc * (1 - h)
        y[idx] = acc
        ponder[idx] = updates + remainder
    return y, ponder


def case(seed: int) -> dict:
    rng = random.Random(seed)
    return {"T": rng.randint(1, 6), "D": rng.randint(1, 5), "B": rng.randint(1, 3), "max": rng.randint(1, 7),
            "eps": rng.choice([0.01, 0.05, 0.2, 0.5]), "bias": rng.uniform(-3, 2)}


def loaded(mix: str, c: dict):
    torch.manual_seed(0)
    m = ncd.load(SPEC.format(max=c["max"], eps=c["eps"], mix=mix), T=c["T"], D=c["D"]).double()
    with torch.no_grad():
        m.b.fill_(c["bias"])
    x = torch.randn(c["B"], c["T"], c["D"], dtype=torch.float64)
    return m, x


@pytest.mark.parametrize("seed", range(8))
def test_graves_matches_the_paper_and_its_invariants(seed: int) -> None:
    c = case(seed)
    m, x = loaded("graves", c)
    y, one, ponder = m(x)
    states, probs = steps(m, x, c["max"])
    ref_y, ref_sum, ref_ponder = graves(states, probs, c["eps"])
    torch.testing.assert_close(y, ref_y, rtol=0, atol=1e-12)
    torch.testing.assert_close(ponder, ref_ponder, rtol=0, atol=1e-12)
    # the weights of every position sum to 1, halted early or at max (u = 1 mixes to Σ p_n)
    torch.testing.assert_close(one, torch.ones_like(one), rtol=0, atol=1e-12)
    torch.testing.assert_close(ref_sum, torch.ones_like(ref_sum), rtol=0, atol=1e-12)
    assert bool(((ponder >= 1) & (ponder <= c["max"] + 1)).all())


@pytest.mark.parametrize("seed", range(8))
def test_interpolate_matches_tensor2tensor(seed: int) -> None:
    c = case(seed)
    m, x = loaded("interpolate", c)
    y, _, ponder = m(x)
    states, probs = steps(m, x, c["max"])
    ref_y, ref_ponder = interpolate(states, probs, c["eps"])
    torch.testing.assert_close(y, ref_y, rtol=0, atol=1e-12)
    torch.testing.assert_close(ponder, ref_ponder, rtol=0, atol=1e-12)
    assert bool(((ponder >= 1) & (ponder <= c["max"] + 1)).all())


def test_a_position_that_never_halts_gets_the_remainder_only_under_graves() -> None:
    c = {"T": 3, "D": 2, "B": 2, "max": 4, "eps": 0.01, "bias": -30.0}
    g, x = loaded("graves", c)
    i, _ = loaded("interpolate", c)
    gy, gone, gp = g(x)
    iy, _, ip = i(x)
    states, probs = steps(g, x, c["max"])
    total = sum(probs[:-1])
    torch.testing.assert_close(gp, c["max"] + (1 - total), rtol=0, atol=1e-12)  # N = M, R ≈ 1
    torch.testing.assert_close(gy, sum(p[..., None] * s for p, s in zip(probs[:-1], states[:-1]))
                               + (1 - total)[..., None] * states[-1], rtol=0, atol=1e-12)
    torch.testing.assert_close(gone, torch.ones_like(gone), rtol=0, atol=1e-12)
    assert torch.equal(ip, torch.full_like(ip, float(c["max"])))  # no remainder: exactly max
    assert float(iy.detach().abs().max()) < 1e-9  # the interpolation collapses toward 0


def test_a_position_halting_at_the_first_step_outputs_that_state() -> None:
    c = {"T": 3, "D": 2, "B": 2, "max": 5, "eps": 0.01, "bias": 40.0}
    for mix in ("graves", "interpolate"):
        m, x = loaded(mix, c)
        y, _, ponder = m(x)
        s0 = torch.tanh(x @ m.W)  # n = 0: no step offset
        torch.testing.assert_close(y, s0, rtol=0, atol=1e-12)
        torch.testing.assert_close(ponder, torch.full_like(ponder, 2.0), rtol=0, atol=1e-12)  # N + R = 1 + 1


@pytest.mark.parametrize("mix", ["graves", "interpolate"])
def test_gradients_reach_the_halting_unit(mix: str) -> None:
    m, x = loaded(mix, {"T": 4, "D": 3, "B": 2, "max": 6, "eps": 0.05, "bias": -1.0})
    y, _, ponder = m(x)
    (y.sum() + ponder.sum()).backward()
    assert m.w.grad is not None and float(m.w.grad.abs().sum()) > 0


@pytest.mark.parametrize("mix", ["graves", "interpolate"])
def test_emitted_python_equals_the_module(mix: str, tmp_path) -> None:
    source = SPEC.format(max=5, eps=0.1, mix=mix)
    ir = ncd.check(source, T=4, D=3)
    path = tmp_path / f"act_{mix}.py"
    path.write_text(emit_python(ir, class_name="Entry"))
    spec = importlib.util.spec_from_file_location(f"act_{mix}", path)
    emitted = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(emitted)
    torch.manual_seed(0)
    m = ncd.load(source, T=4, D=3)
    e = emitted.Entry()
    e.load_state_dict(m.state_dict())
    x = torch.randn(2, 4, 3)
    for a, b in zip(m(x), e(x)):
        assert torch.equal(a, b)
