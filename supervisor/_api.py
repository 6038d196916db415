"""The friendly layer: :class:`Supervisor`, :class:`Container` and :func:`run`."""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import os
import struct
import termios
from collections.abc import AsyncIterator, Callable, Sequence
from types import TracebackType

import anyio
import anyio.abc
import anyio.to_thread
from anyio.abc import TaskStatus

from ._events import Event, EventHub
from ._parent.run import Run, RunContext
from ._parent.rundir import RunDir, supervisor_prefix, sweep
from ._parent.seccomp import warm_up as seccomp_warm_up
from ._parent.spawn import Spawner
from ._parent.stdio import PIPE
from ._privileges import check_privileges
from ._protocol import MAX_PASS_FDS, Phase
from ._result import PhaseTiming, Result
from ._spec import Spec

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (3 ms for a command line)
if TYPE_CHECKING:
    from typing import Any

PhaseCallback = Callable[[Phase, float], None]


class Container:
    """A running container, handed out by ``await nursery.start(sup.run, spec)``.

    It exists only after setup succeeded: the payload is running. With
    ``stdin=PIPE``/``stdout=PIPE``/``stderr=PIPE`` (and ``capture_output=False``)
    it carries byte streams connected to the payload; they are closed when
    the run ends, so read them while the container runs.
    """

    def __init__(self, run: Run) -> None:
        self._run = run
        self._proc = run.proc
        self.hostname = run.hostname
        """The container's hostname."""
        self.stdin: anyio.abc.ByteSendStream | None = run.stdin
        """The payload's stdin when run with ``stdin=PIPE`` (close it to send EOF)."""
        self.stdout: anyio.abc.ByteReceiveStream | None = run.stdout
        """The payload's stdout when run with ``stdout=PIPE``."""
        self.stderr: anyio.abc.ByteReceiveStream | None = run.stderr
        """The payload's stderr when run with ``stderr=PIPE``."""
        self._resources = run.resources  # its cgroup and network pieces

    @property
    def _result(self) -> Result | None:
        """The result once the run has ended (a stopped command line prints it)."""
        return self._run.result

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
        return self._resources.addresses

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
        await self._run.done.wait()
        assert self._run.result is not None
        return self._run.result


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
        PermissionError: on entry (``async with``), without root where the
            kernel lets no unprivileged user make user namespaces (rootless
            mode needs them; see ``docs/rootless.rst``).
    """

    def __init__(self, *, max_parallel: int | None = None, sweep_leftovers: bool = True) -> None:
        if max_parallel is not None and (not isinstance(max_parallel, int) or max_parallel < 1):
            raise ValueError("Supervisor.max_parallel must be a positive int or None")
        self._limiter = anyio.CapacityLimiter(max_parallel) if max_parallel else None
        self._events = EventHub()
        self._rundir = RunDir()
        self._sweep = sweep_leftovers
        self._ctx: RunContext | None = None  # while open
        self._ids = itertools.count(1)
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
                spawner = Spawner(tg)
                self._ctx = ctx = RunContext(self._events, self._rundir, spawner, tg)
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
                                for left in list(ctx.live.values()):
                                    stoppers.start_soon(left.stop_at_exit)
                        finally:
                            await spawner.aclose(timeout=10)
                        # Networking: finish the bridge and veth deletions that
                        # container releases left to background threads.
                        if ctx.janitor is not None:
                            await ctx.janitor.wait_idle()
                            from ._parent.network import BRIDGE_RECORD_PREFIX

                            # Deleted (or in use by another supervisor): the
                            # bridges' own records are done with.
                            self._rundir.forget_prefixed(BRIDGE_RECORD_PREFIX)
                    self._ctx = None
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
            RuntimeError: the supervisor is not open, or it closed while the
                run waited for its turn (``max_parallel``).

        **Cancellation:** the container is stopped (SIGTERM if PID 1 handles
        it, ``spec.grace_period`` seconds, then SIGKILL), always reaped, and
        its resources released under a shield; then the cancellation
        propagates.
        """
        if self._ctx is None:
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
            if self._ctx is None:
                raise RuntimeError(
                    "the supervisor is closing: this run waited for its turn (max_parallel) and starts no container"
                )
            # Created once its turn came: its timeout and times count from here.
            run = Run(
                self._ctx,
                f"{self._prefix}-{next(self._ids)}",
                spec,
                check=check,
                capture_output=capture_output,
                input=input,
                stdin=stdin,
                stdout=stdout,
                stderr=stderr,
                pass_fds=passed,
                max_output=max_output,
                on_phase=on_phase,
                timeout=timeout,
            )
            return await run.execute(started=lambda: task_status.started(Container(run)))


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
