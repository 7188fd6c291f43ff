"""torch.export of compiled specs: export, save (.pt2), reload, run at two sizes the export never
saw, equal outputs to the eager module. Scans are exported as torch's scan operator."""
from __future__ import annotations

import pytest
import torch

import ncd
from ncd.export import export_program, load_program, save_program

PAIRS = """
axis S, P = 2, D = 4
axis T = S * P
block Pairs(x: [T, D]) -> [S, D'] {
  param W: [D, D'] init normal(0, 1)
  return sum(x[T -> S P], over = P) @[D] W
}
"""


def round_trip(model, tmp_path, shapes):
    path = tmp_path / "model.pt2"
    save_program(model, path)
    program = load_program(path).module()
    for shape in shapes:
        x = torch.randn(*shape)
        with torch.no_grad():
            torch.testing.assert_close(program(x), model(x), rtol=1e-5, atol=1e-5)
    return load_program(path)


@pytest.mark.slow  # an export traces the model: 10-40 s each
def test_feedforward_exports_with_dynamic_batch_and_tokens(tmp_path):
    model = ncd.load("transformer_encoder", D=32, H=4, F=64)
    program = round_trip(model, tmp_path, [(3, 5, 32), (1, 13, 32)])
    x = program.graph_signature.user_inputs[0]
    placeholder = next(n for n in program.graph.nodes if n.name == x)
    batch, tokens, width = placeholder.meta["val"].shape
    assert not isinstance(batch, int) and not isinstance(tokens, int) and width == 32


@pytest.mark.slow  # an export traces the model: 10-40 s each
def test_scan_exports_as_torch_scan_with_a_dynamic_length(tmp_path):
    model = ncd.load("rnn_tanh", E=8, D=8)
    program = round_trip(model, tmp_path, [(3, 5, 8), (2, 11, 8)])
    assert any("scan" in str(node.target) for node in program.graph.nodes)


@pytest.mark.slow  # an export traces the model: 10-40 s each
def test_parallel_scan_backends_export_sequentially(tmp_path):
    model = ncd.load("rnn_tanh", E=8, D=8, scan_backend="newton")
    assert any(p.backend == "newton" for p in model.scan_plans)
    round_trip(model, tmp_path, [(2, 6, 8)])


@pytest.mark.slow  # an export traces the model: 10-40 s each
def test_derived_axis_is_a_derived_dim(tmp_path):
    model = ncd.load(PAIRS)
    program = export_program(model)
    assert program.ncd_dims == {"T": "derived: 2*d_S"}
    for t in (6, 10):  # T = 2·S: the spec's own equation, written plainly in torch
        x = torch.randn(3, t, 4)
        expected = x.reshape(3, t // 2, 2, 4).sum(2) @ model.W
        torch.testing.assert_close(program.module()(x), expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(Exception):  # an odd T is no 2·S
        program.module()(torch.randn(3, 7, 4))


def test_export_needs_a_whole_loaded_model():
    model = ncd.load("transformer_encoder", D=32, H=4, F=64)
    with pytest.raises(ncd.NcdError, match="whole model"):
        export_program(model.attn)


def test_cli_compile_emit_export(tmp_path, capsys):
    """Not marked slow: the one export (a small MLP) that `make test` runs, so CI exercises export."""
    from ncd.cli import main

    out = tmp_path / "mlp.pt2"
    torch.manual_seed(0)
    assert main(["compile", "mlp_relu", "--emit", "export", "-o", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    torch.manual_seed(0)
    model = ncd.load("mlp_relu")  # the same seed: the same initial weights
    program = load_program(out).module()
    for batch in (1, 5):
        x = torch.randn(batch, 64)
        torch.testing.assert_close(program(x), model(x))
    assert main(["compile", "mlp_relu", "--emit", "export"]) == 1
    assert "-o model.pt2" in capsys.readouterr().err


@pytest.mark.slow  # an export traces the model: 10-40 s
def test_a_derived_axis_dividing_a_free_axis_exports_the_free_axis_as_its_multiple():
    """axis S = T / P with T free: T is exported as P·U, so the reshape's guard (T divisible by 4)
    holds for every size the program accepts; it runs at sizes the export never saw."""
    spec = "axis T, P = 4, S = T / P, D = 3\nblock F(x: [T, D]) -> [S, P, D] {\n    return x[T -> S P]\n}\n"
    model = ncd.load(spec)
    program = export_program(model)
    assert program.ncd_dims == {"T": "derived: 4*d_T_over_4"}
    for t in (12, 20):
        x = torch.randn(3, t, 3)
        torch.testing.assert_close(program.module()(x), x.reshape(3, t // 4, 4, 3))
    with pytest.raises(Exception):  # 10 is no multiple of 4: torch's guard refuses it
        program.module()(torch.randn(3, 10, 3))
