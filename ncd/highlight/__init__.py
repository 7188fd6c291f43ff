"""Syntax highlighting for .ncd: one token table read from the grammar and the op table
(tokens.py), a Pygments lexer built from it (lexer.py, the ``ncd[highlight]`` extra) and a
TextMate grammar generated from it (textmate.py, written to editors/)."""
from ncd.highlight.tokens import TokenTable, token_table

__all__ = ["TokenTable", "token_table"]
