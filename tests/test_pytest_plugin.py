"""The pytest plugin (``pytest --sandbox``), driven through pytester in real sandboxes.

Every test here runs a pytest of its own (``runpytest_subprocess``) on test
files written for it, with the plugin loaded from the package's entry point,
and checks what that pytest reports and what the sandboxes did (or kept
from doing) to the host.
"""

from __future__ import annotations

import importlib.util
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="sandboxes need root here (the rootless run is its own test)")

#: Seconds any one inner pytest may take.
INNER_TIMEOUT_S = 120


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", *args, timeout=INNER_TIMEOUT_S)


def processes_with(token: str) -> list[int]:
    """Host pids whose command line holds ``token``."""
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/cmdline", "rb") as f:
                    if token.encode() in f.read():
                        found.append(int(name))
            except OSError:
                pass
    return found


REPORTS = """
import warnings
import pytest

def test_passes(capsys):
    print("to stdout")
    assert capsys.readouterr().out == "to stdout\\n"

def test_assertion():
    numbers = [1, 2, 3]
    assert numbers == [1, 2, 4], "the lists differ"

def test_prints_then_fails():
    print("printed before failing")
    raise ValueError("boom")

@pytest.mark.skip(reason="not today")
def test_skipped():
    pass

@pytest.mark.xfail(reason="known")
def test_xfails():
    assert False

def test_warns():
    warnings.warn("take care", UserWarning)

@pytest.fixture
def broken():
    raise RuntimeError("fixture broke")

def test_setup_error(broken):
    pass
"""


def _normalized(lines: list[str]) -> list[str]:
    text = "\n".join(lines)
    text = re.sub(r"in \d+\.\d+s.*", "in Xs", text)
    return [line for line in text.splitlines() if not line.startswith(("platform ", "rootdir:", "plugins:"))]


def test_reports_match_an_unsandboxed_run(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_reports=REPORTS)
    plain = run(pytester, "-rA")
    sandboxed = run(pytester, "-rA", "--sandbox")
    plain.assert_outcomes(passed=2, failed=2, skipped=1, xfailed=1, errors=1, warnings=1)
    sandboxed.assert_outcomes(passed=2, failed=2, skipped=1, xfailed=1, errors=1, warnings=1)
    assert _normalized(sandboxed.outlines) == _normalized(plain.outlines)
    assert "E       AssertionError: the lists differ" in sandboxed.stdout.str()
    assert "printed before failing" in sandboxed.stdout.str()


def test_junit_xml_matches_an_unsandboxed_run(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_reports=REPORTS)
    run(pytester, "--junitxml=plain.xml")
    run(pytester, "--sandbox", "--junitxml=sandboxed.xml")

    def normalized(name: str) -> str:
        text = (pytester.path / name).read_text()
        return re.sub(r'(time|timestamp|hostname)="[^"]*"', "", text)

    assert normalized("sandboxed.xml") == normalized("plain.xml")


def test_a_test_cannot_see_what_another_left_in_tmp(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_tmp="""
        import os
        def test_writes():
            with open("/tmp/left-behind", "w") as f:
                f.write("secret")
            os.mkdir("/tmp/a-dir")
        def test_reads():
            assert not os.path.exists("/tmp/left-behind")
            assert not os.path.exists("/tmp/a-dir")
        """
    )
    run(pytester, "--sandbox").assert_outcomes(passed=2)
    assert not os.path.exists("/tmp/left-behind")


def test_tmp_path_works_and_stays_inspectable(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_paths="""
        def test_writes(tmp_path):
            (tmp_path / "result.txt").write_text("kept")
            print("TMP_PATH", tmp_path)
            assert False
        """
    )
    result = run(pytester, "--sandbox")
    result.assert_outcomes(failed=1)
    (line,) = [line for line in result.outlines if line.startswith("TMP_PATH ")]
    assert Path(line.split()[1], "result.txt").read_text() == "kept"


def test_the_host_is_read_only(pytester: pytest.Pytester) -> None:
    outside = f"/var/tmp/sandbox-probe-{uuid.uuid4().hex}"
    pytester.makepyfile(
        test_write=f"""
        import errno, os, pytest
        @pytest.mark.parametrize("path", ["{pytester.path}/written-by-test", "{outside}", "/etc/sandbox-probe"])
        def test_cannot_write(path):
            with pytest.raises(OSError) as info:
                open(path, "w").close()
            assert info.value.errno in (errno.EROFS, errno.EACCES, errno.ENOENT)
        def test_reads_the_project():
            assert os.path.exists("{pytester.path}/test_write.py")
        """
    )
    run(pytester, "--sandbox").assert_outcomes(passed=4)
    assert not os.path.exists(pytester.path / "written-by-test")
    assert not os.path.exists(outside)


def test_writable_project_with_read_only_false(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_write=f"""
        import pytest
        @pytest.mark.sandbox(read_only=False)
        def test_writes():
            open("{pytester.path}/written-by-test", "w").write("yes")
        """
    )
    run(pytester).assert_outcomes(passed=1)
    assert (pytester.path / "written-by-test").read_text() == "yes"


def test_no_network_not_even_the_hosts_loopback(pytester: pytest.Pytester) -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        pytester.makepyfile(
            test_net=f"""
            import socket, pytest
            def test_cannot_reach_the_host():
                with pytest.raises(OSError):
                    socket.create_connection(("127.0.0.1", {port}), timeout=2)
            def test_has_its_own_loopback():
                with socket.socket() as s:
                    s.bind(("127.0.0.1", {port}))
            """
        )
        run(pytester, "--sandbox").assert_outcomes(passed=2)
        server.setblocking(False)
        with pytest.raises(BlockingIOError):
            server.accept()


def test_a_bridge_network_where_a_test_asks_for_one(pytester: pytest.Pytester) -> None:
    """``network="bridge"`` gives the marked test a link besides loopback and a
    default route; the unmarked test beside it still has only loopback."""
    pytester.makepyfile(
        test_bridge="""
        import socket, pytest
        def _default_route():
            with open("/proc/net/route") as f:
                return any(line.split()[1] == "00000000" for line in list(f)[1:])
        @pytest.mark.sandbox(network="bridge")
        def test_bridged():
            assert [n for _, n in socket.if_nameindex() if n != "lo"]
            assert _default_route()
        def test_not_bridged():
            assert [n for _, n in socket.if_nameindex()] == ["lo"]
            assert not _default_route()
        """
    )
    run(pytester, "--sandbox").assert_outcomes(passed=2)


@pytest.mark.parametrize("scope", ["test", "module"])
def test_no_process_outlives_its_sandbox(pytester: pytest.Pytester, scope: str) -> None:
    token = f"sandbox-orphan-{uuid.uuid4().hex}"
    pytester.makepyfile(
        test_orphans=f"""
        import os, subprocess, time
        def test_leaves_a_process(tmp_path_factory):
            p = subprocess.Popen(["/bin/sh", "-c", "exec sleep 1000 # {token}"], start_new_session=True)
            (tmp_path_factory.getbasetemp() / "pid").write_text(str(p.pid))
        def test_the_process_is_gone(tmp_path_factory):
            pid = int((tmp_path_factory.getbasetemp() / "pid").read_text())
            assert not os.path.exists(f"/proc/{{pid}}") or "{scope}" == "module"
        """
    )
    run(pytester, f"--sandbox={scope}").assert_outcomes(passed=2)
    assert processes_with(token) == []


def test_a_test_that_kills_every_process_it_can_and_what_a_test_inherits(pytester: pytest.Pytester) -> None:
    """``kill(-1, SIGKILL)`` in a test reaches its sandbox's other processes
    (the next unit's, waiting for its turn, among them): the next tests run
    all the same. A test's process holds none of the other units' pipes nor
    the worker's pidfds, and sees only PID 1 and the next unit's process besides itself
    (and, for its first moments, the one before, exiting)."""
    pytester.makepyfile(
        test_kill="""
        import os, signal, time
        def test_kills_every_process_it_can():
            os.kill(-1, signal.SIGKILL)
        def test_runs_after():
            pass
        def test_inherits_no_worker_pipe():
            fds = {}
            for fd in os.listdir("/proc/self/fd"):
                try:
                    fds[fd] = os.readlink(f"/proc/self/fd/{fd}")
                except OSError:
                    pass
            assert not [t for t in fds.values() if "pidfd" in t], fds
            # The sandbox's stdout and stderr pipes with output capturing's
            # copies of them (4), and the unit's own pipe it says it is done on.
            assert sum(t.startswith("pipe:") for t in fds.values()) <= 5, fds
        def test_sees_only_pid_1_and_the_next_unit():
            deadline = time.monotonic() + 5
            while True:
                others = sorted(int(p) for p in os.listdir("/proc") if p.isdigit() and int(p) not in (1, os.getpid()))
                if len(others) <= 1 or time.monotonic() > deadline:
                    break
                time.sleep(0.01)
            assert len(others) == 1, others
        """
    )
    run(pytester, "--sandbox").assert_outcomes(passed=4)


def test_segfault_exit_and_hang_each_get_the_right_report(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_crashes="""
        import ctypes, os, time, pytest
        def test_segfault():
            ctypes.string_at(0)
        def test_exits():
            print("about to leave", flush=True)
            os._exit(7)
        @pytest.mark.sandbox(timeout=2)
        def test_hangs():
            time.sleep(60)
        def test_after_them_all():
            pass
        """
    )
    result = run(pytester, "--sandbox", "-s")
    result.assert_outcomes(failed=3, passed=1)
    out = result.stdout.str()
    assert "sandbox: the test's process was killed by signal 11 (SIGSEGV)" in out
    assert "Fatal Python error: Segmentation fault" in out
    assert "sandbox: the test's process exited with status 7 before its test ended" in out
    assert "about to leave" in out
    assert "sandbox: timed out after 2 s" in out
    assert re.search(r'File ".*test_crashes.py", line \d+ in test_hangs', out)


def test_out_of_memory_is_reported_with_the_limit(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_oom="""
        import pytest
        @pytest.mark.sandbox(memory="120M")
        def test_eats_memory():
            hoard = []
            while True:
                hoard.append(bytearray(8 << 20))
        @pytest.mark.sandbox(memory="120M")
        def test_runs_after():
            pass
        """
    )
    result = run(pytester)
    result.assert_outcomes(failed=1, passed=1)
    assert "sandbox: the sandbox ended: OOM-killed (limit 120M)" in result.stdout.str()


def test_minus_s_streams_output_live(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_live="""
        import time
        def test_prints():
            print("first line", flush=True)
            time.sleep(5)
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-s", "--sandbox", "test_live.py"],
        cwd=pytester.path,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    try:
        started = time.monotonic()
        for line in proc.stdout:
            if "first line" in line:
                break
        assert time.monotonic() - started < 4.5, "the line came only at the end"
    finally:
        proc.wait(INNER_TIMEOUT_S)
        proc.stdout.close()
    assert proc.returncode == 0


def test_sigterm_stops_the_sandboxes_and_writes_the_summary(pytester: pytest.Pytester) -> None:
    token = f"sandbox-sigterm-{uuid.uuid4().hex}"
    pytester.makepyfile(
        test_slow=f"""
        import subprocess
        def test_slow():
            subprocess.run(["/bin/sh", "-c", "sleep 600 # {token}"])
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--sandbox", "--junitxml=out.xml", "test_slow.py"],
        cwd=pytester.path,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not processes_with(token) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert processes_with(token), "the test never started"
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=INNER_TIMEOUT_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "KeyboardInterrupt" in out
    assert (pytester.path / "out.xml").exists()
    assert proc.returncode == 2
    assert processes_with(token) == []


def test_only_marked_tests_without_the_option(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_marked="""
        import pytest
        def in_sandbox():
            with open("/proc/1/cmdline", "rb") as f:
                return b"supervisor._pytest" in f.read()
        @pytest.mark.sandbox
        def test_marked():
            assert in_sandbox()
        def test_unmarked():
            assert not in_sandbox()
        """
    )
    run(pytester).assert_outcomes(passed=2)


def test_options_from_the_ini_file_and_errors_named(pytester: pytest.Pytester) -> None:
    pytester.makeini(
        """
        [pytest]
        sandbox = module
        sandbox_pids = 50
        """
    )
    pytester.makepyfile(
        test_ini="""
        import os, time, pytest
        def test_pids_limited():
            children = []
            try:
                with pytest.raises(BlockingIOError):
                    for _ in range(80):
                        pid = os.fork()
                        if pid == 0:
                            time.sleep(30)
                            os._exit(0)
                        children.append(pid)
            finally:
                for pid in children:
                    os.kill(pid, 9)
                    os.waitpid(pid, 0)
        @pytest.mark.sandbox(colour="blue")
        def test_bad_option():
            pass
        """
    )
    result = run(pytester)
    result.assert_outcomes(passed=1, errors=1)
    assert "unknown option 'colour'" in result.stdout.str()


def test_pdb_turns_sandboxing_off(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_pdb="def test_ok():\n    pass\n")
    result = run(pytester, "--sandbox", "--pdb", "-W", "default")
    result.assert_outcomes(passed=1, warnings=1)
    assert "--pdb/--trace: the tests run in-process, without sandboxes" in result.stdout.str()


@pytest.mark.skipif(importlib.util.find_spec("xdist") is None, reason="needs pytest-xdist")
def test_with_xdist(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_many="""
        import os, pytest
        @pytest.mark.parametrize("n", range(20))
        def test_in_sandbox(n):
            assert open("/proc/1/cmdline", "rb").read().find(b"supervisor._pytest") >= 0
        """
    )
    run(pytester, "-n", "2", "--sandbox").assert_outcomes(passed=20)


ASYNC_TESTS = """
import anyio, pytest, trio

@pytest.mark.trio
async def test_trio():
    await trio.sleep(0.01)

@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_anyio(anyio_backend):
    await anyio.sleep(0.01)
"""


def test_trio_and_anyio_tests(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_async=ASYNC_TESTS)
    run(pytester, "--sandbox", "-p", "trio").assert_outcomes(passed=3)


@pytest.mark.skipif(importlib.util.find_spec("pytest_cov") is None, reason="needs pytest-cov")
def test_coverage_equals_an_unsandboxed_run(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        mod="""
        def covered(x):
            if x:
                return 1
            return 2
        def not_covered():
            return 3
        """,
        test_cov="""
        import mod
        def test_one():
            assert mod.covered(True) == 1
        """,
    )
    pytester.syspathinsert()

    def figures(*args: str) -> list[str]:
        result = run(pytester, "--cov=mod", "--cov-report=term-missing", *args)
        result.assert_outcomes(passed=1)
        return [line for line in result.outlines if line.startswith(("mod.py", "TOTAL"))]

    plain = figures()
    assert plain
    assert figures("--sandbox") == plain


def test_the_sandbox_fixture(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_fixture="""
        import pytest
        def test_sync(sandbox):
            result = sandbox.run(["/bin/sh", "-c", "echo hello from $(hostname)"])
            assert result.stdout.startswith(b"hello from ")
            container = sandbox.start(["/bin/sleep", "600"])
            assert container.pid > 0
        @pytest.mark.trio
        async def test_async(sandbox):
            result = await sandbox.run_async(["/bin/echo", "hi"])
            assert result.stdout == b"hi\\n"
        """
    )
    run(pytester, "-p", "trio").assert_outcomes(passed=2)


def test_the_projects_own_unprivileged_tests(pytester: pytest.Pytester) -> None:
    repo = Path(__file__).resolve().parent.parent
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "-q",
            "--sandbox",
            "tests/test_spec.py",
            "tests/test_public_api.py",
            "tests/test_protocol.py",
        ],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=INNER_TIMEOUT_S * 3,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert re.search(r"\d+ passed", result.stdout)
