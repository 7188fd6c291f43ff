"""The sequential loop's step under torch.compile: compiled once per shape, eager where it cannot be.

`ncd.load(spec, compile_steps=True)` (or a torch.compile backend name) makes every sequential
scan run its step as one compiled graph instead of the interpreter's per-statement closures.
The step is compiled as a function of (the module, t, the carries, the values the step reads
from outside it); t becomes a symbolic int after its second value, so the T steps of a call
share one graph, and a new shape or dtype of the inputs compiles again. A step that draws
random numbers or updates running statistics (the compiled graph would draw from another
stream than the module's generator), or that holds a loop of its own, stays eager; so does
every step once torch.compile has failed on it (no C++ compiler, an unsupported op: the
failure is recorded in ``status`` and the step reruns eagerly, raising what eager raises).
Off by default: on a CPU it did not pay (docs/benchmarks.md).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from ncd.backends.pytorch.program import Assign, Loop
from torch import nn

from ncd.ops.base import Call, Gather, Ref, fold, leaves

# runtime functions whose result or effect differs between a compiled graph and eager torch:
# draws from the module's generator, batch norm's running statistics
STATEFUL = frozenset({"rt.draw_uniform", "rt.dropout", "rt.uniform", "rt.normal", "rt.categorical",
                      "rt.batch_norm"})
ATTRIBUTE = "_ncd_compile_steps"  # on each CompiledModule: False, or the torch.compile backend


class _CallNames(Gather):
    """The dotted names of every call in an expression."""

    def call(self, e: Call, fn: Any, args: list, kwargs: list) -> list:
        return [*([fn] if isinstance(fn, str) else []), *super().call(e, fn, args, kwargs)]


def why_not(loop: Loop, statements: list[Any]) -> str | None:
    """Why this step cannot be compiled (None: it can)."""
    for stmt in statements:
        if not isinstance(stmt, Assign):
            return "the step holds a loop of its own"
        if STATEFUL & set(fold(stmt.expr, _CallNames())):
            return "the step draws random numbers or updates running statistics"
    return None


def _reads(loop: Loop, statements: list[Assign]) -> list[str]:
    """What the step reads from outside itself: values neither it nor the loop defines."""
    defined = {*loop.args, loop.index, *(s.target for s in statements)}
    out: list[str] = []
    for expr in [*(s.expr for s in statements), *loop.results]:
        for leaf in leaves(expr):
            if isinstance(leaf, Ref) and leaf.id not in defined and leaf.id not in out:
                out.append(leaf.id)
    return out


def enable(module: nn.Module, backend: bool | str = True) -> nn.Module:
    """Compile the sequential steps of ``module`` and every block it holds (False: eager again)."""
    choice: bool | str = "inductor" if backend is True else backend
    for inner in module.modules():
        if hasattr(inner, "_ncd_program"):
            setattr(inner, ATTRIBUTE, choice)
    return module


class CompiledStep:
    """One sequential scan's step as a compiled function, built at its first compiled call."""

    def __init__(self, loop: Loop, statements: list[Any], body: Callable, carry_results: list[Callable],
                 emit_results: list[Callable]) -> None:
        self.refused = why_not(loop, statements)
        self.status = f"eager: {self.refused}" if self.refused else "eager (compile_steps off)"
        self._reads = [] if self.refused else _reads(loop, statements)
        self._args, self._index = list(loop.args), loop.index
        self._body, self._carry, self._emit = body, carry_results, emit_results
        self._compiled: dict[str, Callable] = {}
        self._failed = False

    def wanted(self, m: nn.Module) -> str | None:
        """The torch.compile backend to run the step with in this call, or None (eager)."""
        backend = getattr(m, ATTRIBUTE, False)
        if not backend or self.refused or self._failed or torch.compiler.is_compiling():
            return None
        return backend

    def _function(self, backend: str) -> Callable:
        fn = self._compiled.get(backend)
        if fn is None:
            reads, args, index = self._reads, self._args, self._index
            body, carry, emit = self._body, self._carry, self._emit

            def step(m: nn.Module, t: int, state: tuple, outside: tuple) -> tuple[tuple, tuple]:
                local = dict(zip(reads, outside))
                local.update(zip(args, state))
                local[index] = t
                body(local, m)
                return tuple(r(local, m) for r in carry), tuple(r(local, m) for r in emit)

            # torch.compile caches graphs per code object, with a recompile limit: a code object
            # of its own per scan keeps one scan's graphs from evicting another's
            step.__code__ = step.__code__.replace(co_name=f"ncd_step_{id(self):x}")
            fn = self._compiled[backend] = torch.compile(step, backend=backend)
        return fn

    def __call__(self, backend: str, env: dict[str, Any], m: nn.Module, t: int,
                 state: list[Any]) -> tuple[tuple, tuple] | None:
        """The step's new carries and emitted values, compiled; None where it must run eagerly
        (the caller runs it): a carry not yet a tensor (``h = 0`` before the first step), or
        torch.compile failed (then for good, ``status`` says why)."""
        if not all(isinstance(s, torch.Tensor) for s in state):
            return None
        try:
            out = self._function(backend)(m, t, tuple(state), tuple(env[r] for r in self._reads))
        except Exception as exc:  # noqa: BLE001 - any compile failure: eager from now on
            self._failed = True
            self.status = f"eager: torch.compile failed ({type(exc).__name__}: {str(exc).splitlines()[0][:160]})"
            return None
        self.status = f"compiled (torch.compile, backend {backend})"
        return out
