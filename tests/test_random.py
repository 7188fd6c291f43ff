"""Random ops (dropout, uniform, normal, categorical) against torch's own, in float64.

Oracles: nn.Dropout (the kept fraction, the 1/(1-p) scale, eval is the identity), the moments of
torch.distributions' Uniform / Normal, torch.distributions.Categorical's probabilities and
log_prob. Statistical checks use 6 standard errors of the estimate (a false failure about once
in 10^9 runs); the draws are seeded, so each run is in fact the same.
"""
from __future__ import annotations

import importlib.util
import math

import pytest
import torch
from torch import nn

import ncd
from ncd.backends.pytorch.emit import emit_python

SIGMAS = 6.0


def _emitted(source: str, tmp_path, **sizes):
    path = tmp_path / "emitted_random.py"
    path.write_text(emit_python(ncd.check(source, **sizes), class_name="Entry"))
    spec = importlib.util.spec_from_file_location("emitted_random", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # our own generated code, for the test
    return module.Entry


DROP = """axis N, D
block Drop(x: [N, D]) -> [N, D] {
    return dropout(x, p = 0.3)
}
"""


def test_dropout_keeps_the_fraction_nn_dropout_keeps_and_scales_by_one_over_one_minus_p():
    p, shape = 0.3, (40, 250, 20)
    x = torch.rand(shape, dtype=torch.float64) + 0.5  # no zeros: a zero out means dropped
    module = ncd.load(DROP, N=250, D=20, seed=1).double()
    out = module(x)
    torch.manual_seed(1)
    ref = nn.Dropout(p)(x)
    n = x.numel()
    tol = SIGMAS * math.sqrt(p * (1 - p) / n)
    for y in (out, ref):
        kept = y != 0
        assert abs(kept.double().mean().item() - (1 - p)) < tol
        torch.testing.assert_close(y[kept], x[kept] / (1 - p), rtol=1e-15, atol=0)
    # the two keep the same fraction up to their sampling noise
    assert abs((out != 0).double().mean() - (ref != 0).double().mean()) < 2 * tol


def test_dropout_in_eval_is_the_identity_as_nn_dropout():
    x = torch.randn(3, 5, 4, dtype=torch.float64)
    module = ncd.load(DROP, N=5, D=4).double().eval()
    ref = nn.Dropout(0.3).eval()
    assert torch.equal(module(x), ref(x))
    assert torch.equal(module(x), x)


def test_dropout_gradient_is_the_scaled_mask():
    x = torch.randn(4, 6, 5, dtype=torch.float64, requires_grad=True)
    module = ncd.load(DROP, N=6, D=5, seed=3).double()
    out = module(x)
    out.sum().backward()
    torch.testing.assert_close(x.grad, (out != 0).double() / 0.7)


def test_same_seed_same_draws_and_another_seed_others():
    x = torch.randn(2, 50, 8, dtype=torch.float64)
    a = ncd.load(DROP, N=50, D=8, seed=11).double()
    b = ncd.load(DROP, N=50, D=8, seed=11).double()
    first = a(x)
    assert torch.equal(first, b(x))
    assert not torch.equal(first, a(x))  # the generator moves on
    a.manual_seed(11)
    assert torch.equal(a(x), first)
    a.manual_seed(12)
    assert not torch.equal(a(x), first)


DRAWS = """axis N, D
block Draws(mu: [N, D], sigma: [D]) -> [N, D], [N, D] {
    return normal(mu, sigma), uniform(mu, mu + sigma)
}
"""


def test_normal_and_uniform_have_the_moments_of_torch_distributions():
    n = 40000
    mu = torch.full((n, 3), 0.5, dtype=torch.float64)
    sigma = torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64)
    module = ncd.load(DRAWS, N=n, D=3, seed=5).double()
    normal, uniform = module(mu[None], sigma)
    for dist, draws in ((torch.distributions.Normal(mu[0], sigma), normal[0]),
                        (torch.distributions.Uniform(mu[0], mu[0] + sigma), uniform[0])):
        err = SIGMAS * dist.stddev / math.sqrt(n)
        assert ((draws.mean(0) - dist.mean).abs() < err).all()
        # the variance's standard error: sqrt((m4 - var²) / n) ≤ var · sqrt(2 / n) for these two
        assert ((draws.var(0) - dist.variance).abs() < SIGMAS * dist.variance * math.sqrt(2 / n)).all()
    lo, hi = mu[0], mu[0] + sigma
    assert ((uniform[0] >= lo) & (uniform[0] < hi)).all()


def test_normal_is_reparameterised_mean_gets_one_std_gets_the_noise():
    mu = torch.randn(1, 7, 3, dtype=torch.float64, requires_grad=True)
    sigma = (torch.rand(3, dtype=torch.float64) + 0.5).requires_grad_()
    module = ncd.load(DRAWS, N=7, D=3, seed=2).double()
    normal, _ = module(mu, sigma)
    normal.sum().backward()
    torch.testing.assert_close(mu.grad, torch.ones_like(mu))
    eps = (normal - mu) / sigma
    torch.testing.assert_close(sigma.grad, eps.detach().sum((0, 1)))


POLICY = """axis A = 4, D = 3
block Step(x: [D]) -> [] int, [] {
    param W: [D, A] init normal(0, 1)
    p = softmax(x @[D] W, over = A)
    a = categorical(p, over = A)
    return a, log(p)[A = a]
}
"""


def test_categorical_frequencies_are_torch_categoricals_probabilities():
    n = 60000
    module = ncd.load(POLICY, seed=9).double()
    x = torch.randn(1, 3, dtype=torch.float64).expand(n, 3)
    a, logp = module(x)
    assert a.dtype == torch.int64 and a.shape == (n,)
    probs = torch.softmax(x[0] @ module.W, -1)
    dist = torch.distributions.Categorical(probs=probs)
    freq = torch.bincount(a, minlength=4).double() / n
    err = SIGMAS * torch.sqrt(probs * (1 - probs) / n)
    assert ((freq - probs).abs() < err).all(), (freq, probs)
    torch.testing.assert_close(logp, dist.log_prob(a))  # log(p)[A = a] is Categorical.log_prob


def test_categorical_never_draws_a_category_of_probability_zero():
    source = """axis A = 5
block F(p: [A]) -> [] int { return categorical(p, over = A) }
"""
    p = torch.tensor([[0.0, 0.3, 0.0, 0.7, 0.0]], dtype=torch.float64).expand(20000, 5)
    a = ncd.load(source, seed=0).double()(p)
    assert set(a.unique().tolist()) <= {1, 3}
    unnormalised = ncd.load(source, seed=0).double()(p * 7)  # p / sum(p): a scale changes nothing
    assert torch.equal(a, unnormalised)


def test_the_log_probability_of_the_draw_carries_the_reinforce_gradient():
    module = ncd.load(POLICY, seed=4).double()
    x = torch.randn(6, 3, dtype=torch.float64)
    a, logp = module(x)
    logp.sum().backward()
    W = module.W.detach().clone().requires_grad_()
    torch.distributions.Categorical(logits=x @ W).log_prob(a).sum().backward()
    torch.testing.assert_close(module.W.grad, W.grad)


SCAN_POLICY = """axis T, A = 3, D = 4
block Cell(x: [D], h: [D]) -> [D] { return x + dropout(h, p = 0.2) }
block Policy(x: [T, D]) -> [T] int, [T], [T, D] {
    param W: [D, A] init normal(0, 1)
    param E: [A, D] init normal(0, 1)
    acts, logp = scan t over T carry (h: [D] = 0) {
        p = softmax((x[T = t] + h) @[D] W, over = A)
        a = categorical(p, over = A)
        h = tanh(E[A = a] + h)
        emit a, log(p)[A = a]
    }
    noise = scan t over T carry (g: [D] = 0) {
        g = 0.5 * g + Cell(x[T = t], x[T = t])
        emit g
    }
    return acts, logp, noise
}
"""


def test_scans_that_draw_run_sequentially_and_the_emitted_python_draws_the_same(tmp_path):
    compiled = ncd.api.run_pipeline(SCAN_POLICY, T=7)
    plans = compiled.passes.scans
    assert [p.backend for p in plans] == ["sequential", "sequential"]
    assert all("draws random numbers" in p.reason for p in plans)
    module = ncd.load(SCAN_POLICY, T=7, seed=21).double()
    x = torch.randn(5, 7, 4, dtype=torch.float64)
    got = module(x)
    emitted = _emitted(SCAN_POLICY, tmp_path, T=7)().double()
    emitted.load_state_dict(module.state_dict())
    emitted.manual_seed(21)
    for a, b in zip(emitted(x), got):
        assert torch.equal(a, b)
    module.manual_seed(21)
    again = module(x)
    assert all(torch.equal(a, b) for a, b in zip(again, got))
    again[1].sum().backward()  # log-probabilities are differentiable in the parameters
    assert module.W.grad is not None and module.W.grad.abs().sum() > 0


def test_without_the_draw_the_same_scan_runs_in_parallel():
    source = SCAN_POLICY.replace("dropout(h, p = 0.2)", "h")
    plans = ncd.api.run_pipeline(source, T=7).passes.scans
    assert plans[1].backend != "sequential"


def test_a_parallel_backend_requested_for_a_scan_that_draws_is_an_error_at_the_scan():
    source = SCAN_POLICY.replace("noise = scan t over T carry (g: [D] = 0) {",
                                 "noise = scan t over T carry (g: [D] = 0) via scan {")
    with pytest.raises(ncd.NcdError) as info:
        ncd.check(source, T=7)
    assert "draws random numbers" in info.value.message and info.value.line == 12
    assert "drop the via" in info.value.hint


@pytest.mark.parametrize("seed", [-1, 2**64, 1.5, True])
def test_a_bad_seed_is_an_ncd_error(seed):
    with pytest.raises(ncd.NcdError, match="seed must be an integer"):
        ncd.load(DROP, N=2, D=2, seed=seed)


def test_costs_and_diagrams_show_the_random_ops():
    from ncd.analysis import analyze
    from ncd.backends.graphviz import render_dot

    ir = ncd.check(SCAN_POLICY, T=7)
    dot = render_dot(ir, depth=3)
    assert "~ categorical" in dot and "~ dropout" in dot
    report = analyze(ir, {"N": 2}, batch="N")
    assert report.numbers(report.total)["flops_fwd"] > 0


HOIST = """axis T, D = 3
block Noise(b: [D]) -> [D] { return normal(0 * b, 1) }
block F(x: [T, D], b: [D]) -> [T, D], [T, D] {
    direct = scan t over T carry (h: [D] = 0) {
        y = normal(0 * b, 1) * 2
        h = 0.5 * h + y
        emit y
    }
    called = scan t over T carry (g: [D] = 0) {
        z = Noise(b) * 2
        g = 0.5 * g + z
        emit z
    }
    return direct, called
}
"""


def test_a_draw_that_reads_no_step_value_is_still_drawn_at_every_step(tmp_path):
    module = ncd.load(HOIST, T=5, seed=8).double()
    x, b = torch.randn(2, 5, 3, dtype=torch.float64), torch.randn(2, 3, dtype=torch.float64)
    direct, called = module(x, b)
    for out in (direct, called):
        assert not torch.equal(out[:, 0], out[:, 1])  # a fresh draw per step, not one hoisted
    emitted = _emitted(HOIST, tmp_path, T=5)().double()
    emitted.load_state_dict(module.state_dict())
    emitted.manual_seed(8)
    for a, c in zip(emitted(x, b), (direct, called)):
        assert torch.equal(a, c)
