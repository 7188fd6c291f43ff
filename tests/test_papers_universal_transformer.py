"""universal_transformer (Dehghani et al. 2018) against torch and plain loops written here.

- Fixed depth: one nn.TransformerEncoderLayer (post-LN, ReLU, no dropout) applied S times to
  H + Pᵗ with the paper's position + timing signal, the layer's weights ported with
  ncd.interop.load_torch; outputs and the input's gradient.
- ACT: per-position loops written from Graves (2016) (mixture Σ pₙ sₙ with the remainder at the
  halting step or at the last step, ponder N + R) and from the Universal Transformer's
  tensor2tensor description (acc ← sₙ wₙ + acc (1 − wₙ), no remainder at the maximum), the
  halting probability read from the step's input; invariants: Graves' weights sum to 1 and
  ponder ∈ [1, S + 1]. Float64.
"""
from __future__ import annotations

import random

import pytest
import torch
from papers_checks import randomise
from torch import nn

import ncd
from ncd.interop import load_torch

SEEDS = [0, 1, 2]
EPS = 0.01


def signal(T, D, t):
    """Pᵗ: sin/cos of position i and step t at frequencies 10000^(−2j/D), interleaved."""
    freq = 10000.0 ** (-2 * torch.arange(D // 2, dtype=torch.float64) / D)
    pos = torch.arange(T, dtype=torch.float64)[:, None] * freq
    step = t * freq
    out = torch.empty(T, D, dtype=torch.float64)
    out[:, 0::2] = torch.sin(pos) + torch.sin(step)
    out[:, 1::2] = torch.cos(pos) + torch.cos(step)
    return out


def model(seed):
    rng = random.Random(seed)
    H = rng.randint(1, 3)
    n = dict(D=2 * H * rng.randint(1, 2), H=H, F=rng.randint(2, 8), S=rng.randint(1, 5))
    torch.manual_seed(seed)
    m = ncd.load("universal_transformer", **n).double()
    randomise(m, 0.3)
    ref = nn.TransformerEncoderLayer(n["D"], n["H"], n["F"], dropout=0.0, batch_first=True).double()
    with torch.no_grad():
        for p in ref.parameters():
            p.normal_(0, 0.3)
    load_torch(m.layer, ref)
    return m, ref, n, rng.randint(1, 3), rng.randint(1, 6)


@pytest.mark.parametrize("seed", SEEDS)
def test_fixed_depth_is_one_encoder_layer_applied_s_times(seed):
    m, ref, n, B, T = model(seed)
    x = torch.randn(B, T, n["D"], dtype=torch.float64, requires_grad=True)
    h = x
    for t in range(1, n["S"] + 1):
        h = ref(h + signal(T, n["D"], t))
    out = m(x)
    torch.testing.assert_close(out, h, rtol=1e-8, atol=1e-8)
    w = torch.randn_like(h)
    g_out, = torch.autograd.grad((out * w).sum(), x)
    g_ref, = torch.autograd.grad((h * w).sum(), x)
    torch.testing.assert_close(g_out, g_ref, rtol=1e-8, atol=1e-8)


def act_loop(m, ref, x, S, form):
    """Per-position ACT over the shared layer: (output [B, T, D], ponder [B, T], weights [S, B, T])."""
    B, T, D = x.shape
    h = x
    cum = torch.zeros(B, T, dtype=torch.float64)
    running = torch.ones(B, T, dtype=torch.bool)
    out = torch.zeros_like(x)
    ponder = torch.zeros(B, T, dtype=torch.float64)
    weights = []
    for n in range(S):
        z = h + signal(T, D, n + 1)
        p = torch.sigmoid(z @ m.w + m.b)
        h = ref(z)
        if form == "graves":
            halts = running & ((cum + p >= 1 - EPS) | (n == S - 1))
        else:
            halts = running & (cum + p > 1 - EPS)
        w = torch.where(halts, 1 - cum, torch.where(running, p, torch.zeros_like(p)))
        ponder = torch.where(halts, n + 1 + (1 - cum), ponder)
        if form == "graves":
            out = out + w[..., None] * h
        else:
            out = h * w[..., None] + out * (1 - w[..., None])
        cum = torch.where(running & ~halts, cum + p, cum)
        running = running & ~halts
        weights.append(w)
    ponder = torch.where(running, torch.full_like(ponder, float(S)), ponder)      # interpolate: no remainder
    return out, ponder, torch.stack(weights)


@pytest.mark.parametrize("form, entry", [("graves", "UTACTGraves"), ("interpolate", "UTACTInterpolate")])
@pytest.mark.parametrize("seed", SEEDS)
def test_act_matches_the_loop_of_its_definition(seed, form, entry):
    m, ref, n, B, T = model(seed)
    act = m.entry(entry)
    x = torch.randn(B, T, n["D"], dtype=torch.float64, requires_grad=True)
    y, ponder = act(x)
    ref_y, ref_ponder, weights = act_loop(m, ref, x, n["S"], form)
    torch.testing.assert_close(y, ref_y, rtol=1e-8, atol=1e-8)
    torch.testing.assert_close(ponder, ref_ponder, rtol=1e-8, atol=1e-8)
    w = torch.randn_like(y)
    g, = torch.autograd.grad((y * w).sum() + ponder.sum(), x)
    g_ref, = torch.autograd.grad((ref_y * w).sum() + ref_ponder.sum(), x)
    torch.testing.assert_close(g, g_ref, rtol=1e-8, atol=1e-8)
    if form == "graves":
        torch.testing.assert_close(weights.sum(0), torch.ones(B, T, dtype=torch.float64))
        assert torch.all(ponder >= 1) and torch.all(ponder <= n["S"] + 1)


def test_entries_share_one_state_dict():
    m = ncd.load("universal_transformer", D=8, H=2, F=16)
    for entry in ("UTACTGraves", "UTACTInterpolate"):
        other = m.entry(entry)
        assert other.state_dict().keys() == m.state_dict().keys()
        assert other.layer.attn.Wq is m.layer.attn.Wq
    assert float(m.b) == 1.0 and torch.all(m.w == 0)                # p = σ(1) ≈ 0.73 at initialisation
