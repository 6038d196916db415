"""The async API, under trio and under asyncio: run(), Supervisor, handles, cancellation."""

from __future__ import annotations

import errno
import json
import os
import signal
import time
from functools import partial
from pathlib import Path

import anyio
import anyio.abc
import pytest
from _util import gone, proc_start_time, proc_state
from anyio.abc import TaskStatus

import supervisor
from supervisor import Container, ContainerFailed, Phase, Result, SetupError, Spec

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module", params=["trio", "asyncio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    backend: str = request.param
    return backend


async def wait_for_handler(pid: int, sig: int) -> None:
    """Wait until the process has installed a handler for ``sig``."""
    with anyio.fail_after(5):
        while True:
            with open(f"/proc/{pid}/status") as f:
                caught = next(int(line.split()[1], 16) for line in f if line.startswith("SigCgt:"))
            if caught & (1 << (sig - 1)):
                return
            await anyio.sleep(0.01)


# -- one-shot run --------------------------------------------------------------


async def test_run_one_shot(busybox: str) -> None:
    seen: list[tuple[Phase, float]] = []
    result = await supervisor.run(
        Spec(["sh", "-c", "echo hello; echo oops >&2"], rootfs=busybox),
        on_phase=lambda p, s: seen.append((p, s)),
    )
    assert isinstance(result, Result)
    assert result.ok
    assert (result.reason, result.exit_code, result.signal) == ("exited", 0, None)
    assert (result.stdout, result.stderr) == (b"hello\n", b"oops\n")
    assert (result.failed_phase, result.error) == (None, None)
    # Every phase, in protocol order, with non-decreasing times.
    assert [p.name for p in result.phases] == [p.label for p in Phase]
    times = [p.seconds for p in result.phases]
    assert times == sorted(times)
    assert 0 <= times[0] <= times[-1] <= result.wall_s < 10
    assert [p for p, _ in seen] == list(Phase)
    # The result is JSON-ready.
    data = json.loads(json.dumps(result.to_json()))
    assert data["stdout"] == "hello\n"
    assert data["reason"] == "exited"
    assert [p["name"] for p in data["phases"]] == [p.label for p in Phase]


async def test_run_check(busybox: str) -> None:
    """check is True by default, as trio's and anyio's run_process; the error reads like CalledProcessError."""
    with pytest.raises(ContainerFailed) as info:
        await supervisor.run(Spec(["sh", "-c", "echo partial; echo oops >&2; exit 5"], rootfs=busybox))
    error = info.value
    assert error.result.exit_code == 5
    assert (error.returncode, error.stdout, error.output, error.stderr) == (5, b"partial\n", b"partial\n", b"oops\n")
    assert error.cmd == ("sh", "-c", "echo partial; echo oops >&2; exit 5")
    assert "exited with status 5" in str(error)
    assert isinstance(error, supervisor.SupervisorError)
    with pytest.raises(ContainerFailed) as info:
        await supervisor.run(Spec(["sh", "-c", "kill -KILL $$"], rootfs=busybox, init=True))
    assert info.value.returncode == 137  # the init's 128+N, as a shell's
    with pytest.raises(ContainerFailed) as info:
        await supervisor.run(Spec(["sleep", "5"], rootfs=busybox, grace_period=0), timeout=0.2)
    assert info.value.returncode == -9
    assert "killed by signal 9 (timed out)" in str(info.value)
    assert info.value.result.reason == "timeout"
    # Success returns normally.
    result = await supervisor.run(Spec(["true"], rootfs=busybox))
    assert result.ok
    # Without check a failure is just a result.
    result = await supervisor.run(Spec(["false"], rootfs=busybox), check=False)
    assert (result.reason, result.exit_code, result.ok) == ("exited", 1, False)


async def test_run_without_capture_uses_given_fds(busybox: str, host_dir: Path) -> None:
    out_path = host_dir / "out"
    err_path = host_dir / "err"
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        result = await supervisor.run(
            Spec(["sh", "-c", "echo to-out; echo to-err >&2"], rootfs=busybox),
            capture_output=False,
            stdout=out.fileno(),
            stderr=err.fileno(),
        )
    assert result.ok
    assert (result.stdout, result.stderr) == (b"", b"")
    assert out_path.read_bytes() == b"to-out\n"
    assert err_path.read_bytes() == b"to-err\n"


async def test_run_with_stdin_fd(busybox: str, host_dir: Path) -> None:
    src = host_dir / "in"
    src.write_bytes(b"line 1\nline 2\n")
    with open(src, "rb") as f:
        result = await supervisor.run(Spec(["wc", "-l"], rootfs=busybox), stdin=f.fileno())
    assert result.stdout.strip() == b"2"


async def test_bad_arguments(busybox: str) -> None:
    spec = Spec(["true"], rootfs=busybox)
    async with supervisor.Supervisor() as sup:
        with pytest.raises(ValueError, match="input or stdin"):
            await sup.run(spec, input=b"x", stdin=0)
        with pytest.raises(ValueError, match="tty"):
            await sup.run(Spec(["true"], rootfs=busybox, tty=True), capture_output=False, stdout=supervisor.PIPE)
    # A supervisor must be entered before use.
    with pytest.raises(RuntimeError, match="async with"):
        await supervisor.Supervisor().run(spec)


# -- many containers ---------------------------------------------------------


async def test_twenty_concurrent_containers(busybox: str) -> None:
    n = 20
    results: dict[int, Result] = {}

    async def one(i: int) -> None:
        results[i] = await sup.run(
            Spec(["sh", "-c", f"echo {i}; sleep 0.5; exit {i % 4}"], rootfs=busybox), check=False
        )

    t0 = time.monotonic()
    async with supervisor.Supervisor() as sup, anyio.create_task_group() as tg:
        for i in range(n):
            tg.start_soon(one, i)
    elapsed = time.monotonic() - t0
    assert sorted(results) == list(range(n))
    for i, result in results.items():
        assert result.stdout == f"{i}\n".encode()
        assert (result.reason, result.exit_code) == ("exited", i % 4)
    assert len({r.id for r in results.values()}) == n
    assert len({r.hostname for r in results.values()}) == n
    # They ran side by side, not one after another (20 x 0.5 s = 10 s).
    assert elapsed < 6


# -- handles from start() ----------------------------------------------------


async def test_start_returns_a_running_container(busybox: str) -> None:
    spec = Spec(["sleep", "1"], rootfs=busybox)  # long enough to be looked at under load
    async with supervisor.Supervisor() as sup, anyio.create_task_group() as tg:
        handle = await tg.start(sup.run, spec)
        assert isinstance(handle, Container)
        # Setup is over: PID 1 is live and already the payload (exec done).
        assert proc_state(handle.pid) in ("S", "R")
        with open(f"/proc/{handle.pid}/cmdline", "rb") as f:
            assert f.read() == b"sleep\x001\x00"
        assert os.stat(f"/proc/{handle.pid}/ns/pid").st_ino != os.stat("/proc/self/ns/pid").st_ino
        assert handle.phases[-1].name == "exec"
        assert [p.name for p in handle.phases] == [p.label for p in Phase]
        assert handle.hostname
        assert handle.id
        start = proc_start_time(handle.pid)
        result = await handle.wait()
        assert (result.reason, result.exit_code) == ("exited", 0)
        assert result.id == handle.id
        assert result.hostname == handle.hostname
        assert gone(handle.pid, start)
        # wait() can be called again and gives the same result.
        assert await handle.wait() is result


async def test_streams_on_the_handle(busybox: str) -> None:
    """stdin/stdout/stderr=PIPE: byte streams to and from the running payload."""
    script = 'while read -r line; do echo "out:$line"; echo "err:$line" >&2; done; echo bye'
    run = partial(
        supervisor.Supervisor.run,
        capture_output=False,
        stdin=supervisor.PIPE,
        stdout=supervisor.PIPE,
        stderr=supervisor.PIPE,
    )

    async def read_until(stream: anyio.abc.ByteReceiveStream, end: bytes) -> bytes:
        data = b""
        with anyio.fail_after(10):
            while not data.endswith(end):
                data += await stream.receive()
        return data

    async with supervisor.Supervisor() as sup, anyio.create_task_group() as tg:
        handle = await tg.start(partial(run, sup, Spec(["sh", "-c", script], rootfs=busybox)))
        assert handle.stdin is not None
        assert handle.stdout is not None
        assert handle.stderr is not None
        # A conversation: each answer comes while the payload runs.
        await handle.stdin.send(b"one\n")
        assert await read_until(handle.stdout, b"\n") == b"out:one\n"
        assert await read_until(handle.stderr, b"\n") == b"err:one\n"
        await handle.stdin.send(b"two\n")
        assert await read_until(handle.stdout, b"\n") == b"out:two\n"
        # Closing stdin is EOF for the payload.
        await handle.stdin.aclose()
        assert await read_until(handle.stdout, b"bye\n") == b"bye\n"
        assert await read_until(handle.stderr, b"\n") == b"err:two\n"
        result = await handle.wait()
    assert (result.reason, result.exit_code) == ("exited", 0)
    # Not captured: the bytes went to the streams only.
    assert (result.stdout, result.stderr) == (b"", b"")


async def test_terminal_is_the_containers_own_pty(busybox: str) -> None:
    """``Spec(tty=True)``: a pty of the container's own devpts is the payload's
    controlling terminal and stdio; ``resize_terminal`` reaches it."""
    script = "tty; test -t 0 && test -t 1 && echo tty-stdio; cut -d' ' -f6,7 /proc/self/stat; read -r w; echo got:$w"
    result = await supervisor.run(Spec(["sh", "-c", script], rootfs=busybox, tty=True), input=b"typed\n")
    # The pty echoes what was typed, wherever it falls among the output lines.
    lines = [line for line in result.stdout.decode().replace("\r", "").splitlines() if line != "typed"]
    assert lines[:2] == ["/dev/pts/0", "tty-stdio"], lines
    session, tty_nr = lines[2].split()
    assert session == "1"  # PID 1 leads its own session ...
    assert int(tty_nr) != 0  # ... with the pty as its controlling terminal
    assert "got:typed" in lines
    # Nobody watched live: the phases held back until the terminal went are
    # reported with it, none lost.
    assert [p.name for p in result.phases] == [p.label for p in Phase]
    async with supervisor.Supervisor() as sup, anyio.create_task_group() as tg:
        script = 'until [ "$(stty size 2>/dev/null)" = "33 111" ]; do sleep 0.02; done; echo resized'
        spec = Spec(["sh", "-c", script], rootfs=busybox, tty=True)
        handle = await tg.start(partial(sup.run, spec, timeout=20))
        handle.resize_terminal(33, 111)
        result = await handle.wait()
        assert result.reason == "exited"
        assert result.stdout.endswith(b"resized\r\n")


async def test_new_session_without_a_terminal(busybox: str) -> None:
    """Without a tty PID 1 still leads a new session with no controlling
    terminal, so TIOCSTI can never reach the caller's terminal."""
    result = await supervisor.run(Spec(["cut", "-d", " ", "-f6,7", "/proc/self/stat"], rootfs=busybox))
    assert result.stdout == b"1 0\n"


async def test_kill_and_signal_through_the_handle(busybox: str) -> None:
    async with supervisor.Supervisor() as sup, anyio.create_task_group() as tg:
        handle = await tg.start(partial(sup.run, check=False), Spec(["sleep", "30"], rootfs=busybox))
        # PID 1 has no handler for SIGTERM: the kernel drops it.
        handle.terminate()
        handle.send_signal(signal.SIGUSR1)
        await anyio.sleep(0.1)
        assert proc_state(handle.pid) in ("S", "R")
        handle.kill()
        result = await handle.wait()
        assert (result.reason, result.signal, result.exit_code) == ("signaled", signal.SIGKILL, None)
        # A signal PID 1 handles is delivered.
        handle = await tg.start(
            partial(sup.run, check=False),
            Spec(["sh", "-c", 'trap "exit 3" USR1; while :; do sleep 0.05; done'], rootfs=busybox),
        )
        await wait_for_handler(handle.pid, signal.SIGUSR1)
        handle.send_signal(signal.SIGUSR1)
        assert (await handle.wait()).exit_code == 3
        # Signalling an exited container is a no-op, never a stray kill.
        handle.kill()
        handle.send_signal(signal.SIGTERM)


async def test_max_output_keeps_the_last_bytes(busybox: str) -> None:
    """A payload that prints 20 MB costs the supervisor max_output bytes; the end is kept."""
    script = "head -c 20000000 /dev/zero; echo the end; echo err >&2"
    result = await supervisor.run(Spec(["sh", "-c", script], rootfs=busybox), max_output=1000)
    assert len(result.stdout) == 1000
    assert result.stdout.endswith(b"\0the end\n")
    assert result.stdout_dropped == 20_000_000 + len(b"the end\n") - 1000
    assert (result.stderr, result.stderr_dropped) == (b"err\n", 0)
    assert result.to_json()["stdout_dropped"] == result.stdout_dropped
    with pytest.raises(ValueError, match="max_output"):
        await supervisor.run(Spec(["true"], rootfs=busybox), max_output=-1)


def test_capture_drops_from_the_start() -> None:
    from supervisor._parent.streams import Capture

    capture = Capture(5)
    for data in (b"abc", b"defg", b"", b"hijklmnop", b"q"):
        capture.append(data)
    assert (capture.value(), capture.dropped, capture.size) == (b"mnopq", 12, 5)
    unlimited = Capture()
    unlimited.append(b"x" * 10)
    assert (unlimited.value(), unlimited.dropped) == (b"x" * 10, 0)


async def test_stop_through_the_handle(busybox: str) -> None:
    """docker stop: SIGTERM to a PID 1 that handles it, the grace, SIGKILL; no check failure."""
    handles_term = Spec(["sh", "-c", 'trap "exit 3" TERM; while :; do sleep 0.05; done'], rootfs=busybox)
    async with supervisor.Supervisor() as sup, anyio.create_task_group() as tg:
        handle = await tg.start(sup.run, handles_term)  # check=True: a stop is no failure
        await wait_for_handler(handle.pid, signal.SIGTERM)
        result = await handle.stop(grace=10)
        assert (result.reason, result.exit_code) == ("exited", 3)
        # Without a handler PID 1 would ignore SIGTERM: SIGKILL at once, not after the grace.
        handle = await tg.start(sup.run, Spec(["sleep", "30"], rootfs=busybox))
        t0 = time.monotonic()
        result = await handle.stop(grace=10)
        assert time.monotonic() - t0 < 5
        assert (result.reason, result.signal) == ("signaled", signal.SIGKILL)
        # With the init, the payload gets the SIGTERM (and dies of it).
        handle = await tg.start(sup.run, Spec(["sleep", "30"], rootfs=busybox, init=True))
        result = await handle.stop()
        assert (result.reason, result.exit_code) == ("exited", 128 + signal.SIGTERM)
        # A stop of an exited container returns its result.
        assert await handle.stop() is result
        # A payload whose handler does not exit gets the SIGKILL after the grace.
        stays = Spec(["sh", "-c", 'trap "echo term" TERM; while :; do sleep 0.05; done'], rootfs=busybox)
        handle = await tg.start(sup.run, stays)
        await wait_for_handler(handle.pid, signal.SIGTERM)
        t0 = time.monotonic()
        result = await handle.stop(grace=0.3)
        assert 0.3 <= time.monotonic() - t0 < 5
        assert (result.reason, result.signal) == ("signaled", signal.SIGKILL)
        with pytest.raises(ValueError, match="grace"):
            await handle.stop(grace=-1)
    # A payload that failed on its own before the stop still fails the run's check.
    raised: list[BaseException] = []

    async def run_checked(sup: supervisor.Supervisor, *, task_status: TaskStatus[Container]) -> None:
        try:
            await sup.run(Spec(["sh", "-c", "exit 4"], rootfs=busybox), task_status=task_status)
        except ContainerFailed as exc:
            raised.append(exc)

    async with supervisor.Supervisor() as sup, anyio.create_task_group() as tg:
        handle = await tg.start(run_checked, sup)
        await handle.wait()
        assert (await handle.stop()).exit_code == 4
    assert len(raised) == 1


async def test_setup_error_propagates_out_of_start(busybox: str) -> None:
    async with supervisor.Supervisor() as sup, anyio.create_task_group() as tg:
        with pytest.raises(SetupError) as info:
            await tg.start(sup.run, Spec(["/no/such/program"], rootfs=busybox))
        assert info.value.phase is Phase.EXEC
        assert info.value.result is not None
        assert info.value.result.reason == "setup_failed"
        # The task group and the supervisor carry on.
        handle = await tg.start(sup.run, Spec(["echo", "still fine"], rootfs=busybox))
        assert (await handle.wait()).stdout == b"still fine\n"


# -- cancellation ------------------------------------------------------------


async def test_cancel_kills_a_sleeping_container(busybox: str) -> None:
    spec = Spec(["sleep", "1000"], rootfs=busybox, grace_period=10)
    async with supervisor.Supervisor() as sup:
        async with anyio.create_task_group() as tg:
            handle = await tg.start(sup.run, spec)
            pid, start = handle.pid, proc_start_time(handle.pid)
            t0 = time.monotonic()
            tg.cancel_scope.cancel()
        elapsed = time.monotonic() - t0
        result = await handle.wait()
    # sleep as PID 1 has no SIGTERM handler: SIGKILL at once, no grace period.
    assert elapsed < 5
    assert result.reason == "cancelled"
    assert result.signal == signal.SIGKILL
    assert gone(pid, start)


async def test_cancelled_run_reraises_cancellation(busybox: str) -> None:
    reached = False
    t0 = time.monotonic()
    async with supervisor.Supervisor() as sup:
        with anyio.move_on_after(0.3) as scope:
            await sup.run(Spec(["sleep", "1000"], rootfs=busybox))
            reached = True
        # The supervisor is still usable.
        assert (await sup.run(Spec(["true"], rootfs=busybox))).ok
    assert scope.cancelled_caught
    assert not reached
    assert time.monotonic() - t0 < 5


async def test_cancel_sends_sigterm_to_a_payload_that_handles_it(busybox: str) -> None:
    script = 'trap "exit 7" TERM; while :; do sleep 0.05; done'
    spec = Spec(["sh", "-c", script], rootfs=busybox, grace_period=10)
    async with supervisor.Supervisor() as sup:
        async with anyio.create_task_group() as tg:
            handle = await tg.start(sup.run, spec)
            await wait_for_handler(handle.pid, signal.SIGTERM)
            t0 = time.monotonic()
            tg.cancel_scope.cancel()
        elapsed = time.monotonic() - t0
        result = await handle.wait()
    assert result.reason == "cancelled"
    assert (result.exit_code, result.signal) == (7, None)
    assert elapsed < 5, "exited on SIGTERM, well within the grace period"


async def test_grace_period_then_sigkill(busybox: str, host_dir: Path) -> None:
    os.chmod(host_dir, 0o777)
    script = 'trap "echo term >> /tmp/out/log" TERM; while :; do sleep 0.05; done'
    mounts = [supervisor.Mount(str(host_dir), "/tmp/out")]
    spec = Spec(["sh", "-c", script], rootfs=busybox, grace_period=0.5, mounts=mounts)
    async with supervisor.Supervisor() as sup:
        async with anyio.create_task_group() as tg:
            handle = await tg.start(sup.run, spec)
            await wait_for_handler(handle.pid, signal.SIGTERM)
            t0 = time.monotonic()
            tg.cancel_scope.cancel()
        elapsed = time.monotonic() - t0
        result = await handle.wait()
    assert result.reason == "cancelled"
    assert result.signal == signal.SIGKILL
    assert (host_dir / "log").read_text() == "term\n", "SIGTERM first, once"
    assert 0.45 <= elapsed < 3, "SIGKILL after the grace period"


async def test_cancel_during_setup(busybox: str) -> None:
    async with supervisor.Supervisor() as sup:
        with anyio.CancelScope() as scope:

            def on_phase(phase: Phase, _s: float) -> None:
                if phase is Phase.PIVOT:
                    scope.cancel()

            await sup.run(Spec(["sleep", "1000"], rootfs=busybox), on_phase=on_phase)
        assert scope.cancelled_caught
        assert (await sup.run(Spec(["true"], rootfs=busybox))).ok


# -- the supervisor's lifetime -----------------------------------------------


async def test_pid1_is_the_supervisors_child_and_gone_after_it(busybox: str) -> None:
    """Cloned from this process, reaped by it (through its pidfd)."""
    async with anyio.create_task_group() as tg:
        async with supervisor.Supervisor() as sup:
            handle = await tg.start(partial(sup.run, Spec(["sleep", "1000"], rootfs=busybox), check=False))
            pid, start = handle.pid, proc_start_time(handle.pid)
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            assert int(fields[1]) == os.getpid()  # ppid
            handle.kill()
        await handle.wait()
    assert gone(pid, start)


async def test_supervisor_exit_kills_what_is_left(busybox: str) -> None:
    async with anyio.create_task_group() as tg:
        async with supervisor.Supervisor() as sup:
            handle = await tg.start(partial(sup.run, Spec(["sleep", "1000"], rootfs=busybox), check=False))
            pid, start = handle.pid, proc_start_time(handle.pid)
        with anyio.fail_after(5):
            result = await handle.wait()
    assert gone(pid, start)
    # Stopped by the supervisor, with the real exit status (not a made-up one).
    assert (result.reason, result.exit_code, result.signal) == ("cancelled", None, signal.SIGKILL)


async def test_supervisor_exit_stops_what_is_left_gracefully(busybox: str) -> None:
    """Left running when the supervisor exits: SIGTERM, the grace period, SIGKILL."""
    exits_on_term = 'trap "exit 7" TERM; while :; do sleep 0.05; done'
    survives_term = 'trap "echo term" TERM; while :; do sleep 0.05; done'
    async with anyio.create_task_group() as tg:
        async with supervisor.Supervisor() as sup:
            polite = await tg.start(partial(sup.run, Spec(["sh", "-c", exits_on_term], rootfs=busybox), check=False))
            spec = Spec(["sh", "-c", survives_term], rootfs=busybox, grace_period=0.5)
            stubborn = await tg.start(partial(sup.run, check=False), spec)
            await wait_for_handler(polite.pid, signal.SIGTERM)
            await wait_for_handler(stubborn.pid, signal.SIGTERM)
            t0 = time.monotonic()
        elapsed = time.monotonic() - t0
        first, second = await polite.wait(), await stubborn.wait()
    assert (first.reason, first.exit_code, first.signal) == ("cancelled", 7, None)
    assert (second.reason, second.exit_code, second.signal) == ("cancelled", None, signal.SIGKILL)
    assert second.stdout == b"term\n", "SIGTERM first, once"
    assert 0.45 <= elapsed < 5, "SIGKILL after the grace period"


async def test_supervisor_can_be_reused_sequentially(busybox: str) -> None:
    for _ in range(2):
        async with supervisor.Supervisor() as sup:
            assert (await sup.run(Spec(["echo", "x"], rootfs=busybox))).stdout == b"x\n"


async def test_on_phase_error_propagates_as_itself(busybox: str) -> None:
    class Boom(Exception):
        pass

    def on_phase(phase: Phase, _seconds: float) -> None:
        if phase is Phase.PIVOT:
            raise Boom(phase.label)

    async with supervisor.Supervisor() as sup:
        with pytest.raises(Boom, match="pivot"):
            await sup.run(Spec(["sleep", "1000"], rootfs=busybox), on_phase=on_phase)
        # The half-built container was killed and reaped; the supervisor carries on.
        assert (await sup.run(Spec(["true"], rootfs=busybox))).ok


@pytest.mark.parametrize("phase", [Phase.SPAWNED, Phase.USERNS, Phase.PIVOT, Phase.EXEC], ids=lambda p: p.label)
async def test_setup_failure_with_io_leaves_nothing(busybox: str, phase: Phase) -> None:
    """Pipes, feeder and drains are torn down on a setup failure (the leak check counts fds)."""
    from supervisor.testing import fail_at

    async with supervisor.Supervisor() as sup:
        with fail_at(phase), pytest.raises(SetupError) as info:
            await sup.run(Spec(["cat"], rootfs=busybox), input=b"y" * (1 << 20))
        assert info.value.phase is phase
        result = await sup.run(Spec(["cat"], rootfs=busybox), input=b"after")
        assert result.stdout == b"after"


async def test_capture_of_both_streams_past_the_pipe_buffers(busybox: str) -> None:
    """stdout and stderr, interleaved and each far beyond a pipe's 64 KiB,
    arrive whole and in order: neither stream blocks the other."""
    script = "i=0; while [ $i -lt 300 ]; do head -c 4096 /dev/zero; head -c 4096 /dev/zero >&2; i=$((i+1)); done"
    result = await supervisor.run(Spec(["sh", "-c", script], rootfs=busybox))
    assert result.ok, result
    assert result.stdout == bytes(300 * 4096)
    assert result.stderr == bytes(300 * 4096)


async def test_concurrent_captures_keep_each_runs_own_bytes(busybox: str) -> None:
    """Sixteen runs of one supervisor print at once, each its own bytes, far
    past a pipe's buffer, on both streams: each result has exactly its own
    (one reader serves every run's pipes). A run cancelled while it prints
    leaves the others and the next run whole."""
    script = "i=0; while [ $i -lt 40 ]; do printf %04096d $1; printf %02048d $1 >&2; i=$((i+1)); done"

    async with supervisor.Supervisor() as sup:
        results: dict[int, Result] = {}

        async def one(n: int) -> None:
            results[n] = await sup.run(Spec(["sh", "-c", script, "sh", str(n)], rootfs=busybox))

        async with anyio.create_task_group() as tg:
            for n in range(1, 17):
                tg.start_soon(one, n)
            with anyio.move_on_after(0.2):
                await sup.run(Spec(["sh", "-c", "while :; do echo spam; done"], rootfs=busybox))
        for n, result in results.items():
            assert result.stdout == b"%04096d" % n * 40, (n, len(result.stdout))
            assert result.stderr == b"%02048d" % n * 40, (n, len(result.stderr))
        after = await sup.run(Spec(["echo", "after"], rootfs=busybox))
        assert after.stdout == b"after\n"


async def test_a_run_queued_when_the_supervisor_closes_says_so(busybox: str) -> None:
    """With max_parallel=1, a run still waiting for its turn when the
    supervisor's block ends fails with an error saying the supervisor closed
    (a SetupError if its turn came while the exit was stopping the others, a
    RuntimeError if it came after), never an internal error."""
    errors: list[BaseException] = []

    async def queued(sup: supervisor.Supervisor) -> None:
        try:
            await sup.run(Spec(["true"], rootfs=busybox))
        except BaseException as exc:  # noqa: BLE001 - recorded for the assertion
            errors.append(exc)

    async with anyio.create_task_group() as outer, supervisor.Supervisor(max_parallel=1) as sup:
        outer.start_soon(partial(sup.run, Spec(["sleep", "30"], rootfs=busybox), check=False))
        await anyio.sleep(0.2)
        outer.start_soon(queued, sup)
        await anyio.sleep(0.2)
    assert len(errors) == 1, errors
    assert isinstance(errors[0], (RuntimeError, SetupError)), errors
    assert "the supervisor is closing" in str(errors[0])


async def test_arguments_and_environment_up_to_the_kernels_limit(busybox: str) -> None:
    """60,000 arguments (350 kB) and 1 MB of environment reach the payload;
    past the kernel's limit, execve's E2BIG is the error."""
    args = [str(i) for i in range(60_000)]
    env = {f"A{i}": "x" * 50_000 for i in range(20)}
    result = await supervisor.run(Spec(["sh", "-c", "echo $# ${#A0} ${#A19}", "sh", *args], rootfs=busybox, env=env))
    assert result.stdout == b"60000 50000 50000\n", result
    with pytest.raises(SetupError) as info:
        await supervisor.run(Spec(["true"], rootfs=busybox, env={"BIG": "x" * 1_000_000}))
    assert (info.value.phase, info.value.errno) == (Phase.EXEC, errno.E2BIG)
    assert "Argument list too long" in info.value.message


def _userns_off(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A non-root caller on a host whose sysctl turns user namespaces off."""
    import supervisor._privileges as privileges

    switch = tmp_path / "max_user_namespaces"
    switch.write_text("0\n")
    monkeypatch.setattr(privileges, "_USERNS_SWITCHES", ((str(switch), "0", "user.max_user_namespaces=0"),))
    monkeypatch.setattr(os, "geteuid", lambda: 1000)


async def test_a_rootless_supervisor_without_user_namespaces_says_what_is_missing(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _userns_off(monkeypatch, tmp_path)
    with pytest.raises(PermissionError, match=r"running as uid 1000 \(rootless\) needs unprivileged user namespaces"):
        async with supervisor.Supervisor():
            pass


def test_the_rootless_cli_without_user_namespaces_says_what_is_missing(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from supervisor._cli import main

    _userns_off(monkeypatch, tmp_path)
    for argv in (["run", "--", "true"], ["run-many", "-n", "1", "--", "true"]):
        assert main(argv) == 125
        err = capsys.readouterr().err
        assert err.startswith("supervisor: running as uid 1000 (rootless) needs unprivileged user namespaces"), err
        assert "(user.max_user_namespaces=0)" in err


async def test_concurrent_supervisors_never_share_container_ids(busybox: str) -> None:
    spec = Spec(["true"], rootfs=busybox)
    async with supervisor.Supervisor() as a, supervisor.Supervisor() as b:
        ids = [(await sup.run(spec)).id for sup in (a, b, a, b)]
    assert len(set(ids)) == 4
    assert ids[0].rsplit("-", 1)[0] != ids[1].rsplit("-", 1)[0]
