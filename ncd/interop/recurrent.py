"""Weight mappings for torch.nn.RNN / GRU / LSTM into the recurrent library specs.

The specs (specs/rnn_tanh, rnn_relu, gru, lstm, bilstm .ncd) build an entry out of layer
instances ``l1, l2, …`` of one layer block (``RNNTanhLayer``, ``RNNReLULayer``, ``GRULayer``,
``LSTMLayer``, ``BiLSTMLayer``); the entry block picks the depth (``LSTM`` one layer, ``LSTM2``
two: ``ncd.load("lstm", block="LSTM2")``). torch's stacked gate rows become a named gate axis G:

    W_ih[I, G, D]  = weight_ih_l{k}.view(G, D, I).permute(2, 0, 1)   (RNN: weight_ih_l{k}.T, no G)
    W_hh[D', G, D] = weight_hh_l{k}.view(G, D, D).permute(2, 0, 1)
    b_ih[G, D]     = bias_ih_l{k}.view(G, D)                          (b_hh likewise)

with G in torch's order (GRU r, z, n; LSTM i, f, g, o) and ``*_rev`` ← ``*_l{k}_reverse``.

Checked, each mismatch an NcdError: the cell kind (RNN nonlinearity, GRU, LSTM; read from the
layer block's name), input and hidden sizes, num_layers against the number of layer instances,
bidirectional, bias=False (the specs always carry both biases) and proj_size > 0 (not expressed).
Accepted as is: ``batch_first`` (only the reference's calling convention — compiled specs always
take batch-first [B, T, E] input) and ``dropout`` (training-time only; outputs agree in eval mode).
"""
from __future__ import annotations

import torch
from torch import nn

from ncd.errors import NcdError

_GATES = {"RNN_TANH": 1, "RNN_RELU": 1, "GRU": 3, "LSTM": 4}
_LAYER_BLOCKS = {"RNN_TANH": ("RNNTanhLayer",), "RNN_RELU": ("RNNReLULayer",), "GRU": ("GRULayer",),
                 "LSTM": ("LSTMLayer", "BiLSTMLayer")}
_SPEC = {"RNN_TANH": "rnn_tanh", "RNN_RELU": "rnn_relu", "GRU": "gru", "LSTM": "lstm or bilstm"}


def _deep_block(reference: nn.RNNBase) -> str:
    """The library's two-layer entry block for this reference."""
    base = {"RNN_TANH": "RNNTanh", "RNN_RELU": "RNNReLU", "GRU": "GRU", "LSTM": "LSTM"}[reference.mode]
    return ("Bi" if reference.bidirectional else "") + base + "2"


def _block_name(module: nn.Module) -> str:
    return str(getattr(module, "_ncd_block", "")).split("[", 1)[0]


def _layers(compiled: nn.Module) -> list[nn.Module]:
    """The spec's layer instances, in order: l1, l2, … (or the module itself if it is one layer)."""
    if hasattr(compiled, "W_ih"):
        return [compiled]
    layers = []
    while hasattr(compiled, f"l{len(layers) + 1}"):
        layers.append(getattr(compiled, f"l{len(layers) + 1}"))
    if not layers:
        raise NcdError(f"compiled block {_block_name(compiled) or type(compiled).__name__} has no recurrent layers "
                       "(expected instances l1, l2, … of a layer block)",
                       hint="load a recurrent library spec: rnn_tanh, rnn_relu, gru, lstm, bilstm")
    return layers


def _copy(layer: nn.Module, name: str, value: torch.Tensor, where: str) -> None:
    target = getattr(layer, name, None)
    if target is None:
        raise NcdError(f"{where}: the spec has no parameter {name}")
    if tuple(target.shape) != tuple(value.shape):
        raise NcdError(f"{where}: parameter {name} has shape {tuple(target.shape)} but the reference gives "
                       f"{tuple(value.shape)}",
                       hint="bind the spec's sizes to the reference's (ncd.load(spec, E=..., D=...))")
    with torch.no_grad():
        target.copy_(value)


def _gate_weight(w: torch.Tensor, gates: int) -> torch.Tensor:
    """torch's [G*D, I] (gate rows stacked) → the spec's [I, G, D] (or [I, D] without gates)."""
    if gates == 1:
        return w.t()
    return w.reshape(gates, w.shape[0] // gates, w.shape[1]).permute(2, 0, 1)


def _gate_bias(b: torch.Tensor, gates: int) -> torch.Tensor:
    return b if gates == 1 else b.reshape(gates, b.shape[0] // gates)


def _load(compiled: nn.Module, reference: nn.RNNBase) -> None:
    mode = reference.mode
    ref_name = type(reference).__name__
    if mode.startswith("RNN_"):
        ref_name += f"(nonlinearity={reference.nonlinearity!r})"
    layers = _layers(compiled)
    blocks = {_block_name(layer) for layer in layers}
    if not blocks <= set(_LAYER_BLOCKS[mode]):
        got = ", ".join(sorted(blocks))
        raise NcdError(f"cannot load {ref_name} into layers of block {got}: different cell",
                       hint=f"load the {_SPEC[mode]} spec for this reference")
    if reference.proj_size:
        raise NcdError(f"{ref_name} has proj_size={reference.proj_size}; the spec has no output projection",
                       hint="use a reference with proj_size=0")
    if not reference.bias:
        raise NcdError(f"{ref_name} has bias=False; the spec always has both biases b_ih and b_hh",
                       hint="use a reference with bias=True (or zero the spec's biases after loading)")
    if reference.num_layers != len(layers):
        raise NcdError(f"{ref_name} has num_layers={reference.num_layers} but the compiled spec stacks "
                       f"{len(layers)} layer(s)",
                       hint=f"pick the entry block of that depth: ncd.load(spec, block={_deep_block(reference)!r})"
                       if reference.num_layers == 2 else "the library specs provide one and two layers")
    spec_bidir = "BiLSTMLayer" in blocks
    if reference.bidirectional != spec_bidir:
        raise NcdError(f"{ref_name} has bidirectional={reference.bidirectional} but the spec is "
                       f"{'bidirectional' if spec_bidir else 'one-directional'}",
                       hint="load the bilstm spec for a bidirectional LSTM, lstm for a one-directional one")
    gates = _GATES[mode]
    for k, layer in enumerate(layers):
        where = f"layer l{k + 1}"
        hidden = getattr(layer, "W_hh").shape[-1]
        if hidden != reference.hidden_size:
            raise NcdError(f"{where}: the spec's hidden size D is {hidden} but {ref_name} has "
                           f"hidden_size={reference.hidden_size}", hint=f"ncd.load(spec, D={reference.hidden_size})")
        ref_in = getattr(reference, f"weight_ih_l{k}").shape[1]
        spec_in = getattr(layer, "W_ih").shape[0]
        if spec_in != ref_in:
            axis = "E" if k == 0 else "its input axis"
            raise NcdError(f"{where}: the spec's input size ({axis}) is {spec_in} but the reference's is {ref_in}",
                           hint=f"ncd.load(spec, E={reference.input_size})" if k == 0 else
                           "the layers of the spec and the reference are stacked differently")
    for k, layer in enumerate(layers):          # copy only once every check has passed
        where = f"layer l{k + 1}"
        for suffix, ours in (("", ""), ("_reverse", "_rev")) if spec_bidir else (("", ""),):
            for kind in ("ih", "hh"):
                _copy(layer, f"W_{kind}{ours}", _gate_weight(getattr(reference, f"weight_{kind}_l{k}{suffix}"), gates),
                      where)
                _copy(layer, f"b_{kind}{ours}", _gate_bias(getattr(reference, f"bias_{kind}_l{k}{suffix}"), gates),
                      where)


HANDLERS: dict = {nn.RNN: _load, nn.GRU: _load, nn.LSTM: _load}
