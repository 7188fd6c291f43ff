"""rnn_hypernet (dependency-preserving hypernetwork) against nn.LSTM over [task embedding; chunk
embedding] + an nn.Linear head + reshape + the target MLP written in PyTorch, same weights, in
float64 at random sizes (K chunks dividing the target's parameter count): generated weights,
outputs and gradients."""
from __future__ import annotations

import random

import pytest
import torch
from torch import nn

import ncd

TOL = dict(rtol=1e-10, atol=1e-10)


def gates(w: torch.Tensor, Hd: int) -> torch.Tensor:
    """torch's [4·Hd, I] → the spec's [I, G, Hd]."""
    return w.reshape(4, Hd, w.shape[1]).permute(2, 0, 1)


def sizes(rng: random.Random) -> dict[str, int]:
    while True:
        E, F, D = rng.randint(1, 4), rng.randint(1, 5), rng.randint(1, 3)
        P = E * F + F + F * D + D
        divisors = [k for k in range(1, P + 1) if P % k == 0 and k <= 12]
        K = rng.choice(divisors)
        return dict(E=E, F=F, D=D, K=K, NT=rng.randint(1, 4), Et=rng.randint(1, 4), Ec=rng.randint(1, 4),
                    Hd=rng.randint(1, 6))


@pytest.mark.parametrize("seed", range(4))
def test_rnn_hypernet_matches_lstm_head_reshape_target(seed):
    rng = random.Random(seed)
    n = sizes(rng)
    E, F, D, K, Et, Ec, Hd = (n[k] for k in ("E", "F", "D", "K", "Et", "Ec", "Hd"))
    P = E * F + F + F * D + D
    C = P // K
    B = rng.randint(1, 3)
    torch.manual_seed(seed)
    lstm = nn.LSTM(Et + Ec, Hd, batch_first=True).double()
    head = nn.Linear(Hd, C).double()
    task_emb = torch.randn(n["NT"], Et, dtype=torch.float64, requires_grad=True)
    chunk_emb = torch.randn(K, Ec, dtype=torch.float64, requires_grad=True)

    m = ncd.load("rnn_hypernet", **n).double()
    h = m.hyper
    with torch.no_grad():
        h.task_emb.copy_(task_emb)
        h.chunk_emb.copy_(chunk_emb)
        h.W_e.copy_(gates(lstm.weight_ih_l0[:, :Et], Hd))
        h.W_c.copy_(gates(lstm.weight_ih_l0[:, Et:], Hd))
        h.W_hh.copy_(gates(lstm.weight_hh_l0, Hd))
        h.b_ih.copy_(lstm.bias_ih_l0.view(4, Hd))
        h.b_hh.copy_(lstm.bias_hh_l0.view(4, Hd))
        h.W_out.copy_(head.weight.T)
        h.b_out.copy_(head.bias)

    x = torch.randn(B, E, dtype=torch.float64, requires_grad=True)
    task = torch.randint(0, n["NT"], (B,))
    seen = []
    h.taps.theta.register_forward_hook(lambda mod, args, out: seen.append(out))
    out = m(x, task)

    seq = torch.cat([task_emb[task][:, None, :].expand(B, K, Et), chunk_emb.expand(B, K, Ec)], dim=-1)
    theta = head(lstm(seq)[0]).reshape(B, P)                    # concat over chunks, row-major
    torch.testing.assert_close(seen[0], theta, **TOL)
    W1, b1, W2, b2 = theta.split([E * F, F, F * D, D], dim=1)
    hidden = torch.relu(torch.bmm(x[:, None, :], W1.reshape(B, E, F))[:, 0] + b1)
    ref = torch.bmm(hidden[:, None, :], W2.reshape(B, F, D))[:, 0] + b2
    torch.testing.assert_close(out, ref, **TOL)

    w = torch.randn_like(ref)
    got = torch.autograd.grad((out * w).sum(), [x, h.task_emb, h.chunk_emb, h.W_hh, h.W_out, h.b_hh])
    want = torch.autograd.grad((ref * w).sum(), [x, task_emb, chunk_emb, lstm.weight_hh_l0, head.weight,
                                                   lstm.bias_hh_l0])
    torch.testing.assert_close(got[0], want[0], **TOL)
    torch.testing.assert_close(got[1], want[1], **TOL)
    torch.testing.assert_close(got[2], want[2], **TOL)
    torch.testing.assert_close(got[3], gates(want[3], Hd), **TOL)
    torch.testing.assert_close(got[4], want[4].T, **TOL)
    torch.testing.assert_close(got[5], want[5].view(4, Hd), **TOL)


def test_k_must_divide_the_parameter_count():
    with pytest.raises(ncd.NcdError, match="whole number"):
        ncd.check("rnn_hypernet", E=3, F=8, D=2, K=7)
