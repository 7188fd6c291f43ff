"""The default install (no extras) runs the linear recurrences: triton is optional for real.

A child process gets a `sitecustomize` on its PYTHONPATH whose meta-path finder makes
`import triton` (and `import scipy`, a test-only package) raise ImportError, as on a machine
where neither is installed. There the library's linear-recurrence specs and a user's
accumulator scan run forward and backward through the PyTorch twins, and their outputs and
gradients equal the same runs in this process, where triton is importable. An explicit
Triton request names the `ncd[triton]` extra, and `ncd run` says which implementation ran.
"""
from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import ncd

BLOCKER = textwrap.dedent("""
    import sys

    class _Missing:
        # Behave as if the optional and test-only packages were not installed; log each attempt.
        blocked = ("triton", "scipy", "hypothesis", "fla", "pytest", "xdist")
        attempts = []

        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in self.blocked:
                self.attempts.append(name)
                raise ImportError(f"No module named {name!r} (blocked by the test)", name=name)
            return None

    sys.meta_path.insert(0, _Missing())
""")

ACCUMULATOR = textwrap.dedent("""
    axis T, D = 6

    block Acc(x: [T, D]) -> [T, D] {
        param a: [D] init uniform(-1, 1)
        return scan t over T carry (h: [D] = 0) {
            h = a * h + x[t]
            emit 2 * h
        }
    }
""")

# (spec, sizes, its input's width D, the backend the recurrence pass picks for its scan)
CASES = [("gla", {"T": 7}, 64, "gla"), ("deltanet", {"T": 7}, 64, "delta"), ("mamba_negeig", {"T": 7}, 16, "scan"),
         ("accumulator", {"T": 9}, 6, "scan")]


def _run_here(path: str, sizes: dict[str, int], width: int) -> dict[str, torch.Tensor]:
    """One forward and backward from seed 0: the child runs this very function (its source), so
    here (triton importable) and there (not) make the same draws."""
    torch.manual_seed(0)
    module = ncd.load(path, **sizes).double()
    x = torch.randn(2, sizes["T"], width, dtype=torch.float64, requires_grad=True)
    out = module(x)
    out.square().sum().backward()
    return {"out": out.detach(), "dx": x.grad, **{n: p.grad for n, p in module.named_parameters()}}


CHILD = textwrap.dedent("""
    import contextlib, io, json, sys
    import torch
    import ncd
    from ncd.cli import main

""") + inspect.getsource(_run_here) + textwrap.dedent("""
    def cli_run(path, sizes):
        text = io.StringIO()
        with contextlib.redirect_stdout(text):
            rc = main(["run", path, "--set", *(f"{k}={v}" for k, v in sizes.items()), "--backward", "--json"])
        return {"rc": rc, "record": json.loads(text.getvalue()) if rc == 0 else None}

    def explicit_triton():
        from ncd.backends.triton.diagonal import diag_scan
        try:
            diag_scan(torch.zeros(1, 2, 3), torch.zeros(1, 2, 3), backend="triton")
        except ImportError as err:
            return str(err)
        return None

    cases = json.loads(sys.argv[1])
    torch.save({spec: _run_here(path, sizes, width) for spec, path, sizes, width in cases}, sys.argv[2])
    # T long enough that auto's cost model runs the parallel path, not the loop (auto_scan.py)
    report = {"cli": {spec: cli_run(path, {**sizes, "T": 512}) for spec, path, sizes, _ in cases},
              "triton_error": explicit_triton(),
              "attempts": sorted(set(next(f for f in sys.meta_path if hasattr(f, "attempts")).attempts))}
    print(json.dumps(report))
""")


@pytest.fixture(scope="module")
def blocked_env(tmp_path_factory) -> dict[str, str]:
    site = tmp_path_factory.mktemp("no_triton")
    (site / "sitecustomize.py").write_text(BLOCKER)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(site), *filter(None, [env.get("PYTHONPATH")])])
    env.pop("TRITON_INTERPRET", None)
    return env


@pytest.fixture(scope="module")
def accumulator(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("spec") / "accumulator.ncd"
    path.write_text(ACCUMULATOR)
    return path


def _path(spec: str, accumulator: Path) -> str:
    return str(accumulator) if spec == "accumulator" else spec


def _child(env: dict[str, str], code: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True, text=True,
                          timeout=600)


@pytest.fixture(scope="module")
def child(blocked_env, accumulator, tmp_path_factory) -> dict:
    """One child process without triton: its tensors, its `ncd run` records, what it imported."""
    cases = [(spec, _path(spec, accumulator), sizes, width) for spec, sizes, width, _ in CASES]
    out = tmp_path_factory.mktemp("child") / "child.pt"
    proc = _child(blocked_env, CHILD, json.dumps(cases), str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {"tensors": torch.load(out), **json.loads(proc.stdout.strip().splitlines()[-1])}


def test_blocker_hides_triton(blocked_env):
    proc = _child(blocked_env, "import triton")
    assert proc.returncode != 0 and "ImportError" in proc.stderr


def test_only_triton_is_looked_for(child):
    """The default path asks whether triton is installed (and falls back); it never tries scipy
    or another test-only package."""
    assert set(child["attempts"]) <= {"triton"}, child["attempts"]


@pytest.mark.parametrize("spec,sizes,width,backend", CASES, ids=[c[0] for c in CASES])
def test_linear_recurrence_runs_without_triton(child, accumulator, spec, sizes, width, backend):
    path = _path(spec, accumulator)
    assert [p.backend for p in ncd.load(path, **sizes).scan_plans] == [backend]  # the parallel path
    got, here = child["tensors"][spec], _run_here(path, sizes, width)
    assert got.keys() == here.keys()
    for name, want in here.items():
        assert want is not None and got[name] is not None, name
        torch.testing.assert_close(got[name], want, rtol=1e-12, atol=1e-12, msg=name)
    # and the parallel run agrees with the sequential loop, an independent path through the step
    torch.manual_seed(0)
    module = ncd.load(path, scan_backend="sequential", **sizes).double()
    x = torch.randn(2, sizes["T"], width, dtype=torch.float64)
    torch.testing.assert_close(module(x), got["out"], rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("spec,backend", [(c[0], c[3]) for c in CASES], ids=[c[0] for c in CASES])
def test_ncd_run_names_the_pytorch_twin(child, spec, backend):
    run = child["cli"][spec]
    assert run["rc"] == 0
    (scan,) = run["record"]["scans"]
    assert scan["backend"] == backend
    assert "PyTorch" in scan["implementation"] and "triton not installed" in scan["implementation"], scan


def test_explicit_triton_request_names_the_extra(child):
    assert child["triton_error"] is not None and "pip install 'ncd[triton]'" in child["triton_error"]
