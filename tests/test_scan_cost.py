"""`auto` between Newton and the loop by predicted cost at the call's sizes (CPU, float32)."""
from __future__ import annotations

import torch

import ncd
from ncd.backends.pytorch import scan_cost


def test_the_cpu_model_picks_what_the_issue_measured():
    """Issue 14's measurements on this CPU: paragru B8 T256 D128 forward, the loop 7× faster
    than Newton; B1 T4096 forward+backward, Newton 28× faster than the loop."""
    assert scan_cost.cheaper("cpu", "float32", 8, 256, 128, backward=False)[0] == "sequential"
    assert scan_cost.cheaper("cpu", "float32", 1, 4096, 128, backward=True)[0] == "newton"


def test_uncalibrated_devices_and_dtypes_keep_newton():
    assert scan_cost.cheaper("cuda", "float32", 8, 256, 128, backward=False) == ("newton", {})
    assert scan_cost.cheaper("cpu", "float64", 8, 256, 128, backward=False) == ("newton", {})


def test_auto_runs_the_loop_where_it_is_predicted_faster_and_equals_it():
    sizes = dict(E=16, D=128, H=4)
    torch.manual_seed(0)
    seq = ncd.load("specs/paragru.ncd", scan_backend="sequential", **sizes)
    auto = ncd.load("specs/paragru.ncd", **sizes)
    auto.load_state_dict(seq.state_dict())
    assert [p.backend for p in auto.scan_plans] == ["newton"]
    (scan,) = auto.parallel_scans()
    x = torch.randn(8, 16, 16)  # predicted > 2x apart: the model decides alone, no timing
    assert scan_cost.auto_measures(auto.scan_plans[0], "cpu", "float32", 8, 16, 128, False) == []
    with torch.no_grad():
        expected, got = seq(x), auto(x)
    assert torch.equal(got, expected)
    assert scan.stats.calls == 0 and scan.implementation.startswith("sequential loop")


def test_auto_keeps_newton_where_it_is_predicted_faster():
    sizes = dict(E=8, D=8, H=2)
    auto = ncd.load("specs/paragru.ncd", **sizes)
    (scan,) = auto.parallel_scans()
    assert scan_cost.cheaper("cpu", "float32", 1, 2048, 8, backward=True)[0] == "newton"
    auto(torch.randn(1, 2048, 8)).sum().backward()
    assert scan.stats.calls >= 1


def test_the_analyzer_costs_fused_rnn_where_the_step_is_a_standard_cell():
    """fused_rnn runs the same steps' arithmetic as the loop (torch.nn.LSTM's FLOPs are the
    loop's), so its FLOPs and depth are the loop's; it applies only to a proven cell."""
    from ncd.analysis import analyze

    (lstm,) = analyze(ncd.check("specs/lstm.ncd"), {"B": 2, "T": 16}).to_json()["scans"]
    assert lstm["chosen"] == "fused_rnn" and lstm["backend"] == "fused_rnn"
    fused, loop = lstm["strategies"]["fused_rnn"], lstm["strategies"]["sequential"]
    assert fused["applicable"] == 1 and fused["flops"] == loop["flops"] == 16 * lstm["step_flops"]
    assert fused["depth"] == loop["depth"] == 16
    (leaky,) = analyze(ncd.check("specs/leaky_rnn.ncd"), {"B": 2, "T": 16}).to_json()["scans"]
    assert leaky["chosen"] == "sequential" and leaky["strategies"]["fused_rnn"]["applicable"] == 0


def _explained(path: str, rows: int = 1, **sizes: int) -> dict:
    from ncd.api import run_pipeline
    from ncd.cli.explain import explain_loops

    compiled = run_pipeline(path, sizes=sizes)
    (record,) = explain_loops(compiled.ir, passes=compiled.passes, rows=rows)
    return record


def test_explain_predicts_every_candidate_backend_per_device_kind():
    """Candidates are the backends the registry admits for the plan; on a CPU in float32 the
    loop and Newton have numbers, and what auto runs is what the module runs at those sizes."""
    record = _explained("specs/paragru.ncd", rows=8, T=256, E=16, D=128, H=4)
    pred = record["predictions"]
    assert (pred["rows"], pred["T"], pred["N"]) == (8, 256, 128)
    cpu = pred["devices"]["cpu"]
    assert set(cpu["fwd"]["seconds"]) == {"sequential", "newton"}  # scan, fft, gla, delta, fused_rnn refuse
    assert all(t is not None and t > 0 for mode in cpu.values() for t in mode["seconds"].values())
    assert all(t is None for mode in pred["devices"]["cuda"].values() for t in mode["seconds"].values())
    assert pred["devices"]["cuda"]["fwd"]["auto_runs"] == "newton"
    auto = ncd.load("specs/paragru.ncd", E=16, D=128, H=4)
    (scan,) = auto.parallel_scans()
    with torch.no_grad():
        auto(torch.randn(8, 256, 16))
    ran = "sequential" if scan.implementation.startswith("sequential loop") else "newton"
    assert ran in (cpu["fwd"]["auto_measures"] or [cpu["fwd"]["auto_runs"]])  # the model's, or timed
    for mode in cpu.values():  # the loop or Newton: the cheaper prediction
        assert mode["auto_runs"] == min(mode["seconds"], key=mode["seconds"].__getitem__)


def test_explain_prints_the_predictions_or_says_what_to_bind(capsys):
    from ncd.cli import main

    assert main(["compile", "specs/lstm.ncd", "--set", "T=64", "--explain", "--explain-rows", "4",
                 "-o", "/dev/null"]) == 0
    out = capsys.readouterr().out
    assert "predicted, float32, 4 batch rows, T = 64, N = 128" in out
    assert "cpu fwd+bwd: sequential" in out and "auto runs fused_rnn" in out
    assert "cheapest predicted fused_rnn" in out  # torch's operator against the interpreter's loop
    assert "newton no model" in out  # a dense Jacobian: not what was calibrated
    assert main(["compile", "specs/lstm.ncd", "--explain", "-o", "/dev/null"]) == 0
    assert "bind the scanned axis" in capsys.readouterr().out
    assert main(["compile", "specs/lstm.ncd", "--explain", "--explain-rows", "0", "-o", "/dev/null"]) == 1
    assert "--explain-rows must be at least 1" in capsys.readouterr().err


def test_explain_predicts_the_linear_backends_and_runs_what_it_says():
    """A linear diagonal scan: the loop, Newton and the parallel scan each have a CPU model; what
    `--explain` says auto runs is what the module's scan runs at those sizes, for each grad mode.
    CUDA has no calibration: only the roofline estimate, and the pass's backend."""
    from ncd.backends.pytorch import auto_scan

    record = _explained("specs/mamba_negeig.ncd", rows=2, T=48, D=8, N=4)
    pred = record["predictions"]
    assert (pred["rows"], pred["T"], pred["N"]) == (2, 48, 32) and pred["statements"] >= 1
    cpu, cuda = pred["devices"]["cpu"], pred["devices"]["cuda"]
    assert set(cpu["fwd"]["seconds"]) == {"sequential", "newton", "scan"}
    assert all(t is not None and t > 0 for mode in cpu.values() for t in mode["seconds"].values())
    assert all(t is None for mode in cuda.values() for t in mode["seconds"].values())
    assert all(t > 0 for mode in cuda.values() for t in mode["roofline"].values())
    assert {mode["auto_runs"] for mode in cuda.values()} == {"scan"}
    m = ncd.load("specs/mamba_negeig.ncd", D=8, N=4)
    (scan,) = auto_scan.auto_scans(m)
    x = torch.randn(2, 48, 8)
    with torch.no_grad():
        m(x)
    assert cpu["fwd"]["auto_runs"] == min(cpu["fwd"]["seconds"], key=cpu["fwd"]["seconds"].get)
    assert scan.ran in (cpu["fwd"]["auto_measures"] or [cpu["fwd"]["auto_runs"]])  # the model's, or timed
    m(x).sum().backward()
    assert scan.ran in (cpu["fwd+bwd"]["auto_measures"] or [cpu["fwd+bwd"]["auto_runs"]])


def test_explain_labels_the_gpu_estimate_uncalibrated(capsys):
    from ncd.cli import main

    assert main(["compile", "specs/mamba_negeig.ncd", "--set", "T=64", "--explain", "-o", "/dev/null"]) == 0
    out = capsys.readouterr().out
    assert "cuda fwd, uncalibrated roofline" in out and "cpu fwd: sequential" in out
