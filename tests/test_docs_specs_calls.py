"""Held-out specs on calls, lifting, views, integers, imports and randomness, written from docs/language.md.

Each spec goes through test_docs_specs' own harness: an ``ok`` spec checks, loads at every size set,
runs forward and backward in float64 and matches its emitted Python; an ``expect-error`` spec is refused
at a line and column with a hint holding the expected text.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

import ncd
from ncd.backends.pytorch.emit import emit_python
from test_docs_specs import _cli, _emitted, run_error, run_ok

INNER = "axis D = 3\nblock Sq(x: [..]) -> [..] {\n    return x * x\n}\n"
OUTER = ("import Sq from ./inner.ncd\naxis D = 3\nblock Lin[I](x: [I]) -> [I] {\n"
         "    param W: [I, I'] init normal(0, 0.3)\n    return Sq(x @[I] W)[I' as I]\n}\n")

SPECS: dict[str, tuple[str, dict[str, str]]] = {
    'lift2': ("axis T, D = 4, E = 3\nblock F(x: [D]) -> [E] {\n    param W: [D, E] init normal(0, 0.3)\n    return tanh(x @[D] W)\n}\nblock G(x: [T, D, T']) -> [T, T', E] {\n    use f = F\n    return f(x)\n}\n",
        {'sizes': 'T=1 | T=3'}),
    'param_only_out': ('axis T, D = 4\nblock Bias(x: [D]) -> [D], [D] {\n    param b: [D] init normal(0, 1)\n    return x + b, x * b\n}\nblock G(x: [T, D]) -> [T, D], [T, D] {\n    use f = Bias\n    return f(x)\n}\n',
        {'sizes': 'T=1 | T=2'}),
    'multi_out_lift': ('axis T, D = 4\nblock Two(x: [D]) -> [D], [] {\n    return relu(x), sum(x, over = D)\n}\nblock G(x: [T, D]) -> [T, D] {\n    a, s = Two(x)\n    return a * s\n}\n',
        {'sizes': 'T=1 | T=3'}),
    'import_chain': ('import Lin from ./lib/outer.ncd\naxis T, D = 4\nblock G(x: [T, D]) -> [T, D] {\n    use l = Lin[D]\n    return Sq(l(x))\n}\n',
        {'sizes': 'T=1 | T=2'}),
    'slice_primed': ("axis T, D = 3, S\nblock G(x: [T, D]) -> [S, D] {\n    y = x[T as T']\n    return y[T' = 1: as S] - x[T = :-1 as S]\n}\n",
        {'sizes': 'T=2 | T=5'}),
    'int_where_concat': ('axis T, V = 4, D = 3, T2\nblock G(ids: [T] int, x: [T, D]) -> [T2] int, [T, D] {\n    c = concat(ids, ids + 1, over = T -> T2)\n    e = where(ids > 0, x, -x)\n    return c, e\n}\n',
        {'sizes': 'T=1 | T=3'}),
    'int_contract': ('axis T, V = 4, D = 3\nblock G(ids: [T] int) -> [T, D] {\n    param E: [V, D] init normal(0, 1)\n    return one_hot(ids, over = V) @[V] E\n}\n',
        {'sizes': 'T=1 | T=3'}),
    'dropout_called': ("axis T, D = 4\nblock Drop(x: [D]) -> [D] {\n    param W: [D, D'] init normal(0, 0.3)\n    return dropout(x @[D] W, p = 0.3)[D' as D]\n}\nblock G(x: [T, D]) -> [T, D] {\n    use d = Drop\n    return d(d(x))\n}\n",
        {'sizes': 'T=1 | T=3', 'seeded': ''}),
    'shared_both_branch': ("axis T, D = 4\nblock L(x: [D]) -> [D] {\n    param W: [D, D'] init normal(0, 0.3)\n    return tanh(x @[D] W)[D' as D]\n}\nblock G(x: [T, D]) -> [T, D] {\n    use l = L\n    a = l(relu(x))\n    b = l(-x)\n    return where(x > 0, a, b)\n}\n",
        {'sizes': 'T=1 | T=3'}),
    'entries_arity': ("axis T, D = 4\nentry A, B\nblock L(x: [D]) -> [D] {\n    param W: [D, D'] init normal(0, 0.3)\n    return tanh(x @[D] W)[D' as D]\n}\nblock A(x: [T, D]) -> [T, D] {\n    use l = L\n    return l(x)\n}\nblock B(x: [T, D], y: [T, D]) -> [T, D], [T] {\n    use l = L\n    return l(x) + y, sum(y, over = D)\n}\n",
        {'sizes': 'T=1 | T=2'}),
    'formula_sizes': ('axis N = 3, D = 2 * N + 1, H = N ^ 2, T\nblock G(x: [T, D]) -> [T, H] {\n    param W: [D, H] init normal(0, 0.3)\n    return x @[D] W\n}\n',
        {'sizes': 'T=1 | T=2,N=1'}),
    'derived_nonmult': ('axis Q, Y = 3 * Q, T\nblock G(x: [T, Y]) -> [T, Q] {\n    return mean(x[Y -> Q Z], over = Z)\n}\naxis Z = 3\n',
        {'sizes': 'T=2,Q=1 | T=1,Y=6', 'bad-sizes': 'T=1,Y=7'}),
    'block_axis_param_twice': ('axis T, D = 4, E = 3\nblock P[A, k = 2](x: [A]) -> [A] {\n    param g: [A] init ones\n    return x * g * k\n}\nblock G(x: [T, D], y: [T, E]) -> [T, D], [T, E] {\n    use p = P[D], q = P[E, k = 3]\n    return p(x), q(y)\n}\n',
        {'sizes': 'T=1 | T=2'}),
    'lift_reorder': ('axis T, D = 4, K = 2\nblock F(x: [T, D]) -> [T, D] {\n    return softmax(x, over = T)\n}\nblock G(x: [D, K, T]) -> [K, T, D] {\n    return F(x)\n}\n',
        {'sizes': 'T=1 | T=3'}),
    'hyper_lifted': ('axis T, Z = 3, E = 4, D = 5\nblock Hyper(z: [Z]) -> [E, D] {\n    param G: [Z, E, D] init normal(0, 0.1)\n    return tanh(z @[Z] G)\n}\nblock Main(x: [T, E], z: [T, Z]) -> [T, D] {\n    use h = Hyper\n    return relu(x @[E] h(z))\n}\n',
        {'sizes': 'T=1 | T=3'}),
    'stack_x3_lift': ("axis T, D = 4, K = 2\nblock L(x: [D]) -> [D] {\n    param W: [D, D'] init normal(0, 0.3)\n    return x + tanh(x @[D] W)[D' as D]\n}\nblock G(x: [T, K, D]) -> [T, K, D] {\n    use ls = L × 3\n    repeat 2 { x = ls(x) }\n    return x\n}\n",
        {'sizes': 'T=1 | T=2'}),
    'view_select_last': ('axis T = 4, D = 6, H = 2, K = D / H\nblock G(x: [T, D]) -> [H, K] {\n    return (x[T = T - 1] + x[T = 0])[D -> H K]\n}\n',
        {}),
    'random_called': ('axis T, D = 3\nblock N(x: [D]) -> [D] {\n    return normal(x, 0.5) + uniform(0 * x, 1)\n}\nblock G(x: [T, D]) -> [T, D] {\n    return N(x) * N(x)\n}\n',
        {'sizes': 'T=1 | T=2', 'seeded': ''}),
    'int_lookup_lifted': ('axis T, V = 5, D = 3\nblock Emb(ids: [] int) -> [D] {\n    param E: [V, D] init normal(0, 1)\n    return E[V = ids]\n}\nblock G(ids: [T] int) -> [T, D] {\n    use e = Emb\n    return e(ids)\n}\n',
        {'sizes': 'T=1 | T=4'}),
    'split_called': ("axis T, D = 2, D2 = 4\nblock Halve(x: [D2]) -> [D], [D'] {\n    a, b = split(x, over = D2 -> [D, D'])\n    return a, b\n}\nblock G(x: [T, D2]) -> [T, D] {\n    a, b = Halve(x)\n    return a * b[D' as D]\n}\n",
        {'sizes': 'T=1 | T=3'}),
    'err_return_two_calls': ('axis T, D = 4\nblock Two(x: [D]) -> [D], [D] {\n    return relu(x), -x\n}\nblock G(x: [T, D]) -> [T, D], [T, D], [T, D] {\n    return Two(x), x\n}\n',
        {'expect-error': 'unpack it'}),
    'err_lift_missing_axis': ('axis T, D = 4, E = 3\nblock F(x: [D]) -> [D] {\n    return relu(x)\n}\nblock G(x: [T, E]) -> [T, E] {\n    return F(x)\n}\n',
        {'expect-error': 'missing D'}),
    'err_call_arity': ('axis T, D = 4\nblock F(x: [D], y: [D]) -> [D] {\n    return x + y\n}\nblock G(x: [T, D]) -> [T, D] {\n    return F(x)\n}\n',
        {'expect-error': 'pass 2'}),
    'err_unpack_count': ('axis T, D = 4\nblock Two(x: [D]) -> [D], [D] {\n    return relu(x), -x\n}\nblock G(x: [T, D]) -> [T, D] {\n    a = Two(x)\n    return a\n}\n',
        {'expect-error': 'names on the left'}),
    'err_slice_no_as_primed': ("axis T, D = 3\nblock G(x: [T, D]) -> [T, D] {\n    y = x[T as T']\n    return y[T' = 1:]\n}\n",
        {'expect-error': 'as'}),
    'err_int_contract': ('axis T, V = 4, D = 3\nblock G(ids: [T, V] int) -> [T, D] {\n    param E: [V, D] init normal(0, 1)\n    return ids @[V] E\n}\n',
        {'expect-error': 'as_float'}),
    'err_where_int_cond': ('axis T, D = 3\nblock G(ids: [T] int, x: [T, D]) -> [T, D] {\n    return where(ids, x, -x)\n}\n',
        {'expect-error': 'comparison'}),
    'err_dropout_p_one': ('axis T, D = 3\nblock F(x: [D]) -> [D] {\n    return dropout(x, p = 1)\n}\nblock G(x: [T, D]) -> [T, D] {\n    return F(x)\n}\n',
        {'expect-error': 'p'}),
    'err_import_missing_block': ('import Nope from ./lib/outer.ncd\naxis T, D = 4\nblock G(x: [T, D]) -> [T, D] {\n    return x\n}\n',
        {'expect-error': 'Nope'}),
    'err_entry_weights_differ': ("axis T, D = 4\nentry A, B\nblock L(x: [D]) -> [D] {\n    param W: [D, D'] init normal(0, 0.3)\n    return (x @[D] W)[D' as D]\n}\nblock A(x: [T, D]) -> [T, D] {\n    use l = L\n    return l(x)\n}\nblock B(x: [T, D]) -> [T, D] {\n    use m = L\n    return m(x)\n}\n",
        {'expect-error': ''}),
    'err_lifted_clash': ('axis T, D = 4\nblock F(x: [D]) -> [T, D] {\n    param W: [T, D] init ones\n    return x * W\n}\nblock G(x: [T, D]) -> [T, T, D] {\n    return F(x)\n}\n',
        {'expect-error': ''}),
}


def _write(tmp: Path, name: str, text: str) -> Path:
    """The spec beside a lib/ folder of two files, the second importing the first (imports of imports)."""
    (tmp / "lib").mkdir(exist_ok=True)
    (tmp / "lib" / "inner.ncd").write_text(INNER)
    (tmp / "lib" / "outer.ncd").write_text(OUTER)
    path = tmp / f"{name}.ncd"
    path.write_text(text)
    return path


@pytest.mark.parametrize("name", list(SPECS))
def test_held_out_spec(name: str, tmp_path: Path) -> None:
    text, head = SPECS[name]
    path = _write(tmp_path, name, text)
    if "expect-error" in head:
        run_error(path, head)
    else:
        run_ok(path, head, tmp_path, every_size=True)


def test_return_of_a_several_output_call_returns_all_of_them() -> None:
    """`return f(x)` of a two-output block was 'declares 2 outputs but returns 1'."""
    module = ncd.load(SPECS["param_only_out"][0], T=3).double()
    x = torch.randn(2, 3, 4, dtype=torch.float64)
    b = module.state_dict()["f.b"]
    first, second = module(x)
    torch.testing.assert_close(first, x + b)
    torch.testing.assert_close(second, x * b)


def test_an_output_of_params_alone_is_lifted() -> None:
    """docs/language.md: the lifted part is prepended to all outputs, also one that reads only params."""
    text = SPECS["param_only_out"][0].replace("return x + b, x * b", "return x + b, b")
    module = ncd.load(text, T=3).double()
    x = torch.randn(2, 3, 4, dtype=torch.float64)
    b = module.state_dict()["f.b"]
    first, second = module(x)
    torch.testing.assert_close(first, x + b)
    torch.testing.assert_close(second, b.expand(2, 3, 4))


GATE = """axis T, D = 3, F = 2
block Gate(x: [D]) -> [F], [F] {
    param w: [D, F] init normal(0, 1)
    return tanh(x @[D] w), tanh(sum(w, over = D))
}
block Top(x: [T, D]) -> [F] {
    use g = Gate
    y, m = g(x)
    return sum(m, over = T) + sum(y, over = T)
}
"""


@pytest.mark.parametrize("emitted", [False, True])
def test_a_params_only_output_reduces_over_the_lifted_axis(emitted: bool, tmp_path: Path) -> None:
    """A lifted call's parameter-only output has the caller's T (it was [F]: `sum(m, over = T)` was
    refused, and before that ran into an IndexError); reference: the equations written plainly."""
    module = ncd.load(GATE, T=4).double()
    if emitted:
        ir = ncd.check(GATE, T=4)
        twin = getattr(_emitted(emit_python(ir, class_name="Entry"), tmp_path), "Entry")().double()
        twin.load_state_dict(module.state_dict())
        module = twin
    x = torch.randn(5, 4, 3, dtype=torch.float64)
    w = module.state_dict()["g.w"].clone().requires_grad_(True)
    module.load_state_dict({"g.w": w.detach()})
    out = module(x)
    ref = torch.tanh(x @ w).sum(-2) + 4 * torch.tanh(w.sum(0))
    torch.testing.assert_close(out, ref)
    out.sum().backward()
    ref.sum().backward()
    torch.testing.assert_close(dict(module.named_parameters())["g.w"].grad, w.grad)


def test_cli_check_of_an_unknown_backend_lists_the_backends(tmp_path: Path) -> None:
    spec = tmp_path / "nope.ncd"
    spec.write_text("axis T, D = 4\nblock F(x: [T, D]) -> [T, D] {\n"
                    "    return scan t over T via nope carry (h: [D] = 0) {\n"
                    "        h = tanh(h + x[t])\n        emit h\n    }\n}\n")
    res = _cli("check", str(spec))
    assert res.returncode == 1
    assert f"{spec}:3:30:" in res.stderr
    assert "unknown scan backend 'nope'" in res.stderr and "sequential" in res.stderr and "newton" in res.stderr
    assert "Traceback" not in res.stderr


def test_cli_runs_a_lifted_call_backward_at_size_one(tmp_path: Path) -> None:
    path = _write(tmp_path, "import_chain", SPECS["import_chain"][0])
    assert _cli("check", str(path)).returncode == 0
    for t in ("1", "3"):
        run = _cli("run", str(path), "--backward", "--set", f"T={t}")
        assert run.returncode == 0, run.stderr
