"""`auto` at run time over every backend the registry admits for a scan (backends/pytorch/auto_scan.py):
the choice follows the cost model, every candidate computes what the sequential loop computes, and
the choice is cached per call shape."""
from __future__ import annotations

import pytest
import torch

import ncd
from ncd.backends.pytorch import auto_scan, scan_cost

# spec, sizes, input width: one per linear class (diagonal, time-invariant, gla, delta) and Newton's
SPECS = [
    ("mamba_negeig", {"D": 4, "N": 3}, 4),
    ("lssl", {"H": 2, "N": 4}, 2),
    ("gla", {"D": 8, "H": 2, "K": 2, "V": 4}, 8),
    ("deltanet", {"D": 8, "H": 2, "K": 4, "V": 4}, 8),
    ("paragru", {"E": 4, "D": 8, "H": 2}, 4),
]


def _auto(module: torch.nn.Module) -> auto_scan.AutoScan:
    (scan,) = auto_scan.auto_scans(module)
    return scan


@pytest.mark.parametrize("spec,sizes,width", SPECS, ids=[s[0] for s in SPECS])
def test_every_candidate_gives_the_sequential_loops_results(spec, sizes, width):
    """float64, values and every gradient: each backend auto may pick equals the loop."""
    torch.manual_seed(0)
    ref = ncd.load(f"specs/{spec}.ncd", scan_backend="sequential", **sizes).double()
    probe = ncd.load(f"specs/{spec}.ncd", **sizes)
    candidates = scan_cost.switchable(_auto(probe).loop.plan)
    assert len(candidates) >= 2 and "sequential" in candidates
    x = torch.randn(2, 9, width, dtype=torch.float64)
    xr = x.clone().requires_grad_()
    expected = ref(xr)
    expected.square().sum().backward()
    for backend in candidates:
        m = ncd.load(f"specs/{spec}.ncd", scan_backend=backend, **sizes).double()
        m.load_state_dict(ref.state_dict())
        xb = x.clone().requires_grad_()
        got = m(xb)
        got.square().sum().backward()
        torch.testing.assert_close(got, expected, rtol=1e-8, atol=1e-10, msg=f"{spec} via {backend}")
        torch.testing.assert_close(xb.grad, xr.grad, rtol=1e-7, atol=1e-9, msg=f"{spec} via {backend}")
        for (name, p), (_, q) in zip(m.named_parameters(), ref.named_parameters()):
            torch.testing.assert_close(p.grad, q.grad, rtol=1e-7, atol=1e-9, msg=f"{spec} via {backend}: {name}")


def _constants(monkeypatch, cheapest: str, keys: list[str]) -> None:
    """A CPU model where ``cheapest`` costs 1 ns per term and every other key 1 s."""
    for mode in ("fwd", "fwd+bwd"):
        table = dict(scan_cost.CPU[mode])
        for key in keys:
            size = len(scan_cost.features(key, 1, 4, 4))
            table[key] = (1e-9 if key == cheapest else 1.0,) * size
        monkeypatch.setitem(scan_cost.CPU, mode, table)


@pytest.mark.parametrize("spec,sizes,width", SPECS, ids=[s[0] for s in SPECS])
def test_the_choice_follows_the_model_and_equals_the_loop(monkeypatch, spec, sizes, width):
    torch.manual_seed(0)
    ref = ncd.load(f"specs/{spec}.ncd", scan_backend="sequential", **sizes)
    x = torch.randn(2, 7, width)
    with torch.no_grad():
        expected = ref(x)
    plan = _auto(ncd.load(f"specs/{spec}.ncd", **sizes)).loop.plan
    keys = {b: scan_cost._key(b, plan) for b in scan_cost.switchable(plan)}
    for backend, key in keys.items():
        _constants(monkeypatch, key, list(keys.values()))
        m = ncd.load(f"specs/{spec}.ncd", **sizes)
        m.load_state_dict(ref.state_dict())
        scan = _auto(m)
        with torch.no_grad():
            got = m(x)
        assert scan.ran == backend, (spec, backend, scan.cache)
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
        if backend != plan.backend and scan.scan is not None:  # what ran, in words, for `ncd run`
            assert "auto, predicted faster than" in scan.scan.implementation


def test_grad_mode_and_sizes_pick_per_call(monkeypatch):
    """Forward alone and forward+backward have their own constants: the loop when no gradient is
    needed, the parallel scan when one is, in one module."""
    for mode, cheap in (("fwd", "sequential.diagonal"), ("fwd+bwd", "scan.diagonal")):
        table = dict(scan_cost.CPU[mode])
        for key in ("sequential.diagonal", "scan.diagonal", "newton.diagonal"):
            table[key] = (1e-9 if key == cheap else 1.0,) * len(scan_cost.features(key, 1, 4, 4))
        monkeypatch.setitem(scan_cost.CPU, mode, table)
    m = ncd.load("specs/mamba_negeig.ncd", D=4, N=3)
    scan = _auto(m)
    x = torch.randn(2, 5, 4)
    with torch.no_grad():
        m(x)
    assert scan.ran == "sequential"
    m(x).sum().backward()
    assert scan.ran == "scan"


def test_the_choice_is_cached_per_call_shape(monkeypatch):
    m = ncd.load("specs/mamba_negeig.ncd", D=4, N=3)
    scan = _auto(m)
    calls = []
    original = scan_cost.choose

    def counted(*args, **kwargs):
        calls.append(args[3])
        return original(*args, **kwargs)

    monkeypatch.setattr(scan_cost, "choose", counted)
    with torch.no_grad():
        for _ in range(3):
            m(torch.randn(2, 6, 4))
        assert len(calls) == 1 and (calls[0].rows, calls[0].T, calls[0].N) == (2, 6, 12)
        m(torch.randn(3, 6, 4))
        m(torch.randn(2, 8, 4))
        m(torch.randn(2, 6, 4))
    assert len(calls) == 3 and len(scan.cache) == 3
    assert {(k[2], k[3]) for k in scan.cache} == {(2, 6), (3, 6), (2, 8)}


def test_a_requested_backend_and_uncalibrated_dtypes_keep_the_pass_choice():
    assert auto_scan.auto_scans(ncd.load("specs/mamba_negeig.ncd", scan_backend="scan", D=4, N=3)) == []
    m = ncd.load("specs/mamba_negeig.ncd", D=4, N=3).double()
    with torch.no_grad():
        m(torch.randn(2, 300, 4, dtype=torch.float64))
    assert _auto(m).ran == "scan"  # float64 has no calibrated model: the pass's backend
    gru = ncd.load("specs/gru.ncd", D=8, E=4)  # a proven cell stays on torch's operator
    assert auto_scan.auto_scans(gru) == [] and gru.scan_plans[0].backend == "fused_rnn"


def test_the_registry_keeps_the_gla_and_delta_kernels_to_their_own_steps():
    with pytest.raises(ncd.NcdError, match="cannot run this scan: it needs the step in its form.*; this scan is gla"):
        ncd.load("specs/gla.ncd", scan_backend="delta")
    with pytest.raises(ncd.NcdError, match="cannot run this scan: it needs the step in its form.*; this scan is delta"):
        ncd.load("specs/deltanet.ncd", scan_backend="gla")


def _tied(monkeypatch, keys: list[str]) -> None:
    """A CPU model predicting every key the same: the model cannot tell them apart."""
    for mode in ("fwd", "fwd+bwd"):
        table = dict(scan_cost.CPU[mode])
        for key in keys:
            table[key] = (1e-3,) * len(scan_cost.features(key, 1, 4, 4))
        monkeypatch.setitem(scan_cost.CPU, mode, table)


@pytest.mark.parametrize("backward", [False, True], ids=["fwd", "fwd+bwd"])
def test_close_predictions_are_timed_once_per_shape_and_the_fastest_runs(monkeypatch, backward):
    """Injected timings, not the wall clock: the candidate the timer calls fastest runs, whatever
    the model's order; the timing happens on the first call of a shape only, and leaves no trace
    (results, gradients and Newton's stats are those of the chosen backend alone)."""
    torch.manual_seed(0)
    sizes = {"E": 4, "D": 8, "H": 2}
    ref = ncd.load("specs/paragru.ncd", scan_backend="sequential", **sizes)
    m = ncd.load("specs/paragru.ncd", **sizes)
    m.load_state_dict(ref.state_dict())
    scan = _auto(m)
    _tied(monkeypatch, ["sequential", "newton"])
    timed: list[str] = []

    def timer(backend, run):
        run()
        timed.append(backend)
        return {"sequential": 1.0, "newton": 2.0}[backend]  # the loop "measured" faster (over the budget)

    scan.timer = timer
    x = torch.randn(2, 6, 4)
    xa, xr = x.clone().requires_grad_(backward), x.clone().requires_grad_(backward)
    with torch.set_grad_enabled(backward):
        got, expected = m(xa), ref(xr)
    assert scan.ran == "sequential" and sorted(set(timed)) == ["newton", "sequential"]
    assert len(timed) == 2 * auto_scan.MEASURE_ROUNDS
    assert list(scan.measured.values()) == [{"sequential": 1.0, "newton": 2.0}]
    torch.testing.assert_close(got, expected)
    newton = scan.runners["newton"].scan
    assert newton.stats.calls == 0  # the trial runs of Newton are not counted as the module's
    if backward:
        assert all(p.grad is None for p in m.parameters())  # the trials wrote no .grad
        got.sum().backward()
        expected.sum().backward()
        torch.testing.assert_close(xa.grad, xr.grad)
        for p, q in zip(m.parameters(), ref.parameters()):
            torch.testing.assert_close(p.grad, q.grad)
    timed.clear()
    with torch.set_grad_enabled(backward):
        m(x)
    assert timed == [] and scan.ran == "sequential"  # cached with the shape


def test_far_predictions_are_not_timed_and_measuring_is_bounded(monkeypatch):
    m = ncd.load("specs/paragru.ncd", E=4, D=8, H=2)
    scan = _auto(m)
    timed: list[str] = []
    scan.timer = lambda backend, run: timed.append(backend) or 1.0
    _constants(monkeypatch, "newton", ["sequential", "newton"])  # 1e9 apart
    with torch.no_grad():
        m(torch.randn(2, 6, 4))
    assert timed == [] and scan.ran == "newton" and scan.measured == {}
    _tied(monkeypatch, ["sequential", "newton"])
    monkeypatch.setattr(auto_scan, "MEASURE_SHAPES", 1)
    with torch.no_grad():
        m(torch.randn(2, 7, 4))
        m(torch.randn(2, 8, 4))
    assert len(scan.measured) == 1 and len(scan.cache) == 3
