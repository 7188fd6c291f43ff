"""`ncd compile --emit step`: the step module as Python source that needs only torch.

The step IR (ncd/passes/step.py) is emitted as any IR is (backends/pytorch/emit.py); its entry
class takes ``(*inputs, *states)`` positionally. A subclass of it, written here, gives the
interface the in-process step module has: ``outputs, state = step(*inputs_t, state=state)`` with
the states by name, ``initial_state(*lead)``, ``state_spec()`` and, given the full IR, ``prefill(
*prompt)``: the full module's classes (named ``...Prefill``) with the caches and windows recorded,
run on the step module's weights. Being a subclass, it holds the same parameters under the same
names, so the full module's ``state_dict`` loads into it.
"""
from __future__ import annotations

import re

from ncd.backends.pytorch.emit import INDENT, emit_python, literal, prefill_classes
from ncd.backends.pytorch.program import SizeTable
from ncd.backends.pytorch.step import step_dims
from ncd.errors import NcdError
from ncd.names import is_identifier
from ncd.passes.step import StepPlan
from ncd.ir import SpecIR
from ncd.pipeline import Passes


def emit_step(plan: StepPlan, passes: Passes, class_name: str | None = None,
              full: tuple[SpecIR, Passes] | None = None) -> str:
    """The source of the step module of ``plan`` (its entry class is ``class_name``, default
    ``<Entry>Step``), lowered from the step IR's ``passes``; ``full``: the spec's own IR and
    passes, for ``prefill``."""
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
        rows.append((slot.name, slot.axes, shape, init, slot.init_weight, slot.dtype, slot.own, slot.kind))
    lines = [
        "", "",
        f"class {name}({core}):",
        f'{INDENT}"""One position of {core}: ``outputs, state = step(*inputs_t, state=state)``; the states by name."""',
        "",
        f"{INDENT}STATES = {literal(tuple(rows))}  # (name, axes, per-example shape (None: a cache's length), initial number, initial weight, dtype, own axes, kind)",
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
        f"{INDENT * 2}name, axes, shape, number, weight, kind, own = row[:7]",
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
    ]
    exported = [name, core]
    if full is not None:
        prefill, entry_class, paths = prefill_classes(full[0], full[1], plan.records, "Prefill")
        taken = [c for c in re.findall(r"^class (\w+)\(", prefill, re.M) if f"class {c}(" in source]
        if taken:
            raise NcdError(f"class name {taken[0]} is taken by a block of the spec", hint="rename the block")
        source = source + "\n\n\n" + prefill
        lines[-1:-1] = _prefill_lines(entry_class, paths, step_dims(full[0], plan.axis))
        exported.append(entry_class)
    lines += [f"__all__ = {exported!r}", ""]
    return source + "\n".join(lines)


def _prefill_lines(entry_class: str, paths: tuple[tuple[str, str], ...],
                   dims: tuple[tuple[int, ...], tuple[int, ...]]) -> list[str]:
    """The step class's ``prefill``: the prompt through the full module's classes, its states
    recorded; continued from a cache or window, stepped position by position (step.py's rule)."""
    return [
        "",
        f"{INDENT}PREFILL_PATHS = {literal(paths)}  # (module path, state-name prefix) of each module holding a state",
        f"{INDENT}PREFILL_DIMS = {literal(dims)}  # the step axis in the full inputs, outputs (from the last; 0: none)",
        "",
        f"{INDENT}def prefill(self, *inputs, state=None):",
        f'{INDENT * 2}"""The prompt (whole sequences) in parallel: (outputs, every state after it); state: states to '
        'start from (a previous prefill\'s; one holding a cache or window is stepped position by position)."""',
        f"{INDENT * 2}given = dict(state or {{}})",
        f"{INDENT * 2}kinds = {{row[0]: row[7] for row in self.STATES}}",
        f"{INDENT * 2}for key in given:",
        f"{INDENT * 3}if key not in kinds:",
        f"{INDENT * 4}raise KeyError(f'unknown state {{key!r}}; the states: {{list(kinds)}}')",
        f"{INDENT * 2}if any(kinds[key] != 'carry' for key in given):",
        f"{INDENT * 3}into, out_of = self.PREFILL_DIMS",
        f"{INDENT * 3}lengths = {{x.shape[x.dim() - d] for x, d in zip(inputs, into) if d}}",
        f"{INDENT * 3}if len(inputs) != len(into) or len(lengths) != 1 or 0 in lengths:",
        f"{INDENT * 4}raise ValueError(f'a prefill continued from a cache takes {{len(into)}} inputs of one nonzero length, '",
        f"{INDENT * 4}                 f'got {{len(inputs)}} of lengths {{sorted(lengths)}}')",
        f"{INDENT * 3}steps = []",
        f"{INDENT * 3}for t in range(lengths.pop()):",
        f"{INDENT * 4}outs, given = self(*(x.select(x.dim() - d, t) if d else x for x, d in zip(inputs, into)), state=given)",
        f"{INDENT * 4}steps.append(outs if isinstance(outs, tuple) else (outs,))",
        f"{INDENT * 3}joined = tuple(torch.stack(list(c), -d) if d else c[-1] for c, d in zip(zip(*steps), out_of))",
        f"{INDENT * 3}return (joined[0] if len(joined) == 1 else joined), given",
        f"{INDENT * 2}full = self.__dict__.get('_ncd_prefill')",
        f"{INDENT * 2}if full is None:",
        f"{INDENT * 3}full = self.__dict__['_ncd_prefill'] = {entry_class}()  # not a child: its weights are these",
        f"{INDENT * 2}like = next((p for p in self.parameters() if p.is_floating_point()), None)",
        f"{INDENT * 2}if like is not None:",
        f"{INDENT * 3}full.to(device=like.device, dtype=like.dtype)",
        f"{INDENT * 2}for kind, named in (('_parameters', self.named_parameters), ('_buffers', self.named_buffers)):",
        f"{INDENT * 3}for path, value in named(remove_duplicate=False):",
        f"{INDENT * 4}*parents, leaf = path.split('.')",
        f"{INDENT * 4}owner = full",
        f"{INDENT * 4}for part in parents:",
        f"{INDENT * 5}owner = getattr(owner, part)",
        f"{INDENT * 4}if kind == '_parameters' or leaf not in owner._non_persistent_buffers_set:",
        f"{INDENT * 5}getattr(owner, kind)[leaf] = value",
        f"{INDENT * 2}full.train(self.training)  # this module's mode and generator: dropout, batch statistics, draws",
        f"{INDENT * 2}for inner in full.modules():",
        f"{INDENT * 3}inner._ncd_generator = getattr(self, '_ncd_generator', None)",
        f"{INDENT * 2}session = rt.state_begin(full, self.PREFILL_PATHS, list(kinds), given)",
        f"{INDENT * 2}try:",
        f"{INDENT * 3}outputs = full._ncd_forward(*inputs)",
        f"{INDENT * 2}finally:",
        f"{INDENT * 3}rt.state_end(full, self.PREFILL_PATHS)",
        f"{INDENT * 2}final = session['final']",
        f"{INDENT * 2}return outputs, {{row[0]: final[row[0]] for row in self.STATES if row[0] in final}}",
    ]


def _number(text: str | None) -> float:
    from ncd import sizes as sz

    return float(sz.parse(text or "0"))
