"""paragru and paralstm against pararnn-torch's ParaGRU / ParaLSTM cells (PyPI) unrolled by its
sequential oracle `pararnn.sequential_apply`, same weights, float64, random sizes.

Where the parametrisations match, and where they do not:
- gates and state update are the same equations (ParaGRU: z, r, n with h' = lerp(h, n, z);
  ParaLSTM: CIFG with peepholes, i = 1 − f), W_x's chunks ordered (z, r, n) and (f, z, o);
- pararnn's input projection W_x is dense, ours block-diagonal over H heads: equal at H = 1, and at
  H > 1 with W_x's off-head blocks set to 0 (their gradients then differ, ours has none there);
- pararnn clamps the diagonal recurrent vectors (and peepholes) to ±max_recurrent_norm = 0.5
  (its App. C.1); our specs do not clamp. The references run with max_recurrent_norm=None, and a
  second case keeps pararnn's default clamp with every recurrent weight inside ±0.5.
"""
from __future__ import annotations

import random

import pytest
import torch

import ncd

pararnn = pytest.importorskip("pararnn")
TOL = dict(rtol=1e-10, atol=1e-10)


def dense_from_heads(blocks: list[torch.Tensor]) -> torch.Tensor:
    """Per gate [H, J, K] head blocks → W_x.weight [n_gates·D, E] (block-diagonal per gate)."""
    return torch.cat([torch.block_diag(*b.unbind(0)).T for b in blocks], dim=0)


def sizes(seed: int) -> dict[str, int]:
    rng = random.Random(seed)
    H = rng.choice([1, 1, 2, 3])
    return dict(H=H, E=H * rng.randint(1, 3), D=H * rng.randint(1, 3), T=rng.randint(1, 7), B=rng.randint(1, 3))


def check(m, cell, x, out, ref, pairs):
    torch.testing.assert_close(out, ref, **TOL)
    w = torch.randn_like(ref)
    ours = [x] + [getattr(m, a) for a, _ in pairs]
    theirs = [x] + [getattr(cell, b) for _, b in pairs]
    got = torch.autograd.grad((out * w).sum(), ours)
    want = torch.autograd.grad((ref * w).sum(), theirs)
    for name, g, e in zip(["x", *(a for a, _ in pairs)], got, want):
        torch.testing.assert_close(g, e, **TOL, msg=lambda msg, name=name: f"gradient of {name}: {msg}")


@pytest.mark.parametrize("clamped", [False, True])
@pytest.mark.parametrize("seed", range(3))
def test_paragru_matches_pararnn_torch(seed, clamped):
    n = sizes(seed)
    torch.manual_seed(seed)
    m = ncd.load("paragru", E=n["E"], D=n["D"], H=n["H"]).double()
    cell = pararnn.ParaGRU(n["E"], n["D"], max_recurrent_norm=0.5 if clamped else None, dtype=torch.float64)
    with torch.no_grad():
        if clamped:
            for a in (m.a_z, m.a_r, m.a_h):
                a.uniform_(-0.49, 0.49)
        cell.a_z.copy_(m.a_z)
        cell.a_r.copy_(m.a_r)
        cell.a_n.copy_(m.a_h)
        cell.W_x.weight.copy_(dense_from_heads([m.B_z, m.B_r, m.B_h]))
        cell.W_x.bias.copy_(torch.cat([m.b_z, m.b_r, m.b_h]))
    x = torch.randn(n["B"], n["T"], n["E"], dtype=torch.float64, requires_grad=True)
    ref = pararnn.sequential_apply(cell, x)
    check(m, cell, x, m(x), ref, [("a_z", "a_z"), ("a_r", "a_r"), ("a_h", "a_n")])


@pytest.mark.parametrize("clamped", [False, True])
@pytest.mark.parametrize("seed", range(3))
def test_paralstm_matches_pararnn_torch(seed, clamped):
    n = sizes(seed + 5)
    torch.manual_seed(seed)
    m = ncd.load("paralstm", E=n["E"], D=n["D"], H=n["H"]).double()
    cell = pararnn.ParaLSTM(n["E"], n["D"], max_recurrent_norm=0.5 if clamped else None, dtype=torch.float64)
    with torch.no_grad():
        if clamped:
            for a in (m.a_f, m.a_c, m.a_o, m.p_f, m.p_o):
                a.uniform_(-0.49, 0.49)
        for ours, theirs in (("a_f", "a_f"), ("a_c", "a_z"), ("a_o", "a_o"), ("p_f", "c_f"), ("p_o", "c_o")):
            getattr(cell, theirs).copy_(getattr(m, ours))
        cell.W_x.weight.copy_(dense_from_heads([m.B_f, m.B_c, m.B_o]))
        cell.W_x.bias.copy_(torch.cat([m.b_f, m.b_c, m.b_o]))
    x = torch.randn(n["B"], n["T"], n["E"], dtype=torch.float64, requires_grad=True)
    ref = pararnn.sequential_apply(cell, x)[..., 1, :]            # state slots (c, h): h
    check(m, cell, x, m(x), ref, [("a_f", "a_f"), ("a_c", "a_z"), ("a_o", "a_o"), ("p_f", "c_f"), ("p_o", "c_o")])


def test_input_projection_gradient_matches_on_the_head_blocks():
    torch.manual_seed(0)
    m = ncd.load("paragru", E=4, D=6, H=2).double()
    cell = pararnn.ParaGRU(4, 6, max_recurrent_norm=None, dtype=torch.float64)
    with torch.no_grad():
        cell.a_z.copy_(m.a_z)
        cell.a_r.copy_(m.a_r)
        cell.a_n.copy_(m.a_h)
        cell.W_x.weight.copy_(dense_from_heads([m.B_z, m.B_r, m.B_h]))
        cell.W_x.bias.copy_(torch.cat([m.b_z, m.b_r, m.b_h]))
    x = torch.randn(2, 5, 4, dtype=torch.float64)
    out, ref = m(x), pararnn.sequential_apply(cell, x)
    w = torch.randn_like(ref)
    g_ours = torch.autograd.grad((out * w).sum(), [m.B_z, m.B_r, m.B_h, m.b_z])
    g_dense, g_bias = torch.autograd.grad((ref * w).sum(), [cell.W_x.weight, cell.W_x.bias])
    on_blocks = dense_from_heads(list(g_ours[:3]))
    mask = dense_from_heads([torch.ones_like(m.B_z)] * 3) != 0
    torch.testing.assert_close(g_dense[mask], on_blocks[mask], **TOL)
    torch.testing.assert_close(g_bias[:6], g_ours[3], **TOL)
