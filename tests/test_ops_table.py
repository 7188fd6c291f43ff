"""Every row of the op table, on its own one-op spec, against oracles the row did not write.

For each op in ``ncd.ops.OPS``:
- it has a cost rule and a line in docs/language.md's op reference;
- its one-op spec (the row's ``example``, or the default below for elementwise and reduce rows)
  checks, loads, and gives the values torch itself gives (REFERENCES, written here from
  torch / torch.nn.functional; a unary row without one is compared with its declared torch
  function called directly, fixed keywords included);
- the emitted Python gives the same outputs, bit for bit;
- the analyzer's contraction FLOPs equal ``FlopCounterMode`` (forward, forward + backward), and
  its saved-activation bytes equal what ``saved_tensors_hooks`` sees.

A new row that lowers to the wrong function, drops its fixed keyword arguments (a
``gelu_tanh`` lowering to exact GELU), costs nothing or saves nothing fails here.
"""
from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

import ncd
from ncd.analysis import analyze
from ncd.backends.pytorch.emit import emit_python
from ncd.backends.pytorch.module import resolve
from ncd.ops import OPS
from ncd.ops.base import example_spec
from ncd.ops.elementwise import UNARY

ROOT = Path(__file__).resolve().parents[1]
LANGUAGE = (ROOT / "docs" / "language.md").read_text(encoding="utf-8")
BATCH = 2  # every input carries one leading lifted dim of this size


def example_of(name: str) -> str | None:
    """The row's own example, or the default one-op spec for a plain elementwise / reduce row."""
    op = OPS[name]
    if op.example is not None:
        return op.example
    required = [k for k, kw in op.kwargs.items() if kw.required]
    if op.family == "elementwise" and op.syntax is None and not required:
        if op.arity == (1, 1):
            return example_spec("A = 3, B = 4", "x: [A, B]", "[A, B]", f"return {name}(x)")
        if op.arity == (2, 2):
            return example_spec("A = 3, B = 4", "x: [A, B], y: [B]", "[A, B]", f"return {name}(x, y)")
    if op.family in ("reduce", "normalise") and required == ["over"]:
        out = "[A]" if op.family == "reduce" else "[A, B]"
        return example_spec("A = 3, B = 4", "x: [A, B]", out, f"return {name}(x, over = B)")
    return None


def _y(y):  # y: [B] against x: [A, B], both with the batch dim in front
    return y[:, None, :]


# Written from torch's documentation, not from the lowerings: the value each example must give.
REFERENCES = {
    "add": lambda x, y: x + _y(y), "sub": lambda x, y: x - _y(y), "mul": lambda x, y: x * _y(y),
    "div": lambda x, y: x / _y(y), "pow": lambda x, y: torch.pow(x, _y(y)), "neg": lambda x: -x,
    "compare": lambda x, y: torch.where(x < _y(y), x, _y(y).expand_as(x)),
    "where": lambda x, y: torch.where(x > 0, x, _y(y).expand_as(x)),
    "clamp": lambda x: torch.clamp(x, -0.5, 0.5),
    "relu": F.relu, "tanh": torch.tanh, "sigmoid": torch.sigmoid, "exp": torch.exp, "log": torch.log,
    "sqrt": torch.sqrt, "rsqrt": torch.rsqrt, "abs": torch.abs, "sin": torch.sin, "cos": torch.cos,
    "erf": torch.special.erf, "sign": torch.sign, "gelu": lambda x: F.gelu(x, approximate="none"),
    "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"), "silu": F.silu, "swish": F.silu,
    "softplus": F.softplus, "logsigmoid": F.logsigmoid, "leaky_relu": lambda x: F.leaky_relu(x, 0.01),
    "step": lambda x: (x > 0).to(x.dtype),
    "sum": lambda x: x.sum(-1), "mean": lambda x: x.mean(-1), "max": lambda x: x.amax(-1),
    "min": lambda x: x.amin(-1), "logsumexp": lambda x: torch.logsumexp(x, -1),
    "softmax": lambda x: F.softmax(x, -1), "log_softmax": lambda x: F.log_softmax(x, -1),
    "cumsum": lambda x: torch.cumsum(x, -1),
    "layernorm": lambda x: F.layer_norm(x, (4,), eps=1e-5),
    "rmsnorm": lambda x: x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6),
    "l2norm": lambda x: F.normalize(x, dim=-1, eps=1e-12),
    "contract": lambda x, y: torch.bmm(x, y),
    "rename": lambda x: x, "reshape": lambda x: x.reshape(BATCH, 3, 8), "select": lambda x: x[:, 1],
    "annotate": lambda x: x.transpose(1, 2), "concat": lambda x, y: torch.cat([x, y], -1),
    "split": lambda x: x[..., 4:] * 2 + x[..., 0:1],
    "idx": lambda x: x * torch.arange(4, dtype=x.dtype),
    "values": lambda x: x * torch.tensor([1, 0.5, -2, 1 / 3], dtype=x.dtype),
    "conv": lambda x, w: F.conv2d(x, w, padding=1),  # w: the example's parameter, W[D, C, KY, KX]
    "conv_transpose": lambda x, w: F.conv_transpose2d(x, w.transpose(0, 1), stride=2),
    "maxpool": lambda x: F.max_pool2d(x, 2), "avgpool": lambda x: F.avg_pool2d(x, 3, 1, 1),
    "upsample": lambda x: F.interpolate(x, scale_factor=2, mode="nearest"),
    "inv": lambda x: torch.linalg.inv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1),
    "lookup": lambda x: torch.gather(x, -1, torch.argmax(x, -1, keepdim=True))[..., 0],
    "one_hot": lambda x: F.one_hot(torch.argmax(x, -1), 4).to(x.dtype) * x,
    "argmax": lambda x: torch.argmax(x, -1), "argmin": lambda x: torch.argmin(x, -1),
    "as_float": lambda x: (x > 0).to(x.dtype) * x,
    "maximum": lambda x, y: torch.maximum(x, _y(y)) + torch.clamp(x, max=0.5),
    "batchnorm": lambda x: F.batch_norm(x, torch.zeros(3, dtype=x.dtype), torch.ones(3, dtype=x.dtype), training=True),
    # the random rows draw from torch's global generator (the test seeds it with 0 before each
    # call): their definitions, written plainly with that generator's draws
    "dropout": lambda x: _seeded(lambda: torch.where(torch.rand(x.shape, dtype=x.dtype) >= 0.25, x / 0.75, 0.0)),
    "uniform": lambda x, y: _seeded(lambda: x + (_y(y) - x) * torch.rand(x.shape, dtype=x.dtype)),
    "normal": lambda x, y: _seeded(lambda: x + _y(y) * torch.randn(x.shape, dtype=x.dtype)),
    # inverse CDF: the index is the number of categories whose cumulative probability is <= u
    "categorical": lambda x: _seeded(lambda: (torch.cumsum(F.softmax(x, -1), -1)
                                              <= torch.rand((*x.shape[:-1], 1), dtype=x.dtype)
                                              * F.softmax(x, -1).sum(-1, keepdim=True)).sum(-1)),
    "minimum": lambda x, y: torch.minimum(x, _y(y)) + torch.clamp(x, min=-0.5),
    "slice": lambda x: x[:, 1:-1] * 2,
}
POSITIVE = {"log", "sqrt", "rsqrt", "pow"}  # defined on positive inputs only


def _seeded(draw):
    torch.manual_seed(0)
    return draw()

OP_NAMES = sorted(OPS)


def _inputs(ir, name: str, dtype=torch.float64) -> list[torch.Tensor]:
    sizes = {a: int(d.size) for a, d in ir.axes.items() if d.size is not None and d.size.isdigit()}
    sizes.update(ir.bindings)
    gen = torch.Generator().manual_seed(0)
    out = []
    for port in ir.entry_block.inputs:
        shape = (BATCH, *(sizes[a] for a in port.type.axes))
        x = torch.randn(shape, generator=gen, dtype=dtype)
        out.append(x.abs() + 0.1 if name in POSITIVE else x)
    return out


def _load_emitted(source: str, tmp_path: Path):
    path = tmp_path / "emitted_op.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("emitted_op", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # our own generated code, for the test
    return module


@pytest.mark.parametrize("name", OP_NAMES)
def test_every_op_has_a_cost_rule_an_example_and_a_doc_entry(name):
    op = OPS[name]
    assert op.cost is not None, f"op {name} has no cost rule: give its row cost=..."
    assert op.doc, f"op {name} has no one-line doc"
    assert example_of(name) is not None, f"op {name} has no example: give its row example=example_spec(...)"
    reference = LANGUAGE[LANGUAGE.index("## Op reference"):]
    assert re.search(rf"^\| `{re.escape(name)}` \|", reference, re.M), \
        f"op {name} has no row `| `{name}` | ...` in docs/language.md's op reference"
    assert name in REFERENCES or name in UNARY, f"op {name} has no torch reference in tests/test_ops_table.py"


@pytest.mark.parametrize("name", OP_NAMES)
def test_every_op_matches_torch_interpreted_and_emitted(name, tmp_path):
    source = example_of(name)
    ir = ncd.check(source)
    module = ncd.load(source).double()
    inputs = _inputs(ir, name)
    torch.manual_seed(0)  # the random rows draw from torch's global generator
    got = module(*inputs)
    if name in REFERENCES:  # the example's parameters (if any) follow its inputs, by name
        want = REFERENCES[name](*inputs, **dict(module.named_parameters()))
    else:  # a unary row: its declared torch function, with the keywords it always passes
        row = UNARY[name]
        want = resolve(row.fn)(*inputs, **row.fixed, **{kw: d for kw, d in row.options.values()})
    torch.testing.assert_close(got, want, equal_nan=True)
    emitted = _load_emitted(emit_python(ir, class_name="Entry"), tmp_path).Entry().double()
    emitted.load_state_dict(module.state_dict())
    torch.manual_seed(0)
    torch.testing.assert_close(emitted(*inputs), got, rtol=0, atol=0, equal_nan=True)


def _measure(module, inputs):
    """(forward FLOPs, forward+backward FLOPs, saved activation bytes) as torch counts them;
    parameters autograd keeps are weights, not activations."""
    saved: dict[int, int] = {}
    params = {p.untyped_storage().data_ptr() for p in module.parameters()}

    def pack(t):
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            saved[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.backends.mkldnn.flags(enabled=False), FlopCounterMode(display=False) as counter:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            out = module(*inputs)
        fwd = counter.get_total_flops()
        if out.requires_grad:
            out.float().sum().backward()
        total = counter.get_total_flops()
    return fwd, total, sum(saved.values())


@pytest.mark.parametrize("name", OP_NAMES)
def test_every_op_costs_what_torch_counts(name):
    source = example_of(name)
    ir = ncd.check(source)
    module = ncd.load(source)
    inputs = [x.float().requires_grad_() for x in _inputs(ir, name)]
    fwd, total, saved = _measure(module, inputs)
    report = analyze(ir, {"N": BATCH}, input_grad=True, batch="N")
    cost = report.numbers(report.total)
    assert cost["matmul_flops_fwd"] == fwd, f"{name}: contraction FLOPs {cost['matmul_flops_fwd']} != {fwd}"
    assert cost["matmul_flops_fwd"] + cost["matmul_flops_bwd"] == total, \
        f"{name}: forward + backward FLOPs {cost['matmul_flops_fwd'] + cost['matmul_flops_bwd']} != {total}"
    assert cost["activation_bytes"] == saved, \
        f"{name}: the cost rule saves {cost['activation_bytes']} B, torch's autograd saved {saved} B"


# ------------------------------------------------------------------ what a scan may hoist
def test_hoistable_ops_are_derived_from_the_rows_flags():
    """The recurrence pass hoists a step-invariant statement out of the loop only when its row
    neither draws random numbers nor updates buffers: the set follows the rows, not a list."""
    from ncd.passes.recurrence import HOISTABLE, PURE_STRUCTURAL

    pure = {name for name, row in OPS.items() if not (row.random or row.stateful)}
    assert HOISTABLE == pure | PURE_STRUCTURAL
    assert not {name for name, row in OPS.items() if row.random or row.stateful} & HOISTABLE
    assert not PURE_STRUCTURAL & set(OPS)  # structural kinds are no op rows


HOIST_SPEC = """axis T = 5, D = 3
block R(x: [T, D]) -> [T, D] {
  param w: [D] init normal(0, 1)
  return scan t over T carry (h: [D] = 0) {
    a = tanh(w)
    m = dropout(w, p = 0.5)
    h = h * a + x[t] + m
    emit h
  }
}
"""


def test_a_step_invariant_pure_op_is_hoisted_and_a_random_one_is_not():
    from ncd.pipeline import run_passes

    ir = ncd.check(HOIST_SPEC)
    (plan,) = run_passes(ir).scan_plans().values()
    scan = next(n for n in ir.blocks["R"].nodes if n.op == "scan")
    ops = {n.id: n.op for n in scan.regions[0].nodes}
    hoisted = {ops[i] for i in plan.invariant}
    assert "tanh" in hoisted and "dropout" not in hoisted, hoisted


def _kind_literals(source: str, op_names: bool = True) -> list[tuple[int, str]]:
    """Where ``source`` spells a node kind: a comparison or membership test with a string literal
    that is a structural kind (ncd/ir.py) or, when ``op_names``, an op-table row's name, whatever
    the other side is called (``node.op == "scan"``, ``family == "contract"``, ``op in NAMES``
    with ``NAMES`` a literal of this module, ``case "call":``), or a dict literal keyed by one
    used as a table (``{"softmax": ...}.get(op)``, ``{"scan": ...}[stmt.kind]``, a module-level
    table). A key read (``attrs["repeat"]``, ``attrs.get("max")``) or a node's attribute dict
    (``{"max": 8, ...}``) holds attribute names, not kinds, and is not counted."""
    import ast

    from ncd.ir import STRUCTURAL_KINDS

    kinds = STRUCTURAL_KINDS | (set(OPS) if op_names else set())
    tree = ast.parse(source)
    consts: dict[str, ast.AST] = {}  # names bound at module level to a value (a set, tuple or dict literal)
    for node in tree.body:
        if isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None:
            for target in node.targets if isinstance(node, ast.Assign) else [node.target]:
                if isinstance(target, ast.Name):
                    consts[target.id] = node.value

    def literals(expr: ast.AST, seen: frozenset[str] = frozenset()) -> list[tuple[int, str]]:
        """The kinds ``expr`` holds as a value: a literal, a collection of them, a module name bound
        to one, a set built from them (``frozenset({...})``, ``A | B``)."""
        if isinstance(expr, ast.Constant):
            return [(expr.lineno, expr.value)] if isinstance(expr.value, str) and expr.value in kinds else []
        if isinstance(expr, (ast.Tuple, ast.List, ast.Set)):
            return [hit for e in expr.elts for hit in literals(e, seen)]
        if isinstance(expr, ast.Dict):
            return [hit for k in expr.keys if k is not None for hit in literals(k, seen)]
        if isinstance(expr, ast.BinOp):
            return literals(expr.left, seen) + literals(expr.right, seen)
        builds = {"frozenset", "set", "tuple"}
        if isinstance(expr, ast.Call) and isinstance(expr.func, ast.Name) and expr.func.id in builds:
            return [hit for a in expr.args for hit in literals(a, seen)]
        if isinstance(expr, ast.Name) and expr.id in consts and expr.id not in seen:
            return literals(consts[expr.id], seen | {expr.id})
        return []

    # dict literals used as tables: looked up at once (``{...}[k]``, ``{...}.get(k)``) or bound at
    # module level; a dict passed as an argument (a node's attributes) is keyed by attribute names
    tables = [n.value for n in ast.walk(tree) if isinstance(n, ast.Subscript) and isinstance(n.value, ast.Dict)]
    tables += [n.func.value for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
               and isinstance(n.func.value, ast.Dict)]
    tables += [d for top in tree.body if isinstance(top, (ast.Assign, ast.AnnAssign)) and top.value is not None
               for d in ast.walk(top.value) if isinstance(d, ast.Dict)]
    found = [hit for table in tables for hit in literals(table)]
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            found += [hit for e in (node.left, *node.comparators) for hit in literals(e)]
        elif isinstance(node, ast.MatchValue):
            found += literals(node.value)
    return sorted(set(found))


# The modules that own kind names, each with why. Every other module under ncd/ and backends/ asks a
# row (ncd.ops: arith, role, relabels, affine, masked, gate, ...) or names a node kind that is no op
# by ncd/ir.py's name (NUMBER_NODE, SCAN, WEIGHT_SOURCES, LOOPS, ...).
OWNS_OP_NAMES = {
    "ncd/ops": "the op table: each family module declares its rows and their per-row facts by name",
}
OWNS_KINDS = {"ncd/ir.py": "names each structural node kind once"}
SCANNED = sorted(str(p.relative_to(ROOT)) for folder in ("ncd", "backends") for p in (ROOT / folder).rglob("*.py")
                 if str(p.relative_to(ROOT)) not in OWNS_KINDS)
# Words of other vocabularies that are spelled like a node kind, by module: each is compared as what
# it is there, never with a node's kind. An entry no longer found fails (the list only shrinks).
_GRAMMAR = "a rule of the grammar (ncd/frontend), read off the parse tree's ``data``"
_BINDING = "a kind of name the builder's scopes bind (Binding.kind)"
_SCAN_BACKEND = "the parallel-scan backend's name (ncd/scan_backends.py), not the loop node"
OTHER_WORDS: dict[str, dict[str, str]] = {
    "backends/graphviz/draw.py": {"contract": "an op family (OpDef.family), not a row"},
    "backends/pytorch/implementations.py": {"scan": _SCAN_BACKEND},
    "backends/pytorch/scan_cost.py": {"scan": _SCAN_BACKEND},
    "backends/pytorch/runtime.py": {"max": "the pooling mode of the runtime's pool helper",
                                    "min": "the side of a clamp or an extreme taken"},
    "ncd/cli/emit.py": {"step": "the name of the step-module emitter (EMITTERS)"},
    "ncd/frontend/block.py": {"param": _BINDING, "number": _BINDING, "call": _GRAMMAR,
                              "const": "the surface initialiser `const(v)`"},
    "ncd/frontend/builder.py": {"number": _GRAMMAR, "add": _GRAMMAR, "mul": _GRAMMAR, "sub": _GRAMMAR, "div": _GRAMMAR,
                                "pow": _GRAMMAR, "neg": _GRAMMAR, "call": _GRAMMAR,
                                "sqrt": "the surface function sqrt of an axis size"},
    "ncd/frontend/expressions.py": {"param": _BINDING, "number": _BINDING, "rename": _GRAMMAR, "reshape": _GRAMMAR,
                                    "max": "the surface name max(a, b), spelled maximum as an op",
                                    "min": "the surface name min(a, b), spelled minimum as an op"},
    "ncd/frontend/imports.py": {"call": _GRAMMAR},
    "ncd/passes/recurrence/cells.py": {"const": "a linear term's kind in the cell matcher (const, seq, inp)"},
    "ncd/passes/step.py": {"step": "a causal index form (idx(T) >= idx(T')), not the op"},
    "ncd/sizes.py": {"exp": "a sympy function of size expressions", "log": "a sympy function of size expressions",
                     "sqrt": "a sympy function of size expressions"},
}


def _owns_op_names(path: str) -> bool:
    return any(path.startswith(owner + "/") for owner in OWNS_OP_NAMES)


def test_the_node_kinds_that_are_no_ops_are_named_once_and_verified():
    """ncd/ir.py names the structural node kinds the passes single out; each is one the verifier
    has a rule for, and none is an op row (a row would be asked, not named)."""
    from ncd import ir
    from ncd.verify import STRUCTURAL

    named = {value for key, value in vars(ir).items() if key.isupper() and isinstance(value, str)} - set(ir.ACT_MIXES)
    sets = set().union(*(value for key, value in vars(ir).items() if key.isupper() and isinstance(value, frozenset)))
    assert named == set(STRUCTURAL) == ir.STRUCTURAL_KINDS, named ^ set(STRUCTURAL)
    assert sets <= ir.STRUCTURAL_KINDS, sets - ir.STRUCTURAL_KINDS
    assert not ir.STRUCTURAL_KINDS & set(OPS)


def test_the_scan_covers_the_passes_the_backends_and_the_analyzer():
    for path in ("ncd/passes/fusion.py", "ncd/passes/step.py", "ncd/passes/recurrence/cells.py",
                 "backends/graphviz/draw.py", "ncd/analysis/op_costs.py", "backends/pytorch/program.py"):
        assert path in SCANNED


@pytest.mark.parametrize("path", SCANNED)
def test_no_module_spells_a_node_kind(path):
    """The fusion rules, the step pass's masks, the recurrence cells, titles (``title``) and views'
    memory order (``view_layout``) read the rows, and the passes name the structural kinds by
    ncd/ir.py's names, so adding an op is one row and renaming a kind is one line: outside
    ncd/ops no module compares anything with a row's name, and outside ncd/ir.py none compares
    anything with a structural kind's string or keys a dict literal by one."""
    found = _kind_literals((ROOT / path).read_text(encoding="utf-8"), op_names=not _owns_op_names(path))
    allowed = OTHER_WORDS.get(path, {})
    assert [hit for hit in found if hit[1] not in allowed] == [], \
        f"{path} spells node kinds; name structural ones from ncd/ir.py, ask op rows a fact (ncd/ops/base.py)"
    stale = set(allowed) - {word for _, word in found}
    assert not stale, f"{path}: OTHER_WORDS lists {stale}, no longer found: drop them"


def test_the_kind_literal_scan_finds_a_planted_comparison():
    """The scan above is not vacuous: the renderer's old title chain, the fusion pass's old norm set,
    the step pass's old mask table and the old spelled structural kinds are what it catches, under
    any variable name; an attribute read keyed by a kind's word is not a kind."""
    sample = ('NORMS = ("layernorm", "rmsnorm")\nMASK = {"softmax": "-oo", "sum": "0"}\n\n\n'
              'def f(node, op, family, stmt):\n    if node.op == "rename":\n        pass\n'
              '    if node.op in NORMS or MASK.get(node.op):\n        pass\n'
              '    if family == "contract" or stmt.kind in frozenset({"scan", "repeat"}):\n        pass\n'
              '    match op:\n        case "call":\n            pass\n'
              '    ok = node.attrs.get("repeat") == 2 and node.attrs["max"] > 1 and g({"scan": 1})\n'
              '    return {"tuple_get": 1}.get(op) or op in ("reshape", "x")\n')
    assert _kind_literals(sample) == [(1, "layernorm"), (1, "rmsnorm"), (2, "softmax"), (2, "sum"), (6, "rename"),
                                      (10, "contract"), (10, "repeat"), (10, "scan"), (13, "call"),
                                      (16, "reshape"), (16, "tuple_get")]
    assert _kind_literals(sample, op_names=False) == [(10, "repeat"), (10, "scan"), (13, "call"), (16, "tuple_get")]
