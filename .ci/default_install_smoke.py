"""CI smoke for the default install (no extras): `ncd run --backward` on every library spec.

Run by `make smoke-default` with a venv that has torch and `pip install -e .` only: no triton,
no scipy. Each axis a spec leaves free is bound to a small size; any failure (an NcdError, a
traceback) fails the job, so a spec that needs an optional package to run is caught here.
"""
from __future__ import annotations

import importlib.util
import sys
import time

from ncd.cli import main
from ncd.library import library_specs

import ncd

SIZE = 4  # small: this is a smoke run, the test suite checks the numbers


def free_axes(path: str) -> list[str]:
    """`NAME=SIZE` for every axis the spec declares without a size (derived axes follow)."""
    ir = ncd.check(path)
    return [f"{name}={SIZE}" for name, axis in ir.axes.items() if axis.size is None and not axis.prime_of]


def installed(package: str) -> bool:
    try:
        return importlib.util.find_spec(package) is not None
    except ImportError:
        return False


def main_smoke() -> int:
    for extra in ("triton", "scipy"):
        if installed(extra):
            print(f"smoke: {extra} is installed here; this job must run without extras", file=sys.stderr)
            return 2
    failed = []
    for path in library_specs():
        sets = free_axes(str(path))
        argv = ["run", str(path), "--backward", *(["--set", *sets] if sets else [])]
        start = time.perf_counter()
        rc = main(argv)
        print(f"smoke: ncd {' '.join(argv[:2])} {' '.join(argv[3:])} -> {rc} ({time.perf_counter() - start:.1f} s)")
        if rc != 0:
            failed.append(path.stem)
    if failed:
        print(f"smoke: failed without extras: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main_smoke())
