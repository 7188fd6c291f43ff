"""Hostile-input suite: every case runs in a child process (tests/hostile/hostile_harness.py)."""
from pathlib import Path

import pytest

from hostile_harness import write_spec


@pytest.fixture
def spec(tmp_path: Path):
    """spec(text) -> the path of a .ncd file holding text (outside the child's working directory)."""
    counter = iter(range(10**6))
    return lambda text, name=None: write_spec(tmp_path, text, name or f"spec{next(counter)}.ncd")
