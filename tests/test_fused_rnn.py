"""Scans proved to be Elman / GRU / LSTM cells run on torch's fused RNN operator (the backend
`fused_rnn`): same outputs and gradients as the sequential loop, whatever the spec's gate order
and weight layout; near misses stay on their backend and `--explain` says why."""
from __future__ import annotations

import pytest
import torch

import ncd
from ncd.errors import NcdError
from ncd.pipeline import compile_spec

SPECS = "specs"
LIBRARY = ["lstm", "gru", "rnn_tanh", "rnn_relu", "bilstm"]

# LSTM with the gates stacked in the order o, g, f, i along a leading axis, one weight tensor per
# role laid out [G, D, in] (torch's [out, in] per gate), a single bias, and c carried first.
LSTM_OTHER_ORDER = """
axis T, E = 5, D = 4, G = 4
block Cell(x: [T, E]) -> [T, D] {
    param U: [G, D, E] init normal(0, 0.5)
    param V: [G, D, D'] init normal(0, 0.5)
    param b: [G, D] init normal(0, 0.5)
    return scan t over T carry (c: [D] = 0, h: [D] = 0) {
        a = U @[E] x[t] + V @[D'] h[D as D'] + b
        o = sigmoid(a[G = 0])
        g = tanh(a[G = 1])
        f = sigmoid(a[G = 2])
        i = sigmoid(a[G = 3])
        c = i * g + c * f
        h = tanh(c) * o
        emit h
    }
}
"""

# GRU with separate weights per gate, gates written n, z, r, and the update written
# h = z ⊙ n + (1 − z) ⊙ h (torch's z is this one's 1 − z).
GRU_OTHER_FORM = """
axis T, E = 6, D = 3
block Cell(x: [T, E]) -> [T, D] {
    param Wr, Wz, Wn: [E, D] init normal(0, 0.5)
    param Ur, Uz, Un: [D', D] init normal(0, 0.5)
    param br, bz, bn, cn: [D] init normal(0, 0.5)
    return scan t over T reverse carry (h: [D] = 0) {
        hp = h[D as D']
        n = tanh(x[t] @[E] Wn + bn + sigmoid(x[t] @[E] Wr + hp @[D'] Ur + br) * (hp @[D'] Un + cn))
        z = sigmoid(hp @[D'] Uz + x[t] @[E] Wz + bz)
        h = z * n + (1 - z) * h
        emit h
    }
}
"""

ELMAN_NO_PROJECTION = """
axis T, D = 4
block Cell(x: [T, D]) -> [T, D] {
    param W: [D', D] init normal(0, 0.5)
    return scan t over T carry (h: [D] = 0) {
        h = relu(x[t] + h[D as D'] @[D'] W + 1)
        emit h
    }
}
"""

PEEPHOLE = """
axis T, E = 5, D = 4, G = 4
block Cell(x: [T, E]) -> [T, D] {
    param W: [E, G, D] init normal(0, 0.5)
    param U: [D', G, D] init normal(0, 0.5)
    param P: [D', D] init normal(0, 0.5)
    return scan t over T carry (h: [D] = 0, c: [D] = 0) {
        a = x[t] @[E] W + h[D as D'] @[D'] U
        i = sigmoid(a[G = 0] + c[D as D'] @[D'] P)
        f = sigmoid(a[G = 1])
        c = f * c + i * tanh(a[G = 2])
        h = sigmoid(a[G = 3]) * tanh(c)
        emit h
    }
}
"""

SIGMOID_ELMAN = """
axis T, E = 5, D = 4
block Cell(x: [T, E]) -> [T, D] {
    param W: [E, D] init normal(0, 0.5)
    param U: [D', D] init normal(0, 0.5)
    return scan t over T carry (h: [D] = 0) {
        h = sigmoid(x[t] @[E] W + h[D as D'] @[D'] U)
        emit h
    }
}
"""


def _pair(source: str, dtype: torch.dtype, **sizes):
    seq = ncd.load(source, scan_backend="sequential", **sizes).to(dtype)
    fused = ncd.load(source, **sizes).to(dtype)
    fused.load_state_dict(seq.state_dict())
    return seq, fused


def _same_outputs_and_gradients(seq, fused, x: torch.Tensor, tol: float) -> None:
    results = []
    for module in (seq, fused):
        xx = x.clone().requires_grad_()
        y = module(xx)
        weights = torch.randn(y.shape, dtype=y.dtype, generator=torch.Generator().manual_seed(3))
        (y * weights).sum().backward()
        results.append((y.detach(), xx.grad, {k: p.grad for k, p in module.named_parameters()}))
    (y0, gx0, gp0), (y1, gx1, gp1) = results
    torch.testing.assert_close(y1, y0, atol=tol, rtol=tol)
    torch.testing.assert_close(gx1, gx0, atol=tol, rtol=tol)
    assert gp0.keys() == gp1.keys()
    for key in gp0:
        torch.testing.assert_close(gp1[key], gp0[key], atol=tol, rtol=tol, msg=key)


def _backends(module) -> list[str]:
    return [p.backend for p in module.scan_plans]


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 1e-5)], ids=["f64", "f32"])
@pytest.mark.parametrize("name", LIBRARY)
def test_library_cells_run_fused_and_equal_the_loop(name, dtype, tol):
    source = open(f"{SPECS}/{name}.ncd").read()
    seq, fused = _pair(source, dtype, T=7, E=5, D=6)
    assert set(_backends(fused)) == {"fused_rnn"}
    assert set(_backends(seq)) == {"sequential"}
    x = torch.randn(3, 7, 5, dtype=dtype, generator=torch.Generator().manual_seed(0))
    _same_outputs_and_gradients(seq, fused, x, tol)


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 1e-5)], ids=["f64", "f32"])
@pytest.mark.parametrize("source,shape", [(LSTM_OTHER_ORDER, (2, 5, 5)), (GRU_OTHER_FORM, (2, 3, 6, 6)),
                                          (ELMAN_NO_PROJECTION, (4, 4)), (GRU_OTHER_FORM, (6, 6))],
                         ids=["lstm_ogfi", "gru_nzr_reverse", "elman_identity_input", "gru_unbatched"])
def test_other_gate_orders_and_layouts_run_fused_and_equal_the_loop(source, shape, dtype, tol):
    seq, fused = _pair(source, dtype)
    assert _backends(fused) == ["fused_rnn"]
    x = torch.randn(*shape, dtype=dtype, generator=torch.Generator().manual_seed(1))
    _same_outputs_and_gradients(seq, fused, x, tol)


def test_the_fused_lstm_equals_torch_nn_lstm_with_the_same_weights():
    from ncd.interop import load_torch

    torch.manual_seed(0)
    ref = torch.nn.LSTM(5, 6, batch_first=True).double()
    compiled = ncd.load(f"{SPECS}/lstm.ncd", T=7, E=5, D=6).double()
    load_torch(compiled, ref)
    x = torch.randn(2, 7, 5, dtype=torch.float64)
    torch.testing.assert_close(compiled(x), ref(x)[0], atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("source,why", [
    (PEEPHOLE, "peephole"),
    (SIGMOID_ELMAN, "tanh or relu"),
    (open(f"{SPECS}/paragru.ncd").read(), "diagonal recurrence"),
])
def test_near_misses_keep_their_backend_and_say_why(source, why):
    compiled = compile_spec(source, "near_miss")
    (plan,) = [p for p in compiled.passes.scans][:1]
    assert plan.backend != "fused_rnn"
    assert plan.cell is None
    assert why in plan.cell_reason and why in plan.reason


def test_asking_for_fused_rnn_on_a_cell_that_is_none_is_an_error():
    with pytest.raises(NcdError, match="fused_rnn.*peephole"):
        compile_spec(PEEPHOLE, "peephole", scan_backend="fused_rnn")


def test_explain_names_the_matched_cell():
    from ncd.cli.explain import explain_text

    compiled = compile_spec(open(f"{SPECS}/gru.ncd").read(), "gru")
    text = explain_text(compiled.ir, passes=compiled.passes)
    assert "backend: fused_rnn" in text and "GRU cell" in text


@pytest.mark.parametrize("source", [open(f"{SPECS}/lstm.ncd").read(), open(f"{SPECS}/bilstm.ncd").read(),
                                    GRU_OTHER_FORM], ids=["lstm", "bilstm", "gru_nzr_reverse"])
def test_emitted_python_calls_the_same_operator_bit_for_bit(source, tmp_path):
    import importlib.util

    from ncd.backends.pytorch.emit import emit_python

    ir = ncd.check(source, T=6, E=6, D=3)
    module = ncd.load(source, T=6, E=6, D=3).double()
    text = emit_python(ir, class_name="Entry")
    assert "rt.fused_rnn(" in text
    path = tmp_path / "fused_emitted.py"
    path.write_text(text)
    spec = importlib.util.spec_from_file_location("fused_emitted", path)
    emitted = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(emitted)  # our own generated code
    other = emitted.Entry().double()
    other.load_state_dict(module.state_dict())
    x = torch.randn(2, 6, 6, dtype=torch.float64)
    assert torch.equal(module(x), other(x))
