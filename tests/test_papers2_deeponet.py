"""deeponet against deepxde's DeepONet and DeepONetCartesianProd (PyPI, pytorch backend) with the
same weights, in float64 at random sizes: outputs and gradients (input and parameters).

deepxde selects its backend at import and, on a machine with a GPU, moves torch's default device
to it; the fixture imports it with DDE_BACKEND=pytorch and restores torch's defaults afterwards."""
from __future__ import annotations

import os
import random

import pytest
import torch

import ncd

TOL = dict(rtol=1e-10, atol=1e-10)


@pytest.fixture(scope="module")
def dde():
    saved_env = os.environ.get("DDE_BACKEND")
    device, dtype = torch.get_default_device(), torch.get_default_dtype()
    os.environ["DDE_BACKEND"] = "pytorch"
    try:
        import deepxde
    except ImportError:
        pytest.skip("deepxde is not installed (the test extra)")
    finally:
        torch.set_default_device(device)
        torch.set_default_dtype(dtype)
        if saved_env is None:
            os.environ.pop("DDE_BACKEND", None)
        else:
            os.environ["DDE_BACKEND"] = saved_env
    return deepxde


def copy_weights(m: torch.nn.Module, net) -> None:
    with torch.no_grad():
        for ours, theirs in ((m.branch, net.branch), (m.trunk, net.trunk)):
            for i, lin in enumerate(theirs.linears, start=1):
                getattr(ours, f"W{i}").copy_(lin.weight.T)
                getattr(ours, f"b{i}").copy_(lin.bias)
        m.b0.copy_(net.b[0] if isinstance(net.b, torch.nn.ParameterList) else net.b)


def compare_grads(m, net, out, ref, inputs):
    w = torch.randn_like(ref)
    got = torch.autograd.grad((out * w).sum(), [*inputs, m.branch.W2, m.trunk.W1, m.trunk.b3, m.b0])
    b0 = net.b[0] if isinstance(net.b, torch.nn.ParameterList) else net.b
    want = torch.autograd.grad((ref * w).sum(), [*inputs, net.branch.linears[1].weight, net.trunk.linears[0].weight,
                                                   net.trunk.linears[2].bias, b0])
    n = len(inputs)
    for g, e in zip(got[:n], want[:n]):
        torch.testing.assert_close(g, e, **TOL)
    torch.testing.assert_close(got[n], want[n].T, **TOL)
    torch.testing.assert_close(got[n + 1], want[n + 1].T, **TOL)
    torch.testing.assert_close(got[n + 2], want[n + 2], **TOL)
    torch.testing.assert_close(got[n + 3].reshape(()), want[n + 3].reshape(()), **TOL)


def random_sizes(seed: int) -> dict[str, int]:
    rng = random.Random(seed)
    return dict(M=rng.randint(1, 9), Dy=rng.randint(1, 3), Hb=rng.randint(1, 7), Ht=rng.randint(1, 7), P=rng.randint(1, 6))


@pytest.mark.parametrize("seed", range(3))
def test_deeponet_matches_deepxde(dde, seed):
    n = random_sizes(seed)
    torch.manual_seed(seed)
    net = dde.nn.DeepONet([n["M"], n["Hb"], n["Hb"], n["P"]], [n["Dy"], n["Ht"], n["Ht"], n["P"]],
                          "tanh", "Glorot normal").double()
    with torch.no_grad():                   # deepxde zero-inits biases: give them values
        for p in net.parameters():
            p.add_(0.2 * torch.randn_like(p))
    m = ncd.load("deeponet", **n).double()
    copy_weights(m, net)
    N = random.Random(seed).randint(1, 5)
    u = torch.randn(N, n["M"], dtype=torch.float64, requires_grad=True)
    y = torch.randn(N, n["Dy"], dtype=torch.float64, requires_grad=True)
    out, ref = m(u, y), net((u, y))[:, 0]
    torch.testing.assert_close(out, ref, **TOL)
    compare_grads(m, net, out, ref, [u, y])


@pytest.mark.parametrize("seed", range(3))
def test_deeponet_grid_matches_deepxde_cartesian_product(dde, seed):
    n = random_sizes(seed + 10)
    torch.manual_seed(seed)
    net = dde.nn.DeepONetCartesianProd([n["M"], n["Hb"], n["Hb"], n["P"]], [n["Dy"], n["Ht"], n["Ht"], n["P"]],
                                       "tanh", "Glorot normal").double()
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.2 * torch.randn_like(p))
    m = ncd.load("deeponet", **n).double()
    copy_weights(m, net)
    rng = random.Random(seed)
    N, Nq = rng.randint(1, 4), rng.randint(1, 5)
    u = torch.randn(N, n["M"], dtype=torch.float64, requires_grad=True)
    y = torch.randn(Nq, n["Dy"], dtype=torch.float64, requires_grad=True)
    out, ref = m(u[:, None, :], y), net((u, y))
    torch.testing.assert_close(out, ref, **TOL)
    compare_grads(m, net, out, ref, [u, y])
