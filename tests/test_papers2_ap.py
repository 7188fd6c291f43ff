"""ap_mlp and ap_conv (AP, Liu et al. 2022) against torch.nn layers pruned with
torch.nn.utils.prune.custom_from_mask, in float64 at random sizes.

Selective activation on the selected units is PReLU there, so the reference is F.prelu with the
slope S ⊙ a (0 on unselected units: plain ReLU). The dynamic dead-neuron rate recorded from the
spec's taps is compared with (pre-activation ≤ 0).mean() of the torch reference's own layers.
"""
from __future__ import annotations

import random

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import prune

import ncd
from ncd.training.dead_neurons import DeadNeuronRate, select_units
from ncd.training.masks import magnitude_mask, sparsity

TOL = dict(rtol=1e-10, atol=1e-10)


def pruned(layer: nn.Module, rng: random.Random) -> torch.Tensor:
    """Prune `layer.weight` at a random magnitude sparsity; returns the mask (torch's layout)."""
    mask = magnitude_mask(layer.weight, rng.choice([0.0, 0.3, 0.5, 0.8, 0.95]))
    prune.custom_from_mask(layer, "weight", mask)
    return mask


def check_grads(pairs: list[tuple[str, torch.Tensor, torch.Tensor]]) -> None:
    for name, got, want in pairs:
        torch.testing.assert_close(got, want, **TOL, msg=lambda m, name=name: f"gradient of {name}: {m}")


@pytest.mark.parametrize("seed", range(4))
def test_ap_mlp_matches_pruned_linear_stack(seed):
    rng = random.Random(seed)
    E, F_, D, B = rng.randint(1, 7), rng.randint(2, 9), rng.randint(1, 5), rng.randint(1, 4)
    torch.manual_seed(seed)
    lins = [nn.Linear(E, F_), nn.Linear(F_, F_), nn.Linear(F_, D)]
    lins = [lin.double() for lin in lins]
    masks = [pruned(lin, rng) for lin in lins]
    slopes = [torch.rand(F_, dtype=torch.float64, requires_grad=True) for _ in range(2)]
    selected = [(torch.rand(F_) < 0.5).double() for _ in range(2)]

    m = ncd.load("ap_mlp", E=E, F=F_, D=D).double()
    with torch.no_grad():
        for sub, lin, mask in zip((m.l1, m.l2, m.out), lins, masks):
            sub.W.copy_(lin.weight_orig.T)
            sub.b.copy_(lin.bias)
            sub.M.copy_(mask.T)
        for sub, a, s in zip((m.l1, m.l2), slopes, selected):
            sub.a.copy_(a.detach())
            sub.S.copy_(s)

    x = torch.randn(B, E, dtype=torch.float64, requires_grad=True)
    with DeadNeuronRate(m) as dnr:
        out = m(x)
    z1 = lins[0](x)
    z2 = lins[1](F.prelu(z1, selected[0] * slopes[0]))
    ref = lins[2](F.prelu(z2, selected[1] * slopes[1]))
    torch.testing.assert_close(out, ref, **TOL)
    assert dnr.rates() == pytest.approx({"l1.taps.pre": float((z1 <= 0).double().mean()),
                                         "l2.taps.pre": float((z2 <= 0).double().mean())}, abs=1e-12)

    w = torch.randn_like(ref)
    params = [p for sub in (m.l1, m.l2, m.out) for p in (sub.W, sub.b)] + [m.l1.a, m.l2.a]
    got = torch.autograd.grad((out * w).sum(), [x, *params])
    torch_params = [p for lin in lins for p in (lin.weight_orig, lin.bias)]
    want = list(torch.autograd.grad((ref * w).sum(), [x, *torch_params, *slopes], allow_unused=True))
    want[1:7] = [g.T if g.dim() == 2 else g for g in want[1:7]]
    check_grads(list(zip(["x", "W1", "b1", "W2", "b2", "W3", "b3", "a1", "a2"], got, want)))
    for sub, g in zip((m.l1, m.l2, m.out), (got[1], got[3], got[5])):
        pruned_entries = sub.M == 0
        assert torch.all(g[pruned_entries] == 0), "a pruned weight received a gradient"


def test_ap_mlp_default_is_plain_relu_and_taps_are_preactivations():
    torch.manual_seed(0)
    m = ncd.load("ap_mlp", E=5, F=6, D=3).double()
    assert torch.all(m.l1.S == 0) and torch.all(m.l1.M == 1)
    assert {"l1.M", "l1.S", "l2.M", "l2.S", "out.M"} <= set(m.state_dict())
    seen = []
    m.l1.taps.pre.register_forward_hook(lambda mod, args, out: seen.append(out))
    x = torch.randn(4, 5, dtype=torch.float64)
    m(x)
    torch.testing.assert_close(seen[0], x @ (m.l1.W * m.l1.M) + m.l1.b, **TOL)


def test_select_units_picks_the_most_often_dead():
    rates = torch.tensor([0.1, 0.9, 0.5, 0.7])
    assert select_units(rates, 0.5).tolist() == [0.0, 1.0, 0.0, 1.0]
    assert select_units(rates, 0.0).sum() == 0


def test_magnitude_mask_prunes_the_smallest_share():
    w = torch.randn(20, 30, dtype=torch.float64)
    for s in (0.0, 0.25, 0.5, 0.9, 1.0):
        mask = magnitude_mask(w, s)
        assert sparsity(mask) == pytest.approx(s, abs=1 / 600)
        if 0 < s < 1:
            assert w.abs()[mask == 1].min() > w.abs()[mask == 0].max()


@pytest.mark.parametrize("seed", range(3))
def test_ap_conv_matches_pruned_conv2d(seed):
    rng = random.Random(seed)
    C, C1, C2, D = rng.randint(1, 3), rng.randint(1, 4), rng.randint(1, 4), rng.randint(1, 4)
    Y, X, B = rng.randint(1, 6), rng.randint(1, 6), rng.randint(1, 3)
    torch.manual_seed(seed)
    convs = [nn.Conv2d(C, C1, 3, padding=1).double(), nn.Conv2d(C1, C2, 3, padding=1).double()]
    head = nn.Linear(C2, D).double()
    masks = [pruned(conv, rng) for conv in convs]
    slopes = [torch.rand(c, dtype=torch.float64) for c in (C1, C2)]
    selected = [(torch.rand(c) < 0.5).double() for c in (C1, C2)]
    m = ncd.load("ap_conv", C=C, C1=C1, C2=C2, D=D).double()
    with torch.no_grad():
        for sub, conv, mask, a, s in zip((m.l1, m.l2), convs, masks, slopes, selected):
            sub.W.copy_(conv.weight_orig)
            sub.b.copy_(conv.bias)
            sub.M.copy_(mask)
            sub.a.copy_(a.detach())
            sub.S.copy_(s)
        m.W_out.copy_(head.weight.T)
        m.b_out.copy_(head.bias)
    x = torch.randn(B, C, Y, X, dtype=torch.float64, requires_grad=True)
    with DeadNeuronRate(m, unit_dim=-3) as dnr:
        out = m(x)
    z1 = convs[0](x)
    z2 = convs[1](F.prelu(z1, selected[0] * slopes[0]))
    ref = head(F.prelu(z2, selected[1] * slopes[1]).mean(dim=(-2, -1)))
    torch.testing.assert_close(out, ref, **TOL)
    unit = dnr.unit_rates()["l2.taps.pre"]
    torch.testing.assert_close(unit, (z2 <= 0).double().mean(dim=(0, 2, 3)), **TOL)

    w = torch.randn_like(ref)
    got = torch.autograd.grad((out * w).sum(), [x, m.l1.W, m.l1.b, m.l2.W, m.l2.b])
    want = torch.autograd.grad((ref * w).sum(), [x, convs[0].weight_orig, convs[0].bias,
                                                  convs[1].weight_orig, convs[1].bias])
    check_grads(list(zip(["x", "W1", "b1", "W2", "b2"], got, want)))
    assert torch.all(got[1][m.l1.M == 0] == 0) and torch.all(got[3][m.l2.M == 0] == 0)
