"""`import A, B from lib` / `import A from ./file.ncd`: blocks of another spec file, bounded.

An imported file is read, parsed and its own imports resolved (recursively, each file once); the
requested blocks and every block they use in their file come into the importing spec under their
names, with the axes and constants of their file that the importer does not declare itself.
A spec is data, so reading stays bounded (ncd/limits.py): relative paths only, inside the root
directory (that of the spec being checked; the library's own directory for library specs),
`.ncd` files only, at most MAX_IMPORT_DEPTH files deep, MAX_IMPORT_FILES files and
MAX_IMPORT_CHARS characters in all. Cycles, clashes and missing names are errors at the import line.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from lark import Token, Tree

from ncd.errors import NcdError
from ncd.frontend.common import _did_you_mean, err
from ncd.frontend.parser import parse
from ncd.limits import MAX_IMPORT_CHARS, MAX_IMPORT_DEPTH, MAX_IMPORT_FILES
from ncd.source import read_text


@dataclass
class Origin:
    """Where an imported block's text comes from (its errors are located there)."""

    path: Path
    source: str

    @property
    def name(self) -> str:
        return str(self.path)


@dataclass
class Namespace:
    """What one spec file offers to an importer: its blocks (own and imported), axes and constants."""

    blocks: dict[str, tuple[Tree, Origin | None]] = field(default_factory=dict)
    axes: list[tuple[Tree, Origin | None]] = field(default_factory=list)
    consts: dict[str, tuple[Tree, Origin | None]] = field(default_factory=dict)


@dataclass
class Budget:
    """Files and characters read so far for one top-level check (each file read once)."""

    chars: int = 0
    files: dict[Path, Namespace] = field(default_factory=dict)


def root_of(filename: str) -> Path:
    """The directory imports of a spec resolve in and may not leave: its file's, or the working
    directory for spec text."""
    path = Path(filename)
    if filename.startswith("<") or not path.suffix == ".ncd":
        return Path.cwd().resolve()
    return path.resolve().parent


def target_path(source: Tree, importer_dir: Path, root: Path) -> tuple[Path, Path]:
    """The resolved file an import names and the root its own imports stay in."""
    tok = source.children[0]
    text = str(tok)
    if source.data == "import_library":
        from ncd.library import library_dir, library_path, library_specs

        found = library_path(text)
        if found is None:
            names = [p.stem for p in library_specs()]
            raise err(f"no library spec {text}", tok, hint=_did_you_mean(text, names) or "ncd list shows the library")
        return found.resolve(), library_dir().resolve()
    if not text.endswith(".ncd"):
        raise err(f"only .ncd files can be imported, not {text}", tok, hint="name a spec file: ./cells.ncd")
    path = (importer_dir / text).resolve()
    if path != root and root not in path.parents:
        raise err(f"{text} is outside the directory imports may read ({root})", tok,
                  hint="keep imported specs in the importing spec's directory or below it")
    if path.suffix != ".ncd":  # a link named .ncd to something else
        raise err(f"{text} is not a .ncd file (it resolves to {path.name})", tok,
                  hint="import the spec file itself, not a link to another kind of file")
    if not path.is_file():
        raise err(f"no such spec file to import: {text}", tok, hint=f"looked for {path}")
    return path, root


def load(path: Path, root: Path, chain: list[Path], where: Token, budget: Budget) -> Namespace:
    """The namespace of one imported file (read, parsed, its own imports resolved)."""
    if path in chain:
        cycle = " → ".join(p.name for p in chain[chain.index(path):] + [path])
        raise err(f"import cycle: {cycle}", where, hint="move the shared blocks into a file both import")
    if len(chain) > MAX_IMPORT_DEPTH:
        raise err(f"imports nest more than {MAX_IMPORT_DEPTH} files deep here", where,
                  hint="import from fewer levels of files (ncd/limits.py MAX_IMPORT_DEPTH)")
    if path in budget.files:
        return budget.files[path]
    if len(budget.files) >= MAX_IMPORT_FILES:
        raise err(f"a spec may import at most {MAX_IMPORT_FILES} files", where, hint="ncd/limits.py MAX_IMPORT_FILES")
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise err(f"cannot read {path.name}: {exc.strerror or exc}", where,
                  hint=f"make {path} readable, or import another file") from None
    if budget.chars + size > MAX_IMPORT_CHARS:
        raise err(f"importing {path.name} ({size} bytes) would read more than {MAX_IMPORT_CHARS} bytes of specs "
                  f"in all", where, hint="imports are for blocks, not data (ncd/limits.py MAX_IMPORT_CHARS)")
    source = read_text(path, "imported spec file")
    budget.chars += len(source.encode("utf-8"))
    origin = Origin(path, source)
    try:
        tree = parse(source, origin.name)
        namespace = collect(tree, origin, path.parent, root, chain + [path], budget)
    except NcdError as exc:
        raise exc.located(source, origin.name) from None
    budget.files[path] = namespace
    return namespace


def collect(tree: Tree, origin: Origin | None, here: Path, root: Path, chain: list[Path],
            budget: Budget) -> Namespace:
    """A parsed file's own declarations, then what its imports bring (clashes are errors)."""
    ns = Namespace()
    imports = []
    for item in tree.children:
        if not isinstance(item, Tree):
            continue
        if item.data == "block":
            ns.blocks.setdefault(str(item.children[0]), (item, origin))
        elif item.data == "axis_decl":
            ns.axes += [(d, origin) for d in item.children]
        elif item.data in ("const_decl", "const_list"):
            ns.consts.setdefault(str(item.children[0]), (item, origin))
        elif item.data == "import_decl":
            imports.append(item)
    for item in imports:
        bring(ns, item, here, root, chain, budget)
    return ns


def bring(ns: Namespace, item: Tree, here: Path, root: Path, chain: list[Path], budget: Budget) -> None:
    """Resolve one import declaration into ``ns``."""
    *names, source = item.children
    if source is None:
        raise err("unexpected 'import' without `from`: ncd imports blocks of .ncd specs, not modules",
                  item, hint="specs are data, not Python: import LSTMCell from lstm (a library spec) "
                             "or import Cell from ./cells.ncd")
    path, sub_root = target_path(source, here, root)
    theirs = load(path, sub_root, chain, source.children[0], budget)
    wanted: dict[str, tuple[Tree, Origin | None]] = {}
    for tok in names:
        name = str(tok)
        if name not in theirs.blocks:
            raise err(f"{path.name} has no block {name}", tok,
                      hint=_did_you_mean(name, theirs.blocks) or f"its blocks: {', '.join(theirs.blocks)}")
        for dep in closure(name, theirs):
            wanted[dep] = theirs.blocks[dep]
    for name, (tree, origin) in wanted.items():
        mine = ns.blocks.get(name)
        if mine is not None and mine[0] is not tree:
            first = mine[0].children[0]
            where = f"line {first.line}" + (f" of {mine[1].path.name}" if mine[1] is not None else "")
            requested = name in [str(t) for t in names]
            how = "imported" if requested else f"used by an imported block of {path.name}, imported with it"
            raise err(f"block {name} ({how}) clashes with block {name} at {where}", names[0],
                      hint="rename one of them; an import brings the blocks it uses under their own names")
        ns.blocks[name] = (tree, origin)
    declared = {str(d.children[0]) for d, _ in ns.axes}
    ns.axes += [(d, o) for d, o in theirs.axes if str(d.children[0]) not in declared]
    for name, (tree, origin) in theirs.consts.items():
        mine = ns.consts.get(name)
        if mine is not None and mine[0] is not tree:
            raise err(f"constant {name} of {path.name} clashes with constant {name} here", names[0],
                      hint="rename one of them: imported blocks read the constants of their own file")
        ns.consts[name] = (tree, origin)


def closure(name: str, ns: Namespace) -> list[str]:
    """A block and every block of ``ns`` it uses (by `use` or by a direct call), transitively."""
    seen: list[str] = []
    todo = [name]
    while todo:
        current = todo.pop()
        if current in seen or current not in ns.blocks:
            continue
        seen.append(current)
        for sub in ns.blocks[current][0].iter_subtrees():
            if sub.data == "use_item":
                todo.append(str(sub.children[1]))
            elif sub.data == "call" and isinstance(sub.children[0], Token):
                todo.append(str(sub.children[0]))
    return seen


def display(path: Path) -> str:
    """A short name for messages: relative to the working directory where that is shorter."""
    try:
        return os.path.relpath(path)
    except ValueError:
        return str(path)
