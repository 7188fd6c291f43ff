"""`entry A, B`: several entry blocks of one spec over one set of weights (docs/language.md).

References: torch's own state_dict machinery (load_state_dict strict), a hand-written recurrence
for each entry, and the emitted Python loaded with importlib.
"""
from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest
import torch

import ncd
from ncd import NcdError
from ncd.backends.pytorch.emit import emit_python

SPEC = """
axis T, D = 3
entry Forced, Free
block Cell(x: [D], h: [D]) -> [D] {
    param W: [D, D'] init normal(0, 0.5)
    param U: [D, D'] init normal(0, 0.5)
    return tanh(x @[D] W + h @[D] U)[D' as D]
}
block Forced(x: [T, D]) -> [T, D] {
    use cell = Cell
    param b: [D] init normal(0, 1)
    return scan t over T carry (h: [D] = 0) {
        h = cell(x[t], h)
        emit h
    } + b
}
block Free(x: [T, D]) -> [T, D] {
    use cell = Cell
    param b: [D] init normal(0, 1)
    return scan t over T carry (h: [D] = 0, y: [D] = 0) {
        h = cell(y + x[t] * 0, h)
        y = h
        emit h
    } + b
}
"""


def forced_ref(m, x):
    h, out = torch.zeros(x.shape[:-2] + x.shape[-1:], dtype=x.dtype), []
    for t in range(x.shape[-2]):
        h = torch.tanh(x[..., t, :] @ m.cell.W + h @ m.cell.U)
        out.append(h)
    return torch.stack(out, -2) + m.b


def free_ref(m, x):
    h, out = torch.zeros(x.shape[:-2] + x.shape[-1:], dtype=x.dtype), []
    for _ in range(x.shape[-2]):
        h = torch.tanh(h @ m.cell.W + h @ m.cell.U)
        out.append(h)
    return torch.stack(out, -2) + m.b


def test_the_first_declared_entry_is_the_default_and_block_picks_another():
    torch.manual_seed(0)
    forced = ncd.load(SPEC, T=5).double()
    free = ncd.load(SPEC, T=5, block="Free").double()
    assert forced._ncd_block == "Forced" and free._ncd_block == "Free"
    assert ncd.check(SPEC, T=5).entries == ["Forced", "Free"]
    free.load_state_dict(forced.state_dict())  # strict: the same names and shapes
    x = torch.randn(2, 5, 3, dtype=torch.float64)
    torch.testing.assert_close(forced(x), forced_ref(forced, x))
    torch.testing.assert_close(free(x), free_ref(forced, x))


def test_module_entry_shares_the_very_tensors():
    torch.manual_seed(0)
    forced = ncd.load(SPEC, T=4)
    free = forced.entry("Free")
    assert free.cell.W is forced.cell.W and free.b is forced.b
    assert list(free.state_dict()) == list(forced.state_dict())
    opt = torch.optim.SGD(forced.parameters(), lr=0.1)
    x = torch.randn(2, 4, 3)
    before = free(x).detach()
    forced(x).square().sum().backward()
    opt.step()
    assert not torch.equal(free(x).detach(), before)  # training one trains the other
    torch.testing.assert_close(free(x), free_ref(forced, x))
    with pytest.raises(NcdError, match="is not an entry block of this spec"):
        forced.entry("Cell")
    with pytest.raises(NcdError, match="not an entry block of an `entry` declaration"):
        ncd.load(SPEC, T=4, block="Cell").entry("Free")


def test_emitted_python_has_one_class_per_entry_equal_to_the_module(tmp_path):
    path = tmp_path / "entries.py"
    path.write_text(emit_python(ncd.check(SPEC, T=4)))
    spec = importlib.util.spec_from_file_location("entries_emitted", path)
    emitted = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(emitted)
    assert emitted.__all__ == ["Forced", "Free"]
    torch.manual_seed(0)
    forced = ncd.load(SPEC, T=4)
    x = torch.randn(2, 4, 3)
    for name, module in (("Forced", forced), ("Free", forced.entry("Free"))):
        e = getattr(emitted, name)()
        e.load_state_dict(forced.state_dict())
        assert torch.equal(e(x), module(x))


def test_the_cli_takes_block(tmp_path):
    path = tmp_path / "entries.ncd"
    path.write_text(SPEC)
    for argv, expect in ((["check", str(path)], "Forced(x: [T, D])"),
                         (["check", str(path), "--block", "Free"], "Free(x: [T, D])"),
                         (["run", str(path), "--block", "Free", "--set", "T=2"], "entry Free"),
                         (["compile", str(path), "--block", "Free", "--set", "T=2"], "class Free(nn.Module)")):
        out = subprocess.run([sys.executable, "-m", "ncd.cli", *argv], capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr
        assert expect in out.stdout
    out = subprocess.run([sys.executable, "-m", "ncd.cli", "check", str(path), "--block", "Fre"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 1 and "no block Fre" in out.stderr and "did you mean Free?" in out.stderr
    assert "Traceback" not in out.stderr
