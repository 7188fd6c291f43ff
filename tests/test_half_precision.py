"""Every op of the table runs in float16 and bfloat16 on the CPU, or is refused with an NcdError
(issue 9): each op's one-op spec (as tests/test_ops_table.py builds it), loaded, converted with ``.to(dtype)`` and run on inputs of
that dtype, never stops with a raw torch error. (linalg.inv has no half kernel: rt.inv computes
it in float32 and returns the input's dtype.)"""
from __future__ import annotations

import warnings

import pytest
import torch

import ncd
from ncd.cli.common import axis_size
from ncd.ops import OPS
from ncd.samples import random_input
from test_ops_table import example_of  # the row's example, or the default one-op spec of its family

EXAMPLES = sorted((name, text) for name in OPS if (text := example_of(name)) is not None)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("name, example", EXAMPLES, ids=[n for n, _ in EXAMPLES])
def test_op_runs_in_half_precision_or_is_refused(name, example, dtype):
    ir = ncd.check(example)
    try:
        module = ncd.load(example).to(dtype)
        inputs = [random_input(p.type, [2] + [axis_size(ir, a) or 4 for a in p.type.axes], dtype)
                  for p in ir.entry_block.inputs]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = module(*inputs)
    except ncd.NcdError:
        return  # refused, with its place: allowed
    for o in out if isinstance(out, tuple) else (out,):
        assert not o.is_floating_point() or o.dtype == dtype, (name, o.dtype)


def test_inv_in_half_precision_matches_float32():
    spec = "axis R = 3\nblock F(x: [R, R']) -> [R, R'] {\n    return inv(x, over = [R, R'])\n}\n"
    module = ncd.load(spec)
    x = torch.eye(3) * 2 + 0.1 * torch.randn(4, 3, 3)
    want = torch.linalg.inv(x)
    for dtype in (torch.float16, torch.bfloat16):
        got = module.to(dtype)(x.to(dtype))
        assert got.dtype == dtype
        torch.testing.assert_close(got.float(), want, rtol=2e-2, atol=2e-2)
