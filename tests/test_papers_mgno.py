"""mgno (He, Liu and Xu 2023) against the paper's V-cycle written here with F.conv2d /
F.conv_transpose2d (the paper is the only reference; the authors' code is not copied), and against
the parameter count of the authors' MgNO_DC at the stated Darcy configuration (3 levels, one pre-
and one post-smoothing per level, zero padding, no conv biases, 8 channels, 3 layers, 1×1 readout):
23,106. Float64, sizes drawn per seed, outputs and gradients. The boundary variants mgno_circular
and mgno_reflect against the same V-cycle with every 3×3 conv padded as nn.Conv2d(padding_mode=...)
pads (F.pad with that mode, then an unpadded conv), the prolongations zero-padded transposed convs.
"""
from __future__ import annotations

import random

import pytest
import torch
import torch.nn.functional as F
from papers_checks import assert_same_with_grads, randomise

import ncd

SEEDS = [0, 1, 2]


def conv(x, W, stride=1, mode="zeros"):
    if mode == "zeros":
        return F.conv2d(x, W, stride=stride, padding=1)
    return F.conv2d(F.pad(x, (1, 1, 1, 1), mode=mode), W, stride=stride)


def smooth(u, f, s, mode="zeros"):
    """u + S (f − A u)."""
    return u + conv(f - conv(u, s.A, mode=mode), s.S, mode=mode)


def mg_conv(f, mg, mode="zeros"):
    u0 = conv(f, mg.S0, mode=mode)
    f1 = conv(f, mg.R0, 2, mode)
    u1 = smooth(conv(u0, mg.Pi0, 2, mode), f1, mg.pre1, mode)
    f2 = conv(f1, mg.R1, 2, mode)
    u2 = smooth(conv(u1, mg.Pi1, 2, mode), f2, mg.pre2, mode)
    u1 = smooth(u1 + F.conv_transpose2d(u2, mg.P1, stride=2, padding=1), f1, mg.post1, mode)
    u0 = smooth(u0 + F.conv_transpose2d(u1, mg.P0, stride=2, padding=1), f, mg.post0, mode)
    return u0


def mgno(x, m, mode="zeros"):
    point = lambda u, W, b: torch.einsum("oc,bcyx->boyx", W, u) + b[:, None, None]  # noqa: E731
    u = F.gelu(mg_conv(x, m.mg, mode) + point(x, m.W, m.b))
    for layer in m.layers:
        u = F.gelu(mg_conv(u, layer.mg, mode) + point(u, layer.W, layer.b))
    return torch.einsum("oc,bcyx->boyx", m.W_out, u)


@pytest.mark.parametrize("seed", SEEDS)
def test_mgno_matches_v_cycle_equations(seed):
    rng = random.Random(seed)
    sizes = dict(Cin=rng.randint(1, 3), C=rng.randint(1, 4), Cout=rng.randint(1, 2))
    Y, X, B = 4 * rng.randint(1, 3), 4 * rng.randint(1, 3), rng.randint(1, 2)
    torch.manual_seed(seed)
    m = ncd.load("mgno", **sizes).double()
    randomise(m, 0.2)
    x = torch.randn(B, sizes["Cin"], Y, X, dtype=torch.float64, requires_grad=True)
    assert_same_with_grads(m, (x,), m(x), mgno(x, m))


@pytest.mark.parametrize("mode", ["circular", "reflect"])
@pytest.mark.parametrize("seed", SEEDS)
def test_boundary_variants_match_v_cycle_equations(mode, seed):
    rng = random.Random(seed)
    sizes = dict(Cin=rng.randint(1, 3), C=rng.randint(1, 4), Cout=rng.randint(1, 2))
    Y, X, B = 4 * rng.randint(2, 3), 4 * rng.randint(2, 3), rng.randint(1, 2)
    torch.manual_seed(seed)
    m = ncd.load(f"mgno_{mode}", **sizes).double()
    randomise(m, 0.2)
    x = torch.randn(B, sizes["Cin"], Y, X, dtype=torch.float64, requires_grad=True)
    assert_same_with_grads(m, (x,), m(x), mgno(x, m, mode))
    zero = ncd.load("mgno", **sizes).double()
    zero.load_state_dict(m.state_dict())                     # the same weights, the same names
    assert (zero(x) - m(x)).abs().max() > 1e-6               # the boundary is what differs


@pytest.mark.parametrize("mode", ["circular", "reflect"])
def test_boundary_variants_have_the_darcy_parameter_count(mode):
    assert sum(p.numel() for p in ncd.load(f"mgno_{mode}").parameters()) == 23_106


def test_reflect_variant_on_a_too_small_grid_is_an_ncd_error():
    m = ncd.load("mgno_reflect")
    with pytest.raises(ncd.NcdError, match="reflect|padding"):
        m(torch.randn(1, 1, 4, 4))                           # the coarsest grid is 1 × 1


def test_darcy_parameter_count_is_the_authors():
    m = ncd.load("mgno")
    assert sum(p.numel() for p in m.parameters()) == 23_106


@pytest.mark.parametrize("C, Cin", [(8, 1), (5, 2), (12, 3)])
def test_parameter_count_formula(C, Cin):
    """Per V-cycle over F input channels: 2·16C² (prolongations) + 2·9C² + 2·9F² (restrictions)
    + 9CF (first smoothing) + 4·18CF (four smoothers); plus the 1×1 convs and the readout."""
    mg = lambda F_: 50 * C * C + 18 * F_ * F_ + 81 * C * F_  # noqa: E731
    want = mg(Cin) + 2 * mg(C) + (C * Cin + C) + 2 * (C * C + C) + C
    assert sum(p.numel() for p in ncd.load("mgno", C=C, Cin=Cin).parameters()) == want


def test_initialisation_is_torchs_conv_default():
    torch.manual_seed(0)
    m = ncd.load("mgno", C=6, Cin=2)
    for name, fan_in in (("mg.S0", 2 * 9), ("mg.pre1.A", 6 * 9), ("layers.0.mg.R0", 6 * 9), ("mg.P0", 6 * 16),
                         ("W", 2), ("b", 2), ("layers.1.W", 6)):
        p = m.get_parameter(name)
        assert p.abs().max() <= fan_in ** -0.5 and p.abs().max() > 0.5 * fan_in ** -0.5, name
