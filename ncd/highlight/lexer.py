"""A Pygments lexer for .ncd, built from the token table (``pygmentize -l ncd``, minted, Sphinx,
mkdocs). Registered under the ``pygments.lexers`` entry point; needs the ``ncd[highlight]`` extra."""
from __future__ import annotations

import re

try:
    from pygments.lexer import RegexLexer, bygroups
    from pygments.token import Comment, Keyword, Name, Number, Operator, Punctuation, String, Whitespace
except ImportError as exc:  # pragma: no cover - exercised where pygments is absent
    from ncd.errors import NcdError

    raise NcdError("the ncd Pygments lexer needs Pygments", hint="pip install 'ncd[highlight]'") from exc

from ncd.highlight.tokens import token_table

PUNCTUATION = set("()[]{},;:")
END = r"(?![A-Za-z0-9_'])"  # a keyword ends where a name could not go on (names may end in primes)


def _alternation(words) -> str:
    return "(?:" + "|".join(re.escape(w) for w in words) + ")"


def _rules() -> dict:
    table = token_table()
    symbols = [op for op in table.operators if op not in PUNCTUATION]
    rules = [
        (r"\s+", Whitespace),
        (table.comment, Comment.Single),
    ]
    if table.string:
        rules.append((table.string, String.Double))
    rules += [
        (rf"(block)(\s+)({table.name})", bygroups(Keyword.Declaration, Whitespace, Name.Class)),
        (rf"{_alternation(table.builtins)}{END}(?=\s*\()", Name.Builtin),
        (rf"{_alternation(table.keywords)}{END}", Keyword),
    ]
    if table.constants:
        rules.append((rf"{_alternation(table.constants)}{END}", Name.Constant))
    rules += [
        (table.name, Name),
        (table.number, Number),
        *((pattern, Operator) for pattern in table.operator_patterns),
    ]
    if symbols:
        rules.append((_alternation(symbols), Operator))
    rules.append((r"[()\[\]{},;:]", Punctuation))
    return {"root": rules}


class NcdLexer(RegexLexer):
    """Neural-Circuit-Diagram specs (.ncd)."""

    name = "NCD"
    aliases = ["ncd"]
    filenames = ["*.ncd"]
    mimetypes = ["text/x-ncd"]
    url = "https://github.com/"  # no project page yet: Pygments only shows it in its lexer list
    tokens = _rules()
