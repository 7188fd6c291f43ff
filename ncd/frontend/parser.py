"""Text → Lark parse tree, with syntax errors turned into located, helpful NcdErrors."""
from __future__ import annotations

import re
from functools import lru_cache
from importlib import resources

from lark import Lark, Token, Tree
from lark.exceptions import (
    UnexpectedCharacters,
    UnexpectedEOF,
    UnexpectedInput,
    UnexpectedToken,
)

from ncd.errors import NcdError, Span, source_lines
from ncd.limits import MAX_BODY_NESTING

# Terminal names Lark generates for the grammar's literals, said the way a user would.
_PRETTY = {
    "RBRACE": "'}'", "LBRACE": "'{'", "RPAR": "')'", "LPAR": "'('", "RSQB": "']'", "LSQB": "'['",
    "COMMA": "','", "COLON": "':'", "EQUAL": "'='", "NAME": "a name", "NUMBER": "a number",
    "INT": "an integer", "DTYPE": "int or bool", "__ANON_0": "'->'", "SEMICOLON": "';'", "MORETHAN": "'>'",
}

_PYTHON_HINTS = ("import", "def", "lambda", "exec", "eval", "__", "class", "print", "open")


@lru_cache(maxsize=1)
def parser() -> Lark:
    """One LALR parser per process; building it is the slow part of a cold start."""
    grammar = resources.files("ncd.grammar").joinpath("ncd.lark").read_text(encoding="utf-8")
    return Lark(grammar, parser="lalr", propagate_positions=True, maybe_placeholders=True)


def parse(source: str, filename: str | None = None) -> Tree:
    """The spec's parse tree. The builder only reads the tree (it never edits one), so a text is
    parsed once per process: a check then a load of the same text, or a file several specs
    import, share one tree. ``filename`` only names the place in an error, which is not cached."""
    try:
        return _tree(source) if len(source) <= _CACHED_CHARS else _parse(source)
    except UnexpectedInput as exc:
        raise _syntax_error(exc, source).located(source, filename) from None
    except NcdError as exc:
        raise exc.located(source, filename) from None


_CACHED_CHARS = 1 << 18  # longer texts (generated, hostile) are parsed each time rather than held


@lru_cache(maxsize=32)
def _tree(source: str) -> Tree:
    """``_parse``, remembered: a pure function of the text (a syntax error raises, and is not cached)."""
    return _parse(source)


def _parse(source: str) -> Tree:
    check_nesting(source)
    return parser().parse(source)


# A brace, a line break or a comment: braces delimit bodies and nothing else in the grammar (a
# block's body, and inside it the bodies of repeat, scan and halting), comments run to the line's end.
_BRACES = re.compile(r"[{}\n]|#[^\n]*")


def check_nesting(source: str) -> None:
    """Refuse loop bodies (repeat, scan, halting) nested more than MAX_BODY_NESTING deep, at the
    first body too deep. It reads the text's braces before Lark parses it: a spec of 10⁴ nested
    loops is megabytes that parsing would take a minute over, and the builder recurses per level."""
    depth, line, line_start = 0, 1, 0
    for match in _BRACES.finditer(source):
        char = match[0]
        if char == "\n":  # Lark counts lines by \n alone
            line, line_start = line + 1, match.end()
        elif char == "{":
            depth += 1
            if depth - 1 > MAX_BODY_NESTING:  # the outermost brace is the block's own body
                raise NcdError(f"this body is nested {depth - 1} loops deep (repeat, scan and halting bodies "
                               f"inside each other), more than the limit of {MAX_BODY_NESTING} "
                               f"(ncd.limits.MAX_BODY_NESTING)", Span(line, match.start() - line_start + 1),
                               hint="move the inner loops into a block of their own and `use` it")
        elif char == "}":
            depth = max(depth - 1, 0)


# `import A, B from SOURCE` as a user may write it: a path not starting with ./ or ../, or quoted.
_IMPORT_LINE = re.compile(r"\s*import\s+([A-Za-z_][\w', ]*?)\s+from\s+(\S+?)\s*(?:#.*)?$")


def _import_path_error(source: str, line: int) -> NcdError | None:
    """A file import whose path is not written bare from ./ or ../: Lark stops at its '/' or
    '.' and would only list the tokens it expected; say how to write the path instead."""
    lines = source_lines(source)
    found = _IMPORT_LINE.match(lines[line - 1]) if 0 < line <= len(lines) else None
    if found is None:
        return None
    path = found[2].strip("\"'`")
    if path.startswith(("./", "../")) and path == found[2]:
        return None
    fixed = path if path.startswith(("./", "../")) else "./" + path
    if not fixed.endswith(".ncd"):
        fixed += ".ncd"
    col = lines[line - 1].index(found[2], found.start(2)) + 1
    return NcdError(f"cannot read the import source {found[2]}: a file is written bare, starting with ./ or "
                    f"../ and ending in .ncd (a library spec is a bare name: import LSTMCell from lstm)",
                    Span(line, col), hint=(f"write import {found[1]} from {fixed}" if not path.startswith("/") else
                                           f"write the path relative to this spec's directory: import {found[1]} "
                                           "from ./..."))


def _syntax_error(exc: UnexpectedInput, source: str) -> NcdError:
    line, col = max(exc.line, 1), max(exc.column, 1)
    import_error = _import_path_error(source, line)
    if import_error is not None:
        return import_error
    if isinstance(exc, UnexpectedEOF) or (isinstance(exc, UnexpectedToken) and exc.token.type == "$END"):
        lines = source_lines(source)
        while len(lines) > 1 and not lines[-1].strip():
            lines.pop()
        return NcdError("unexpected end of the spec", Span(len(lines), len(lines[-1]) + 1),
                        hint="a block or bracket is not closed")
    if isinstance(exc, UnexpectedCharacters):
        char = source[exc.pos_in_stream] if exc.pos_in_stream < len(source) else "?"
        hint = ("specs are data, not Python: only the .ncd language is accepted" if char in "\"'`$!?%&|\\."
                else "delete it: names are letters, digits, _ and a trailing '")
        return NcdError(f"unexpected character {char!r}", Span(line, col), hint=hint)
    assert isinstance(exc, UnexpectedToken)
    token: Token = exc.token
    expected = sorted(_PRETTY.get(t, repr(t.lower()) if t.isupper() else t) for t in exc.expected)[:8]
    hint = f"expected {', '.join(expected)}" if expected else "delete it (docs/language.md gives the syntax)"
    if str(token) in ("int", "bool") and "carry" in source_lines(source)[line - 1][:col]:
        return NcdError(f"a carry is a float wire: it cannot be declared {token}", Span(line, col),
                        hint=f"delete `{token}`; to feed back an id, carry its one-hot (y: [V] = 0, then "
                             "y = one_hot(argmax(logits, over = V), over = V)) and look rows up with y @[V] E")
    if str(token) in _PYTHON_HINTS or str(token).startswith("__"):
        hint = "specs are data, not Python: Python code is never executed"
    return NcdError(f"unexpected {str(token)!r}", Span(line, col), hint=hint)


def span_of(item: Tree | Token) -> Span | None:
    """The 1-based position of a tree or token, or None for a synthetic placeholder."""
    if isinstance(item, Token):
        return Span(item.line, item.column) if item.line is not None else None
    meta = getattr(item, "meta", None)
    if meta is None or getattr(meta, "empty", True):
        return None
    return Span(meta.line, meta.column)
