"""One container run to its end without an event loop: the path of ``supervisor run``.

A command that starts one container and exits pays, in a new interpreter,
for every module it imports: an async framework alone costs more than the
whole container's start-up (trio some 70 ms, anyio 20 ms). The run itself
needs none: it waits on at most three descriptors at a time (the control
socket, PID 1's pidfd, the caller's stop descriptor), which :func:`select.poll`
does. So this module runs the same steps as
:meth:`supervisor.Supervisor.run` in the same order, on the same shared
parts (:func:`~.config.build_config`, :class:`~.resources.HostResources`,
:class:`~.pid1.Pid1`, :func:`~.pid1.run_result`, the crash ledger), waiting
by blocking.

It covers what a command line runs most, and :func:`runs_blocking` says
when: the payload's stdio are the caller's descriptors (nothing captured,
no terminal), and the container needs no supervisor step while it runs or
sets up (no bridge network, no memory limit to watch for an OOM kill). The
rest goes through the event loop.
"""

from __future__ import annotations

import math
import os
import select
import signal
import socket
import time
from collections.abc import Callable, Sequence

from .._child import _spawn
from .._errors import ProtocolError, SetupError
from .._hostname import generate as generate_hostname
from .._protocol import Phase, SpawnConfig
from .._result import Reason, Result
from .._spec import Spec
from . import stdio, userns
from .config import build_config
from .outcome import note_cleanup, outcome, run_result
from .pid1 import END, PhaseCallback, Pid1, Slot, read_clone_reply, reap
from .resources import HostResources
from .rundir import RunDir, supervisor_prefix, sweep

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (3 ms for a command line)
if TYPE_CHECKING:
    from typing import Literal

if TYPE_CHECKING:
    Wake = Literal["ready", "stop", "timeout"]
else:
    Wake = str  # at run time: the alias needs typing.Literal, which is not imported


def runs_blocking(spec: Spec) -> bool:
    """Whether :func:`run_blocking` can run ``spec`` (the stdio aside).

    Not with a terminal (relayed both ways while it runs), a bridge network
    (set up while PID 1 waits), nor a memory limit (an OOM kill anywhere in
    the container must end it whole: a watch while it runs).
    """
    return (
        not spec.tty
        and spec.network != "bridge"
        and not spec.publish
        and (spec.limits is None or spec.limits.memory_bytes is None)
    )


def run_blocking(
    spec: Spec,
    *,
    stdin: int | None,
    pass_fds: Sequence[int],
    timeout: float | None,
    stop_fd: int,
    on_phase: PhaseCallback | None = None,
    on_started: Callable[[int], None] | None = None,
) -> Result:
    """Run one container to its end, its stdio being ours, with no event loop.

    As ``await Supervisor().run(spec, capture_output=False, stdin=stdin,
    pass_fds=pass_fds, timeout=timeout, on_phase=on_phase)``, for a spec
    :func:`runs_blocking` accepts, with the leftovers of dead supervisors
    swept first.

    Args:
        spec: what to run (its host paths already checked).
        stdin: the payload's stdin (``None``: ``/dev/null``); stdout and
            stderr are ours.
        pass_fds: our descriptors to hand to the payload as its 3, 4, ...
        timeout: wall-clock seconds for the whole run (then the container
            is stopped and the result says ``"timeout"``).
        stop_fd: a descriptor that becomes readable when the caller wants
            the run stopped (a signal's wake-up pipe): the container is
            stopped as on cancellation, and the result says ``"cancelled"``.
        on_phase: called as each setup phase starts.
        on_started: called once the payload runs, with PID 1's host PID.

    Returns:
        the :class:`Result` (stdout and stderr empty: they were not captured).

    Raises:
        SetupError: the container failed before its payload ran (its
            ``result`` is set).
        ProtocolError: PID 1 sent something out of order.
        ValueError: the spec does not resolve (a seccomp profile that does
            not compile).
    """
    assert runs_blocking(spec)
    sweep()
    rundir = RunDir()
    try:
        return _run(spec, rundir, stdin, tuple(pass_fds), timeout, stop_fd, on_phase, on_started)
    finally:
        rundir.close()


def _run(
    spec: Spec,
    rundir: RunDir,
    stdin: int | None,
    pass_fds: tuple[int, ...],
    timeout: float | None,
    stop_fd: int,
    on_phase: PhaseCallback | None,
    on_started: Callable[[int], None] | None,
) -> Result:
    t0 = time.monotonic_ns()
    deadline = math.inf if timeout is None else time.monotonic() + timeout
    cid = f"{supervisor_prefix()}-1"
    hostname = spec.hostname or generate_hostname(set())
    resources = HostResources(spec, cid, rundir, hostname=hostname)
    config = build_config(spec, hostname, live_phases=on_phase is not None)
    ctl_parent, ctl_child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
    ctl_parent.setblocking(False)
    proc = Pid1(cid, ctl_parent, t0, on_phase, grace_period=spec.grace_period)
    proc.id_mapping = userns.kind_of(config)
    child_side = stdio.Closer()  # PID 1's descriptors: closed after the spawn
    child_side.call(ctl_child.close)
    reason: Reason | None = None
    ending: Reason | None = None
    setup_error: SetupError | None = None
    cleanup_error: OSError | None = None
    propagating: BaseException | None = None
    try:
        # stdio for the container: the caller's stdin (else /dev/null), our
        # stdout and stderr, the passed descriptors.
        plan = stdio.plan(capture_output=False, stdin=stdin, pass_fds=pass_fds)
        child_side.call(plan.child_side.close)
        config, host_fds = resources.before_clone(config)
        for fd in host_fds:
            child_side.fd(fd)
        try:
            proc.slot = _spawn_pid1(config, [ctl_child.fileno(), *plan.child, *host_fds])
        finally:
            child_side.close()

        woke = _drive_setup(proc, stop_fd, deadline)
        if woke == "ready":
            if on_started is not None:
                on_started(proc.pid)
            woke = _wait_readable(proc.slot.pidfd, stop_fd, deadline)
            if woke == "ready":
                reap(proc.slot)
        if woke == "timeout":
            ending = "timeout"
            _stop(proc, spec.grace_period)
        elif woke == "stop":
            reason = "cancelled"
            _stop(proc, spec.grace_period)
    except SetupError as exc:
        setup_error = exc
        reason = "setup_failed"
    except BaseException as exc:
        reason = "cancelled"  # stopped and reaped below
        propagating = exc
        raise
    finally:
        if proc.slot is not None and not proc.exited:
            _stop(proc, spec.grace_period)
        child_side.close()  # when the spawn never came
        ctl_parent.close()
        # A release that fails must not replace the run's own error.
        usage = None
        try:
            usage = resources.stats()  # after the end, before the cgroup goes
            resources.release_blocking()
        except OSError as exc:
            cleanup_error = exc
        if proc.slot is not None and proc.slot.pidfd >= 0 and proc.exited:
            os.close(proc.slot.pidfd)
            proc.slot.pidfd = -1
        result = run_result(proc, hostname, reason, ending, usage, setup_error)
        if propagating is not None:
            note_cleanup(propagating, result, cleanup_error)
    return outcome(result, setup_error, cleanup_error)


def _spawn_pid1(config: SpawnConfig, fds: list[int]) -> Slot:
    """Have the extension's clone thread clone PID 1, and wait for its answer.

    Raises:
        SetupError: phase ``SPAWNED``: the kernel refused the clone.
    """
    reply_r, reply_w = os.pipe2(os.O_CLOEXEC)
    try:
        _spawn.spawn(config, fds, 0, reply_w)
        pid, pidfd = read_clone_reply(reply_r, config)
    except OSError as exc:
        raise SetupError.caused_by(Phase.SPAWNED, exc) from exc
    finally:
        os.close(reply_r)
        os.close(reply_w)
    return Slot(pid=pid, pidfd=pidfd)


def _wait_readable(fd: int, stop_fd: int, deadline: float) -> Wake:
    """Wait until ``fd`` is readable, the caller asks for a stop, or ``deadline``."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    poller.register(stop_fd, select.POLLIN)
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return "timeout"
        events = poller.poll(None if left == math.inf else max(1, math.ceil(left * 1000)))
        if any(ready == stop_fd for ready, _ in events):
            return "stop"
        if events:
            return "ready"


def _wait_reaped(proc: Pid1, timeout: float = math.inf) -> None:
    """Reap PID 1 once it exits (at most ``timeout`` seconds from now)."""
    assert proc.slot is not None
    if proc.exited:
        return
    poller = select.poll()
    poller.register(proc.slot.pidfd, select.POLLIN)
    if poller.poll(None if timeout == math.inf else max(0, math.ceil(timeout * 1000))):
        reap(proc.slot)


def _drive_setup(proc: Pid1, stop_fd: int, deadline: float) -> Wake:
    """Read PID 1's records until it execs the payload.

    Returns:
        ``"ready"`` once the payload runs; ``"stop"`` or ``"timeout"`` if
        that came first.

    Raises:
        SetupError: PID 1 reported a failure, or died before exec.
        ProtocolError: PID 1 sent something out of order, or asked for a
            step this path does not take.
    """
    assert proc.slot is not None
    while True:
        try:
            record, fds = proc.receive()
        except BlockingIOError:
            woke = _wait_readable(proc.sock.fileno(), stop_fd, deadline)
            if woke != "ready":
                return woke
            continue
        step = proc.take(record, fds)
        if step is None:
            continue
        if step is END:
            if proc.last_phase == Phase.EXEC and _reached_execve(proc):
                proc.running = True
                return "ready"
            _wait_reaped(proc)
            raise proc.died()
        if isinstance(step, SetupError):
            _wait_reaped(proc)
            raise step
        assert isinstance(step, Phase)
        raise ProtocolError(f"PID 1 asked for the {step.label} step, which a run without an event loop has not")


def _reached_execve(proc: Pid1) -> bool:
    """See :meth:`~.pid1.Pid1.exec_check`."""
    assert proc.slot is not None
    for _ in range(1000):
        seen = proc.exec_check()
        if seen == "exec":
            return True
        if seen == "reap":
            _wait_reaped(proc)
            return proc.slot.execd
        time.sleep(0.001)
    return True  # pragma: no cover - never renamed nor exited: take it as running


def _stop(proc: Pid1, grace_period: float) -> None:
    """SIGTERM (if PID 1 handles it), the grace period, then SIGKILL; reap."""
    if proc.exited:
        return
    if proc.start_stop(grace_period):
        _wait_reaped(proc, grace_period)
    proc.send_signal(signal.SIGKILL)
    _wait_reaped(proc)
