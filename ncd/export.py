"""torch.export for compiled specs: free axes become dynamic dims, derived axes derived dims.

Each entry input's leading (lifted) dims and its free axes are ``torch.export.Dim``s; an axis
whose size is a formula in a free axis is a derived dim of it (``axis S = T / 2`` makes T the
derived ``2·S``, since torch derives dims by ``a·d + b`` with integer ``a``). Axes fixed by the
bound sizes stay static. Scans run as torch's scan operator while exporting (see
``backends/pytorch/module.py``), so a scanned axis stays dynamic too; every scan is exported
with the sequential backend (the parallel ones are solvers torch.export cannot trace).
"""
from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sympy
import torch

from ncd.errors import NcdError
from ncd.ir import HALTING

EXAMPLE_SIZE = 8  # a free axis' size in the example inputs (torch.export specialises 0 and 1)
EXAMPLE_BATCH = 2


@dataclass
class DimPlan:
    """How each input dim is exported: a Dim, a derived dim, or static (None)."""

    shapes: list[dict[int, Any]] = field(default_factory=list)  # per input: dim index → Dim
    examples: list[tuple[int, ...]] = field(default_factory=list)  # per input: an example shape
    dims: dict[str, str] = field(default_factory=dict)  # axis → how it is exported, for messages


def _safe(name: str) -> str:
    return "d_" + name.replace("'", "_prime")  # sympy reads some bare names (S, E, I, N, O, Q)


def plan_dims(model, sizes: Mapping[str, int] | None = None, batch_dims: int = 1) -> DimPlan:
    """The dynamic shapes of ``model``'s inputs and example inputs at ``sizes`` (free axes)."""
    from torch.export import Dim

    from ncd.analysis.sizes import SizeEnv

    ir = model._ncd_spec
    env = SizeEnv(ir)
    sizes = dict(sizes or {})
    program = model._ncd_program
    ports = {p.name: p for p in ir.blocks[model._ncd_block].inputs}
    # each free axis of an input as a * root + b, a rational
    forms: dict[str, tuple[sympy.Symbol, sympy.Rational, sympy.Integer] | None] = {}
    for _, _, axes, bound in program.inputs:
        for axis, size in zip(axes, bound):
            if size is not None or axis in forms:
                continue
            expr = sympy.expand(env(axis).subs(env.values))
            free = sorted(expr.free_symbols, key=lambda s: s.name)
            poly = sympy.Poly(expr, *free) if len(free) == 1 else None
            if poly is None or poly.total_degree() != 1 or not all(c.is_Rational for c in poly.all_coeffs()):
                forms[axis] = None
                continue
            a, b = poly.all_coeffs()
            forms[axis] = (free[0], sympy.Rational(a), sympy.Rational(b))
    units: dict[sympy.Symbol, int] = {}  # root → L: the root is L·U for a fresh Dim U
    for form in [*forms.values(), *_derived_forms(ir, env, {f[0] for f in forms.values() if f is not None})]:
        if form is not None:
            root, a, b = form
            units[root] = math.lcm(units.get(root, 1), int(a.q), int(b.q))
    roots: dict[sympy.Symbol, tuple[Any, int]] = {}
    for root, unit in units.items():
        name = root.name if unit == 1 else f"{root.name}_over_{unit}"
        want = sizes.get(root.name, EXAMPLE_SIZE)
        example = max(2, -(-want // unit))
        roots[root] = (Dim(_safe(name), min=1), example)
    plan = DimPlan()
    batch = [Dim(_safe(f"batch{i}" if batch_dims > 1 else "batch"), min=1) for i in range(batch_dims)]
    for _, port, axes, bound in program.inputs:
        lifted = ports[port].type.lifted if port in ports else True
        lead = batch_dims if lifted else 0
        shape: dict[int, Any] = {i: batch[i] for i in range(lead)}
        example = [sizes.get("batch", EXAMPLE_BATCH)] * lead
        for k, (axis, size) in enumerate(zip(axes, bound)):
            form = forms.get(axis)
            if size is not None:
                example.append(int(size))
                continue
            if form is None:
                raise NcdError(f"axis {axis} of input {port} has no size torch.export can express",
                               hint=f"bind it: --set {axis}=N")
            root, a, b = form
            unit_dim, unit_example = roots[root]
            scale, offset = int(a * units[root]), int(b)
            dim = unit_dim if (scale, offset) == (1, 0) else scale * unit_dim + offset
            shape[lead + k] = dim
            example.append(scale * unit_example + offset)
            plan.dims[axis] = "dynamic" if (scale, offset) == (1, 0) else f"derived: {scale}*{unit_dim.__name__}" + (
                f" + {offset}" if offset else "")
        plan.shapes.append(shape)
        plan.examples.append(tuple(example))
    return plan


def _linear_form(expr: sympy.Expr) -> tuple[sympy.Symbol, sympy.Rational, sympy.Rational] | None:
    """``a·root + b`` with rational a and b, or None."""
    free = sorted(expr.free_symbols, key=lambda s: s.name)
    if len(free) != 1:
        return None
    poly = sympy.Poly(expr, *free)
    if poly.total_degree() != 1 or not all(c.is_Rational for c in poly.all_coeffs()):
        return None
    a, b = poly.all_coeffs()
    return free[0], sympy.Rational(a), sympy.Rational(b)


def _derived_forms(ir, env, roots: set[sympy.Symbol]):
    """The axes no input carries whose size is a formula in an input's free axis (``S = T / P``
    with T on an input): T is exported as a multiple of P, so the reshape's divisibility holds
    for every size the program accepts."""
    for name, axis in ir.axes.items():
        if axis.prime_of or axis.size is None:
            continue
        try:
            form = _linear_form(sympy.expand(env(name).subs(env.values)))
        except (sympy.PolynomialError, TypeError, ValueError):
            continue
        if form is not None and form[0] in roots:
            yield form


def sequential_twin(model):
    """The same spec compiled with every scan sequential, holding ``model``'s weights."""
    from ncd.backends.pytorch import compile_module

    if all(p.backend == "sequential" for p in getattr(model, "scan_plans", [])):
        return model
    twin = compile_module(model._ncd_spec, scan_backend="sequential")
    twin.load_state_dict(model.state_dict())
    twin._ncd_source = model._ncd_source
    return twin


def _example(shape: tuple[int, ...], dtype: str) -> torch.Tensor:
    if dtype == "int":
        return torch.randint(0, 2, shape)
    if dtype == "bool":
        return torch.rand(shape) > 0.5
    return torch.randn(shape)


def export_program(model, example_inputs: Sequence[torch.Tensor] | None = None, *,
                   sizes: Mapping[str, int] | None = None, batch_dims: int = 1, strict: bool = False):
    """``torch.export.export`` of a module from ``ncd.load``: an ``ExportedProgram`` that runs at any
    size of its free axes and batch dims. Example inputs are made at ``sizes`` unless given."""
    from ncd.backends.pytorch import CompiledModule

    if not isinstance(model, CompiledModule) or not model._ncd_top:
        raise NcdError("export takes the module ncd.load returned (the whole model, not a sub-block)")
    ir = model._ncd_spec
    if any(n.op == HALTING for b in ir.blocks.values() for n in _walk(b.nodes)):
        raise NcdError("a halting loop stops when the data says so: torch.export cannot trace it",
                       hint="export a spec without `halting`, or use the emitted Python (--emit python)")
    if example_inputs is not None:
        batch_dims = example_inputs[0].dim() - len(model._ncd_program.inputs[0][2])
    plan = plan_dims(model, sizes, batch_dims)
    if example_inputs is None:
        types = {p.name: p.type.dtype for p in ir.blocks[model._ncd_block].inputs}
        example_inputs = [_example(shape, types.get(port, "float"))
                          for shape, (_, port, _, _) in zip(plan.examples, model._ncd_program.inputs)]
    runner = sequential_twin(model).eval()
    try:
        program = torch.export.export(runner, tuple(example_inputs), dynamic_shapes=(tuple(plan.shapes),),
                                      strict=strict)
    except Exception as exc:  # torch's own errors are long; the first lines say what failed
        text = "\n".join(str(exc).strip().splitlines()[:6])
        raise NcdError(f"torch.export failed on {Path(ir.name).name}: {text[:800]}",
                       hint="bind the axis it names with --set to export it as a static size") from None
    program.ncd_dims = plan.dims  # type: ignore[attr-defined]
    return program


def save_program(model, path: str | os.PathLike[str], **kwargs):
    """Export ``model`` (see ``export_program``), write it with ``torch.export.save`` (.pt2) and
    return the program (``.ncd_dims`` says how each free axis was exported)."""
    path = Path(path)
    program = export_program(model, **kwargs)
    try:
        torch.export.save(program, str(path))
    except OSError as exc:
        raise NcdError(f"cannot write {path}: {exc.strerror or exc}", hint="choose a writable output path") from None
    return program


def load_program(path: str | os.PathLike[str]):
    """A program ``save_program`` wrote (``torch.export.load``); call ``.module()`` to run it."""
    return torch.export.load(str(path))


def _walk(nodes):
    from ncd.ir import walk

    return walk(nodes)
