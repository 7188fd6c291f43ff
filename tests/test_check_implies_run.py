"""What ``ncd check`` accepts runs: the holes issue 10 found, then a hypothesis generator of specs.

The generator builds small specs from the op table (elementwise, contractions, reductions,
norms, views, concat/split, range slices, booleans and where with literals, conv with its options
(groups, causal and mode padding), ceil-mode pools, linear up-sampling, scans with several carries or a loop in the step,
sub-blocks, also lifted over extra axes), typed as it goes. Whatever checks must
load, run forward and backward at random sizes for its free axes, and emit Python that gives the
same outputs; no exception but NcdError may escape ``ncd.check``, ``ncd.load`` or a forward
call with a wrongly shaped input. The default profile stays small (make test); the ``slow``
test runs many more examples.
"""
from __future__ import annotations

import importlib.util
import itertools
import tempfile
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ncd
from ncd import sizes as sz
from ncd.backends.pytorch.emit import emit_python
from ncd.ops import OPS


# ----------------------------------------------------------------------------- the listed holes
def test_where_with_number_branches_is_the_float_wire_the_ir_types():
    m = ncd.load("axis T = 3, D = 4\nblock F(x: [T, D]) -> [D] {\n  m = where(x > 0, 1, 0)\n  return m @[T] x\n}\n")
    x = torch.randn(2, 3, 4)
    torch.testing.assert_close(m(x), torch.einsum("btd,btd->bd", (x > 0).float(), x))


def test_a_primed_axis_has_its_base_size_at_load_and_when_bound():
    spec = "axis T, D = 4\nblock F(x: [T, D]) -> [T, D] {\n  return x * sum(idx(T'), over = T')\n}\n"
    x = torch.randn(2, 5, 4)
    torch.testing.assert_close(ncd.load(spec)(x), x * 10.0)  # 0 + 1 + ... + 4, T' read off x's T
    assert ncd.check(spec, sizes={"T'": 5}).bindings == {"T": 5}
    with pytest.raises(ncd.NcdError, match="shares the size of T"):
        ncd.check(spec, sizes={"T'": 5, "T": 6})


def test_a_size_derived_from_a_free_axis_is_computed_from_the_inputs():
    spec = "axis T, R = 2 * T + 1, D = 4\nblock F(x: [T, D]) -> [T, D] {\n  return x * sum(idx(R), over = R)\n}\n"
    x = torch.randn(2, 5, 4)
    torch.testing.assert_close(ncd.load(spec)(x), x * float(sum(range(11))))


def test_a_derived_axis_bound_to_a_non_multiple_is_a_located_error():
    with pytest.raises(ncd.NcdError, match=r"axis Y = 4\*Yq is bound to 5") as info:
        ncd.check("unet", Y=5, X=5)
    assert info.value.line is not None
    assert ncd.check("unet", Y=8, X=8).bindings["Yq"] == 2  # and a multiple fixes the free axis


CONV = """axis C = 2, D = 3, Y, K = 3, Y2
block F(x: [C, Y]) -> [D, Y2] {
  param w: [D, C, K] init normal(0, 1)
  return conv(x, w, over = Y -> Y2, kernel = [K])
}
"""


def test_a_conv_output_below_one_is_an_error_at_check_and_at_the_call():
    with pytest.raises(ncd.NcdError, match="would have size 0"):
        ncd.check(CONV, Y=2)
    m = ncd.load(CONV)
    with pytest.raises(ncd.NcdError, match="too small for a window of 3"):
        m(torch.randn(2, 2, 2))
    assert m(torch.randn(2, 2, 5)).shape == (2, 3, 3)


def test_a_kernel_lifted_over_channels_runs_as_a_depthwise_conv():
    spec = """axis C = 3, Y = 7, K = 3, Y2
block Smooth(x: [Y], k: [K]) -> [Y2] {
  return conv(x, k, over = Y -> Y2, kernel = [K])
}
block F(x: [C, Y]) -> [C, Y2] {
  param k: [C, K] init normal(0, 1)
  return Smooth(x, k)
}
"""
    m = ncd.load(spec).double()
    x = torch.randn(2, 3, 7, dtype=torch.float64)
    want = F.conv1d(x, m.k[:, None, :], groups=3)  # torch's depthwise conv: groups = channels
    torch.testing.assert_close(m(x), want)


def test_per_example_weights_from_a_hypernetwork_run_as_a_grouped_conv():
    spec = """axis C = 2, D = 3, Y = 6, K = 2, Y2
block F(x: [C, Y], w: [D, C, K]) -> [D, Y2] {
  return conv(x, w, over = Y -> Y2, kernel = [K])
}
"""
    x, w = torch.randn(4, 2, 6, dtype=torch.float64), torch.randn(4, 3, 2, 2, dtype=torch.float64)
    got = ncd.load(spec).double()(x, w)
    torch.testing.assert_close(got, torch.stack([F.conv1d(x[i:i + 1], w[i])[0] for i in range(4)]))


def test_ops_written_with_syntax_cannot_be_called_by_name():
    for name in ("rename", "reshape", "select", "annotate", "compare"):
        with pytest.raises(ncd.NcdError, match="is not a function"):
            ncd.check(f"axis A = 3, B = 4\nblock F(x: [A, B]) -> [..] {{\n  return {name}(x)\n}}\n")


# ----------------------------------------------------------------------------- size equalities
def test_a_rename_that_fixes_a_free_axis_re_checks_the_ops_before_it():
    # the hypothesis test's find: the rename makes A = 1, so the slice 1:A before it is empty
    spec = ("axis A, B = 3, L0, L1\nblock F(x: [A, B]) -> [L0, B] {\n  v0 = x[A = 1:A as L0]\n"
            "  v1 = x[A = 0:1 as L1]\n  v2 = v1[L1 as A]\n  return v0\n}\n")
    with pytest.raises(ncd.NcdError, match=r"the slice 1:1 is empty .*A = 1 from line 5 \(renamed from L1\)") as info:
        ncd.check(spec)
    assert (info.value.line, info.value.col) == (3, 10)
    with pytest.raises(ncd.NcdError, match="axis A has size 3 here, but renamed from L1 is 1") as info:
        ncd.load(spec, A=3)
    assert info.value.line == 5


def test_sizes_fixed_late_past_the_rebuild_limit_are_refused_not_returned(monkeypatch):
    # the spec above needs a second build; with room for one only, the IR typed before A was fixed
    # must not come back as if it checked
    monkeypatch.setattr("ncd.limits.MAX_SIZE_REBUILDS", 1)
    spec = ("axis A, B = 3, L0, L1\nblock F(x: [A, B]) -> [L1, B] {\n  v0 = x[A = 0:A as L0]\n"
            "  v1 = x[A = 0:2 as L1]\n  v2 = v1[L1 as A]\n  return v1\n}\n")
    with pytest.raises(ncd.NcdError, match=r"limit of 1 builds, ncd.limits.MAX_SIZE_REBUILDS") as info:
        ncd.check(spec)
    assert info.value.line == 5 and "axis A = 2" in info.value.hint
    monkeypatch.undo()
    assert ncd.check(spec).axes["A"].size == "2"  # two builds: within the limit, it checks and runs
    torch.testing.assert_close(ncd.load(spec)(x := torch.randn(2, 2, 3)), x)


def test_a_rename_into_a_sized_axis_sizes_the_free_one():
    spec = "axis A, C = 3\nblock F(x: [A], y: [C]) -> [C] {\n  return x[A as C] + y\n}\n"
    assert ncd.check(spec).axes["A"].size == "3"
    with pytest.raises(ncd.NcdError, match="axis C has size 3 here, but renamed from A is 5"):
        ncd.check(spec, A=5)
    m = ncd.load(spec)
    x, y = torch.randn(2, 3), torch.randn(2, 3)
    torch.testing.assert_close(m(x, y), x + y)
    with pytest.raises(ncd.NcdError, match="axis A has size 5 but the spec binds it to 3"):
        m(torch.randn(2, 5), y)


def test_two_free_axes_tied_by_a_rename_must_agree_at_the_call():
    spec = "axis A, C\nblock F(x: [A], y: [C]) -> [C] {\n  return x[A as C] + y\n}\n"
    m = ncd.load(spec)
    x = torch.randn(2, 4)
    torch.testing.assert_close(m(x, x), 2 * x)
    with pytest.raises(ncd.NcdError, match=r"axis C has size 3 in input y, but the spec ties it to A, which is 5"):
        m(torch.randn(2, 5), torch.randn(2, 3))


def test_a_size_fixed_late_is_checked_against_a_derived_axis():
    spec = ("axis A, K = A / 2, L1\nblock F(x: [A, K]) -> [A, K] {\n  v = x[A = 0:3 as L1]\n"
            "  w = v[L1 as A]\n  return x\n}\n")
    with pytest.raises(ncd.NcdError, match=r"axis K has size 3/2.*A = 3 from line 4") as info:
        ncd.check(spec)
    assert info.value.line == 1


def test_a_concat_into_a_sized_axis_sizes_its_free_piece():
    spec = "axis A = 2, B, R = 5\nblock F(x: [A], y: [B]) -> [R] {\n  return concat(x, y, over = [A, B] -> R)\n}\n"
    assert ncd.check(spec).axes["B"].size == "3"  # A + B = R: 2 + B = 5
    x, y = torch.randn(2, 2), torch.randn(2, 3)
    torch.testing.assert_close(ncd.load(spec)(x, y), torch.cat([x, y], -1))


def test_a_reshape_no_whole_size_fits_is_refused_at_check():
    spec = "axis A = 2, B, R = 5\nblock F(x: [A, B]) -> [R] {\n  return x[A B -> R]\n}\n"
    with pytest.raises(ncd.NcdError, match=r"axis R has size 5 here, but the product of A B is 2\*B, and no whole "
                                           r"size of B makes them equal") as info:
        ncd.check(spec)
    assert info.value.line == 3


def test_a_reshape_into_a_sized_axis_ties_two_free_axes_at_the_call():
    spec = "axis A, B, M = 6\nblock F(x: [A, B]) -> [M] {\n  return x[A B -> M]\n}\n"
    m = ncd.load(spec)
    x = torch.randn(2, 2, 3)
    torch.testing.assert_close(m(x), x.reshape(2, 6))
    with pytest.raises(ncd.NcdError, match="ties it to 6/B"):
        m(torch.randn(2, 4, 3))


def test_binding_a_conv_output_sizes_its_free_input_or_names_the_sizes_that_fit():
    assert ncd.check(CONV, Y2=3).axes["Y"].size == "5"  # Y - 3 + 1 = 3
    m = ncd.load(CONV, Y2=3)
    assert m(torch.randn(2, 2, 5)).shape == (2, 3, 3)
    with pytest.raises(ncd.NcdError, match="axis Y has size 6 but the spec binds it to 5"):
        m(torch.randn(2, 2, 6))
    strided = CONV.replace("kernel = [K])", "kernel = [K], stride = 2)")
    with pytest.raises(ncd.NcdError, match=r"several sizes of Y give that \(7, 8\)") as info:
        ncd.check(strided, Y2=3)  # floor((Y - 3) / 2) + 1 = 3
    assert info.value.line == 4 and "--set Y=7" in info.value.hint
    assert ncd.check(strided, Y2=3, Y=8).bindings == {"Y2": 3, "Y": 8}


def test_an_index_past_the_end_of_a_free_axis_is_refused_at_forward():
    spec = "axis A, B = 2\nblock F(x: [A, B]) -> [B] {\n  return x[A = 3]\n}\n"
    m = ncd.load(spec)
    x = torch.randn(2, 4, 2)
    torch.testing.assert_close(m(x), x[:, 3])
    with pytest.raises(ncd.NcdError, match="the index of axis A picks position 3, outside an axis of 2 positions"):
        m(torch.randn(2, 2, 2))
    with pytest.raises(ncd.NcdError, match="index 3 is out of range for axis A of size 2"):
        ncd.check(spec, A=2)


# ----------------------------------------------------------------------------- the generator
UNARY = sorted(n for n, o in OPS.items() if o.family == "elementwise" and o.arity == (1, 1) and o.syntax is None
               and not any(k.required for k in o.kwargs.values()) and n != "neg")
REDUCE = sorted(n for n, o in OPS.items() if o.family == "reduce")
NORMALISE = ["softmax", "log_softmax", "cumsum", "layernorm", "rmsnorm", "l2norm"]
AXES = ("A", "B", "C")
OTHER_AXES = ("M0", "R", "S1", "L0", "L1", "Y2")  # sized (S1 = 1), inferred or free: a rename equates sizes


class Gen:
    """Typed straight-line code: each statement makes a wire whose axes the generator knows."""

    def __init__(self, draw) -> None:
        self.draw = draw
        self.lines: list[str] = []
        self.wires: dict[str, tuple[str, ...]] = {"x": ("A", "B"), "y": ("B", "C")}
        self.params: list[str] = []
        self.fresh = itertools.count()
        self.merged = 0
        self.merges: dict[str, tuple[str, str]] = {}
        self.sliced = 0

    def pick(self, options):
        return self.draw(st.sampled_from(list(options)))

    def new(self, expr: str, axes: tuple[str, ...]) -> str:
        name = f"v{next(self.fresh)}"
        self.lines.append(f"{name} = {expr}")
        self.wires[name] = axes
        return name

    def step(self) -> None:
        name = self.pick(sorted(self.wires))
        axes = self.wires[name]
        kind = self.pick(["unary", "binary", "contract", "reduce", "normalise", "rename", "reshape",
                          "concat", "split", "scale", "param", "slice", "where", "bool", "rename-any",
                          "unmerge", "concat-pieces", "select"])
        if kind == "unary":
            self.new(f"{self.pick(UNARY)}({name})", axes)
        elif kind == "binary":
            other = self.pick(sorted(self.wires))
            union = axes + tuple(a for a in self.wires[other] if a not in axes)
            self.new(f"{name} {self.pick(['+', '-', '*'])} {other}", union)
        elif kind == "contract" and axes:
            others = [o for o in sorted(self.wires) if set(self.wires[o]) & set(axes)]
            other = self.pick(others)
            shared = [a for a in axes if a in self.wires[other]]
            axis = self.pick(shared)
            kept = tuple(a for a in axes if a != axis) + tuple(a for a in self.wires[other]
                                                              if a != axis and a not in axes)
            self.new(f"{name} @[{axis}] {other}", kept)
        elif kind == "reduce" and axes:
            axis = self.pick(axes)
            self.new(f"{self.pick(REDUCE)}({name}, over = {axis})", tuple(a for a in axes if a != axis))
        elif kind == "normalise" and axes:
            self.new(f"{self.pick(NORMALISE)}({name}, over = {self.pick(axes)})", axes)
        elif kind == "rename" and axes:
            axis = self.pick(axes)
            free = [a for a in AXES if a not in axes]
            if free:
                to = self.pick(free)
                self.new(f"{name}[{axis} as {to}]", tuple(to if a == axis else a for a in axes))
        elif kind == "rename-any" and axes:  # into any axis, sized or not: the sizes are equated
            axis = self.pick(axes)
            free = [a for a in AXES + OTHER_AXES if a not in axes]
            to = self.pick(free)
            self.new(f"{name}[{axis} as {to}]", tuple(to if a == axis else a for a in axes))
        elif kind == "reshape" and len(axes) >= 2 and self.merged < 2:
            a, b = axes[0], axes[1]
            m = f"M{self.merged}"
            self.merged += 1
            self.merges[m] = (a, b)
            self.new(f"{name}[{a} {b} -> {m}]", (m,) + axes[2:])
        elif kind == "unmerge" and any(a in self.merges for a in axes):  # split a merged axis back
            m = self.pick([a for a in axes if a in self.merges])
            parts = self.merges[m] if not set(self.merges[m]) & set(axes) else (f"{self.merges[m][0]}'",
                                                                                f"{self.merges[m][1]}'")
            if not set(parts) & set(axes) and parts[0] != parts[1]:
                i = axes.index(m)
                self.new(f"{name}[{m} -> {parts[0]} {parts[1]}]", axes[:i] + parts + axes[i + 1:])
        elif kind == "concat-pieces" and axes and "R" not in axes:  # two wires along different axes
            axis = self.pick(axes)
            other = self.pick(sorted(self.wires))
            o_axes = self.wires[other]
            o_axis = self.pick(o_axes) if o_axes else None
            if o_axis is not None and o_axis != axis and "R" not in o_axes:
                rest = tuple(a for a in axes if a != axis)
                o_rest = tuple(a for a in o_axes if a != o_axis)
                if sorted(rest) == sorted(o_rest):
                    self.new(f"concat({name}, {other}, over = [{axis}, {o_axis}] -> R)",
                             tuple("R" if a == axis else a for a in axes))
        elif kind == "concat" and axes and "R" not in axes:
            axis = self.pick(axes)
            self.new(f"concat({name}, {name}, over = {axis} -> R)", tuple("R" if a == axis else a for a in axes))
        elif kind == "split" and "R" in axes:
            self.lines.append(f"s{len(self.lines)}, s{len(self.lines)}b = split({name}, over = R -> [S1, S2])")
        elif kind == "scale":
            self.new(f"{name} * {self.pick(['0.5', '2', 'idx(A)', 'sqrt(A)'])}", axes + (("A",) if "A" not in axes else ()))
        elif kind == "slice" and axes and self.sliced < 3:
            axis = self.pick(axes)
            to = f"L{self.sliced}"
            self.sliced += 1
            other = self.pick([a for a in AXES if a != axis.rstrip("'")])
            bounds = self.pick(["1:", ":-1", "1:-1", "0:1", ":1", "-1:", f"1:{axis}", f":{axis} - 1",
                                f"{other}:", f":{other}", f"{other} - 1:{axis}", f"1:{other} + 1", f"-{other}:"])
            self.new(f"{name}[{axis} = {bounds} as {to}]", tuple(to if a == axis else a for a in axes))
        elif kind == "select" and axes:
            axis = self.pick(axes)
            self.new(f"{name}[{axis} = {self.pick(['0', '1', '2'])}]", tuple(a for a in axes if a != axis))
        elif kind == "where":
            self.new(f"where({name} > 0, {name}, {self.pick(['0', '1', '0.5', '-inf'])})", axes)
        elif kind == "bool":  # booleans counted as 0/1 floats, and kept boolean by max / where
            other = self.pick(sorted(self.wires))
            union = axes + tuple(a for a in self.wires[other] if a not in axes)
            form = self.pick(["arith", "sum", "keep"])
            if form == "sum" and axes:
                axis = self.pick(axes)
                self.new(f"sum({name} > 0, over = {axis})", tuple(a for a in axes if a != axis))
            elif form == "keep":
                self.new(f"where(max({name} > 0, {other} < 0), 1, 0) * {name}", union)
            else:
                self.new(f"({name} > 0) {self.pick(['+', '-', '*'])} ({other} < 0)", union)
        elif kind == "param" and axes:
            p = f"p{len(self.params)}"
            self.params.append(f"param {p}: [{', '.join(axes)}] init normal(0, 1)")
            self.new(f"{name} * {p}", axes)

    def spec(self, sizes: dict[str, str], out: str, extra: str) -> str:
        head = ", ".join(f"{a} = {s}" if s else a for a, s in sizes.items())
        body = "\n  ".join(self.params + self.lines + [f"return {out}"])
        ret = self.wires[out]
        return (f"axis {head}, M0, M1, R, S1 = 1, S2, Y2, L0, L1, L2\n{extra}"
                f"block F(x: [A, B], y: [B, C]) -> [{', '.join(ret)}] {{\n  {body}\n}}\n")


EXTRAS_MIX = ("block Mix(u: [B]) -> [B] {\n  param w: [B, B'] init normal(0, 0.5)\n"
              "  return tanh(u @[B] w)[B' as B]\n}\n")
EXTRAS = {
    "": "",
    "sub-block": "block Mix(u: [B]) -> [B] {\n  param w: [B, B'] init normal(0, 0.5)\n"
                 "  return tanh(u @[B] w)[B' as B]\n}\n",
    "scan": "",
    "sub-block-lifted": EXTRAS_MIX,
    "scan-carries": "",
    "scan-repeat": "",
    "conv": "",
    "conv-options": "",
    "depthwise": "",
    "pool-ceil": "",
    "upsample-linear": "",
}
CONV_OPTIONS = ["padding = 1", "padding = causal", "padding = 1, padding_mode = reflect",
                "padding = 1, padding_mode = replicate", "padding = 1, padding_mode = circular",
                "padding = causal, dilation = 2", "padding = [1], stride = [2]"]


@st.composite
def specs(draw):
    sizes = {a: draw(st.sampled_from(["", "2", "3", "4"])) for a in AXES}
    sizes["C"] = draw(st.sampled_from([sizes["C"], "A + 1", "2 * B", "B - 1"]))  # a derived size
    gen = Gen(draw)
    for _ in range(draw(st.integers(1, 6))):
        gen.step()
    extra_kind = draw(st.sampled_from(sorted(EXTRAS)))
    extra = EXTRAS[extra_kind]
    if extra_kind == "sub-block":
        gen.lines.append("use mix = Mix")
        gen.new("mix(x)", ("A", "B"))
    elif extra_kind == "scan":
        gen.params.append("param u: [B', B] init normal(0, 0.3)")
        gen.new("scan t over A carry (h: [B] = 0) {\n    h = tanh(x[t] + h[B as B'] @[B'] u)\n"
                "    emit h\n  }", ("A", "B"))
    elif extra_kind == "sub-block-lifted":  # called on [A, B, C]: lifted over A and C
        gen.lines.append("use mix = Mix")
        gen.new("mix(x * y)", ("A", "B", "C"))
    elif extra_kind == "scan-carries":  # carries of different shapes, one a matrix
        gen.new("scan t over A carry (h: [B] = 0, S: [B, C] = 0, c: [] = 1) {\n    h = tanh(x[t] + 0.5 * h)\n"
                "    S = 0.5 * S + h * y\n    c = 0.5 * c\n    emit sum(S, over = C) * c + h\n  }", ("A", "B"))
    elif extra_kind == "scan-repeat":  # a loop in the step reading the carry by closure
        gen.params.append("param r: [B] init normal(0, 0.5)")
        gen.new("scan t over A carry (h: [B] = 0) {\n    u = x[t]\n    repeat 2 {\n      u = tanh(u + r * h)\n"
                "    }\n    h = u\n    emit h\n  }", ("A", "B"))
    elif extra_kind == "conv":
        gen.params.append("param k: [C, B, K] init normal(0, 0.3)")
        extra = ""
        gen.new("conv(x, k, over = A -> Y2, kernel = [K], padding = 1)", ("Y2", "C"))
    elif extra_kind == "conv-options":
        gen.params.append("param k: [C, B, K] init normal(0, 0.3)")
        option = draw(st.sampled_from(CONV_OPTIONS))
        gen.new(f"conv(x, k, over = A -> Y2, kernel = [K], {option})", ("Y2", "C"))
    elif extra_kind == "depthwise":
        gen.params.append("param k: [B, K] init normal(0, 0.3)")
        option = draw(st.sampled_from(CONV_OPTIONS))
        gen.new(f"conv(x, k, over = A -> Y2, kernel = [K], groups = [B], {option})", ("Y2", "B"))
    elif extra_kind == "pool-ceil":
        kind = draw(st.sampled_from(["maxpool", "avgpool"]))
        gen.new(f"{kind}(x, over = A -> Y2, size = {draw(st.sampled_from(['2', '3']))}, "
                f"stride = {draw(st.sampled_from(['1', '2']))}, ceil_mode = true)", ("Y2", "B"))
    elif extra_kind == "upsample-linear":
        align = draw(st.sampled_from(["true", "false"]))
        gen.new(f"upsample(x, over = A -> Y2, scale = {draw(st.sampled_from(['1', '2', '3']))}, mode = linear, "
                f"align_corners = {align})", ("Y2", "B"))
    out = draw(st.sampled_from(sorted(gen.wires)))
    text = gen.spec(sizes, out, extra)
    if extra_kind in ("conv", "conv-options", "depthwise"):
        text = text.replace(", L2\n", ", L2, K = 3\n", 1)
    return text


def _emitted(source: str):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "gen_emitted.py"
        path.write_text(source)
        spec = importlib.util.spec_from_file_location("gen_emitted", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)  # our own generated code
        return module


def check_implies_run(text: str, free_size: int) -> None:
    try:
        ir = ncd.check(text)
    except ncd.NcdError:
        return  # rejected, and located: the generator may write what the language refuses
    sizes = {a: free_size for a, d in ir.axes.items() if d.size is None and "'" not in a}
    try:
        ir = ncd.check(text, **sizes)
        module = ncd.load(text, **sizes).double()
    except ncd.NcdError:
        return  # these sizes do not satisfy the declarations (e.g. S2 = R - 1), said so by name
    resolved = sz.AxisSizes.of(ir)  # sizes equal by a rename or a formula (C = A) are bound too
    bound = {**{a: int(d.size) for a, d in ir.axes.items() if d.size and d.size.isdigit()}, **ir.bindings}
    inputs = [torch.randn((2, *(bound.get(a) or resolved.bound(a) for a in p.type.axes)), dtype=torch.float64,
                          requires_grad=True)
              for p in ir.entry_block.inputs]
    out = module(*inputs)
    outs = out if isinstance(out, tuple) else (out,)
    loss = sum(o.sum() for o in outs if o.requires_grad)
    if isinstance(loss, torch.Tensor):
        loss.backward()
    emitted = _emitted(emit_python(ir, class_name="Entry")).Entry().double()
    emitted.load_state_dict(module.state_dict())
    again = emitted(*inputs)
    for a, b in zip(outs, again if isinstance(again, tuple) else (again,)):
        torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True)
    free_sizes_run(text, module, inputs, outs)
    wrong = torch.randn(2, 7, 1, dtype=torch.float64)  # a wrongly shaped first input
    try:
        module(wrong, *inputs[1:])
    except ncd.NcdError:
        pass


def free_sizes_run(text: str, bound, inputs, outs) -> None:
    """Loaded with no sizes bound, the free axes are read off the same inputs: same outputs."""
    try:
        module = ncd.load(text).double()
    except ncd.NcdError:
        return  # a parameter over a free axis needs its size at load: said so by name
    module.load_state_dict(bound.state_dict())
    again = module(*inputs)
    for a, b in zip(outs, again if isinstance(again, tuple) else (again,)):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12, equal_nan=True)


SETTINGS = dict(deadline=None, derandomize=True, suppress_health_check=list(HealthCheck), database=None)


@settings(max_examples=15, **SETTINGS)
@given(specs(), st.integers(2, 5))
def test_what_checks_runs(text, free_size):
    check_implies_run(text, free_size)


@pytest.mark.slow
@settings(max_examples=300, **SETTINGS)
@given(specs(), st.integers(2, 6))
def test_what_checks_runs_many(text, free_size):
    check_implies_run(text, free_size)
