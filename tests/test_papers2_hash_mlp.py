"""hash_mlp (Lei et al. 2021): outputs, gradients and activation codes against a hand-written
nn.Linear stack in float64 at random sizes; the code helpers against plain definitions."""
from __future__ import annotations

import random

import pytest
import torch
from torch import nn

import ncd
from ncd.training.codes import activation_codes, knn_accuracy, redundancy_ratio

TOL = dict(rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("seed", range(4))
def test_hash_mlp_output_gradients_and_code(seed):
    rng = random.Random(seed)
    E, F, D, N = rng.randint(1, 8), rng.randint(1, 9), rng.randint(1, 5), rng.randint(1, 6)
    torch.manual_seed(seed)
    lins = [nn.Linear(E, F), nn.Linear(F, F), nn.Linear(F, F), nn.Linear(F, D)]
    lins = [lin.double() for lin in lins]
    m = ncd.load("hash_mlp", E=E, F=F, D=D).double()
    with torch.no_grad():
        for sub, lin in zip((m.l1, m.l2, m.l3), lins):
            sub.W.copy_(lin.weight.T)
            sub.b.copy_(lin.bias)
        m.W_out.copy_(lins[3].weight.T)
        m.b_out.copy_(lins[3].bias)
    x = torch.randn(N, E, dtype=torch.float64, requires_grad=True)
    pres, h = [], x
    for lin in lins[:3]:
        pres.append(lin(h))
        h = torch.relu(pres[-1])
    ref = lins[3](h)
    out = m(x)
    torch.testing.assert_close(out, ref, **TOL)
    w = torch.randn_like(ref)
    params = [p for sub in (m.l1, m.l2, m.l3) for p in (sub.W, sub.b)] + [m.W_out, m.b_out]
    got = torch.autograd.grad((out * w).sum(), [x, *params])
    want = torch.autograd.grad((ref * w).sum(), [x, *(p for lin in lins for p in (lin.weight, lin.bias))])
    for g, e in zip(got, want):
        torch.testing.assert_close(g, e.T if e.dim() == 2 and g is not got[0] else e, **TOL)
    code = activation_codes(m, x)
    assert code.dtype == torch.bool and code.shape == (N, 3 * F)
    assert torch.equal(code, torch.cat([p > 0 for p in pres], dim=1))


def test_redundancy_ratio_counts_inputs_with_a_shared_code():
    codes = torch.tensor([[1, 0], [1, 0], [0, 1], [1, 1], [1, 1], [1, 1], [0, 0]], dtype=torch.bool)
    assert redundancy_ratio(codes) == pytest.approx(5 / 7)
    assert redundancy_ratio(torch.eye(4, dtype=torch.bool)) == 0.0


def test_knn_accuracy_uses_hamming_distance():
    train = torch.tensor([[0, 0, 0, 0], [1, 1, 1, 1], [1, 1, 0, 0]], dtype=torch.bool)
    labels = torch.tensor([0, 1, 2])
    test = torch.tensor([[0, 0, 0, 1], [1, 1, 1, 0], [1, 1, 0, 1]], dtype=torch.bool)
    assert knn_accuracy(train, labels, test[:1], torch.tensor([0])) == 1.0
    assert knn_accuracy(train, labels, torch.tensor([[1, 1, 0, 0]], dtype=torch.bool), torch.tensor([2])) == 1.0
    assert knn_accuracy(train, labels, test[:1], torch.tensor([1])) == 0.0
