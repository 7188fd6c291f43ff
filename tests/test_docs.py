"""Every ```ncd example in docs/language.md and README.md is a complete spec that works as written.

An example whose fence's first line is ``# expect-error: <text>`` must fail with an NcdError
whose message contains <text>. Every other example is checked, loaded with its free axes bound
to small sizes, and run forward (and backward) on a random input with a leading batch of 2.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

import ncd
from ncd.cli.common import axis_size
from ncd.samples import random_input

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "docs" / "language.md", ROOT / "README.md"]
FENCE = re.compile(r"^```ncd[ \t]*\n(.*?)^```", re.S | re.M)
EXPECT = re.compile(r"#\s*expect-error:\s*(.+?)\s*$")
FREE_SIZE = 4  # every free axis of an example is bound to this when the example is run


def examples() -> list:
    out = []
    for doc in DOCS:
        if not doc.exists():
            continue
        text = doc.read_text(encoding="utf-8")
        for match in FENCE.finditer(text):
            line = text[: match.start()].count("\n") + 2  # the example's first line in the file
            out.append(pytest.param(match.group(1), id=f"{doc.name}:{line}"))
    return out


EXAMPLES = examples()


def test_the_docs_have_examples():
    assert len(EXAMPLES) >= 20


@pytest.mark.parametrize("source", EXAMPLES)
def test_example(source: str) -> None:
    first = source.splitlines()[0] if source.strip() else ""
    expected = EXPECT.search(first)
    if expected:
        with pytest.raises(ncd.NcdError) as info:
            ir = ncd.check(source)
            free = {a: FREE_SIZE for a, d in ir.axes.items() if d.size is None and not d.prime_of}
            ncd.load(source, **free)
        assert expected.group(1) in str(info.value)
        assert info.value.line is not None or "line" not in expected.group(1)
        return
    ir = ncd.check(source)
    free = {a: FREE_SIZE for a, d in ir.axes.items() if d.size is None and not d.prime_of}
    if free:
        ir = ncd.check(source, **free)
    torch.manual_seed(0)
    module = ncd.load(source, **free).double()
    inputs = []
    for port in ir.entry_block.inputs:
        shape = [axis_size(ir, a) for a in port.type.axes]
        assert None not in shape, f"input {port.name} {port.type} has an unsized axis"
        inputs.append(random_input(port.type, [2, *shape] if port.type.lifted else shape, torch.float64,
                                   requires_grad=True))
    out = module(*inputs)
    outs = out if isinstance(out, tuple) else (out,)
    for wire, o in zip(ir.entry_block.outputs, outs):
        assert tuple(o.shape[o.dim() - len(wire.axes):]) == tuple(axis_size(ir, a) for a in wire.axes)
        assert torch.isfinite(o).all()
    total = sum(o.sum() for o in outs if o.is_floating_point())
    if total.requires_grad:
        total.backward()
