"""The sparse RNN specs (Darji 2024) against torch.nn.RNN / GRU / LSTM pruned with
torch.nn.utils.prune.custom_from_mask on the same masks in torch's gate layout, in float64 at
random sizes: outputs, gradients, and pruned weights' gradients exactly 0. Masks from weight
magnitude and from Watts–Strogatz / Barabási–Albert graphs (networkx).
"""
from __future__ import annotations

import random

import networkx as nx
import pytest
import torch
from torch import nn
from torch.nn.utils import prune

import ncd
from ncd.training.masks import fill_graph_masks, graph_mask, magnitude_mask, per_gate

TOL = dict(rtol=1e-10, atol=1e-10)
CASES = {"sparse_rnn_tanh": (nn.RNN, dict(nonlinearity="tanh"), 1),
         "sparse_rnn_relu": (nn.RNN, dict(nonlinearity="relu"), 1),
         "sparse_gru": (nn.GRU, {}, 3),
         "sparse_lstm": (nn.LSTM, {}, 4)}


def to_spec(w: torch.Tensor, gates: int) -> torch.Tensor:
    """torch's [G·D, I] (gates stacked on rows) → the spec's [I, D] or [I, G, D]."""
    if gates == 1:
        return w.T
    return w.reshape(gates, -1, w.shape[1]).permute(2, 0, 1)


def masks_for(ref: nn.RNNBase, how: str, rng: random.Random, gates: int) -> dict[str, torch.Tensor]:
    """Masks in torch's layout for weight_ih_l0 and weight_hh_l0."""
    out = {}
    for i, name in enumerate(("weight_ih_l0", "weight_hh_l0")):
        w = getattr(ref, name)
        D, I = w.shape[0] // gates, w.shape[1]
        if how == "magnitude":
            out[name] = magnitude_mask(w, rng.choice([0.3, 0.6, 0.9]))
        else:
            kind = "watts_strogatz" if how == "ws" else "barabasi_albert"
            g = graph_mask(I, D, kind, dtype=w.dtype, seed=i, k=2, p=0.3, m=1)   # [I, D]
            out[name] = g.T.repeat(gates, 1)                                    # [G·D, I]
    return out


@pytest.mark.parametrize("how", ["magnitude", "ws", "ba"])
@pytest.mark.parametrize("name", list(CASES))
def test_sparse_rnn_matches_pruned_torch_rnn(name, how):
    cls, kwargs, gates = CASES[name]
    rng = random.Random(f"{name}-{how}")
    E, D, T, B = rng.randint(1, 6), rng.randint(2, 7), rng.randint(1, 6), rng.randint(1, 3)
    torch.manual_seed(rng.randint(0, 1000))
    ref = cls(E, D, batch_first=True, **kwargs).double()
    masks = masks_for(ref, how, rng, gates)
    for pname, mask in masks.items():
        prune.custom_from_mask(ref, pname, mask)

    m = ncd.load(name, E=E, D=D).double()
    with torch.no_grad():
        m.W_ih.copy_(to_spec(ref.weight_ih_l0_orig, gates))
        m.W_hh.copy_(to_spec(ref.weight_hh_l0_orig, gates))
        m.M_ih.copy_(to_spec(masks["weight_ih_l0"], gates))
        m.M_hh.copy_(to_spec(masks["weight_hh_l0"], gates))
        for b in ("b_ih", "b_hh"):
            bias = getattr(ref, b.replace("b_", "bias_") + "_l0")
            getattr(m, b).copy_(bias if gates == 1 else bias.view(gates, D))

    x = torch.randn(B, T, E, dtype=torch.float64, requires_grad=True)
    out = m(x)
    want = ref(x)[0]
    torch.testing.assert_close(out, want, **TOL)

    w = torch.randn_like(want)
    got = torch.autograd.grad((out * w).sum(), [x, m.W_ih, m.W_hh, m.b_ih, m.b_hh])
    exp = torch.autograd.grad((want * w).sum(), [x, ref.weight_ih_l0_orig, ref.weight_hh_l0_orig,
                                                   ref.bias_ih_l0, ref.bias_hh_l0])
    exp = [exp[0], to_spec(exp[1], gates), to_spec(exp[2], gates),
           exp[3] if gates == 1 else exp[3].view(gates, D), exp[4] if gates == 1 else exp[4].view(gates, D)]
    for label, g, e in zip(["x", "W_ih", "W_hh", "b_ih", "b_hh"], got, exp):
        torch.testing.assert_close(g, e, **TOL, msg=lambda msg, label=label: f"gradient of {label}: {msg}")
    assert torch.all(got[1][m.M_ih == 0] == 0) and torch.all(got[2][m.M_hh == 0] == 0)


@pytest.mark.parametrize("kind", ["watts_strogatz", "barabasi_albert"])
def test_graph_mask_is_the_graphs_adjacency(kind):
    n = 9
    mask = graph_mask(n, n, kind, seed=3, k=4, p=0.2, m=2)
    graph = (nx.watts_strogatz_graph(n, 4, 0.2, seed=3) if kind == "watts_strogatz"
             else nx.barabasi_albert_graph(n, 2, seed=3))
    for i in range(n):
        for j in range(n):
            assert mask[i, j] == float(i == j or graph.has_edge(i, j))
    assert torch.equal(graph_mask(4, n, kind, seed=3, k=4, p=0.2, m=2), mask[:4])


def test_fill_graph_masks_writes_every_gate():
    m = ncd.load("sparse_lstm", E=3, D=6)
    written = fill_graph_masks(m, "watts_strogatz", seed=1, k=2, p=0.5)
    assert torch.equal(m.M_hh, written["M_hh"]) and m.M_hh.shape == (6, 4, 6)
    assert torch.equal(m.M_hh, per_gate(graph_mask(6, 6, "watts_strogatz", seed=2, k=2, p=0.5), 4))
    assert 0 < float(m.M_hh.mean()) < 1
