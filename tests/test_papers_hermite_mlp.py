"""hermite_mlp (Radhakrishnan, Belkin and Uhler 2022) against references nobody here wrote, and
the paper's equations.

- hᵢ = Heᵢ / √(i!) against numpy.polynomial.hermite_e (the probabilists' Hermite series);
- the dual activation: E[φ(u) φ(v)] for unit Gaussians of correlation ξ, a Monte-Carlo estimate
  from the spec's φ, equals the closed form ψ(ξ) = Σ aᵢ² ξⁱ within 5 standard errors;
- the network against the paper's NTK-parametrised MLP written here in PyTorch (the paper is the
  only reference for it), with φ from the explicit sum
  Heₙ(x) = n! Σₘ (−1)ᵐ xⁿ⁻²ᵐ / (m! (n − 2m)! 2ᵐ), not from the spec's recurrence.
Float64, sizes drawn per seed, outputs and gradients (input and every parameter) to 1e-8.
"""
from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch
from numpy.polynomial import hermite_e
from papers_checks import assert_same_with_grads, batch_shape, randomise

import ncd

SEEDS = [0, 1, 2]


def hermite_explicit(x: torch.Tensor, n: int) -> torch.Tensor:
    """Heₙ(x) from its closed-form sum."""
    return sum((-1) ** m * math.factorial(n) / (math.factorial(m) * math.factorial(n - 2 * m) * 2**m)
               * x ** (n - 2 * m) for m in range(n // 2 + 1))


def phi_reference(z: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    return sum(a[i] * hermite_explicit(z, i) / math.sqrt(math.factorial(i)) for i in range(a.shape[0]))


def mlp_reference(x, W_in, W, W_out, a):
    E, D = W_in.shape
    z = x @ W_in / math.sqrt(E)
    for l in range(W.shape[0]):
        z = phi_reference(z, a) @ W[l] / math.sqrt(D)
    return phi_reference(z, a) @ W_out / math.sqrt(D)


@pytest.mark.parametrize("seed", SEEDS)
def test_basis_is_normalised_probabilists_hermite(seed):
    rng = random.Random(seed)
    D, P = rng.randint(1, 7), rng.randint(1, 9)
    basis = ncd.load("hermite_mlp", block="HermiteBasis", D=D, P=P).double()
    x = torch.randn(3, D, dtype=torch.float64) * 2
    got = basis(x)                                        # [3, D, P]
    assert got.shape == (3, D, P)
    for i in range(P):
        unit = np.zeros(i + 1)
        unit[i] = 1.0
        want = hermite_e.hermeval(x.numpy(), unit) / math.sqrt(math.factorial(i))
        np.testing.assert_allclose(got[..., i].numpy(), want, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("xi", [-0.6, 0.0, 0.3, 0.9])
def test_dual_activation_matches_monte_carlo(xi):
    """ψ(ξ) = Σ aᵢ² ξⁱ is E[φ(u)φ(v)] for unit Gaussians u, v with correlation ξ."""
    P, n = 5, 200_000
    gen = torch.Generator().manual_seed(7)
    a = torch.randn(P, dtype=torch.float64, generator=gen)
    a /= a.norm()
    basis = ncd.load("hermite_mlp", block="HermiteBasis", D=1, P=P).double()
    u = torch.randn(n, 1, dtype=torch.float64, generator=gen)
    v = xi * u + math.sqrt(1 - xi**2) * torch.randn(n, 1, dtype=torch.float64, generator=gen)
    prod = ((basis(u) @ a) * (basis(v) @ a)).reshape(-1)
    estimate, stderr = prod.mean().item(), prod.std().item() / math.sqrt(n)
    closed = float(sum(a[i] ** 2 * xi**i for i in range(P)))
    assert abs(estimate - closed) < 5 * stderr, (estimate, closed, stderr)


@pytest.mark.parametrize("seed", SEEDS)
def test_mlp_matches_ntk_equations(seed):
    rng = random.Random(seed)
    sizes = dict(E=rng.randint(1, 5), D=rng.randint(1, 6), C=rng.randint(1, 3), P=rng.randint(1, 6),
                 L=rng.randint(1, 3))
    torch.manual_seed(seed)
    m = ncd.load("hermite_mlp", **sizes).double()
    randomise(m, 0.2)
    with torch.no_grad():
        m.a.copy_(torch.randn(sizes["P"], dtype=torch.float64) / math.sqrt(sizes["P"]))
    x = torch.randn(*batch_shape(rng), sizes["E"], dtype=torch.float64, requires_grad=True)
    ref = mlp_reference(x, m.W_in, m.W, m.W_out, m.a)
    assert_same_with_grads(m, (x,), m(x), ref)


def test_initialisation_is_ntk():
    m = ncd.load("hermite_mlp", E=64, D=256, L=2).double()
    assert {n for n, _ in m.named_parameters()} == {"W_in", "W", "W_out"}
    assert m.W.shape == (2, 256, 256)
    for p in m.parameters():                               # N(0, 1): the 1/√fan-in is in the forward
        assert abs(p.std().item() - 1) < 0.05 and abs(p.mean().item()) < 0.05
    torch.testing.assert_close(m.a, torch.full((4,), 0.5, dtype=torch.float64))
