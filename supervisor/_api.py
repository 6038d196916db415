"""The friendly layer: :class:`Supervisor`, :class:`Container` and :func:`run`."""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import math
import os
import socket
import struct
import sys
import termios
import time
from collections.abc import AsyncIterator, Callable, Sequence
from types import TracebackType

import anyio
import anyio.abc
import anyio.to_thread
from anyio.abc import TaskStatus

from ._errors import ContainerFailed, SetupError
from ._events import Event, EventHub
from ._hostname import generate as generate_hostname
from ._parent import idmap, streams
from ._parent.config import build_config, with_map_base
from ._parent.container import ContainerProcess
from ._parent.pid1 import note_cleanup, outcome, run_result
from ._parent.resources import HostResources
from ._parent.rundir import RunDir, supervisor_prefix, sweep
from ._parent.seccomp import warm_up as seccomp_warm_up
from ._parent.spawn import Spawner
from ._parent.streams import FdReceiveStream, FdSendStream
from ._privileges import check_privileges
from ._protocol import MAX_PASS_FDS, CgroupEntry, Phase
from ._result import PhaseTiming, Reason, Result
from ._spec import Spec

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (3 ms for a command line)
if TYPE_CHECKING:
    from typing import Any

PhaseCallback = Callable[[Phase, float], None]

#: Pass as ``stdin``/``stdout``/``stderr`` of :meth:`Supervisor.run` to get a
#: byte stream on the :class:`Container` handle (the same value as subprocess.PIPE).
PIPE = -1


class Container:
    """A running container, handed out by ``await nursery.start(sup.run, spec)``.

    It exists only after setup succeeded: the payload is running. With
    ``stdin=PIPE``/``stdout=PIPE``/``stderr=PIPE`` (and ``capture_output=False``)
    it carries byte streams connected to the payload; they are closed when
    the run ends, so read them while the container runs.
    """

    def __init__(
        self, proc: ContainerProcess, hostname: str, done: anyio.Event, resources: HostResources | None = None
    ) -> None:
        self._proc = proc
        self._done = done
        self._result: Result | None = None
        self.hostname = hostname
        """The container's hostname."""
        self.stdin: anyio.abc.ByteSendStream | None = None
        """The payload's stdin when run with ``stdin=PIPE`` (close it to send EOF)."""
        self.stdout: anyio.abc.ByteReceiveStream | None = None
        """The payload's stdout when run with ``stdout=PIPE``."""
        self.stderr: anyio.abc.ByteReceiveStream | None = None
        """The payload's stderr when run with ``stderr=PIPE``."""
        self._resources = resources  # its cgroup and network pieces

    @property
    def id(self) -> str:
        """The supervisor's id for the container."""
        return self._proc.cid

    @property
    def pid(self) -> int:
        """Host PID of the container's PID 1 (the payload).

        Use it to read ``/proc``, never to signal: use :meth:`send_signal`.
        """
        return self._proc.pid

    @property
    def addresses(self) -> tuple[str, ...]:
        """The container's IP addresses on its bridge (``Spec.network="bridge"``).

        Empty for ``"none"`` (loopback only) and ``"host"`` (the host's own).
        """
        return self._resources.addresses if self._resources is not None else ()

    @property
    def phases(self) -> tuple[PhaseTiming, ...]:
        """The setup phases, with their start times."""
        return tuple(PhaseTiming(p.label, s) for p, s in self._proc.phases)

    def send_signal(self, sig: int) -> None:
        """Send ``sig`` to PID 1 through its pidfd; a no-op once it has exited.

        PID 1 ignores signals it has no handler for, except SIGKILL.
        """
        self._proc.send_signal(sig)

    def kill(self) -> None:
        """SIGKILL PID 1, which ends every process of the container."""
        self._proc.send_signal(9)

    def resize_terminal(self, rows: int, columns: int) -> None:
        """Set the window size of the container's terminal (``Spec.tty``).

        Raises:
            RuntimeError: the container has no terminal.
        """
        if self._proc.pty_master < 0:
            raise RuntimeError("this container has no terminal (Spec.tty is false)")
        fcntl.ioctl(self._proc.pty_master, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))

    def terminate(self) -> None:
        """SIGTERM PID 1 (which ignores it without a handler: see :meth:`stop`)."""
        self._proc.send_signal(15)

    async def stop(self, grace: float | None = None) -> Result:
        """Stop the container as the supervisor does, then wait for its result.

        ``docker stop``: SIGTERM if PID 1 handles it (a PID 1 without a handler
        ignores it, so it gets SIGKILL at once, unless ``Spec.init``), up to
        ``grace`` seconds for it to exit, then SIGKILL. The payload's exit
        after a stop is no failure for the run's ``check``.

        Args:
            grace: seconds between SIGTERM and SIGKILL (default:
                ``Spec.grace_period``).

        Returns:
            its :class:`Result` (``reason`` as the exit was: ``"exited"`` or
            ``"signaled"``).

        Raises:
            ValueError: ``grace`` is negative or NaN.

        **Cancellation:** the stop itself is shielded (PID 1 is always
        SIGKILLed and reaped once it began); cancelling the wait for the result
        that follows does not affect the run.
        """
        if grace is not None and not grace >= 0:
            raise ValueError(f"grace must be a number of seconds, 0 or more (not {grace!r})")
        if not self._proc.exited:  # an exit of its own stays its own (and a failure for check)
            self._proc.stopped_by_caller = True
        await self._proc.stop(self._proc.grace_period if grace is None else grace)
        return await self.wait()

    async def wait(self) -> Result:
        """Wait until the container has exited and been cleaned up.

        Returns:
            its :class:`Result`.

        **Cancellation:** cancelling the wait does not affect the container.
        """
        await self._done.wait()
        assert self._result is not None
        return self._result


def _checked_pass_fds(pass_fds: Sequence[int]) -> tuple[int, ...]:
    """``pass_fds`` as a tuple, checked before anything starts.

    Raises:
        TypeError: an item is not an int.
        ValueError: too many, a duplicate, or not an open descriptor.
    """
    passed = tuple(pass_fds)
    if len(passed) > MAX_PASS_FDS:
        raise ValueError(f"pass_fds: at most {MAX_PASS_FDS} descriptors, got {len(passed)}")
    if len(set(passed)) != len(passed):
        raise ValueError(f"pass_fds: {passed} names a descriptor twice")
    for fd in passed:
        if not isinstance(fd, int) or isinstance(fd, bool):
            raise TypeError(f"pass_fds: {fd!r} is not a file descriptor (int)")
        try:
            os.fstat(fd)
        except OSError as exc:
            raise ValueError(f"pass_fds: {fd} is not an open descriptor ({exc.strerror})") from None
    return passed


async def _stop_left(handle: Container) -> None:
    """Stop a container that outlives its supervisor's block, as on cancellation.

    Waits until PID 1 is reaped (at most 5 s after SIGKILL), so that its run
    ends with its exit status, then (at most 10 s) until its run has released
    its resources: before the run directory and the network go.
    """
    proc = handle._proc
    if not proc.exited:
        await proc.stop(proc.grace_period, reap_timeout=5)
    with anyio.move_on_after(10):
        await handle._done.wait()


class Supervisor:
    """Supervises containers from one async program.

    Use as ``async with Supervisor() as sup:``. It clones each container's
    PID 1 from this process (see :doc:`process-model`); on exit it stops
    whatever containers are left (SIGTERM if PID 1 handles it, the spec's
    grace period, SIGKILL) and reaps them.

    Args:
        max_parallel: at most this many containers starting or running at
            once; further runs wait for a free place (``None``: no bound).
        sweep_leftovers: on entry, remove the host-side leftovers (cgroups,
            links, folders) of supervisors that died without cleaning up, as
            ``supervisor gc`` does.

    Raises:
        ValueError: ``max_parallel`` is not a positive int.
        PermissionError: on entry (``async with``), without root.
    """

    def __init__(self, *, max_parallel: int | None = None, sweep_leftovers: bool = True) -> None:
        if max_parallel is not None and (not isinstance(max_parallel, int) or max_parallel < 1):
            raise ValueError("Supervisor.max_parallel must be a positive int or None")
        self._limiter = anyio.CapacityLimiter(max_parallel) if max_parallel else None
        self._events = EventHub()
        self._rundir = RunDir()
        self._sweep = sweep_leftovers
        self._spawner: Spawner | None = None
        self._tg: anyio.abc.TaskGroup | None = None
        self._ids = itertools.count(1)
        self._hostnames: set[str] = set()
        self._live: dict[str, Container] = {}
        self._prefix = supervisor_prefix()

    async def __aenter__(self) -> Supervisor:
        check_privileges()
        self._lifespan_cm = self._lifespan()
        await self._lifespan_cm.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        return await self._lifespan_cm.__aexit__(exc_type, exc, tb)

    @contextlib.asynccontextmanager
    async def _lifespan(self) -> AsyncIterator[None]:
        # Each container's PID 1 is watched and reaped by a task that may
        # outlive its run. The caller's block runs inside that task group, so
        # its own exception is re-raised as itself, not wrapped in a group.
        body_exc: BaseException | None = None
        try:
            async with anyio.create_task_group() as tg:
                # Independent start-up work side by side, in worker threads:
                # the crash sweep, and what the first run would otherwise wait
                # for (_warm_up).
                async with anyio.create_task_group() as starting:
                    if self._sweep:
                        starting.start_soon(_in_worker_thread, sweep)
                    starting.start_soon(_in_worker_thread, _warm_up)
                self._spawner = spawner = Spawner(tg)
                self._tg = tg
                try:
                    yield
                except BaseException as exc:
                    body_exc = exc
                    raise
                finally:
                    with anyio.CancelScope(shield=True):
                        # Whatever is still running (runs of tasks outside
                        # this block) is stopped as on cancellation: SIGTERM
                        # if PID 1 handles it, its grace period, SIGKILL.
                        spawner.close()  # a run still starting clones nothing more
                        try:
                            async with anyio.create_task_group() as stoppers:
                                for handle in list(self._live.values()):
                                    stoppers.start_soon(_stop_left, handle)
                        finally:
                            await spawner.aclose(timeout=10)
                        # Networking: finish the bridge deletions that
                        # container releases left to background threads.
                        network = sys.modules.get("supervisor._parent.network")
                        if network is not None:
                            await network.wait_idle()
                            # Deleted (or in use by another supervisor): the
                            # bridges' own records are done with.
                            self._rundir.forget_prefixed(network.BRIDGE_RECORD_PREFIX)
                    self._tg = None
                    self._events.close()
                    self._rundir.close()
                    tg.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            if body_exc is None or not _only(group, body_exc):
                raise
        if body_exc is not None:
            raise body_exc

    def events(self, *, max_buffered: int | None = 1024) -> AsyncIterator[Event]:
        """Iterate over the events of all containers, from now on.

        Each call returns a new, independent iterator with a buffer of its
        own: publishing never slows a container down, and a reader that lags
        behind by more than ``max_buffered`` events loses the oldest ones,
        then gets one ``"dropped"`` event saying how many (``data["count"]``),
        so that the supervisor's memory stays bounded. The iterator ends when
        the supervisor closes. It subscribes at the call, not at the first
        iteration: call it before starting the runs to watch, then iterate in
        a task of its own::

            events = sup.events()
            nursery.start_soon(watch, events)  # async for event in events: ...

        Args:
            max_buffered: the most events held for this reader; ``None``: no
                bound (every event is kept until read, whatever it costs).

        Returns:
            an async iterator of :class:`Event`.

        Raises:
            ValueError: ``max_buffered`` is below 1.
        """
        return self._events.subscribe(max_buffered)

    async def run(
        self,
        spec: Spec,
        *,
        check: bool = True,
        capture_output: bool = True,
        input: bytes | None = None,
        stdin: int | None = None,
        stdout: int | None = None,
        stderr: int | None = None,
        on_phase: PhaseCallback | None = None,
        timeout: float | None = None,
        pass_fds: Sequence[int] = (),
        max_output: int | None = None,
        task_status: TaskStatus[Container] = anyio.TASK_STATUS_IGNORED,
    ) -> Result:
        """Run one container to completion.

        Args:
            spec: what to run.
            check: raise :class:`ContainerFailed` if the payload does not
                exit 0 (the default, as trio's and anyio's ``run_process``);
                ``False`` returns the :class:`Result` whatever the outcome.
            capture_output: collect stdout and stderr into the result; when
                false they go to ``stdout``/``stderr`` (default: ours).
            input: bytes fed to the payload's stdin, then closed.
            stdin: a file descriptor to use as the payload's stdin (default:
                ``/dev/null`` unless ``input`` is given), or :data:`PIPE` for
                a :attr:`Container.stdin` stream.
            stdout: a file descriptor for stdout when not capturing, or
                :data:`PIPE` for a :attr:`Container.stdout` stream.
            stderr: as ``stdout``, for stderr.
            on_phase: called as each setup phase starts, with the
                :class:`Phase` and the seconds since the run started.
            timeout: wall-clock seconds for the whole run (setup included);
                then the container is stopped like on cancellation (SIGTERM
                if PID 1 handles it, the grace period, SIGKILL) and the result
                has ``reason == "timeout"``. 0 times out at once.
            pass_fds: the caller's file descriptors to hand to the payload:
                they become its fds 3, 4, ... in this order, like runc's and
                crun's ``--preserve-fds`` and systemd's socket activation
                (at most 32). No other fd of the caller or of the supervisor
                ever reaches the container.
            max_output: keep at most this many bytes of each captured stream
                (stdout, stderr; also a terminal's output), the *last* ones:
                the oldest are dropped as new ones come, and counted in
                the result's ``stdout_dropped`` / ``stderr_dropped``. The payload
                is never slowed by it. ``None`` (the default): everything,
                which for a payload that prints without end is the
                supervisor's memory.
            task_status: set by ``nursery.start``/``TaskGroup.start``, which
                then returns a :class:`Container` once setup succeeded (or
                once the timeout ended the run during setup: the container's
                :meth:`~Container.wait` then returns that result).

        Returns:
            the :class:`Result`.

        Raises:
            SetupError: the container failed before its payload ran
                (``error.result.reason == "setup_failed"``).
            CleanupError: the run is over but a host resource of it could not
                be released (``.result`` has the run's result); when the run
                failed too, that error is raised with this one as a note.
            ContainerFailed: ``check`` is true and the payload did not exit 0
                (also on a timeout or an out-of-memory kill; ``.result`` has it).
            ValueError: the spec's host paths are missing, ``timeout`` is
                negative or NaN, ``max_output`` negative, or the stdio arguments do not fit together
                (``input`` with ``stdin``, ``stdout``/``stderr`` while
                capturing, :data:`PIPE` with a terminal).

        **Cancellation:** the container is stopped (SIGTERM if PID 1 handles
        it, ``spec.grace_period`` seconds, then SIGKILL), always reaped, and
        its resources released under a shield; then the cancellation
        propagates.
        """
        if self._tg is None:
            raise RuntimeError("use 'async with Supervisor() as sup:' before sup.run()")
        if input is not None and stdin is not None:
            raise ValueError("pass either input or stdin, not both")
        if capture_output and (stdout is not None or stderr is not None):
            raise ValueError("stdout/stderr need capture_output=False")
        if spec.tty and PIPE in (stdin, stdout, stderr):
            raise ValueError("Spec.tty: the terminal is the payload's stdio; stdin/stdout/stderr=PIPE need tty=False")
        if timeout is not None and not timeout >= 0:
            raise ValueError(f"timeout must be a number of seconds, 0 or more (not {timeout!r})")
        if max_output is not None and (not isinstance(max_output, int) or max_output < 0):
            raise ValueError(f"max_output must be a number of bytes, 0 or more (not {max_output!r})")
        passed = _checked_pass_fds(pass_fds)
        spec.check_host()
        async with self._limiter if self._limiter is not None else contextlib.nullcontext():
            return await self._run(
                spec,
                check,
                capture_output,
                input,
                stdin,
                stdout,
                stderr,
                on_phase,
                task_status,
                timeout,
                passed,
                max_output,
            )

    async def _run(
        self,
        spec: Spec,
        check: bool,
        capture_output: bool,
        input: bytes | None,
        stdin: int | None,
        stdout: int | None,
        stderr: int | None,
        on_phase: PhaseCallback | None,
        task_status: TaskStatus[Container],
        timeout: float | None = None,
        pass_fds: tuple[int, ...] = (),
        max_output: int | None = None,
    ) -> Result:
        t0 = time.monotonic_ns()
        deadline = math.inf if timeout is None else anyio.current_time() + timeout
        ending: Reason | None = None  # "timeout" or "oom" once we decided to end it
        cid = f"{self._prefix}-{next(self._ids)}"
        hostname = spec.hostname or generate_hostname(self._hostnames)
        self._hostnames.add(hostname)
        events = self._events

        def note_phase(phase: Phase, seconds: float) -> None:
            events.publish("phase", cid, hostname, phase.label, seconds=round(seconds, 6))
            if on_phase is not None:
                on_phase(phase, seconds)

        resources = HostResources(spec, cid, self._rundir, hostname=hostname, task_group=self._tg)
        config = build_config(
            spec,
            hostname,
            network=resources.wants_network,
            etc_dir=resources.etc_dir,
            # Phases are sent one by one only when someone watches them live.
            live_phases=on_phase is not None or events.has_subscribers,
        )

        ctl_parent, ctl_child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        ctl_parent.setblocking(False)
        proc = ContainerProcess(
            cid,
            ctl_parent,
            t0,
            note_phase,
            parent_steps=resources.parent_steps(),
            grace_period=spec.grace_period,
        )
        child_fds: list[int] = [ctl_child.detach()]
        ours: list[int] = []  # our ends of pipes
        out_chunks = streams.Capture(max_output)
        err_chunks = streams.Capture(max_output)
        done = anyio.Event()
        handle = Container(proc, hostname, done, resources)
        reason: Reason | None = None
        setup_error: SetupError | None = None
        cleanup_error: OSError | None = None  # releasing a host resource failed
        propagating: BaseException | None = None  # the run's own exception, on its way out
        try:
            # stdio for the container (PID 1 dup2()s them to 0, 1, 2)
            stdin_w = -1
            if input is not None:
                r, stdin_w = os.pipe2(os.O_CLOEXEC)
                child_fds.append(r)
                ours.append(stdin_w)
            elif stdin == PIPE:
                r, w = os.pipe2(os.O_CLOEXEC)
                child_fds.append(r)
                handle.stdin = FdSendStream(w)
            elif stdin is not None:
                child_fds.append(os.dup(stdin))
            else:
                child_fds.append(os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC))
            out_r = err_r = -1
            if capture_output:
                out_r, w = os.pipe2(os.O_CLOEXEC)
                child_fds.append(w)
                err_r, w = os.pipe2(os.O_CLOEXEC)
                child_fds.append(w)
                ours += [out_r, err_r]
            else:
                for fd, default, name in ((stdout, 1, "stdout"), (stderr, 2, "stderr")):
                    if fd == PIPE:
                        r, w = os.pipe2(os.O_CLOEXEC)
                        child_fds.append(w)
                        setattr(handle, name, FdReceiveStream(r))
                    else:
                        child_fds.append(os.dup(default if fd is None else fd))
            for fd in pass_fds:
                try:
                    child_fds.append(os.dup(fd))
                except OSError as exc:  # closed by the caller while the run waited for its turn
                    raise ValueError(f"pass_fds: {fd} is not an open descriptor ({exc.strerror})") from None
            if resources.wants_network:
                # The address and bridge need no container: reserved in the
                # background while PID 1 is cloned and set up.
                resources.start_allocation()
            if spec.map_base == "auto":
                # A host id range of its own, leased before the clone (the
                # clone thread writes the maps) and given back with the rest.
                config = with_map_base(config, resources.lease_ids())
            if resources.wants_cgroup:
                # Before the clone, so that PID 1 starts in it (SetupError);
                # its entry fds go last, after the passed ones.
                entry = resources.prepare_cgroup()
                config.cgroup.extend(CgroupEntry(kind, path) for kind, _fd, path in entry)
                child_fds += [fd for _kind, fd, _path in entry]
            # The id-mapped binds' mounts, made here (PID 1 may not) and last.
            child_fds += idmap.open_trees(spec, config)

            try:
                assert self._spawner is not None
                proc.slot = await self._spawner.spawn(cid, config, child_fds)
            except OSError as exc:
                raise SetupError(Phase.SPAWNED, exc.errno or 0, str(exc)) from exc
            finally:
                for fd in child_fds:
                    os.close(fd)
                child_fds = []
            self._live[cid] = handle

            body_error: Exception | None = None
            async with anyio.create_task_group() as tg:
                if out_r >= 0:
                    tg.start_soon(streams.drain_all, ((out_r, out_chunks), (err_r, err_chunks)))
                if stdin_w >= 0:
                    tg.start_soon(streams.feed, stdin_w, input or b"")
                    ours.remove(stdin_w)
                try:
                    with _until(deadline):
                        await proc.drive_setup()
                except SetupError as exc:
                    setup_error = exc
                    reason = "setup_failed"
                    tg.cancel_scope.cancel()
                except Exception as exc:  # noqa: BLE001 - re-raised below
                    # ProtocolError, or the caller's on_phase raised: re-raised
                    # below as itself, not wrapped in the task group's
                    # ExceptionGroup.
                    body_error = exc
                    tg.cancel_scope.cancel()
                else:
                    if not proc.running:  # the timeout struck during setup
                        ending = "timeout"
                        tg.cancel_scope.cancel()
                        # A caller's start() gets the handle all the same;
                        # its wait() returns the timeout's result.
                        task_status.started(handle)
                    else:
                        typing_in: anyio.CancelScope | None = None
                        if proc.pty_master >= 0:
                            ours.append(proc.pty_master)
                            typing_in = _relay_terminal(
                                tg, proc.pty_master, capture_output, out_chunks, input, stdin, stdout
                            )
                        events.publish("started", cid, hostname, pid=proc.pid)
                        task_status.started(handle)
                        ending = await _wait_for_end(proc, resources, deadline)
                        if ending == "oom":
                            # Whole-container OOM semantics (memory.oom.group on v2;
                            # done by hand on v1, where the kernel kills one process).
                            proc.stopped_by_us = True
                            proc.send_signal(9)
                            await resources.kill_all()
                        elif ending == "timeout":
                            await proc.stop(spec.grace_period)
                        # Nobody reads the terminal any more: stop relaying the
                        # caller's keystrokes (the output is drained to its end).
                        if typing_in is not None:
                            typing_in.cancel()
            if body_error is not None:
                raise body_error
        except SetupError as exc:  # before PID 1 could report it: the cgroup step, the clone
            setup_error = exc
            reason = "setup_failed"
        except BaseException as exc:
            reason = "cancelled"  # the finally block below stops and reaps it
            propagating = exc
            raise
        finally:
            with anyio.CancelScope(shield=True):
                if proc.slot is not None and not proc.exited:
                    await proc.stop(spec.grace_period)
                for fd in child_fds + ours:
                    streams.close_quietly(fd)
                for stream in (handle.stdin, handle.stdout, handle.stderr):
                    if stream is not None:
                        await stream.aclose()
                ctl_parent.close()
                # A release that fails must not skip the bookkeeping below
                # (wait() would never return) nor replace the run's own error.
                usage = None
                try:
                    try:
                        usage = resources.stats()  # after the end, before the cgroup goes
                        await resources.release()
                    except OSError as exc:
                        cleanup_error = exc
                finally:
                    self._live.pop(cid, None)
                    self._hostnames.discard(hostname)
                    if proc.slot is not None and proc.exited and self._spawner is not None:
                        self._spawner.forget(cid)
                    result = run_result(
                        proc,
                        hostname,
                        reason,
                        ending,
                        usage,
                        setup_error,
                        stdout=out_chunks.value(),
                        stderr=err_chunks.value(),
                        dropped=(out_chunks.dropped, err_chunks.dropped),
                    )
                    handle._result = result
                    if events.has_subscribers:  # the JSON form costs every run ~0.05 ms otherwise
                        if setup_error is not None:
                            events.publish("failed", cid, hostname, setup_error.phase.label, result=result.to_json())
                        else:
                            events.publish("exited", cid, hostname, result=result.to_json())
                        events.publish("cleaned_up", cid, hostname)
                    done.set()
                if propagating is not None:
                    note_cleanup(propagating, result, cleanup_error)
        failed = check and not result.ok and not proc.stopped_by_caller
        return outcome(result, setup_error, cleanup_error, ContainerFailed(result, spec.command) if failed else None)


async def _in_worker_thread(fn: Callable[[], object]) -> None:
    await anyio.to_thread.run_sync(fn)


def _warm_up() -> None:
    """Do now, in a worker thread, what the first run would otherwise wait for.

    The default seccomp profile's compile (with the binding's import) and the
    cgroup layout (with its module's import); both are cached. Best effort:
    a failure is left to the run that needs them, which reports it.
    """
    seccomp_warm_up()
    from ._parent import cgroups

    try:
        cgroups.detect()
    except OSError:
        pass


def _until(deadline: float) -> contextlib.AbstractContextManager[object]:
    """``anyio.move_on_at(deadline)``, or nothing for no deadline (a cancel
    scope costs every run some 10 µs)."""
    return anyio.move_on_at(deadline) if deadline != math.inf else contextlib.nullcontext()


async def _wait_for_end(proc: ContainerProcess, resources: HostResources, deadline: float) -> Reason | None:
    """Wait for PID 1 to exit; return "timeout" or "oom" if that came first."""
    assert proc.slot is not None
    slot = proc.slot
    if not resources.watches_oom:
        with _until(deadline):
            await slot.exited.wait()
        return None if slot.exited.is_set() else "timeout"
    outcome: Reason | None = None
    async with anyio.create_task_group() as tg:

        async def watch_oom() -> None:
            nonlocal outcome
            try:
                await resources.wait_oom()
            except OSError:
                return  # the cgroup went away with the container
            outcome = "oom"
            tg.cancel_scope.cancel()

        tg.start_soon(watch_oom)
        with anyio.move_on_at(deadline) as scope:
            await slot.exited.wait()
        if scope.cancelled_caught and outcome is None:
            outcome = "timeout"
        tg.cancel_scope.cancel()
    return outcome


def _only(group: BaseExceptionGroup[BaseException], exc: BaseException) -> bool:
    """True if ``group`` holds ``exc`` and otherwise only cancellations."""
    found = False
    for sub in group.exceptions:
        if sub is exc:
            found = True
        elif isinstance(sub, BaseExceptionGroup):
            if not _only(sub, exc):
                return False
            found = True
        elif not isinstance(sub, anyio.get_cancelled_exc_class()):
            return False
    return found


def _relay_terminal(
    tg: anyio.abc.TaskGroup,
    master: int,
    capture: bool,
    chunks: streams.Capture,
    input: bytes | None,
    stdin: int | None,
    stdout: int | None,
) -> anyio.CancelScope:
    """Connect the container's terminal to the caller's fds or to the capture.

    Returns:
        the scope of the input relay, to cancel when the payload has ended
        (the caller's stdin, a terminal, may never reach end of file).
    """
    if capture:
        tg.start_soon(streams.drain, master, chunks)
    else:
        tg.start_soon(streams.copy, master, 1 if stdout is None else stdout)
    scope = anyio.CancelScope()

    async def relay_input() -> None:
        with scope:
            if input is not None:
                await streams.write_or_stop(master, input)
            elif stdin is not None:
                await streams.copy(stdin, master)

    tg.start_soon(relay_input)
    return scope


async def run(
    spec: Spec,
    *,
    check: bool = True,
    capture_output: bool = True,
    input: bytes | None = None,
    **kwargs: Any,
) -> Result:
    """Run one container with a supervisor of its own.

    A shortcut for ``async with Supervisor() as sup: return await sup.run(...)``;
    to run many, keep one :class:`Supervisor`.

    Args:
        spec: what to run.
        check: raise :class:`ContainerFailed` if the payload does not exit 0
            (the default); ``False`` returns the :class:`Result` whatever the outcome.
        capture_output: collect stdout and stderr into the result.
        input: bytes fed to the payload's stdin.
        **kwargs: further keywords of :meth:`Supervisor.run`.

    Returns:
        the :class:`Result`.

    Raises:
        SetupError: the container failed before its payload ran.
        ContainerFailed: ``check`` is true and the payload did not exit 0.

    **Cancellation:** as :meth:`Supervisor.run`.
    """
    async with Supervisor() as sup:
        return await sup.run(spec, check=check, capture_output=capture_output, input=input, **kwargs)


__all__ = ["PIPE", "Container", "Supervisor", "run"]
