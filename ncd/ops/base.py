"""What one op table entry holds, and the small expression language lowerings are written in.

A lowering returns an ``Expr`` tree, not Python text and not a closure: the in-process
interpreter (backends/pytorch/module.py) and the source emitter (backends/pytorch/emit.py)
both read the same tree, so emitted code computes bit-identically what the module computes.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar, Union

from ncd.errors import NcdError, Span
from ncd.ir import Node, WireType


# ------------------------------------------------------------------------- lowering expressions
@dataclass(frozen=True)
class Ref:
    """A value computed earlier in the program (by node id)."""

    id: str


@dataclass(frozen=True)
class Lit:
    """A Python literal baked into the program (numbers, tuples of ints, strings, None)."""

    value: Any


@dataclass(frozen=True)
class SelfAttr:
    """``self.<path>``: a parameter, buffer, sub-module or tap of the running module."""

    path: str


@dataclass(frozen=True)
class Call:
    """``fn(*args, **kwargs)``; ``fn`` is a dotted name in the runtime namespace, or an Expr."""

    fn: Union[str, "Expr"]
    args: tuple["Expr", ...] = ()
    kwargs: tuple[tuple[str, "Expr"], ...] = ()


@dataclass(frozen=True)
class Method:
    """``obj.name(*args, **kwargs)``."""

    obj: "Expr"
    name: str
    args: tuple["Expr", ...] = ()
    kwargs: tuple[tuple[str, "Expr"], ...] = ()


@dataclass(frozen=True)
class Index:
    """``obj[pattern]`` where pattern items are '...', 'None', ':' or an int/Expr."""

    obj: "Expr"
    items: tuple[Any, ...]


@dataclass(frozen=True)
class BinOp:
    op: str  # one of + - * / ** < <= > >= == !=
    left: "Expr"
    right: "Expr"


@dataclass(frozen=True)
class UnaryOp:
    op: str  # '-'
    operand: "Expr"


Expr = Union[Ref, Lit, SelfAttr, Call, Method, Index, BinOp, UnaryOp]


# ------------------------------------------------------------------------- the one walker
T = TypeVar("T")
Item = Any  # an Index item: "...", "None", ":", an int, or what an Expr item folded to


class Fold(Generic[T]):
    """A bottom-up pass over an expression tree: ``fold`` calls one method per node with its
    children already folded. The interpreter folds to closures, the emitter to source text and the
    lowering to rewritten trees, so all three read every part of every node (a Method's keyword
    arguments included) from this one place. The default methods rebuild the node, so a fold to
    ``Expr`` only overrides what it changes."""

    def ref(self, e: Ref) -> T:
        return e  # type: ignore[return-value]

    def lit(self, e: Lit) -> T:
        return e  # type: ignore[return-value]

    def self_attr(self, e: SelfAttr) -> T:
        return e  # type: ignore[return-value]

    def call(self, e: Call, fn: "str | T", args: list[T], kwargs: list[tuple[str, T]]) -> T:
        return Call(fn, tuple(args), tuple(kwargs))  # type: ignore[arg-type, return-value]

    def method(self, e: Method, obj: T, args: list[T], kwargs: list[tuple[str, T]]) -> T:
        return Method(obj, e.name, tuple(args), tuple(kwargs))  # type: ignore[arg-type, return-value]

    def index(self, e: Index, obj: T, items: list[Item]) -> T:
        return Index(obj, tuple(items))  # type: ignore[arg-type, return-value]

    def binop(self, e: BinOp, left: T, right: T) -> T:
        return BinOp(e.op, left, right)  # type: ignore[arg-type, return-value]

    def unary(self, e: UnaryOp, operand: T) -> T:
        return UnaryOp(e.op, operand)  # type: ignore[arg-type, return-value]


def fold(expr: Expr, f: Fold[T]) -> T:
    """``expr`` folded bottom-up by ``f`` (see Fold)."""
    if isinstance(expr, Ref):
        return f.ref(expr)
    if isinstance(expr, Lit):
        return f.lit(expr)
    if isinstance(expr, SelfAttr):
        return f.self_attr(expr)
    if isinstance(expr, Call):
        fn = expr.fn if isinstance(expr.fn, str) else fold(expr.fn, f)
        return f.call(expr, fn, [fold(a, f) for a in expr.args], [(k, fold(v, f)) for k, v in expr.kwargs])
    if isinstance(expr, Method):
        return f.method(expr, fold(expr.obj, f), [fold(a, f) for a in expr.args],
                        [(k, fold(v, f)) for k, v in expr.kwargs])
    if isinstance(expr, Index):
        items = [i if isinstance(i, (str, int)) else fold(i, f) for i in expr.items]
        return f.index(expr, fold(expr.obj, f), items)
    if isinstance(expr, BinOp):
        return f.binop(expr, fold(expr.left, f), fold(expr.right, f))
    if isinstance(expr, UnaryOp):
        return f.unary(expr, fold(expr.operand, f))
    raise TypeError(f"not an expression: {expr!r}")


class Gather(Fold[list]):
    """A fold that lists what the leaves give, in reading order (repeats kept): a compound
    node's list is its children's lists joined. Leaves give nothing; subclasses say what a leaf
    (or a call) adds."""

    def ref(self, e: Ref) -> list:
        return []

    def lit(self, e: Lit) -> list:
        return []

    def self_attr(self, e: SelfAttr) -> list:
        return []

    def call(self, e, fn, args, kwargs) -> list:
        return [*([] if isinstance(fn, str) else fn), *(x for a in args for x in a), *(x for _, v in kwargs for x in v)]

    def method(self, e, obj, args, kwargs) -> list:
        return [*obj, *(x for a in args for x in a), *(x for _, v in kwargs for x in v)]

    def index(self, e, obj, items) -> list:
        return [*obj, *(x for i in items if isinstance(i, list) for x in i)]

    def binop(self, e, left, right) -> list:
        return [*left, *right]

    def unary(self, e, operand) -> list:
        return list(operand)


class _Leaves(Gather):
    """Every Ref and SelfAttr of a tree, in reading order (repeats kept)."""

    def ref(self, e: Ref) -> list:
        return [e]

    def self_attr(self, e: SelfAttr) -> list:
        return [e]


def leaves(expr: Expr) -> list["Ref | SelfAttr"]:
    """The values and module attributes an expression reads, in reading order."""
    return fold(expr, _Leaves())


def call(fn: str, *args: Expr, **kwargs: Expr) -> Call:
    return Call(fn, tuple(args), tuple(kwargs.items()))


def lit(value: Any) -> Lit:
    return Lit(value)


# ------------------------------------------------------------------------- typing context
@dataclass
class TypeCtx:
    """What a typing rule may ask of the builder: sizes, locations and fresh errors."""

    span: Span | None
    sizes: Callable[[str], Any]  # axis name -> sympy size (symbols for free axes)
    known_axis: Callable[[str], bool]
    unify: Callable[[str, Any, str], None]  # (axis, sympy size, what) -> bind a free axis or check
    # Finer places than the whole expression, so an error points at the piece at fault: an option
    # by its keyword ("over"), the operator ("@"), a named axis ("axis D").
    spans: Mapping[str, Span] = field(default_factory=dict)
    # the kind of node each input is (``buffer``, ``param``, an op's name): an op that updates its
    # inputs in place (batchnorm's running statistics) takes buffers only
    input_ops: Sequence[str] = ()

    def error(self, message: str, hint: str | None = None, at: str | None = None) -> NcdError:
        """A located error; ``at`` picks a finer place from ``spans`` where the builder gave one."""
        span = self.spans.get(at, self.span) if at is not None else self.span
        return NcdError(message, span, hint=hint)


@dataclass
class LowerCtx:
    """What a lowering may ask: the input types and each axis's bound size (int or None)."""

    in_types: Sequence[WireType]
    size_of: Callable[[str], int | None]  # bound size, or None where only the run time knows it
    size_expr: Callable[[str], Expr]  # a literal, or a read of some input's shape
    refs: Sequence[Expr]
    anchor: Expr | None  # a tensor whose dtype/device new tensors follow (None: float64 on the CPU)
    in_names: Sequence[str | None] = ()  # each input's spec name where it has one (an input port, a wire)


# ------------------------------------------------------------------------- keyword signatures
AXIS, AXES, AXIS_MAP, NUMBER, NAME = "axis", "axes", "axis_map", "number", "name"
AXES_OR_MAP = "axes_or_map"  # over = [Y, X] (same axes out) or over = [Y, X] -> [Y2, X2]
NUMBERS = "numbers"  # one number for every spatial axis, or one each: stride = 2, stride = [2, 1]
VALUES = "values"  # a list of numbers, one per position of an axis: const a[P] = [1, 0.5, 0.25]
FLAG = "flag"  # true or false: ceil_mode = true


@dataclass(frozen=True)
class Kw:
    """One keyword option. ``names``: the words it accepts besides its kind's values (a NAME
    option's choices, ``padding = causal``), listed in the error for any other word."""

    kind: str
    default: Any = None
    required: bool = False
    names: tuple[str, ...] = ()


# ------------------------------------------------------------------------- the table entry
InferFn = Callable[[TypeCtx, list[WireType], dict[str, Any]], list[WireType]]
LowerFn = Callable[[Node, LowerCtx], Expr]
CostFn = Callable[[Node, Sequence[WireType], Callable[[str], Any]], Mapping[str, Any]]
# Constant folding: exact (sympy) numbers in, an exact number out; raise FoldError to refuse.
FoldFn = Callable[..., Any]


class FoldError(ValueError):
    """A fold that has no real, representable result (1 / 0, a power past float64's range);
    ``hint`` says the edit that fixes the spec, for the front end's located error."""

    def __init__(self, message: str, hint: str) -> None:
        super().__init__(message)
        self.hint = hint


@dataclass(frozen=True)
class Algebra:
    """What the recurrence pass (ncd/passes/recurrence.py) may assume of an op.

    ``linear``: how the output's degree in the carried state follows the inputs' — ``"none"``
    (nonlinear: any state-dependent input makes it nonlinear; the conservative default),
    ``"joint"`` (linear in all inputs together: add, views, sums), ``"product"`` (the degrees
    add: mul, contract) or ``"numerator"`` (linear in input 0, nonlinear in the others: div).
    ``mixes``: the attribute naming the axes it combines values along — ``"over"`` (an axis
    list, or an ``{src, dst}`` map), ``"axes"`` (a contraction's), ``"all"`` (every axis of a
    state-dependent input: conv, inverse) or ``"view"`` (a view that hides an axis: rename,
    reshape, select). ``positive``: the output is > 0 wherever it is
    evaluated (a gate the GLA kernel may take the logarithm of).
    """

    linear: str = "none"
    mixes: str | None = None
    positive: bool = False


NONLINEAR = Algebra()
JOINT = Algebra("joint")

# ``OpDef.arith``: the arithmetic an op is, for the passes that match patterns of ops (the fusion
# pass's bias, scale and contractions; the step pass's masks; the recurrence pass's cells)
ADD, SUB, MUL, DIV, POW, NEG, CONTRACT, EXP = "+", "-", "*", "/", "**", "-x", "@", "exp"

# ``OpDef.role``: the language construct an op is, for the passes that single such a construct out
# (the step and recurrence passes, the lowering, the checker):
PICK = "pick"  # x[A = i], x[t]: one position along ``attrs["axis"]``, the position an operand or ``index``
POSITION = "position"  # idx(A): each position along ``attrs["axis"]`` as a number
CHOOSE = "choose"  # where(c, a, b): a where the boolean c holds, else b
COMPARISON = "comparison"  # x < y: a boolean wire, the comparison ``attrs["cmp"]``

# ``OpDef.gate``: the nonlinearities torch's fused RNN cells apply (nn.RNN's tanh or relu, the
# sigmoid and tanh gates of nn.GRU and nn.LSTM): the recurrence pass matches a step against the
# cells' equations written in these names
SIGMOID, TANH, RELU = "sigmoid", "tanh", "relu"


@dataclass(frozen=True)
class Affine:
    """A norm torch computes together with its affine in one call (the fusion pass's ``norm_affine``:
    ``norm(x) * γ (+ β)``): ``fn`` the call, ``bias`` whether it takes the shift β too, ``eps`` the
    row's default eps (docs/language.md), ``cost`` the fused call's cost rule over (x, γ, β) and
    the normalised axes (ncd.ops.costing.fused_norm; the norm_affine entry of ncd/passes/fusion.py reads both)."""

    fn: str
    bias: bool
    eps: float
    cost: Callable[[list[WireType], Any, list[str]], dict[str, Any]]


@dataclass(frozen=True)
class Masked:
    """What an op makes of the entries a causal mask set along a cache axis (the step pass's
    attention over a key/value cache; each value is ``"-oo"`` or ``"0"``).

    ``ignores``: along the masked axis the op is exact when the masked entries hold this value
    (sum and contract ignore zeros; max, logsumexp and softmax ignore -inf); ``gives``: the value
    masked entries have in the output where the op keeps the axis (softmax: 0, log_softmax: -inf);
    ``maps``: for an op that does not act along the axis, (value of its first input's masked
    entries, value of its output's): exp maps -inf to 0."""

    ignores: str | None = None
    gives: str | None = None
    maps: tuple[str, str] | None = None


@dataclass(frozen=True)
class AxisList:
    """A part of a drawn title that is a list of axes: the renderer draws it in brackets, each axis
    in its colour (a contraction's ``@[X]``, an annotation's ``: [A, B]``)."""

    axes: tuple[str, ...]


# A drawn title's parts: text (the renderer escapes it) and axis lists.
TitlePart = Union[str, AxisList]
# attrs, the numbers among the op's inputs (as text) -> the title; None: the name/glyph, then the
# op's ``over`` axes, its ``label`` note and its number operands
TitleFn = Callable[[Mapping[str, Any], Sequence[str]], tuple[TitlePart, ...]]
# a view's memory order from its source's (source layout, attrs, source axes, result axes);
# None: this view copies after all (a fresh, contiguous storage)
ViewLayoutFn = Callable[[tuple[str, ...], Mapping[str, Any], tuple[str, ...], tuple[str, ...]], "tuple[str, ...] | None"]


@dataclass(frozen=True)
class OpDef:
    """Everything the compiler knows about one primitive, in one place.

    ``infer``: the axis-typing rule; ``lower``: the torch lowering (an Expr tree, so the
    interpreter and the emitter read one thing); ``cost``: FLOPs, gradients' FLOPs and the
    saved-activation rule (``saves``) as sympy in axis sizes — every row has one, the op-table
    test fails a row without; ``draw``: the renderer's glyph (defaults to the name); ``view``:
    the output shares the input's storage (no copy, no memory traffic, drawn dashed), its memory
    order given by ``view_layout`` (unchanged without one);
    ``algebra``: what the recurrence pass may assume; ``fold``: the exact value of the op on
    numbers known at check time (None: never folded); ``doc``: the one-line reference,
    also in docs/language.md's op reference; ``syntax``: how a spec writes an op that is no
    function (``x[A as B]``): such an op cannot be called by name; ``example``: a complete
    spec of one block using the op (``example_spec``), for the op-table test (elementwise and
    reduce rows without one get a default there, see tests/test_ops_table.py); ``dtypes``: which
    element types it takes and gives (a rule of ncd.ops.dtypes); ``label``: the note the drawing
    puts under the box for the options that change what it computes; ``title``: the whole drawn
    title when the op writes its options into it (``x[A as B]``, ``@[X]``, ``< 0``); ``random``: it draws
    from the module's generator (ncd.ops.random); ``stateful``: it updates buffers (ncd.ops.stats).
    The pattern facts (``arith``, ``affine``, ``attention_weights``, ``masked``, ``relabels``, ``role``,
    ``window``, ``gate``) are what
    the passes that match patterns of ops ask (docs/architecture.md, "The op table"), so an op with
    the same role needs only its row.
    """

    name: str
    family: str
    infer: InferFn
    lower: LowerFn
    arity: tuple[int, int] = (1, 1)
    kwargs: Mapping[str, Kw] = field(default_factory=dict)
    cost: CostFn | None = None
    draw: str | None = None  # box label; defaults to the name
    doc: str = ""
    view: bool = False
    algebra: Algebra = NONLINEAR
    fold: FoldFn | None = None
    syntax: str | None = None
    example: str | None = None
    dtypes: str = "float"  # the element-type rule (ncd.ops.dtypes): float, arith, compare, where, same, any
    label: Callable[[Mapping[str, Any]], str] | None = None  # the drawing's note of the options (attrs -> text)
    title: TitleFn | None = None  # the drawing's whole title (attrs, number operands -> parts)
    # a view row's memory order from its source's, for the analyzer's traffic (None: unchanged)
    view_layout: ViewLayoutFn | None = None
    # draws random numbers from the module's generator: never folded, and a scan whose step draws
    # runs as the sequential loop (the draw order is then the emitted Python's)
    random: bool = False
    # updates module buffers when run (batchnorm's running statistics): a scan whose step does
    # runs as the sequential loop, one update per step
    stateful: bool = False
    # the arithmetic the op is (ADD, SUB, MUL, DIV, POW, NEG, CONTRACT, EXP above; None: none of these):
    # pattern-matching passes ask it, never the op's name
    arith: str | None = None
    # a norm with a fused-affine torch call (the fusion pass's norm_affine)
    affine: Affine | None = None
    # the op is attention's weights, softmax along ``over`` (the fusion pass's attention)
    attention_weights: bool = False
    # how it carries causally masked entries (the step pass; None: a masked input makes it unknown)
    masked: Masked | None = None
    # the output holds the input's entries unchanged, its axes only renamed or reordered (rename, annotate)
    relabels: bool = False
    # the construct it is (PICK, POSITION, CHOOSE, COMPARISON above; None: none of them)
    role: str | None = None
    # with ``padding = causal`` its output at t reads the inputs up to t only: the step pass carries
    # the last inputs as a window state (a causal convolution)
    window: bool = False
    # the fused-RNN nonlinearity the op is (SIGMOID, TANH, RELU above; None: not one of them)
    gate: str | None = None


def example_spec(axes: str, inputs: str, output: str, body: str) -> str:
    """A one-block spec: ``axis <axes>`` then ``block F(<inputs>) -> <output> { <body> }``."""
    return f"axis {axes}\nblock F({inputs}) -> {output} {{\n  {body}\n}}\n"


def axis_pos_from_end(axes: Sequence[str], axis: str) -> int:
    """Negative dim of a core axis: lifted dims lead, so only the distance from the end is fixed."""
    return axes.index(axis) - len(axes)
