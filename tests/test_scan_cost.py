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
    x = torch.randn(8, 64, 16)
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
