"""rnn_tanh, rnn_relu, gru, lstm and bilstm against torch.nn.RNN / GRU / LSTM, weights ported by
``ncd.interop.load_torch``; and every structural mismatch refused with an NcdError.

The oracle is torch's own implementation (batch_first=True, float64). Outputs and the gradients
with respect to the input and every parameter agree to 1e-10: the spec's gradients are compared
with the reference's, mapped through the same layout (gate rows → gate axis G, transposes).
"""
from __future__ import annotations

import random

import pytest
import torch
from torch import nn

import ncd
from ncd.interop import load_torch

TOL = dict(rtol=1e-10, atol=1e-10)
G = {"RNN_TANH": 1, "RNN_RELU": 1, "GRU": 3, "LSTM": 4}

# (spec, entry block or None, torch class, torch kwargs)
CASES = {
    "rnn_tanh": ("rnn_tanh", None, nn.RNN, {}),
    "rnn_relu": ("rnn_relu", None, nn.RNN, {"nonlinearity": "relu"}),
    "gru": ("gru", None, nn.GRU, {}),
    "lstm": ("lstm", None, nn.LSTM, {}),
    "bilstm": ("bilstm", None, nn.LSTM, {"bidirectional": True}),
    "rnn_tanh-2layer": ("rnn_tanh", "RNNTanh2", nn.RNN, {"num_layers": 2}),
    "gru-2layer": ("gru", "GRU2", nn.GRU, {"num_layers": 2}),
    "lstm-2layer": ("lstm", "LSTM2", nn.LSTM, {"num_layers": 2}),
    "bilstm-2layer": ("bilstm", "BiLSTM2", nn.LSTM, {"bidirectional": True, "num_layers": 2}),
}


def ours(reference: nn.RNNBase, torch_name: str) -> str:
    """Where torch's parameter lives in the spec: weight_ih_l1_reverse → l2.W_ih_rev."""
    kind, part, layer, *rev = torch_name.split("_")
    prefix = {"weight": "W", "bias": "b"}[kind]
    return f"l{int(layer[1:]) + 1}.{prefix}_{part}{'_rev' if rev else ''}"


def to_spec_layout(t: torch.Tensor, gates: int) -> torch.Tensor:
    if t.dim() == 1:
        return t if gates == 1 else t.reshape(gates, -1)
    return t.t() if gates == 1 else t.reshape(gates, t.shape[0] // gates, t.shape[1]).permute(2, 0, 1)


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("case", list(CASES))
def test_matches_torch(case, seed):
    spec, block, cls, kwargs = CASES[case]
    rng = random.Random(seed)
    B, T, E, D = rng.randint(1, 3), rng.randint(1, 6), rng.randint(1, 5), rng.randint(1, 5)
    torch.manual_seed(seed)
    reference = cls(E, D, batch_first=True, **kwargs).double()
    compiled = load_torch(ncd.load(spec, block=block, E=E, D=D).double(), reference)

    x = torch.randn(B, T, E, dtype=torch.float64, requires_grad=True)
    out, want = compiled(x), reference(x)[0]
    torch.testing.assert_close(out, want, **TOL)

    w = torch.randn_like(want)
    ref_names, ref_params = zip(*reference.named_parameters())
    got = dict(zip(("input", *(n for n, _ in compiled.named_parameters())),
                   torch.autograd.grad((out * w).sum(), (x, *compiled.parameters()))))
    expected = torch.autograd.grad((want * w).sum(), (x, *ref_params))
    assert len(got) == len(expected)
    torch.testing.assert_close(got["input"], expected[0], **TOL)
    for name, g in zip(ref_names, expected[1:]):
        torch.testing.assert_close(got[ours(reference, name)], to_spec_layout(g, G[reference.mode]), **TOL,
                                   msg=lambda m, name=name: f"gradient of {name}: {m}")


def test_unbatched_input_and_time_major_reference():
    """batch_first=False is only the reference's calling convention: the spec stays batch-first."""
    torch.manual_seed(0)
    reference = nn.LSTM(3, 4).double()                       # time-major
    compiled = load_torch(ncd.load("lstm", E=3, D=4).double(), reference)
    x = torch.randn(2, 5, 3, dtype=torch.float64)             # [B, T, E]
    torch.testing.assert_close(compiled(x), reference(x.transpose(0, 1))[0].transpose(0, 1), **TOL)
    torch.testing.assert_close(compiled(x[0]), reference(x[0])[0], **TOL)   # unbatched [T, E]


def test_returns_the_compiled_module_and_copies_in_place():
    reference = nn.GRU(2, 3, batch_first=True)
    compiled = ncd.load("gru", E=2, D=3)
    assert load_torch(compiled, reference) is compiled
    torch.testing.assert_close(compiled.l1.b_hh, reference.bias_hh_l0.detach().reshape(3, 3))
    torch.testing.assert_close(compiled.l1.W_ih[:, 1], reference.weight_ih_l0.detach()[3:6].t())   # z rows


# ---------------------------------------------------------------- mismatches
MISMATCHES = {
    "hidden size": ("lstm", None, nn.LSTM(3, 5), "hidden_size=5"),
    "input size": ("lstm", None, nn.LSTM(2, 4), "input size"),
    "num_layers": ("lstm", None, nn.LSTM(3, 4, num_layers=2), "num_layers=2"),
    "one layer into two": ("lstm", "LSTM2", nn.LSTM(3, 4), "num_layers=1"),
    "bidirectional": ("lstm", None, nn.LSTM(3, 4, bidirectional=True), "bidirectional"),
    "one-directional into bilstm": ("bilstm", None, nn.LSTM(3, 4), "bidirectional"),
    "bidirectional rnn": ("rnn_tanh", None, nn.RNN(3, 4, bidirectional=True), "bidirectional"),
    "bidirectional gru": ("gru", None, nn.GRU(3, 4, bidirectional=True), "bidirectional"),
    "no bias": ("gru", None, nn.GRU(3, 4, bias=False), "bias=False"),
    "proj_size": ("lstm", None, nn.LSTM(3, 4, proj_size=2), "proj_size"),
    "nonlinearity": ("rnn_tanh", None, nn.RNN(3, 4, nonlinearity="relu"), "different cell"),
    "relu into tanh": ("rnn_relu", None, nn.RNN(3, 4), "different cell"),
    "gru into lstm": ("lstm", None, nn.GRU(3, 4), "different cell"),
    "lstm into gru": ("gru", None, nn.LSTM(3, 4), "different cell"),
    "not recurrent": ("paragru", None, nn.LSTM(4, 4), "no recurrent layers"),
    "no mapping": ("lstm", None, nn.LSTMCell(3, 4), "no weight mapping"),
}


@pytest.mark.parametrize("case", list(MISMATCHES))
def test_mismatch_is_an_ncd_error(case):
    spec, block, reference, message = MISMATCHES[case]
    sizes = dict(E=4, D=4, H=2) if spec == "paragru" else dict(E=3, D=4)
    compiled = ncd.load(spec, block=block, **sizes)
    before = {k: v.clone() for k, v in compiled.state_dict().items()}
    with pytest.raises(ncd.NcdError, match=message) as info:
        load_torch(compiled, reference)
    assert info.value.hint
    for k, v in compiled.state_dict().items():      # every check runs before any copy
        assert torch.equal(v, before[k])
