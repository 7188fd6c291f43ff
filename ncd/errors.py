"""The one exception users see: every failure points at the spec text that caused it."""
from __future__ import annotations

from dataclasses import dataclass


def source_lines(source: str) -> list[str]:
    """The lines of a spec as the parser counts them: split at ``\n`` only (a form feed or U+2028
    inside a line is not a line break to Lark), a ``\r`` before it dropped."""
    return [line.removesuffix("\r") for line in source.split("\n")]


def printable(text: str) -> str:
    """A quoted source line with its control characters shown as escapes, so a stray byte cannot
    move the caret or drive the terminal."""
    return "".join(ch if ch.isprintable() or ch == " " else ascii(ch)[1:-1] for ch in text)


@dataclass(frozen=True)
class Span:
    """A place in a spec: 1-based line and column, as editors count them."""

    line: int
    col: int
    end_line: int | None = None
    end_col: int | None = None
    file: str | None = None  # another spec file than the one checked: an imported block's


class NcdError(ValueError):
    """A spec (or a call into a compiled spec) is wrong.

    Rendered as ``file:line:col: message``, the offending source line, a caret under the column,
    and a hint that says how to fix it. Subclasses ValueError so generic callers can catch it.
    """

    def __init__(
        self,
        message: str,
        span: Span | None = None,
        *,
        hint: str | None = None,
        source: str | None = None,
        filename: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.span = span
        self.hint = hint
        self.source = source
        self.filename = filename

    @property
    def line(self) -> int | None:
        return self.span.line if self.span else None

    @property
    def col(self) -> int | None:
        return self.span.col if self.span else None

    def located(self, source: str | None, filename: str | None) -> "NcdError":
        """Attach the spec text and file name at the API boundary (einops-style re-raise). A place
        in an imported file (``Span.file``: a block's node, located by the IR) quotes that file."""
        if self.span is not None and self.span.file is not None and self.source is None and self.filename is None:
            self.filename = self.span.file
            try:
                with open(self.span.file, encoding="utf-8-sig", errors="replace") as f:
                    self.source = f.read()
            except OSError:
                self.source = None
            return self
        if self.source is None:
            self.source = source
        if self.filename is None:
            self.filename = filename
        return self

    def __str__(self) -> str:
        where = self.filename or "<spec>"
        if self.span is not None:
            where = f"{where}:{self.span.line}:{self.span.col}"
        lines = [f"{where}: {self.message}"]
        if self.span is not None and self.source is not None:
            src_lines = source_lines(self.source)
            if 1 <= self.span.line <= len(src_lines):
                text = src_lines[self.span.line - 1].replace("\t", " ")
                lines.append(f"    {printable(text)}")
                lines.append("    " + " " * len(printable(text[: self.span.col - 1])) + "^")
        if self.hint:
            lines.append(f"hint: {self.hint}")
        return "\n".join(lines)

    def to_json(self) -> dict[str, object]:
        return {
            "file": self.filename,
            "line": self.line,
            "col": self.col,
            "message": self.message,
            "hint": self.hint,
        }
