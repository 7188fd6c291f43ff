"""pointer_net (Vinyals et al. 2015) against nn.LSTM / nn.LSTMCell (the spec's weights mapped into
torch's layout and run through torch.func.functional_call, so gradients reach the spec's tensors)
and the additive attention u_j = vᵀ tanh(W₁ e_j + W₂ d_i) written here from the paper's equations.
Teacher-forced log-probabilities with gradients, greedy masked decoding (a permutation, the same
tour and log-probabilities as the loop), and the two entries sharing one state_dict. Float64.
"""
from __future__ import annotations

import random

import pytest
import torch
from papers_checks import assert_same_with_grads, randomise
from torch import nn
from torch.func import functional_call

import ncd

SEEDS = [0, 1, 2]


def torch_weights(m, lstm, suffix=""):
    """The spec's [E, G, D] / [D', G, D] / [G, D] gate weights as torch's [4D, E] / [4D, D] / [4D]."""
    get = lambda name: m.get_parameter(f"{lstm}_{name}")  # noqa: E731
    G, D = get("b_ih").shape
    return {f"weight_ih{suffix}": get("W_ih").permute(1, 2, 0).reshape(G * D, -1),
            f"weight_hh{suffix}": get("W_hh").permute(1, 2, 0).reshape(G * D, -1),
            f"bias_ih{suffix}": get("b_ih").reshape(-1), f"bias_hh{suffix}": get("b_hh").reshape(-1)}


def encode(m, x):
    E, D = x.shape[-1], m.dec_b_ih.shape[1]
    lstm = nn.LSTM(E, D, batch_first=True).double()
    es, (h, c) = functional_call(lstm, torch_weights(m, "enc", "_l0"), (x,))
    return es, h[0], c[0]


def decode(m, x, target=None):
    """Teacher-forced (target given) or greedy masked decoding; log-probabilities [B, T, T] (and the tour)."""
    es, d, c = encode(m, x)
    B, T, E = x.shape
    cell = nn.LSTMCell(E, d.shape[-1]).double()
    weights = torch_weights(m, "dec")
    keys = es @ m.W1                                              # W₁ e_j: [B, T', K]
    inp = m.start.expand(B, E)
    visited = torch.zeros(B, T, dtype=torch.bool)
    logps, tour = [], []
    for i in range(T):
        d, c = functional_call(cell, weights, (inp, (d, c)))
        u = torch.tanh(keys + (d @ m.scores.W2)[:, None, :]) @ m.scores.v        # [B, T']
        if target is None:
            u = u.masked_fill(visited, float("-inf"))
            pick = u.argmax(-1)
            visited = visited | nn.functional.one_hot(pick, T).bool()
            tour.append(pick)
        else:
            pick = target[:, i]
        logps.append(torch.log_softmax(u, -1))
        inp = x[torch.arange(B), pick]
    return torch.stack(logps, 1), (torch.stack(tour, 1) if tour else None)


def sizes(seed):
    rng = random.Random(seed)
    return dict(T=rng.randint(2, 6), D=rng.randint(1, 5), K=rng.randint(1, 4)), rng.randint(1, 3)


@pytest.mark.parametrize("seed", SEEDS)
def test_teacher_forced_matches_lstm_and_attention(seed):
    n, B = sizes(seed)
    torch.manual_seed(seed)
    m = ncd.load("pointer_net", **n).double()
    randomise(m, 0.3)
    x = torch.rand(B, n["T"], 2, dtype=torch.float64, requires_grad=True)
    target = torch.stack([torch.randperm(n["T"]) for _ in range(B)])
    ref, _ = decode(m, x, target)
    assert_same_with_grads(m, (x, target), m(x, target), ref)


@pytest.mark.parametrize("seed", SEEDS)
def test_greedy_decoding_is_masked_argmax_and_a_permutation(seed):
    n, B = sizes(seed)
    torch.manual_seed(seed)
    m = ncd.load("pointer_net", **n).double()
    randomise(m, 0.3)
    greedy = m.entry("Greedy")
    x = torch.rand(B + 3, n["T"], 2, dtype=torch.float64)
    logp, tour = greedy(x)
    assert tour.dtype in (torch.int64, torch.int32)
    for row in tour:
        assert sorted(row.tolist()) == list(range(n["T"]))
    ref_logp, ref_tour = decode(m, x)
    assert torch.equal(tour, ref_tour)
    torch.testing.assert_close(logp, ref_logp, rtol=1e-8, atol=1e-8)


def test_entries_share_one_state_dict():
    m = ncd.load("pointer_net", D=8, K=6)
    greedy = m.entry("Greedy")
    assert greedy.state_dict().keys() == m.state_dict().keys()
    for name, p in greedy.named_parameters():
        assert p is m.get_parameter(name)
    fresh = ncd.load("pointer_net", block="Greedy", D=8, K=6)
    fresh.load_state_dict(m.state_dict())
    x = torch.rand(4, 5, 2)
    assert torch.equal(fresh(x)[1], greedy(x)[1])
    with torch.no_grad():                                           # training the forced entry moves greedy's weights
        m.scores.v.add_(1.0)
    assert torch.equal(greedy.scores.v, m.scores.v)

