"""The supervisor's half of one container in the event loop: drive setup, then watch it run."""

from __future__ import annotations

import contextlib
import math
import signal as _signal
import socket
from collections.abc import Awaitable, Callable

import anyio

from .._errors import SetupError
from .._protocol import Phase, Pid1Record
from .._result import Reason
from .faults import check_parent_fault
from .pid1 import END, PhaseCallback, Pid1
from .spawn import Slot

ParentStep = Callable[["ContainerProcess"], Awaitable[None]]


class ContainerProcess(Pid1):
    """Parent-side state of one container, from spawn to reaped, in the event loop.

    Args:
        cid: the supervisor's id for it.
        sock: the supervisor's end of the control socket (non-blocking).
        t0: ``time.monotonic_ns()`` when the run started.
        on_phase: called as each phase starts (phase, seconds since start).
        parent_steps: coroutines run when PID 1 requests that phase (the
            supervisor's network step); their OSError/ValueError becomes a
            SetupError for the phase.
        grace_period: seconds between SIGTERM and SIGKILL on a stop.
    """

    slot: Slot | None

    def __init__(
        self,
        cid: str,
        sock: socket.socket,
        t0: int,
        on_phase: PhaseCallback | None = None,
        parent_steps: dict[Phase, ParentStep] | None = None,
        grace_period: float = 0.0,
    ) -> None:
        super().__init__(cid, sock, t0, on_phase, grace_period)
        self.parent_steps = parent_steps or {}

    async def _recv(self) -> tuple[Pid1Record | None, list[int]]:
        while True:
            try:
                return self.receive()
            except BlockingIOError:
                await anyio.wait_readable(self.sock)

    async def _reached_execve(self) -> bool:
        """At end of file after ``EXEC``: did PID 1 really become the payload?

        See :meth:`~supervisor._parent.pid1.Pid1.exec_check`; once reaped, the
        reaper has read PID 1's name from the zombie (:attr:`Slot.execd`).
        """
        assert self.slot is not None
        for _ in range(1000):
            seen = self.exec_check()
            if seen == "exec":
                return True
            if seen == "reap":
                await self.slot.exited.wait()
                return self.slot.execd
            await anyio.sleep(0.001)
        return True  # pragma: no cover - never renamed nor exited: take it as running

    async def drive_setup(self) -> None:
        """Answer PID 1's requests until it execs the payload.

        Raises:
            SetupError: PID 1 reported a failure, or died before exec.
            ProtocolError: PID 1 sent something out of order.
        """
        assert self.slot is not None
        while True:
            record, fds = await self._recv()
            step = self.take(record, fds)
            if step is None:
                continue
            if step is END:
                if self.last_phase == Phase.EXEC and await self._reached_execve():
                    self.running = True
                    return
                await self.slot.exited.wait()
                raise self.died()
            if isinstance(step, SetupError):
                await self.slot.exited.wait()
                raise step
            assert isinstance(step, Phase)
            try:
                await self._answer(step)
            except SetupError:
                # If PID 1 failed on its own meanwhile (it was killed while
                # we worked, say), its report is the cause (our step then
                # failed only because it was gone).
                own = self.reported_failure()
                if own is not None:
                    await self.slot.exited.wait()
                    raise own from None
                raise

    async def _answer(self, phase: Phase) -> None:
        """Perform the parent-side step PID 1 asked for, then acknowledge it."""
        assert self.slot is not None
        try:
            check_parent_fault(phase, after=False)
            step = self.parent_steps.get(phase)
            if step is not None:
                await step(self)
            check_parent_fault(phase, after=True)
        except SetupError:
            raise
        except (OSError, ValueError) as exc:
            raise SetupError.caused_by(phase, exc) from exc
        self.acknowledge(phase)

    async def wait_for_end(self, deadline: float, oom: Callable[[], Awaitable[None]] | None) -> Reason | None:
        """Wait for PID 1 to exit, the deadline, or an OOM kill, whichever comes first.

        Args:
            deadline: in :func:`anyio.current_time`'s clock (``math.inf``: none).
            oom: returns once the OOM killer struck in the container (its
                ``OSError``: the cgroup went away with the container), or
                ``None`` when no memory limit is watched.

        Returns:
            ``None`` when PID 1 exited, else ``"timeout"`` or ``"oom"``.

        **Cancellation:** cancellable; PID 1 is left as it is.
        """
        assert self.slot is not None
        slot = self.slot
        if oom is None:
            with until(deadline):
                await slot.exited.wait()
            return None if slot.exited.is_set() else "timeout"
        ending: Reason | None = None
        async with anyio.create_task_group() as tg:

            async def watch_oom() -> None:
                nonlocal ending
                try:
                    await oom()
                except OSError:
                    return  # the cgroup went away with the container
                ending = "oom"
                tg.cancel_scope.cancel()

            tg.start_soon(watch_oom)
            with anyio.move_on_at(deadline) as scope:
                await slot.exited.wait()
            if scope.cancelled_caught and ending is None:
                ending = "timeout"
            tg.cancel_scope.cancel()
        return ending

    async def stop(self, grace_period: float, reap_timeout: float = math.inf) -> None:
        """SIGTERM (if PID 1 handles it), the grace period, then SIGKILL; reap.

        Args:
            grace_period: seconds between SIGTERM and SIGKILL.
            reap_timeout: the longest wait for the reap after SIGKILL
                (bounded at the supervisor's exit).

        **Cancellation:** shielded: returns with PID 1 reaped (or once
        ``reap_timeout`` has passed).
        """
        assert self.slot is not None
        with anyio.CancelScope(shield=True):
            if not self.exited:
                if self.start_stop(grace_period):
                    with anyio.move_on_after(grace_period):
                        await self.slot.exited.wait()
                self.send_signal(_signal.SIGKILL)
            with anyio.move_on_after(reap_timeout):
                await self.slot.exited.wait()


def until(deadline: float) -> contextlib.AbstractContextManager[object]:
    """``anyio.move_on_at(deadline)``, or nothing for no deadline (a cancel
    scope costs every run some 10 µs)."""
    return anyio.move_on_at(deadline) if deadline != math.inf else contextlib.nullcontext()
