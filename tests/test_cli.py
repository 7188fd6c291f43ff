"""The `ncd` command line: exit codes, output formats, and errors that never show a traceback."""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import ncd
from ncd.cli import main
from ncd.ir import SpecIR
from ncd.library import library_specs

ROOT = Path(__file__).resolve().parents[1]
NCD_SCRIPT = Path(sys.executable).parent / "ncd"

ATTENTION = """\
# Tiny attention with a recurrent readout
# paper: a test
axis D = 16, H = 2
axis K = D / H
axis T

block Attention(x: [T, D]) -> [T, D] {
    param Wq, Wk, Wv: [D, H, K] init normal(0, 0.1)
    param Wo: [H, K, D] init normal(0, 0.1)
    q = x @[D] Wq
    k = (x @[D] Wk)[T as T']
    v = (x @[D] Wv)[T as T']
    a = softmax(q @[K] k / sqrt(K), over = T')
    return (a @[T'] v) @[H, K] Wo
}

block Model(x: [T, D]) -> [T, D] {
    use attn = Attention
    param W: [D', D] init normal(0, 0.1)
    y = x + attn(x)
    return scan t over T carry (h: [D] = 0) {
        h = tanh(y[t] + h[D as D'] @[D'] W)
        emit h
    }
}
"""

BAD = """\
axis D = 8, E = 4
block F(x: [E]) -> [D] {
    param W: [E, D] init normal(0, 1)
    return x @[D] W
}
"""


@pytest.fixture
def spec(tmp_path: Path) -> str:
    path = tmp_path / "att.ncd"
    path.write_text(ATTENTION)
    return str(path)


@pytest.fixture
def bad(tmp_path: Path) -> str:
    path = tmp_path / "bad.ncd"
    path.write_text(BAD)
    return str(path)


def test_check_ok(spec, capsys):
    assert main(["check", spec]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"ok {spec}: Model(x: [T, D]) -> [T, D]")


def test_check_bad_points_at_the_spec(spec, bad, capsys):
    assert main(["check", spec, bad]) == 1
    captured = capsys.readouterr()
    assert f"ok {spec}" in captured.out
    assert f"{bad}:4:16: cannot contract axis D" in captured.err
    assert "^" in captured.err and "hint:" in captured.err
    assert "Traceback" not in captured.err


def test_check_json(spec, bad, capsys):
    assert main(["check", spec, bad, "--json"]) == 1
    results = json.loads(capsys.readouterr().out)
    assert [r["ok"] for r in results] == [True, False]
    assert results[1]["error"]["line"] == 4 and results[1]["error"]["col"] == 16
    assert results[1]["error"]["file"] == bad


def test_check_set_and_unknown_axis(spec, capsys):
    assert main(["check", spec, "--set", "D=32", "H=4"]) == 0
    assert main(["check", spec, "--set", "Q=3"]) == 1
    assert "declares no axis Q" in capsys.readouterr().err


def test_argparse_usage_is_exit_2(spec, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["run", spec, "--set", "D=x"])
    assert exc.value.code == 2
    with pytest.raises(SystemExit) as exc:
        main(["frobnicate"])
    assert exc.value.code == 2
    with pytest.raises(SystemExit) as exc:
        main(["compile", "--help"])
    assert exc.value.code == 0
    assert "--class-name" in capsys.readouterr().out


def test_missing_file_is_exit_1(tmp_path, capsys):
    assert main(["check", str(tmp_path / "nope.ncd")]) == 1
    assert "no such spec file" in capsys.readouterr().err


def test_ir_json_round_trips(spec, tmp_path, capsys):
    assert main(["ir", spec, "--set", "T=5", "--json"]) == 0
    text = capsys.readouterr().out
    ir = SpecIR.model_validate_json(text)
    assert ir == ncd.check(spec, T=5)
    path = tmp_path / "ir.json"
    path.write_text(text)
    assert main(["ir", "--from-json", str(path), "--json"]) == 0
    assert capsys.readouterr().out == text
    assert main(["ir", "--from-json", str(path)]) == 0
    summary = capsys.readouterr().out
    assert "block Attention" in summary and "param Wq: [D, H, K]" in summary and "use attn = Attention" in summary


def test_ir_from_bad_json(tmp_path, capsys):
    path = tmp_path / "x.json"
    path.write_text('{"name": 3}')
    assert main(["ir", "--from-json", str(path)]) == 1
    assert "not ncd IR JSON" in capsys.readouterr().err


def test_compile_emits_importable_python(spec, tmp_path, capsys):
    out = tmp_path / "emitted.py"
    assert main(["compile", spec, "--set", "T=6", "-o", str(out), "--class-name", "Net", "--explain"]) == 0
    text = capsys.readouterr().out
    assert "scan over T" in text and "carry (h: [D])" in text and "backend: sequential" in text
    module_spec = importlib.util.spec_from_file_location("emitted_net", out)
    mod = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(mod)
    torch.manual_seed(0)
    net = mod.Net()
    reference = ncd.load(spec, T=6)
    reference.load_state_dict(net.state_dict())
    x = torch.randn(3, 6, 16)
    torch.testing.assert_close(net(x), reference(x))


def test_compile_to_stdout(spec, capsys):
    assert main(["compile", spec, "--explain"]) == 0
    captured = capsys.readouterr()
    assert "class Model(nn.Module)" in captured.out
    assert "backend: sequential" in captured.err  # the explanation stays out of the source


def test_run_json(spec, capsys):
    assert main(["run", spec, "--set", "B=3", "T=4", "--backward", "--json", "--dtype", "float64"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert {"spec", "entry", "sizes", "inputs", "outputs", "params", "checksum", "grad_norm"} <= set(record)
    assert record["inputs"][0]["shape"] == [3, 4, 16]
    assert record["outputs"] == [{"axes": ["B", "T", "D"], "shape": [3, 4, 16]}]
    assert record["params"] == 4 * 16 * 16 + 16 * 16
    assert record["grad_norm"] > 0


def test_run_is_seeded(spec, capsys):
    main(["run", spec, "--set", "T=3", "--json"])
    first = json.loads(capsys.readouterr().out)["checksum"]
    main(["run", spec, "--set", "T=3", "--json"])
    assert json.loads(capsys.readouterr().out)["checksum"] == first
    assert main(["run", spec, "--set", "T=3"]) == 0
    assert "checksum" in capsys.readouterr().out


def test_run_fuse_scans_gives_the_unfused_result(capsys):
    """--fuse-scans compiles paragru's Newton steps; the outputs and gradients equal the
    unfused run's (float64), and the record says which scans were fused."""
    paragru = str(Path(__file__).resolve().parents[1] / "specs" / "paragru.ncd")
    args = ["run", paragru, "--set", "B=2", "T=12", "--backward", "--json", "--dtype", "float64"]
    assert main(args) == 0
    plain = json.loads(capsys.readouterr().out)
    assert main([*args, "--fuse-scans"]) == 0
    fused = json.loads(capsys.readouterr().out)
    assert [s["fused"] for s in fused["scans"]] == [True] and plain["scans"][0]["fused"] is False
    assert fused["checksum"] == pytest.approx(plain["checksum"], rel=1e-9, abs=1e-9)
    assert fused["grad_norm"] == pytest.approx(plain["grad_norm"], rel=1e-9)


def test_run_unbound_axis_is_a_clear_error(spec, capsys):
    assert main(["run", spec]) == 1
    err = capsys.readouterr().err
    assert "axis T has no size" in err and "--set T=N" in err


def test_run_json_error(spec, capsys):
    assert main(["run", spec, "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["error"]["message"].endswith("axis T has no size")


def test_list(capsys):
    if not library_specs():
        pytest.skip("the library is empty")
    assert main(["list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["name"] for r in rows} == {p.stem for p in library_specs()}
    assert all(set(r) == {"name", "title", "paper", "path"} for r in rows)
    assert main(["list"]) == 0
    assert rows[0]["name"] in capsys.readouterr().out


@pytest.mark.skipif(not NCD_SCRIPT.exists(), reason="the ncd console script is not installed")
def test_console_script_exit_codes(spec, bad):
    ok = subprocess.run([str(NCD_SCRIPT), "check", spec], capture_output=True, text=True, cwd=ROOT)
    assert ok.returncode == 0 and ok.stdout.startswith("ok ")
    failed = subprocess.run([str(NCD_SCRIPT), "check", bad], capture_output=True, text=True, cwd=ROOT)
    assert failed.returncode == 1
    assert f"{bad}:4:16:" in failed.stderr and "Traceback" not in failed.stderr


def test_run_scan_backend_override(spec, capsys):
    assert main(["run", spec, "--set", "T=3", "--scan-backend", "sequential", "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert [s["backend"] for s in record["scans"]] == ["sequential"]
    assert main(["run", spec, "--set", "T=3", "--scan-backend", "bogus"]) == 1
    assert "unknown scan backend 'bogus'" in capsys.readouterr().err


def test_help_lists_the_backends_scan_backends(capsys):
    from ncd.backends.pytorch import SCAN_BACKENDS

    with pytest.raises(SystemExit):
        main(["run", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert ", ".join(SCAN_BACKENDS) in text


COMMAND_NAMES = ("check", "compile", "run", "list", "ir", "render", "cost")


@pytest.mark.parametrize("command", COMMAND_NAMES)
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: ncd {command}")


@pytest.mark.parametrize("command", ["check", "compile", "run", "ir", "render", "cost"])
@pytest.mark.parametrize("argv", [["--set", "D=4", "D=5"], ["--set", "D=4", "--set", "D=4"]], ids=["one", "two"])
def test_set_twice_is_a_usage_error_naming_the_axis(command, argv, spec, capsys):
    """Every command reads --set through the one parser: an axis given twice is refused, not 'last wins'."""
    with pytest.raises(SystemExit) as exc:
        main([command, spec, *argv])
    assert exc.value.code == 2
    assert "axis D is set twice" in capsys.readouterr().err


@pytest.mark.parametrize("item, message", [
    ("D=0", "at least 1"), ("D=-3", "expected AXIS=SIZE"), ("D=1.5", "expected AXIS=SIZE"),
    (f"D={2**63}", "at most 2^63-1"), ("=4", "expected AXIS=SIZE"), ("D=", "expected AXIS=SIZE"),
])
def test_set_values_are_positive_int64(item, message, spec, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["check", spec, "--set", item])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["run", "SPEC", "--seed", "-1"], "seed must be between 0 and 2^64-1"),
    (["run", "SPEC", "--seed", str(2**64)], "seed must be between 0 and 2^64-1"),
    (["run", "SPEC", "--seed", "x"], "expected an integer seed"),
    (["cost", "SPEC", "--peak-tflops", "-5"], "finite number above 0"),
    (["cost", "SPEC", "--peak-tflops", "nan"], "finite number above 0"),
    (["cost", "SPEC", "--bandwidth-gbs", "inf"], "finite number above 0"),
    (["cost", "SPEC", "--bandwidth-gbs", "0"], "finite number above 0"),
])
def test_numeric_options_are_range_checked(argv, message, spec, capsys):
    with pytest.raises(SystemExit) as exc:
        main([spec if a == "SPEC" else a for a in argv])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_largest_seed_runs(spec, capsys):
    assert main(["run", spec, "--set", "T=2", "--seed", str(2**64 - 1), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["seed"] == 2**64 - 1


def test_an_unexpected_exception_is_exit_3_without_traceback(spec, monkeypatch, capsys):
    """The backstop: a bug (any exception but NcdError) is one line asking for a report, exit 3."""
    import ncd.cli.check as check_cmd

    def broken(*args, **kwargs):
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(check_cmd, "spec_sizes", broken)
    assert main(["check", spec]) == 3
    err = capsys.readouterr().err
    assert "ZeroDivisionError" in err and "this is a bug in ncd" in err and "Traceback" not in err


def test_python_dash_m_ncd_cli(spec):
    done = subprocess.run([sys.executable, "-m", "ncd.cli", "check", spec], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.startswith("ok ")


def test_non_utf8_spec_and_ir_json_are_located_errors(tmp_path, capsys):
    spec = tmp_path / "latin1.ncd"
    spec.write_bytes(b"axis D = 4 # \xff\nblock F(x: [D]) -> [D] {\n    return x\n}\n")
    assert main(["check", str(spec)]) == 1
    err = capsys.readouterr().err
    assert f"{spec}:1:14: the spec file is not UTF-8: byte 0xff" in err and "Traceback" not in err
    blob = tmp_path / "ir.json"
    blob.write_bytes(b'{"name": "\xfe"}')
    assert main(["ir", "--from-json", str(blob)]) == 1
    assert f"{blob}:1:11: the IR JSON file is not UTF-8" in capsys.readouterr().err
    done = subprocess.run([sys.executable, "-m", "ncd.cli", "ir", "--from-json", "-"], input=b"\xff{}",
                          capture_output=True)
    assert done.returncode == 1 and b"<stdin>:1:1: the IR JSON is not UTF-8" in done.stderr


def test_unwritable_output_is_exit_1(spec, tmp_path, capsys):
    for argv in (["compile", spec, "--set", "T=2"], ["render", spec]):
        for out in (tmp_path / "no" / "such" / "dir.out", tmp_path):
            target = str(out) + (".dot" if argv[0] == "render" and out != tmp_path else "")
            assert main([*argv, "-o", target]) == 1
            err = capsys.readouterr().err
            assert "cannot" in err and "Traceback" not in err, err
    assert not (tmp_path / "no").exists()


def test_cost_of_a_spec_with_no_arithmetic(tmp_path, capsys):
    path = tmp_path / "id.ncd"
    path.write_text("axis D = 4\nblock F(x: [D]) -> [D] {\n    return x\n}\n")
    assert main(["cost", str(path)]) == 0
    assert "fused bound -" in capsys.readouterr().out  # B is unbound: no time, and no crash
    assert main(["cost", str(path), "--set", "B=3", "--json"]) == 0
    roof = json.loads(capsys.readouterr().out)["roofline"]
    assert roof["time_fwd_s"] == 0 and roof["ideal_s"] > 0  # the input and output still move
