"""Every front-end error carries a hint, and a hint works when followed.

Two checks. A scan of ncd/frontend's source (AST) fails any ``NcdError(...)`` or ``err(...)``
whose hint is missing or can be None. Then a table of wrong specs: each is checked, the error must
point at the offending token (line, column given here by hand), and the row's ``fix`` applies the
edit the hint names — the code it quotes is taken from the hint text, never written here — and
the fixed spec must pass ``ncd.check``. A hint that stops naming a working edit fails its row.
"""
from __future__ import annotations

import ast
import re
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import pytest

import ncd
from ncd import NcdError

FRONTEND = Path(__file__).resolve().parents[1] / "ncd" / "frontend"

# Calls whose hint is a variable, each with the reason it cannot be None.
EXEMPT = {
    ("common.py", "err", "hint"): "the helper itself: it forwards its caller's hint",
    ("block.py", "axis_name", "hint"): "hint = _did_you_mean(...) or a literal just above",
    ("block.py", "add_op", "exc.hint"): "re-locates an op's typing error, keeping its hint",
    ("block.py", "init_expr", "hint"): "an initialiser row's check returns (message, hint, at)",
    ("builder.py", "bounded", "exc.hint"): "re-locates sizes.check_degree's error, keeping its hint",
    ("builder.py", "unify", "exc.hint"): "re-locates a size error, keeping its hint",
    ("builder.py", "size", "exc.hint"): "re-locates a size error at the axis's declaration, keeping its hint",
    ("common.py", "checked_power", "exc.hint"): "FoldError requires a hint",
    ("expressions.py", "fold", "exc.hint"): "FoldError requires a hint",
    ("parser.py", "_syntax_error", "hint"): "set on every branch just above (a literal or an f-string)",
}


def _can_be_none(node: ast.expr) -> bool:
    """Whether a hint expression may evaluate to None: the constant None, or an ``or`` / ``if`` whose
    last alternative may."""
    if isinstance(node, ast.Constant):
        return node.value is None or node.value == ""
    if isinstance(node, ast.BoolOp):
        return _can_be_none(node.values[-1])
    if isinstance(node, ast.IfExp):
        return _can_be_none(node.body) or _can_be_none(node.orelse)
    return False


def _raises() -> list[tuple[str, str, int, ast.Call]]:
    out = []
    for path in sorted(FRONTEND.glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for func in ast.walk(tree):
            if not isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(func):
                if isinstance(node, ast.Call) and getattr(node.func, "id", None) in ("NcdError", "err"):
                    out.append((path.name, func.name, node.lineno, node))
    return out


def test_scan_finds_the_raises() -> None:
    """The scan below sees the front end's errors (a scan that matches nothing proves nothing)."""
    assert len(_raises()) > 150


def test_every_frontend_error_has_a_hint() -> None:
    missing = []
    for fname, func, line, call in _raises():
        hint = next((k.value for k in call.keywords if k.arg == "hint"), call.args[2] if len(call.args) > 2 else None)
        where = f"ncd/frontend/{fname}:{line} ({func})"
        if hint is None or _can_be_none(hint):
            missing.append(f"{where}: {ast.unparse(call)[:100]}")
        elif isinstance(hint, (ast.Name, ast.Attribute)) and (fname, func, ast.unparse(hint)) not in EXEMPT:
            missing.append(f"{where}: hint={ast.unparse(hint)} is a variable; add it to EXEMPT with the reason")
    assert not missing, "errors without a hint that works:\n" + "\n".join(missing)


# ----------------------------------------------------------------------------- followed hints
def quoted(pattern: str, hint: str) -> str:
    """The piece of the hint the edit pastes; fails the row when the hint no longer says it."""
    match = re.search(pattern, hint)
    assert match, f"hint {hint!r} does not match {pattern!r}"
    return match.group(1)


Fix = Callable[[str, str, dict[str, int]], tuple[str, dict[str, int]]]


class Case(NamedTuple):
    id: str
    source: str
    line: int | None
    col: int | None
    message: str
    fix: Fix
    sizes: dict[str, int] = {}


def _declare_axis(src: str, hint: str, sizes: dict[str, int]) -> tuple[str, dict[str, int]]:
    return quoted(r"declare it: (axis \w+)", hint) + "\n" + src, sizes


def _replace_line(line_no: int, pattern: str) -> Fix:
    def fix(src: str, hint: str, sizes: dict[str, int]) -> tuple[str, dict[str, int]]:
        lines = src.split("\n")
        indent = lines[line_no - 1][: len(lines[line_no - 1]) - len(lines[line_no - 1].lstrip())]
        lines[line_no - 1] = indent + quoted(pattern, hint)
        return "\n".join(lines), sizes
    return fix


def _replace(old: str, pattern: str, template: str = "{}") -> Fix:
    def fix(src: str, hint: str, sizes: dict[str, int]) -> tuple[str, dict[str, int]]:
        assert src.count(old) == 1
        return src.replace(old, template.format(quoted(pattern, hint))), sizes
    return fix


def _rebind(pattern: str) -> Fix:
    def fix(src: str, hint: str, sizes: dict[str, int]) -> tuple[str, dict[str, int]]:
        match = re.search(pattern, hint)
        assert match, f"hint {hint!r} does not match {pattern!r}"
        name, value = match.group(1, 2)
        return src, {**sizes, name: int(value)}
    return fix


def _rename_from(line_no: int, old: str, pattern: str) -> Fix:
    """Rename a value from its (re)assignment on ``line_no`` on, as the hint says."""
    def fix(src: str, hint: str, sizes: dict[str, int]) -> tuple[str, dict[str, int]]:
        new = quoted(pattern, hint)
        lines = src.split("\n")
        lines[line_no - 1] = re.sub(rf"^(\s*){old}\b", rf"\g<1>{new}", lines[line_no - 1])
        for i in range(line_no, len(lines)):
            lines[i] = re.sub(rf"\b{old}\b", new, lines[i])
        return "\n".join(lines), sizes
    return fix


def _delete_line(line_no: int, pattern: str) -> Fix:
    def fix(src: str, hint: str, sizes: dict[str, int]) -> tuple[str, dict[str, int]]:
        quoted(pattern, hint)
        lines = src.split("\n")
        return "\n".join(lines[: line_no - 1] + lines[line_no:]), sizes
    return fix


HEAD = "axis D = 4, E = 3\naxis T\n"  # every spec below: the block header on line 3
INNER = """block Inner[K](x: [K]) -> [K] {
  return relu(x)
}
block Scale[K, s = 1](x: [K]) -> [K] {
  return s * x
}
"""
HALT = """axis T, D = 4
block UT(x: [T, D]) -> [T, D] {
  param w: [D] init normal(0, 0.3)
  y, ponder = halting n max 4 eps 2 mix graves carry (s: [T, D] = x) {
    s = tanh(s)
    halt sigmoid(s @[D] w)
  }
  return y
}
"""

CASES = [
    Case("unknown-axis-in-type", HEAD + "block F(x: [T, Q]) -> [T] {\n  return sum(x, over = Q)\n}\n",
         3, 16, "unknown axis Q", _declare_axis),
    Case("param-without-init", HEAD + "block F(x: [D]) -> [E] {\n  param W: [D, E]\n  return x @[D] W\n}\n",
         4, 9, "needs an initialiser", _replace_line(4, r"^(param .*)$")),
    Case("number-operand-of-@", HEAD + "block F(x: [D]) -> [D] {\n  return 2 @ x\n}\n",
         4, 12, "operand of @ is a number", _replace("2 @ x", r"write a (\S) x", "2 {} x")),
    Case("reassign-a-param", HEAD + "block F(x: [D]) -> [E] {\n  param W: [D, E] init normal(0, 1)\n"
         "  W = relu(W)\n  return x @[D] W\n}\n",
         5, 3, "cannot be reassigned", _rename_from(5, "W", r"its own name: (\w+) =")),
    Case("outputs-count", HEAD + "block F(x: [D]) -> [D] {\n  return relu(x), x\n}\n",
         4, 3, "declares 1 outputs but returns 2", _replace("-> [D]", r"declare what it returns: (-> [^(]*?) \(")),
    Case("unpack-a-tuple", "axis D = 4, D2 = 8\nblock F(x: [D2]) -> [D] {\n"
         "  a = split(x, over = D2 -> [D, D'])\n  return a\n}\n",
         3, 3, "gives 2 values", _replace("  a = split", r"left: (.*) = \.\.\.", "  {} = split")),
    Case("wrong-number-of-inputs", HEAD + INNER + "block F(x: [D]) -> [D] {\n  use l = Inner[D]\n"
         "  return l(x, x)\n}\n",
         11, 10, "takes 1 inputs, got 2", _replace("l(x, x)", r"pass 1: (\w+\(\w+\))")),
    Case("constant-twice", "const c = 2\nconst c = 3\naxis D = 4\nblock F(x: [D]) -> [D] {\n  return c * x\n}\n",
         2, 7, "constant c is defined twice", _replace("const c = 3", r"rename it: (const \w+) =", "{} = 3")),
    Case("prime-declared", "axis D' = 4\nblock F(x: [D']) -> [D'] {\n  return x\n}\n",
         1, 6, "is a prime", _replace("axis D' = 4", r"declare the base axis \((\w+)\)", "axis {} = 4")),
    Case("no-such-block-parameter", HEAD + INNER + "block F(x: [D]) -> [D] {\n  use l = Scale[D, sc = 2]\n"
         "  return l(x)\n}\n",
         10, 25, "has no parameter sc", _replace("sc = 2", r"did you mean (\w+)\?", "{} = 2")),
    Case("unknown-block", HEAD + INNER + "block F(x: [D]) -> [D] {\n  use l = Iner[D]\n  return l(x)\n}\n",
         10, 11, "unknown block Iner", _replace("Iner[D]", r"did you mean (\w+)\?", "{}[D]")),
    Case("halt-outside-halting", HEAD + "block F(x: [D]) -> [D] {\n  y = relu(x)\n  halt sigmoid(y)\n"
         "  return y\n}\n",
         5, 3, "halt outside a halting loop", _delete_line(5, r"(elsewhere drop it)")),
    Case("eps-out-of-range", HALT, 4, 31, "eps must be a number in (0, 1)",
         _replace("eps 2", r"write (eps [\d.]+)")),
    Case("repeat-count-zero", HEAD + INNER + "block F(x: [D]) -> [D] {\n  use l = Inner[D] × 0\n"
         "  return l(x)\n}\n",
         10, 20, "at least 1", _replace("Inner[D] × 0", r"use l = \w+ (× \d+)", "Inner[D] {}")),
    Case("carry-axes", HEAD + "block F(x: [T, D]) -> [T, E] {\n  param W: [D, E] init normal(0, 1)\n"
         "  return scan t over T carry (h: [E] = x) {\n    h = tanh(x[t] @[D] W + h)\n    emit h\n  }\n}\n",
         5, 40, "carry h is declared [..., E]", lambda s, h, z: (s.replace("h: [E] = x", "h: [E] = 0"), z)
         if quoted(r"(or 0)", h) else (s, z)),
    Case("init-axes-not-on-param", HEAD + "block F(x: [D]) -> [D] {\n  param W: [D] init idx(E)\n"
         "  return x * W\n}\n",
         4, 16, "not on the parameter", _replace("idx(E)", r"over = (\w+)\)", "sum(idx(E), over = {})")),
    Case("init-keywords", HEAD + "block F(x: [D]) -> [D] {\n  param W: [D] init normal(mean = 0, std = 1)\n"
         "  return x * W\n}\n",
         4, 28, "takes positional numbers",
         lambda s, h, z: (s.replace("mean = 0, std = 1", "0, 1") if quoted(r"(drop the names)", h) else s, z)),
    Case("trunc-normal-zero-std", HEAD + "block F(x: [D]) -> [D] {\n  param W: [D] init trunc_normal(0, 0)\n"
         "  return x * W\n}\n",
         4, 37, "standard deviation of trunc_normal is 0",
         _replace("trunc_normal(0, 0)", r"e\.g\. (trunc_normal\([\d., ]+\))")),
    Case("bound-to-zero", HEAD + "block F(x: [T, D]) -> [T, D] {\n  return x\n}\n",
         2, 6, "must be bound to a positive integer", _rebind(r"--set (\w+)=(\d+)"), {"T": 0}),
    Case("derived-bound-wrong", "axis D = 4\naxis K = 2 * D\nblock F(x: [K]) -> [K] {\n  return x\n}\n",
         2, 10, "declared with size 8 but bound to 5", _rebind(r"bind (K) to (\d+)"), {"K": 5}),
    Case("bare-instance-name", HEAD + INNER + "block F(x: [D]) -> [D] {\n  use l = Inner[D]\n  return l\n}\n",
         11, 10, "is a block instance", _replace("return l\n", r"write (\w+\(\w+\))", "return {}\n")),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hint_followed_fixes_the_spec(case: Case) -> None:
    with pytest.raises(NcdError) as info:
        ncd.check(case.source, **case.sizes)
    exc = info.value
    assert case.message in exc.message, str(exc)
    assert (exc.line, exc.col) == (case.line, case.col), str(exc)
    assert exc.hint, str(exc)
    fixed, sizes = case.fix(case.source, exc.hint, dict(case.sizes))
    assert fixed != case.source or sizes != case.sizes
    ncd.check(fixed, **sizes)  # the spec the hint's edit gives passes
