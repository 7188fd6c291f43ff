"""Reading spec and IR files into text, as one rule everywhere: UTF-8, a leading byte-order mark
skipped, and a file that cannot be read or decoded is an ``NcdError`` (at the line and column of
the first bad byte), never a ``UnicodeDecodeError``."""
from __future__ import annotations

import os
from pathlib import Path

from ncd.errors import NcdError, Span

BOM = "\ufeff"


def strip_bom(text: str) -> str:
    """Spec text without a leading byte-order mark (editors on Windows write one)."""
    return text[1:] if text.startswith(BOM) else text


def read_text(path: str | os.PathLike[str], what: str = "spec file") -> str:
    """The text of a UTF-8 file, BOM skipped."""
    name = os.fspath(path)
    try:
        data = Path(path).read_bytes()
    except IsADirectoryError:
        raise NcdError(f"cannot read {what} {name}: it is a directory") from None
    except OSError as exc:
        raise NcdError(f"cannot read {what} {name}: {exc.strerror or exc}") from None
    return decode(data, name, what)


def decode(data: bytes, name: str, what: str = "spec file") -> str:
    """UTF-8 bytes (a file's, or standard input's) as text, BOM skipped."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _decode_error(data, exc, what).located(data.decode("utf-8", errors="replace"), name) from None
    return strip_bom(text)


def _decode_error(data: bytes, exc: UnicodeDecodeError, what: str) -> NcdError:
    """Located where the first undecodable byte is, counting lines by ``\\n`` as the parser does."""
    start = data.rfind(b"\n", 0, exc.start) + 1
    line = data.count(b"\n", 0, exc.start) + 1
    col = len(data[start:exc.start].decode("utf-8", errors="replace")) + 1
    return NcdError(f"the {what} is not UTF-8: byte 0x{data[exc.start]:02x} cannot be decoded ({exc.reason})",
                    Span(line, col), hint="save the file as UTF-8")
