"""The carried states of a compiled module: their names, shapes and spec initial values.

A state is the carry of a scan that runs once per call: a scan at the top level of a block whose
instance is reached from the module by calls that run once per call (not inside another loop,
and an instance called once). Its name is the dotted path of that instance (as in
``named_modules()``; a ``repeat`` instance's layers are ``layers.0`` ...), each weight-free block
called directly by its label (``instance_labels``: ``GLAHead``, not the hidden ``_GLAHead_0``),
and the carry's name within the block (``Loop.state_names``, given at lowering: ``h``, or
``fwd.h`` when the block holds several scans). docs/language.md, "State in and out", states the
rule for users; the step pass (ncd/passes/step.py) names the step module's states by it too.
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch

from ncd.errors import NcdError
from ncd.ops.base import SelfAttr, leaves
from ncd.ir import SCAN


class StateSpec(NamedTuple):
    """One state: its carry's core axes and per-example sizes (None: a free axis). A call's
    tensor has the carry's lifted dims (batch, heads) first: ``[*lead, *shape]``."""

    axes: tuple[str, ...]
    shape: tuple[int | None, ...]


_HIDDEN = re.compile(r"_([A-Za-z][A-Za-z0-9_]*'*)_([0-9]+)\Z")  # the builder's name of a direct call (`GLAHead(...)`)


def instance_labels(names: Iterable[str], taken: Iterable[str] = ()) -> dict[str, str]:
    """Each instance's segment in state names: its own name, or for a weight-free block called
    directly (hidden instance ``_GLAHead_0``, numbered among all the block's instances) the
    block's name, ``GLAHead``, then ``GLAHead_1``, ``GLAHead_2`` for its later direct calls in the
    same block (in call order) and wherever the plain name is ``taken`` (another instance's, a
    scan's bound name). Adding an instance or a call after them renames none of them."""
    names = list(names)
    used = {n for n in names if not _HIDDEN.match(n)} | set(taken)
    out: dict[str, str] = {}
    hidden = sorted((int(m.group(2)), m.group(1), n) for n in names if (m := _HIDDEN.match(n)))
    for _, block, name in hidden:
        label, k = block, 0
        while label in used:
            k += 1
            label = f"{block}_{k}"
        used.add(label)
        out[name] = label
    return {n: out.get(n, n) for n in names}


@dataclass(frozen=True)
class StateEntry:
    name: str  # the full state name
    path: str  # the module holding the scan, relative to the module asked ('' for itself)
    loop: Any  # the scan statement (backends/pytorch/program.py Loop)
    carry: int  # which of its carries
    prefix: str = ""  # the holder's part of the name (``path`` with labels for hidden instances)

    @property
    def spec(self) -> StateSpec:
        return StateSpec(self.loop.state_axes[self.carry], self.loop.state_shapes[self.carry])

    @property
    def init(self) -> float | str | None:
        """The spec's initial value: a number, a weight's name in the holding block, or None
        (computed from the inputs)."""
        return self.loop.state_inits[self.carry]


def entries(module: Any) -> list[StateEntry]:
    """Every state of ``module`` (a CompiledModule), in the order its scans run."""
    programs = {m._ncd_block: m._ncd_program for m in module.modules() if hasattr(m, "_ncd_program")}
    return walk(programs, module._ncd_block)


def walk(programs: Mapping[str, Any], key: str, path: str = "") -> list[StateEntry]:
    """The states of block ``key`` among the lowered ``programs``, its instances' under ``path``."""
    out: list[StateEntry] = []
    _walk(programs, key, path, path, out)
    return out


def holders(states: list[StateEntry]) -> tuple[tuple[str, str], ...]:
    """(module path, name prefix) of each module holding a state, for runtime.state_begin."""
    return tuple(dict.fromkeys((e.path, e.prefix) for e in states))


def label_path(module: Any, path: str) -> str:
    """A sub-module's path as state names spell it (hidden instances by their labels)."""
    out: list[str] = []
    current = module
    for part in path.split(".") if path else []:
        program = getattr(current, "_ncd_program", None)
        if program is not None:
            out.append(labels_of(program).get(part, part))
        else:
            out.append(part)  # a repeat's layer index
        current = getattr(current, part) if not part.isdigit() else current[int(part)]
    return ".".join(out)


def labels_of(program: Any) -> dict[str, str]:
    """The instance labels of a lowered block (``instance_labels`` over its instances; the
    names of its scans' states are taken)."""
    from ncd.backends.pytorch.program import Loop

    taken = {name.split(".")[0] for stmt in program.body if isinstance(stmt, Loop) for name in stmt.state_names}
    return instance_labels([name for name, _, _ in program.instances], taken)


def table(states: list[StateEntry]) -> tuple[tuple[str, str, tuple[int | None, ...], float | str | None], ...]:
    """Plain data for ``rt.initial_states``: (name, holder path, per-example shape, initial value)."""
    return tuple((e.name, e.path, e.spec.shape, e.init) for e in states)


def state_spec(module: Any) -> dict[str, StateSpec]:
    return {e.name: e.spec for e in entries(module)}


def _walk(programs: Mapping[str, Any], key: str, path: str, prefix: str, out: list[StateEntry]) -> None:
    from ncd.backends.pytorch.program import Assign, Loop, _exprs

    program = programs[key]
    instances = {name: (block, repeat) for name, block, repeat in program.instances}
    labels = labels_of(program)
    total = _count_calls(list(_exprs(program.body)) + list(program.results), instances)
    visited: set[str] = set()

    def enter(name: str) -> None:
        if total[name] != 1 or name in visited:
            return  # called more than once per call (shared weights), or inside a loop: no state
        visited.add(name)
        block, repeat = instances[name]
        subs = [(f"{name}.{k}", f"{labels[name]}.{k}") for k in range(repeat)] if repeat else [(name, labels[name])]
        for sub, label in subs:
            _walk(programs, block, _join(path, sub), _join(prefix, label), out)

    for stmt in program.body:
        if isinstance(stmt, Loop):
            if stmt.kind == SCAN:
                for i, local in enumerate(stmt.state_names):
                    out.append(StateEntry(_join(prefix, local), path, stmt, i, prefix))
            continue
        assert isinstance(stmt, Assign)
        for name in _called(stmt.expr, instances):
            enter(name)
    for expr in program.results:  # `return cell(x)`: a call folded into the results
        for name in _called(expr, instances):
            enter(name)


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _called(expr: Any, instances: Mapping[str, Any]) -> Iterator[str]:
    seen: set[str] = set()
    for leaf in leaves(expr):
        if isinstance(leaf, SelfAttr) and leaf.path in instances and leaf.path not in seen:
            seen.add(leaf.path)
            yield leaf.path


def _count_calls(exprs: list[Any], instances: Mapping[str, Any]) -> dict[str, int]:
    counts = dict.fromkeys(instances, 0)
    for expr in exprs:
        for leaf in leaves(expr):
            if isinstance(leaf, SelfAttr) and leaf.path in counts:
                counts[leaf.path] += 1
    return counts


def check_initial(module: Any, initial_state: Mapping[str, Any] | None, like: torch.Tensor | None) -> None:
    """An NcdError naming the state for an unknown name, a non-tensor, a wrong per-example
    shape, or a dtype/device other than the call's (``like``: its float input or parameter)."""
    if not initial_state:
        return
    if not isinstance(initial_state, Mapping):
        raise NcdError(f"initial_state must be a mapping of state name to tensor, got {type(initial_state).__name__}",
                       hint="initial_state=final_state from a previous call, or module.initial_state(B)")
    specs = state_spec(module)
    for name, value in initial_state.items():
        if name not in specs:
            from difflib import get_close_matches

            close = get_close_matches(str(name), list(specs), n=1)
            known = ", ".join(specs) or "none: this module has no scan that runs once per call"
            raise NcdError(f"initial_state names {name!r}, which is not a state of this module (its states: {known})",
                           hint=f"did you mean {close[0]!r}?" if close else "module.state_spec() lists the names")
        spec = specs[name]
        want = ", ".join("?" if n is None else str(n) for n in spec.shape)
        if not isinstance(value, torch.Tensor):
            raise NcdError(f"initial state {name} must be a tensor of shape (*lead, {want}), got {type(value).__name__}",
                           hint=f"module.initial_state(B)[{name!r}] has the right shape and dtype")
        rank = len(spec.shape)
        core = tuple(value.shape[value.dim() - rank:]) if rank else ()
        fits = value.dim() >= rank and all(n is None or n == c for n, c in zip(spec.shape, core))
        if not fits:
            raise NcdError(f"initial state {name} has shape {tuple(value.shape)}; state {name} over axes "
                           f"[{', '.join(spec.axes)}] has shape (*lead, {want}), the lifted (batch) dims first",
                           hint=f"module.initial_state(B)[{name!r}] has the right shape")
        if like is not None and value.is_floating_point() and (value.dtype != like.dtype or value.device != like.device):
            raise NcdError(f"initial state {name} is {value.dtype} on {value.device}, but this call runs in "
                           f"{like.dtype} on {like.device}", hint=f"initial_state[{name!r}].to(x) for an input x")


def initial_state(module: Any, lead: tuple[int, ...], dtype: torch.dtype | None = None,
                  device: torch.device | str | None = None) -> dict[str, torch.Tensor]:
    """Every state at the spec's own initial value (``= 0``, a learned ``h0``), ``[*lead, *shape]``."""
    from ncd.backends.pytorch import runtime

    try:
        return runtime.initial_states(module, table(entries(module)), lead, dtype, device)
    except ValueError as exc:
        raise NcdError(str(exc), hint=getattr(exc, "hint", None)) from None
