"""Hostile imports: each case in a child process under the harness's time and memory limits.

A spec that imports is still data: cycles, self-imports, huge or missing files, deep chains and
many files stop with a located NcdError naming the limit (ncd/limits.py), never a hang or a
traceback.
"""
from __future__ import annotations

from pathlib import Path

from hostile_harness import assert_ncd_error, assert_ok, run_cli

from ncd.limits import MAX_IMPORT_CHARS, MAX_IMPORT_DEPTH, MAX_IMPORT_FILES

BLOCK = "axis D = 2\nblock {name}(x: [D]) -> [D] {{\n    return tanh(x)\n}}\n"


def write(directory: Path, name: str, text: str) -> str:
    path = directory / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_self_import(tmp_path):
    path = write(tmp_path, "me.ncd", "import F from ./me.ncd\n" + BLOCK.format(name="F"))
    assert_ncd_error(run_cli("check", path), "import cycle: me.ncd → me.ncd", line=1)


def test_import_cycle_of_three(tmp_path):
    for a, b in (("a", "b"), ("b", "c"), ("c", "a")):
        write(tmp_path, f"{a}.ncd", f"import {b.upper()} from ./{b}.ncd\n" + BLOCK.format(name=a.upper()))
    assert_ncd_error(run_cli("check", str(tmp_path / "a.ncd")), "import cycle: a.ncd → b.ncd → c.ncd → a.ncd",
                     line=1)


def test_missing_file(tmp_path):
    path = write(tmp_path, "m.ncd", "import F from ./nowhere/none.ncd\n" + BLOCK.format(name="G"))
    assert_ncd_error(run_cli("check", path), "no such spec file to import", line=1)


def test_a_directory_named_like_a_spec(tmp_path):
    (tmp_path / "dir.ncd").mkdir()
    path = write(tmp_path, "m.ncd", "import F from ./dir.ncd\n" + BLOCK.format(name="G"))
    assert_ncd_error(run_cli("check", path), "no such spec file to import", line=1)


def test_huge_imported_file_is_refused_before_it_is_read(tmp_path):
    big = tmp_path / "big.ncd"
    with big.open("wb") as f:  # sparse: the size is there, the bytes are never read
        f.truncate(MAX_IMPORT_CHARS + 1)
    path = write(tmp_path, "m.ncd", "import F from ./big.ncd\n" + BLOCK.format(name="G"))
    assert_ncd_error(run_cli("check", path), "bytes of specs in all", "MAX_IMPORT_CHARS", line=1)


def test_deep_chain_stops_at_the_depth_limit(tmp_path):
    n = MAX_IMPORT_DEPTH + 3
    for i in range(n):
        head = f"import F{i + 1} from ./f{i + 1}.ncd\n" if i + 1 < n else ""
        write(tmp_path, f"f{i}.ncd", head + BLOCK.format(name=f"F{i}"))
    assert_ncd_error(run_cli("check", str(tmp_path / "f0.ncd")), f"more than {MAX_IMPORT_DEPTH} files deep")


def test_a_chain_within_the_depth_limit_checks(tmp_path):
    n = MAX_IMPORT_DEPTH
    for i in range(n):
        head = f"import F{i + 1} from ./f{i + 1}.ncd\n" if i + 1 < n else ""
        call = f"F{i + 1}(x)" if i + 1 < n else "tanh(x)"
        write(tmp_path, f"f{i}.ncd", head + f"axis D = 2\nblock F{i}(x: [D]) -> [D] {{\n    return {call}\n}}\n")
    assert_ok(run_cli("run", str(tmp_path / "f0.ncd")))


def test_too_many_files(tmp_path):
    n = MAX_IMPORT_FILES + 1
    for i in range(n):
        write(tmp_path, f"g{i}.ncd", BLOCK.format(name=f"G{i}"))
    imports = "".join(f"import G{i} from ./g{i}.ncd\n" for i in range(n))
    path = write(tmp_path, "m.ncd", imports + BLOCK.format(name="M"))
    assert_ncd_error(run_cli("check", path), f"at most {MAX_IMPORT_FILES} files", line=n)


def test_absolute_and_escaping_paths_are_refused(tmp_path):
    path = write(tmp_path, "m.ncd", "import F from /etc/passwd\n" + BLOCK.format(name="G"))
    assert_ncd_error(run_cli("check", path), "cannot read the import source /etc/passwd", line=1)
    path = write(tmp_path, "n.ncd", "import F from ../../../../../../etc/x.ncd\n" + BLOCK.format(name="G"))
    assert_ncd_error(run_cli("check", path), "outside the directory imports may read", line=1)
    path = write(tmp_path, "o.ncd", "import F from ./../../etc/passwd\n" + BLOCK.format(name="G"))
    assert_ncd_error(run_cli("check", path), "only .ncd files can be imported", line=1)
