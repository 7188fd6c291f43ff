"""`ncd list`: the bundled spec library, name, title and paper (read from the headers only)."""
from __future__ import annotations

import argparse
from typing import Any

from ncd.cli.common import emit_json


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser("list", help="list the bundled spec library",
                              description="List the library specs: name, title and paper (headers only).")
    p.add_argument("--json", action="store_true", help="print a JSON list")
    p.set_defaults(func=run)
    return p


def library_table() -> list[dict[str, str]]:
    from ncd.frontend.builder import read_meta
    from ncd.library import library_specs

    rows = []
    for path in library_specs():
        meta = read_meta(path.read_text(encoding="utf-8"))
        rows.append({"name": path.stem, "title": meta.title, "paper": meta.paper, "path": str(path)})
    return rows


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def run(args: argparse.Namespace) -> int:
    rows = library_table()
    if args.json:
        emit_json(rows)
        return 0
    if not rows:
        print("the library is empty")
        return 0
    width = max(len(r["name"]) for r in rows)
    for r in rows:
        print(f"{r['name']:<{width}}  {_clip(r['title'], 90)}")
        if r["paper"]:
            print(f"{'':<{width}}  paper: {_clip(r['paper'], 83)}")
    return 0
