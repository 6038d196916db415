"""The supervisor's half of one container: drive setup, then watch it run."""

from __future__ import annotations

import contextlib
import errno
import math
import os
import signal as _signal
import socket
from collections.abc import Awaitable, Callable

import anyio

from .._errors import ProtocolError, SetupError
from .._protocol import REQUEST_PHASES, SETUP_COMM, Phase, Pid1Record, Record, decode_pid1, encode_pid1, recv_raw
from .._sys import linux
from .config import PARENT_FAULT
from .spawn import Slot

PhaseCallback = Callable[[Phase, float], None]
ParentStep = Callable[["ContainerProcess"], Awaitable[None]]


def check_parent_fault(phase: Phase, *, after: bool) -> None:
    """Raise the fault :func:`supervisor.testing.fail_in_parent` injects here, if any.

    Raises:
        OSError: ``EIO``, naming the step, inside such a block.
    """
    if PARENT_FAULT.get() == (phase, after):
        where = "after" if after else "in"
        raise OSError(errno.EIO, f"fault injected {where} the supervisor's {phase.label} step (supervisor.testing)")


_PHASES = {int(phase): phase for phase in Phase}


class ContainerProcess:
    """Parent-side state of one container, from spawn to reaped.

    Args:
        cid: the supervisor's id for it.
        sock: the supervisor's end of the control socket (non-blocking).
        t0: ``time.monotonic_ns()`` when the run started.
        on_phase: called as each phase starts (phase, seconds since start).
        parent_steps: coroutines run when PID 1 requests that phase (the
            supervisor's cgroup and network steps); their OSError/ValueError
            becomes a SetupError for the phase.
    """

    def __init__(
        self,
        cid: str,
        sock: socket.socket,
        t0: int,
        on_phase: PhaseCallback | None = None,
        parent_steps: dict[Phase, ParentStep] | None = None,
        grace_period: float = 0.0,
    ) -> None:
        self.cid = cid
        self.sock = sock
        self.t0 = t0
        self.on_phase = on_phase
        self.parent_steps = parent_steps or {}
        self.slot: Slot | None = None
        self.phases: list[tuple[Phase, float]] = []
        self.last_phase = Phase.SPAWNED
        self.running = False
        self.stopped_by_us = False
        #: Seconds between SIGTERM and SIGKILL when the supervisor stops it.
        self.grace_period = grace_period
        self.pty_master = -1

    @property
    def pid(self) -> int:
        """Host PID of the container's PID 1 (0 before spawn)."""
        return self.slot.pid if self.slot else 0

    @property
    def exited(self) -> bool:
        """True once PID 1 was reaped."""
        return self.slot is not None and self.slot.exited.is_set()

    def _note(self, phase: Phase, ts: int) -> None:
        self.last_phase = phase
        seconds = (ts - self.t0) / 1e9
        self.phases.append((phase, seconds))
        if self.on_phase is not None:
            self.on_phase(phase, seconds)

    async def _recv(self) -> tuple[Pid1Record | None, list[int]]:
        while True:
            try:
                data, fds = recv_raw(self.sock)
            except BlockingIOError:
                await anyio.wait_readable(self.sock)
                continue
            except ConnectionResetError:
                # PID 1 exited with one of our answers unread (it failed or
                # died while we worked). The kernel reports that reset once, even
                # before records still queued for us (its last FAIL, say):
                # the error is now consumed, so read on; end-of-file follows.
                continue
            if not data:
                for fd in fds:
                    os.close(fd)
                return None, []
            try:
                return decode_pid1(data), fds
            except ValueError as exc:
                for fd in fds:
                    os.close(fd)
                raise ProtocolError(f"PID 1 sent a malformed record: {exc}") from None

    async def _reached_execve(self) -> bool:
        """At end of file after ``EXEC``: did PID 1 really become the payload?

        End of file means the close-on-exec control socket closed: by
        ``execve``, or because PID 1 died just before it (a seccomp profile
        that kills ``execve``, a signal). Until the reaper (in this thread)
        reaps PID 1, its PID cannot be reused, and its name, a zombie's too,
        says which: ``execve`` renames it after the program. Once reaped, the
        reaper has read that name from the zombie (:attr:`Slot.execd`).
        """
        assert self.slot is not None
        for _ in range(1000):
            try:
                renamed: bool | None = linux.comm(self.slot.pid) != SETUP_COMM
            except (FileNotFoundError, ProcessLookupError):  # exited and reaped meanwhile
                renamed = None
            except OSError:  # unreadable here (hidepid): take the end of file as the exec
                return True
            # Reaped (before the read, maybe: then the PID may be another's).
            # Until then the PID is ours, a zombie's name included.
            if renamed is None or self.slot.exited.is_set():
                await self.slot.exited.wait()
                return self.slot.execd
            if renamed:
                return True
            # Inside execve, between closing the fds and taking the new name.
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
            if record is not None and record.tag == Record.PTY and len(fds) == 1 and self.pty_master < 0:
                self.pty_master = fds[0]
                for mark in record.marks:  # held back until the terminal went (batched mode)
                    self._accept(mark)
                continue
            for fd in fds:
                os.close(fd)
            if record is None:
                if self.last_phase == Phase.EXEC and await self._reached_execve():
                    self.running = True
                    return
                await self.slot.exited.wait()
                if self.last_phase == Phase.EXEC:
                    raise SetupError(Phase.EXEC, 0, f"PID 1 died before execve ({self.describe_exit()})")
                raise SetupError(self.last_phase, 0, f"PID 1 died during setup ({self.describe_exit()})")
            if record.tag not in (Record.PHASE, Record.REQUEST, Record.FAIL):
                raise ProtocolError(f"unexpected record from PID 1: {record!r}")
            # Phases held back by PID 1 (batched mode) come first, in order;
            # a request's own phase is its last mark.
            phase = self.last_phase
            for mark in record.marks:
                phase = self._accept(mark)
            if record.tag == Record.REQUEST:
                if not record.marks or phase != record.phase:
                    raise ProtocolError(f"request for phase {record.phase} without its mark")
                if phase not in REQUEST_PHASES:
                    raise ProtocolError(f"phase {phase.label} is not a request")
                try:
                    await self._answer(phase)
                except SetupError:
                    # If PID 1 failed on its own meanwhile (it was killed while
                    # we worked, say), its report is the cause (our step then
                    # failed only because it was gone).
                    own = self._reported_failure()
                    if own is not None:
                        await self.slot.exited.wait()
                        raise own from None
                    raise
            elif record.tag == Record.FAIL:
                await self.slot.exited.wait()
                raise self._failure(record)

    def _failure(self, record: Pid1Record) -> SetupError:
        """The SetupError a FAIL record reports (its phase, or the last one seen).

        PID 1 names the call that failed ("mount(...) failed"); the errno's
        text is added here, where strerror is safe to call.
        """
        try:
            phase = Phase(record.phase)
        except ValueError:
            phase = self.last_phase
        message = record.message
        if record.err and message.endswith("failed"):
            message = f"{message}: {os.strerror(record.err)}"
        return SetupError(phase, record.err, message)

    def _reported_failure(self) -> SetupError | None:
        """PID 1's FAIL record if one is already waiting in the socket."""
        while True:
            try:
                data, fds = recv_raw(self.sock)
            except ConnectionResetError:
                continue  # reported once, before the records still queued
            except OSError:  # nothing more (BlockingIOError)
                return None
            for fd in fds:
                os.close(fd)
            if not data:
                return None
            try:
                record = decode_pid1(data)
            except ValueError:
                return None
            for mark in record.marks:
                with contextlib.suppress(ProtocolError):
                    self._accept(mark)
            if record.tag == Record.FAIL:
                return self._failure(record)

    def _accept(self, mark: tuple[int, int]) -> Phase:
        """Validate and note one ``(phase, timestamp)`` mark.

        Raises:
            ProtocolError: unknown phase, or not after the previous one.
        """
        phase = _PHASES.get(mark[0])  # a dict lookup: Phase(n) costs an enum call per mark
        if phase is None:
            raise ProtocolError(f"malformed phase report {mark!r}")
        if phase < self.last_phase or (phase == self.last_phase and self.phases):
            raise ProtocolError(f"phase {phase.label} after {self.last_phase.label}")
        self._note(phase, mark[1])
        return phase

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
        except OSError as exc:
            raise SetupError(phase, exc.errno or 0, str(exc)) from exc
        except ValueError as exc:
            raise SetupError(phase, 0, str(exc)) from exc
        try:
            self.sock.send(encode_pid1(Pid1Record(Record.ACK, int(phase))))
        except (BrokenPipeError, ConnectionResetError):
            pass  # PID 1 is gone; the next read reports how it ended

    def describe_exit(self) -> str:
        """Human text for PID 1's exit status."""
        code, status = self.exit_status()
        if code is not None:
            return f"exit status {code}"
        if status is None:
            return "exit status unknown: it was never reaped"
        return f"killed by signal {status}"

    def exit_status(self) -> tuple[int | None, int | None]:
        """``(exit_code, None)`` or ``(None, signal)`` once exited.

        ``(None, None)`` when PID 1 was never reaped (the supervisor gave up
        waiting at its exit): no status is made up.
        """
        assert self.slot is not None
        if self.slot.exit_code == os.CLD_EXITED:
            return self.slot.exit_status, None
        if self.slot.exit_code in (os.CLD_KILLED, os.CLD_DUMPED):
            return None, self.slot.exit_status
        return None, None

    # -- signals ----------------------------------------------------------
    def send_signal(self, sig: int) -> None:
        """Signal PID 1 through its pidfd (a no-op once it has exited)."""
        if self.slot is None or self.slot.pidfd < 0 or self.exited:
            return
        try:
            linux.pidfd_send_signal(self.slot.pidfd, sig)
        except ProcessLookupError:
            pass

    def handles_signal(self, sig: int) -> bool:
        """Whether PID 1 has a handler for ``sig``.

        A PID 1 ignores signals it does not handle, even from outside its
        namespace (pid_namespaces(7)); only SIGKILL and SIGSTOP are forced.
        """
        if self.slot is None or self.exited:
            return False
        try:
            with open(f"/proc/{self.slot.pid}/status") as f:
                for line in f:
                    if line.startswith("SigCgt:"):
                        return bool(int(line.split()[1], 16) & (1 << (sig - 1)))
        except OSError:
            return False
        return False

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
                self.stopped_by_us = True
                if self.running and grace_period > 0 and self.handles_signal(_signal.SIGTERM):
                    self.send_signal(_signal.SIGTERM)
                    with anyio.move_on_after(grace_period):
                        await self.slot.exited.wait()
                self.send_signal(_signal.SIGKILL)
            with anyio.move_on_after(reap_timeout):
                await self.slot.exited.wait()
