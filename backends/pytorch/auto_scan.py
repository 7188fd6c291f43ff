"""`auto` at run time: each call of a scan runs the backend the cost model predicts cheapest at
that call's sizes, among those the scan-backend registry admits for the scan's plan
(backends/pytorch/scan_cost.py; e.g. a linear diagonal scan: scan, newton or the loop; a proven
cell: fused_rnn or the loop; gla: its chunked kernel, the diagonal scan or the loop).

The pass chose a backend by the step's class; it does not know the batch, often not T, nor
whether the call needs gradients, and those decide which backend is fastest. The sizes are read
off the call (the carries' initial values and the captured inputs' lifted shapes) and the choice
is cached per (device kind, dtype, rows, T, N, grad mode); in front of that, a ``CallMemo``
(call_memo.py) keyed by the shapes of what the scan reads answers a call like one seen before
without building the initial states. Each candidate's runner is built on first use, from the same
compiled step. Where the pass's backend has no calibrated model on the device kind and dtype at
hand, or the scan asked for a backend, the pass's backend runs unchanged.

Where two or more candidates are predicted within ``scan_cost.margin`` of the cheapest (2×, or two
standard errors of the two models' calibration residuals where wider), the model cannot tell them
apart (its fit is good to tens of percent), so the first call of
that shape times each of them on the call's own inputs, as cuDNN's benchmark mode does: one
warm-up run each, then ``MEASURE_ROUNDS`` interleaved timed rounds (more, up to
``MEASURE_MAX_ROUNDS``, while they have taken under ``MEASURE_BUDGET_S``; the fastest counts; a
candidate more than ``MEASURE_DROP`` times the best so far sits out the later rounds), forward
alone or forward plus the backward of the scan's outputs (``torch.autograd.grad``: no ``.grad``
is written), on a copy of the environment and under a forked RNG, so the call's results are
what the chosen backend alone computes. The clock is the process's CPU time where torch computes
on one thread (``default_clock``): on a machine shared with other processes the wall clock counts
their time slices too, by a factor that drifts between two rounds, while one thread's CPU time is
what that run costs, which is what an idle machine's wall clock would show. The winner is cached
with the shape. At most
``MEASURE_SHAPES`` shapes per scan are measured; later new shapes go by the model alone.
"""
from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ncd import scan_backends
from ncd.backends.pytorch import scan_cost
from ncd.backends.pytorch.implementations import implementation
from ncd.backends.pytorch.program import Assign, Loop

Env = dict[str, Any]
Runner = Callable[[Env, nn.Module], None]
Key = tuple[str, str, int, int, int, bool]
Timer = Callable[[str, Callable[[], None]], float]

MEASURE_MARGIN = scan_cost.MEASURE_MARGIN  # candidates predicted this close to the cheapest are timed
MEASURE_ROUNDS = 3  # timed runs per candidate after its warm-up, interleaved; the fastest counts
MEASURE_MAX_ROUNDS = 9  # more rounds while the timing has taken under MEASURE_BUDGET_S (short calls are noisy)
MEASURE_BUDGET_S = 0.15
MEASURE_DROP = 2.0  # a candidate this many times slower than the best so far is not timed again
MEASURE_SHAPES = 16  # call shapes measured per scan; beyond, the model alone decides


def wall_clock(backend: str, run: Callable[[], None]) -> float:
    """Seconds one run takes on the wall clock."""
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def default_clock(backend: str, run: Callable[[], None]) -> float:
    """Seconds one run takes: the process's CPU time where torch computes on one thread (other
    processes' load barely enters it), the wall clock where it computes on several (their CPU
    times add up, and idle workers may spin). Tests inject their own timer."""
    if torch.get_num_threads() != 1:
        return wall_clock(backend, run)
    start = time.process_time()
    run()
    return time.process_time() - start


def step_statements(loop: Loop) -> int:
    """The statements the loop runs at every step (the ones not hoisted out of it)."""
    return sum(1 for s in loop.body if not (isinstance(s, Assign) and s.target in loop.invariant))


class AutoScan:
    """Runs one scan statement with the backend predicted cheapest for each call (see module doc)."""

    def __init__(self, loop: Loop, body, inits, results, length) -> None:
        self.loop = loop
        self.args = (body, inits, results, length)
        self.inits, self.length = inits, length
        self.primary = scan_backends.runner(loop.backend)(loop, body, inits, results, length)
        self.runners: dict[str, Runner] = {loop.backend: self.primary}
        self.cache: dict[Key, str] = {}
        self.statements = step_statements(loop)
        self.N = sum(math.prod(size) for size in loop.carry_sizes)
        cell = loop.plan.cell
        self.hidden = math.prod(loop.carry_sizes[0]) if cell is not None and loop.carry_sizes else None
        self.ran: str | None = None  # the backend the last call ran
        self.timer: Timer = default_clock
        self.measured: dict[Key, dict[str, float]] = {}  # per measured shape, each candidate's seconds
        from ncd.backends.pytorch.call_memo import CallMemo
        from ncd.backends.pytorch.module import compile_expr
        from ncd.ops.base import Ref, leaves

        self.memo = CallMemo()
        self.reads = [compile_expr(Ref(id=ref)) for ref, _, _ in loop.captures]
        self.reads += [compile_expr(leaf) for expr in [*loop.inits, loop.length] for leaf in leaves(expr)]
        self.scan = getattr(self.primary, "scan", None)  # what parallel_scans() reports
        self.base = getattr(self.scan, "implementation", None)

    def runner(self, backend: str) -> Runner:
        found = self.runners.get(backend)
        if found is None:
            loop = dataclasses.replace(self.loop, backend=backend)
            found = self.runners[backend] = scan_backends.runner(backend)(loop, *self.args)
        return found

    def key(self, env: Env, m: nn.Module) -> Key | None:
        """(device kind, dtype, rows, T, N, grad mode) of this call; None where no floating
        tensor shows the device and dtype."""
        loop = self.loop
        h0 = [init(env, m) for init in self.inits]
        captures = [env[ref] for ref, _, _ in loop.captures]
        like = next((v for v in [*h0, *captures] if isinstance(v, torch.Tensor) and v.is_floating_point()), None)
        if like is None:
            return None
        shapes = [tuple(v.shape[: v.dim() - core]) for (_, lifted, core), v in zip(loop.captures, captures)
                  if lifted and isinstance(v, torch.Tensor)]
        shapes += [tuple(h.shape[: h.dim() - len(size)]) for h, size in zip(h0, loop.carry_sizes)
                   if isinstance(h, torch.Tensor)]
        rows = math.prod(torch.broadcast_shapes(*shapes)) if shapes else 1
        backward = torch.is_grad_enabled() and (any(c.requires_grad for c in captures if isinstance(c, torch.Tensor))
                                                or any(p.requires_grad for p in m.parameters()))
        dtype = str(like.dtype).removeprefix("torch.")
        return like.device.type, dtype, int(rows), int(self.length(env, m)), self.N, backward

    def choice(self, key: Key, env: Env | None = None, m: nn.Module | None = None) -> str:
        """The backend for calls of this key: the model's cheapest, or, where candidates are
        predicted within ``scan_cost.margin`` of it and the call is at hand, the fastest measured."""
        found = self.cache.get(key)
        if found is None:
            device, dtype, rows, T, N, backward = key
            sizes = scan_cost.CallSizes(rows, T, N, self.hidden, self.statements)
            found, known = scan_cost.choose(self.loop.plan, device, dtype, sizes, backward)
            close = scan_cost.close(self.loop.plan, known, backward)
            if len(close) > 1 and env is not None and m is not None and len(self.measured) < MEASURE_SHAPES:
                times = self.measure(close, env, m, backward)
                self.measured[key] = times
                found = min(times, key=times.__getitem__)
            self.cache[key] = found
        return found

    def measure(self, backends: list[str], env: Env, m: nn.Module, backward: bool) -> dict[str, float]:
        """Each backend's seconds on this call (see the module doc), leaving no trace: the
        environment, the RNG, ``.grad`` and the scans' stats and words are as before."""
        scans = [s for s in (getattr(self.runner(b), "scan", None) for b in backends) if s is not None]
        saved = [(s, dataclasses.replace(s.stats) if dataclasses.is_dataclass(getattr(s, "stats", None)) else None,
                  getattr(s, "implementation", None)) for s in scans]
        times = {b: math.inf for b in backends}
        with torch.random.fork_rng(devices=[]):
            for backend in backends:
                self.trial(backend, env, m, backward)
            spent, rounds, timing = 0.0, 0, list(backends)
            while rounds < MEASURE_ROUNDS or (rounds < MEASURE_MAX_ROUNDS and spent < MEASURE_BUDGET_S):
                for backend in timing:
                    seconds = self.timer(backend, lambda: self.trial(backend, env, m, backward))
                    times[backend] = min(times[backend], seconds)
                    spent += seconds
                rounds += 1
                best = min(times.values())
                timing = [b for b in timing if times[b] <= MEASURE_DROP * best]
        for scan, stats, words in saved:
            if stats is not None:
                scan.stats.__dict__.update(dataclasses.asdict(stats))
            if hasattr(scan, "implementation"):
                scan.implementation = words
        return times

    def trial(self, backend: str, env: Env, m: nn.Module, backward: bool) -> None:
        """One run of ``backend`` on a copy of the environment, and the backward of what it wrote
        down to its captures (cut from what computed them, so the graph before the scan is
        neither walked nor freed)."""
        trial = dict(env)
        cut = []
        if backward:
            for ref, _, _ in self.loop.captures:
                value = env[ref]
                if isinstance(value, torch.Tensor) and value.requires_grad:
                    trial[ref] = value.detach().requires_grad_()
                    cut.append(trial[ref])
        self.runner(backend)(trial, m)
        if not backward:
            return
        outs = [v for k, v in trial.items() if isinstance(v, torch.Tensor) and v.requires_grad and env.get(k) is not v
                and all(v is not c for c in cut)]
        wrt = [p for p in m.parameters() if p.requires_grad] + cut
        if outs and wrt:
            torch.autograd.grad([o.sum() for o in outs], wrt, allow_unused=True, retain_graph=True)

    def decide(self, env: Env, m: nn.Module) -> tuple[str, str | None]:
        """(the backend to run, the device kind) for this call."""
        key = None if torch.compiler.is_compiling() or self.fused() else self.key(env, m)
        return (self.loop.backend, None) if key is None else (self.choice(key, env, m), key[0])

    def __call__(self, env: Env, m: nn.Module) -> None:
        captures = [env[ref] for ref, _, _ in self.loop.captures]
        backward = torch.is_grad_enabled() and (any(isinstance(c, torch.Tensor) and c.requires_grad for c in captures)
                                                or any(p.requires_grad for p in m.parameters()))
        backend, device = self.memo.get([backward, *(read(env, m) for read in self.reads)],
                                        lambda: self.decide(env, m))
        if backend == self.loop.backend and self.ran not in (None, backend) and self.scan is not None:
            self.scan.implementation = self.base  # the primary's own words again
        self.runner(backend)(env, m)
        self.ran = backend
        if self.scan is not None and backend != self.loop.backend:
            ran = getattr(self.runners[backend], "scan", None)
            what = getattr(ran, "implementation", None) or implementation(backend, device)
            self.scan.implementation = f"{what}: auto, predicted faster than {self.loop.backend} at these sizes"

    def fused(self) -> bool:
        """A Newton solve fused with its neighbours (the Triton path) is not swapped out."""
        solver = getattr(self.scan, "solver", None)
        return bool(getattr(solver, "fuse", False))


def by_cost(loop: Loop, body, inits, results, length) -> Runner:
    """The runner of a scan statement: the pass's backend's, or, where `auto` chose it and the
    plan admits another backend with a model, an AutoScan choosing per call."""
    plan = loop.plan
    make = scan_backends.runner(loop.backend)
    if plan is None or plan.requested not in (None, "auto") or len(scan_cost.switchable(plan)) < 2 \
            or loop.backend not in scan_cost.switchable(plan):
        return make(loop, body, inits, results, length)
    auto = AutoScan(loop, body, inits, results, length)

    def run_auto(env: Env, m: nn.Module) -> None:
        auto(env, m)

    if auto.scan is not None:
        run_auto.scan = auto.scan  # type: ignore[attr-defined]
    run_auto.auto = auto  # type: ignore[attr-defined]
    return run_auto


def auto_scans(module: nn.Module) -> list[AutoScan]:
    """The scans of a compiled module (its sub-blocks' included) that `auto` chooses for per
    call; each one's ``ran`` names the backend its last call ran."""
    found = []
    for sub in module.modules():
        run = getattr(sub, "_ncd_run", None)
        for step in getattr(run, "steps", ()):
            if hasattr(step, "auto"):
                found.append(step.auto)
    return found
