"""Inputs that once ended in a traceback, each in a child process: a located NcdError, a clean
usage error, or a result; never a traceback, never a stray file."""
from pathlib import Path

import pytest

from hostile_harness import assert_bounded, assert_ncd_error, assert_ok, run_cli, run_python

HEAD = "axis D = 4, E = 3\naxis T\n"


def body(line: str) -> str:
    return HEAD + "block F(x: [T, D]) -> [T, D] {\n  " + line + "\n}\n"


POOL = "axis C = 2, Y = 3, Yh, T\nblock F(x: [C, Y]) -> [C, Yh] {\n  return maxpool(x, over = [Y] -> [Yh], size = 8)\n}\n"
CASES = {
    "wire-divided-by-zero": (body("return x / 0"), "division by zero", 4),
    "clamp-without-bounds": (body("return clamp(x)"), "clamp needs a bound", 4),
    "clamp-bound-overflows": (body("return clamp(x, min = 1e300)"), "float32", 4),
    "axis-twice-in-over": (body("return sum(x, over = [D, D])"), "appears twice", 4),
    "axis-twice-in-reshape": (body("return x[D D -> E]"), "appears twice", 4),
    "pool-wider-than-its-axis": (POOL, "a size must be at least 1", 3),
}


@pytest.mark.parametrize("command", ["check", "run", "cost", "render"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_refused_at_check_by_every_command(spec, case, command):
    text, needle, line = CASES[case]
    assert_ncd_error(run_cli(command, spec(text), "--set", "T=2"), needle, line=line)


def test_non_utf8_spec(spec, tmp_path):
    path = Path(spec(HEAD))
    path.write_bytes(b"axis D = 4 # \xff\n")
    assert_ncd_error(run_cli("check", str(path)), "not UTF-8", line=1)
    assert_ncd_error(run_cli("ir", "--from-json", str(path)), "not UTF-8", line=1)


def test_unwritable_output(spec, tmp_path):
    assert_ncd_error(run_cli("compile", spec(body("return x")), "-o", str(tmp_path / "no" / "x.py")),
                     "cannot write", located=False)


def test_cost_of_a_spec_without_ops(spec):
    assert_ok(run_cli("cost", spec("axis D = 4\nblock F(x: [D]) -> [D] {\n  return x\n}\n")))


@pytest.mark.parametrize("argv", [["--set", "T=2", "T=3"], ["--seed", "-1"], ["--seed", str(2**64)]])
def test_bad_options_are_usage_errors(spec, argv):
    out = run_cli("run", spec(body("return x")), *argv)
    assert_bounded(out)
    assert out.rc == 2


def test_forward_with_an_int_tensor():
    out = run_python("import ncd, torch\n"
                     f"m = ncd.load({body('return relu(x)')!r})\n"
                     "m(torch.ones(2, 4, dtype=torch.int64))\n")
    assert_ncd_error(out, "must be a floating-point tensor", "torch.int64", line=3)
