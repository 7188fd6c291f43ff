"""The harness itself: limits hold, tracebacks and stray files are seen, both child kinds work."""
import pytest

from hostile_harness import (
    assert_bounded,
    assert_ncd_error,
    assert_ok,
    run_cli,
    run_python,
)

GOOD = "axis D = 4\nblock F(x: [D]) -> [D] {\n    return x\n}\n"


def test_cli_success_and_output(spec):
    out = assert_ok(run_cli("check", spec(GOOD)))
    assert "ok" in out.stdout and "F(x: [D]) -> [D]" in out.stdout


def test_cli_error_is_located(spec):
    out = assert_ncd_error(run_cli("check", spec("axis D = 4\nblock F(x: [D]) -> [D] {\n    return y\n}\n")),
                           "y", line=3)
    assert out.located()["col"] == "12"


def test_spawned_cli_works_under_the_limits(spec):
    assert_ok(run_cli("check", spec(GOOD), spawn=True))


def test_traceback_is_caught():
    out = run_python("raise KeyError('boom')")
    assert out.rc == 99
    with pytest.raises(AssertionError, match="traceback"):
        assert_bounded(out)


def test_wall_clock_limit_kills():
    out = run_python("while True: pass", timeout=1.0)
    assert out.timed_out and out.wall_s < 10
    with pytest.raises(AssertionError, match="time limit"):
        assert_bounded(out)


def test_address_space_limit_holds():
    out = run_python("b = bytearray(4 << 30)")
    assert out.rc == 99 and "MemoryError" in out.stderr


def test_stray_file_is_seen():
    out = run_python("open('PWNED', 'w').close()")
    assert out.rc == 0 and out.new_files == ["PWNED"]
    with pytest.raises(AssertionError, match="files appeared"):
        assert_bounded(out)


def test_snippet_ncd_error_exits_1():
    assert_ncd_error(run_python("import ncd\nncd.check('axis D\\nblock')"), located=True)
