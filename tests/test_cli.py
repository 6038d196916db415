"""``supervisor run`` as a user types it: exit statuses, errors, ``--json``,
``--debug``, and crabcan's and docker's flags, each checked from inside the
container."""

from __future__ import annotations

import ast
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from _util import REPO, cmdline, descendants, gone, run_with_repo

from supervisor import Phase


def cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """``supervisor run ARGS``, as a separate process (the console script's code)."""
    return run_with_repo([sys.executable, "-m", "supervisor", "run", *args], {"FROM_CALLER": "copied"}, input=stdin)


def one_clean_line(stderr: str) -> str:
    """The error output is one ``supervisor: ...`` line, never a traceback."""
    assert "Traceback" not in stderr, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("supervisor: "), stderr
    return lines[0]


def test_exit_status_is_the_payloads(busybox: str) -> None:
    out = cli("-m", busybox, "--", "sh", "-c", "echo out; echo err >&2; exit 3")
    assert (out.returncode, out.stdout, out.stderr) == (3, "out\n", "err\n")
    assert cli("-m", busybox, "--", "true").returncode == 0


def test_not_found_is_127_and_not_executable_is_126(busybox: str) -> None:
    out = cli("-m", busybox, "--", "no-such-program")
    assert out.returncode == 127
    assert "no-such-program" in one_clean_line(out.stderr)
    out = cli("-m", busybox, "--", "/etc/passwd")
    assert out.returncode == 126
    assert "cannot execute /etc/passwd" in one_clean_line(out.stderr)


def test_setup_failure_is_125_with_one_line_naming_the_phase(busybox: str, host_dir: Path) -> None:
    # /nowhere does not exist in the rootfs, and supervisor never creates it there.
    out = cli("-m", busybox, "-v", f"{host_dir}:/nowhere", "--", "true")
    assert out.returncode == 125
    assert "setup failed in phase mounts" in one_clean_line(out.stderr)
    assert not os.path.exists(os.path.join(busybox, "nowhere"))


def test_invalid_values_are_125_with_one_line(busybox: str, host_dir: Path) -> None:
    out = cli("-m", str(host_dir / "missing"), "--", "true")
    assert out.returncode == 125
    assert "rootfs" in one_clean_line(out.stderr)
    profile = host_dir / "profile.json"
    profile.write_text('{"defaultAction": "SCMP_ACT_NOPE", "syscalls": []}')
    out = cli("-m", busybox, "--seccomp", str(profile), "--", "true")
    assert out.returncode == 125
    assert "seccomp" in one_clean_line(out.stderr).lower()
    out = cli("-m", busybox, "-u", "70000", "--", "true")
    assert out.returncode == 125
    one_clean_line(out.stderr)


def test_json_prints_the_result_with_its_phases(busybox: str) -> None:
    out = cli("--json", "-m", busybox, "--", "sh", "-c", "echo hi; exit 2")
    assert out.returncode == 2
    result = json.loads(out.stdout)
    assert (result["exit_code"], result["reason"], result["stdout"]) == (2, "exited", "hi\n")
    assert [p["name"] for p in result["phases"]] == [p.label for p in Phase]
    seconds = [p["seconds"] for p in result["phases"]]
    assert seconds == sorted(seconds)
    # A setup failure is a result too, with the failed phase and no exit code.
    out = cli("--json", "-m", busybox, "--", "no-such-program")
    assert out.returncode == 127
    result = json.loads(out.stdout)
    assert (result["reason"], result["failed_phase"], result["exit_code"]) == ("setup_failed", "exec", None)


def test_debug_shows_each_phase_with_its_duration(busybox: str) -> None:
    out = cli("-d", "-m", busybox, "--", "sh", "-c", "sleep 1; echo payload >&2")
    assert out.returncode == 0
    lines = out.stderr.splitlines()
    timed = [line.split()[1] for line in lines if line.endswith(" ms") and "wall" not in line]
    assert timed == [p.label for p in Phase][:-1]
    assert "supervisor: ids           container ids 0-65535 are host ids 100000-165535" in lines
    # The exec line is printed when the payload has started, before its
    # output, with PID 1's host PID (for nsenter -t PID).
    started = [line for line in lines if line.startswith("supervisor: exec          (payload started, host PID ")]
    assert len(started) == 1, lines
    assert started[0].removesuffix(")").rsplit(" ", 1)[1].isdigit()
    assert lines.index(started[0]) < lines.index("payload")
    # The same through the event loop (a memory limit needs it).
    out = cli("-d", "--memory", "64m", "-m", busybox, "--", "true")
    assert any(
        line.startswith("supervisor: exec          (payload started, host PID ") for line in out.stderr.splitlines()
    )
    assert lines[-1].startswith("supervisor: exited; wall ")


def test_crabcans_flags(busybox: str, host_dir: Path) -> None:
    (host_dir / "note").write_text("from the host\n")
    out = cli("-m", busybox, "-u", "1000", "-c", "sh -c 'id -u; cat /mnt/note'", "-a", f"{host_dir}:/mnt")
    assert (out.returncode, out.stdout) == (0, "1000\nfrom the host\n"), out.stderr
    # crabcan's -a is read-write: the container's root can write there (the
    # host folder is the container root's to write to).
    os.chmod(host_dir, 0o777)
    out = cli("-m", busybox, "-a", f"{host_dir}:/mnt", "--", "sh", "-c", "echo new > /mnt/new")
    assert out.returncode == 0, out.stderr
    assert (host_dir / "new").read_text() == "new\n"


def test_docker_style_flags(busybox: str, host_dir: Path) -> None:
    script = 'hostname; pwd; echo "$GREETING $FROM_CALLER"; cat /mnt/note; echo x > /mnt/other || echo read-only'
    (host_dir / "note").write_text("note\n")
    out = cli(
        "-m", busybox, "--hostname", "ci-box", "-w", "/mnt", "-e", "GREETING=hello", "-e", "FROM_CALLER",
        "-v", f"{host_dir}:/mnt:ro", "--", "sh", "-c", script,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[:4] == ["ci-box", "/mnt", "hello copied", "note"]
    assert out.stdout.splitlines()[-1] == "read-only"
    assert not (host_dir / "other").exists()


def test_docker_user_and_env_file_flags(busybox: str, host_dir: Path) -> None:
    """``-u UID:GID`` (and ``--user``), ``--env-file`` in docker's format, -e winning over it."""
    env_file = host_dir / "env"
    env_file.write_text("# a comment\nA=1\n\nB=from file\nFROM_CALLER\n")
    script = 'echo "$(id -u):$(id -g) $A $B $FROM_CALLER"'
    out = cli("-m", busybox, "-u", "5:7", "--env-file", str(env_file), "-e", "B=2", "--", "sh", "-c", script)
    assert (out.returncode, out.stdout) == (0, "5:7 1 2 copied\n"), out.stderr
    out = cli("-m", busybox, "--user", "9", "--", "sh", "-c", "echo $(id -u):$(id -g)")
    assert (out.returncode, out.stdout) == (0, "9:9\n"), out.stderr
    env_file.write_text("=nameless\n")
    out = cli("-m", busybox, "--env-file", str(env_file), "--", "true")
    assert out.returncode == 125
    assert "line 1" in one_clean_line(out.stderr)


def test_name_flag_is_the_hostname(busybox: str) -> None:
    out = cli("-m", busybox, "--name", "web-1", "--json", "--", "hostname")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert (result["hostname"], result["stdout"]) == ("web-1", "web-1\n")
    out = cli("-m", busybox, "--name", "a", "--hostname", "b", "--", "true")
    assert out.returncode == 125
    assert "not both" in one_clean_line(out.stderr)


def test_tmpfs_flag(busybox: str) -> None:
    out = cli("-m", busybox, "--tmpfs", "/mnt:size=2m", "--tmpfs", "/tmp", "--", "sh", "-c", "df -k /mnt | tail -1")
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[1] == "2048"
    out = cli("-m", busybox, "--tmpfs", "/mnt:suid", "--", "true")
    assert out.returncode == 125
    assert "unknown option 'suid'" in one_clean_line(out.stderr)


def test_user_names_are_looked_up_in_the_containers_files(busybox: str) -> None:
    """``-u NAME[:GROUP]`` as docker: the root's own /etc/passwd and /etc/group."""
    show = ["--", "sh", "-c", "echo $(id -u):$(id -g)"]
    assert cli("-m", busybox, "-u", "user", *show).stdout == "1000:1000\n"
    assert cli("-m", busybox, "-u", "user:root", *show).stdout == "1000:0\n"
    assert cli("-m", busybox, "-u", "root:1000", *show).stdout == "0:1000\n"
    assert cli("-m", busybox, "-u", "user", "-g", "5", *show).stdout == "1000:5\n"
    out = cli("-m", busybox, "-u", "nobody", *show)
    assert out.returncode == 125
    assert one_clean_line(out.stderr) == f"supervisor: -u: no user 'nobody' in /etc/passwd of {busybox}"
    out = cli("-m", busybox, "-u", "user:staff", *show)
    assert one_clean_line(out.stderr) == f"supervisor: -u: no group 'staff' in /etc/group of {busybox}"
    # The embedded default root's /etc is the host's.
    assert cli("-u", "nobody", *show).stdout == "65534:65534\n"


@pytest.mark.parametrize("flag", [["--bogus"], ["-u", "5:"]])
def test_a_bad_run_flag_prints_runs_usage(flag: list[str]) -> None:
    out = cli(*flag, "--", "true")
    assert out.returncode == 2
    assert out.stderr.startswith("usage: supervisor run [OPTIONS]"), out.stderr
    assert "supervisor run: error:" in out.stderr


def test_interactive_stdin_reaches_the_payload(busybox: str) -> None:
    out = cli("-i", "-m", busybox, "--", "sh", "-c", "read -r line; echo got:$line", stdin="typed\n")
    assert (out.returncode, out.stdout) == (0, "got:typed\n"), out.stderr
    # Without -i the payload's stdin is /dev/null.
    out = cli("-m", busybox, "--", "sh", "-c", "cat; echo end", stdin="ignored\n")
    assert out.stdout == "end\n"


def test_tty_needs_a_terminal(busybox: str) -> None:
    out = cli("-t", "-m", busybox, "--", "true", stdin="")
    assert out.returncode == 125
    assert "terminal" in one_clean_line(out.stderr)


@pytest.mark.parametrize("flag", ["--help"])
def test_help_lists_crabcans_flags(flag: str) -> None:
    out = cli(flag)
    assert out.returncode == 0
    for option in ("-c", "--uid", "--mount", "--add", "--debug", "--hostname", "--env", "--workdir", "--json"):
        assert option in out.stdout, option


def test_version_is_the_packages() -> None:
    import supervisor

    out = run_with_repo([sys.executable, "-m", "supervisor", "--version"], {})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"supervisor {supervisor.__version__}", out.stdout


def test_quick_exit_still_flushes_and_runs_atexit_hooks(busybox: str) -> None:
    """The console script skips the interpreter's teardown: what it prints, and
    what atexit hooks do, must still happen (output to a pipe is buffered)."""
    code = (
        "import atexit, sys\n"
        "from supervisor._cli import console_main\n"
        "atexit.register(lambda: print('hook ran', file=sys.stderr))\n"
        "sys.argv = ['supervisor', 'run', '--json', '-m', sys.argv[1], '--', 'sh', '-c', 'exit 3']\n"
        "console_main()\n"
    )
    out = run_with_repo([sys.executable, "-c", code, busybox], {})
    assert out.returncode == 3, out.stderr
    assert json.loads(out.stdout)["exit_code"] == 3
    assert out.stderr.strip().endswith("hook ran"), out.stderr


def test_run_needs_no_event_loop(busybox: str) -> None:
    """A plain ``supervisor run`` imports no async framework (they cost more
    than the container's start-up), and a second one not even the seccomp
    binding (the filter is cached); one with a terminal, --json or a memory
    limit goes through the event loop, with the same outcome."""
    code = (
        "import sys\n"
        "from supervisor._cli import main\n"
        "status = main(sys.argv[1:])\n"
        "heavy = ('anyio', 'trio', 'pyseccomp', 'dataclasses', 'inspect', 'typing', 'shutil', 'ctypes', 'random')\n"
        "print(sorted(m for m in heavy if m in sys.modules), status)\n"
    )
    args = ["run", "-m", busybox, "--", "sh", "-c", "exit 3"]
    run_with_repo([sys.executable, "-c", code, *args], {})
    out = run_with_repo([sys.executable, "-c", code, *args], {})
    # Nor the standard library's heaviest modules (see docs/design.rst).
    assert out.stdout.strip() == "[] 3", out.stderr
    out = run_with_repo([sys.executable, "-c", code, "run", "--memory", "64m", *args[1:]], {})
    loaded, status = out.stdout.strip().rsplit(" ", 1)
    assert {"anyio", "trio"} <= set(ast.literal_eval(loaded)), out.stderr
    assert status == "3"


@pytest.mark.parametrize("signame", ["SIGTERM", "SIGHUP", "SIGINT"])
@pytest.mark.parametrize("command", ["run", "run-many"])
def test_a_stop_signal_stops_the_containers_and_cleans_up(busybox: str, command: str, signame: str) -> None:
    """``kill`` (SIGTERM), a closed terminal (SIGHUP) or Ctrl-C (SIGINT) is
    a clean stop: the containers are stopped as on cancellation, their cgroups
    removed (the leak check fails the test otherwise), and the status is
    128+N, without a traceback."""
    signum = getattr(signal, signame)
    count = 2 if command == "run-many" else 1
    many = ["-n", str(count), "-j", str(count)] if command == "run-many" else []
    proc = subprocess.Popen(
        [sys.executable, "-m", "supervisor", command, *many, "-m", busybox, "--", "sh", "-c", "sleep 100; exit 7"],
        env={**os.environ, "PYTHONPATH": REPO},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 30
        while len(sleeps := [p for p in descendants(proc.pid) if cmdline(p) == b"sleep\x00100\x00"]) < count:
            assert proc.poll() is None, "the CLI ended before its payloads started"
            assert time.monotonic() < deadline, "the payloads did not start"
            time.sleep(0.02)
        starts = {p: descendants(p)[p] for p in sleeps}
        proc.send_signal(signum)
        _, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:  # SIGINT still cleans up, unlike SIGKILL
            proc.send_signal(signal.SIGINT)
            proc.communicate(timeout=30)
    assert proc.returncode == 128 + signum, stderr
    assert stderr.decode().strip().endswith(f"supervisor: stopped by {signame}"), stderr
    assert b"Traceback" not in stderr
    assert all(gone(p, start) for p, start in starts.items())


@pytest.mark.parametrize("signame", ["SIGTERM", "SIGINT"])
def test_json_still_prints_the_result_of_a_stopped_run(busybox: str, signame: str) -> None:
    """With --json, a run stopped by a signal still prints its Result: reason
    "cancelled", and the output captured until then."""
    signum = getattr(signal, signame)
    proc = subprocess.Popen(
        [sys.executable, "-m", "supervisor", "run", "--json", "-m", busybox, "--", "sh", "-c", "echo hi; sleep 100"],
        env={**os.environ, "PYTHONPATH": REPO},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 30
        while not [p for p in descendants(proc.pid) if cmdline(p) == b"sleep\x00100\x00"]:
            assert proc.poll() is None, "the CLI ended before its payload started"
            assert time.monotonic() < deadline, "the payload did not start"
            time.sleep(0.02)
        proc.send_signal(signum)
        stdout, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=30)
    assert proc.returncode == 128 + signum, stderr
    result = json.loads(stdout)
    assert (result["reason"], result["stdout"]) == ("cancelled", "hi\n")
    assert stderr.decode().strip().endswith(f"supervisor: stopped by {signame}"), stderr


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf"])
@pytest.mark.parametrize("command", ["run", "run-many"])
def test_a_timeout_that_is_no_duration_is_refused(command: str, value: str) -> None:
    many = ["-n", "1"] if command == "run-many" else []
    out = subprocess.run(
        [sys.executable, "-m", "supervisor", command, *many, "--timeout", value, "--", "true"],
        env={**os.environ, "PYTHONPATH": REPO},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 125, out
    assert f"--timeout {float(value)}: give a number of seconds above 0" in out.stderr, out.stderr


#: Makes stdin (a pty) the controlling terminal of the new session, then
#: execs the CLI: a wrapper, not preexec_fn, as this process may have threads.
_ON_ITS_TERMINAL = (
    "import fcntl, os, sys, termios\n"
    "fcntl.ioctl(0, termios.TIOCSCTTY, 0)\n"
    "os.execv(sys.executable, [sys.executable, '-m', 'supervisor', *sys.argv[1:]])\n"
)


def _start_on(slave: int, argv: list[str]) -> subprocess.Popen[bytes]:
    """Start ``supervisor ARGV`` in a session of its own whose controlling
    terminal (stdin, stdout and stderr) is the pty ``slave``; close ``slave``."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _ON_ITS_TERMINAL, *argv],
        env={**os.environ, "PYTHONPATH": REPO},
        stdin=slave,
        stdout=slave,
        stderr=slave,
        start_new_session=True,
    )
    os.close(slave)
    return proc


def _on_a_pty(argv: list[str], keys: dict[bytes, bytes]) -> tuple[int, bytes, list[Any], list[Any]]:
    """Run ``supervisor ARGV`` with a pty as its terminal; type ``keys[k]``
    once ``k`` has appeared. Returns the exit status, everything the terminal
    showed, and the terminal's modes before and after."""
    import select
    import termios

    master, slave = os.openpty()
    before = termios.tcgetattr(slave)
    proc = _start_on(slave, argv)
    seen = b""
    typed: set[bytes] = set()
    try:
        deadline = time.monotonic() + 30
        # Read until the CLI is gone: it restores the terminal with TCSADRAIN,
        # which waits until this side has read all of the output.
        while proc.poll() is None and time.monotonic() < deadline:
            for when, key in keys.items():
                if when in seen and when not in typed:
                    os.write(master, key)
                    typed.add(when)
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                try:
                    seen += os.read(master, 4096)
                except OSError:  # EIO: the other side is closed
                    break
        try:  # after EIO the CLI may still be exiting: it closes its fds first
            status = proc.wait(timeout=max(deadline - time.monotonic(), 5))
        except subprocess.TimeoutExpired:  # hung: SIGTERM lets the CLI clean up its container
            proc.terminate()
            proc.wait(timeout=10)
            raise AssertionError(f"the CLI did not end within 30 s; the terminal showed {seen!r}") from None
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        after = termios.tcgetattr(master)
        os.close(master)
    return status, seen, before, after


def test_tty_in_a_real_terminal(busybox: str) -> None:
    """``-t`` on a pty: the payload gets a terminal of its own, keystrokes reach
    it, and the caller's terminal modes come back after the run."""
    script = "tty; read -r line; echo got:$line; exit 4"
    status, seen, before, after = _on_a_pty(
        ["run", "-t", "-m", busybox, "--", "sh", "-c", script], {b"/dev/pts/0": b"hello\r"}
    )
    assert status == 4, seen
    assert b"/dev/pts/0" in seen
    assert b"got:hello" in seen
    assert after[3] == before[3], "local modes restored (the terminal left raw mode)"


def test_tty_keeps_keys_typed_before_the_payload_ran(busybox: str) -> None:
    """Typeahead (typed while the container starts) is the payload's input:
    going raw must not flush it."""
    script = "read -r line; echo got:$line; exit 4"
    status, seen, _, _ = _on_a_pty(["run", "-t", "-m", busybox, "--", "sh", "-c", script], {b"": b"early\r"})
    assert status == 4, seen
    assert b"got:early" in seen


def test_tty_hangup_stops_the_container(busybox: str) -> None:
    """The terminal goes away (its SIGHUP, then EIO on every use): the
    container is stopped and cleaned up, and there are no modes to restore."""
    import select

    master, slave = os.openpty()
    proc = _start_on(slave, ["run", "-t", "-m", busybox, "--", "sh", "-c", "echo up; sleep 100"])
    try:
        seen, deadline = b"", time.monotonic() + 30
        while b"up" not in seen and time.monotonic() < deadline:
            if select.select([master], [], [], 0.5)[0]:
                seen += os.read(master, 4096)
        assert b"up" in seen, seen
        os.close(master)  # the hang-up
        assert proc.wait(timeout=30) == 128 + signal.SIGHUP
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=30)
        try:
            os.close(master)
        except OSError:  # closed above: the hang-up
            pass


def test_tty_setup_failure_is_one_line(busybox: str) -> None:
    status, seen, before, after = _on_a_pty(["run", "-t", "-m", busybox, "--", "no-such-program"], {})
    assert status == 127, seen
    assert b"Traceback" not in seen
    assert seen.strip().startswith(b"supervisor: ")
    assert after[3] == before[3]


def test_run_many_live_display_on_a_terminal(busybox: str) -> None:
    """On a terminal, run-many redraws one progress line, then prints its summary."""
    status, seen, _, _ = _on_a_pty(["run-many", "-n", "12", "-j", "4", "-m", busybox, "--", "sleep", "0.3"], {})
    assert status == 0, seen
    text = seen.decode()
    assert text.count("\r\x1b[K") >= 2, text  # redrawn in place
    assert "done 12/12 failed 0" in text
    assert "exited" in text  # the summary table


def test_preserve_fds_must_be_open(busybox: str) -> None:
    out = run_with_repo(["sh", "-c", 'exec 3<&-; exec "$0" -m supervisor run --preserve-fds 1 -m "$1" -- true',
                         sys.executable, busybox])  # fmt: skip
    assert out.returncode == 125
    assert "fd 3 is not open" in one_clean_line(out.stderr)


def test_preserve_fds(busybox: str, host_dir: Path) -> None:
    """``--preserve-fds 1``: our fd 3 is the payload's fd 3; our fd 7 is not passed."""
    (host_dir / "in").write_text("passed\n")
    command = (
        f'exec 3<"{host_dir}/in" 7<"{host_dir}/in"; exec "$0" -m supervisor run --preserve-fds 1 -m "$1" -- '
        "sh -c 'cat <&3; ls /proc/self/fd'"
    )
    proc = run_with_repo(["sh", "-c", command, sys.executable, busybox])
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "passed"
    assert "3" in lines[1:]
    assert "7" not in lines[1:], lines
