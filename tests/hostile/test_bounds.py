"""Hostile sizes, counts and allocations (issue 9 items 2 and 3): each stops with an NcdError that
names the limit, located in the spec, within the harness's time and memory limits."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from hostile_harness import assert_bounded, assert_ncd_error, assert_ok, assert_ok_or_ncd_error, run_cli, run_python

IDENTITY = "block F(x: [D]) -> [D] {\n    return x\n}\n"


def nested(depth: int) -> str:
    lines = ["axis D = 4", "block B0(x: [D]) -> [D] {\n    param w: [D] init ones\n    return x * w\n}"]
    lines += [f"block B{i}(x: [D]) -> [D] {{\n    use f = B{i - 1}\n    return f(x)\n}}" for i in range(1, depth)]
    return "\n".join(lines) + "\n"


# (name, spec text, command and arguments, expected line of the error, needles) — every case an NcdError.
ERRORS = [
    # item 2: composition of powers, once A is bound and while it is free
    ("power-composition-bound", "axis A\naxis D = ((((((A^64)^64)^64)^64)^64)^64)\n" + IDENTITY,
     ["check", "--set", "A=2"], 2, ["degree", "64"]),
    ("power-composition-cost", "axis A\naxis D = ((((A^64)^64)^64)^64)^64\n" + IDENTITY,
     ["cost", "--set", "A=2"], 2, ["degree"]),
    ("power-composition-ir", "axis A\naxis D = ((((A^64)^64)^64)^64)^64\n" + IDENTITY, ["ir"], 2, ["degree"]),
    ("power-composition-render", "axis A\naxis D = ((((A^64)^64)^64)^64)^64\n" + IDENTITY,
     ["render", "-o", "-"], 2, ["degree"]),
    # item 2: two declarations of a huge-degree size, and sizes sympy would simplify for minutes
    ("degree-twice", "axis A, B, C\naxis D = ((A+B+C)^64)^64\naxis D = ((A+B+C)^64)^64\n" + IDENTITY,
     ["check"], 2, ["degree", "limit"]),
    ("terms-reshape", "axis A, B, C\naxis D = (A+B+C)^64\naxis E = (A+B+2*C)^64\n"
     "block F(x: [D]) -> [E] {\n    return x[D -> E]\n}\n", ["check"], 2, ["terms", "limit"]),
    ("degree-product", "axis A\naxis D = A^40 * A^40\n" + IDENTITY, ["check"], 2, ["degree 80"]),
    ("exponent-axis", "axis A\naxis D = 2^A\n" + IDENTITY, ["check", "--set", "A=100000"], 2, ["exponent"]),
    ("bound-power-bits", "axis A\naxis D = A^20 + A\n" + IDENTITY,
     ["check", "--set", f"A={2**62}"], 2, ["bits", "limit"]),
    ("numeric-power", "axis D = ((2^64)^64)^64\n" + IDENTITY, ["check"], 1, ["out of range"]),
    # item 3: allocation compared with the memory limit before anything is allocated
    ("param-1e15", "axis D = 10^15\nblock F(x: [D]) -> [D] {\n    param W: [D] init zeros\n    return x * W\n}\n",
     ["run"], 2, ["input x", "memory limit"]),
    ("param-1e15-load", "axis D = 10^15, E = 4\nblock F(x: [E]) -> [E] {\n    param W: [D] init zeros\n"
     "    return x\n}\n", ["run"], 3, ["parameter W", "memory limit"]),
    ("memory-limit-beyond-int64", "axis D = 4\n" + IDENTITY, ["run", "--memory-limit", "1e30"], None,
     ["memory-limit"]),
    ("batch-1e10", "axis D = 4\n" + IDENTITY, ["run", "--set", "B=10000000000"], 2, ["input x", "memory limit"]),
    ("repeated-2048-squared", "axis D = 2048\nblock L(x: [D]) -> [D] {\n    param W: [D, D'] init zeros\n"
     "    return (x @[D] W)[D' -> D]\n}\nblock M(x: [D]) -> [D] {\n    use l = L × 4096\n    return l(x)\n}\n",
     ["run"], 3, ["4096 copies", "memory limit"]),
    ("padding-1e12", "axis C = 1, K = 3, Y = 8, Y2\nblock F(x: [C, Y]) -> [C, Y2] {\n"
     "    param W: [C, C', K] init normal(0, 0.1)\n"
     "    return conv(x, W, over = [Y] -> [Y2], kernel = [K], padding = 1000000000000)[C' as C]\n}\n",
     ["run"], 4, ["padding"]),
    ("padding-1e9", "axis C = 1, K = 3, Y = 8, Y2\nblock F(x: [C, Y]) -> [C, Y2] {\n"
     "    param W: [C, C', K] init normal(0, 0.1)\n"
     "    return conv(x, W, over = [Y] -> [Y2], kernel = [K], padding = 1000000000)[C' as C]\n}\n",
     ["run"], 4, ["conv", "memory limit"]),
    ("repeat-stmt-count", "axis D = 4\nblock F(x: [D]) -> [D] {\n    repeat 1000000000 { x = tanh(x) }\n"
     "    return x\n}\n", ["check"], 3, ["at most 4096"]),
    ("nested-repeats", "axis D = 4\nblock F(x: [D]) -> [D] {\n    repeat 4096 {\n"
     "        repeat 4096 { x = tanh(x) }\n        x = x * 1\n    }\n    return x\n}\n", ["check"], 4,
     ["4096 times in all"]),
    ("nesting-150", nested(150), ["run"], None, ["nest", "limit of 64"]),
    # more of the same spirit
    ("derived-beyond-int64", "axis A = 10^10\naxis D = A * A\n" + IDENTITY, ["check"], 2, ["2^63"]),
    ("set-derived-beyond-int64", "axis H, K\naxis D = H * K\n" + IDENTITY,
     ["check", "--set", f"H={2**40}", f"K={2**40}"], 2, ["2^63"]),
    ("literal-1e400", "axis D = 4\nblock F(x: [D]) -> [D] {\n    return x * 1e400\n}\n", ["check"], 3,
     ["out of range"]),
    ("formula-exponent", "axis D = 4\nblock F(x: [D]) -> [D] {\n    return x * 2^100000\n}\n", ["check"], 3,
     ["out of range"]),
    ("formula-power-tower", "axis D = 4\nblock F(x: [D]) -> [D] {\n    return x * 9^9^9\n}\n", ["check"], 3,
     ["out of range"]),
    ("thousand-digit-number", "axis D = 4\nblock F(x: [D]) -> [D] {\n    return x * 1" + "0" * 1000 + "\n}\n",
     ["check"], 3, ["out of range"]),
    ("axis-size-1e400", "axis D = 1e400\n" + IDENTITY, ["check"], 1, ["out of range"]),
    ("repeat-count-huge", "axis D = 4\nblock L(x: [D]) -> [D] {\n    return tanh(x)\n}\n"
     "block M(x: [D]) -> [D] {\n    use l = L × 100000000000000000000\n    return l(x)\n}\n", ["check"], 6,
     ["at most 4096"]),
    ("halting-max-huge", "axis T, D = 4\nblock UT(x: [T, D]) -> [T, D] {\n    param w: [D] init zeros\n"
     "    y, p = halting n max 1000000000 eps 0.01 mix graves carry (s: [T, D] = x) {\n        s = tanh(s)\n"
     "        halt sigmoid(s @[D] w)\n    }\n    return y\n}\n", ["check"], 4, ["at most 4096"]),
    ("wide-param-1e10", "axis D = 100000, E = 100000\nblock F(x: [D]) -> [E] {\n"
     "    param W: [D, E] init normal(0, 1)\n    return x @[D] W\n}\n", ["run"], 3, ["parameter W", "memory limit"]),
    ("huge-conv-kernel", "axis C = 1, K = 1000000001, Y\nblock F(x: [C, Y]) -> [C, Y] {\n"
     "    param W: [C, C', K] init normal(0, 0.1)\n"
     "    return conv(x, W, over = [Y], kernel = [K], padding = 500000000)[C' as C]\n}\n",
     ["run", "--set", "Y=4"], 3, ["memory limit"]),
    ("scan-length-huge", "axis T, D = 4\nblock R(x: [T, D]) -> [T, D] {\n    param W: [D, D'] init zeros\n"
     "    return scan t over T carry (h: [D] = 0) {\n        h = tanh(x[t] + (h @[D] W)[D' as D])\n"
     "        emit h\n    }\n}\n", ["run", "--set", "T=1000000000000"], 2, ["input x", "memory limit"]),
    ("const-buffer-huge", "axis D = 100000000000\nblock F(x: [D]) -> [D] {\n"
     "    const c: [D] = idx(D) * 2\n    return x * c\n}\n", ["run"], None, ["memory limit"]),
    ("derived-size-in-param", "axis H = 65536\naxis D = H * H\nblock F(x: [H]) -> [H] {\n"
     "    param W: [D] init zeros\n    return x\n}\n", ["run"], 4, ["parameter W", "memory limit"]),
    ("nesting-65", nested(65), ["check"], None, ["limit of 64"]),
    ("memory-limit-option", "axis D = 1024\nblock F(x: [D]) -> [D] {\n    param W: [D, D'] init zeros\n"
     "    return (x @[D] W)[D' as D]\n}\n", ["run", "--memory-limit", "1MB"], 3, ["977 KiB", "memory limit"]),
]


@pytest.mark.parametrize("name,text,args,line,needles", ERRORS, ids=[c[0] for c in ERRORS])
def test_refused(spec, name, text, args, line, needles):
    command, *rest = args
    out = run_cli(command, spec(text), *rest)
    assert_ncd_error(out, *needles, located=line is not None or name.startswith(("nesting", "const")), line=line)


def test_set_beyond_int64(spec):
    """The command line refuses it as a bad command line (exit 2); the API, at the axis."""
    out = run_cli("check", spec("axis D\n" + IDENTITY), "--set", f"D={2**70}")
    assert_bounded(out)
    assert out.rc == 2 and "2^63" in out.stderr, out
    code = f"import ncd\nncd.check({('axis D' + chr(10) + IDENTITY)!r}, D=2**70)"
    assert_ncd_error(run_python(code), "2^63", line=1)


def test_many_axes_is_quick(spec):
    names = [f"A{i}" for i in range(2000)]
    text = "axis " + ", ".join(f"{n} = 2" for n in names) + "\nblock F(x: [A0]) -> [A0] {\n    return x\n}\n"
    assert_ok(run_cli("check", spec(text)))


def test_sum_of_64_axes_round_trips(spec):
    """The IR's bounded size parser reads back the largest sizes the checker lets a spec write."""
    names = [f"A{i}" for i in range(64)]
    text = (f"axis {', '.join(names)}\naxis S = {' + '.join(names)}\naxis P = {' * '.join(names)}\n"
            "block F(x: [S], y: [P]) -> [S] {\n    return x\n}\n")
    sets = [f"{n}=1" for n in names]
    assert_ok(run_cli("run", spec(text), "--set", *sets))


def test_long_line_is_bounded(spec):
    text = "axis D = 4\nblock F(x: [D]) -> [D] {\n    return " + " + ".join(["x"] * 20000) + "\n}\n"
    assert_ok_or_ncd_error(run_cli("check", spec(text)))


def test_deep_expression_is_bounded(spec):
    text = "axis D = 4\nblock F(x: [D]) -> [D] {\n    return " + "tanh(" * 5000 + "x" + ")" * 5000 + "\n}\n"
    assert_ok_or_ncd_error(run_cli("check", spec(text)))


def test_repeat_at_the_cap_runs(spec):
    text = "axis D = 4\nblock F(x: [D]) -> [D] {\n    repeat 4096 { x = tanh(x) }\n    return x\n}\n"
    assert_ok(run_cli("run", spec(text)))


def test_nesting_at_the_limit_runs_forward_and_backward(spec):
    assert_ok(run_cli("run", spec(nested(64)), "--backward"))


def test_memory_limit_bad_value(spec):
    assert_ncd_error(run_cli("run", spec("axis D = 4\n" + IDENTITY), "--memory-limit", "lots"),
                     "memory-limit", located=False)


# ------------------------------------------------------------------ ncd.load from Python
LOAD_CASES = [
    ("load-memory-limit", "import ncd\nncd.load('axis D = 4096\\nblock F(x: [D]) -> [D] {\\n    param W: [D, E] "
     "init zeros\\n    return (x @[D] W)[E -> D]\\n}\\n'.replace('E', chr(68) + chr(39)), memory_limit='1MB')",
     ["memory limit"]),
    ("load-huge-binding", "import ncd\nncd.load('axis D\\nblock F(x: [D]) -> [D] {\\n    param W: [D] init zeros\\n"
     "    return x * W\\n}\\n', D=10**15)", ["parameter W", "memory limit"]),
    ("load-binding-beyond-int64", "import ncd\nncd.load('axis D\\nblock F(x: [D]) -> [D] {\\n    return x\\n}\\n',"
     " D=10**30)", ["D"]),
    ("load-env-limit", "import os\nos.environ['NCD_MEMORY_LIMIT'] = '1KB'\nimport ncd\n"
     "ncd.load('axis D = 1024\\nblock F(x: [D]) -> [D] {\\n    param W: [D] init zeros\\n    return x * W\\n}\\n')",
     ["memory limit of 1000 B"]),
]


@pytest.mark.parametrize("name,code,needles", LOAD_CASES, ids=[c[0] for c in LOAD_CASES])
def test_load_refused(name, code, needles):
    assert_ncd_error(run_python(code), *needles, located=name != "load-binding-beyond-int64")


# ------------------------------------------------------------------ sizes read from IR JSON
SMALL = "axis D = 4, H = 2\naxis K = D / H\nblock F(x: [D]) -> [D] {\n    param W: [K] init zeros\n    return x\n}\n"
ABSURD_SIZES = {
    "power-tower": "9**9**9",
    "sum-1e5-terms": "+".join(["D"] * 100000),
    "sum-5000-terms": "+".join(["D"] * 5000),
    "deep-parens": "(" * 150 + "D" + ")" * 150,
    "exp-exp": "exp(exp(exp(100)))",
    "float-overflow": "1e999",
    "huge-integer": "1" + "0" * 4000,
    "degree": "D**100000",
    "code": "__import__('os').system('touch PWNED')",
    "lambda": "(lambda: 1)()",
    "attribute": "D.__class__",
    "beyond-int64": "2**80",
}


@pytest.fixture(scope="module")
def small_ir() -> dict:
    import ncd

    return json.loads(ncd.check(SMALL).model_dump_json())


@pytest.mark.parametrize("name", sorted(ABSURD_SIZES))
def test_ir_json_sizes(tmp_path: Path, small_ir: dict, name: str):
    data = json.loads(json.dumps(small_ir))
    data["axes"]["K"]["size"] = ABSURD_SIZES[name]
    path = tmp_path / "ir.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    out = run_cli("ir", "--from-json", str(path))
    assert_ok_or_ncd_error(out, located=False)
    load = (f"import json\nfrom ncd.ir import SpecIR\nfrom ncd.backends.pytorch import compile_module\n"
            f"compile_module(SpecIR.model_validate(json.load(open({str(path)!r}))))")
    assert_ok_or_ncd_error(run_python(load), located=False)


def test_ir_json_huge_binding(tmp_path: Path, small_ir: dict):
    data = json.loads(json.dumps(small_ir))
    data["axes"]["D"]["size"] = None
    data["axes"]["K"]["size"] = "D"
    data["bindings"] = {"D": 10**30}
    path = tmp_path / "ir.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    assert_ok_or_ncd_error(run_cli("ir", "--from-json", str(path)), located=False)
    load = (f"import json\nfrom ncd.ir import SpecIR\nfrom ncd.backends.pytorch import compile_module\n"
            f"compile_module(SpecIR.model_validate(json.load(open({str(path)!r}))))")
    assert_ncd_error(run_python(load), "D", located=False)


# ------------------------------------------------------------------ cost and numbers at huge sizes
def test_cost_at_the_largest_sizes(spec):
    text = ("axis D, F\nblock M(x: [D]) -> [D] {\n    param W: [D, F] init zeros\n    param V: [F, D'] init zeros\n"
            "    return (relu(x @[D] W) @[F] V)[D' as D]\n}\n")
    assert_ok(run_cli("cost", spec(text), "--set", f"D={2**62}", f"F={2**62}"))


def test_number_formula_power_of_a_bound_axis(spec):
    text = "axis D\nblock F(x: [D]) -> [D] {\n    return x * 2^D\n}\n"
    assert_ok_or_ncd_error(run_cli("run", spec(text), "--set", "D=1000000"))


def test_ir_json_number_node_tower(tmp_path: Path):
    import ncd

    data = json.loads(ncd.check("axis D = 4\nblock F(x: [D]) -> [D] {\n    return x * 3\n}\n").model_dump_json())
    numbers = [n for n in data["blocks"]["F"]["nodes"] if n["op"] == "number"]
    assert numbers, "the spec has a number node to tamper with"
    numbers[0]["attrs"]["value"] = "2**(2**(2**D))"
    path = tmp_path / "ir.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    load = (f"import json\nfrom ncd.ir import SpecIR\nfrom ncd.backends.pytorch import compile_module\n"
            f"compile_module(SpecIR.model_validate(json.load(open({str(path)!r}))))")
    assert_ncd_error(run_python(load), "bits", located=False)


def test_bound_high_degree_derived_axis_is_not_solved_for_minutes(spec):
    text = "axis A\naxis D = A^64 + A^63 + 1\n" + IDENTITY
    assert_ok_or_ncd_error(run_cli("check", spec(text), "--set", "D=12345"))
