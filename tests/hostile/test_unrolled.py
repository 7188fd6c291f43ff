"""The repeat cap composes across blocks (issue 9): a block that loops, called inside another
block's loop or chained × N, multiplies its loop count, and the product is held to the same
limit of 4096 as one `repeat`, refused at the call that passes it."""
from __future__ import annotations

import pytest

import ncd
from hostile_harness import assert_ncd_error, run_cli, write_spec

LOOPS = "axis D = 4\nblock B(x: [D]) -> [D] {\n    repeat 1000 { x = tanh(x) }\n    return x\n}\n"
NESTED = LOOPS + "block C(x: [D]) -> [D] {\n    use b = B\n    repeat 1000 { x = b(x) }\n    return x\n}\n"
CHAINED = LOOPS + "block C(x: [D]) -> [D] {\n    use l = B × 5\n    return l(x)\n}\n"
TWO_LEVELS = (LOOPS + "block C(x: [D]) -> [D] {\n    use b = B\n    repeat 2 { x = b(x) }\n    return x\n}\n"
              "block E(x: [D]) -> [D] {\n    use c = C\n    repeat 3 { x = c(x) }\n    return x\n}\n")
HALTING = ("axis D = 4\nblock B(x: [D]) -> [D] {\n    repeat 100 { x = tanh(x) }\n    return x\n}\n"
           "block C(x: [D]) -> [D] {\n    use b = B\n"
           "    s, n = halting k max 50 mix graves carry (h: [D] = x) {\n        h = b(h)\n        halt sigmoid(sum(h, over = D))\n    }\n"
           "    return s\n}\n")


@pytest.mark.parametrize("name, text, line, needles", [
    ("nested", NESTED, 8, ["1000000 times", "block B", "4096"]),
    ("chained", CHAINED, 8, ["5000 times", "5 chained copies", "4096"]),
    ("two-levels", TWO_LEVELS, 13, ["6000 times", "block C", "2000"]),
    ("halting", HALTING, 9, ["5000 times", "block B", "4096"]),
])
@pytest.mark.parametrize("command", ["check", "run"])
def test_loops_through_block_calls_multiply(tmp_path, name, text, line, needles, command):
    assert_ncd_error(run_cli(command, write_spec(tmp_path, text)), *needles, line=line)


def test_a_product_within_the_cap_runs():
    ok = LOOPS + "block C(x: [D]) -> [D] {\n    use l = B × 4\n    use b = B\n    return b(l(x))\n}\n"
    assert ncd.check(ok).entry_block.name == "C"


@pytest.mark.parametrize("expr, col", [("tanh(" * 300 + "x" + ")" * 300, 9 + 5 * 128),
                                       ("x" + " + x" * 300, 9)])
def test_a_deep_expression_is_refused_at_its_place(tmp_path, expr, col):
    """Issue 9: 300 levels of nesting were refused at 1:1 (a RecursionError caught at the top); the
    error now names the limit at the sub-expression that passes it."""
    spec = write_spec(tmp_path, f"axis D = 4\nblock F(x: [D]) -> [D] {{\n    y = {expr}\n    return y\n}}\n")
    out = assert_ncd_error(run_cli("check", spec), "nests more than 128 levels", line=3)
    assert int(out.located()["col"]) == col, out
