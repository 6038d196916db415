"""One container's run in the event loop, from its request to its result.

A :class:`Run` goes through one ordered lifecycle, each step a method:

1. **prepare**: the spawn configuration, the stdio plan (:mod:`.stdio`),
   and what the host makes before the clone (an id range, the cgroup, the
   id-mapped binds' mounts; :meth:`.HostResources.before_clone`);
2. **spawn**: PID 1 cloned by the supervisor's :class:`~.spawn.Spawner`;
3. **drive setup**: PID 1's phases, and the supervisor's steps it asks for;
4. **wait**: for PID 1's exit, a timeout, or an OOM kill (the OOM policy);
5. **stop**: whatever is still running is stopped and reaped;
6. **release**: the stdio ends, the control socket, the host resources;
7. **result**: the :class:`~supervisor.Result`, the events, and the run's
   outcome (:func:`.pid1.outcome`).

Steps 5 to 7 run on every path, shielded, once; a release that fails
neither skips the bookkeeping of step 7 nor replaces the run's own error.
:class:`supervisor.Container` is a view of a run that has started.
"""

from __future__ import annotations

import math
import socket
import time
from collections.abc import Callable, Sequence

import anyio
import anyio.abc

from .._errors import ContainerFailed, SetupError
from .._hostname import generate as generate_hostname
from .._protocol import Phase
from .._result import Reason, Result
from . import stdio, streams, userns
from .config import build_config
from .container import ContainerProcess, until
from .outcome import note_cleanup, outcome, run_result
from .resources import HostResources
from .streams import FdReceiveStream, FdSendStream

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (3 ms for a command line)
if TYPE_CHECKING:
    from .._events import EventHub
    from .._protocol import SpawnConfig
    from .._spec import Spec
    from .cgroups import CgroupStats
    from .network import Janitor
    from .pid1 import PhaseCallback
    from .rundir import RunDir
    from .spawn import Spawner


class RunContext:
    """What the runs of one supervisor share with it.

    Args:
        events: where the runs' events are published.
        rundir: the supervisor's crash ledger.
        spawner: what clones PID 1.
        task_group: the supervisor's task group (it outlives each run).
    """

    def __init__(self, events: EventHub, rundir: RunDir, spawner: Spawner, task_group: anyio.abc.TaskGroup) -> None:
        self.events = events
        self.rundir = rundir
        self.spawner = spawner
        self.task_group = task_group
        self.hostnames: set[str] = set()
        """The hostnames of the live runs (a generated one is unique among them)."""
        self.live: dict[str, Run] = {}
        """The runs whose PID 1 was spawned and that have not ended, by id."""
        self.janitor: Janitor | None = None
        """Deletes what bridged containers leave behind; made by the first one."""
        self.drainer = streams.Drainer(task_group)
        """Reads every run's captured stdout and stderr."""

    def network_janitor(self) -> Janitor:
        """The supervisor's network janitor, made on first use (so that a
        supervisor without a bridged container never imports the network)."""
        if self.janitor is None:
            from .network import Janitor

            self.janitor = Janitor()
        return self.janitor


class Run:
    """One container run: :meth:`execute` takes it from its spec to its result.

    Args:
        ctx: the supervisor's shared state.
        cid: the container's id.
        spec: what to run (its host paths already checked).
        check: a payload that does not exit 0 makes the run raise
            :class:`~supervisor.ContainerFailed`.
        capture_output, input, stdin, stdout, stderr, pass_fds: the stdio
            plan's arguments (:func:`.stdio.plan`).
        max_output: the most bytes kept of each captured stream.
        on_phase: the caller's phase callback.
        timeout: wall-clock seconds for the whole run, or ``None``.
    """

    def __init__(
        self,
        ctx: RunContext,
        cid: str,
        spec: Spec,
        *,
        check: bool,
        capture_output: bool,
        input: bytes | None,
        stdin: int | None,
        stdout: int | None,
        stderr: int | None,
        pass_fds: Sequence[int],
        max_output: int | None,
        on_phase: PhaseCallback | None,
        timeout: float | None,
    ) -> None:
        self.ctx = ctx
        self.cid = cid
        self.spec = spec
        self._check = check
        self._capture_output = capture_output
        self._input = input
        self._stdin, self._stdout, self._stderr = stdin, stdout, stderr
        self._pass_fds = pass_fds
        self._on_phase = on_phase
        self._deadline = math.inf if timeout is None else anyio.current_time() + timeout
        self._t0 = time.monotonic_ns()
        self.hostname = spec.hostname or generate_hostname(ctx.hostnames)
        self.resources = HostResources(
            spec, cid, ctx.rundir, hostname=self.hostname, task_group=ctx.task_group, janitor=ctx.network_janitor
        )
        self.out = streams.Capture(max_output)
        self.err = streams.Capture(max_output)
        self.stdin: FdSendStream | None = None
        self.stdout: FdReceiveStream | None = None
        self.stderr: FdReceiveStream | None = None
        self.done = anyio.Event()
        """Set once the run has ended and released everything."""
        self.result: Result | None = None
        """The run's result, once :attr:`done` is set."""
        # PID 1's descriptors: this process's copies are closed right after
        # the spawn. Ours (captures, the feed, a terminal): when the run ends.
        self._child_side = stdio.Closer()
        self._our_side = stdio.Closer()
        self._feed = -1
        self._capture: tuple[int, int] | None = None
        self._ctl, ctl_child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        self._our_side.call(self._ctl.close)
        self._child_side.call(ctl_child.close)
        self._ctl.setblocking(False)
        self._ctl_child = ctl_child
        self.proc = ContainerProcess(
            cid,
            self._ctl,
            self._t0,
            self._note_phase,
            parent_steps=self.resources.parent_steps(),
            grace_period=spec.grace_period,
        )
        self._reason: Reason | None = None  # the run's own verdict: "setup_failed", "cancelled"
        self._ending: Reason | None = None  # "timeout" or "oom" once the supervisor decided to end it
        self._setup_error: SetupError | None = None
        self._cleanup_error: OSError | None = None  # releasing a host resource failed

    async def execute(self, started: Callable[[], None]) -> Result:
        """Run the container through every step of its lifecycle.

        Args:
            started: called once the payload runs (or once a timeout ended
                the run during its setup).

        Returns:
            the :class:`~supervisor.Result`.

        Raises:
            SetupError: the container failed before its payload ran.
            CleanupError: only the release failed.
            ContainerFailed: ``check`` and the payload did not exit 0.
            ValueError: the spec does not resolve, or a passed descriptor
                was closed meanwhile.

        **Cancellation:** the container is stopped, reaped and released
        under a shield; then the cancellation propagates.
        """
        propagating: BaseException | None = None  # the run's own exception, on its way out
        try:
            config, fds = self._prepare()
            await self._spawn(config, fds)
            await self._supervise(started)
        except SetupError as exc:  # before PID 1 could report it: the host's steps, the clone
            self._setup_failed(exc)
        except BaseException as exc:
            self._reason = "cancelled"  # stopped and reaped below
            propagating = exc
            raise
        finally:
            with anyio.CancelScope(shield=True):
                await self._stop()
                result = await self._release()
                if propagating is not None:
                    note_cleanup(propagating, result, self._cleanup_error)
        failed = self._check and not result.ok and not self.proc.stopped_by_caller
        return outcome(
            result,
            self._setup_error,
            self._cleanup_error,
            ContainerFailed(result, self.spec.command) if failed else None,
        )

    async def stop_at_exit(self) -> None:
        """Stop a run that outlives its supervisor's block, as on cancellation.

        Waits until PID 1 is reaped (at most 5 s after SIGKILL), so that the
        run ends with its exit status, then (at most 10 s) until the run has
        released its resources: before the run directory and the network go.

        **Cancellation:** the stop is shielded; the waits are cancellable.
        """
        if not self.proc.exited:
            await self.proc.stop(self.proc.grace_period, reap_timeout=5)
        with anyio.move_on_after(10):
            await self.done.wait()

    # -- 1. prepare -----------------------------------------------------------

    def _note_phase(self, phase: Phase, seconds: float) -> None:
        events = self.ctx.events
        if events.has_subscribers:
            events.publish("phase", self.cid, self.hostname, phase.label, seconds=round(seconds, 6))
        if self._on_phase is not None:
            self._on_phase(phase, seconds)

    def _prepare(self) -> tuple[SpawnConfig, list[int]]:
        """Everything PID 1 is cloned with: its configuration and descriptors.

        Returns:
            the spawn configuration, and PID 1's descriptors in its order:
            the control socket, stdio, the passed ones, then the host's.

        Raises:
            SetupError: a host step before the clone failed.
            ValueError: the spec does not resolve, or a passed descriptor
                was closed meanwhile.
        """
        spec, resources = self.spec, self.resources
        config = build_config(
            spec,
            self.hostname,
            network=resources.wants_network,
            etc_dir=resources.etc_dir,
            # Phases are sent one by one only when someone watches them live.
            live_phases=self._on_phase is not None or self.ctx.events.has_subscribers,
        )
        self.ctx.hostnames.add(self.hostname)
        plan = stdio.plan(
            capture_output=self._capture_output,
            input=self._input,
            stdin=self._stdin,
            stdout=self._stdout,
            stderr=self._stderr,
            pass_fds=self._pass_fds,
        )
        self._child_side.call(plan.child_side.close)
        self._our_side.call(plan.our_side.close)
        self._capture = plan.capture
        if "input" in plan.pipes:
            self._feed = plan.pipes["input"]
            self._our_side.call(self._close_feed)
        if "stdin" in plan.pipes:
            self.stdin = FdSendStream(plan.pipes["stdin"])
        if "stdout" in plan.pipes:
            self.stdout = FdReceiveStream(plan.pipes["stdout"])
        if "stderr" in plan.pipes:
            self.stderr = FdReceiveStream(plan.pipes["stderr"])
        if resources.wants_network:
            # The address and bridge need no container: reserved in the
            # background while PID 1 is cloned and set up.
            resources.start_allocation()
        # The id range, the cgroup, the id-mapped binds' mounts, made before
        # the clone; their descriptors go last.
        config, host_fds = resources.before_clone(config)
        for fd in host_fds:
            self._child_side.fd(fd)
        return config, [self._ctl_child.fileno(), *plan.child, *host_fds]

    # -- 2. spawn -------------------------------------------------------------

    async def _spawn(self, config: SpawnConfig, fds: list[int]) -> None:
        """Clone PID 1 with ``fds``, then close this process's copies.

        Raises:
            SetupError: phase ``SPAWNED``: the kernel refused the clone.
        """
        try:
            self.proc.id_mapping = userns.kind_of(config)
            self.proc.slot = await self.ctx.spawner.spawn(self.cid, config, fds)
        except OSError as exc:
            raise SetupError.caused_by(Phase.SPAWNED, exc) from exc
        finally:
            self._child_side.close()
        self.ctx.live[self.cid] = self

    # -- 3. drive setup, 4. wait ---------------------------------------------

    async def _supervise(self, started: Callable[[], None]) -> None:
        """Drive PID 1's setup, relay its stdio, and wait for its end.

        The captured output is read by the supervisor's drainer; a task group
        of the run's own is opened only for its input feed or its terminal.

        Raises:
            ProtocolError: PID 1 sent something out of order.
            Exception: the caller's ``on_phase`` raised it.
        """
        drained = None
        if self._capture is not None:
            out_r, err_r = self._capture
            drained = self.ctx.drainer.add(((out_r, self.out), (err_r, self.err)))
        try:
            if self._feed >= 0 or self.spec.tty:
                ran = await self._supervise_in_task_group(started)
            else:
                ran = await self._drive_setup(started)
                if ran:
                    await self._run_payload(None, started)
            if drained is not None and ran:
                await drained.done.wait()  # the output to its end-of-file
        finally:
            if drained is not None:
                self.ctx.drainer.discard(drained)

    async def _drive_setup(self, started: Callable[[], None]) -> bool:
        """PID 1's setup to its execve; False if the run ended there (a setup
        failure, or the timeout)."""
        try:
            with until(self._deadline):
                await self.proc.drive_setup()
        except SetupError as exc:
            self._setup_failed(exc)
            return False
        if not self.proc.running:  # the timeout struck during setup
            self._ending = "timeout"
            # A caller's start() gets the handle all the same; its wait()
            # returns the timeout's result.
            started()
            return False
        return True

    async def _supervise_in_task_group(self, started: Callable[[], None]) -> bool:
        """:meth:`_supervise` with the input feed or the terminal's relays
        running beside it; returns whether the payload ran."""
        body_error: Exception | None = None
        ran = False
        async with anyio.create_task_group() as tg:
            if self._feed >= 0:
                # The feed task owns the write end from here (it closes it
                # to send end of file).
                feed, self._feed = self._feed, -1
                tg.start_soon(streams.feed, feed, self._input or b"")
            try:
                ran = await self._drive_setup(started)
                if ran:
                    await self._run_payload(tg, started)
            except Exception as exc:  # noqa: BLE001 - re-raised below
                # ProtocolError, or the caller's on_phase raised: re-raised
                # below as itself, not wrapped in the task group's
                # ExceptionGroup.
                body_error = exc
                ran = False
            if not ran:
                tg.cancel_scope.cancel()
        if body_error is not None:
            raise body_error
        return ran

    async def _run_payload(self, tg: anyio.abc.TaskGroup | None, started: Callable[[], None]) -> None:
        """The payload runs: relay its terminal (in ``tg``), then wait for its
        end, a timeout or an OOM kill, and act on it (the OOM policy)."""
        proc = self.proc
        typing_in: anyio.CancelScope | None = None
        if proc.pty_master >= 0:
            assert tg is not None  # a terminal is supervised in a task group
            self._our_side.fd(proc.pty_master)
            typing_in = streams.relay_terminal(
                tg,
                proc.pty_master,
                self.out if self._capture_output else None,
                1 if self._stdout is None else self._stdout,
                self._input,
                self._stdin,
            )
        self.ctx.events.publish("started", self.cid, self.hostname, pid=proc.pid)
        started()
        resources = self.resources
        self._ending = await proc.wait_for_end(self._deadline, resources.wait_oom if resources.watches_oom else None)
        if self._ending == "oom":
            # Whole-container OOM semantics (memory.oom.group on v2; done by
            # hand on v1, where the kernel kills one process).
            proc.stopped_by_us = True
            proc.send_signal(9)
            await self.resources.kill_all()
        elif self._ending == "timeout":
            await proc.stop(self.spec.grace_period)
        # Nobody reads the terminal any more: stop relaying the caller's
        # keystrokes (the output is drained to its end).
        if typing_in is not None:
            typing_in.cancel()

    # -- 5. stop, 6. release, 7. result --------------------------------------

    def _setup_failed(self, error: SetupError) -> None:
        self._setup_error = error
        self._reason = "setup_failed"

    async def _stop(self) -> None:
        """Stop and reap whatever still runs (idempotent)."""
        if self.proc.slot is not None and not self.proc.exited:
            await self.proc.stop(self.spec.grace_period)

    async def _release(self) -> Result:
        """Close every descriptor of the run and give back its host resources.

        A release that fails is kept for the outcome (:class:`CleanupError`);
        it never skips the rest of the release nor the bookkeeping.

        Returns:
            the run's result.
        """
        self._child_side.close()  # when the spawn never came
        self._our_side.close()
        for stream in (self.stdin, self.stdout, self.stderr):
            if stream is not None:
                await stream.aclose()
        usage = None
        try:
            try:
                usage = self.resources.stats()  # after the end, before the cgroup goes
                await self.resources.release()
            except OSError as exc:
                self._cleanup_error = exc
        finally:
            result = self._finish(usage)
        return result

    def _finish(self, usage: CgroupStats | None) -> Result:
        """The supervisor's bookkeeping, the result and the last events."""
        ctx, cid, hostname = self.ctx, self.cid, self.hostname
        ctx.live.pop(cid, None)
        ctx.hostnames.discard(hostname)
        if self.proc.slot is not None and self.proc.exited:
            ctx.spawner.forget(cid)
        self.result = result = run_result(
            self.proc,
            hostname,
            self._reason,
            self._ending,
            usage,
            self._setup_error,
            stdout=self.out.value(),
            stderr=self.err.value(),
            dropped=(self.out.dropped, self.err.dropped),
        )
        if ctx.events.has_subscribers:  # the JSON form costs every run ~0.05 ms otherwise
            if self._setup_error is not None:
                ctx.events.publish("failed", cid, hostname, self._setup_error.phase.label, result=result.to_json())
            else:
                ctx.events.publish("exited", cid, hostname, result=result.to_json())
            ctx.events.publish("cleaned_up", cid, hostname)
        self.done.set()
        return result

    def _close_feed(self) -> None:
        if self._feed >= 0:
            fd, self._feed = self._feed, -1
            stdio.close_quietly(fd)
