"""The words and symbols of .ncd, read from grammar/ncd.lark (through Lark's own terminal list)
and from the op table, so highlighters follow the language as it grows.

Every literal word of the grammar is a keyword, every literal symbol an operator; the regular
terminals say what a name, a number, a comment (and a string, where the grammar has one) look
like. Builtins are the op table's ops, the initialisers and the numeric functions; they are
names followed by ``(`` — a keyword such as ``max`` used as a call highlights as a builtin.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True)
class TokenTable:
    keywords: tuple[str, ...]  # longest first
    operators: tuple[str, ...]  # literal symbols, longest first
    operator_patterns: tuple[str, ...]  # regular terminals that are neither names, numbers nor comments
    builtins: tuple[str, ...]
    constants: tuple[str, ...]
    name: str  # regex of a name
    number: str  # regex of a number
    comment: str  # regex of a comment
    string: str | None  # regex of a string literal, where the grammar has one


def _kind(name: str) -> str:
    upper = name.upper()
    if upper in ("WS", "WS_INLINE", "NEWLINE", "_NL", "CR", "LF"):
        return "space"
    if "COMMENT" in upper:
        return "comment"
    if "STRING" in upper or upper in ("PATH",):
        return "string"
    if upper in ("NAME", "CNAME", "WORD", "IDENT"):
        return "name"
    if upper in ("NUMBER", "INT", "FLOAT", "SIGNED_NUMBER", "DECIMAL", "SIGNED_INT"):
        return "number"
    return "other"


@lru_cache(maxsize=1)
def token_table() -> TokenTable:
    """The token table of the grammar this ncd was installed with."""
    from ncd.frontend import common
    from ncd.frontend.parser import parser
    from ncd.ops import OPS
    from ncd.ops.init import INITIALISERS

    keywords: set[str] = set()
    operators: set[str] = set()
    patterns: list[str] = []
    regexes: dict[str, str] = {}
    for terminal in parser().terminals:
        pattern = terminal.pattern
        value = pattern.value
        if type(pattern).__name__ == "PatternStr":
            (keywords if WORD.fullmatch(value) else operators).add(value)
            continue
        kind = _kind(terminal.name)
        regex = pattern.to_regexp()
        if kind == "other":
            patterns.append(regex)
        elif kind != "space":
            regexes.setdefault(kind, regex)
    # the ops a spec calls by name (not those written with syntax, like x[A as B]) and the initialisers
    builtins = {name for name, op in OPS.items() if op.syntax is None} | set(INITIALISERS)
    constants = set(getattr(common, "NAMED_CONSTANTS", {}))

    def longest_first(items) -> tuple[str, ...]:
        return tuple(sorted(items, key=lambda s: (-len(s), s)))

    return TokenTable(
        keywords=longest_first(keywords), operators=longest_first(operators),
        operator_patterns=tuple(patterns), builtins=longest_first(builtins), constants=longest_first(constants),
        name=regexes.get("name", r"[A-Za-z_][A-Za-z0-9_]*'*"),
        number=regexes.get("number", r"(\d+\.\d*|\.\d+|\d+)([eE][-+]?\d+)?"),
        comment=regexes.get("comment", r"#[^\n]*"), string=regexes.get("string"))
