"""Mutation fuzzing of the whole pipeline: check, cost, render (DOT), emit + import, load, forward.

The library specs (``specs/*.ncd``) and every ```ncd example of docs/language.md are mutated a few
tokens at a time (seeded, so a failure reproduces). Whatever the mutant, each stage either works or
raises ``NcdError`` (never its "internal error" safety net), and no file appears in the working
directory. Bounded: a few hundred mutants, the expensive stages only for mutants whose sizes and
weights stay small.
"""
from __future__ import annotations

import importlib.util
import random
import re
from pathlib import Path

import pytest
import torch

import ncd
from fuzz_sizes import small_enough

ROOT = Path(__file__).resolve().parents[1]
FENCE = re.compile(r"```ncd\n(.*?)```", re.S)
TOKEN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*'*|\d+(?:\.\d*)?(?:[eE][-+]?\d+)?|->|#[^\n]*|\s+|.", re.S)
INSERTS = ["0", "-1", "1e300", "inf", "'", "[", "]", "(", ")", ",", "@", "/ 0", "\f", "\u2028", "\ufeff",
           "\x00", "é", "T'", "B", "D", "over = [T, T]", "clamp(", "×", "^ 64",
           # the grammar of slices and of convolution's options
           ":", "1:", ":-1", "as", "groups = [T]", "padding = causal", "ceil_mode = true", "[1, 2]",
           "padding_mode = reflect", "mode = bilinear", "align_corners = true"]
NUMBERS = ["0", "1", "2", "3", "0.5", "1e9", "1e300", "64", "7"]
MUTANTS = 300
MAX_AXIS, MAX_ELEMENTS = 512, 1 << 18


def library() -> dict[str, str]:
    return {p.name: p.read_text(encoding="utf-8") for p in sorted((ROOT / "specs").glob("*.ncd"))}


def doc_examples() -> dict[str, str]:
    """The language reference's examples that check (a few show an error on purpose)."""
    docs = FENCE.findall((ROOT / "docs" / "language.md").read_text(encoding="utf-8"))
    found = {}
    for i, text in enumerate(docs):
        try:
            ncd.check(text)
        except ncd.NcdError:
            continue
        found[f"language.md#{i}"] = text
    return found


def corpus() -> dict[str, str]:
    return {**library(), **doc_examples()}


def mutate(source: str, rng: random.Random) -> str:
    toks = TOKEN.findall(source)
    words = [i for i, t in enumerate(toks) if not t.isspace()]
    for _ in range(rng.randint(1, 3)):
        i = rng.choice(words)
        kind = rng.choice(["delete", "duplicate", "swap", "insert", "number", "number", "rename", "rename"])
        if kind == "delete":
            toks[i] = ""
        elif kind == "duplicate":
            toks[i] = f"{toks[i]} {toks[i]}"
        elif kind == "swap":
            j = rng.choice(words)
            toks[i], toks[j] = toks[j], toks[i]
        elif kind == "insert":
            toks[i] = f"{rng.choice(INSERTS)} {toks[i]}"
        elif kind == "number":
            numbers = [k for k in words if toks[k][:1].isdigit()] or [i]
            toks[rng.choice(numbers)] = rng.choice(NUMBERS)
        else:
            names = sorted({toks[k] for k in words if re.match(r"[A-Za-z_]", toks[k])})
            old, new = rng.choice(names), rng.choice(names)
            toks = [new if t == old else t for t in toks]
    return "".join(toks)


def small_bindings(ir) -> dict[str, int] | None:
    """Sizes 3 for the free axes, or None where the mutant is too big to allocate in a unit test."""
    if any((inst.repeat or 1) > 4 for block in ir.blocks.values() for inst in block.instances):
        return None
    bindings = {name: 3 for name, axis in ir.axes.items() if axis.size is None}
    if not all(name.isidentifier() and name not in ("block", "sizes", "scan_backend", "fuse_scans")
               for name in bindings):
        return None
    return bindings if small_enough(ir, bindings, MAX_AXIS, MAX_ELEMENTS) else None


def stage(fn, *args, **kwargs):
    """Run one stage: its result, or None after a proper NcdError."""
    try:
        return fn(*args, **kwargs)
    except ncd.NcdError as exc:
        assert not exc.message.startswith("internal error"), f"{exc}\ncaused by {exc.__cause__!r}"
        str(exc)
        return None


def inputs_for(module, ir) -> list[torch.Tensor] | None:
    from ncd.cli.common import axis_size

    shapes = []
    for port in ir.entry_block.inputs:
        sizes = [axis_size(ir, a) for a in port.type.axes]
        if any(s is None for s in sizes):
            return None
        shapes.append(([2] if port.type.lifted else []) + sizes)
    if any(port.type.dtype != "float" for port in ir.entry_block.inputs):
        return None
    return [torch.randn(shape) for shape in shapes]


def through_the_pipeline(source: str, out_dir: Path, tag: str) -> None:
    from ncd.analysis import analyze
    from ncd.backends.graphviz import render_dot
    from ncd.backends.pytorch.emit import emit_python

    ir = stage(ncd.check, source)
    if ir is None:
        return
    stage(render_dot, ir)
    bindings = small_bindings(ir)
    if bindings is None:
        return
    bound = stage(ncd.check, source, **bindings)
    if bound is None:
        return
    stage(analyze, bound, {"B": 2})
    text = stage(emit_python, bound)
    if text is not None:
        path = out_dir / f"emitted_{tag}.py"
        path.write_text(text, encoding="utf-8")
        spec = importlib.util.spec_from_file_location(f"emitted_{tag}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)  # the emitted source is ours: importing it must just work
    module = stage(ncd.load, source, **bindings)
    if module is None:
        return
    inputs = inputs_for(module, bound)
    if inputs is not None:
        stage(module, *inputs)


def test_the_corpus_checks():
    """The mutants start from specs that check: all of the library, most of the docs' examples."""
    for name, text in library().items():
        assert ncd.check(text) is not None, name
    assert len(doc_examples()) >= 20


@pytest.mark.parametrize("seed", [0, 1])  # seeds 2 and 3 found the bugs of the two tests below
def test_mutants_fail_only_with_ncd_error_and_write_nothing(seed, tmp_path, monkeypatch):
    work, emitted = tmp_path / "cwd", tmp_path / "emitted"
    work.mkdir()
    emitted.mkdir()
    monkeypatch.chdir(work)
    rng = random.Random(seed)
    items = sorted(corpus().items())
    for n in range(MUTANTS // 2):
        name, text = rng.choice(items)
        source = mutate(text, rng)
        try:
            through_the_pipeline(source, emitted, f"{seed}_{n}")
        except Exception as exc:  # noqa: BLE001 - the report names the mutant that escaped
            raise AssertionError(f"{name} mutant #{n} (seed {seed}) raised {type(exc).__name__}: {exc}\n"
                                 f"--- source\n{source}") from exc
        assert not list(work.iterdir()), f"{name} mutant #{n} wrote {list(work.iterdir())}"


def test_a_parallel_scan_whose_carry_starts_at_inf():
    """Found by seed 2: Newton's residual is not finite from the start; the scan then runs as the
    sequential loop (warned), and computes what the sequential backend computes."""
    source = (ROOT / "specs" / "paralstm.ncd").read_text(encoding="utf-8").replace("carry (c: [D] = 0",
                                                                                  "carry (c: [D] = inf")
    torch.manual_seed(0)
    module = ncd.load(source, T=3, scan_backend="newton")  # auto would run the loop at T = 3 (scan_cost)
    assert [p.backend for p in ncd.load(source, T=3).scan_plans] == ["newton"]
    torch.manual_seed(0)
    sequential = ncd.load(source, T=3, scan_backend="sequential")
    x = torch.randn(2, 3, 64)
    with pytest.warns(RuntimeWarning, match="running it as the sequential loop"):
        y = module(x)
    torch.testing.assert_close(y, sequential(x), equal_nan=True)
    assert module.parallel_scans()[0].stats.fallbacks == 1


def test_a_where_with_a_number_beyond_float32():
    """Found by seed 3: where(c, 0, 1e300) is refused at the number, where torch would refuse the
    scalar for a float32 wire at load; inf is a float32 number and runs."""
    source = (ROOT / "specs" / "leaky_rnn.ncd").read_text(encoding="utf-8")
    for number in ("1e300", "-1e300"):
        with pytest.raises(ncd.NcdError, match="out of float32's range") as info:
            ncd.load(source.replace("where(i == j, 0, 1)", f"where(i == j, 0, {number})"), T=3)
        assert info.value.span is not None and "where(i == j" in str(info.value)
    module = ncd.load(source.replace("where(i == j, 0, 1)", "where(i == j, 0, inf)"), T=3)
    assert module is not None
