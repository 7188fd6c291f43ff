"""References for held-out specs of tests/docs_specs/hunta_*.ncd that the shared harness cannot
judge (it compares ncd with ncd): each result here is written plainly in torch."""
from __future__ import annotations

from pathlib import Path

import torch

import ncd

HERE = Path(__file__).parent / "docs_specs"


def test_a_merge_of_axes_apart_on_the_wire_is_row_major_in_the_order_written() -> None:
    """`x[K T -> Q]` on [T, H, K]: Q = K·T + t, where T comes first on the wire ([Q, H])."""
    m = ncd.load(HERE / "hunta_merge_any_order.ncd").double()
    x = torch.randn(2, 3, 3, 4, dtype=torch.float64)  # [B, T, H, K]
    q, r = m(x)
    torch.testing.assert_close(q, x.permute(0, 3, 1, 2).reshape(2, 12, 3))
    torch.testing.assert_close(r, 2 * x.reshape(2, 3, 12))


def test_a_const_over_a_free_axis_is_computed_at_the_input_size() -> None:
    """The causal mask const over a free T: the module loads unbound and masks like torch's tril."""
    path = HERE / "hunta_causal_mask_const.ncd"
    free = ncd.load(path).double()
    bound = ncd.load(path, T=5).double()
    bound.load_state_dict(free.state_dict())
    x = torch.randn(2, 5, 8, dtype=torch.float64)
    torch.testing.assert_close(free(x), bound(x))
    assert "M" not in dict(free.named_buffers()) and "M" in dict(bound.named_buffers())
    w = dict(free.named_parameters())
    q = torch.einsum("btd,dhk->bthk", x, w["Wq"])
    k = torch.einsum("btd,dhk->bthk", x, w["Wk"])
    v = torch.einsum("btd,dhk->bthk", x, w["Wv"])
    s = torch.einsum("bthk,bshk->bths", q, k) / 2.0  # K = 4
    s = s.masked_fill(~torch.ones(5, 5, dtype=torch.bool).tril()[None, :, None, :], float("-inf"))
    o = torch.einsum("bths,bshk->bthk", torch.softmax(s, -1), v)
    torch.testing.assert_close(free(x), torch.einsum("bthk,hkd->btd", o, w["Wo"]))


def test_numbers_in_free_sizes_are_read_off_the_input() -> None:
    m = ncd.load(HERE / "hunta_free_size_numbers.ncd").double()
    x = torch.randn(2, 3, 5, dtype=torch.float64)
    s, r = m(x)
    ref = torch.softmax(x @ x.transpose(-1, -2) / 5 ** 0.5, -1) @ x + 5 ** 0.5 * torch.pi
    torch.testing.assert_close(s, ref)
    torch.testing.assert_close(r, torch.zeros(2, 3, dtype=torch.float64))


def test_the_emitted_python_computes_a_free_const_and_free_numbers_too(tmp_path: Path) -> None:
    import importlib.util

    from ncd.backends.pytorch.emit import emit_python

    for stem, shape in (("hunta_causal_mask_const", (2, 6, 8)), ("hunta_free_size_numbers", (2, 3, 5)),
                        ("hunta_const_free_in_scan", (2, 4, 3))):
        path = HERE / f"{stem}.ncd"
        module = ncd.load(path).double()
        source = tmp_path / f"{stem}.py"
        source.write_text(emit_python(ncd.check(path), class_name="Entry"))
        spec = importlib.util.spec_from_file_location(stem, source)
        emitted_module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(emitted_module)  # ncd's own output for a spec of this folder
        emitted = emitted_module.Entry().double()
        emitted.load_state_dict(module.state_dict())
        x = torch.randn(*shape, dtype=torch.float64)
        ours, theirs = module(x), emitted(x)
        for a, b in zip(ours if isinstance(ours, tuple) else (ours,), theirs if isinstance(theirs, tuple) else (theirs,)):
            torch.testing.assert_close(b, a)


def test_ncd_run_prints_a_spec_with_boolean_and_integer_outputs(capsys) -> None:
    """`ncd run` summed |outputs| with torch's abs, which has no kernel for booleans (exit 3)."""
    import json

    from ncd.cli import main

    assert main(["run", str(HERE / "hunta_where_dtypes.ncd"), "--backward", "--json", "--set", "T=3"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert [o["shape"] for o in record["outputs"]] == [[2, 3]] * 3


def test_one_hot_refuses_an_id_outside_its_axis_by_name() -> None:
    """F.one_hot raised RuntimeError('Class values must be smaller than num_classes')."""
    m = ncd.load(HERE / "hunta_one_hot_bound_at_load.ncd", V=3)
    torch.testing.assert_close(m(torch.tensor([[0, 2, 1]])), torch.eye(3)[[0, 2, 1]][None])
    for bad in (3, -1):
        try:
            m(torch.tensor([[0, bad, 1]]))
        except ncd.NcdError as err:
            assert f"holds the id {bad}, outside 0 .. 2" in err.message and err.line == 7
        else:
            raise AssertionError(f"the id {bad} was accepted")


def test_an_output_padding_torch_refuses_is_a_check_error() -> None:
    """conv_transpose with output_padding >= stride checked, then died in torch (exit 3 from ncd run)."""
    spec = ("axis C = 2, D = 2, K = 3, T = 4, T2\nblock F(x: [C, T]) -> [D, T2] {\n"
            "  param W: [C, D, K] init normal(0, 1)\n"
            "  return conv_transpose(x, W, over = T -> T2, kernel = [K], stride = [2], output_padding = 1)\n}\n")
    assert ncd.load(spec)(torch.randn(1, 2, 4)).shape == (1, 2, 10)  # (4-1)·2 + 2 + 1 + 1
    try:
        ncd.check(spec.replace("output_padding = 1", "output_padding = 2"))
    except ncd.NcdError as err:
        assert "must be smaller than the stride 2" in err.message and err.line == 4 and err.hint
    else:
        raise AssertionError("output_padding = 2 with stride 2 was accepted")
