"""leaky_rnn's multi-head entry (Khajehabdollahi et al. 2023: one readout per task N of the N-parity
curriculum) against the paper's equations written here as a plain loop (the paper is the only
reference): r_t = LeakyReLU((1 − 1/τ) r_{t−1} + (W r_{t−1} + b + W_in x_t + b_in)/τ), τ = max(tau, 1),
diag(W) = 0, y_t[n] = r_t W_out[n] + b_out[n]. Float64, sizes drawn per seed, outputs and gradients.
"""
from __future__ import annotations

import random

import pytest
import torch
import torch.nn.functional as F
from papers_checks import assert_same_with_grads

import ncd

SEEDS = [0, 1, 2]


def multi_head_loop(x, m, slope=0.01):
    taus = torch.clamp(m.tau, min=1.0)
    W_off = m.W * (1 - torch.eye(m.W.shape[0], dtype=m.W.dtype))
    r = x.new_zeros(*x.shape[:-2], m.W.shape[1])
    ys = []
    for t in range(x.shape[-2]):
        r = F.leaky_relu((1 - 1 / taus) * r + (r @ W_off + m.b + x[..., t, :] @ m.W_in + m.b_in) / taus, slope)
        ys.append(torch.einsum("...d,ndc->...nc", r, m.W_out) + m.b_out)
    return torch.stack(ys, dim=-3)                        # [..., T, N, C]


def sizes(seed):
    rng = random.Random(seed)
    return dict(E=rng.randint(1, 4), D=rng.randint(2, 6), C=rng.randint(1, 3), N=rng.randint(1, 4)), \
        rng.randint(1, 3), rng.randint(1, 6)


@pytest.mark.parametrize("seed", SEEDS)
def test_heads_match_equations(seed):
    n, B, T = sizes(seed)
    torch.manual_seed(seed)
    m = ncd.load("leaky_rnn", **n).double()
    with torch.no_grad():
        m.W.normal_(0, 1.0)                               # a diagonal the mask must remove
        for p in (m.b, m.b_in, m.b_out):
            p.normal_()
        m.tau.uniform_(0.5, 3.0)                          # some below 1: the clamp must act
    x = torch.randn(B, T, n["E"], dtype=torch.float64, requires_grad=True)
    out = m(x)
    assert out.shape == (B, T, n["N"], n["C"])
    assert_same_with_grads(m, (x,), out, multi_head_loop(x, m))


def test_heads_are_independent_and_share_the_recurrence():
    torch.manual_seed(0)
    m = ncd.load("leaky_rnn", E=2, D=5, N=3).double()
    single = ncd.load("leaky_rnn", block="LeakyRNN", E=2, D=5).double()
    shared = {"W_in", "W", "b_in", "b", "tau"}
    assert shared <= set(m.state_dict()) and shared <= set(single.state_dict())
    for name in shared:
        assert m.state_dict()[name].shape == single.state_dict()[name].shape
    x = torch.randn(2, 6, 2, dtype=torch.float64)
    loss = m(x)[..., 1, :].sum()                          # only head 1
    g_out, g_bout = torch.autograd.grad(loss, (m.W_out, m.b_out))
    assert torch.all(g_out[[0, 2]] == 0) and torch.any(g_out[1] != 0)
    assert torch.all(g_bout[[0, 2]] == 0)
    seen = []
    m.taps.r.register_forward_hook(lambda mod, args, out: seen.append(out))
    m(x)
    assert seen[0].shape == (2, 6, 5)
    torch.testing.assert_close(m.M, 1 - torch.eye(5, dtype=torch.float64))
