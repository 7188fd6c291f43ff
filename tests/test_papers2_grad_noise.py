"""deep_mlp against nn.Sequential in float64; GradientNoise's added noise has the sample variance
η / (1 + t)^γ of Neelakantan et al. (2015), checked against the formula written here."""
from __future__ import annotations

import math
import random

import pytest
import torch
from torch import nn

import ncd
from ncd.training.grad_noise import GradientNoise

TOL = dict(rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("seed", range(2))
def test_deep_mlp_matches_sequential(seed):
    rng = random.Random(seed)
    E, F, D, B = rng.randint(1, 6), rng.randint(2, 8), rng.randint(1, 4), rng.randint(1, 4)
    torch.manual_seed(seed)
    m = ncd.load("deep_mlp", E=E, F=F, D=D).double()
    layers = [nn.Linear(E, F)] + [nn.Linear(F, F) for _ in range(19)]
    ref = nn.Sequential(*(mod for lin in layers for mod in (lin, nn.ReLU())), nn.Linear(F, D)).double()
    lins = [mod for mod in ref if isinstance(mod, nn.Linear)]
    with torch.no_grad():
        m.W_in.copy_(lins[0].weight.T)
        m.b_in.copy_(lins[0].bias)
        for i in range(19):
            m.hidden[i].W.copy_(lins[i + 1].weight.T)
            m.hidden[i].b.copy_(lins[i + 1].bias)
        m.W_out.copy_(lins[-1].weight.T)
        m.b_out.copy_(lins[-1].bias)
    assert sum(p.numel() for p in m.parameters()) == sum(p.numel() for p in ref.parameters())
    x = torch.randn(B, E, dtype=torch.float64, requires_grad=True)
    out, want = m(x), ref(x)
    torch.testing.assert_close(out, want, **TOL)
    w = torch.randn_like(want)
    g_x, g_w = torch.autograd.grad((out * w).sum(), [x, m.hidden[7].W])
    r_x, r_w = torch.autograd.grad((want * w).sum(), [x, lins[8].weight])
    torch.testing.assert_close(g_x, r_x, **TOL)
    torch.testing.assert_close(g_w, r_w.T, **TOL)


def test_added_noise_has_the_annealed_variance():
    """n = 200 000 draws per step: the sample variance's relative standard error is √(2/n) ≈ 0.32 %,
    so a 2 % tolerance is over six standard errors; the mean is within 6 σ/√n of 0."""
    eta, gamma, n = 0.3, 0.55, 200_000
    p = nn.Parameter(torch.zeros(n, dtype=torch.float64))
    noise = GradientNoise([p], eta=eta, gamma=gamma, generator=torch.Generator().manual_seed(0))
    for t in range(12):
        grad = torch.full((n,), 0.5, dtype=torch.float64)
        p.grad = grad.clone()
        noise.step()
        added = p.grad - grad
        expected = eta / (1 + t) ** gamma
        assert added.var().item() == pytest.approx(expected, rel=0.02), f"step {t}"
        assert abs(added.mean().item()) < 6 * math.sqrt(expected / n)
    assert noise.t == 12


def test_noise_is_independent_across_parameters_and_reproducible():
    ps = [nn.Parameter(torch.zeros(50_000)) for _ in range(2)]
    for p in ps:
        p.grad = torch.zeros(50_000)
    GradientNoise(ps, eta=1.0, generator=torch.Generator().manual_seed(1)).step()
    corr = torch.corrcoef(torch.stack([p.grad for p in ps]))[0, 1]
    assert abs(corr) < 0.03
    q = nn.Parameter(torch.zeros(50_000))
    q.grad = torch.zeros(50_000)
    GradientNoise([q], eta=1.0, generator=torch.Generator().manual_seed(1)).step()
    assert torch.equal(q.grad, ps[0].grad)
