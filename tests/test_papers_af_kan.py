"""af_kan (Ta et al. 2025) against the layer as the authors' All-KAN code computes it, written here
in PyTorch from its equations (there is no package; the code is not copied):
φ = (act(x − low)·act(high − x))² on a grid shared over inputs, φ/‖φ‖₂ and min-max normalisation over
the whole batch tensor, softmax attention over the input axis with temperature max(τ, 1),
z = α·Σ_J φ, y = act(LayerNorm(z)) W with no bias. Float64, sizes drawn per seed, outputs and
gradients; the batch dependence; the parameter count against the layer's formula
O·E + 2E + 3J + 2.
"""
from __future__ import annotations

import random

import pytest
import torch
import torch.nn.functional as F
from papers_checks import assert_same_with_grads, randomise

import ncd

SEEDS = [0, 1, 2]


def af_kan_layer(x, layer, act=F.relu):
    """x [N, E] -> [N, O]: the global-attention AF-KAN layer."""
    phi = (act(x[..., None] - layer.low) * act(layer.high - x[..., None])) ** 2      # [N, E, J]
    phi = F.normalize(phi, p=2, dim=None)                                             # whole tensor
    phi = (phi - phi.min()) / (phi.max() - phi.min())
    scores = phi @ layer.w + layer.c                                                  # [N, E]
    alpha = torch.softmax(scores / layer.tau.clamp(min=1.0), dim=-1)
    z = alpha * phi.sum(-1)
    z = F.layer_norm(z, z.shape[-1:], layer.gamma, layer.beta, eps=1e-5)
    return act(z) @ layer.W


def sizes(seed):
    rng = random.Random(seed)
    return dict(E=rng.randint(2, 6), H=rng.randint(2, 5), D=rng.randint(1, 4), G=rng.randint(1, 5)), \
        rng.randint(2, 7)


@pytest.mark.parametrize("seed", SEEDS)
def test_network_matches_equations(seed):
    n, N = sizes(seed)
    torch.manual_seed(seed)
    m = ncd.load("af_kan", **n).double()
    randomise(m, 0.1)
    x = torch.randn(N, n["E"], dtype=torch.float64, requires_grad=True)
    ref = af_kan_layer(af_kan_layer(x, m.layer1), m.layer2)
    assert_same_with_grads(m, (x,), m(x), ref)


@pytest.mark.parametrize("seed", SEEDS)
def test_layer_initialisation_and_parameter_count(seed):
    n, _ = sizes(seed)
    k = 3
    m = ncd.load("af_kan", **n)
    J = n["G"] + k
    for layer, (E, O) in ((m.layer1, (n["E"], n["H"])), (m.layer2, (n["H"], n["D"]))):
        torch.testing.assert_close(layer.low, torch.arange(-k, n["G"]) / n["G"])
        torch.testing.assert_close(layer.high, layer.low + (k + 1) / n["G"])
        torch.testing.assert_close(layer.tau, torch.tensor(E ** 0.5))
        assert layer.W.shape == (E, O) and layer.W.abs().max() <= E ** -0.5
        assert sum(p.numel() for p in layer.parameters()) == O * E + 2 * E + 3 * J + 2


def test_outputs_depend_on_the_batch():
    torch.manual_seed(0)
    m = ncd.load("af_kan", E=5, H=4, D=3).double()
    x = torch.randn(6, 5, dtype=torch.float64)
    alone = m(x[:1])
    in_batch = m(x)[:1]
    assert not torch.allclose(alone, in_batch, atol=1e-6)
    torch.testing.assert_close(in_batch, af_kan_layer(af_kan_layer(x, m.layer1), m.layer2)[:1])


def test_max_of_a_scalar_parameter_and_a_number():
    """max(tau, 1) with tau a [] parameter: a clamp, in process and in emitted Python."""
    spec = "# t\n# paper: none 2025\naxis D = 3\nblock F(x: [D]) -> [D] {\n  param t: [] init const(0.5)\n" \
           "  return x * max(t, 1) + min(2, t)\n}\n"
    m = ncd.load(spec)
    x = torch.randn(2, 3)
    torch.testing.assert_close(m(x), x * 1.0 + 0.5)
    with torch.no_grad():
        m.t.fill_(3.0)
    torch.testing.assert_close(m(x), x * 3.0 + 2.0)
