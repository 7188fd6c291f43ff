"""One import identity: backends/ is `ncd.backends`, imported one way, with a clear error otherwise."""
from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _imports(path: Path) -> list[ast.ImportFrom | ast.Import]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))]


def test_backends_use_absolute_imports_only():
    relative = [f"{p.relative_to(ROOT)}:{n.lineno}" for p in (ROOT / "backends").rglob("*.py")
                for n in _imports(p) if isinstance(n, ast.ImportFrom) and n.level > 0]
    assert relative == []


def test_tests_and_bench_import_ncd_backends_only():
    def top_level_backends(n) -> bool:
        names = [a.name for a in n.names] if isinstance(n, ast.Import) else [n.module or ""]
        return any(name == "backends" or name.startswith("backends.") for name in names)

    found = [f"{p.relative_to(ROOT)}:{n.lineno}" for folder in ("tests", "bench") for p in (ROOT / folder).rglob("*.py")
             for n in _imports(p) if top_level_backends(n)]
    assert found == []


def _python(code: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=cwd, capture_output=True, text=True,
                          timeout=300)


def test_top_level_backends_import_is_refused_with_the_fix():
    proc = _python("import backends", ROOT)
    assert proc.returncode != 0
    assert "ImportError" in proc.stderr and "import ncd.backends" in proc.stderr and "pip install -e ." in proc.stderr


def test_missing_package_mapping_says_how_to_fix_it(tmp_path):
    proc = _python("""
        import sys

        class NoMapping:  # as an install whose package_dir mapping of backends/ was lost
            def find_spec(self, name, path=None, target=None):
                if name == "ncd.backends" or name.startswith("ncd.backends."):
                    raise ModuleNotFoundError(f"No module named {name!r}", name=name)
                return None

        sys.meta_path.insert(0, NoMapping())
        import ncd
    """, tmp_path)
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError: ncd.backends is missing") and "pip install -e ." in last, proc.stderr


def test_graphviz_render_is_one_thing():
    """`ncd.backends.graphviz.render` is the function; the DOT writer is the module `draw`."""
    import importlib
    import types

    import ncd.backends.graphviz as graphviz

    assert callable(graphviz.render) and not isinstance(graphviz.render, types.ModuleType)
    assert importlib.import_module("ncd.backends.graphviz.draw").render_dot is graphviz.render_dot


def test_no_module_is_shadowed_by_a_function_of_its_name():
    """Every submodule of ncd and ncd.backends is what its parent's attribute of that name holds
    (a package re-exporting a function named like one of its folders hides the folder)."""
    import importlib
    import pkgutil

    import ncd
    import ncd.backends

    shadowed = []
    for root in (ncd, ncd.backends):
        for info in pkgutil.walk_packages(root.__path__, root.__name__ + "."):
            try:
                module = importlib.import_module(info.name)
            except ModuleNotFoundError as e:  # an optional extra (triton, ...) not installed here
                if (e.name or "").startswith("ncd"):
                    raise
                continue
            parent_name, _, leaf = info.name.rpartition(".")
            parent = importlib.import_module(parent_name)
            if getattr(parent, leaf, module) is not module:
                shadowed.append(info.name)
    assert shadowed == []
