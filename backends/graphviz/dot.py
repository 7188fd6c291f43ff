"""Running the Graphviz `dot` binary: bounded in time, every failure an NcdError."""
from __future__ import annotations

import shutil
import signal
import subprocess

from ncd.errors import NcdError

DOT_TIMEOUT_S = 120.0  # a layout that takes longer is a figure nobody can read
INSTALL_HINT = ("install Graphviz for svg/pdf/png/tex: `make dot`, `apt-get install graphviz`, `brew install graphviz` "
                "or `conda install graphviz`; .dot output works without it")


def run_dot(dot_text: str, fmt: str, what: str) -> bytes:
    """``dot -T<fmt>`` of the DOT text; ``what`` names the output in messages."""
    exe = shutil.which("dot")
    if exe is None:
        raise NcdError(f"cannot render {what}: the Graphviz `dot` binary is not installed", hint=INSTALL_HINT)
    try:
        proc = subprocess.run([exe, f"-T{fmt}"], input=dot_text.encode("utf-8"), capture_output=True,
                              timeout=DOT_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise NcdError(f"graphviz took longer than {DOT_TIMEOUT_S:g} s to lay out {what}",
                       hint="draw less: --depth 1, or --expand one block; or write .dot and lay it out yourself"
                       ) from None
    except OSError as exc:
        raise NcdError(f"cannot run graphviz for {what}: {exc.strerror or exc}", hint=INSTALL_HINT) from None
    if proc.returncode < 0:  # killed by a signal: dot itself crashed (2.43 segfaults on some layouts)
        raise NcdError(f"graphviz's dot crashed ({_signal_name(-proc.returncode)}) laying out {what}"
                       + _stderr(proc.stderr),
                       hint="write .dot and lay it out with another Graphviz version, or draw less: --depth 1, "
                            "or --expand one block")
    if proc.returncode != 0:
        raise NcdError(f"graphviz failed on {what} (dot exited with status {proc.returncode})" + _stderr(proc.stderr))
    return proc.stdout


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _stderr(data: bytes) -> str:
    text = data.decode(errors="replace").strip()[:500]
    return f": {text}" if text else ""
