"""The user-facing entry points: check a spec, load it as a torch module."""
from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ncd import pipeline
from ncd.errors import NcdError
from ncd.ir import SpecIR
from ncd.limits import parse_bytes
from ncd.source import read_text, strip_bom


def read_spec(path_or_text: str | os.PathLike[str]) -> tuple[str, str]:
    """(source, display name): a path to a .ncd file, a library spec name, or spec text itself."""
    text = os.fspath(path_or_text)
    if "\n" not in text and "{" not in text:
        path = Path(text)
        if path.suffix == ".ncd" or _probe(path.exists):
            if not _probe(path.is_file):
                raise NcdError(f"no such spec file: {_clip(text)}")
            return read_text(path), str(path)
        from ncd.library import library_path

        found = _probe(lambda: library_path(text))
        if found:
            return read_text(found), str(found)
        raise NcdError(f"no such spec file or library spec: {_clip(text)}", hint="ncd list shows the library")
    return strip_bom(text), "<spec>"


def _clip(name: str) -> str:
    return name if len(name) <= 200 else name[:200] + "…"


def _probe(ask: Callable[[], Any]) -> Any:
    """A file-system question; a name no file can have (too long, a NUL byte in it) answers no."""
    try:
        return ask()
    except (OSError, ValueError):
        return None


def check(path_or_text: str | os.PathLike[str], /, *, block: str | None = None,
          sizes: Mapping[str, int] | None = None, **more_sizes: int) -> SpecIR:
    """Parse and type-check a spec, and run the passes (so a scan's ``via`` backend is held to
    what it can run); returns its IR (axes still symbolic where unbound).

    Sizes bind axes: ``check(spec, D=64)``; ``sizes={"block": 3}`` binds axes whose names
    collide with this function's keywords."""
    source, name = read_spec(path_or_text)
    return pipeline.compile_spec(source, name, {**(sizes or {}), **more_sizes}, block).ir


def run_pipeline(path_or_text: str | os.PathLike[str], /, *, block: str | None = None, scan_backend: str = "auto",
                 sizes: Mapping[str, int] | None = None, **more_sizes: int) -> pipeline.Compiled:
    """The whole pipeline (ncd/pipeline.py): the checked IR and the passes' results (scan plans,
    fusion plan) that the torch backend, the analyzer and `--explain` read."""
    source, name = read_spec(path_or_text)
    return pipeline.compile_spec(source, name, {**(sizes or {}), **more_sizes}, block, scan_backend)


def load(path_or_text: str | os.PathLike[str], /, *, block: str | None = None, scan_backend: str = "auto",
         sizes: Mapping[str, int] | None = None, fuse_scans: bool = False, memory_limit: int | str | None = None,
         seed: int | None = None, compile_steps: bool | str = False, **more_sizes: int):
    """Compile a spec to an in-process ``torch.nn.Module`` with the given axis sizes bound.

    ``fuse_scans=True`` compiles each Newton step of the newton-backed scans into one fused
    graph (torch.compile; the first call per shape pays the compile). ``memory_limit`` (bytes,
    or text such as ``"8GB"``) caps the parameters, buffers and constants, checked before any is
    allocated; the default is half of this process's memory (docs/limits.md). ``seed`` seeds the
    module's own generator for its draws (dropout, uniform, normal, categorical): the same seed
    gives the same draws here and in the emitted Python (``module.manual_seed(seed)`` reseeds);
    None draws from torch's global generator (``torch.manual_seed``). Parameters are initialised
    from torch's global generator either way. ``compile_steps=True`` (or a torch.compile backend
    name) runs each sequential scan's step as a torch.compile graph, compiled once per shape,
    eager where it cannot compile (backends/pytorch/compiled_step.py); off by default.
    """
    source, name = read_spec(path_or_text)
    compiled = pipeline.compile_spec(source, name, {**(sizes or {}), **more_sizes}, block, scan_backend)
    return load_compiled(compiled, fuse_scans=fuse_scans, memory_limit=memory_limit, seed=seed,
                         compile_steps=compile_steps)


def load_compiled(compiled: pipeline.Compiled, *, fuse_scans: bool = False, memory_limit: int | str | None = None,
                  seed: int | None = None, compile_steps: bool | str = False):
    """``load`` from a spec already through the pipeline (``run_pipeline``): the torch module is
    lowered from those passes' results, so a caller that also needs the IR runs the passes once."""
    from ncd.backends.pytorch import compile_module

    try:
        limit = None if memory_limit is None else parse_bytes(memory_limit, "memory_limit")
        module = compile_module(compiled.ir, fuse_scans=fuse_scans, passes=compiled.passes, memory_limit=limit)
    except NcdError as exc:
        raise exc.located(compiled.source, compiled.name) from None
    module.locate_errors(compiled.source, compiled.name)
    module._ncd_scan_backend = compiled.passes.scan_backend  # module.entry("B") compiles a sibling entry the same way
    if seed is not None:
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**64:
            raise NcdError(f"seed must be an integer from 0 to 2^64-1, got {seed!r}", hint="ncd.load(spec, seed=0)")
        module.manual_seed(seed)
    if compile_steps is not False:
        from ncd.backends.pytorch.compiled_step import enable

        if not (compile_steps is True or (isinstance(compile_steps, str) and compile_steps)):
            raise NcdError(f"compile_steps must be True, False or a torch.compile backend name, got {compile_steps!r}",
                           hint="ncd.load(spec, compile_steps=True)")
        enable(module, compile_steps)
    return module
