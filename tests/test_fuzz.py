"""Fuzzing the front end: a mutated spec is either accepted or rejected with an NcdError.

Every shipped spec (``specs/*.ncd``, globbed at test time) and a few inline specs covering the
constructs are mutated token by token (delete, duplicate, swap, insert a word of the language or
junk, change a number, rename an identifier). ``ncd.check`` must then succeed or raise NcdError —
never a KeyError, an AttributeError, a sympy or torch exception — and where it succeeds,
``ncd.load`` (with the free axes bound to small sizes) must do the same.
"""
from __future__ import annotations

import inspect
import keyword
import re
from pathlib import Path

import pytest
import sympy
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ncd
from fuzz_sizes import small_enough

ROOT = Path(__file__).resolve().parents[1]

INLINE = {
    "mlp": """# MLP with axis-parameterised linear layers and a tap
axis E = 4, D = 6
axis B
block Linear[I, O](x: [I]) -> [O] {
  param W: [I, O] init normal(0, 0.1)
  param b: [O] init zeros
  return x @[I] W + b
}
block MLP(x: [B, E]) -> [B, E] {
  use l1 = Linear[E, D], l2 = Linear[I = D, O = E]
  tap pre = l1(x)
  return l2(tanh(pre)) + x
}
""",
    "rnn": """axis T, E = 3, D = 4
block RNN(x: [T, E]) -> [T, D] {
  param Wx: [E, D] init normal(0, 0.3)
  param Wh: [D', D] init normal(0, 0.3)
  param b: [D] init zeros
  return scan t over T reverse carry (h: [D] = 0) {
    h = tanh(x[t] @[E] Wx + h[D as D'] @[D'] Wh + b)
    emit h
  }
}
""",
    "layers": """axis D = 8, H = 2
axis K = D / H
axis T
const scale = 1 / sqrt(K)
block Layer[eps = 1e-5](x: [T, D]) -> [T, D] {
  param W: [D, H, K] init uniform(-0.1, 0.1)
  q = x @[D] W
  a = softmax(q @[K] q[T as T'] * scale, over = T')
  o = (a @[T'] q[T as T'])[H K -> D]
  return layernorm(x + o, over = D, eps = eps)
}
block Stack(x: [T, D]) -> [T, D] {
  use layers = Layer × 2
  use shared = Layer[eps = 1e-6]
  y = layers(x)
  repeat 2 { y = shared(y) }
  return y
}
""",
    "act": """axis T, D = 4
block ACT(x: [T, D]) -> [T, D] {
  param w: [D] init normal(0, 0.5)
  y, p = halting n max 3 mix interpolate carry (s: [T, D] = x) {
    s = tanh(s)
    halt sigmoid(s @[D] w)
  }
  return y
}
""",
    "modules": """import LSTMCell from lstm
axis T, P, D = 3
entry Train, Greedy
const c[P] = [1, 0.5, -1 / 4]
block Poly(x: [..]) -> [..] {
  return sum(c * x ^ idx(P), over = P)
}
block Step(x: [T, D]) -> [T, D] {
  param w: [D] init normal(0, 0.5)
  y, p = halting n max 3 mix graves eps 0.05 carry (s: [T, D] = x) {
    s = Poly(s)
    halt sigmoid(s @[D] w)
  }
  return y
}
block Train(x: [T, D]) -> [T, D] {
  use step = Step
  return step(x)
}
block Greedy(x: [T, D]) -> [T, D] {
  use step = Step
  h, c = LSTMCell(x + 0 * idx(G), x)
  return step(step(h))
}
""",
    "misc": """axis D = 4, D2 = 8, N = 3
axis T
const A[n: N, k: N'] = where(n > k, -sqrt(2 * n + 1), 0)
block Misc(x: [T, D], z: [T, N]) -> [T, D], [T, N] {
  buffer M: [D, D'] init ones
  c = concat(x, x, over = D -> D2)
  a, b = split(c, over = D2 -> [D, D'])
  y = (a * b[D' as D] + sum(x, over = D)) : [T, D]
  w = z @[N] A
  return relu(y) ^ 2 - y / 2, clamp(w[N' as N], min = -1, max = 1) + x[D = 0]
}
""",
}


def _shipped() -> dict[str, str]:
    return {p.name: p.read_text(encoding="utf-8") for p in sorted((ROOT / "specs").glob("*.ncd"))}


CORPUS = {**INLINE, **_shipped()}
NAMES = sorted(CORPUS)

# Words and symbols of the language, plus things that are not in it.
VOCAB = [
    "axis", "block", "param", "buffer", "init", "use", "tap", "return", "emit", "repeat", "halt", "const",
    "scan", "over", "reverse", "carry", "via", "halting", "max", "eps", "as", "×", "*", "+", "-", "/", "^",
    "@", "(", ")", "[", "]", "{", "}", ",", ":", ";", "=", "->", "..", "==", "<", "'", "@[D]", "[..]",
    "x", "T", "D", "T'", "D''", "0", "1", "2.5", "1e-5", "relu", "softmax", "concat", "split", "sum",
    "normal", "zeros", "idx", "where", "forward", "self", "__class__", "lambda", "import", "\"s\"", "#",
    "\n", "😀", "\x00", "1e400", "99999999999999999999", "0x10", "_", "sqrt", "pi", "inf",
    "entry", "mix", "graves", "interpolate", "from", "./x.ncd", "../y.ncd", "lstm", "[1, 2]",
]
JUNK = st.text(alphabet=st.characters(min_codepoint=1, max_codepoint=0x2FF), min_size=1, max_size=3)
NUMBERS = ["0", "1", "-1", "2", "3", "0.5", "1e-5", "1e9", "64", "100000", "1.5e300", "0.0", "7"]
TOKEN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*'*|\d+\.\d*(?:[eE][-+]?\d+)?|\.\d+|\d+(?:[eE][-+]?\d+)?|->|==|!=|<=|>="
                   r"|\.\.|#[^\n]*|\s+|.", re.S)
# Mutations that break the syntax, and (weighted up) those that keep it and reach the type checker.
KINDS = ["delete", "duplicate", "swap", "insert", "junk", "char"] + ["rename"] * 4 + ["number"] * 3 \
    + ["swap_names"] * 3
MAX_AXIS = 4096  # load only specs whose weights stay small: they are allocated for real
MAX_ELEMENTS = 1 << 22


def tokens(source: str) -> list[str]:
    return TOKEN.findall(source)


@st.composite
def mutated(draw) -> tuple[str, str]:
    name = draw(st.sampled_from(NAMES))
    toks = tokens(CORPUS[name])
    words = [i for i, t in enumerate(toks) if not t.isspace()]
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(KINDS))
        if not words:
            break
        i = draw(st.sampled_from(words))
        if kind == "delete":
            toks[i] = ""
        elif kind == "duplicate":
            toks[i] = toks[i] + " " + toks[i]
        elif kind == "swap":
            j = draw(st.sampled_from(words))
            toks[i], toks[j] = toks[j], toks[i]
        elif kind == "insert":
            toks[i] = draw(st.sampled_from(VOCAB)) + " " + toks[i]
        elif kind == "junk":
            toks[i] = draw(JUNK) + toks[i]
        elif kind == "swap_names":  # keeps the syntax, so it reaches the type checker
            names = [k for k in words if re.match(r"[A-Za-z_]", toks[k])] or [i]
            j, k = draw(st.sampled_from(names)), draw(st.sampled_from(names))
            toks[j], toks[k] = toks[k], toks[j]
        elif kind == "number":
            numbers = [k for k in words if toks[k][:1].isdigit()] or [i]
            toks[draw(st.sampled_from(numbers))] = draw(st.sampled_from(NUMBERS))
        elif kind == "rename":
            idents = sorted({toks[k] for k in words if re.match(r"[A-Za-z_]", toks[k])})
            old = draw(st.sampled_from(idents)) if idents else toks[i]
            new = draw(st.sampled_from(idents + ["q", "T'", "Zz", "softmax", "block"]))
            every = draw(st.booleans())
            for k in words:
                if toks[k] == old:
                    toks[k] = new
                    if not every:
                        break
        else:  # delete or insert one character inside a token
            text = toks[i]
            at = draw(st.integers(0, len(text)))
            if draw(st.booleans()) and text:
                at = min(at, len(text) - 1)
                toks[i] = text[:at] + text[at + 1:]
            else:
                toks[i] = text[:at] + draw(st.sampled_from(list("()[]{}:,=@'x0.-"))) + text[at:]
    return name, "".join(toks)


def free_sizes(ir) -> dict[str, int] | None:
    """Small sizes for the axes the spec leaves free, or None where a declared size is too big to load."""
    if any((inst.repeat or 1) > 8 for block in ir.blocks.values() for inst in block.instances):
        return None  # `× 100000` builds that many sub-modules: valid, but not for a unit test
    bindings = {name: 3 for name, axis in ir.axes.items() if axis.size is None}
    if set(bindings) & set(inspect.signature(ncd.load).parameters):
        return None  # an axis called `block` cannot be bound through load()'s keywords
    return bindings if small_enough(ir, bindings, MAX_AXIS, MAX_ELEMENTS) else None


def expected(exc: ncd.NcdError) -> None:
    """A proper rejection: not the API's safety net for bugs, and it renders."""
    assert not exc.message.startswith("internal error"), f"{exc}\ncaused by {exc.__cause__!r}"
    assert exc.message
    str(exc)


def check_and_load(source: str) -> None:
    try:
        ir = ncd.check(source)
    except ncd.NcdError as exc:
        expected(exc)
        return
    sizes = free_sizes(ir)
    if sizes is None:
        return
    try:
        ncd.load(source, **sizes)
    except ncd.NcdError as exc:
        expected(exc)


@pytest.mark.parametrize("name", NAMES)
def test_corpus_specs_are_valid(name):
    """The fuzzer starts from specs that check; a broken starting point would test little."""
    ncd.check(CORPUS[name])


@settings(max_examples=1000, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(mutated())
def test_mutated_specs_fail_only_with_ncd_error(case):
    _name, source = case
    check_and_load(source)


@settings(max_examples=60, deadline=None, derandomize=True, database=None)
@given(st.lists(st.sampled_from(VOCAB), max_size=40).map(" ".join))
def test_random_token_soup(text):
    try:
        ncd.check(text + "\n")  # the newline makes it spec text, never a path
    except ncd.NcdError as exc:
        expected(exc)


# Names the size algebra (sympy, whose parser is Python's) could mistake: keywords, constants, functions.
TRICKY_NAMES = sorted(set(keyword.kwlist) | {n for n in dir(sympy) if n.isidentifier() and not n.startswith("_")}
                      | {"None", "True", "False", "__import__", "__builtins__", "self", "x"})


@settings(max_examples=80, deadline=None, derandomize=True, database=None)
@given(st.sampled_from(TRICKY_NAMES))
def test_any_identifier_as_an_axis_name(name):
    """An axis may be called anything the grammar accepts; where sizes could not carry the name,
    the spec is refused at the declaration."""
    source = (f"axis {name} = 4, H = 2\naxis K = {name} / H\naxis T\n"
              f"block F(x: [T, {name}]) -> [T, H, K] {{\n  return x[{name} -> H K]\n}}\n")
    try:
        ir = ncd.check(source)
    except ncd.NcdError as exc:
        expected(exc)
        assert (exc.line, exc.col) == (1, 6), str(exc)
        return
    assert ir.axes["K"].size is not None
    module = ncd.load(source)
    assert module(torch.randn(3, 4)).shape == (3, 2, 2)


HEAD_T = "axis D = 4\naxis T\n"
NUMBER = r"(\d{1,400}\.\d{0,5}|\.\d{1,5}|\d{1,400})([eE][-+]?\d{1,6})?"


@settings(max_examples=80, deadline=None, derandomize=True, database=None)
@given(st.from_regex(NUMBER, fullmatch=True), st.sampled_from(["x * {}", "x ^ {}", "{} ^ {}", "x + {} / {}",
                                                               "x * sqrt({})", "x * exp({})", "x * log({} - 1)"]))
def test_any_number_literal(number, template):
    source = HEAD_T + f"block F(x: [T, D]) -> [T, D] {{\n  return {template.format(number, number)}\n}}\n"
    try:
        ncd.check(source)
    except ncd.NcdError as exc:
        expected(exc)
    size_source = f"axis D = {number}\nblock F(x: [D]) -> [D] {{\n  return x\n}}\n"
    try:
        ncd.check(size_source)
    except ncd.NcdError as exc:
        expected(exc)

