"""Specs written from docs/language.md alone, as a new user would: whatever `ncd check` accepts runs.

Each file in tests/docs_specs/ says in its header what it expects:

- ``# expect: ok``: it checks, and at each ``# sizes:`` set (``T=3,D=4 | T=5``; ``B`` is the
  batch) it loads, runs forward and backward in float64, and the emitted Python (`ncd compile`)
  gives the same outputs from the same state_dict (and seed, for specs marked ``# seeded``).
  ``# bad-sizes:`` sets violate its declarations: an NcdError with a line, at check or at load.
- ``# expect-error: TEXT``: `ncd check` refuses it with an NcdError whose message or hint holds
  TEXT, located at a line and column, with a hint.

A sample also goes through the command line as a user runs it (check, run --backward, compile).
"""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import ncd
from ncd.api import load_compiled, run_pipeline
from ncd.backends.pytorch.emit import emit_python
from ncd.cli.common import axis_size
from ncd.samples import random_input

HERE = Path(__file__).parent / "docs_specs"
SPECS = sorted(HERE.glob("*.ncd"))
SEED = 11


def _header(path: Path) -> dict[str, str]:
    """The ``# key: value`` lines at the top of a spec (the first is its title)."""
    out: dict[str, str] = {}
    for line in path.read_text().splitlines()[1:]:
        if not line.startswith("#"):
            break
        key, _, value = line[1:].strip().partition(":")
        out[key.strip()] = value.strip()
    return out


def _size_sets(text: str | None) -> list[dict[str, int]]:
    if not text:
        return [{}]
    sets = []
    for part in text.split("|"):
        pairs = [p.split("=") for p in part.replace(",", " ").split()]
        sets.append({k: int(v) for k, v in pairs})
    return sets


def _emitted(source: str, tmp: Path):
    path = tmp / "docs_spec_emitted.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("docs_spec_emitted", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # ncd's own output for a spec of this folder
    return module


def _inputs(ir, batch: int) -> list[torch.Tensor]:
    torch.manual_seed(SEED)
    out = []
    for port in ir.entry_block.inputs:
        shape = [axis_size(ir, a) for a in port.type.axes]
        assert None not in shape, f"input {port.name}: an unbound axis in {port.type.axes}"
        out.append(random_input(port.type, [batch, *shape], torch.float64, port.type.dtype == "float"))
    return out


def _as_tuple(value) -> tuple:
    return value if isinstance(value, tuple) else (value,)


def run_ok(path: Path, head: dict[str, str], tmp: Path, every_size: bool = False) -> None:
    """Check, then load and run at the first size set (every set with ``every_size``)."""
    ncd.check(path)  # with no sizes at all
    seeded = "seeded" in head
    sets = _size_sets(head.get("sizes"))
    for sizes in sets if every_size else sets[:1]:
        sizes = dict(sizes)
        batch = sizes.pop("B", 2)
        compiled = run_pipeline(path, **sizes)  # what ncd.check and ncd.load both run, run once
        ir = compiled.ir
        torch.manual_seed(SEED)
        module = load_compiled(compiled, seed=SEED if seeded else None).double()
        inputs = _inputs(ir, batch)
        outs = _as_tuple(module(*inputs))
        loss = sum(o.double().sum() for o in outs if o.requires_grad)
        if isinstance(loss, torch.Tensor):
            loss.backward()
        grads = [p.grad for p in module.parameters()]
        assert all(g is None or torch.isfinite(g).all() for g in grads), f"{path.name}: a non-finite gradient"
        emitted = getattr(_emitted(emit_python(ir, class_name="Entry", passes=compiled.passes), tmp), "Entry")().double()
        emitted.load_state_dict(module.state_dict())
        if seeded:
            module.manual_seed(SEED)
            emitted.manual_seed(SEED)
            outs = _as_tuple(module(*inputs))
        again = _as_tuple(emitted(*inputs))
        assert len(again) == len(outs)
        for a, b in zip(outs, again):
            torch.testing.assert_close(b, a, rtol=1e-9, atol=1e-9)
    bad = _size_sets(head.get("bad-sizes")) if head.get("bad-sizes") else []
    for sizes in bad:
        with pytest.raises(ncd.NcdError) as info:
            ir = ncd.check(path, **sizes)
            ncd.load(path, **sizes).double()(*_inputs(ir, 2))
        assert info.value.line is not None, f"{path.name} at {sizes}: unlocated {info.value}"


def run_error(path: Path, head: dict[str, str]) -> None:
    with pytest.raises(ncd.NcdError) as info:
        ncd.check(path)
    err = info.value
    assert head["expect-error"] in f"{err.message} {err.hint or ''}", str(err)
    assert err.line is not None and err.col is not None, f"unlocated: {err}"
    assert err.hint, f"no hint: {err}"


@pytest.mark.parametrize("path", SPECS, ids=[p.stem for p in SPECS])
def test_docs_spec(path: Path, tmp_path: Path) -> None:
    head = _header(path)
    if "expect-error" in head:
        run_error(path, head)
    else:
        assert head.get("expect") == "ok", f"{path.name}: no expectation in its header"
        run_ok(path, head, tmp_path)


OK_SPECS = [p for p in SPECS if "expect-error" not in _header(p)]


@pytest.mark.slow
@pytest.mark.parametrize("path", OK_SPECS, ids=[p.stem for p in OK_SPECS])
def test_docs_spec_every_size(path: Path, tmp_path: Path) -> None:
    run_ok(path, _header(path), tmp_path, every_size=True)


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    return subprocess.run([sys.executable, "-m", "ncd.cli", *args], capture_output=True, text=True, env=env,
                          timeout=300)


CLI_SAMPLE = ["gla_heads", "conv_grouped", "halting_graves", "import_file"]


@pytest.mark.slow
@pytest.mark.parametrize("stem", CLI_SAMPLE)
def test_cli_runs_what_checks(stem: str, tmp_path: Path) -> None:
    path = str(HERE / f"{stem}.ncd")
    sizes = [f"{k}={v}" for k, v in _size_sets(_header(HERE / f"{stem}.ncd").get("sizes"))[0].items()]
    assert _cli("check", path).returncode == 0
    run = _cli("run", path, "--backward", "--json", *(["--set", *sizes] if sizes else []))
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["outputs"]
    out = tmp_path / "m.py"
    assert _cli("compile", path, "-o", str(out)).returncode == 0
    assert "class" in out.read_text()


def test_cli_rejects_with_a_location() -> None:
    stems = ["err_bad_backend", "err_typo_name", "err_python_import"]
    res = _cli("check", *(str(HERE / f"{s}.ncd") for s in stems), "--json")  # one process for all three
    assert res.returncode == 1
    assert "Traceback" not in res.stderr
    records = json.loads(res.stdout)
    assert len(records) == len(stems)
    for record in records:
        error = record["error"]
        assert error["line"] and error["col"] and error["hint"], record


@pytest.mark.parametrize("spec, backend", [("gla", "delta"), ("deltanet", "gla")])
def test_a_chunked_kernel_refuses_the_other_kernels_recurrence(spec: str, backend: str) -> None:
    """--scan-backend delta on GLA's step ran the delta runner and died with KeyError: 'beta'."""
    with pytest.raises(ncd.NcdError, match=f"scan backend '{backend}' cannot run this scan") as info:
        ncd.load(spec, scan_backend=backend, T=3)
    assert info.value.line is not None and info.value.hint


def test_a_comparison_literal_follows_the_compared_wire() -> None:
    """`x > 0.5` typed its 0.5 as the boolean result and the verifier refused the IR."""
    spec = ("axis T = 3\nblock F(ids: [T] int, x: [T]) -> [T], [T] {\n"
            "  return as_float(ids == 2), x * (x > 0.5) + (x <= -0.25)\n}\n")
    ids, x = torch.tensor([[0, 2, 1]]), torch.tensor([[0.6, 0.2, -0.3]])
    hit, y = ncd.load(spec)(ids, x)
    torch.testing.assert_close(hit, (ids == 2).float())
    torch.testing.assert_close(y, x * (x > 0.5) + (x <= -0.25).float())
