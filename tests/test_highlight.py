"""Highlighting: the Pygments lexer (entry point `ncd`) and the TextMate grammar in editors/ give
every token of every library spec and every docs/language.md example a class, no error token.

The grammar's keywords are read here straight from grammar/ncd.lark's text (every quoted word),
independently of the token table, so a keyword the lexer misses fails."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from ncd.library import library_specs

ROOT = Path(__file__).resolve().parents[1]
FENCE = re.compile(r"^```ncd[ \t]*\n(.*?)^```", re.S | re.M)
GRAMMAR_WORDS = sorted(set(re.findall(r'"([A-Za-z_][A-Za-z0-9_]*)"', (ROOT / "grammar" / "ncd.lark").read_text())))


def sources() -> list:
    out = [pytest.param(p.read_text(encoding="utf-8"), id=p.name) for p in library_specs()]
    for doc in (ROOT / "docs" / "language.md", ROOT / "README.md"):
        text = doc.read_text(encoding="utf-8")
        for m in FENCE.finditer(text):
            out.append(pytest.param(m.group(1), id=f"{doc.name}:{text[: m.start()].count(chr(10)) + 2}"))
    return out


SOURCES = sources()


def test_there_is_something_to_highlight():
    assert len(SOURCES) > 40 and len(GRAMMAR_WORDS) > 15


# ---------------------------------------------------------------- Pygments
@pytest.fixture(scope="module")
def lexer():
    pygments = pytest.importorskip("pygments", reason="the ncd[highlight] extra (Pygments) is not installed")
    from pygments.lexers import get_lexer_by_name

    del pygments
    return get_lexer_by_name("ncd")  # through the pygments.lexers entry point


@pytest.mark.parametrize("source", SOURCES)
def test_pygments_has_no_error_token(lexer, source):
    from pygments.token import Error

    tokens = list(lexer.get_tokens(source))
    assert [v for t, v in tokens if t in Error] == []
    assert "".join(v for _, v in tokens).rstrip("\n") == source.rstrip("\n")


def test_pygments_marks_what_is_not_ncd(lexer):
    from pygments.token import Error

    assert any(t in Error for t, _ in lexer.get_tokens("block A(x: [D]) -> [D] { return $x }"))


@pytest.mark.parametrize("word", GRAMMAR_WORDS)
def test_every_grammar_word_is_a_keyword(lexer, word):
    from pygments.token import Keyword

    tokens = [(t, v) for t, v in lexer.get_tokens(f"{word} x") if v.strip()]
    assert tokens[0] == (tokens[0][0], word) and tokens[0][0] in Keyword


def test_pygments_classes(lexer):
    from pygments.token import Comment, Keyword, Name, Number

    got = {v: t for t, v in lexer.get_tokens("block Mlp(x: [D']) -> [D] { return relu(x) * 2.5e-1 } # note")}
    assert got["block"] in Keyword and got["Mlp"] in Name.Class and got["relu"] in Name.Builtin
    assert got["D'"] in Name and got["2.5e-1"] in Number and got["# note"] in Comment
    assert got["x"] in Name and got["x"] not in Name.Builtin


def test_pygmentize_cli(tmp_path):
    pytest.importorskip("pygments", reason="the ncd[highlight] extra (Pygments) is not installed")
    spec = library_specs()[0]
    out = subprocess.run([sys.executable, "-m", "pygments", "-l", "ncd", "-f", "html", str(spec)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert 'class="k"' in out.stdout and 'class="err"' not in out.stdout


# ---------------------------------------------------------------- TextMate
def test_textmate_grammar_is_generated_from_the_token_table():
    from ncd.highlight.textmate import grammar_json

    committed = (ROOT / "editors" / "ncd.tmLanguage.json").read_text(encoding="utf-8")
    assert committed == grammar_json(), "regenerate it: python -m ncd.highlight.textmate"
    grammar = json.loads(committed)
    assert grammar["scopeName"] == "source.ncd"
    assert all(p["include"][1:] in grammar["repository"] for p in grammar["patterns"])


@pytest.fixture(scope="module")
def textmate():
    pytest.importorskip("textmate_grammar", reason="textmate-grammar-python (the test extra) is not installed")
    from textmate_grammar.parsers.base import LanguageParser

    return LanguageParser(json.loads((ROOT / "editors" / "ncd.tmLanguage.json").read_text(encoding="utf-8")))


def _unscoped(parser, source: str) -> list[str]:
    element = parser.parse_string(source)
    return [text for _, text, scopes in element.flatten() if text.strip() and len(scopes) < 2]


@pytest.mark.parametrize("source", SOURCES)
def test_textmate_scopes_every_token(textmate, source):
    assert _unscoped(textmate, source) == []


def test_textmate_leaves_what_is_not_ncd_unscoped(textmate):
    assert "$" in "".join(_unscoped(textmate, "block A(x: [D]) -> [D] { return $x }"))
