"""Held-out specs (lane huntb, tests/docs_specs/huntb_*.ncd) found these; each test pins one fix.

The specs themselves run through test_docs_specs' harness (they sit in its folder); the tests here
check what a harness run cannot see: what a tap's hook receives, and that a hint followed fixes the spec.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

import ncd

HERE = Path(__file__).parent / "docs_specs"


@pytest.mark.parametrize("backend", [None, "sequential"])
def test_a_tap_in_a_diagonal_scan_step_sees_each_step(backend: str | None) -> None:
    """A tap in a linear diagonal step: the pass chose the parallel scan under auto and the runner then
    refused the module at load (`scan scan_18 has a tap inside its step`, unlocated), though check passed."""
    kwargs = {"scan_backend": backend} if backend else {}
    m = ncd.load(HERE / "huntb_tap_diag_scan.ncd", T=4, **kwargs).double()
    seen: list[torch.Tensor] = []
    m.taps.g.register_forward_hook(lambda mod, inp, out: seen.append(out.detach().clone()))
    x = torch.randn(2, 4, 4, dtype=torch.float64)
    y = m(x)
    a = m.state_dict()["a"]
    assert len(seen) == 4 and all(torch.equal(s, a) for s in seen)
    h, ref = torch.zeros(2, 4, dtype=torch.float64), []
    for t in range(4):
        h = a * h + x[:, t]
        ref.append(h)
    torch.testing.assert_close(y, torch.stack(ref, 1))


def test_a_tap_in_a_called_cell_keeps_newton_off() -> None:
    """A tap in a block the step calls: `via newton` ran and the hook saw every position at once, once
    per Newton iterate; now auto runs the loop (the hook sees each step's [B, D]) and via newton is refused."""
    m = ncd.load(HERE / "huntb_tap_scan_call.ncd", T=3).double()
    shapes: list[tuple[int, ...]] = []
    m.cell.taps.gate.register_forward_hook(lambda mod, inp, out: shapes.append(tuple(out.shape)))
    m(torch.randn(2, 3, 3, dtype=torch.float64))
    assert shapes == [(2, 3)] * 3
    with pytest.raises(ncd.NcdError, match="taps a value") as info:
        ncd.check(HERE / "huntb_err_via_newton_tap.ncd")
    assert info.value.line == 11 and info.value.hint
    with pytest.raises(ncd.NcdError, match=r"taps a value .*, so it cannot run via newton") as info:
        ncd.load(HERE / "huntb_tap_diag_scan.ncd", T=4, scan_backend="newton")
    assert info.value.line == 9


@pytest.mark.parametrize("written", ["lib/cells.ncd", '"./lib/cells.ncd"', "lib/cells"])
def test_an_import_path_not_from_dot_slash_says_how_to_write_it(written: str, tmp_path: Path) -> None:
    """`import Gate from lib/cells.ncd` was `unexpected '/'` with a hint listing tokens; the hint now
    quotes the import as it must be written, and following it checks."""
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "cells.ncd").write_text((HERE / "lib" / "cells.ncd").read_text())
    body = "axis T, D = 3\nblock F(x: [T, D]) -> [T, D] { return Gate(x) }\n"
    spec = tmp_path / "net.ncd"
    spec.write_text(f"import Gate from {written}\n{body}")
    with pytest.raises(ncd.NcdError) as info:
        ncd.check(spec)
    assert (info.value.line, info.value.col) == (1, 18)
    fixed = re.fullmatch(r"write (import Gate from \S+)", info.value.hint)
    assert fixed, info.value.hint
    spec.write_text(f"{fixed[1]}\n{body}")
    assert ncd.check(spec).entry_block.name == "F"


def test_an_error_in_a_specialised_block_names_the_use_that_bound_it() -> None:
    """`use l2 = RNN[D]` makes `param W: [I, D]` a [D, D]: the error sits at the block's text, which
    shows I, so the hint says which binding and which use made it."""
    with pytest.raises(ncd.NcdError, match="appears twice") as info:
        ncd.check(HERE / "huntb_err_param_binds_twice.ncd")
    assert info.value.line == 6
    assert "RNN[I=D] (I := D, by the use at line 11)" in info.value.hint


@pytest.mark.parametrize("entry", ["Enc", "Both"])
def test_the_step_module_of_a_spec_with_several_entries(entry: str) -> None:
    """With `entry Enc, Both`, step_module() failed the IR verifier ('a call node takes 2 inputs, got 1'):
    the other entry kept its calls of the imported Leaky, whose stepped form takes the state too.
    Reference: Leaky's recurrence written plainly, h = a·M·h + x_t."""
    full = ncd.load(HERE / "huntb_import_state_entries.ncd", T=4).double()
    module = full if entry == "Enc" else full.entry("Both")
    step = module.step_module()
    x, y = (torch.randn(2, 4, 3, dtype=torch.float64) for _ in range(2))
    ins = (x,) if entry == "Enc" else (x, y)
    u = x if entry == "Enc" else x + y
    a = module.state_dict()["leak.a"] * module.state_dict()["leak.M"]
    state, h = step.initial_state(2, dtype=torch.float64), torch.zeros(2, 3, dtype=torch.float64)
    assert list(state) == ["leak.h"]
    for t in range(4):
        out, state = step(*(i[:, t] for i in ins), state=state)
        h = a * h + u[:, t]
        torch.testing.assert_close(out, h)
    torch.testing.assert_close(state["leak.h"], h)


def test_a_place_in_an_imported_block_quotes_its_own_file() -> None:
    """What the IR locates after the front end (a backend refused at load, --explain's scans) named
    the importing spec with the imported file's line: line 7 of huntb_import_state_entries.ncd is blank."""
    with pytest.raises(ncd.NcdError, match="cannot run this scan") as info:
        ncd.load(HERE / "huntb_import_state_entries.ncd", scan_backend="gla")
    err = info.value
    assert err.filename.endswith("lib/huntb_layers.ncd") and (err.line, err.col) == (7, 12)
    assert "return scan t over T carry (h: [D] = 0) {" in str(err)
    from test_docs_specs import _cli

    res = _cli("compile", str(HERE / "huntb_import_state_entries.ncd"), "--explain", "-o", "-")
    assert res.returncode == 0, res.stderr
    assert "lib/huntb_layers.ncd:7:12: scan over T in block Leaky" in res.stderr
