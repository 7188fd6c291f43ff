"""Specs written from docs/language.md alone (2026-12-03 hunt); each test pins what one found.

Run-time refusals of the inputs (an id out of range, a free axis too small for a window) were
located at the entry block's header, whatever op raised them; they are located at the op now.
`ncd check` printed an integer or boolean port like a float one; an `int` carry was a bare syntax
error; an empty batch crashed the parallel scans; a scan over an axis of size 0 was torch's raw
error; the step module, prefill and entry() ignored eval mode.
"""
from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest
import torch

import ncd

LOOKUPS = """\
# integer wires: 2-D ids lookup, arithmetic, where on ints, a pointer pick
axis T, S = 3, V = 7, D = 4

block Net(ids: [T, S] int, at: [] int, x: [T, D]) -> [T, S, D], [D], [T] int, [T] {
    param E: [V, D] init normal(0, 1)
    e = E[V = ids]
    shifted = where(ids > 3, ids - 1, ids + 1)
    m = max(shifted, over = S)
    hit = sum(one_hot(m, over = V) @[V] E, over = D)
    return e + x, x[T = at], m * 2, hit + as_float(m)
}
"""

WINDOW = """\
# a conv over a free axis inside a sub-block
axis C = 2, K = 3, T, T2

block Smooth(x: [C, T]) -> [C, T2] {
    param w: [C, C', K] init normal(0, 0.5)
    return conv(x[C as C'], w, over = T -> T2, kernel = [K])
}

block Net(x: [C, T]) -> [C, T2] {
    use s = Smooth
    return relu(s(x))
}
"""


def refusal(module: torch.nn.Module, *inputs: torch.Tensor) -> ncd.NcdError:
    with pytest.raises(ncd.NcdError) as caught:
        module(*inputs)
    return caught.value


def test_an_id_out_of_range_is_located_at_its_lookup() -> None:
    m = ncd.load(LOOKUPS, T=2)
    ids, x = torch.tensor([[[0, 6, 2], [1, 1, 1]]]), torch.randn(1, 2, 4)
    out = m(ids, torch.tensor([1]), x)
    torch.testing.assert_close(out[1], x[:, 1])
    # the values, from plain torch: the lookup, the integer arithmetic and the max over S
    torch.testing.assert_close(out[0], m.E[ids] + x[:, :, None])
    shifted = torch.where(ids > 3, ids - 1, ids + 1)
    assert torch.equal(out[2], shifted.amax(-1) * 2)
    err = refusal(m, ids, torch.tensor([2]), x)
    assert (err.span.line, err.span.col) == (10, 21) and "the index at of [T = at] holds the id 2" in str(err)
    err = refusal(m, ids + 1, torch.tensor([0]), x)
    assert (err.span.line, err.span.col) == (6, 11) and "holds the id 7, outside 0 .. 6" in str(err)


def test_a_window_too_large_for_a_free_axis_is_located_at_the_conv_in_its_block() -> None:
    m = ncd.load(WINDOW)
    assert m(torch.randn(2, 2, 5)).shape == (2, 2, 3)
    err = refusal(m, torch.randn(2, 2, 2))
    assert err.span is not None and err.span.line == 6, str(err)
    assert "too small for a window of 3" in str(err)


def test_check_prints_integer_and_boolean_ports_as_written(tmp_path) -> None:
    spec = tmp_path / "lookups.ncd"
    spec.write_text(LOOKUPS, encoding="utf-8")
    out = subprocess.run([sys.executable, "-m", "ncd.cli", "check", str(spec)], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert "Net(ids: [T, S] int, at: [] int, x: [T, D]) -> [T, S, D], [D], [T] int, [T]" in out.stdout


GREEDY = """\
# greedy decoding: the previous step's choice fed back
axis T, V = 5, D = 4

block Greedy(x: [T, D]) -> [T] int {
    param E: [V, D] init normal(0, 1)
    param W: [D, V] init normal(0, 1)
    return scan t over T carry (h: [D] = 0, y: [V] = 0) {
        h = tanh(x[t] + h + y @[V] E)
        a = argmax(h @[D] W, over = V)
        y = one_hot(a, over = V)
        emit a
    }
}
"""


def test_an_integer_carry_is_refused_at_int_with_a_hint_that_works() -> None:
    with pytest.raises(ncd.NcdError) as caught:
        ncd.check(GREEDY.replace("y: [V] = 0", "y: [] int = 0"))
    err = caught.value
    assert (err.span.line, err.span.col) == (7, 51) and "a carry is a float wire" in str(err)
    assert "one_hot(argmax(logits, over = V), over = V)" in err.hint
    m = ncd.load(GREEDY, T=6).double()  # the hint followed: the one-hot carry
    x = torch.randn(3, 6, 4, dtype=torch.float64)
    h, y, picks = torch.zeros(3, 4, dtype=torch.float64), torch.zeros(3, 5, dtype=torch.float64), []
    for t in range(6):  # the same decoder in plain PyTorch
        h = torch.tanh(x[:, t] + h + y @ m.E)
        a = (h @ m.W).argmax(-1)
        y = torch.nn.functional.one_hot(a, 5).double()
        picks.append(a)
    assert torch.equal(m(x), torch.stack(picks, 1))


@pytest.mark.parametrize("name", ["paragru", "gla", "mamba_negeig", "lstm"])
def test_an_empty_batch_runs_forward_and_backward_with_every_backend(name: str) -> None:
    """The parallel scans packed their carries with reshape(..., -1), which torch refuses on 0
    elements (a raw RuntimeError); an empty batch now runs as the loop would, giving empty outputs."""
    m = ncd.load(name)
    x = torch.randn(0, 6, _width(name), requires_grad=True)
    y = m(x)
    assert y.shape[0] == 0 and y.numel() == 0
    y.sum().backward()
    assert x.grad.shape == x.shape


def _width(name: str) -> int:
    ir = ncd.check(name)
    port = ir.entry_block.inputs[0]
    return int(ir.axes[port.type.axes[-1]].size)


def test_an_empty_sequence_is_refused_by_name() -> None:
    m = ncd.load("paragru")
    with pytest.raises(ncd.NcdError) as caught:
        m(torch.randn(2, 0, _width("paragru")))
    assert "the scan over T has no step to emit: axis T has size 0" in str(caught.value)
    assert caught.value.span is not None
    assert "one position or more" in caught.value.hint


DROPPED = """\
# dropout before a scan, a causal conv: what eval mode must switch off in every derived module
axis T, D = 4, K = 2
entry Net, Other

block Net(x: [T, D]) -> [T, D] {
    param w: [D, K] init normal(0, 0.5)
    c = conv(dropout(x, p = 0.5), w, over = T, kernel = [K], groups = [D], padding = causal)
    return scan t over T carry (h: [D] = 0) { h = tanh(0.5 * h + c[t])  emit h }
}

block Other(x: [T, D]) -> [T, D] {
    param w: [D, K] init normal(0, 0.5)
    return dropout(x, p = 0.5) * 2
}
"""


def test_step_module_prefill_and_entry_follow_eval_mode(tmp_path) -> None:
    """m.eval() then step_module() gave a training-mode step module (dropout on), and prefill's
    full module always trained; entry() likewise. Reference: the eval-mode computation written
    in plain PyTorch (dropout the identity)."""
    torch.manual_seed(0)
    m = ncd.load(DROPPED).double().eval()
    x = torch.randn(2, 5, 4, dtype=torch.float64)
    w = m.w.detach()
    c = torch.nn.functional.conv1d(torch.nn.functional.pad(x.transpose(1, 2), (1, 0)), w[:, None, :], groups=4)
    h, ref = torch.zeros(2, 4, dtype=torch.float64), []
    for t in range(5):
        h = torch.tanh(0.5 * h + c[:, :, t])
        ref.append(h)
    ref = torch.stack(ref, 1)
    torch.testing.assert_close(m(x), ref)
    step = m.step_module()
    assert not step.training
    head, state = step.prefill(x[:, :3])
    torch.testing.assert_close(head, ref[:, :3])
    y, state = step(x[:, 3], state=state)
    torch.testing.assert_close(y, ref[:, 3])
    other = m.entry("Other")
    assert not other.training and torch.equal(other(x), x * 2)
    # the emitted step module's prefill runs its full module in the step module's mode
    path, out = tmp_path / "dropped.ncd", tmp_path / "dropped_step.py"
    path.write_text(DROPPED, encoding="utf-8")
    run = subprocess.run([sys.executable, "-m", "ncd.cli", "compile", str(path), "--emit", "step", "-o", str(out),
                          "--class-name", "Stepper"], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    loaded = importlib.util.spec_from_file_location("dropped_step", out)
    mod = importlib.util.module_from_spec(loaded)
    loaded.loader.exec_module(mod)
    emitted = mod.Stepper().double()
    emitted.load_state_dict(m.state_dict())
    emitted.eval()
    torch.testing.assert_close(emitted.prefill(x[:, :3])[0], ref[:, :3])
