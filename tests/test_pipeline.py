"""The one pipeline (ncd/pipeline.py): scan backends checked against the registry at `ncd check`,
and the fusion plan as the one thing the torch lowering and the analyzer both read."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import ncd
from ncd import pipeline, scan_backends
from ncd.analysis.cost import analyze
from ncd.backends.pytorch import compile_module
from ncd.cli import main

NONLINEAR = """\
axis T, D = 4

block R(x: [T, D]) -> [T, D] {
    y = scan t over T carry (h: [D] = 0) via BACKEND {
        h = tanh(h + x[t])
        emit h
    }
    return y
}
"""

MLP = """\
axis E = 3, F = 5

block M(x: [E]) -> [F] {
    param W: [E, F] init normal(0, 1)
    param b: [F] init normal(0, 1)
    return x @[E] W + b
}
"""


def test_unknown_via_backend_is_located_at_check(tmp_path, capsys):
    spec = tmp_path / "r.ncd"
    spec.write_text(NONLINEAR.replace("BACKEND", "newtn"))
    with pytest.raises(ncd.NcdError) as caught:
        ncd.check(spec)
    err = caught.value
    assert (err.line, err.col) == (4, 46)  # the name after `via`
    assert "unknown scan backend 'newtn'" in err.message
    assert "did you mean 'newton'" in err.hint
    assert main(["check", str(spec)]) == 1
    out = capsys.readouterr().err
    assert f"{spec}:4:46:" in out and "Traceback" not in out


def test_via_backend_that_cannot_run_the_scan_fails_check(tmp_path):
    spec = tmp_path / "r.ncd"
    spec.write_text(NONLINEAR.replace("BACKEND", "fft"))
    with pytest.raises(ncd.NcdError, match="'fft' cannot run this scan") as caught:
        ncd.check(spec)
    assert caught.value.line == 4
    spec.write_text(NONLINEAR.replace("BACKEND", "newton"))
    assert ncd.check(spec).entry == "R"


def test_scan_backend_option_is_held_to_the_registry(tmp_path, capsys):
    spec = tmp_path / "r.ncd"
    spec.write_text(NONLINEAR.replace(" via BACKEND", ""))
    assert main(["run", str(spec), "--set", "T=3", "--scan-backend", "scna"]) == 1
    err = capsys.readouterr().err
    assert "unknown scan backend 'scna'" in err and "did you mean 'scan'" in err
    assert main(["run", str(spec), "--set", "T=3", "--scan-backend", "gla"]) == 1
    err = capsys.readouterr().err
    assert "'gla' cannot run this scan" in err and f"{spec}:4:" in err
    assert main(["compile", str(spec), "--set", "T=3", "--explain", "--scan-backend", "fft"]) == 1


def test_help_and_error_hint_list_the_same_registry_names(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    spec = tmp_path / "r.ncd"
    spec.write_text(NONLINEAR.replace("BACKEND", "zzz"))
    with pytest.raises(ncd.NcdError) as caught:
        ncd.check(spec)
    listed = caught.value.hint.split("choose one of ")[1]
    assert listed.split(", ") == ["auto", *scan_backends.BACKENDS]
    assert f"({listed};" in help_text


def _calls(module, fn: str) -> bool:
    return fn in repr(module._ncd_program.body)


def test_lowering_and_analyzer_read_the_same_fusion_plan():
    compiled = pipeline.compile_spec(MLP, "<mlp>")
    fusions = compiled.passes.fusion.of_block("M")
    assert [f.kind for f in fusions.values()] == ["linear_bias"]
    flipped = compiled.passes.model_copy(deep=True)
    flipped.fusion.blocks["M"].clear()  # the same spec with the fusion turned off in the plan

    fused_module = compile_module(compiled.ir, passes=compiled.passes)
    plain_module = compile_module(compiled.ir, passes=flipped)
    assert _calls(fused_module, "rt.linear")
    assert not _calls(plain_module, "rt.linear")

    fused_ops = [o.op for o in analyze(compiled.ir, {"B": 2}, passes=compiled.passes).ops]
    plain_ops = [o.op for o in analyze(compiled.ir, {"B": 2}, passes=flipped).ops]
    assert "add→linear_bias" in fused_ops and "contract" not in fused_ops
    assert "add→linear_bias" not in plain_ops and {"contract", "add"} <= set(plain_ops)

    x = torch.randn(2, 3, dtype=torch.float64)
    plain_module.load_state_dict(fused_module.state_dict())
    fused_module, plain_module = fused_module.double(), plain_module.double()
    expected = F.linear(x, fused_module.W.T, fused_module.b)  # torch.nn.functional's own linear
    torch.testing.assert_close(fused_module(x), expected, rtol=0, atol=1e-12)
    torch.testing.assert_close(plain_module(x), expected, rtol=0, atol=1e-12)


def test_the_torch_backend_registers_a_runner_for_every_registry_backend():
    import ncd.backends.pytorch  # noqa: F401  (registers at import)

    assert set(scan_backends.registered()) == set(scan_backends.BACKENDS)
    for name in scan_backends.BACKENDS:
        assert callable(scan_backends.runner(name))


def test_a_primed_axis_is_its_base_axis_wherever_sizes_or_colours_are_read():
    """IR JSON may claim any `prime_of` (even a cycle); sizes and the renderer read T' as T by name."""
    from ncd.backends.graphviz.draw import axis_colours
    from ncd.ir import SpecIR
    from ncd.sizes import AxisSizes

    ir = ncd.check("attention", T=6)
    data = ir.model_dump()
    for name in data["axes"]:
        data["axes"][name]["prime_of"] = name  # a cycle the old renderer recursed on forever
    tampered = SpecIR.model_validate(data)
    assert axis_colours(tampered) == axis_colours(ir)  # no recursion; T' coloured as T
    assert AxisSizes.of(tampered).bound("T'") == 6


@pytest.mark.parametrize("argv", [["run", "SPEC", "--set", "T=5", "--backward"],
                                  ["run", "SPEC", "--set", "T=5", "B=3", "--json"]])
def test_ncd_run_runs_the_passes_once(tmp_path, monkeypatch, capsys, argv):
    """`ncd run` checks and loads from one trip through the pipeline: the recurrence and fusion
    passes run once (the batch axis question, with --set B, is answered by a build alone)."""
    path = tmp_path / "r.ncd"
    path.write_text(NONLINEAR.replace("BACKEND", "auto"))
    calls = []
    real = pipeline.run_passes
    monkeypatch.setattr(pipeline, "run_passes", lambda *a, **k: calls.append(1) or real(*a, **k))
    assert main([str(path) if a == "SPEC" else a for a in argv]) == 0
    capsys.readouterr()
    assert len(calls) == 1


def test_a_check_then_a_load_parse_the_text_once(monkeypatch):
    """The parse tree of a text is built once (ncd/frontend/parser.py), and the IR is verified once
    per compile when the passes leave it as it was built."""
    from ncd.frontend import parser

    source = MLP.replace("F = 5", "F = 6")  # a text no other test parsed
    parses, verifies = [], []
    real_parse, real_verify = parser._parse, pipeline.verify
    monkeypatch.setattr(parser, "_parse", lambda s: parses.append(1) or real_parse(s))
    monkeypatch.setattr(pipeline, "verify", lambda ir: verifies.append(1) or real_verify(ir))
    ncd.check(source)
    ncd.load(source)
    assert len(parses) == 1
    assert len(verifies) == 2  # one build each; the plan-only passes change nothing


def test_building_leaves_the_shared_parse_tree_as_it_was():
    """What lets a parse tree be shared between builds: building from it never edits it."""
    import copy

    from ncd.api import read_spec
    from ncd.frontend.parser import parse

    for spec in ("transformer_encoder", "mgno", "pointer_net", "universal_transformer"):
        source, name = read_spec(spec)
        before = copy.deepcopy(parse(source, name))
        ncd.check(spec)
        assert parse(source, name) == before, spec


def test_a_pass_that_breaks_the_ir_fails_at_the_pipeline(monkeypatch):
    """The IR is re-verified after a pass that changed it (here a fusion pass that retypes a node)."""
    real = pipeline.plan_fusions

    def breaking(ir):
        node = next(n for n in ir.blocks["M"].nodes if n.op == "add")
        node.types = [node.types[0].model_copy(update={"axes": ("E",)})]
        return real(ir)

    monkeypatch.setattr(pipeline, "plan_fusions", breaking)
    with pytest.raises(ncd.NcdError, match="IR"):
        pipeline.compile_spec(MLP, "<mlp>")


def test_a_fusion_kind_is_one_entry_of_the_table(monkeypatch):
    """A kind added to ``FUSIONS`` alone (its matcher, cost rule and call) is planned, lowered and
    costed: neither the torch lowering nor the analyzer knows the kinds."""
    from ncd.ops.base import call
    from ncd.ops.costing import numel
    from ncd.passes import fusion

    def match(rules, node):
        if node.op != "tanh":
            return None
        return fusion.Fusion(kind="tanh_call", node=node.id, absorbed=[], operands=list(node.inputs))

    rule = fusion.FusionRule("tanh_call", match, lambda f, node, ins, size: {"flops": 7 * numel(ins[0], size)},
                             lambda f, ops, number: call("torch.tanh", *ops))
    monkeypatch.setitem(fusion.FUSIONS, "tanh_call", rule)
    spec = "axis E = 3\n\nblock M(x: [E]) -> [E] {\n    return tanh(x)\n}\n"
    compiled = pipeline.compile_spec(spec, "<tanh>")
    assert [f.kind for f in compiled.passes.fusion.of_block("M").values()] == ["tanh_call"]
    (op,) = analyze(compiled.ir, {"B": 2}, passes=compiled.passes).ops
    assert op.op == "tanh→tanh_call" and str(op.flops_fwd) == "7*B*E"  # the entry's rule (tanh's row: 4)
    module = compile_module(compiled.ir, passes=compiled.passes)
    x = torch.randn(2, 3)
    torch.testing.assert_close(module(x), torch.tanh(x))
