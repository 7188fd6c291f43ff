"""Booleans and literals: the type the checker gives is the dtype the run gives (torch as the oracle).

`where` literal branches follow the other branch (int stays int, bool stays bool); arithmetic and
reductions of booleans alone are float counts; an id outside its axis is an NcdError naming the
index wire, not torch's IndexError.
"""
from __future__ import annotations

import importlib.util
import random

import pytest
import torch

import ncd
from ncd import NcdError
from ncd.backends.pytorch.emit import emit_python


def load_emitted(source: str, tmp_path, name: str):
    path = tmp_path / f"{name}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module



TORCH_OF = {"float": torch.float64, "int": torch.int64, "bool": torch.bool}

# (spec body, declared result dtype suffix, reference on (x, y, ids) in float64)
CASES = {
    "bool-plus-bool": ("(x > 0) + (y > 0)", "", lambda x, y, i: (x > 0).double() + (y > 0).double()),
    "bool-minus-bool": ("(x > 0) - (y > 0)", "", lambda x, y, i: (x > 0).double() - (y > 0).double()),
    "bool-times-bool": ("(x > 0) * (y < 0)", "", lambda x, y, i: ((x > 0) & (y < 0)).double()),
    "neg-bool": ("-(x > 0)", "", lambda x, y, i: -(x > 0).double()),
    "bool-plus-number": ("(x > 0) + 1", "", lambda x, y, i: (x > 0).double() + 1),
    "exp-of-bool": ("exp(x > 0)", "", lambda x, y, i: torch.exp((x > 0).double())),
    "where-int-literal": ("where(x > 0, ids, 0)", " int", lambda x, y, i: torch.where(x > 0, i, 0)),
    "where-int-literal-first": ("where(x > 0, 3, ids)", " int", lambda x, y, i: torch.where(x > 0, 3, i)),
    "where-bool-literal": ("where(x > 0, y > 0, 0)", " bool", lambda x, y, i: torch.where(x > 0, y > 0, False)),
    "where-bool-one": ("where(x > 0, 1, y > 0)", " bool", lambda x, y, i: torch.where(x > 0, True, y > 0)),
    "where-bool-fraction": ("where(x > 0, y > 0, 0.5)", "",
                            lambda x, y, i: torch.where(x > 0, (y > 0).double(), 0.5)),
    "where-float-literals": ("where(x > 0, 1, 0)", "", lambda x, y, i: (x > 0).double()),
    "max-bool-bool": ("max(x > 0, y > 0)", " bool", lambda x, y, i: (x > 0) | (y > 0)),
}


def spec_of(body: str, suffix: str) -> str:
    return ("axis T, D\n"
            f"block F(x: [T, D], y: [T, D], ids: [T, D] int) -> [T, D]{suffix} {{\n  return {body}\n}}\n")


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("seed", range(2))
def test_type_and_run_agree_with_torch(name, seed, tmp_path):
    body, suffix, reference = CASES[name]
    rng = random.Random(seed)
    t, d, b = rng.randint(1, 6), rng.randint(1, 6), rng.randint(1, 3)
    spec = spec_of(body, suffix)
    m = ncd.load(spec, T=t, D=d).double()
    gen = torch.Generator().manual_seed(seed)
    x, y = torch.randn(b, t, d, generator=gen, dtype=torch.float64), torch.randn(b, t, d, generator=gen, dtype=torch.float64)
    ids = torch.randint(0, 9, (b, t, d), generator=gen)
    out = m(x, y, ids)
    want = reference(x, y, ids)
    declared = suffix.strip() or "float"
    assert out.dtype == TORCH_OF[declared], (out.dtype, declared)
    torch.testing.assert_close(out, want.to(out.dtype), rtol=0, atol=0)
    emitted = load_emitted(emit_python(ncd.check(spec, T=t, D=d), class_name="Entry"), tmp_path, f"bool_{seed}")
    e = emitted.Entry().double()
    got = e(x, y, ids)
    assert got.dtype == out.dtype and torch.equal(got, out)


def test_sum_and_mean_of_a_boolean_are_float_counts():
    spec = ("axis T, D\nblock F(x: [T, D]) -> [T], [T] {\n"
            "  return sum(x > 0, over = D), mean(x > 0, over = D)\n}\n")
    m = ncd.load(spec, T=4, D=5).double()
    x = torch.randn(3, 4, 5, dtype=torch.float64)
    s, mu = m(x)
    assert s.dtype == mu.dtype == torch.float64
    torch.testing.assert_close(s, (x > 0).sum(-1).double(), rtol=0, atol=0)
    torch.testing.assert_close(mu, (x > 0).double().mean(-1), rtol=0, atol=0)


def test_a_boolean_where_declared_float_is_a_check_time_error():
    spec = "axis T\nblock F(x: [T]) -> [T] {\n  return where(x > 0, x < 1, 0)\n}\n"
    with pytest.raises(NcdError, match="boolean wire") as info:
        ncd.check(spec)
    assert info.value.line == 3 and "bool" in (info.value.hint or "")


@pytest.mark.parametrize("bad", [7, -1])
def test_an_id_out_of_range_is_an_ncd_error_naming_the_input(bad):
    spec = ("axis V = 5, D = 2, T = 3\nblock F(ids: [T] int) -> [T, D] {\n"
            "  param E: [V, D] init normal(0, 1)\n  return E[V = ids]\n}\n")
    m = ncd.load(spec)
    ids = torch.tensor([[0, 1, bad]])
    with pytest.raises(NcdError, match=rf"ids .*holds the id {bad}, outside 0 \.\. 4") as info:
        m(ids)
    assert info.value.hint and "0 .. n-1" in info.value.hint
    with pytest.raises(IndexError):  # what torch would have said
        torch.nn.Embedding(5, 2)(ids)


def test_a_gather_out_of_range_is_an_ncd_error_naming_the_input():
    spec = "axis T, V\nblock F(logits: [T, V], target: [T] int) -> [T] {\n  return logits[V = target]\n}\n"
    m = ncd.load(spec, T=3, V=4)
    with pytest.raises(NcdError, match=r"target .*holds the id 4, outside 0 \.\. 3"):
        m(torch.randn(2, 3, 4), torch.tensor([[0, 1, 4], [0, 0, 0]]))
    out = m(torch.zeros(2, 3, 4), torch.tensor([[0, 1, 3], [0, 0, 0]]))  # in range: fine
    assert out.shape == (2, 3)


def test_the_emitted_module_refuses_an_id_out_of_range_too(tmp_path):
    spec = ("axis V = 5, D = 2, T = 3\nblock F(ids: [T] int) -> [T, D] {\n"
            "  param E: [V, D] init normal(0, 1)\n  return E[V = ids]\n}\n")
    module = load_emitted(emit_python(ncd.check(spec), class_name="Entry"), tmp_path, "emitted_oob")
    with pytest.raises(ValueError, match=r"ids .*holds the id 9, outside 0 \.\. 4"):
        module.Entry()(torch.tensor([[0, 9, 1]]))
