"""Sizes only a call's inputs fix (issue 9): a derived axis that must divide, a window that must fit,
an axis two inputs carry, a value larger than the memory limit. Each is a located NcdError naming
the axis and its constraint, raised at the module's entry before any op runs (never torch's
RuntimeError from a reshape or a conv)."""
from __future__ import annotations

import pytest
import torch

import ncd
from hostile_harness import assert_ncd_error, run_python, write_spec

DERIVED = "# derived\naxis T, P = 4, S = T / P, D = 3\nblock F(x: [T, D]) -> [S, P, D] {\n    return x[T -> S P]\n}\n"
POOL = ("# pool\naxis T, Th, C = 2\nblock F(x: [C, T]) -> [C, Th] {\n"
        "    return maxpool(x, over = [T] -> [Th], size = 4)\n}\n")
CONV = ("# conv\naxis T, T2, C = 2, K = 5\nblock F(x: [C, T]) -> [C, T2] {\n    param W: [C', C, K] init normal(0, 0.2)\n"
        "    return conv(x, W, over = [T] -> [T2], kernel = [K], stride = 2)[C' -> C]\n}\n")
TWO = "# two inputs\naxis T, D = 3\nblock F(x: [T, D], y: [T, D]) -> [T, D] {\n    return x + y\n}\n"
SCORES = "# scores\naxis T, D = 2\nblock F(x: [T, D]) -> [T, T'] {\n    return x @[D] x[T as T']\n}\n"


def _call(spec: str, shapes: list[tuple[int, ...]], **load: object) -> str:
    args = ", ".join(f"{k}={v!r}" for k, v in load.items())
    inputs = ", ".join(f"torch.randn{s}" for s in shapes)
    return f"import ncd, torch\nm = ncd.load({spec!r}{', ' + args if args else ''})\nprint(tuple(m({inputs}).shape))\n"


@pytest.mark.parametrize("text, shape, line, needles", [
    (DERIVED, (2, 6, 3), 2, ["axis S", "T = 6", "multiple of 4"]),
    (POOL, (2, 2, 3), 4, ["axis Th", "maxpool", "T = 3", "T ≥ 4"]),
    (CONV, (2, 2, 3), 5, ["axis T2", "conv", "T = 3", "T ≥ 5"]),
])
def test_call_time_size_constraint(tmp_path, text, shape, line, needles):
    spec = write_spec(tmp_path, text)
    out = assert_ncd_error(run_python(_call(spec, [shape])), *needles, line=line)
    assert "RuntimeError" not in out.output


@pytest.mark.parametrize("text, shape, want", [(DERIVED, (2, 8, 3), (2, 2, 4, 3)), (POOL, (2, 2, 8), (2, 2, 2)),
                                               (CONV, (2, 2, 9), (2, 2, 3))])
def test_sizes_that_meet_the_constraint_run(tmp_path, text, shape, want):
    m = ncd.load(write_spec(tmp_path, text))
    assert tuple(m(torch.randn(*shape)).shape) == want
    assert tuple(m(torch.randn(*shape)).shape) == want  # the second call hits the cache


def test_two_inputs_disagree_on_a_free_axis(tmp_path):
    spec = write_spec(tmp_path, TWO)
    assert_ncd_error(run_python(_call(spec, [(4, 3), (5, 3)])), "axis T", "4", "5", "input y", line=3)


def test_forward_values_within_memory_limit(tmp_path):
    """The scores [T, T'] of a 20000-long input are 1.6 GB: refused under a 64 MB limit before
    they are computed, at the op that computes them; a short input runs."""
    spec = write_spec(tmp_path, SCORES)
    out = assert_ncd_error(run_python(_call(spec, [(20000, 2)], memory_limit="64MB")),
                           "memory limit", "contract", line=4)
    assert "20000" in out.output or "4e+08" in out.output or "400000000" in out.output
    m = ncd.load(spec, memory_limit="64MB")
    x = torch.randn(100, 2)
    torch.testing.assert_close(m(x), x @ x.T)


def test_memory_limit_counts_the_batch(tmp_path):
    """A value of [D] is small per example; a batch of 10^7 of them is not."""
    spec = write_spec(tmp_path, "# batch\naxis D = 64\nblock F(x: [D]) -> [D, D'] {\n    return x * x[D as D']\n}\n")
    m = ncd.load(spec, memory_limit="100MB")
    with pytest.raises(ncd.NcdError, match="memory limit"):
        m(torch.randn(1, 64).expand(10**7, 64))  # a view: the input itself takes 256 bytes
    assert m(torch.randn(8, 64)).shape == (8, 64, 64)
