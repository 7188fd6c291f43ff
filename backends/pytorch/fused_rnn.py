"""Scans proved to be standard cells, run on torch's fused RNN operator.

The recurrence pass (ncd/passes/recurrence/cells.py) proved the step to be an Elman, GRU or
LSTM cell and recorded, per gate in torch's order, which of the spec's weights (sliced along
which axes) form W_ih, W_hh and the biases. ``cell_slots`` turns that into plain data; at every
call ``rt.fused_rnn`` slices, permutes and stacks the spec's tensors into torch's flat weights
— differentiable torch ops on the spec's own parameters, so their gradients arrive where the
loop would put them — and calls ``torch.lstm`` / ``torch.gru`` / ``torch.rnn_tanh`` /
``torch.rnn_relu``, the operator ``nn.LSTM`` & co. call (oneDNN on a CPU, cuDNN on a GPU).
The emitted Python calls the same runtime function with the same data, so the two agree bit
for bit.
"""
from __future__ import annotations

from typing import Any

from torch import nn

from ncd.backends.pytorch import runtime
from ncd.backends.pytorch.program import Loop
from ncd.passes.recurrence.plan import CellMatch, WeightRef

Piece = tuple[tuple[tuple[str, int], ...], tuple[str, ...], "str | None", str, float, "float | None", bool]
Slots = list[list[list[tuple["str | None", Piece]]]]  # w_ih, w_hh, b_ih, b_hh → gate → (node, piece)


def cell_slots(cell: CellMatch, axes: dict[str, tuple[str, ...]]) -> Slots:
    """torch's four flat weights as (node id, piece) lists per gate (see rt.rnn_piece). torch adds
    b_ih and b_hh (except under GRU's reset gate, where b_hh is the bias inside r ⊙ (…)), so a
    gate's two biases go one to each."""
    def piece(ref: WeightRef) -> tuple[str | None, Piece]:
        return (ref.node or None, (tuple((a, int(i)) for a, i in ref.selects), tuple(axes.get(ref.node, ())),
                                   ref.in_axis, cell.state_axis, float(ref.coef), ref.value, bool(ref.identity)))

    b_ih, b_hh = [], []
    for g in cell.gates:
        if g.bias_h or (cell.cell == "gru" and g is cell.gates[2]):
            b_ih.append(g.bias), b_hh.append(g.bias_h)
        elif len(g.bias) == 2:
            b_ih.append(g.bias[:1]), b_hh.append(g.bias[1:])
        else:
            b_ih.append(g.bias), b_hh.append([])
    slots = [[g.inp for g in cell.gates], [g.rec for g in cell.gates], b_ih, b_hh]
    return [[[piece(r) for r in refs] for refs in slot] for slot in slots]


def input_dims(cell: CellMatch, axis: str) -> tuple[int, int]:
    """Where the input sequence's scanned and input axes are among its core dims."""
    return cell.input_axes.index(axis), cell.input_axes.index(cell.input_axis or cell.state_axis)


class FusedRNN:
    """One scan statement run by torch's fused RNN operator."""

    def __init__(self, loop: Loop, inits: list[Any], compile_expr: Any) -> None:
        self.loop = loop
        self.cell: CellMatch = loop.plan.cell
        self.inits = inits
        self.values = {node: compile_expr(expr) for node, expr in loop.cell_values.items()}
        self.slots = cell_slots(self.cell, loop.cell_axes)
        self.dims = input_dims(self.cell, loop.plan.axis)
        self.implementation = "torch's fused RNN operator"

    def __call__(self, env: dict[str, Any], m: nn.Module) -> Any:
        cell, values = self.cell, self.values
        from ncd.backends.pytorch.module import carry_finals, carry_inits

        slots = [[[(values[n](env, m) if n else None, p) for n, p in gate] for gate in slot] for slot in self.slots]
        out, finals = runtime.fused_rnn(cell.cell, values[cell.input](env, m), self.dims,
                                        carry_inits(self.loop, self.inits, env, m), cell.hidden, cell.cell_carry,
                                        self.loop.reverse, m.training, slots, with_state=True)
        carry_finals(self.loop, finals, m)
        return out
