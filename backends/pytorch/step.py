"""The step module: one position of a compiled spec, with its scans' states carried by name.

``module.step_module()`` compiles the step IR (ncd/passes/step.py) with the same backend as the
full module and shares the full module's parameters and buffers (the same tensors: train the
one, decode with the other). ``outputs, state = step(*inputs_t, state=state)`` takes and returns
the states by the names the full module's final state uses, so a prefill with the full module
continues with the step module.

``step.prefill(*prompt)`` runs a whole prompt in parallel and returns the step module's full
state: the full module compiled once more with its caches and windows recorded
(ncd/passes/step.py ``Record``, runtime.state_record) beside the scans' final states, on the same
weights. The full module's own final state holds the scans' states only.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from ncd.backends.pytorch.module import CompiledModule, _owner, share_weights
from ncd.errors import NcdError
from ncd.ir import SpecIR
from ncd.passes.step import StateSlot, StepPlan, step_plan


class StepModule(CompiledModule):
    """A CompiledModule of a step IR whose entry takes ``(*inputs, *states)`` positionally; its
    ``forward`` takes the states as a mapping and returns ``(outputs, new_state)``."""

    _ncd_step: StepPlan
    _ncd_state_shapes: dict[str, tuple[int | None, ...]]  # None: a cache's length, the positions so far

    def forward(self, *inputs: torch.Tensor, state: Mapping[str, torch.Tensor] | None = None) -> Any:  # type: ignore[override]
        plan = self._ncd_step
        if len(inputs) != plan.n_inputs:
            raise NcdError(f"the step module takes {plan.n_inputs} inputs (one position each), got {len(inputs)}",
                           self._ncd_block_span, hint="pass the state as state=..., by name")
        given = dict(state or {})
        unknown = sorted(set(given) - {s.name for s in plan.states})
        if unknown:
            names = ", ".join(s.name for s in plan.states) or "none"
            raise NcdError(f"unknown state {unknown[0]!r} (this step module's states: {names})",
                           hint="step.state_spec() lists them")
        lead = self._lead(inputs)
        like = inputs[0] if inputs and inputs[0].is_floating_point() else None
        states = []
        for slot in plan.states:
            value = given.get(slot.name)
            if value is None:
                value = self._start(slot, lead, like)
            else:
                self._check_state(slot, value)
            states.append(value)
        results = CompiledModule.forward(self, *inputs, *states)
        results = results if isinstance(results, tuple) else (results,)
        outs = results[: plan.n_outputs]
        new = dict(zip((s.name for s in plan.states), results[plan.n_outputs:]))
        return (outs[0] if len(outs) == 1 else tuple(outs)), new

    def prefill(self, *inputs: torch.Tensor, state: Mapping[str, torch.Tensor] | None = None) -> Any:
        """The prompt ``inputs`` (whole sequences, as the full module takes them) run in parallel:
        ``(outputs, state)``, the outputs the full module's and ``state`` every state of this step
        module after the prompt (scans' carries, KV caches, convolution windows), ready for
        ``step(*inputs_t, state=state)``. ``state``: scan states to start from (a previous call's);
        a cache or a window in it (a previous prefill's) continues that prompt: the attention of
        the full module cannot start from a cache, so the continuation is stepped position by
        position through this module (the same outputs, states and gradients; not in parallel)."""
        plan = self._ncd_step
        kinds = {s.name: s.kind for s in plan.states}
        given = dict(state or {})
        for name in given:
            if name not in kinds:
                names = ", ".join(kinds) or "none"
                raise NcdError(f"unknown state {name!r} (this step module's states: {names})",
                               hint="step.state_spec() lists them")
        if any(kinds[name] != "carry" for name in given):
            return self._stepped_prefill(inputs, given)
        full = self._prefill_module()
        from ncd import state as states
        from ncd.backends.pytorch import runtime

        like = next((x for x in inputs if isinstance(x, torch.Tensor) and x.is_floating_point()), None)
        if like is None:
            like = next((p for p in self.parameters() if p.is_floating_point()), None)
        try:
            states.check_initial(full, given, like)
        except NcdError as exc:
            raise exc.located(*self._ncd_source) if self._ncd_source[0] is not None else exc from None
        recorders = [(p, states.label_path(full, p)) for p, m in full.named_modules() if getattr(m, "_ncd_records", None)]
        paths = tuple(dict.fromkeys([*states.holders(states.entries(full)), *recorders]))
        session = runtime.state_begin(full, paths, tuple(kinds), given)
        try:
            outputs = full._run(inputs)
        finally:
            runtime.state_end(full, paths)
        final = session["final"]  # a state whose holder never ran is left out: step() starts it
        return outputs, {s.name: final[s.name] for s in plan.states if s.name in final}

    def _stepped_prefill(self, inputs: tuple[torch.Tensor, ...], given: dict[str, torch.Tensor]) -> Any:
        """A prompt continued from a cache or window: each position through ``forward``, the
        outputs stacked along the step axis where the full module's outputs hold it."""
        into, out_of = step_dims(self._ncd_full[0], self._ncd_step.axis)
        if len(inputs) != len(into):
            raise NcdError(f"prefill takes the full module's {len(into)} inputs, got {len(inputs)}",
                           self._ncd_block_span, hint="pass the prompt as the full module takes it")
        lengths = {x.shape[x.dim() - d] for x, d in zip(inputs, into) if d and isinstance(x, torch.Tensor) and x.dim() >= d}
        if len(lengths) != 1 or 0 in lengths:
            raise NcdError(f"a prefill continued from a cache needs a prompt of one nonzero length along "
                           f"{self._ncd_step.axis}, got lengths {sorted(lengths)}", self._ncd_block_span,
                           hint="pass at least one position of every sequence input")
        state: dict[str, torch.Tensor] = given
        steps: list[tuple[torch.Tensor, ...]] = []
        for t in range(lengths.pop()):
            outs, state = self(*(x.select(x.dim() - d, t) if d else x for x, d in zip(inputs, into)), state=state)
            steps.append(outs if isinstance(outs, tuple) else (outs,))
        joined = tuple(torch.stack(list(column), -d) if d else column[-1] for column, d in zip(zip(*steps), out_of))
        return (joined[0] if len(joined) == 1 else joined), state

    def _prefill_module(self) -> CompiledModule:
        """The full module with this step's caches and windows recorded, on these weights."""
        from ncd.backends.pytorch import compile_module
        from ncd.pipeline import run_passes

        held = self.__dict__.get("_ncd_prefill")
        if held is None:
            spec, backend = self._ncd_full
            held = compile_module(spec, passes=run_passes(spec, backend), records=self._ncd_step.records)
            if self._ncd_source[0] is not None:
                held.locate_errors(*self._ncd_source)  # type: ignore[arg-type]
            self.__dict__["_ncd_prefill"] = held  # not a child: its weights are this module's
        weight = next((p for p in self.parameters() if p.is_floating_point()), None)
        anchor = next((b for b in held.buffers() if b.is_floating_point()), None)
        if weight is not None and anchor is not None and (anchor.dtype, anchor.device) != (weight.dtype, weight.device):
            held.to(device=weight.device, dtype=weight.dtype)  # constants and anchors as the weights
        share_weights(self, held)  # again each call: .to() may have replaced a buffer
        return held

    def state_spec(self) -> dict[str, tuple[tuple[str, ...], tuple[int | None, ...]]]:
        """State name → (the carry's own axes, their sizes), in the order the step takes them, as
        the full module's ``state_spec()``: heads a call lifts the carry over lead the tensor with
        the batch (``initial_state`` includes them); a cache's length (positions so far) is None."""
        return {s.name: (s.axes[len(s.axes) - s.own:], self._ncd_state_shapes[s.name][len(s.axes) - s.own:])
                for s in self._ncd_step.states}

    def initial_state(self, *lead: int, dtype: torch.dtype | None = None,
                      device: torch.device | str | None = None) -> dict[str, torch.Tensor]:
        """The empty state: every carry at the spec's own initial value, ``[*lead, *shape]``."""
        like = next((p for p in self.parameters() if p.is_floating_point()), None)
        if like is None:
            like = torch.zeros((), dtype=dtype or torch.get_default_dtype(), device=device)
        like = like.to(dtype=dtype or like.dtype, device=device or like.device)
        return {s.name: self._start(s, tuple(lead), like) for s in self._ncd_step.states}

    # ------------------------------------------------------------------ helpers
    def _lead(self, inputs: tuple[torch.Tensor, ...]) -> tuple[int, ...]:
        for (_, _, axes, _), x in zip(self._ncd_program.inputs, inputs):
            if isinstance(x, torch.Tensor) and x.dim() >= len(axes):
                return tuple(x.shape[: x.dim() - len(axes)])
        return ()

    def _start(self, slot: StateSlot, lead: tuple[int, ...], like: torch.Tensor | None) -> torch.Tensor:
        shape = lead + tuple(0 if d is None else d for d in self._ncd_state_shapes[slot.name])
        if like is None:
            like = next((p for p in self.parameters() if p.is_floating_point()), torch.zeros(()))
        dtype = like.dtype if slot.dtype == "float" else (torch.int64 if slot.dtype == "int" else torch.bool)
        if slot.init_weight is not None:
            owner, leaf = _owner(self, slot.init_weight)
            weight = getattr(owner, leaf)
            return weight.to(device=like.device, dtype=dtype).expand(shape)
        value = float(_number(slot.init or "0"))
        return torch.full(shape, value, dtype=dtype, device=like.device)

    def _check_state(self, slot: StateSlot, value: Any) -> None:
        want = self._ncd_state_shapes[slot.name]
        axes = "[" + ", ".join(slot.axes) + "]"
        if not isinstance(value, torch.Tensor):
            raise NcdError(f"state {slot.name} must be a tensor, got {type(value).__name__}",
                           hint=f"its axes are [..., {', '.join(slot.axes)}]")
        tail = tuple(value.shape[value.dim() - len(want):]) if value.dim() >= len(want) else ()
        if len(tail) != len(want) or any(w is not None and w != g for w, g in zip(want, tail)):
            raise NcdError(f"state {slot.name} has shape {tuple(value.shape)}, but its axes {axes} have sizes "
                           f"{want} (lifted axes lead)", hint="step.initial_state(batch) gives one of each")


def step_dims(ir: SpecIR, axis: str) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Where the entry's inputs and outputs hold the step axis, counted from their last axis
    (0: they do not hold it), so a batch's leading axes never shift them."""
    entry = ir.entry_block

    def dim(axes: tuple[str, ...] | list[str]) -> int:
        return len(axes) - list(axes).index(axis) if axis in axes else 0

    return tuple(dim(p.type.axes) for p in entry.inputs), tuple(dim(t.axes) for t in entry.outputs)


def _number(text: str) -> float:
    from ncd import sizes as sz

    value = sz.parse(text)
    if value.free_symbols:
        raise NcdError(f"a carry's initial value {text} needs axis sizes that are not bound")
    return float(value)


def build_step_module(module: CompiledModule, axis: str | None = None) -> StepModule:
    """The step module of a compiled module (its top-level entry), sharing its weights."""
    from ncd.backends.pytorch import compile_module
    from ncd.backends.pytorch.program import SizeTable
    from ncd.pipeline import run_passes

    spec = module._ncd_spec
    source, filename = module._ncd_source
    try:
        plan = step_plan(spec.model_copy(update={"entry": module._ncd_block}), axis)
        passes = run_passes(plan.ir, getattr(module, "_ncd_scan_backend", "auto"))
        step = compile_module(plan.ir, passes=passes, module_class=StepModule)
    except NcdError as exc:
        raise (exc.located(source, filename) if source is not None else exc) from None
    assert isinstance(step, StepModule)
    step._ncd_step = plan
    step._ncd_full = (spec.model_copy(update={"entry": module._ncd_block}), getattr(module, "_ncd_scan_backend", "auto"))
    sizes = SizeTable(plan.ir)
    shapes: dict[str, tuple[int | None, ...]] = {}
    for slot in plan.states:
        dims: list[int | None] = []
        for a in slot.axes:
            if a == slot.grow:
                dims.append(None)
                continue
            bound = sizes.bound(a)
            if bound is None:
                raise NcdError(f"state {slot.name} has axis {a}, whose size is not bound",
                               hint=f"bind it when loading: ncd.load(..., {a}=...)")
            dims.append(int(bound))
        shapes[slot.name] = tuple(dims)
    step._ncd_state_shapes = shapes
    if source is not None:
        step.locate_errors(source, filename)  # type: ignore[arg-type]
    weight = next((p for p in module.parameters() if p.is_floating_point()), None)
    if weight is not None:  # constants and anchors in the full module's dtype and device
        step.to(device=weight.device, dtype=weight.dtype)
    share_weights(module, step)
    return step

