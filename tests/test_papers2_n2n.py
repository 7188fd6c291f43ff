"""n2n_policy (Ashok et al. 2017), float64 at random sizes.

Removal policy: p(keep) against nn.LSTM(bidirectional=True) + nn.Linear + sigmoid with the same
weights (outputs, gradients); its keep draws follow p. Shrink policy: the first step's action
frequencies over many draws match π_1 from an nn.LSTMCell + nn.Linear + softmax reference, the
second step's frequencies given each first action match π_2 after feeding that action back, and
the emitted log-probabilities equal the reference's log π(a) of the drawn actions.
Statistical tolerance: every frequency within 5 standard errors √(p(1−p)/n) + 1e-3 of its
probability (a false failure has probability below 1e-5 per check).
"""
from __future__ import annotations

import math
import random

import pytest
import torch
from torch import nn

import ncd
from ncd.training.n2n import compression, reward

TOL = dict(rtol=1e-10, atol=1e-10)


def gates(w: torch.Tensor, Hd: int) -> torch.Tensor:
    return w.reshape(4, Hd, w.shape[1]).permute(2, 0, 1)


def within(freq: float, p: float, n: int) -> bool:
    return abs(freq - p) <= 5 * math.sqrt(p * (1 - p) / n) + 1e-3


@pytest.mark.parametrize("seed", range(3))
def test_removal_policy_matches_bidirectional_lstm(seed):
    rng = random.Random(seed)
    L, Dd, Hd, B = rng.randint(1, 6), rng.randint(1, 5), rng.randint(1, 5), rng.randint(1, 3)
    torch.manual_seed(seed)
    lstm = nn.LSTM(Dd, Hd, batch_first=True, bidirectional=True).double()
    head = nn.Linear(2 * Hd, 1).double()
    m = ncd.load("n2n_policy", block="RemovalPolicy", Dd=Dd, Hd=Hd, seed=seed).double()
    with torch.no_grad():
        for sfx, tsfx in (("", "_l0"), ("_rev", "_l0_reverse")):
            getattr(m, f"W_ih{sfx}").copy_(gates(getattr(lstm, f"weight_ih{tsfx}"), Hd))
            getattr(m, f"W_hh{sfx}").copy_(gates(getattr(lstm, f"weight_hh{tsfx}"), Hd))
            getattr(m, f"b_ih{sfx}").copy_(getattr(lstm, f"bias_ih{tsfx}").view(4, Hd))
            getattr(m, f"b_hh{sfx}").copy_(getattr(lstm, f"bias_hh{tsfx}").view(4, Hd))
        m.W.copy_(head.weight[0])
        m.b.copy_(head.bias[0])
    x = torch.randn(B, L, Dd, dtype=torch.float64, requires_grad=True)
    p, keep = m(x)
    ref = torch.sigmoid(head(lstm(x)[0]))[..., 0]
    torch.testing.assert_close(p, ref, **TOL)
    assert keep.dtype == torch.int64 and set(keep.unique().tolist()) <= {0, 1}
    w = torch.randn_like(ref)
    got = torch.autograd.grad((p * w).sum(), [x, m.W_hh_rev, m.W, m.b_ih])
    want = torch.autograd.grad((ref * w).sum(), [x, lstm.weight_hh_l0_reverse, head.weight, lstm.bias_ih_l0])
    torch.testing.assert_close(got[0], want[0], **TOL)
    torch.testing.assert_close(got[1], gates(want[1], Hd), **TOL)
    torch.testing.assert_close(got[2], want[2][0], **TOL)
    torch.testing.assert_close(got[3], want[3].view(4, Hd), **TOL)


def test_removal_keep_draws_follow_p():
    torch.manual_seed(0)
    m = ncd.load("n2n_policy", block="RemovalPolicy", Dd=3, Hd=4, seed=11).double()
    n = 20_000
    x = torch.randn(1, 4, 3, dtype=torch.float64).expand(n, 4, 3)
    with torch.no_grad():
        p, keep = m(x)
    for layer in range(4):
        assert within(float(keep[:, layer].double().mean()), float(p[0, layer]), n), f"layer {layer}"


def shrink_reference(m, Dd: int, A: int, Hd: int):
    """nn.LSTMCell over [x_ℓ; onehot(a_{ℓ−1})] + nn.Linear + softmax, carrying the spec's weights."""
    cell = nn.LSTMCell(Dd + A, Hd).double()
    head = nn.Linear(Hd, A).double()
    with torch.no_grad():
        w_ih = torch.cat([m.W_x, m.W_a], dim=0)                       # [Dd + A, G, Hd]
        cell.weight_ih.copy_(w_ih.permute(1, 2, 0).reshape(4 * Hd, Dd + A))
        cell.weight_hh.copy_(m.W_hh.permute(1, 2, 0).reshape(4 * Hd, Hd))
        cell.bias_ih.copy_(m.b_ih.reshape(-1))
        cell.bias_hh.copy_(m.b_hh.reshape(-1))
        head.weight.copy_(m.W_o.T)
        head.bias.copy_(m.b_o)
    return cell, head


@pytest.mark.parametrize("seed", range(2))
def test_shrink_policy_samples_its_probabilities_autoregressively(seed):
    rng = random.Random(seed)
    Dd, Hd, A = rng.randint(1, 4), rng.randint(2, 5), rng.randint(2, 4)
    torch.manual_seed(seed)
    m = ncd.load("n2n_policy", block="ShrinkPolicy", Dd=Dd, Hd=Hd, A=A, seed=100 + seed).double()
    with torch.no_grad():
        m.W_o.mul_(4.0)                                               # sharper, non-uniform π
        m.b_o.normal_()
    cell, head = shrink_reference(m, Dd, A, Hd)
    n = 20_000
    x1 = torch.randn(1, 2, Dd, dtype=torch.float64)
    with torch.no_grad():
        acts, logp = m(x1.expand(n, 2, Dd))
        zero = torch.zeros(1, A, dtype=torch.float64)
        h1, c1 = cell(torch.cat([x1[:, 0], zero], dim=1))
        pi1 = torch.softmax(head(h1), dim=-1)[0]
        for k in range(A):
            assert within(float((acts[:, 0] == k).double().mean()), float(pi1[k]), n), f"step 1, action {k}"
        onehots = torch.eye(A, dtype=torch.float64)
        h2, _ = cell(torch.cat([x1[:, 1].expand(A, Dd), onehots], dim=1), (h1.expand(A, Hd), c1.expand(A, Hd)))
        pi2 = torch.softmax(head(h2), dim=-1)                        # [a_1, a_2]
        for k in range(A):
            rows = acts[:, 0] == k
            count = int(rows.sum())
            if count < 200:
                continue
            for j in range(A):
                freq = float((acts[rows, 1] == j).double().mean())
                assert within(freq, float(pi2[k, j]), count), f"step 2 given a_1 = {k}, action {j}"
        want_logp = torch.stack([pi1.log()[acts[:, 0]], pi2.log()[acts[:, 0], acts[:, 1]]], dim=1)
        torch.testing.assert_close(logp, want_logp, **TOL)


def test_shrink_policy_draws_are_seeded():
    m = ncd.load("n2n_policy", block="ShrinkPolicy", Dd=3, seed=5)
    x = torch.randn(64, 6, 3)
    a1, _ = m(x)
    m.manual_seed(5)
    a2, _ = m(x)
    assert torch.equal(a1, a2)


def test_reward_is_c_times_two_minus_c_times_relative_accuracy():
    assert compression(25, 100) == 0.75
    assert reward(25, 100, 0.9, 0.95) == pytest.approx(0.75 * 1.25 * 0.9 / 0.95)
    assert reward(100, 100, 0.9, 0.9) == 0.0
    assert reward(0, 100, 0.5, 1.0) == pytest.approx(0.5)
