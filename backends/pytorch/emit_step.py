"""`ncd compile --emit step`: the step module as Python source that needs only torch.

The step IR (ncd/passes/step.py) is emitted as any IR is (backends/pytorch/emit.py); its entry
class takes ``(*inputs, *states)`` positionally. A subclass of it, written here, gives the
interface the in-process step module has: ``outputs, state = step(*inputs_t, state=state)`` with
the states by name, ``initial_state(*lead)`` and ``state_spec()``. Being a subclass, it holds the
same parameters under the same names, so the full module's ``state_dict`` loads into it.
"""
from __future__ import annotations

from ncd.backends.pytorch.emit import INDENT, emit_python, literal
from ncd.backends.pytorch.program import SizeTable
from ncd.errors import NcdError
from ncd.names import is_identifier
from ncd.passes.step import StepPlan
from ncd.pipeline import Passes


def emit_step(plan: StepPlan, passes: Passes, class_name: str | None = None) -> str:
    """The source of the step module of ``plan`` (its entry class is ``class_name``, default
    ``<Entry>Step``), lowered from the step IR's ``passes``."""
    entry = plan.ir.entry_block.name
    name = class_name or f"{entry}Step"
    if not is_identifier(name):
        raise NcdError(f"--class-name {name!r} is not a Python identifier (or is a keyword)", hint="e.g. NetStep")
    core = f"{name}Core"
    source = emit_python(plan.ir, class_name=core, passes=passes)
    if f"class {name}(" in source:
        raise NcdError(f"class name {name} is taken by a block of the spec", hint="pass --class-name NAME")
    sizes = SizeTable(plan.ir)
    rows = []
    for slot in plan.states:
        shape = tuple(None if a == slot.grow else int(sizes.bound(a) or 0) for a in slot.axes)
        init = float(_number(slot.init)) if slot.init_weight is None else None
        rows.append((slot.name, slot.axes, shape, init, slot.init_weight, slot.dtype, slot.own))
    lines = [
        "", "",
        f"class {name}({core}):",
        f'{INDENT}"""One position of {core}: ``outputs, state = step(*inputs_t, state=state)``; the states by name."""',
        "",
        f"{INDENT}STATES = {literal(tuple(rows))}  # (name, axes, per-example shape (None: a cache's length), initial number, initial weight, dtype, own axes)",
        f"{INDENT}N_INPUTS = {plan.n_inputs}",
        f"{INDENT}N_OUTPUTS = {plan.n_outputs}",
        f"{INDENT}INPUT_RANKS = {literal(tuple(len(p.type.axes) for p in plan.ir.entry_block.inputs[:plan.n_inputs]))}",
        "",
        f"{INDENT}def state_spec(self):",
        f"{INDENT * 2}return {{row[0]: (row[1][len(row[1]) - row[6]:], tuple(row[2])[len(row[2]) - row[6]:]) "
        f"for row in self.STATES}}",
        "",
        f"{INDENT}def initial_state(self, *lead, dtype=None, device=None):",
        f"{INDENT * 2}like = next((p for p in self.parameters() if p.is_floating_point()), None)",
        f"{INDENT * 2}if like is None:",
        f"{INDENT * 3}like = torch.zeros(())",
        f"{INDENT * 2}like = like.to(dtype=dtype or like.dtype, device=device or like.device)",
        f"{INDENT * 2}return {{row[0]: self._start(row, tuple(lead), like) for row in self.STATES}}",
        "",
        f"{INDENT}def _start(self, row, lead, like):",
        f"{INDENT * 2}name, axes, shape, number, weight, kind, own = row",
        f"{INDENT * 2}dtype = like.dtype if kind == 'float' else (torch.int64 if kind == 'int' else torch.bool)",
        f"{INDENT * 2}if weight is not None:",
        f"{INDENT * 3}owner = self",
        f"{INDENT * 3}for part in weight.split('.'):",
        f"{INDENT * 4}owner = getattr(owner, part)",
        f"{INDENT * 3}return owner.to(device=like.device, dtype=dtype).expand(lead + tuple(shape))",
        f"{INDENT * 2}return torch.full(lead + tuple(0 if d is None else d for d in shape), number, dtype=dtype, "
        f"device=like.device)",
        "",
        f"{INDENT}def forward(self, *inputs, state=None):",
        f"{INDENT * 2}if len(inputs) != self.N_INPUTS:",
        f"{INDENT * 3}raise TypeError(f'the step module takes {{self.N_INPUTS}} inputs, got {{len(inputs)}}')",
        f"{INDENT * 2}state = dict(state or {{}})",
        f"{INDENT * 2}unknown = sorted(set(state) - {{row[0] for row in self.STATES}})",
        f"{INDENT * 2}if unknown:",
        f"{INDENT * 3}raise KeyError(f'unknown state {{unknown[0]!r}}; the states: {{[row[0] for row in self.STATES]}}')",
        f"{INDENT * 2}x, rank = inputs[0], self.INPUT_RANKS[0]",
        f"{INDENT * 2}lead = tuple(x.shape[: x.dim() - rank])",
        f"{INDENT * 2}like = x if x.is_floating_point() else next((p for p in self.parameters() if p.is_floating_point()), torch.zeros(()))",
        f"{INDENT * 2}states = [state[row[0]] if row[0] in state else self._start(row, lead, like) for row in self.STATES]",
        f"{INDENT * 2}results = super().forward(*inputs, *states)",
        f"{INDENT * 2}results = results if isinstance(results, tuple) else (results,)",
        f"{INDENT * 2}outs = results[: self.N_OUTPUTS]",
        f"{INDENT * 2}new = {{row[0]: value for row, value in zip(self.STATES, results[self.N_OUTPUTS:])}}",
        f"{INDENT * 2}return (outs[0] if len(outs) == 1 else tuple(outs)), new",
        "",
        f"__all__ = [{name!r}, {core!r}]",
        "",
    ]
    return source + "\n".join(lines)


def _number(text: str | None) -> float:
    from ncd import sizes as sz

    return float(sz.parse(text or "0"))
