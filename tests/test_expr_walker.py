"""One walker over lowering expressions (ncd.ops.base.fold): the interpreter, the emitter and the
lowering read every part of a node, a method call's keyword arguments included."""
from __future__ import annotations

import torch

from ncd.backends.pytorch.emit import code
from ncd.backends.pytorch.module import compile_expr
from ncd.ops.base import Call, Index, Method, Ref, SelfAttr, call, leaves, lit


def test_method_keyword_arguments_reach_the_interpreter_and_the_emitter():
    expr = Method(Ref("x"), "sum", (lit(-1),), (("keepdim", lit(True)),))
    x = torch.arange(6.0).reshape(2, 3)
    got = compile_expr(expr)({"x": x}, torch.nn.Module())
    assert got.shape == (2, 1)
    torch.testing.assert_close(got, torch.sum(x, dim=-1, keepdim=True))
    assert code(expr) == "x.sum(-1, keepdim=True)"


def test_leaves_read_every_child():
    expr = Call(SelfAttr("f"), (Index(Ref("a"), ("...", Ref("i"), 0)),),
                (("k", Method(Ref("b"), "view", (), (("dtype", Ref("c")),))),))
    assert [getattr(x, "id", getattr(x, "path", None)) for x in leaves(expr)] == ["f", "a", "i", "b", "c"]
    nested = call("torch.add", Ref("p"), Ref("p"))
    assert [x.id for x in leaves(nested)] == ["p", "p"]
