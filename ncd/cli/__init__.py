"""The `ncd` command line: check, compile, run, list, inspect, render and cost specs.

One module per command (``COMMANDS`` maps each to its module under ``ncd/cli/``: ``compile`` is
``emit.py`` and ``list`` is ``library.py``, so no module shadows a builtin), each with ``add_parser(subparsers)``
and ``run(args) -> int``; the options they share (``--set``, ``--seed``, ``--scan-backend``) are
parsed and range-checked once, in ``ncd/cli/options.py``. ``main`` turns every ``NcdError`` into
its located message (or, with ``--json``, its ``to_json()`` object).

Exit codes: 0 ok, 1 a spec or user error (NcdError), 2 a command-line syntax error (argparse),
3 an unexpected exception: a bug in ncd, reported in one line rather than a traceback.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from ncd.errors import NcdError

# command -> its module; `ncd --help` lists them in this order
COMMANDS = {"check": "check", "compile": "emit", "run": "run", "list": "library", "ir": "ir", "render": "render",
            "cost": "cost"}
EXIT_OK, EXIT_USER, EXIT_USAGE, EXIT_BUG = 0, 1, 2, 3


def build_parser() -> argparse.ArgumentParser:
    """The whole command line."""
    parser = argparse.ArgumentParser(
        prog="ncd", description="Neural-Circuit-Diagram specs (.ncd) → PyTorch.",
        epilog="A PATH is a .ncd file or the name of a library spec (see `ncd list`). "
               "Exit codes: 0 ok, 1 spec or usage error, 2 bad command line, 3 a bug in ncd.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in COMMANDS.values():
        importlib.import_module(f"ncd.cli.{module}").add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)  # exits 2 on a bad command line, 0 on --help
    try:
        return args.func(args)
    except NcdError as err:
        err = err.located(None, getattr(args, "path", None) or f"ncd {args.command}")
        if getattr(args, "json", False):
            from ncd.cli.common import emit_json

            emit_json({"ok": False, "error": err.to_json()})
        else:
            print(str(err), file=sys.stderr)
        return EXIT_USER
    except BrokenPipeError:  # `ncd ... | head`
        return EXIT_OK
    except KeyboardInterrupt:
        print("ncd: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - the backstop: every known failure is an NcdError above
        print(f"ncd {args.command}: internal error: {type(exc).__name__}: {exc}\n"
              "this is a bug in ncd, please report it with the spec and the command line", file=sys.stderr)
        return EXIT_BUG
