"""Range slices x[T = a:b as S], against Python's own slicing of torch tensors (float64, random sizes):
values, gradients, derived sizes, negative bounds, range errors at check time and at forward."""
from __future__ import annotations

import importlib.util
import random

import pytest
import torch

import ncd
from ncd import NcdError
from ncd.analysis import analyze
from ncd.backends.graphviz import render_dot
from ncd.backends.pytorch.emit import emit_python

DT = torch.float64

DIFF = """
axis T, D, S, R
block Diff(x: [T, D]) -> [S, D], [R, D] {
    d = x[T = 1: as S] - x[T = :-1 as S]       # forward differences: S = T - 1
    return d, x[T = 1:T - 1 as R] * 2          # the interior: R = T - 2
}
"""


def load_emitted(source: str, tmp_path, name: str):
    path = tmp_path / f"{name}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("seed", range(4))
def test_slices_are_python_slices_with_gradients(seed):
    rng = random.Random(seed)
    t, d, b = rng.randint(3, 12), rng.randint(1, 5), rng.randint(1, 3)
    m = ncd.load(DIFF, D=d)  # T free: read off the input
    x = torch.randn(b, t, d, dtype=DT, requires_grad=True)
    got = m(x)
    want = (x[:, 1:] - x[:, :-1], x[:, 1 : t - 1] * 2)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=0, atol=0)
    cot = [torch.randn_like(w) for w in want]
    ga = torch.autograd.grad(got, (x,), cot)
    gb = torch.autograd.grad(want, (x,), cot)
    torch.testing.assert_close(ga[0], gb[0], rtol=0, atol=0)


@pytest.mark.parametrize("seed", range(6))
def test_bounds_of_every_sign_match_python(seed):
    rng = random.Random(100 + seed)
    t = rng.randint(2, 10)
    start = rng.randint(-t, t - 1)
    stop_lo = (start if start >= 0 else t + start) + 1
    stop = rng.randint(stop_lo, t)
    stop = stop - t if rng.random() < 0.5 and stop < t else stop  # sometimes from the end
    spec = f"axis T = {t}, S\nblock F(x: [T]) -> [S] {{ return x[T = {start}:{stop} as S] }}"
    x = torch.randn(2, t, dtype=DT)
    assert int(ncd.check(spec).axes["S"].size) == len(range(t)[start:stop])
    torch.testing.assert_close(ncd.load(spec)(x), x[:, start:stop], rtol=0, atol=0)


def test_the_slice_size_is_symbolic_and_exact():
    axes = ncd.check(DIFF).axes
    assert str(axes["S"].size) == "T - 1" and str(axes["R"].size) == "T - 2"
    bound = ncd.check(DIFF, T=7).axes
    assert (int(bound["S"].size), int(bound["R"].size)) == (6, 5)


def test_bounds_by_axis_sizes():
    spec = """axis T, K = 3, W
block Win(x: [T]) -> [W] { return x[T = K:-K as W] }"""
    x = torch.randn(2, 10, dtype=DT)
    torch.testing.assert_close(ncd.load(spec)(x), x[:, 3:-3], rtol=0, atol=0)
    assert str(ncd.check(spec).axes["W"].size) == "T - 6"


@pytest.mark.parametrize("body, message", [
    ("x[T = 2:9 as S]", "the stop 9 is out of range for axis T of size 6"),
    ("x[T = -7: as S]", "the start -1 is out of range"),
    ("x[T = 4:2 as S]", "the slice 4:2 is empty"),
    ("x[T = 3:3 as S]", "the slice 3:3 is empty"),
    ("x[T = 1:]", "name the slice's axis"),
    ("x[T = 0.5: as S]", "must be a whole number"),
    ("x[D = 1: as S]", "axis D is not on this wire"),
    ("x[T = 1: as T]", "the slice's axis T is already on this wire"),
])
def test_bad_slices_are_located_check_time_errors(body, message):
    spec = f"axis T = 6, S, D\nblock F(x: [T]) -> [S] {{\n  return {body}\n}}"
    with pytest.raises(NcdError, match=message.replace("(", r"\(").replace(".", r"\.")) as info:
        ncd.check(spec)
    assert info.value.line == 3 and info.value.hint


def test_a_free_axis_too_short_is_refused_when_bound_and_at_forward():
    with pytest.raises(NcdError, match="the slice 1:1 is empty for axis T of size 2"):
        ncd.load(DIFF, T=2, D=1)
    m = ncd.load(DIFF, D=1)
    # the derived size R = T - 2 is refused as the input is read (or, failing that, the slice itself)
    with pytest.raises(NcdError, match=r"axis R = T - 2 is 0 with T = 2 \(input x\)|the slice of axis T runs 1:1") as info:
        m(torch.randn(1, 2, 1))
    assert info.value.hint
    one = ncd.load("axis T, S\nblock F(x: [T]) -> [S] { return x[T = 3: as S] }")
    with pytest.raises(NcdError, match=r"the slice of axis T runs 3:2, outside an axis of 2 positions|input x") as info:
        one(torch.randn(1, 2))
    assert info.value.hint


def test_a_slice_costs_nothing_and_is_drawn_with_its_bounds():
    report = analyze(ncd.check(DIFF, T=8, D=3), {"B": 2})
    # the only arithmetic: the difference over [B, S = 7, D] and the doubling over [B, R = 6, D]
    assert report.number(report.total["flops_fwd"]) == 2 * 7 * 3 + 2 * 6 * 3
    dot = render_dot(ncd.check(DIFF))
    assert "T = 1: as S" in dot and "T = :-1 as S" in dot


def test_emitted_python_equals_the_module(tmp_path):
    module = load_emitted(emit_python(ncd.check(DIFF, D=2), class_name="Entry"), tmp_path, "emitted_slice")
    x = torch.randn(3, 9, 2, dtype=DT)
    for a, b in zip(module.Entry()(x), ncd.load(DIFF, D=2)(x)):
        assert torch.equal(a, b)
