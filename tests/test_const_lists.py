"""`const a[P] = [...]` and weight-free formula blocks called directly (docs/language.md, constants).

The reference is the list itself as a torch tensor, and the Hermite polynomials He_n written out
from their definition (He0 = 1, He1 = x, He_{n+1} = x·He_n − n·He_{n−1}), checked against numpy's
hermite_e where numpy is installed.
"""
from __future__ import annotations

import importlib.util
import math
import random

import pytest
import torch

import ncd
from ncd import NcdError
from ncd.backends.pytorch.emit import emit_python

SPEC = """
axis T, P
const c[P] = [{items}]
block Series(x: [..]) -> [..] {{
    return sum(c * x ^ idx(P), over = P)
}}
block Net(x: [T]) -> [T] {{
    return Series(x)
}}
"""


def items(seed: int) -> list[float]:
    rng = random.Random(seed)
    return [round(rng.uniform(-2, 2), 3) for _ in range(rng.randint(1, 6))]


@pytest.mark.parametrize("seed", range(4))
def test_a_listed_constant_is_its_numbers_and_fixes_the_axis(seed: int):
    values = items(seed)
    source = SPEC.format(items=", ".join(repr(v) for v in values))
    ir = ncd.check(source)
    assert ir.axes["P"].size == str(len(values))  # a free axis takes the list's length
    m = ncd.load(source, T=5).double()
    assert list(m.state_dict()) == []  # constants are not state
    x = torch.randn(3, 5, dtype=torch.float64)
    c = torch.tensor(values, dtype=torch.float64)
    ref = sum(c[i] * x**i for i in range(len(values)))
    torch.testing.assert_close(m(x), ref, rtol=1e-12, atol=1e-12)


def test_items_may_be_arithmetic_of_numbers_and_named_constants():
    source = SPEC.format(items="1 / 3, -pi, 2 ^ 3, sqrt(2)")
    m = ncd.load(source, T=2).double()
    x = torch.tensor([0.5, -1.5], dtype=torch.float64)
    c = [1 / 3, -math.pi, 8.0, math.sqrt(2)]
    torch.testing.assert_close(m(x), sum(c[i] * x**i for i in range(4)), rtol=1e-12, atol=1e-12)


def test_hermite_block_with_fixed_coefficients_called_directly():
    source = """
axis T, P
const a[P] = [0.5, 1, -0.25, 0.125]
block Hermite(x: [..]) -> [..] {
    he2 = x ^ 2 - 1
    he3 = x ^ 3 - 3 * x
    return a[P = 0] + a[P = 1] * x + a[P = 2] * he2 + a[P = 3] * he3
}
block Net(x: [T]) -> [T] {
    return Hermite(x)
}
"""
    m = ncd.load(source, T=7).double()
    x = torch.randn(2, 7, dtype=torch.float64)
    he = [torch.ones_like(x), x]
    for n in range(1, 3):
        he.append(x * he[n] - n * he[n - 1])
    ref = 0.5 * he[0] + 1 * he[1] - 0.25 * he[2] + 0.125 * he[3]
    torch.testing.assert_close(m(x), ref, rtol=1e-12, atol=1e-12)
    np = pytest.importorskip("numpy")
    from numpy.polynomial import hermite_e

    want = hermite_e.hermeval(x.numpy(), [0.5, 1, -0.25, 0.125])
    torch.testing.assert_close(m(x), torch.from_numpy(want), rtol=1e-12, atol=1e-12)


def test_constants_are_exact_in_float64_after_double():
    source = "axis T, P\nconst c[P] = [0.1, 1 / 3]\nblock Net(x: [T]) -> [T] {\n    return x * sum(c, over = P)\n}\n"
    m = ncd.load(source, T=1)
    assert m.c.dtype == torch.float32
    assert m.double().c.tolist() == [0.1, 1 / 3]


def test_emitted_python_equals_the_module(tmp_path):
    source = SPEC.format(items="1, 0.5, -0.25")
    path = tmp_path / "const_list.py"
    path.write_text(emit_python(ncd.check(source, T=4), class_name="Entry"))
    spec = importlib.util.spec_from_file_location("const_list_emitted", path)
    emitted = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(emitted)
    x = torch.randn(3, 4)
    assert torch.equal(emitted.Entry()(x), ncd.load(source, T=4)(x))


def test_a_block_with_weights_still_needs_use():
    source = """
axis T
block Lin(x: [T]) -> [T] {
    param w: [] init ones
    return w * x
}
block Net(x: [T]) -> [T] {
    return Lin(x)
}
"""
    with pytest.raises(NcdError, match="use"):
        ncd.check(source)
