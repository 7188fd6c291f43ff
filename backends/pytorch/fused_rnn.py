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

import torch
from torch import nn
from torch.nn.modules import module as torch_module

from ncd.backends.pytorch import runtime
from ncd.backends.pytorch.program import Loop
from ncd.backends.pytorch.varlen import PACKING, segment_of
from ncd.ops.base import SelfAttr
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


def view_plan(slot: list, layout: Any) -> tuple[str, tuple[int, ...] | None, bool] | None:
    """(node, permute order or None, whether the gate and state dims merge): the view
    rt.rnn_permuted takes of one tensor where the gates are in torch's order; None otherwise."""
    if layout is None or layout[1] not in (None, tuple(range(len(layout[1] or ())))):
        return None
    order = layout[0]
    return slot[0][0][0], (order if order != tuple(range(len(order))) else None), layout[1] is not None


def constant_inits(loop: Loop, input_node: str) -> list[tuple[tuple[int, ...], float]] | None:
    """(shape, number) per carry where every initial carry is a number the spec fixes, computed
    as ``rt.new_full(input, shape, number)``: the runner makes them without the expressions."""
    from ncd.ops.base import Call, Ref

    shapes, numbers = loop.state_shapes, loop.state_inits  # a free size is None there
    if len(numbers) != len(loop.inits) or len(shapes) != len(loop.inits):
        return None
    for expr, shape, number in zip(loop.inits, shapes, numbers):
        if not (isinstance(number, float) and isinstance(expr, Call) and expr.fn == "rt.new_full"
                and expr.args[:1] == (Ref(id=input_node),) and all(type(n) is int for n in shape)):
            return None
    return [(tuple(shape), number) for shape, number in zip(shapes, numbers)]


class FusedRNN:
    """One scan statement run by torch's fused RNN operator. What does not change between calls
    is found once, here: which of the spec's values the weights read (each read once per call),
    and for each flat weight the one permute that builds it (rt.rnn_layout) where there is one.
    The flat weights themselves are rebuilt at every call, from the spec's tensors as they are
    then: a copy kept between calls would need to know when a parameter changed, and not every
    in-place update says so (a fused optimizer's step and a write through ``.data`` leave the
    tensor's version counter as it was)."""

    def __init__(self, loop: Loop, inits: list[Any], compile_expr: Any) -> None:
        self.loop = loop
        self.cell: CellMatch = loop.plan.cell
        self.inits = inits
        self.values = {node: compile_expr(expr) for node, expr in loop.cell_values.items()}
        self.input = self.values[self.cell.input]
        self.slots = cell_slots(self.cell, loop.cell_axes)
        one = {node: node for node in self.values}  # one object per node: rnn_layout compares by identity
        self.layouts = [runtime.rnn_layout([[(one.get(n) if n else None, p) for n, p in gate] for gate in slot])
                        for slot in self.slots]
        read = dict.fromkeys(n for slot in self.slots for gate in slot for n, _ in gate if n)
        self.reads = [(node, self.values[node]) for node in read]
        self.dims = input_dims(self.cell, loop.plan.axis)
        self.views = [view_plan(slot, layout) for slot, layout in zip(self.slots, self.layouts)]
        self.constants = constant_inits(loop, self.cell.input)
        self.implementation = "torch's fused RNN operator"

    def hold_weights(self, m: nn.Module) -> None:
        """An LSTM's weight parameters stored in torch's layout: each a permuted view, with the
        spec's name, shape and values, of a contiguous [G·D, I] buffer, so the flat weight
        rt.rnn_permuted takes from it is that buffer. oneDNN's LSTM copies a weight that is not
        contiguous, forward and backward, and its weight gradient then arrives in strides the
        parameter's are not (another copy); with the weights held so, neither happens (~20% of
        the call at B1 T32 D32). The other cells' operators read a strided view at no cost.
        Only where the gates are in torch's order (else there is a gather, no view). FSDP2's
        ``fully_shard`` refuses parameters that are not contiguous, so a module built where a
        process group is up keeps them contiguous (CompiledModule.__init__), and one built
        before calls ``CompiledModule.contiguous_parameters`` before sharding."""
        if self.cell.cell != "lstm":
            return
        for view in self.views:
            expr = self.loop.cell_values.get(view[0]) if view is not None else None
            if view is None or view[1] is None or not isinstance(expr, SelfAttr) or "." in expr.path:
                continue
            order = view[1]
            held = m._parameters.get(expr.path)
            if held is None or not held.is_contiguous():
                continue
            flat = held.detach().permute(order).contiguous()
            inverse = tuple(order.index(d) for d in range(len(order)))
            held.data = flat.permute(inverse)

    def weights(self, read: dict[str, Any], size: int, n_in: int, like: torch.Tensor) -> list[torch.Tensor]:
        """torch's four flat weights from this call's values (rt.rnn_weights, the layouts known)."""
        shapes = ((size, n_in), (size, size), (size,), (size,))
        out = []
        for slot, layout, view, shape in zip(self.slots, self.layouts, self.views, shapes):
            if view is not None:  # rt.rnn_permuted's view, its steps known
                node, order, merge = view
                value = read[node]
                if isinstance(value, torch.Tensor) and value.dtype == like.dtype and value.device == like.device:
                    if order is not None:
                        value = value.permute(order)
                    out.append(value.flatten(0, 1) if merge else value)
                    continue
            if layout is not None:
                out.append(runtime.rnn_permuted(read[slot[0][0][0]], layout, like))
            else:
                gates = [[(read[n] if n else None, p) for n, p in gate] for gate in slot]
                out.append(runtime.rnn_weight(gates, size, shape, like, None))
        return out

    def __call__(self, env: dict[str, Any], m: nn.Module) -> Any:
        from ncd.backends.pytorch.module import carry_finals, carry_inits

        cell, loop = self.cell, self.loop
        read = {node: value(env, m) for node, value in self.reads}
        x = self.input(env, m)
        window = segment_of(env, loop)  # a packed call: one sequence's positions
        if window is not None:
            x = x.narrow(x.dim() - len(self.dims) + self.dims[0], window[0], window[1] - window[0])
        with_state = "_ncd_state_io" in m.__dict__  # a call that passes or returns states (rt.state_begin)
        if self.constants is not None and not with_state:  # the spec's numbers, as the inits' rt.new_full
            inits = [x.new_zeros(shape) if not value else runtime.new_full(x, shape, value)
                     for shape, value in self.constants]
        else:
            inits = carry_inits(loop, self.inits, env, m)
        got = runtime.fused_rnn(cell.cell, x, self.dims, inits,
                                cell.hidden, cell.cell_carry, loop.reverse, m.training, None, with_state=with_state,
                                weights=lambda size, n_in, like: self.weights(read, size, n_in, like))
        if not with_state:
            return got
        out, finals = got
        carry_finals(loop, finals, m)
        return out


class OneScanCall:
    """The short call path of a top block whose body is one call of a sub-block whose body is one
    fused scan of its input (the library's lstm / gru / rnn_* entries: ``return l1(x)``, and
    ``return scan ... `` in the layer). The generic path runs the top block's statements, then
    the sub-block as a torch module (``__call__``, ``forward``, its statements, the scan's
    runner): ~0.1 ms of Python per call, as much as torch's operator at B1 T32 D32. This runs
    the scan straight from the top block's input, after the same input checks (they stay in
    CompiledModule._run). Whatever the generic path would do differently — hooks on the
    sub-block, a replaced sub-block or forward, states passed in or out, a packed call, tracing,
    torch.compile or export — makes the call return None: the generic path runs."""

    def __init__(self, name: str, var: str, sub: nn.Module, fused: FusedRNN) -> None:
        self.name, self.var, self.sub, self.fused = name, var, sub, fused

    @staticmethod
    def find(top: nn.Module) -> OneScanCall | None:
        from ncd.backends.pytorch.program import Assign
        from ncd.ops.base import Call, Ref

        program = top._ncd_program
        body = program.body
        if len(program.inputs) != 1 or len(body) != 1 or program.records or program.taps:
            return None
        stmt = body[0]
        if not (isinstance(stmt, Assign) and isinstance(stmt.expr, Call) and isinstance(stmt.expr.fn, SelfAttr)
                and stmt.expr.args == (Ref(id=program.inputs[0][0]),) and not stmt.expr.kwargs
                and program.results == [Ref(id=stmt.target)]):
            return None
        sub = top._modules.get(stmt.expr.fn.path)
        inner = getattr(sub, "_ncd_program", None)
        if inner is None or len(inner.inputs) != 1 or len(inner.body) != 1 or inner.records or inner.taps:
            return None
        loop, step = inner.body[0], sub._ncd_run.steps[0]
        fused = getattr(step, "scan", None)
        if not isinstance(fused, FusedRNN) or hasattr(step, "auto") or fused.loop is not loop \
                or inner.results != [Ref(id=loop.target)] \
                or loop.cell_values.get(fused.cell.input) != Ref(id=inner.inputs[0][0]):
            return None
        return OneScanCall(stmt.expr.fn.path, inner.inputs[0][0], sub, fused)

    def __call__(self, top: nn.Module, x: Any) -> Any:
        sub = top._modules.get(self.name)
        if sub is not self.sub or sub._forward_hooks or sub._forward_pre_hooks or sub._backward_hooks \
                or sub._backward_pre_hooks or torch_module._global_forward_hooks \
                or torch_module._global_forward_pre_hooks or torch_module._global_backward_hooks \
                or torch_module._global_backward_pre_hooks or "forward" in sub.__dict__ \
                or "_ncd_state_io" in sub.__dict__ or PACKING in sub.__dict__ or torch._C._get_tracing_state() \
                or torch.compiler.is_compiling() or torch.compiler.is_exporting():
            return None
        return self.fused({self.var: x}, sub)
