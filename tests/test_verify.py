"""The IR verifier (ncd/verify.py): every library spec's IR is sound; hand-broken IR is refused, located."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

import ncd
from ncd.cli import main
from ncd.errors import NcdError
from ncd.ir import SpecIR
from ncd.verify import STRUCTURAL, VerifyError, load_ir_json, verify

SPECS = sorted(Path(__file__).resolve().parents[1].joinpath("specs").glob("*.ncd"))

SPEC = """axis D = 4, T
block Cell(x: [D]) -> [D] {
  param W: [D, D'] init normal(0, 0.5)
  return tanh(x @[D] W)[D' as D]
}
block Net(xs: [T, D], y: [D]) -> [T, D] {
  use cell = Cell
  tap seen = y
  s = scan t over T carry (h: [D] = 0) {
    h = cell(h + xs[T = t])
    emit h
  }
  return where(s < y, s, y)
}
"""


@pytest.mark.parametrize("path", SPECS, ids=[p.stem for p in SPECS])
def test_every_library_spec_verifies_after_build_and_after_a_json_round_trip(path):
    ir = ncd.check(path)
    verify(ir)
    verify(SpecIR.model_validate_json(ir.model_dump_json()))


def data() -> dict:
    return json.loads(ncd.check(SPEC).model_dump_json())


def node(d: dict, op: str, block: str = "Net") -> dict:
    return next(n for n in d["blocks"][block]["nodes"] if n["op"] == op)


def scan_region(d: dict) -> dict:
    return node(d, "scan")["regions"][0]


def broken(d: dict, match: str) -> VerifyError:
    with pytest.raises(VerifyError, match=match) as exc:
        verify(SpecIR.model_validate(d))
    return exc.value


def test_the_example_is_sound():
    verify(SpecIR.model_validate(data()))


def test_undefined_id():
    d = data()
    cmp = node(d, "compare")
    cmp["inputs"][0] = "nowhere_99"
    err = broken(d, "input 'nowhere_99' is not defined")
    assert f"id {cmp['id']!r}" in err.message and "block 'Net'" in err.message
    assert err.span is not None and err.span.line == cmp["loc"]["line"] and err.span.col == cmp["loc"]["col"]


def test_use_before_definition():
    d = data()
    nodes = d["blocks"]["Net"]["nodes"]
    i = next(k for k, n in enumerate(nodes) if n["op"] == "compare")
    j = next(k for k, n in enumerate(nodes) if n["id"] == nodes[i]["inputs"][0])
    nodes[i], nodes[j] = nodes[j], nodes[i]  # the comparison now comes before what it reads
    err = broken(d, "used before it is defined")
    assert "node " in err.message


def test_a_region_value_is_not_visible_after_its_region():
    d = data()
    inner = scan_region(d)["nodes"][-1]["id"]
    node(d, "compare")["inputs"][0] = inner
    broken(d, f"input '{inner}' is used before it is defined, or outside the region that defines it")


def test_wrong_stored_wire_type():
    d = data()
    node(d, "compare")["types"][0]["dtype"] = "float"  # a comparison gives a bool wire
    err = broken(d, "stored types .* differ from its typing rule's")
    assert "bool" in err.message


def test_wrong_stored_axes_of_a_structural_node():
    d = data()
    node(d, "tap")["types"][0]["axes"] = ["T"]
    broken(d, "stored types")


def test_unknown_node_kind():
    d = data()
    node(d, "compare")["op"] = "eval"
    err = broken(d, "unknown node kind")
    assert "op 'eval'" in err.message and "scan" in err.hint


def test_bad_attribute_type():
    d = data()
    node(d, "scan")["attrs"]["reverse"] = "yes"
    broken(d, "'reverse' is true or false")
    d = data()
    node(d, "scan")["attrs"]["axis"] = "Nope"
    broken(d, "'axis' = 'Nope' is not an axis")
    d = data()
    node(d, "tuple_get" if any(n["op"] == "tuple_get" for n in d["blocks"]["Net"]["nodes"]) else "input")[
        "attrs"]["index"] = "0"
    broken(d, "attribute 'index'")


def test_bad_comparison_operator():
    d = data()
    node(d, "compare")["attrs"]["cmp"] = '< __import__("os").system("touch PWNED") <'
    broken(d, "comparison operator .* is not one of")


@pytest.mark.parametrize("bad", ['x = __import__("os")', "class", "torch", "x_1_steps0", "nét_1", ""])
def test_bad_identifier(bad):
    d = data()
    cmp = node(d, "compare")
    old = cmp["id"]
    cmp["id"] = bad
    d["blocks"]["Net"]["results"] = [bad if r == old else r for r in d["blocks"]["Net"]["results"]]
    err = broken(d, "the id ")
    assert repr(bad) in err.message


def test_duplicate_id():
    d = data()
    nodes = d["blocks"]["Net"]["nodes"]
    nodes[1]["id"] = nodes[0]["id"]
    broken(d, "defined twice")


@pytest.mark.parametrize("field,value,match", [
    ("param", 'W = __import__("os")', "not a name of the language"),
    ("param", "training", "reserved"),
    ("param", "_parameters", "reserved"),
    ("tap", "seen'); import os; ('", "not a name of the language"),
    ("instance", "lambda x: x", "not a name of the language"),
])
def test_bad_attribute_names(field, value, match):
    d = data()
    block = "Cell" if field == "param" else "Net"
    if field == "param":
        d["blocks"]["Cell"]["params"][0]["name"] = value
        node(d, "param", "Cell")["attrs"]["name"] = value
    elif field == "tap":
        d["blocks"]["Net"]["taps"] = [value]
        node(d, "tap")["attrs"]["name"] = value
    else:
        d["blocks"]["Net"]["instances"][0]["name"] = value
    err = broken(d, match)
    assert f"block '{block}'" in err.message


def test_region_shape_is_checked():
    d = data()
    scan_region(d)["results"].pop()
    broken(d, "region gives 1 results, not 2")
    d = data()
    scan_region(d)["kind"] = "repeat"
    broken(d, "region's kind")
    d = data()
    node(d, "scan")["regions"] = []
    broken(d, "exactly one region")


def test_call_is_checked_against_its_instance():
    d = data()
    call = next(n for n in scan_region(d)["nodes"] if n["op"] == "call")
    call["attrs"]["instance"] = "other"
    broken(d, "'instance' = 'other' is not an instance")


def test_every_structural_kind_the_builder_makes_has_a_rule():
    seen = set()
    for path in SPECS:
        from ncd.ir import walk

        ir = ncd.check(path)
        for block in ir.blocks.values():
            seen |= {n.op for n in walk(block.nodes)}
            for p in block.params:
                seen |= {n.op for n in walk(p.init.nodes)} if p.init else set()
    from ncd.ops import OPS

    assert seen - set(OPS) <= set(STRUCTURAL)
    assert {"input", "scan", "call", "number", "tuple_get"} <= seen


def test_load_ir_json_locates_the_error_in_the_spec():
    d = data()
    node(d, "compare")["op"] = "system"
    with pytest.raises(NcdError) as exc:
        load_ir_json(json.dumps(d), "ir.json")
    text = str(exc.value)
    assert text.startswith("ir.json (IR of '<spec>'):13:")
    assert "unknown node kind" in text and "hint:" in text


def test_ir_from_json_of_broken_ir_exits_1_without_a_traceback(tmp_path, capsys):
    d = data()
    node(d, "compare")["inputs"][0] = "nowhere_99"
    path = tmp_path / "ir.json"
    path.write_text(json.dumps(d), encoding="utf-8")
    assert main(["ir", "--from-json", str(path)]) == 1
    err = capsys.readouterr().err
    assert "nowhere_99" in err and "not defined" in err and "Traceback" not in err
    assert f"{path} (IR of '<spec>'):" in err


# ---------------------------------------------------------------- loop caps and block graph (issue 9)
LOOPS_SPEC = """axis D = 4
block L(x: [D]) -> [D] {
  repeat 2 {
    repeat 3 { x = tanh(x) }
  }
  return x
}
block M(x: [D]) -> [D] {
  use l = L × 5
  return l(x)
}
"""


def loops_data() -> dict:
    return json.loads(ncd.check(LOOPS_SPEC).model_dump_json())


def repeats_of(d: dict) -> tuple[dict, dict]:
    outer = node(d, "repeat", "L")
    inner = next(n for n in outer["regions"][0]["nodes"] if n["op"] == "repeat")
    return outer, inner


def test_loops_example_is_sound():
    verify(SpecIR.model_validate(loops_data()))


def test_a_tampered_repeat_count_beyond_the_cap():
    d = loops_data()
    repeats_of(d)[1]["attrs"]["count"] = 10**9
    broken(d, "attribute 'count' = 1000000000 is not a count from 1 to 4096")


def test_nested_repeats_composing_beyond_the_cap():
    """Each count is within the cap, their product (the times the body runs) is not."""
    d = loops_data()
    outer, inner = repeats_of(d)
    outer["attrs"]["count"], inner["attrs"]["count"] = 100, 100
    err = broken(d, "a loop body would run 10000 times in all")
    assert err.span is not None and err.span.line == inner["loc"]["line"]


def test_repeats_composed_through_a_block_call_beyond_the_cap():
    """L's loops run 2 × 3 times; 1000 chained copies of it in M run 6000 times: the builder's
    cap on loops composed across blocks (ncd/frontend/unrolled.py), re-checked on the IR."""
    d = loops_data()
    d["blocks"]["M"]["instances"][0]["repeat"] = 1000
    node(d, "call", "M")["attrs"]["repeat"] = 1000
    err = broken(d, "would run 6000 times in all: 1000 chained copies of block L")
    assert err.span is not None and err.span.line == node(d, "call", "M")["loc"]["line"]


def test_a_tampered_instance_repeat_beyond_the_cap():
    d = loops_data()
    d["blocks"]["M"]["instances"][0]["repeat"] = 10**6
    broken(d, "instance 'l' repeats 1000000 times, not 1 to 4096")


def test_a_tampered_halting_max_beyond_the_cap():
    ir = ncd.check("axis D = 4\nblock H(x: [D]) -> [D] {\n  param w: [D] init zeros\n"
                   "  y, p = halting n max 8 eps 0.01 mix graves carry (s: [D] = x) {\n    s = tanh(s)\n"
                   "    halt sigmoid(s @[D] w)\n  }\n  return y\n}\n")
    d = json.loads(ir.model_dump_json())
    node(d, "halting", "H")["attrs"]["max"] = 10**7
    broken(d, "attribute 'max' = 10000000 is not a count from 1 to 4096")


def test_a_block_using_itself():
    d = loops_data()
    d["blocks"]["M"]["instances"][0]["block"] = "M"
    node(d, "call", "M")["attrs"]["block"] = "M"
    broken(d, "block 'M'.*uses block 'M', which uses it in turn")


def test_blocks_nested_beyond_the_limit(monkeypatch):
    d = loops_data()
    monkeypatch.setattr("ncd.verify.MAX_BLOCK_NESTING", 1)
    broken(d, "nest 2 deep from here, more than the limit of 1")


def test_regions_nested_beyond_the_limit(monkeypatch):
    d = loops_data()
    monkeypatch.setattr("ncd.verify.MAX_BODY_NESTING", 1)
    broken(d, "regions nest 2 deep, more than the limit of 1")


def test_ir_from_json_refuses_a_tampered_count(tmp_path, capsys):
    d = loops_data()
    repeats_of(d)[0]["attrs"]["count"] = 5000
    path = tmp_path / "ir.json"
    path.write_text(json.dumps(d), encoding="utf-8")
    assert main(["ir", "--from-json", str(path)]) == 1
    err = capsys.readouterr().err
    assert "4096" in err and "Traceback" not in err


# ---------------------------------------------------------------- where's numbers (the typing rule's range path)
WHERE_SPEC = """axis D = 4
block W(x: [D]) -> [D] {
  return where(x > 0, x, 2)
}
"""


def where_number(d: dict) -> dict:
    where = node(d, "where", "W")
    ids = {n["id"]: n for n in d["blocks"]["W"]["nodes"]}
    return ids[where["inputs"][2]]


def test_where_with_a_number_verifies():
    verify(SpecIR.model_validate(json.loads(ncd.check(WHERE_SPEC).model_dump_json())))


def test_where_with_a_number_beyond_float32():
    d = json.loads(ncd.check(WHERE_SPEC).model_dump_json())
    where_number(d)["attrs"]["value"] = "1e300"
    err = broken(d, "out of float32's range")
    assert err.span is not None and err.span.line == 3


def test_where_with_a_number_beyond_int64_on_an_integer_wire():
    ir = ncd.check("axis D = 4\nblock W(x: [D] int) -> [D] int {\n  return where(x > 0, x, 2)\n}\n")
    d = json.loads(ir.model_dump_json())
    where_number(d)["attrs"]["value"] = str(10**30)
    broken(d, "beyond an integer wire's range")
