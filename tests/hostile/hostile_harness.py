"""Run hostile inputs in child processes under a wall-clock and an address-space limit.

A hostile spec must end in bounded time and memory with exit code 1 and a located ``NcdError``
(or succeed), never a traceback, never a file written into the working directory. Each case runs
in its own child process, in an empty working directory, with ``RLIMIT_AS`` set, and is killed
when it runs past its time limit.

Starting Python and importing torch costs seconds, so by default the children are forked from a
*zygote*: one helper process per test worker that has imported ncd, torch and the CLI once and
forks a fresh child for every case (the child sets its limits, redirects its output into files
outside its working directory and runs ``python -m ncd.cli ARGS`` through ``runpy``, or a Python
snippet). ``spawn=True`` on a case, or ``NCD_HOSTILE_SPAWN=1`` for every case, runs a real
``subprocess`` instead (``python -m ncd.cli`` with the limits set in ``preexec_fn``).

Use from a test module in tests/hostile (pytest puts this folder on ``sys.path``)::

    from hostile_harness import run_cli, run_python, assert_ncd_error, assert_ok

    def test_huge_axis(tmp_path):
        spec = write_spec(tmp_path, "axis D = 10^15 ...")
        assert_ncd_error(run_cli("run", spec), "D", located=True)
"""
from __future__ import annotations

import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TIME_LIMIT_S = 30.0  # generous: a loaded 2-core machine; a bounded case takes well under a second
MEMORY_LIMIT = 1536 << 20  # address space a child may add to its starting size (zygote) ...
SPAWN_MEMORY_LIMIT = 3 << 30  # ... or use in all (a fresh interpreter that imports torch first)
TRACEBACK = "Traceback (most recent call last)"
# `file:line:col: message` as NcdError prints it (the file may itself contain colons).
LOCATED = re.compile(r"^(?P<file>.+?):(?P<line>\d+):(?P<col>\d+): (?P<message>.+)$", re.MULTILINE)


@dataclass
class Outcome:
    """What a child did: its exit status, its output, how long it ran and what it left behind."""

    rc: int
    stdout: str
    stderr: str
    wall_s: float
    timed_out: bool
    new_files: list[str] = field(default_factory=list)  # relative to the child's working directory
    argv: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return (f"argv={self.argv} rc={self.rc} wall={self.wall_s:.2f}s timed_out={self.timed_out} "
                f"files={self.new_files}\n--- stdout\n{self.stdout[-3000:]}\n--- stderr\n{self.stderr[-3000:]}")

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def located(self) -> re.Match[str] | None:
        """The first ``file:line:col: message`` line of the output, if any."""
        return LOCATED.search(self.output)


# --------------------------------------------------------------------------- assertions
def assert_bounded(out: Outcome) -> None:
    """No traceback, no timeout, no killed child, no file left in the working directory."""
    assert not out.timed_out, f"ran past its time limit\n{out}"
    assert out.rc >= 0, f"killed by signal {-out.rc}\n{out}"
    assert TRACEBACK not in out.output, f"a traceback reached the user\n{out}"
    assert "internal error" not in out.output, f"an internal error reached the user\n{out}"
    assert not out.new_files, f"files appeared in the working directory: {out.new_files}\n{out}"


def assert_ok(out: Outcome) -> Outcome:
    assert_bounded(out)
    assert out.rc == 0, f"expected success\n{out}"
    return out


def assert_ncd_error(out: Outcome, *needles: str, located: bool = True, line: int | None = None) -> Outcome:
    """Exit code 1 with an NcdError message (at ``file:line:col`` when ``located``) that names each needle."""
    assert_bounded(out)
    assert out.rc == 1, f"expected exit code 1 (an NcdError)\n{out}"
    if located:
        match = out.located()
        assert match is not None, f"expected a located error (file:line:col: ...)\n{out}"
        if line is not None:
            assert int(match["line"]) == line, f"expected the error at line {line}\n{out}"
    for needle in needles:
        assert needle.lower() in out.output.lower(), f"expected {needle!r} in the message\n{out}"
    return out


def assert_ok_or_ncd_error(out: Outcome, located: bool = True) -> Outcome:
    """Either a result or a (located) NcdError: what a fuzzer may ask of any input."""
    assert_bounded(out)
    if out.rc != 0:
        assert_ncd_error(out, located=located)
    return out


# --------------------------------------------------------------------------- running cases
def write_spec(directory: Path, text: str, name: str = "spec.ncd") -> str:
    """Write a spec beside (not into) the children's working directories; returns its path."""
    path = Path(directory) / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def run_cli(*args: str, timeout: float = TIME_LIMIT_S, memory: int | None = None, spawn: bool = False,
            allow_files: tuple[str, ...] = ()) -> Outcome:
    """``python -m ncd.cli ARGS`` in a child process under the limits."""
    return _run({"kind": "cli", "argv": [str(a) for a in args]}, timeout, memory, spawn, allow_files)


def run_python(code: str, timeout: float = TIME_LIMIT_S, memory: int | None = None, spawn: bool = False,
               allow_files: tuple[str, ...] = ()) -> Outcome:
    """A Python snippet (test code, e.g. ``ncd.load(...)``) in a child process under the limits.

    An ``NcdError`` escaping the snippet is printed as the CLI prints it and exits with 1, so the
    same assertions apply; any other exception is a traceback (exit code 99).
    """
    return _run({"kind": "python", "code": code}, timeout, memory, spawn, allow_files)


def _run(request: dict[str, object], timeout: float, memory: int | None, spawn: bool,
         allow_files: tuple[str, ...]) -> Outcome:
    spawn = spawn or os.environ.get("NCD_HOSTILE_SPAWN") == "1"
    root = Path(tempfile.mkdtemp(prefix="ncd-hostile-"))
    try:
        cwd, out_dir = root / "cwd", root / "out"
        cwd.mkdir()
        out_dir.mkdir()
        request = {**request, "cwd": str(cwd), "out": str(out_dir), "timeout": timeout,
                   "memory": memory if memory is not None else (SPAWN_MEMORY_LIMIT if spawn else MEMORY_LIMIT)}
        start = time.monotonic()
        rc, timed_out = (_spawn if spawn else _zygote().run)(request)
        wall = time.monotonic() - start
        new = sorted(str(p.relative_to(cwd)) for p in cwd.rglob("*"))
        new = [p for p in new if p not in allow_files]
        return Outcome(rc=rc, stdout=_read(out_dir / "stdout"), stderr=_read(out_dir / "stderr"), wall_s=wall,
                       timed_out=timed_out, new_files=new, argv=list(request.get("argv", ["<python>"])))
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _read(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return ""


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.setdefault("TRITON_INTERPRET", "1")
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # no __pycache__ appearing anywhere
    env["OMP_NUM_THREADS"] = "1"
    return env


def _spawn(request: dict[str, object]) -> tuple[int, bool]:
    """A fresh interpreter: the honest path, for a few cases and for NCD_HOSTILE_SPAWN=1."""
    memory = int(request["memory"])  # type: ignore[arg-type]

    def limits() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        os.setsid()

    if request["kind"] == "cli":
        cmd = [sys.executable, "-m", "ncd.cli", *request["argv"]]  # type: ignore[misc]
    else:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--snippet"]
    out_dir = Path(str(request["out"]))
    with open(out_dir / "stdout", "wb") as so, open(out_dir / "stderr", "wb") as se:
        proc = subprocess.Popen(cmd, cwd=str(request["cwd"]), stdout=so, stderr=se,
                                stdin=subprocess.PIPE, env=_child_env(), preexec_fn=limits)
        try:
            proc.communicate(str(request.get("code", "")).encode(), timeout=float(request["timeout"]))  # type: ignore[arg-type]
            return proc.returncode, False
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return proc.returncode, True


class _Zygote:
    """A warm helper process (this file run with --zygote) that forks one child per case."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.proc: subprocess.Popen[str] | None = None

    def _start(self) -> subprocess.Popen[str]:
        if self.proc is None or self.proc.poll() is not None:
            self.proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--zygote"],
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                         env=_child_env(), cwd=tempfile.gettempdir())
            ready = self.proc.stdout.readline()  # type: ignore[union-attr]
            if ready.strip() != "ready":
                raise RuntimeError(f"the hostile-input zygote did not start: {ready!r}")
        return self.proc

    def run(self, request: dict[str, object]) -> tuple[int, bool]:
        with self.lock:
            proc = self._start()
            proc.stdin.write(json.dumps(request) + "\n")  # type: ignore[union-attr]
            proc.stdin.flush()  # type: ignore[union-attr]
            reply = json.loads(proc.stdout.readline())  # type: ignore[union-attr]
            return int(reply["rc"]), bool(reply["timed_out"])

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.stdin.close()  # type: ignore[union-attr]
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:  # a loaded machine: do not hang the test session on it
                self.proc.kill()
                self.proc.wait()


_ZYGOTE: _Zygote | None = None


def _zygote() -> _Zygote:
    global _ZYGOTE
    if _ZYGOTE is None:
        _ZYGOTE = _Zygote()
        import atexit

        atexit.register(_ZYGOTE.close)
    return _ZYGOTE


# --------------------------------------------------------------------------- inside the children
def _snippet(code: str) -> int:
    """Run test code; an NcdError is reported like the CLI reports it (exit 1)."""
    from ncd.errors import NcdError

    try:
        exec(compile(code, "<snippet>", "exec"), {"__name__": "__snippet__"})  # test code, never spec text
    except NcdError as err:
        print(str(err), file=sys.stderr)
        return 1
    return 0


def _case(request: dict[str, object]) -> int:
    import runpy
    import traceback

    import warnings

    os.chdir(str(request["cwd"]))
    warnings.filterwarnings("ignore", category=RuntimeWarning, module="runpy")  # ncd.cli is pre-imported
    try:
        if request["kind"] == "cli":
            sys.argv = ["ncd", *request["argv"]]  # type: ignore[misc]
            try:
                runpy.run_module("ncd.cli", run_name="__main__", alter_sys=True)
            except SystemExit as done:
                code = done.code
                return code if isinstance(code, int) else (0 if code is None else 1)
            return 0
        return _snippet(str(request["code"]))
    except SystemExit as done:
        return done.code if isinstance(done.code, int) else 1
    except BaseException:  # noqa: BLE001 - the child reports what escaped, the test decides
        traceback.print_exc()
        return 99


def _fork_case(request: dict[str, object]) -> tuple[int, bool]:
    out_dir = Path(str(request["out"]))
    pid = os.fork()
    if pid == 0:  # the child: limits, redirected output, the case, then _exit (no atexit, no flush of ours)
        code = 98
        try:
            os.setsid()
            so = os.open(out_dir / "stdout", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            se = os.open(out_dir / "stderr", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            null = os.open(os.devnull, os.O_RDONLY)
            os.dup2(null, 0)
            os.dup2(so, 1)
            os.dup2(se, 2)
            sys.stdin = open(0, closefd=False)
            sys.stdout = open(1, "w", closefd=False)
            sys.stderr = open(2, "w", closefd=False)
            resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
            limit = _address_space() + int(request["memory"])  # type: ignore[arg-type]
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
            code = _case(request)
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)
    deadline = time.monotonic() + float(request["timeout"])  # type: ignore[arg-type]
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status), False
        if time.monotonic() > deadline:
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            _, status = os.waitpid(pid, 0)
            return os.waitstatus_to_exitcode(status), True
        time.sleep(0.01)


def _address_space() -> int:
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


def _zygote_main() -> None:
    import torch  # noqa: F401 - warm: every child shares these imports

    import ncd.api  # noqa: F401
    import ncd.cli  # noqa: F401

    try:
        import ncd.cli.__main__  # noqa: F401  (a package CLI)
    except ImportError:
        pass
    torch.set_num_threads(1)
    ncd.api.check("axis D = 2\nblock F(x: [D]) -> [D] {\n    return x\n}\n")  # builds the parser once
    print("ready", flush=True)
    for line in sys.stdin:
        rc, timed_out = _fork_case(json.loads(line))
        print(json.dumps({"rc": rc, "timed_out": timed_out}), flush=True)


if __name__ == "__main__":
    if sys.argv[1:] == ["--zygote"]:
        _zygote_main()
    elif sys.argv[1:] == ["--snippet"]:
        sys.exit(_snippet(sys.stdin.read()))
