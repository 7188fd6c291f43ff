"""Every script in examples/ runs its --quick smoke mode to the end in a fresh interpreter of the
default install (no extras needed): exit status 0, no traceback, and the table or report it prints.
Marked slow: together they take minutes on a 2-core machine."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "examples").glob("*.py"))


def test_there_are_examples_and_each_has_a_quick_mode():
    assert len(EXAMPLES) >= 8
    for path in EXAMPLES:
        assert '"--quick"' in path.read_text(encoding="utf-8"), f"{path.name} has no --quick smoke mode"


@pytest.mark.slow
@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_example_quick_mode_runs(path, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(path), "--quick"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, f"{path.name} --quick failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    assert "Traceback" not in proc.stderr
    assert proc.stdout.strip(), f"{path.name} --quick printed nothing"
