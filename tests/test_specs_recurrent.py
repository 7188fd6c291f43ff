"""The recurrent spec library against loops written here straight from the papers' equations.

leaky_rnn (Khajehabdollahi et al. 2023), paragru and paralstm (ParaRNN, Danieli et al. 2025) have
no torch.nn twin: each oracle below is the paper's recurrence as a plain Python loop over t, on
the compiled module's own parameter tensors, in float64. Outputs and the gradients with respect
to the input and every parameter must agree to 1e-10. (rnn_tanh, rnn_relu, gru, lstm and bilstm
are checked against torch.nn in test_interop_recurrent.py.)
"""
from __future__ import annotations

import random

import pytest
import torch
import torch.nn.functional as F

import ncd
from ncd.library import library_path

RECURRENT = ["rnn_tanh", "rnn_relu", "gru", "lstm", "bilstm", "leaky_rnn", "paragru", "paralstm"]
TOL = dict(rtol=1e-10, atol=1e-10)


def assert_same_with_grads(module: torch.nn.Module, x: torch.Tensor, out: torch.Tensor, ref: torch.Tensor) -> None:
    """Outputs equal, and d<w, out>/d(x, every parameter) equal for a random cotangent w."""
    torch.testing.assert_close(out, ref, **TOL)
    names, params = zip(*module.named_parameters())
    w = torch.randn_like(ref)
    got = torch.autograd.grad((out * w).sum(), (x, *params), retain_graph=True)
    want = torch.autograd.grad((ref * w).sum(), (x, *params))
    for name, g, r in zip(("input", *names), got, want):
        torch.testing.assert_close(g, r, **TOL, msg=lambda m, name=name: f"gradient of {name}: {m}")


def sizes(seed: int, heads: bool = False) -> dict[str, int]:
    rng = random.Random(seed)
    if heads:
        H = rng.randint(1, 3)
        return dict(B=rng.randint(1, 3), T=rng.randint(1, 7), H=H, E=H * rng.randint(1, 3), D=H * rng.randint(1, 3))
    return dict(B=rng.randint(1, 3), T=rng.randint(1, 7), E=rng.randint(1, 5), D=rng.randint(2, 6))


# ---------------------------------------------------------------- the library itself
@pytest.mark.parametrize("name", RECURRENT)
def test_spec_loads(name):
    assert library_path(name) is not None, f"specs/{name}.ncd missing"
    module = ncd.load(name, E=4, D=4, H=2) if name.startswith("para") else ncd.load(name, E=3, D=4)
    assert sum(p.numel() for p in module.parameters()) > 0


# ---------------------------------------------------------------- leaky RNN with time constants
def leaky_rnn_loop(x, W_in, b_in, W, b, tau, W_out, b_out, slope=0.01):
    """r_t = LeakyReLU((1 − 1/τ) r_{t−1} + (W r_{t−1} + b + W_in x_t + b_in)/τ), τ ≥ 1, diag(W) = 0."""
    taus = torch.clamp(tau, min=1.0)
    W_off = W - torch.diag(torch.diagonal(W))           # no self-connection
    r = x.new_zeros(*x.shape[:-2], W.shape[1])
    ys = []
    for t in range(x.shape[-2]):
        r = F.leaky_relu((1 - 1 / taus) * r + (r @ W_off + b + x[..., t, :] @ W_in + b_in) / taus, slope)
        ys.append(r @ W_out + b_out)
    return torch.stack(ys, dim=-2)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_leaky_rnn_matches_equations(seed):
    n = sizes(seed)
    torch.manual_seed(seed)
    m = ncd.load("leaky_rnn", block="LeakyRNN", E=n["E"], D=n["D"]).double()
    with torch.no_grad():
        m.W.normal_(0, 1.0)                              # a non-zero diagonal the mask must remove
        m.b.normal_()
        m.b_in.normal_()
        m.b_out.normal_()
        m.tau.uniform_(0.5, 3.0)                         # some below 1: the clamp must act
    x = torch.randn(n["B"], n["T"], n["E"], dtype=torch.float64, requires_grad=True)
    ref = leaky_rnn_loop(x, m.W_in, m.b_in, m.W, m.b, m.tau, m.W_out, m.b_out)
    assert_same_with_grads(m, x, m(x), ref)


def test_leaky_rnn_mask_and_tap():
    m = ncd.load("leaky_rnn", block="LeakyRNN", E=2, D=5)
    assert "M" not in m.state_dict()                     # a constant, not a trained or saved tensor
    torch.testing.assert_close(m.M, 1 - torch.eye(5))
    seen = []
    m.taps.r.register_forward_hook(lambda mod, args, out: seen.append(out))
    m(torch.randn(3, 4, 2))
    assert seen and seen[0].shape == (3, 4, 5)


# ---------------------------------------------------------------- ParaRNN cells
def block_diag_heads(B: torch.Tensor) -> torch.Tensor:
    """[H, J, K] head blocks → the dense [H J, H K] block-diagonal input matrix."""
    return torch.block_diag(*B.unbind(0))


def paragru_loop(x, m):
    Bz, Br, Bh = (block_diag_heads(getattr(m, f"B_{g}")) for g in "zrh")
    h = x.new_zeros(*x.shape[:-2], Bz.shape[1])
    hs = []
    for t in range(x.shape[-2]):
        xt = x[..., t, :]
        z = torch.sigmoid(m.a_z * h + xt @ Bz + m.b_z)
        r = torch.sigmoid(m.a_r * h + xt @ Br + m.b_r)
        h_hat = torch.tanh(m.a_h * (h * r) + xt @ Bh + m.b_h)
        h = (1 - z) * h + z * h_hat
        hs.append(h)
    return torch.stack(hs, dim=-2)


def paralstm_loop(x, m):
    Bf, Bc, Bo = (block_diag_heads(getattr(m, f"B_{g}")) for g in "fco")
    c = h = x.new_zeros(*x.shape[:-2], Bf.shape[1])
    hs = []
    for t in range(x.shape[-2]):
        xt = x[..., t, :]
        f = torch.sigmoid(m.a_f * h + m.p_f * c + xt @ Bf + m.b_f)
        i = 1 - f
        c_new = f * c + i * torch.tanh(m.a_c * h + xt @ Bc + m.b_c)
        o = torch.sigmoid(m.a_o * h + m.p_o * c_new + xt @ Bo + m.b_o)
        h = o * torch.tanh(c_new)
        c = c_new
        hs.append(h)
    return torch.stack(hs, dim=-2)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("name, loop", [("paragru", paragru_loop), ("paralstm", paralstm_loop)], ids=["gru", "lstm"])
def test_para_cells_match_equations(name, loop, seed):
    n = sizes(seed, heads=True)
    torch.manual_seed(seed)
    m = ncd.load(name, E=n["E"], D=n["D"], H=n["H"]).double()
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(0, 0.8)
    x = torch.randn(n["B"], n["T"], n["E"], dtype=torch.float64, requires_grad=True)
    assert_same_with_grads(m, x, m(x), loop(x, m))


def test_paragru_input_weights_are_block_diagonal_over_heads():
    """Head 0 of the input cannot reach head 1 of the state at the first step."""
    m = ncd.load("paragru", E=4, D=6, H=2).double()
    x = torch.zeros(1, 1, 4, dtype=torch.float64, requires_grad=True)
    h = m(x)
    (g,) = torch.autograd.grad(h[0, 0, 3:].sum(), x)   # state head 1 = units 3..5
    assert torch.all(g[0, 0, :2] == 0) and torch.any(g[0, 0, 2:] != 0)


def test_paralstm_matches_pararnn_reference_cell():
    """Same equations as backends/pararnn/cells.py ParaLSTM (dense W, one head), run sequentially."""
    from ncd.backends.pararnn.cells import ParaLSTM

    torch.manual_seed(3)
    E, D, T = 3, 4, 6
    cell = ParaLSTM(E, D).double()
    m = ncd.load("paralstm", E=E, D=D, H=1).double()
    with torch.no_grad():
        for g, k in zip("fco", range(3)):
            getattr(m, f"B_{g}").copy_(cell.W[:, k * D:(k + 1) * D].unsqueeze(0))
            getattr(m, f"b_{g}").copy_(cell.b[k * D:(k + 1) * D])
            getattr(m, f"a_{g}").copy_(cell.a[k])
        m.p_f.copy_(cell.p[0])
        m.p_o.copy_(cell.p[1])
    x = torch.randn(2, T, E, dtype=torch.float64)
    ref = ParaLSTM.hidden(cell(x, mode="sequential"))
    torch.testing.assert_close(m(x), ref, **TOL)


# ---------------------------------------------------------------- input layouts
@pytest.mark.parametrize("name", RECURRENT)
def test_batch_first_and_unbatched_inputs(name):
    torch.manual_seed(0)
    m = (ncd.load(name, E=4, D=4, H=2) if name.startswith("para") else ncd.load(name, E=4, D=3)).double()
    x = torch.randn(3, 5, 4, dtype=torch.float64)
    y = m(x)
    assert y.shape[:2] == (3, 5)
    torch.testing.assert_close(m(x[1]), y[1], **TOL)                  # [T, E] alone
    torch.testing.assert_close(m(x.reshape(3, 1, 5, 4)), y.reshape(3, 1, *y.shape[1:]), **TOL)  # two lifted axes


def test_wrong_input_width_is_an_ncd_error():
    m = ncd.load("lstm", E=4, D=3)
    with pytest.raises(ncd.NcdError, match="axis E has size 5"):
        m(torch.randn(2, 6, 5))
