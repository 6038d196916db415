"""PID 1 as the supervisor sees it: its records, its signals, its exit.

What a record from PID 1 means, what its name tells after an end of file,
and how it ended, with no I/O framework: the event loop's driver
(:mod:`.container`) and the blocking one of a single run
(:mod:`.oneshot`) do their waiting each in their own way around the same
rules. Nothing here imports an async framework.
"""

from __future__ import annotations

import os
import signal
import socket
import struct
from collections.abc import Callable

from .._child import _spawn
from .._errors import ProtocolError, SetupError
from .._protocol import (
    REQUEST_PHASES,
    SETUP_COMM,
    Phase,
    Pid1Record,
    Record,
    SpawnConfig,
    decode_pid1,
    encode_pid1,
    recv_raw,
)
from .._record import mutable_record
from .._sys import constants as c
from .._sys import linux

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (3 ms for a command line)
if TYPE_CHECKING:
    from typing import Literal

if TYPE_CHECKING:
    pass

PhaseCallback = Callable[[Phase, float], None]

#: waitid(2) flag: wait for children whatever their exit signal (<linux/wait.h>).
_WALL = 0x40000000

_PHASES = {int(phase): phase for phase in Phase}

#: The clone thread's reply: pid, pidfd, errno.
_REPLY = struct.Struct("=iii")


def read_clone_reply(fd: int, config: SpawnConfig) -> tuple[int, int]:
    """The extension's clone thread's answer, read from ``fd``: PID 1's pid and pidfd.

    Blocks until the answer is there (it comes at once: the clone itself).

    Raises:
        OSError: the kernel refused the clone (the message names its namespaces).
    """
    pid, pidfd, err = _REPLY.unpack(os.read(fd, _REPLY.size))
    if err:
        # clone3, or clone(2) where clone3 is refused: the namespaces name it.
        raise OSError(err, f"clone of PID 1 (namespaces {config.clone_flags:#x}) failed: {os.strerror(err)}")
    return pid, pidfd


@mutable_record
class Slot:
    """One PID 1: its pid and pidfd, then its exit status once reaped."""

    pid: int = 0
    pidfd: int = -1
    exit_code: int = 0  # waitid si_code (CLD_EXITED, CLD_KILLED, CLD_DUMPED)
    exit_status: int = 0
    #: False if PID 1 died before ``execve`` (it still had its setup name).
    execd: bool = True
    reaped: bool = False
    #: Seen renamed by execve while it ran (its name need not be read again).
    exec_seen: bool = False
    #: User and system CPU seconds of PID 1 and every process it reaped (the
    #: whole container: its PID namespace's processes all end as its children).
    cpu_s: tuple[float, float] | None = None


def reap(slot: Slot) -> None:
    """Note how PID 1 ended (its pidfd is readable: it exited) and reap it."""
    try:
        res = os.waitid(c.P_PIDFD, slot.pidfd, os.WEXITED | os.WNOHANG | os.WNOWAIT | _WALL)
    except ChildProcessError:
        res = None
    if res is not None:
        # Still a zombie: its name tells whether it reached execve.
        try:
            slot.execd = slot.exec_seen or linux.comm(res.si_pid) != SETUP_COMM
        except OSError:
            slot.execd = True  # unreadable: take it as the payload's own exit
        slot.exit_code = res.si_code
        slot.exit_status = res.si_status
        # The reap itself by pid, which the zombie still holds, for its rusage.
        try:
            reaped, _status, usage = os.wait4(res.si_pid, os.WNOHANG | _WALL)
        except ChildProcessError:
            reaped = 0
        if reaped:
            slot.cpu_s = (usage.ru_utime, usage.ru_stime)
    # Its stack and plan, in our memory, are free now.
    _spawn.collect()
    slot.reaped = True


class EndOfFile:
    """:meth:`Pid1.take`'s answer to the end of the control socket."""


#: The end of file: PID 1 exec'd the payload, or died.
END = EndOfFile()

#: What to do after a record: nothing (``None``), answer a request
#: (its phase), look at the end of file, or wait for the exit, then raise.
Step = Phase | EndOfFile | SetupError | None


class Pid1:
    """The supervisor's record of one PID 1, from its clone to its reap.

    Args:
        cid: the supervisor's id for it.
        sock: the supervisor's end of the control socket (non-blocking).
        t0: ``time.monotonic_ns()`` when the run started.
        on_phase: called as each phase starts (phase, seconds since start).
        grace_period: seconds between SIGTERM and SIGKILL on a stop.
    """

    def __init__(
        self,
        cid: str,
        sock: socket.socket,
        t0: int,
        on_phase: PhaseCallback | None = None,
        grace_period: float = 0.0,
    ) -> None:
        self.cid = cid
        self.sock = sock
        self.t0 = t0
        self.on_phase = on_phase
        self.phases: list[tuple[Phase, float]] = []
        self.last_phase = Phase.SPAWNED
        self.running = False
        self.stopped_by_us = False
        #: Stopped through its handle (``Container.stop``): the result says how
        #: it exited (not "cancelled"), and that exit is no failure for ``check``.
        self.stopped_by_caller = False
        #: Seconds between SIGTERM and SIGKILL when the supervisor stops it.
        self.grace_period = grace_period
        self.pty_master = -1
        self.slot: Slot | None = None
        #: How its ids map (``Result.id_mapping``), set from its configuration.
        self.id_mapping = "range"

    @property
    def pid(self) -> int:
        """Host PID of the container's PID 1 (0 before spawn)."""
        return self.slot.pid if self.slot else 0

    @property
    def exited(self) -> bool:
        """True once PID 1 was reaped."""
        return self.slot is not None and self.slot.reaped

    # -- records ------------------------------------------------------------
    def receive(self) -> tuple[Pid1Record | None, list[int]]:
        """One record from PID 1, ``(None, [])`` at end of file.

        Raises:
            BlockingIOError: nothing to read yet.
            ProtocolError: a malformed record.
        """
        while True:
            try:
                data, fds = recv_raw(self.sock)
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

    def take(self, record: Pid1Record | None, fds: list[int]) -> Step:
        """Take one record of PID 1's (``None``: end of file) and say what follows.

        Returns:
            ``None`` to read on; a :class:`Phase` whose step PID 1 now waits
            for; :data:`END` at the end of file; a :class:`SetupError` that
            PID 1 reported (raise it once PID 1 is reaped).

        Raises:
            ProtocolError: PID 1 sent something out of order.
        """
        if record is not None and record.tag == Record.PTY and len(fds) == 1 and self.pty_master < 0:
            self.pty_master = fds[0]
            for mark in record.marks:  # held back until the terminal went (batched mode)
                self._accept(mark)
            return None
        for fd in fds:
            os.close(fd)
        if record is None:
            return END
        if record.tag not in (Record.PHASE, Record.REQUEST, Record.FAIL):
            raise ProtocolError(f"unexpected record from PID 1: {record!r}")
        # Phases held back by PID 1 (batched mode) come first, in order;
        # a request's own phase is its last mark.
        phase = self.last_phase
        for mark in record.marks:
            phase = self._accept(mark)
        if record.tag == Record.REQUEST:
            if phase != record.phase:
                raise ProtocolError(f"request for phase {record.phase} without its mark")
            if phase not in REQUEST_PHASES:
                raise ProtocolError(f"phase {phase.label} is not a request")
            return phase
        if record.tag == Record.FAIL:
            return self._failure(record)
        return None

    def died(self) -> SetupError:
        """The SetupError of a PID 1 that died during its setup (once reaped)."""
        if self.last_phase == Phase.EXEC:
            return SetupError(Phase.EXEC, 0, f"PID 1 died before execve ({self.describe_exit()})")
        return SetupError(self.last_phase, 0, f"PID 1 died during setup ({self.describe_exit()})")

    def exec_check(self) -> Literal["exec", "reap", "wait"]:
        """At end of file after ``EXEC``: did PID 1 really become the payload?

        End of file means the close-on-exec control socket closed: by
        ``execve``, or because PID 1 died just before it (a seccomp profile
        that kills ``execve``, a signal). Until PID 1 is reaped its PID
        cannot be reused, and its name, a zombie's too, says which:
        ``execve`` renames it after the program.

        Returns:
            ``"exec"``: it runs the payload; ``"reap"``: it exited (or was
            reaped already): wait for the reap, whose :attr:`Slot.execd`
            answers; ``"wait"``: inside ``execve``, between closing the fds
            and taking the new name: ask again in a millisecond.
        """
        assert self.slot is not None
        try:
            renamed = linux.comm(self.slot.pid) != SETUP_COMM
        except (FileNotFoundError, ProcessLookupError):  # exited and reaped meanwhile
            return "reap"
        except OSError:  # unreadable here (hidepid): take the end of file as the exec
            return "exec"
        # Reaped (before the read, maybe: then the PID may be another's).
        # Until then the PID is ours, a zombie's name included.
        if self.slot.reaped:
            return "reap"
        if renamed:
            self.slot.exec_seen = True
            return "exec"
        return "wait"

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

    def reported_failure(self) -> SetupError | None:
        """PID 1's FAIL record if one is already waiting in the socket."""
        while True:
            try:
                record, fds = self.receive()
            except (OSError, ProtocolError):  # nothing more (BlockingIOError), or garbled
                return None
            for fd in fds:
                os.close(fd)
            if record is None:
                return None
            for mark in record.marks:
                try:
                    self._accept(mark)
                except ProtocolError:
                    pass
            if record.tag == Record.FAIL:
                return self._failure(record)

    def _note(self, phase: Phase, ts: int) -> None:
        self.last_phase = phase
        seconds = (ts - self.t0) / 1e9
        self.phases.append((phase, seconds))
        if self.on_phase is not None:
            self.on_phase(phase, seconds)

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

    def acknowledge(self, phase: Phase) -> None:
        """Tell PID 1 that the supervisor's step for ``phase`` is done."""
        try:
            self.sock.send(encode_pid1(Pid1Record(Record.ACK, int(phase))))
        except (BrokenPipeError, ConnectionResetError):
            pass  # PID 1 is gone; the next read reports how it ended

    # -- exit -----------------------------------------------------------------
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
    def start_stop(self, grace_period: float) -> bool:
        """Begin the supervisor's stop of a PID 1 that has not exited.

        SIGTERM goes only to a payload that runs and handles it (a PID 1
        ignores what it has no handler for), and only with a grace period.

        Returns:
            whether to wait up to ``grace_period`` for the exit before SIGKILL.
        """
        self.stopped_by_us = True
        if self.running and grace_period > 0 and self.handles_signal(signal.SIGTERM):
            self.send_signal(signal.SIGTERM)
            return True
        return False

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
