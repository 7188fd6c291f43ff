"""The bad-input corpus: every broken spec fails with an NcdError at the token at fault.

One row per mistake: the spec, the (line, column) the error must point at, a piece of the message
and, where one helps, of the hint. Columns are chosen deliberately: the name that is unknown or
duplicated, the operator whose operands disagree (`@`), the option that is wrong (`over = E`),
the expression whose type is wrong — not merely the start of the statement.
"""
from __future__ import annotations

import ast
from pathlib import Path
from typing import NamedTuple

import pytest
import torch

import ncd
from ncd import NcdError

ROOT = Path(__file__).resolve().parents[1]

# Two lines every spec below starts with, so the block header is line 3 and its body line 4.
HEAD = "axis D = 4, E = 3\naxis T\n"
# A block with weights (lines 3-6), for the cases that instantiate one.
LIN = HEAD + """block Lin(x: [D]) -> [E] {
  param W: [D, E] init normal(0, 1)
  return x @[D] W
}
"""
# A block over an axis parameter (lines 3-5).
GEN = HEAD + """block G[A](x: [A]) -> [A] {
  return relu(x)
}
"""


class Case(NamedTuple):
    id: str
    source: str
    line: int | None
    col: int | None
    message: str
    hint: str | None = None
    sizes: dict[str, object] = {}


CASES = [
    # ------------------------------------------------------------------ syntax
    Case("syntax/missing-closing-brace", HEAD + """block F(x: [T, D]) -> [T, D] {
  return relu(x)
""", 4, 17, "unexpected end of the spec", "not closed"),
    Case("syntax/stray-token", HEAD + """block F(x: [T, D]) -> [T, D] {
  y = x + + ) x
  return y
}
""", 4, 11, "unexpected '+'", "expected"),
    Case("syntax/bad-number", HEAD + """block F(x: [T, D]) -> [T, D] {
  return x * 1.2.3
}
""", 4, 17, "unexpected '.3'"),
    Case("syntax/unclosed-bracket", HEAD + """block F(x: [T, D) -> [T, D] {
  return x
}
""", 3, 17, "unexpected ')'", "']'"),
    Case("syntax/missing-arrow", HEAD + """block F(x: [T, D]) [T, D] {
  return x
}
""", 3, 20, "unexpected '['", "'->'"),
    Case("syntax/unexpected-character", HEAD + """block F(x: [T, D]) -> [T, D] {
  return x $ 2
}
""", 4, 12, "unexpected character '$'"),
    # ------------------------------------------------------------------ names and axes
    Case("axis/unknown-in-type", HEAD + """block F(x: [T, Q]) -> [T, D] {
  return x
}
""", 3, 16, "unknown axis Q", "axis Q"),
    Case("axis/unknown-in-size", """axis D = 4
axis K = D / Q
block F(x: [K]) -> [K] {
  return x
}
""", 2, 14, "unknown axis Q"),
    Case("axis/unknown-in-over", HEAD + """block F(x: [T, D]) -> [T, D] {
  return softmax(x, over = Q)
}
""", 4, 28, "unknown axis Q"),
    Case("name/unknown-did-you-mean", HEAD + """block F(x: [T, D]) -> [T, D] {
  hidden = relu(x)
  return hiden
}
""", 5, 10, "unknown name hiden", "did you mean hidden?"),
    Case("name/unknown-function", HEAD + """block F(x: [T, D]) -> [T, D] {
  return rleu(x)
}
""", 4, 10, "unknown function rleu", "did you mean relu?"),
    Case("name/unknown-block-in-use", HEAD + """block F(x: [T, D]) -> [T, D] {
  use g = Gg
  return g(x)
}
""", 4, 11, "unknown block Gg"),
    Case("name/reserved-param", HEAD + """block F(x: [T, D]) -> [T, D] {
  param forward: [D] init zeros
  return x + forward
}
""", 4, 9, "forward is a reserved name"),
    Case("name/reserved-tap", HEAD + """block F(x: [T, D]) -> [T, D] {
  tap type = relu(x)
  return x
}
""", 4, 7, "type is a reserved name"),
    Case("name/reserved-instance", HEAD + """block G(x: [T, D]) -> [T, D] {
  return x
}
block F(x: [T, D]) -> [T, D] {
  use eval = G
  return eval(x)
}
""", 7, 7, "eval is a reserved name"),
    Case("name/axis-name-means-something-in-sympy", """axis lambda = 4
block F(x: [lambda]) -> [lambda] {
  return x
}
""", 1, 6, "lambda cannot name an axis"),
    Case("name/value-named-like-an-axis", HEAD + """block F(x: [T, D]) -> [T, D] {
  D = relu(x)
  return x
}
""", 4, 3, "D is an axis", "lowercase"),
    Case("name/block-named-like-an-op", HEAD + """block relu(x: [T, D]) -> [T, D] {
  return x
}
""", 3, 7, "name of a built-in op"),
    Case("name/instance-used-as-value", LIN + """block F(x: [T, D]) -> [T, E] {
  use l = Lin
  return l
}
""", 9, 10, "l is a block instance; call it"),
    # ------------------------------------------------------------------ duplicates
    Case("dup/block", HEAD + """block F(x: [T, D]) -> [T, D] {
  return x
}
block F(x: [T, D]) -> [T, D] {
  return x
}
""", 6, 7, "block F is defined twice (first at line 3)", "rename one"),
    Case("dup/param", HEAD + """block F(x: [T, D]) -> [T, D] {
  param b: [D] init zeros
  param b: [D] init zeros
  return x + b
}
""", 5, 9, "b is already defined", "its own name"),
    Case("dup/axis-with-another-size", """axis D = 4
axis D = 5
block F(x: [D]) -> [D] {
  return x
}
""", 2, 6, "axis D is declared twice (first at line 1)", "D'"),
    Case("dup/carry", HEAD + """block F(x: [T, D]) -> [T, D] {
  return scan t over T carry (h: [D] = 0, h: [D] = 0) {
    h = h + x[t]
    emit h
  }
}
""", 4, 43, "carry h is declared twice", "its own name"),
    Case("dup/tap", HEAD + """block F(x: [T, D]) -> [T, D] {
  tap a = relu(x)
  tap a = tanh(x)
  return x
}
""", 5, 7, "tap a is defined twice", "its own name"),
    Case("dup/instance", LIN + """block F(x: [T, D]) -> [T, E] {
  use l = Lin
  use l = Lin
  return l(x)
}
""", 9, 7, "l is already defined"),
    Case("dup/input", HEAD + """block F(x: [T, D], x: [T, D]) -> [T, D] {
  return x
}
""", 3, 20, "two inputs named x"),
    Case("dup/axis-in-one-type", HEAD + """block F(x: [T, D, D]) -> [T, D] {
  return x
}
""", 3, 19, "axis D appears twice in one type", "D'"),
    # ------------------------------------------------------------------ contraction
    Case("contract/axis-on-one-side-only", HEAD + """block F(x: [T, D]) -> [T, E] {
  param W: [D, E] init normal(0, 1)
  return x @[E] W
}
""", 5, 14, "cannot contract axis E: it is not on the left operand", "rename"),
    Case("contract/ambiguous-no-shared-axis", HEAD + """block F(x: [T, D]) -> [T, D, E] {
  param W: [E] init normal(0, 1)
  return x @ W
}
""", 5, 12, "ambiguous contraction: the operands share no axis", "a @[D] b"),
    Case("contract/ambiguous-two-shared-axes", HEAD + """block F(x: [T, D]) -> [T] {
  param W: [T, D] init normal(0, 1)
  return x @ W
}
""", 5, 12, "ambiguous contraction: the operands share [T, D]", "a @[D] b"),
    Case("contract/number-operand", HEAD + """block F(x: [T, D]) -> [T, D] {
  return x @ 2
}
""", 4, 12, "right operand of @ is a number"),
    # ------------------------------------------------------------------ sizes
    Case("size/rename-to-axis-of-another-size", HEAD + """block F(x: [T, D]) -> [T, E] {
  return x[D as E]
}
""", 4, 12, "axis E has size 3 here, but renamed from D is 4", "line 1"),
    Case("size/reshape-product-differs", """axis D = 4, H = 3, K = 2
axis T
block F(x: [T, D]) -> [T, H, K] {
  return x[D -> H K]
}
""", 4, 12, "axis D has size 4 here, but the product of H K is 6"),
    Case("size/concat-disagrees-with-declared", HEAD + """axis D2 = 9
block F(x: [T, D]) -> [T, D2] {
  return concat(x, x, over = D -> D2)
}
""", 5, 10, "axis D2 has size 9 here, but the sum of the concatenated sizes is 8", "line 3"),
    Case("size/derived-does-not-divide", """axis D = 10, H = 4
axis K = D / H
block F(x: [K]) -> [K] {
  return x
}
""", 2, 10, "axis K has size 5/2, which is not a whole number", "divide"),
    Case("size/derived-does-not-divide-after-binding", """axis D, H = 4
axis K = D / H
block F(x: [K]) -> [K] {
  return x
}
""", 2, 10, "axis K has size 5/2, which is not a whole number", None, {"D": 10}),
    Case("size/derived-bound-to-another-size", """axis D = 8, H = 2
axis K = D / H
block F(x: [K]) -> [K] {
  return x
}
""", 2, 10, "axis K is declared with size 4 but bound to 3", None, {"K": 3}),
    Case("size/not-an-integer", """axis D = 2.5
block F(x: [D]) -> [D] {
  return x
}
""", 1, 10, "not a whole number"),
    Case("size/negative", """axis D = 2 - 5
block F(x: [D]) -> [D] {
  return x
}
""", 1, 10, "sizes must be positive"),
    Case("size/bound-negative", """axis D
block F(x: [D]) -> [D] {
  return x
}
""", 1, 6, "axis D must be bound to a positive integer, got -3", None, {"D": -3}),
    Case("size/bound-not-an-integer", """axis D
block F(x: [D]) -> [D] {
  return x
}
""", 1, 6, "axis D must be bound to a positive integer, got 2.5", None, {"D": 2.5}),
    # A binding names no place in the spec: the error has no line, and says which axes there are.
    Case("size/binding-a-non-existent-axis", """axis D
block F(x: [D]) -> [D] {
  return x
}
""", None, None, "declares no axis Q", "axes: D", {"Q": 3}),
    Case("size/index-out-of-range", HEAD + """block F(x: [T, D]) -> [T] {
  return x[D = 7]
}
""", 4, 12, "index 7 is out of range for axis D of size 4", "0 to 3"),
    Case("size/prime-in-axis-declaration", """axis D' = 4
block F(x: [D]) -> [D] {
  return x
}
""", 1, 6, "axis D' is a prime"),
    Case("size/division-by-zero", HEAD + """block F(x: [T, D]) -> [T, D] {
  return x * (1 / 0)
}
""", 4, 15, "division by zero"),
    Case("size/inferred-from-itself-by-concat", """axis D
block F(x: [D]) -> [D] {
  return concat(x, x, over = D -> D)
}
""", 3, 10, "axis D would have size 2*D (the sum of the concatenated sizes), which depends on D itself"),
    Case("size/inferred-from-itself-by-reshape", """axis D, K = 2
block F(x: [D]) -> [D, K] {
  return x[D -> D K]
}
""", 3, 12, "which depends on D itself", "two different axes"),
    # ------------------------------------------------------------------ params
    Case("param/without-init", HEAD + """block F(x: [T, D]) -> [T, D] {
  param b: [D]
  return x + b
}
""", 4, 9, "param b needs an initialiser", "init normal"),
    Case("param/init-with-extra-axes", HEAD + """block F(x: [T, D]) -> [T, D] {
  param b: [D] init idx(E)
  return x + b
}
""", 4, 16, "E not on the parameter"),
    Case("param/init-wrong-arity", HEAD + """block F(x: [T, D]) -> [T, D] {
  param b: [D] init normal(0)
  return x + b
}
""", 4, 21, "normal takes 2 arguments, got 1"),
    Case("param/reassigned", HEAD + """block F(x: [T, D]) -> [T, D] {
  param b: [D] init zeros
  b = relu(x)
  return b
}
""", 5, 3, "b is a param of this block and cannot be reassigned"),
    # ------------------------------------------------------------------ blocks and calls
    Case("block/cycle-through-another", HEAD + """block A(x: [T, D]) -> [T, D] {
  use b = B
  return b(x)
}
block B(x: [T, D]) -> [T, D] {
  use a = A
  return a(x)
}
""", 4, 11, "blocks call each other in a cycle: B → A → B", "cannot contain itself"),
    Case("block/uses-itself", HEAD + """block A(x: [T, D]) -> [T, D] {
  use me = A
  return me(x)
}
""", 4, 12, "cycle: A → A"),
    Case("block/with-params-called-without-use", LIN + """block F(x: [T, D]) -> [T, E] {
  return Lin(x)
}
""", 8, 10, "block Lin has parameters: instantiate it with use lin = Lin", "shares them"),
    Case("block/wrong-number-of-inputs", LIN + """block F(x: [T, D]) -> [T, E] {
  use l = Lin
  return l(x, x)
}
""", 9, 10, "Lin takes 1 inputs, got 2"),
    Case("block/input-missing-an-axis", LIN + """block F(x: [T, E]) -> [T, E] {
  use l = Lin
  return l(x)
}
""", 9, 10, "Lin expects x: [..., D] but got a wire with axes [..., T, E] (missing D)", "x[A as B]"),
    Case("block/times-n-types-differ", LIN + """block F(x: [T, D]) -> [T, E] {
  use l = Lin × 3
  return l(x)
}
""", 8, 15, "Lin × 3 chains the block into itself"),
    Case("block/times-zero", HEAD + """block G(x: [T, D]) -> [T, D] {
  return relu(x)
}
block F(x: [T, D]) -> [T, D] {
  use g = G × 0
  return g(x)
}
""", 7, 13, "a repeat count must be at least 1"),
    Case("block/axis-parameter-missing", GEN + """block F(x: [T, D]) -> [T, D] {
  use g = G
  return g(x)
}
""", 7, 11, "block G needs axis argument A", "G[A = SomeAxis]"),
    Case("block/axis-parameter-given-a-number", GEN + """block F(x: [T, D]) -> [T, D] {
  use g = G[3]
  return g(x)
}
""", 7, 13, "A of block G is an axis parameter: pass an axis name"),
    Case("block/axis-parameter-unknown-axis", GEN + """block F(x: [T, D]) -> [T, D] {
  use g = G[A = Q]
  return g(x)
}
""", 7, 17, "unknown axis Q"),
    Case("block/unknown-bracket-parameter", GEN + """block F(x: [T, D]) -> [T, D] {
  use g = G[A = D, B = 2]
  return g(x)
}
""", 7, 24, "block G has no parameter B"),
    Case("block/keyword-input", LIN + """block F(x: [T, D]) -> [T, E] {
  use l = Lin
  return l(x = x)
}
""", 9, 10, "block inputs are positional"),
    Case("block/none-defined", HEAD, 1, 1, "the spec defines no block", "add block"),
    # ------------------------------------------------------------------ returns
    Case("return/extra-axis", HEAD + """block F(x: [T, D]) -> [T] {
  return x
}
""", 4, 10, "wrong return type: the block declares [..., T] but returns a wire with axes [..., T, D]",
         "contract or reduce"),
    Case("return/missing-axis", HEAD + """block F(x: [T, D]) -> [T, D, E] {
  return x
}
""", 4, 10, "declares [..., T, D, E] but returns a wire with axes [..., T, D]"),
    Case("return/second-output-wrong", HEAD + """block F(x: [T, D]) -> [T, D], [T] {
  return x, x
}
""", 4, 13, "wrong return type"),
    Case("return/wrong-count", HEAD + """block F(x: [T, D]) -> [T, D], [T, D] {
  return x
}
""", 4, 3, "block F declares 2 outputs but returns 1"),
    Case("return/missing", HEAD + """block F(x: [T, D]) -> [T, D] {
  y = relu(x)
}
""", 3, 7, "block F does not return anything", "return"),
    Case("return/statement-after", HEAD + """block F(x: [T, D]) -> [T, D] {
  return x
  y = x
}
""", 5, 3, "statement after return", "last statement"),
    Case("return/unpack-count", HEAD + """block F(x: [T, D]) -> [T, D] {
  a, b = relu(x)
  return a
}
""", 4, 3, "2 names on the left but the expression gives 1 values"),
    # ------------------------------------------------------------------ ops
    Case("op/wrong-arity", HEAD + """block F(x: [T, D]) -> [T, D] {
  return relu(x, x)
}
""", 4, 10, "relu takes 1 inputs, got 2", "relu: max(x, 0)"),
    Case("op/unknown-option", HEAD + """block F(x: [T, D]) -> [T, D] {
  return softmax(x, over = D, dim = 1)
}
""", 4, 31, "softmax has no option dim", "its options: over"),
    Case("op/missing-required-option", HEAD + """block F(x: [T, D]) -> [T, D] {
  return softmax(x)
}
""", 4, 10, "softmax needs over = ..."),
    Case("op/over-axis-not-on-wire", HEAD + """block F(x: [T, D]) -> [T, D] {
  return softmax(x, over = E)
}
""", 4, 28, "axis E is not on this wire, whose axes are [T, D]", "over = ..."),
    Case("op/split-over-axis-not-on-wire", """axis D = 4, D2 = 8
axis T
block F(x: [T, D2]) -> [T, D] {
  a, b = split(x, over = D -> [D, D'])
  return a
}
""", 4, 26, "axis D is not on this wire"),
    Case("op/rename-onto-an-axis-already-there", HEAD + """block F(x: [T, D, E]) -> [T, D, E] {
  return x[D as E]
}
""", 4, 12, "axis E is already on this wire", "prime"),
    Case("op/annotation-with-other-axes", HEAD + """block F(x: [T, D]) -> [T, D] {
  return x : [T, E]
}
""", 4, 14, "this wire has axes [T, D], not [T, E]"),
    Case("op/initialiser-outside-init", HEAD + """block F(x: [T, D]) -> [T, D] {
  return x + zeros()
}
""", 4, 14, "zeros(...) is an initialiser"),
    # ------------------------------------------------------------------ loops
    Case("scan/without-carry", HEAD + """block F(x: [T, D]) -> [T, D] {
  return scan t over T {
    emit x[t]
  }
}
""", 4, 10, "scan without carry", "carry (h: [D] = 0)"),
    Case("scan/without-emit", HEAD + """block F(x: [T, D]) -> [T, D] {
  return scan t over T carry (h: [D] = 0) {
    h = h + x[t]
  }
}
""", 4, 10, "this scan emits nothing", "emit h"),
    Case("scan/emit-twice", HEAD + """block F(x: [T, D]) -> [T, D] {
  return scan t over T carry (h: [D] = 0) {
    emit h
    emit h
  }
}
""", 6, 5, "a scan emits once per step"),
    Case("scan/emit-outside", HEAD + """block F(x: [T, D]) -> [T, D] {
  emit x
  return x
}
""", 4, 3, "emit outside a scan", "a block uses return"),
    Case("scan/return-inside", HEAD + """block F(x: [T, D]) -> [T, D] {
  return scan t over T carry (h: [D] = 0) {
    h = h + x[t]
    return h
  }
}
""", 6, 5, "return inside a loop body"),
    Case("scan/over-unknown-axis", HEAD + """block F(x: [T, D]) -> [T, D] {
  return scan t over Q carry (h: [D] = 0) {
    emit h
  }
}
""", 4, 22, "unknown axis Q"),
    Case("scan/carry-changes-axes", HEAD + """block F(x: [T, D]) -> [T, D] {
  return scan t over T carry (h: [D] = 0) {
    h = sum(h, over = D)
    emit x[t]
  }
}
""", 5, 9, "h enters the loop as [..., D] but leaves the step as [...]", "keep its axes"),
    Case("scan/index-a-wire-without-the-axis", HEAD + """block F(x: [T, D], y: [D]) -> [T, D] {
  return scan t over T carry (h: [D] = 0) {
    h = h + y[t]
    emit h
  }
}
""", 5, 15, "this wire has no axis T to index with t"),
    Case("repeat/count-not-a-constant", HEAD + """block F(x: [T, D]) -> [T, D] {
  repeat x { x = relu(x) }
  return x
}
""", 4, 10, "a repeat count must be a whole number known when the spec is checked"),
    Case("repeat/body-changes-nothing", HEAD + """block F(x: [T, D]) -> [T, D] {
  repeat 2 { y = relu(x) }
  return x
}
""", 4, 3, "this repeat body changes nothing outside it", "x = layer(x)"),
    Case("halting/without-halt", HEAD + """block F(x: [T, D]) -> [T, D] {
  y, p = halting n max 4 mix graves carry (s: [T, D] = x) {
    s = relu(s)
  }
  return y
}
""", 4, 10, "this halting loop never says when to halt", "halt p"),
    Case("halting/halt-outside", HEAD + """block F(x: [T, D]) -> [T, D] {
  halt x
  return x
}
""", 4, 3, "halt outside a halting loop"),
    Case("halting/no-steps", HEAD + """block F(x: [T, D]) -> [T, D] {
  y, p = halting n max 0 mix graves carry (s: [T, D] = x) {
    halt sum(s, over = D)
  }
  return y
}
""", 4, 24, "a halting loop needs at least one step"),
    Case("halting/eps-out-of-range", HEAD + """block F(x: [T, D]) -> [T, D] {
  y, p = halting n max 4 eps 2 mix graves carry (s: [T, D] = x) {
    s = relu(s)
    halt sum(s, over = D)
  }
  return y
}
""", 4, 26, "eps must be a number in (0, 1)"),
    Case("halting/mix-not-named", HEAD + """block F(x: [T, D]) -> [T, D] {
  y, p = halting n max 4 carry (s: [T, D] = x) {
    s = relu(s)
    halt sigmoid(sum(s, over = D))
  }
  return y
}
""", 4, 10, "must say which ACT output it gives", "mix graves"),
    Case("halting/mix-twice", HEAD + """block F(x: [T, D]) -> [T, D] {
  y, p = halting n max 4 mix graves eps 0.1 mix interpolate carry (s: [T, D] = x) {
    s = relu(s)
    halt sigmoid(sum(s, over = D))
  }
  return y
}
""", 4, 45, "mix is given twice", "give mix once"),
    Case("halting/mix-unknown", HEAD + """block F(x: [T, D]) -> [T, D] {
  y, p = halting n max 4 mix gravs carry (s: [T, D] = x) {
    s = relu(s)
    halt sigmoid(sum(s, over = D))
  }
  return y
}
""", 4, 30, "unknown ACT output mix gravs", "did you mean graves?"),
    # ------------------------------------------------------------------ entry blocks sharing weights
    Case("entry/not-a-block", HEAD + """entry F, Gg
block F(x: [T, D]) -> [T, D] {
  return x
}
block G(x: [T, D]) -> [T, D] {
  return x
}
""", 3, 10, "entry Gg is not a block of this spec", "did you mean G?"),
    Case("entry/listed-twice", HEAD + """entry F, F
block F(x: [T, D]) -> [T, D] {
  return x
}
""", 3, 10, "entry F is listed twice", "once"),
    Case("entry/declared-twice", HEAD + """entry F
block F(x: [T, D]) -> [T, D] {
  return x
}
entry F
""", 7, 1, "a second entry declaration", "entry Train, Greedy"),
    Case("entry/weights-differ", HEAD + """entry F, G
block F(x: [D]) -> [D] {
  param W: [D, D'] init normal(0, 1)
  return (x @[D] W)[D' as D]
}
block G(x: [D]) -> [D] {
  param V: [D, D'] init normal(0, 1)
  return (x @[D] V)[D' as D]
}
""", 3, 10, "must hold the same weights to share them: G has param V [D, D'] and F has not",
         "same `use` instances and params"),
    # ------------------------------------------------------------------ listed constants
    Case("const-list/wrong-length", "axis P = 3, T\nconst c[P] = [1, 0.5]\n" + """block F(x: [T]) -> [T] {
  return x * sum(c, over = P)
}
""", 2, 15, "axis P has size 3 here, but the length of the list of constant c is 2", "make the sizes agree"),
    Case("const-list/not-a-number", HEAD + """block F(x: [T, D]) -> [T, D] {
  const c[D] = [1, 2, x, 4]
  return x * c
}
""", 4, 23, "the items of constant c must be numbers known when the spec is checked", "write numbers"),
    Case("const-list/unknown-axis", HEAD + """block F(x: [T, D]) -> [T, D] {
  const c[Q] = [1, 2]
  return x
}
""", 4, 11, "unknown axis Q"),
    Case("const-list/infinite", HEAD + """block F(x: [T, D]) -> [T, D] {
  const c[D] = [1, 2, 3, inf]
  return x * c
}
""", 4, 26, "must be finite numbers"),
    # ------------------------------------------------------------------ numbers stay float64 numbers
    Case("number/literal-out-of-range", HEAD + """block F(x: [T, D]) -> [T, D] {
  return x * 1e99999
}
""", 4, 14, "the number 1e99999 is out of range", "float64"),
    Case("number/power-out-of-range", HEAD + """block F(x: [T, D]) -> [T, D] {
  return x * D ^ -1e9
}
""", 4, 14, "this power is out of range of a float64"),
    Case("number/not-real", HEAD + """block F(x: [T, D]) -> [T, D] {
  return x * sqrt(-1)
}
""", 4, 14, "this evaluates to I, which is not a real number"),
    Case("number/size-exponent-too-large", """axis D = 4
axis K = D ^ 100
block F(x: [K]) -> [K] {
  return x
}
""", 2, 10, "an axis size may be raised to a power of at most 64"),
    Case("param/negative-std", HEAD + """block F(x: [T, D]) -> [T, D] {
  param b: [D] init normal(0, -1)
  return x + b
}
""", 4, 31, "the standard deviation of normal is negative", "std >= 0"),
    Case("param/uniform-bounds-reversed", HEAD + """block F(x: [T, D]) -> [T, D] {
  param b: [D] init uniform(1, 0)
  return x + b
}
""", 4, 29, "the lower bound is above the upper", "low <= high"),
    Case("param/infinite-std", HEAD + """block F(x: [T, D]) -> [T, D] {
  param b: [D] init normal(0, inf)
  return x + b
}
""", 4, 31, "must be finite numbers"),
    Case("param/init-beyond-float32", HEAD + """block F(x: [T, D]) -> [T, D] {
  param b: [D] init uniform(-1e300, 1)
  return x + b
}
""", 4, 29, "within float32's range", "dtype"),
    # ------------------------------------------------------------------ checks that once crashed in torch
    Case("arith/wire-divided-by-zero", HEAD + """block F(x: [T, D]) -> [T, D] {
  return x / 0
}
""", 4, 14, "division by zero", "non-zero"),
    Case("clamp/no-bounds", HEAD + """block F(x: [T, D]) -> [T, D] {
  return clamp(x)
}
""", 4, 10, "clamp needs a bound", "min = 0"),
    Case("clamp/min-above-max", HEAD + """block F(x: [T, D]) -> [T, D] {
  return clamp(x, min = 2, max = 1)
}
""", 4, 25, "clamp's min 2 is above its max 1", "swap"),
    Case("option/clamp-bound-beyond-float32", HEAD + """block F(x: [T, D]) -> [T, D] {
  return clamp(x, min = 1e300)
}
""", 4, 25, "out of float32's range", "inf is allowed"),
    Case("option/slope-beyond-float32", HEAD + """block F(x: [T, D]) -> [T, D] {
  return leaky_relu(x, slope = -1e39)
}
""", 4, 32, "out of float32's range"),
    Case("axes/repeated-in-over", HEAD + """block F(x: [T, D]) -> [T, D] {
  return sum(x, over = [D, D])
}
""", 4, 28, "axis D appears twice in over = [...]", "once"),
    Case("axes/repeated-in-reshape", HEAD + """block F(x: [T, D]) -> [T, D] {
  return x[D D -> E]
}
""", 4, 14, "axis D appears twice in one side of ->", "once"),
    Case("axes/repeated-in-contraction", HEAD + """block F(x: [T, D]) -> [T, D] {
  return x @[D, D] x
}
""", 4, 17, "axis D appears twice in @[...]", "once"),
    Case("size/dilated-conv-beyond-its-axis", """axis C = 2, C2 = 3, Y = 5, Yh, K = 3
block F(x: [C, Y]) -> [C2, Yh] {
  param W: [C2, C, K] init normal(0, 0.1)
  return conv(x, W, over = [Y] -> [Yh], kernel = [K], dilation = 4)
}
""", 4, 10, "axis Yh would have size -3 (the output size of conv along Y); a size must be at least 1", "smaller"),
    Case("size/pool-beyond-an-axis-bound-later", """axis C = 2, Y, Yh
block F(x: [C, Y]) -> [C, Yh] {
  return maxpool(x, over = [Y] -> [Yh], size = 4)
}
""", 3, 10, "axis Yh would have size 0 (the pooled size along Y)", "smaller", {"Y": 3}),
    Case("option/stride-overflows", """axis C = 2, C2 = 3, Y = 5, Yh, K = 3
block F(x: [C, Y]) -> [C2, Yh] {
  param W: [C2, C, K] init normal(0, 0.1)
  return conv(x, W, over = [Y] -> [Yh], kernel = [K], stride = 1e20)
}
""", 4, 64, "stride must be at most 2^31-1"),
    Case("option/infinite-stride", """axis C = 2, Y, Yh
block F(x: [C, Y]) -> [C, Yh] {
  return avgpool(x, over = [Y] -> [Yh], size = 4, stride = inf)
}
""", 3, 60, "stride must be a whole number"),
    # ------------------------------------------------------------------ integer wires
    Case("int/float-op-on-ids", HEAD + """block F(x: [T, D], ids: [T] int) -> [T] {
  return relu(ids)
}
""", 4, 10, 'relu needs a float wire, but this one is an integer wire [..', 'convert it'),
    Case("int/mixed-arithmetic", HEAD + """block F(x: [T, D], ids: [T] int) -> [T, D] {
  return x + ids
}
""", 4, 10, 'add mixes an integer wire with a float wire', 'convert the integer wire first'),
    Case("int/fractional-literal", HEAD + """block F(ids: [T] int) -> [T] int {
  return ids * 0.5
}
""", 4, 10, 'mul of an integer wire with the fractional number 1/2', 'convert the integer wire first'),
    Case("int/lookup-by-float", HEAD + """block F(x: [T, D]) -> [T, E] {
  param Emb: [D, E] init normal(0, 1)
  return Emb[D = x[D = 0]]
}
""", 5, 14, 'the index of x[D = ...] must be an integer wire, but this on', 'declare the input an integer w'),
    Case("int/lookup-axis-on-index", HEAD + """block F(ids: [D] int) -> [D, E] {
  param Emb: [D, E] init normal(0, 1)
  return Emb[D = ids]
}
""", 5, 14, 'the index wire already has axis D, the axis it looks up alon', "rename the index wire's axis"),
    Case("int/lookup-missing-axis", HEAD + """block F(ids: [T] int) -> [T, E] {
  param Emb: [D, E] init normal(0, 1)
  return Emb[T = ids]
}
""", 5, 14, 'axis T is not on this wire, whose axes are [D, E]', "look up along one of the wire'"),
    Case("int/one-hot-of-float", HEAD + """block F(x: [T]) -> [T, E] {
  return one_hot(x, over = E)
}
""", 4, 10, 'the input of one_hot must be an integer wire, but this one i', 'declare the input an integer w'),
    Case("int/return-dtype", HEAD + """block F(ids: [T] int) -> [T] {
  return ids
}
""", 4, 10, 'wrong return type: the block declares a float wire [..., T] ', 'declare it'),
    Case("int/argmax-of-bool", HEAD + """block F(x: [T, D]) -> [T] int {
  return argmax(x > 0, over = D)
}
""", 4, 10, 'argmax/argmin of a boolean wire', 'convert it'),
    Case("int/where-float-condition", HEAD + """block F(x: [T, D]) -> [T, D] {
  return where(x, x, 0)
}
""", 4, 10, 'the condition of where is a float wire, not a comparison', 'write a comparison'),
    Case("int/block-port-dtype", HEAD + """block G(ids: [T] int) -> [T, E] { return one_hot(ids, over = E) }
block F(x: [T]) -> [T, E] {
  return G(x)
}
""", 5, 10, 'G expects ids to be int but got a float wire', 'declare the wire int where it '),
    Case("extremes/int-with-float", HEAD + """block F(x: [T, D], ids: [T] int) -> [T, D] {
  return max(x, ids)
}
""", 4, 10, "maximum mixes an integer wire with a float wire", "as_float"),
    Case("extremes/three-inputs", HEAD + """block F(x: [T, D]) -> [T, D] {
  return max(x, x, x)
}
""", 4, 10, "max takes 1 inputs, got 3"),
    Case("bool/where-literal-follows-boolean-branch", HEAD + """block F(x: [T, D]) -> [T, D] {
  return where(x > 0, x < 1, 0)
}
""", 4, 10, "wrong return type: the block declares a float wire", "-> [T, D] bool"),
    Case("int/where-literal-follows-integer-branch", HEAD + """block F(x: [T], ids: [T] int) -> [T] {
  return where(x > 0, ids, 0.5)
}
""", 4, 10, "where of an integer wire with the fractional number 1/2", "as_float"),
    Case('conv/group-axis-not-on-input', HEAD + 'axis K = 3, C = 2\nblock F(x: [C, T]) -> [E, T] {\n  param W: [E, C, K] init normal(0, 1)\n  return conv(x, W, over = T, kernel = [K], padding = 1, groups = [D])\n}\n', 6, 67, 'group axis D is not on the input, whose axes are [C, T]', 'a group axis is on both: split'),
    Case('conv/per-axis-list-length', HEAD + 'axis K = 3, C = 2\nblock F(x: [C, T]) -> [E, T] {\n  param W: [E, C, K] init normal(0, 1)\n  return conv(x, W, over = T, kernel = [K], padding = [1, 1])\n}\n', 6, 55, 'padding lists 2 numbers but over names 1 axes', 'one number for every axis (pad'),
    Case('conv/causal-over-two-axes', HEAD + "axis K = 3, C = 2, Y, X\nblock F(x: [C, Y, X]) -> [E, Y, X] {\n  param W: [E, C, K, K'] init normal(0, 1)\n  return conv(x, W, over = [Y, X], kernel = [K, K'], padding = causal)\n}\n", 6, 64, 'causal padding is for a convolution over one axis, this one ', 'pad each axis by a number: pad'),
    Case('conv/unknown-padding-mode', HEAD + 'axis K = 3, C = 2\nblock F(x: [C, T]) -> [E, T] {\n  param W: [E, C, K] init normal(0, 1)\n  return conv(x, W, over = T, kernel = [K], padding = 1, padding_mode = mirror)\n}\n', 6, 73, "mirror is not one of this option's words", 'write one of: zeros, reflect, '),
    Case('conv/reflect-padding-too-long', HEAD + 'axis K = 3, C = 2, S = 2\nblock F(x: [C, S]) -> [E, S] {\n  param W: [E, C, K] init normal(0, 1)\n  return conv(x, W, over = S, kernel = [K], padding = 2, padding_mode = reflect)\n}\n', 6, 73, 'reflect padding by 2 needs axis S to have more than 2 positi', 'pad less, make the axis larger'),
    Case('upsample/align-corners-with-nearest', HEAD + "block F(x: [D, T]) -> [D, T'] {\n  return upsample(x, over = T -> T', align_corners = true)\n}\n", 4, 54, 'align_corners is an option of linear interpolation, not of n', 'add mode = linear (or bilinear'),
    Case('upsample/bilinear-over-one-axis', HEAD + "block F(x: [D, T]) -> [D, T'] {\n  return upsample(x, over = T -> T', mode = bilinear)\n}\n", 4, 45, 'bilinear interpolates over 2 axes, over names 1', 'mode = linear interpolates ove'),
    Case('pool/ceil-mode-is-a-word', HEAD + "block F(x: [D, T]) -> [D, T'] {\n  return maxpool(x, over = T -> T', ceil_mode = 1)\n}\n", 4, 37, 'expected a word', 'write one of: true, false'),
    Case('pool/ceil-mode-unknown-word', HEAD + "block F(x: [D, T]) -> [D, T'] {\n  return maxpool(x, over = T -> T', ceil_mode = yes)\n}\n", 4, 49, "yes is not one of this option's words", 'write one of: true, false'),
    Case('conv/transpose-has-no-groups', HEAD + 'axis K = 3, C = 2\nblock F(x: [C, T]) -> [E, T] {\n  param W: [E, C, K] init normal(0, 1)\n  return conv_transpose(x, W, over = T, kernel = [K], padding = 1, groups = [C])\n}\n', 6, 68, 'conv_transpose has no option groups', 'its options: over, kernel, str'),
    Case('slice/needs-a-name', HEAD + 'block F(x: [T, D]) -> [T, D] {\n  return x[T = 1:]\n}\n', 4, 17, "name the slice's axis: x[T = ... as S]", 'a slice is a new axis with its'),
    Case('slice/stop-out-of-range', HEAD + 'axis S\nblock F(x: [D]) -> [S] {\n  return x[D = 1:5 as S]\n}\n', 5, 12, 'the stop 5 is out of range for axis D of size 4', 'bounds run from 0 to the axis '),
    Case('slice/empty', HEAD + 'axis S\nblock F(x: [D]) -> [S] {\n  return x[D = -1:-2 as S]\n}\n', 5, 12, 'the slice 3:2 is empty for axis D of size 4', 'bounds run from 0 to the axis '),
    Case('slice/scan-index-bound', HEAD + 'axis S\nblock F(x: [T, D]) -> [T, D] {\n  return scan t over T carry (h: [D] = 0) {\n    h = h + sum(x[T = t: as S], over = S)\n    emit h\n  }\n}\n', 6, 23, 'the start of a slice must be known when the spec is checked ', 'slice by numbers or sizes: x[T'),
    Case("int/unknown-dtype", HEAD + """block F(ids: [T] integer) -> [T] {
  return ids
}
""", 3, 18, "unexpected 'integer'", "expected ')', ',', int or bool"),
    # ------------------------------------------------------------------ randomness
    Case("random/dropout-p-one", HEAD + """block F(x: [T, D]) -> [T, D] {
  return dropout(x, p = 1)
}
""", 4, 25, "dropout's p is the probability of zeroing an element: 0 <= p < 1, got 1", "dropout(x, p = 0.1)"),
    Case("random/dropout-p-negative", HEAD + """block F(x: [T, D]) -> [T, D] {
  return dropout(x, p = -0.1)
}
""", 4, 25, "0 <= p < 1, got -0.1", "dropout(x, p = 0.1)"),
    Case("random/dropout-p-positional", HEAD + """block F(x: [T, D]) -> [T, D] {
  return dropout(x, 0.1)
}
""", 4, 10, "dropout takes 1 inputs, got 2", "dropout(x, p = 0.1)"),
    Case("random/dropout-without-p", HEAD + """block F(x: [T, D]) -> [T, D] {
  return dropout(x)
}
""", 4, 10, "dropout needs p = ...", "dropout(x, p = 0.1)"),
    Case("random/normal-of-numbers", HEAD + """block F(x: [T, D]) -> [T, D] {
  return x + normal(0, 1)
}
""", 4, 14, "a draw takes its shape from its operands, and these are numbers", "normal(0 * x, 1)"),
    Case("random/categorical-axis-missing", HEAD + """block F(x: [T, D]) -> [T] int {
  return categorical(softmax(x, over = D), over = E)
}
""", 4, 51, "axis E is not on this wire, whose axes are [T, D]", "categorical(p, over = A)"),
    Case("random/categorical-of-ids", HEAD + """block F(ids: [T, D] int) -> [T] int {
  return categorical(ids, over = D)
}
""", 4, 10, "categorical samples from probabilities, a float wire", "softmax(logits"),
    Case("random/categorical-is-int", HEAD + """block F(x: [T, D]) -> [T] {
  return categorical(softmax(x, over = D), over = D) * 2.5
}
""", 4, 10, "mul of an integer wire with the fractional number", "as_float"),
    Case("random/scan-via-parallel", HEAD + """block F(x: [T, D]) -> [T, D] {
  return scan t over T carry (h: [D] = 0) via scan {
    h = 0.5 * h + dropout(x[T = t], p = 0.1)
    emit h
  }
}
""", 4, 10, "this scan draws random numbers, so it cannot run via scan", "drop the via"),
    # ------------------------------------------------------------------ batch statistics
    Case("stats/batchnorm-param-statistic", HEAD + """block F(x: [T, D]) -> [T, D] {
  param m: [D] init zeros
  buffer v: [D] init ones
  return batchnorm(x, m, v, over = T)
}
""", 6, 10, "batchnorm's running_mean (input 2) must be a buffer: it is updated in training", "buffer running_mean: [C]"),
    Case("stats/batchnorm-statistic-axes", HEAD + """block F(x: [T, D]) -> [T, D] {
  buffer m: [T] init zeros
  buffer v: [D] init ones
  return batchnorm(x, m, v, over = T)
}
""", 6, 10, "batchnorm's running_mean must be a float buffer with the axes [D], got [T]", "buffer running_mean: [D] init zeros"),
    Case("stats/batchnorm-momentum", HEAD + """block F(x: [T, D]) -> [T, D] {
  buffer m: [D] init zeros
  buffer v: [D] init ones
  return batchnorm(x, m, v, over = T, momentum = 0)
}
""", 6, 50, "batchnorm's momentum must be in (0, 1], got 0", "momentum = 0.1"),
    Case("stats/batchnorm-over-missing", HEAD + """block F(x: [T, D]) -> [T, D] {
  buffer m: [D] init zeros
  buffer v: [D] init ones
  return batchnorm(x, m, v, over = E)
}
""", 6, 36, "axis E is not on this wire, whose axes are [T, D]", "the lifted batch is always included"),
    Case("stats/batchnorm-no-batch", HEAD + """block F(x: [T, D]) -> [T, D] {
  param W: [D] init normal(0, 1)
  buffer m: [D] init zeros
  buffer v: [D] init ones
  return x + batchnorm(W, m, v)
}
""", 7, 14, "batchnorm of a wire that is not lifted, over no axis", "batchnorm(x, mean, var, over = [H, W])"),
    Case("stats/batchnorm-scan-via-parallel", HEAD + """block F(x: [T, D]) -> [T, D] {
  buffer m: [D] init zeros
  buffer v: [D] init ones
  return scan t over T carry (h: [D] = 0) via scan {
    h = 0.5 * h + batchnorm(x[T = t], m, v)
    emit h
  }
}
""", 6, 10, "this scan updates running statistics, so it cannot run via scan", "drop the via"),
    # ------------------------------------------------------------------ Python is not the language
    Case("python/import", "import os\n", 1, 1, "unexpected 'import'", "not Python"),
    Case("python/dunder-import-call", HEAD + """block F(x: [T, D]) -> [T, D] {
  return __import__('os').system('true')
}
""", 4, 21, "unexpected character", "not Python"),
]


def _raise(case: Case) -> NcdError:
    with pytest.raises(NcdError) as info:
        ncd.check(case.source, **case.sizes)
    return info.value


def test_the_corpus_is_large_and_ids_are_unique():
    assert len(CASES) >= 45
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_error_points_at_the_token_at_fault(case: Case):
    exc = _raise(case)
    assert case.message in exc.message
    assert (exc.line, exc.col) == (case.line, case.col), str(exc)
    if case.hint is not None:
        assert exc.hint is not None and case.hint in exc.hint, exc.hint
    text = str(exc)
    if case.line is None:
        assert text.startswith(f"<spec>: {exc.message}")
        return
    # file:line:col: message, the source line, then a caret under the column.
    lines = text.splitlines()
    assert lines[0] == f"<spec>:{case.line}:{case.col}: {exc.message}"
    source_line = case.source.splitlines()[case.line - 1]
    assert lines[1] == "    " + source_line
    assert lines[2] == "    " + " " * (case.col - 1) + "^"
    if exc.hint:
        assert lines[-1] == f"hint: {exc.hint}"


def test_error_names_the_file(tmp_path):
    spec = tmp_path / "broken.ncd"
    spec.write_text(HEAD + "block F(x: [T, D]) -> [T, D] {\n  return hiden\n}\n", encoding="utf-8")
    with pytest.raises(NcdError) as info:
        ncd.check(str(spec))
    assert str(info.value).startswith(f"{spec}:4:10: unknown name hiden")
    assert info.value.to_json()["line"] == 4


def test_missing_spec_file_is_an_ncd_error(tmp_path):
    with pytest.raises(NcdError, match="no such spec file"):
        ncd.check(str(tmp_path / "absent.ncd"))


def test_load_reports_errors_like_check():
    case = next(c for c in CASES if c.id == "contract/ambiguous-two-shared-axes")
    with pytest.raises(NcdError) as info:
        ncd.load(case.source)
    assert (info.value.line, info.value.col) == (case.line, case.col)


def test_free_axis_of_a_weight_must_be_bound_to_load():
    source = HEAD + "axis F\nblock G(x: [T, D]) -> [T, F] {\n  param W: [D, F] init normal(0, 1)\n  return x @[D] W\n}\n"
    ncd.check(source)
    with pytest.raises(NcdError) as info:
        ncd.load(source)
    assert (info.value.line, info.value.col) == (5, 9)
    assert "axis F" in info.value.message


# ---------------------------------------------------------------------- files and lines
def test_a_file_that_is_not_utf8_is_located_at_its_first_bad_byte(tmp_path):
    spec = tmp_path / "latin1.ncd"
    spec.write_bytes(HEAD.encode() + b"# caf\xe9\nblock F(x: [T, D]) -> [T, D] {\n  return x\n}\n")
    with pytest.raises(NcdError) as info:
        ncd.check(str(spec))
    assert (info.value.line, info.value.col) == (3, 6)
    assert "not UTF-8" in info.value.message and "0xe9" in info.value.message
    assert "UTF-8" in info.value.hint
    assert str(info.value).startswith(f"{spec}:3:6: ")


def test_a_byte_order_mark_is_skipped(tmp_path):
    text = HEAD + "block F(x: [T, D]) -> [T, D] {\n  return hiden\n}\n"
    spec = tmp_path / "bom.ncd"
    spec.write_bytes(b"\xef\xbb\xbf" + text.replace("hiden", "x").encode())
    assert ncd.check(str(spec)).entry == "F"
    with pytest.raises(NcdError) as info:  # spec text with a BOM, given directly: same columns
        ncd.check("\ufeff" + text)
    assert (info.value.line, info.value.col) == (4, 10)


@pytest.mark.parametrize("separator", ["\f", "\u2028", "\v", "\x1c", "\x85", "\r"],
                         ids=["form-feed", "line-separator", "vertical-tab", "file-separator", "next-line", "cr"])
def test_lines_are_counted_at_newlines_only(separator):
    """Lark counts lines at \\n; a form feed or U+2028 inside a comment does not move the quoted line."""
    source = HEAD + f"# a{separator}b\nblock F(x: [T, D]) -> [T, D] {{\n  return hiden\n}}\n"
    with pytest.raises(NcdError) as info:
        ncd.check(source)
    assert (info.value.line, info.value.col) == (5, 10)
    lines = str(info.value).split("\n")
    assert lines[1] == "      return hiden" and lines[2] == "    " + " " * 9 + "^"


def test_control_characters_in_a_quoted_line_are_escaped():
    with pytest.raises(NcdError) as info:
        ncd.check(HEAD + "block F(x: [T, D]) -> [T, D] {\n  return \x1b[2Jhiden\n}\n")
    lines = str(info.value).split("\n")
    assert "\x1b" not in str(info.value)
    assert lines[1] == "      return \\x1b[2Jhiden"  # the lexer stops at the escape byte: the caret is under it
    assert lines[2].index("^") == lines[1].index("\\x1b")


def test_a_path_no_file_can_have_is_an_ncd_error():
    for name in ("x" * 5000, "a\0b", "a\0b.ncd"):
        with pytest.raises(NcdError, match="no such spec file"):
            ncd.check(name)


# ---------------------------------------------------------------------- call time
RELU = HEAD + "block F(x: [T, D]) -> [T, D] {\n  return relu(x)\n}\n"


@pytest.mark.parametrize("inputs, message", [
    ((torch.randn(2, 5, 3),), "axis D has size 3 but the spec binds it to 4"),
    ((torch.randn(4),), "input x has 1 dims but its axes are [T, D]"),
    (("not a tensor",), "input x must be a tensor"),
    ((torch.randn(5, 4), torch.randn(5, 4)), "takes 1 inputs"),
    ((torch.ones(2, 5, 4, dtype=torch.int64),), "input x [T, D] must be a floating-point tensor, got torch.int64 "
                                                "of shape (2, 5, 4)"),
    ((torch.ones(5, 4, dtype=torch.bool),), "must be a floating-point tensor, got torch.bool"),
    ((torch.ones(5, 4, dtype=torch.complex64),), "must be a floating-point tensor, got torch.complex64"),
], ids=["wrong-size", "too-few-dims", "not-a-tensor", "too-many-inputs", "int-tensor", "bool-tensor", "complex"])
def test_wrong_input_at_call_time_is_an_ncd_error(inputs, message):
    module = ncd.load(RELU)
    module(torch.randn(2, 5, 4))  # the right shape works, with a lifted batch axis
    with pytest.raises(NcdError) as info:
        module(*inputs)
    assert message in info.value.message


def test_an_input_of_another_float_dtype_than_the_weights_is_an_ncd_error():
    module = ncd.load(LIN, T=5)
    with pytest.raises(NcdError) as info:
        module(torch.randn(5, 4, dtype=torch.float64))
    assert "input x is torch.float64 but the module's parameters are torch.float32" in info.value.message
    assert info.value.line == 3
    module.double()(torch.randn(5, 4, dtype=torch.float64))  # the conversion the message names works


# ---------------------------------------------------------------------- specs are data, never code
# Python that would create the marker file if anything ever ran it ({touch} = `touch <marker>`).
PYTHON_PAYLOADS = {
    "dunder-import": "__import__('os').system('{touch}')\n",
    "exec-string": 'exec("import os; os.system(\'{touch}\')")\n',
    "eval-string": "eval(\"__import__('os').system('{touch}')\")\n",
    "lambda": "lambda: __import__('os').system('{touch}')\n",
    "import-statement": "import os\nos.system('{touch}')\n",
    "def-body": "def f():\n    import os\n    os.system('{touch}')\nf()\n",
    "class-body": "class C:\n    import os\n    os.system('{touch}')\n",
    "f-string": "f\"{{__import__('os').system('{touch}')}}\"\n",
    "backticks": "`{touch}`\n",
    "shell-substitution": "$({touch})\n",
    "in-expression": HEAD + "block F(x: [T, D]) -> [T, D] {{\n  return x + __import__('os').system('{touch}')\n}}\n",
    "exec-call-in-block": HEAD + "block F(x: [T, D]) -> [T, D] {{\n  return exec(\"open('{marker}', 'w')\")\n}}\n",
    "lambda-in-block": HEAD + "block F(x: [T, D]) -> [T, D] {{\n  y = lambda x: x\n  return y\n}}\n",
    "in-initialiser": HEAD + "block F(x: [T, D]) -> [T, D] {{\n  param W: [D] init __import__('os').system('{touch}')"
                      "\n  return x\n}}\n",
    "attribute-walk": HEAD + "block F(x: [T, D]) -> [T, D] {{\n  return x.__class__.__bases__[0]\n}}\n",
    "eval-call-in-block": HEAD + "block F(x: [T, D]) -> [T, D] {{\n  return eval(x)\n}}\n",
    "in-axis-size": "axis D = __import__('os').system('{touch}')\n",
    "builtin-as-size": "axis D = exec\nblock F(x: [D]) -> [D] {{\n  return x\n}}\n",
}


@pytest.mark.parametrize("payload", PYTHON_PAYLOADS.values(), ids=PYTHON_PAYLOADS.keys())
def test_python_in_a_spec_is_rejected_and_never_run(tmp_path, payload):
    marker = tmp_path / "pwned"
    source = payload.format(touch=f"touch {marker}", marker=marker)
    for api in (ncd.check, ncd.load):
        with pytest.raises(NcdError) as info:
            api(source)
        assert info.value.line is not None
        assert not marker.exists()


def _calls_to(tree: ast.AST, names: set[str]) -> list[int]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            fn = node.func
            if isinstance(fn, ast.Name) and fn.id in names:
                found.append(node.lineno)
            elif isinstance(fn, ast.Attribute) and fn.attr in names and isinstance(fn.value, ast.Name) \
                    and fn.value.id == "builtins":
                found.append(node.lineno)
    return found


def test_no_module_of_ncd_calls_eval_or_exec():
    offenders = []
    files = [p for d in ("ncd", "backends") for p in sorted((ROOT / d).rglob("*.py"))]
    assert files
    for path in files:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for line in _calls_to(tree, {"eval", "exec", "__import__", "compile"}):
            offenders.append(f"{path.relative_to(ROOT)}:{line}")
    assert not offenders, f"eval/exec/compile called at {offenders}"


def test_a_bug_in_the_builder_is_an_internal_ncd_error(monkeypatch):
    """The API's safety net: an unexpected exception becomes an NcdError that says it is ncd's bug."""
    from ncd.frontend import builder

    def broken(self, tree):
        raise KeyError("oops")

    monkeypatch.setattr(builder.BlockBuilder, "expr_number", broken)
    with pytest.raises(NcdError) as info:
        ncd.check(HEAD + "block F(x: [T, D]) -> [T, D] {\n  return x * 2\n}\n")
    assert info.value.message.startswith("internal error: KeyError")
    assert isinstance(info.value.__cause__, KeyError)
    assert "bug in ncd" in info.value.hint


def test_number_literals_are_read_exactly_not_as_python():
    """`05` is a Python syntax error and `1e-5` a float; the spec reads both as exact numbers."""
    module = ncd.load(HEAD + "block F(x: [T, D]) -> [T, D] {\n  return x * 05 + 1. + .5e-3 + 1e-5\n}\n").double()
    x = torch.randn(2, 4, dtype=torch.float64)
    torch.testing.assert_close(module(x), x * 5 + 1.00051)
