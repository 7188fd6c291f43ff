"""batchnorm against nn.BatchNorm1d/2d, and the GroupNorm / InstanceNorm one-liners against
nn.GroupNorm / nn.InstanceNorm2d, in float64 at random sizes.

nn.BatchNorm2d is the oracle for every number: train steps give its outputs and move the running
statistics (and num_batches_tracked) as it does, eval uses them, and the state_dicts load both
ways. The emitted Python does the same, bit for bit.
"""
from __future__ import annotations

import importlib.util
import random

import pytest
import torch
from torch import nn

import ncd
from ncd.backends.pytorch.emit import emit_python

BN2D = """axis C, H, W
block BatchNorm2d(x: [C, H, W]) -> [C, H, W] {
    param weight: [C] init ones
    param bias: [C] init zeros
    buffer running_mean: [C] init zeros
    buffer running_var: [C] init ones
    buffer num_batches_tracked: [] init zeros
    return batchnorm(x, running_mean, running_var, num_batches_tracked, over = [H, W], momentum = MOM) * weight + bias
}
"""


def _sizes(seed: int) -> dict[str, int]:
    rng = random.Random(seed)
    return {"C": rng.randint(1, 5), "H": rng.randint(1, 5), "W": rng.randint(2, 6)}


def _emitted(source: str, tmp_path, **sizes):
    path = tmp_path / "emitted_bn.py"
    path.write_text(emit_python(ncd.check(source, **sizes), class_name="Entry"))
    spec = importlib.util.spec_from_file_location("emitted_bn", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # our own generated code, for the test
    return module.Entry()


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("momentum", [0.1, 0.5])
def test_train_steps_update_the_running_statistics_as_nn_batchnorm2d(seed, momentum, tmp_path):
    sizes = _sizes(seed)
    source = BN2D.replace("MOM", str(momentum))
    torch.manual_seed(seed)
    ref = nn.BatchNorm2d(sizes["C"], momentum=momentum).double()
    with torch.no_grad():
        ref.weight.uniform_(0.5, 1.5)
        ref.bias.normal_()
    module = ncd.load(source, **sizes).double()
    module.load_state_dict(ref.state_dict())  # torch's names are the spec's
    emitted = _emitted(source, tmp_path, **sizes).double()
    emitted.load_state_dict(ref.state_dict())
    for step in range(4):
        n = random.Random(seed + step).randint(2, 5)
        x = torch.randn(n, sizes["C"], sizes["H"], sizes["W"], dtype=torch.float64) * 3 + step
        want = ref(x)
        torch.testing.assert_close(module(x), want, rtol=1e-10, atol=1e-10)
        got_emitted = emitted(x)
        torch.testing.assert_close(got_emitted, want, rtol=1e-10, atol=1e-10)
        for name in ("running_mean", "running_var"):
            torch.testing.assert_close(getattr(module, name), getattr(ref, name), rtol=1e-10, atol=1e-12)
        assert int(module.num_batches_tracked) == int(ref.num_batches_tracked) == step + 1
    # eval: normalised by the running statistics, which stay as they are
    for m in (module, ref, emitted):
        m.eval()
    x = torch.randn(3, sizes["C"], sizes["H"], sizes["W"], dtype=torch.float64)
    before = module.running_mean.clone()
    torch.testing.assert_close(module(x), ref(x), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(emitted(x), ref(x), rtol=1e-10, atol=1e-10)
    assert torch.equal(module.running_mean, before)
    # and torch's module loads ours back
    back = nn.BatchNorm2d(sizes["C"], momentum=momentum).double()
    back.load_state_dict(module.state_dict())
    assert int(back.num_batches_tracked) == 4
    torch.testing.assert_close(back.running_var, module.running_var)


def test_the_emitted_python_is_bit_identical_to_the_module_in_training(tmp_path):
    sizes = {"C": 3, "H": 4, "W": 2}
    source = BN2D.replace("MOM", "0.1")
    module = ncd.load(source, **sizes).double()
    emitted = _emitted(source, tmp_path, **sizes).double()
    emitted.load_state_dict(module.state_dict())
    for _ in range(2):
        x = torch.randn(5, 3, 4, 2, dtype=torch.float64)
        assert torch.equal(module(x), emitted(x))
    assert torch.equal(module.running_var, emitted.running_var)


def test_gradients_match_nn_batchnorm2d():
    source = BN2D.replace("MOM", "0.1")
    ref = nn.BatchNorm2d(3).double()
    module = ncd.load(source, C=3, H=3, W=3).double()
    x = torch.randn(4, 3, 3, 3, dtype=torch.float64, requires_grad=True)
    x2 = x.detach().clone().requires_grad_()
    g = torch.randn(4, 3, 3, 3, dtype=torch.float64)
    (module(x) * g).sum().backward()
    (ref(x2) * g).sum().backward()
    torch.testing.assert_close(x.grad, x2.grad)
    torch.testing.assert_close(module.weight.grad, ref.weight.grad)
    torch.testing.assert_close(module.bias.grad, ref.bias.grad)


BN1D = """axis C = 4, L = 5
block Flat(x: [C]) -> [C] {
    buffer running_mean: [C] init zeros
    buffer running_var: [C] init ones
    return batchnorm(x, running_mean, running_var)
}
block Seq(x: [C, L]) -> [C, L] {
    buffer running_mean: [C] init zeros
    buffer running_var: [C] init ones
    buffer num_batches_tracked: [] init zeros
    return batchnorm(x, running_mean, running_var, num_batches_tracked, over = L, eps = 1e-3)
}
"""


@pytest.mark.parametrize("block, shape, eps", [("Flat", (7, 4), 1e-5), ("Seq", (3, 4, 5), 1e-3)])
def test_batchnorm1d_over_the_batch_only_and_over_a_length(block, shape, eps):
    module = ncd.load(BN1D, block=block).double()
    ref = nn.BatchNorm1d(4, eps=eps, affine=False).double()
    for _ in range(3):
        x = torch.randn(*shape, dtype=torch.float64) * 2 - 1
        torch.testing.assert_close(module(x), ref(x))
    torch.testing.assert_close(module.running_mean, ref.running_mean)
    torch.testing.assert_close(module.running_var, ref.running_var)
    module.eval(), ref.eval()
    x = torch.randn(*shape, dtype=torch.float64)
    torch.testing.assert_close(module(x), ref(x))


NESTED = BN2D.replace("MOM", "0.1") + """
block Net(x: [C, H, W]) -> [C, H, W] {
    use bn1 = BatchNorm2d, bn2 = BatchNorm2d
    return bn2(relu(bn1(x)))
}
"""


def test_a_used_batchnorm_block_has_torchs_state_dict_names():
    ref = nn.Sequential()
    ref.add_module("bn1", nn.BatchNorm2d(2))
    ref.add_module("relu", nn.ReLU())
    ref.add_module("bn2", nn.BatchNorm2d(2))
    ref = ref.double()
    module = ncd.load(NESTED, block="Net", C=2, H=3, W=3).double()
    assert sorted(module.state_dict()) == sorted(ref.state_dict())
    module.load_state_dict(ref.state_dict())
    x = torch.randn(4, 2, 3, 3, dtype=torch.float64)
    torch.testing.assert_close(module(x), ref(x))
    torch.testing.assert_close(module.bn2.running_var, ref.bn2.running_var)


def test_a_scan_whose_step_runs_a_batchnorm_runs_sequentially():
    source = """axis T, C = 3
block F(x: [T, C]) -> [T, C] {
    buffer running_mean: [C] init zeros
    buffer running_var: [C] init ones
    return scan t over T carry (h: [C] = 0) {
        h = 0.5 * h + batchnorm(x[T = t], running_mean, running_var)
        emit h
    }
}
"""
    (plan,) = ncd.api.run_pipeline(source, T=4).passes.scans
    assert plan.backend == "sequential" and "running statistics" in plan.reason
    module = ncd.load(source, T=4).double()
    ref = nn.BatchNorm1d(3, affine=False).double()
    x = torch.randn(6, 4, 3, dtype=torch.float64)
    out = module(x)
    h = torch.zeros(6, 3, dtype=torch.float64)
    for t in range(4):  # the same loop written with torch's module: one update per step
        h = 0.5 * h + ref(x[:, t])
        torch.testing.assert_close(out[:, t], h)
    torch.testing.assert_close(module.running_mean, ref.running_mean)


GROUP = """axis C, G, K = C / G, H, W
block GroupNorm(x: [C, H, W]) -> [C, H, W] {
    param weight: [C] init ones
    param bias: [C] init zeros
    return layernorm(x[C -> G K], over = [K, H, W])[G K -> C] * weight + bias
}
block InstanceNorm(x: [C, H, W]) -> [C, H, W] {
    return layernorm(x, over = [H, W])
}
block InstanceNormAffine(x: [C, H, W]) -> [C, H, W] {
    param weight: [C] init ones
    param bias: [C] init zeros
    return layernorm(x, over = [H, W]) * weight + bias
}
"""


@pytest.mark.parametrize("groups, channels", [(1, 3), (2, 6), (3, 6), (4, 4)])
def test_the_groupnorm_one_liner_is_nn_groupnorm(groups, channels):
    ref = nn.GroupNorm(groups, channels).double()
    with torch.no_grad():
        ref.weight.uniform_(0.5, 1.5)
        ref.bias.normal_()
    module = ncd.load(GROUP, block="GroupNorm", C=channels, G=groups, H=3, W=5).double()
    module.load_state_dict(ref.state_dict())
    x = torch.randn(2, channels, 3, 5, dtype=torch.float64) * 2 + 1
    torch.testing.assert_close(module(x), ref(x))


@pytest.mark.parametrize("affine", [False, True])
def test_the_instancenorm_one_liner_is_nn_instancenorm2d(affine):
    ref = nn.InstanceNorm2d(4, affine=affine).double()
    block = "InstanceNormAffine" if affine else "InstanceNorm"
    module = ncd.load(GROUP, block=block, C=4, G=1, H=3, W=5).double()
    if affine:
        with torch.no_grad():
            ref.weight.uniform_(0.5, 1.5)
            ref.bias.normal_()
        module.load_state_dict(ref.state_dict())
    x = torch.randn(3, 4, 3, 5, dtype=torch.float64) * 2 + 1
    torch.testing.assert_close(module(x), ref(x))
    module.eval(), ref.eval()
    torch.testing.assert_close(module(x), ref(x))  # no running statistics: the same in eval


def test_cost_counts_the_buffers_beside_the_parameters():
    from ncd.analysis import analyze

    ir = ncd.check(BN2D.replace("MOM", "0.1"), C=8, H=4, W=4)
    report = analyze(ir, {"N": 2}, batch="N")
    numbers = report.numbers(report.total)
    assert numbers["params"] == 16
    assert numbers["buffers"] == 8 + 8 + 1
    assert numbers["buffer_bytes"] == 17 * 4


def test_the_diagram_notes_the_batch_statistics():
    from ncd.backends.graphviz import render_dot

    dot = render_dot(ncd.check(BN2D.replace("MOM", "0.2"), C=2, H=2, W=2))
    assert "batchnorm" in dot and "momentum = 0.2" in dot


def test_interop_loads_torchs_norms_and_refuses_a_mismatch():
    from ncd.interop import load_torch

    ref = nn.BatchNorm2d(3).double()
    ref.train()(torch.randn(4, 3, 2, 2, dtype=torch.float64))  # statistics that are not the defaults
    module = load_torch(ncd.load(BN2D.replace("MOM", "0.1"), C=3, H=2, W=2).double(), ref)
    torch.testing.assert_close(module.running_var, ref.running_var)
    assert int(module.num_batches_tracked) == 1
    gn = nn.GroupNorm(2, 6).double()
    with torch.no_grad():
        gn.weight.uniform_()
    loaded = load_torch(ncd.load(GROUP, block="GroupNorm", C=6, G=2, H=2, W=2).double(), gn)
    x = torch.randn(2, 6, 2, 2, dtype=torch.float64)
    torch.testing.assert_close(loaded(x), gn(x))
    with pytest.raises(ncd.NcdError, match="shape"):
        load_torch(ncd.load(BN2D.replace("MOM", "0.1"), C=4, H=2, W=2), nn.BatchNorm2d(3))
    with pytest.raises(ncd.NcdError, match="does not hold"):
        load_torch(ncd.load(BN2D.replace("MOM", "0.1"), C=3, H=2, W=2), nn.BatchNorm2d(3, affine=False))
