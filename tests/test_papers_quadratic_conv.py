"""quadratic_conv (Fan et al. 2021, ReLinear's convolutional quadratic block) against torch.

- At the ReLinear initialisation the quadratic convolution is nn.Conv2d (3×3, padding 1) with the
  same weight and bias: outputs and the gradients of the input, W_r and b_r agree;
- off the initialisation, the quadratic convolution and the residual block against the paper's
  formula q(x) = (W_r∗x + b_r)(W_g∗x + b_g) + W_b∗(x⊙x) + b_b written with F.conv2d (the paper is
  the only reference for the block);
- the quadratic terms, which ReLinear trains at a smaller learning rate, are exactly the
  parameters under the prefix `quad.`.
Float64, sizes drawn per seed, outputs and gradients to 1e-8.
"""
from __future__ import annotations

import random

import pytest
import torch
import torch.nn.functional as F
from papers_checks import assert_same_with_grads, randomise
from torch import nn

import ncd

SEEDS = [0, 1, 2]


def qconv_formula(x, q):
    conv = lambda inp, W: F.conv2d(inp, W, padding=1)  # noqa: E731
    r = conv(x, q.Wr) + q.br[:, None, None]
    g = conv(x, q.quad.Wg) + q.quad.bg[:, None, None]
    return r * g + conv(x * x, q.quad.Wb) + q.quad.bb[:, None, None]


def sizes(seed):
    rng = random.Random(seed)
    return rng.randint(1, 4), rng.randint(1, 4), rng.randint(1, 6), rng.randint(1, 6), rng.randint(1, 3)


@pytest.mark.parametrize("seed", SEEDS)
def test_relinear_initialisation_is_a_plain_conv2d(seed):
    C, D, Y, X, B = sizes(seed)
    torch.manual_seed(seed)
    m = ncd.load("quadratic_conv", block="QuadraticConv", C=C, D=D).double()
    q = m.q
    assert torch.all(q.quad.Wg == 0) and torch.all(q.quad.bg == 1)
    assert torch.all(q.quad.Wb == 0) and torch.all(q.quad.bb == 0)
    bound = (C * 9) ** -0.5                                  # nn.Conv2d's default initialisation range
    assert q.Wr.abs().max() <= bound and q.br.abs().max() <= bound
    ref = nn.Conv2d(C, D, 3, padding=1).double()
    with torch.no_grad():
        ref.weight.copy_(q.Wr)
        ref.bias.copy_(q.br)
    x = torch.randn(B, C, Y, X, dtype=torch.float64, requires_grad=True)
    out, want = m(x), ref(x)
    torch.testing.assert_close(out, want, rtol=0, atol=1e-12)
    w = torch.randn_like(want)
    got = torch.autograd.grad((out * w).sum(), (x, q.Wr, q.br))
    exp = torch.autograd.grad((want * w).sum(), (x, ref.weight, ref.bias))
    for g, e in zip(got, exp):
        torch.testing.assert_close(g, e, rtol=0, atol=1e-12)


@pytest.mark.parametrize("seed", SEEDS)
def test_quadratic_conv_matches_formula(seed):
    C, D, Y, X, B = sizes(seed)
    torch.manual_seed(seed)
    m = ncd.load("quadratic_conv", block="QuadraticConv", C=C, D=D).double()
    randomise(m)
    x = torch.randn(B, C, Y, X, dtype=torch.float64, requires_grad=True)
    assert_same_with_grads(m, (x,), m(x), qconv_formula(x, m.q))


@pytest.mark.parametrize("seed", SEEDS)
def test_residual_block_matches_formula(seed):
    C, _, Y, X, B = sizes(seed)
    torch.manual_seed(seed)
    m = ncd.load("quadratic_conv", C=C).double()
    randomise(m)
    x = torch.randn(B, C, Y, X, dtype=torch.float64, requires_grad=True)
    ch = lambda v: v[:, None, None]  # noqa: E731
    h = F.relu(qconv_formula(x, m.q1) * ch(m.gamma1) + ch(m.beta1))
    ref = F.relu(x + qconv_formula(h, m.q2) * ch(m.gamma2) + ch(m.beta2))
    assert_same_with_grads(m, (x,), m(x), ref)


def test_quadratic_terms_are_the_quad_parameter_group():
    m = ncd.load("quadratic_conv", C=3)
    slow = {n for n, _ in m.named_parameters() if ".quad." in f".{n}"}
    assert slow == {f"{q}.quad.{p}" for q in ("q1", "q2") for p in ("Wg", "bg", "Wb", "bb")}
    rest = {n for n, _ in m.named_parameters()} - slow
    assert rest == {"q1.Wr", "q1.br", "q2.Wr", "q2.br", "gamma1", "beta1", "gamma2", "beta2"}
    params = dict(m.named_parameters())
    opt = torch.optim.SGD([{"params": [params[n] for n in sorted(slow)], "lr": 1e-5},
                           {"params": [params[n] for n in sorted(rest)], "lr": 0.1}])
    assert [len(g["params"]) for g in opt.param_groups] == [8, 8]
