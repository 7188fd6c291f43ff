"""Loop bodies nested inside each other (issue 9): 10⁴ nested `repeat`, `scan` or `halting` bodies
are one located NcdError naming the limit (ncd.limits.MAX_BODY_NESTING), refused from the text's
braces before Lark parses it (within the harness's time limit); at the limit they check and run forward and backward, and a nested repeat that
only reassigns through an inner repeat is a legitimate spec."""
from __future__ import annotations

import pytest

from hostile_harness import assert_ncd_error, assert_ok, run_cli, run_python

from ncd.limits import MAX_BODY_NESTING

HEAD = "axis T = 3, D = 4\nblock F(x: [D], s: [T, D]) -> [D] {\n"
SHORT = HEAD.replace("T = 3", "T = 1")  # nested scans of T steps run T^depth steps


def repeats(depth: int) -> str:
    body = "x = tanh(x)\n"
    for _ in range(depth):
        body = "repeat 1 {\n" + body + "}\n"
    return HEAD + body + "return x\n}\n"


def scans(depth: int) -> str:
    body = "h = tanh(h)\n"
    for i in range(depth):
        body = f"y{i} = scan t{i} over T carry (h: [D] = x) {{\n{body}emit h\n}}\nh = y{i}[T = 0]\n"
    return HEAD + "h = x\n" + body + "return h\n}\n"


def haltings(depth: int) -> str:
    body = "s = tanh(s)\n"
    for i in range(depth):
        body = (f"y{i}, p{i} = halting n{i} max 2 eps 0.01 mix graves carry (s: [D] = x) {{\n{body}"
                f"halt sigmoid(sum(s, over = [D]))\n}}\ns = y{i}\n")
    return HEAD + "s = x\n" + body + "return s\n}\n"


def mixed(depth: int, head: str = HEAD) -> str:
    body = "x = tanh(x)\n"
    for i in range(depth):
        body = ("repeat 1 {\n" + body + "}\n" if i % 2 else
                f"y{i} = scan t{i} over T carry (x: [D] = x) {{\n{body}emit x\n}}\nx = y{i}[T = 0]\n")
    return head + body + "return x\n}\n"


# The first loop too deep is the (MAX_BODY_NESTING + 1)-th from the outside: its line, by generator.
FIRST_TOO_DEEP = {"repeats": 2 + MAX_BODY_NESTING + 1, "scans": 3 + MAX_BODY_NESTING + 1,
                  "haltings": 3 + MAX_BODY_NESTING + 1}
SHAPES = {"repeats": repeats, "scans": scans, "haltings": haltings, "mixed": mixed}


@pytest.mark.parametrize("shape,command", [(shape, "check") for shape in sorted(SHAPES)]
                         + [("repeats", "cost"), ("repeats", "render"), ("scans", "ir")])
def test_ten_thousand_nested_bodies_are_one_located_error(spec, shape, command):
    args = [command, spec(SHAPES[shape](10_000))] + (["-o", "-"] if command == "render" else [])
    out = assert_ncd_error(run_cli(*args), "nested", f"limit of {MAX_BODY_NESTING}", "MAX_BODY_NESTING",
                           line=FIRST_TOO_DEEP.get(shape))
    assert out.output.count(f"limit of {MAX_BODY_NESTING}") == 1, out  # one error, not one per level


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_one_beyond_the_limit_is_refused(spec, shape):
    assert_ncd_error(run_cli("check", spec(SHAPES[shape](MAX_BODY_NESTING + 1))), "nested",
                     f"limit of {MAX_BODY_NESTING}", line=FIRST_TOO_DEEP.get(shape))


@pytest.mark.parametrize("text", [repeats(MAX_BODY_NESTING), mixed(MAX_BODY_NESTING, SHORT)], ids=["repeats", "mixed"])
def test_at_the_limit_runs_forward_and_backward(spec, text):
    assert_ok(run_cli("run", spec(text), "--backward"))


def test_load_refuses_as_check_does():
    code = (f"import ncd\nfrom test_nesting import repeats\n"
            f"ncd.load(repeats({MAX_BODY_NESTING + 1}))")
    assert_ncd_error(run_python(code), "MAX_BODY_NESTING", line=FIRST_TOO_DEEP["repeats"])


def test_repeat_reassigning_only_through_an_inner_repeat(spec):
    """`repeat 2 { repeat 3 { x = f(x) } }` changes x: the outer body carries it (6 steps)."""
    text = HEAD + "repeat 2 {\n    repeat 3 { x = x * 2 }\n}\nreturn x\n}\n"
    code = ("import ncd, torch\n"
            f"m = ncd.load({text!r})\n"
            "x = torch.ones(4)\n"
            "assert torch.equal(m(x, torch.zeros(3, 4)), x * 64), m(x, torch.zeros(3, 4))\n")
    assert_ok(run_python(code))
