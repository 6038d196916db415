"""The fork server: a small, single-threaded process that clones containers.

Why it exists: forking a process that runs trio, or any thread, can deadlock the
child (a lock held by another thread at fork time is never released; BenchExec
#435/#656) and costs more the bigger the parent is. This process is started once
per :class:`supervisor.Supervisor` as a fresh interpreter (``-I -S``), imports
only the standard library, the protocol and PID 1's C extension
(:mod:`supervisor._child._spawn`), freezes its heap, and then does nothing but
wait: for spawn requests from the supervisor, and for its
containers to exit.

It is the real parent of every container's PID 1 (clone with ``CLONE_PIDFD``),
so it reaps them race-free with ``waitid(P_PIDFD)`` and reports each exit status
to the supervisor. When the supervisor's socket reaches end-of-file (the
supervisor closed it, or died, even by SIGKILL), it kills every container it
still has and exits; each PID 1 also carries ``PR_SET_PDEATHSIG(SIGKILL)``
pointing at this single-threaded process, as a second line of defence.
"""

from __future__ import annotations

import errno
import gc
import os
import select
import signal
import socket
import sys
from typing import Any

from .._protocol import SETUP_COMM, SpawnConfig, Tag, recv, send
from .._sys import constants as c
from .._sys import linux
from . import _spawn


class ForkServer:
    """The fork server's state: the supervisor's socket and live containers."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.poller = select.poll()
        self.poller.register(sock.fileno(), select.POLLIN)
        self.children: dict[int, str] = {}  # pidfd -> container id

    def serve(self) -> None:
        """Run until the supervisor goes away."""
        try:
            send(self.sock, {"t": Tag.READY, "pid": os.getpid()})
        except (BrokenPipeError, ConnectionResetError):
            return  # the supervisor gave up on us (cancelled while we started)
        while True:
            try:
                events = self.poller.poll()
            except InterruptedError:  # pragma: no cover - PEP 475 retries
                continue
            for fd, _ev in events:
                if fd == self.sock.fileno():
                    if not self.handle_request():
                        self.shutdown()
                        return
                else:
                    self.reap(fd)

    def handle_request(self) -> bool:
        try:
            record, fds = recv(self.sock)
        except (OSError, ValueError):
            return False
        if record is None:
            return False
        if record["t"] == Tag.SPAWN:
            self.spawn(record, fds)
        else:
            for fd in fds:
                os.close(fd)
        return True

    def spawn(self, record: dict[str, Any], fds: list[int]) -> None:
        cid = str(record.get("id"))
        try:
            # Converted into PID 1's plan, then cloned, all in C: no Python
            # runs in the child (see supervisor/_child/spawn.c).
            pid, pidfd = _spawn.spawn(SpawnConfig.from_wire(record["config"]), fds)
        except (OSError, ValueError, TypeError, KeyError) as exc:
            # A refused clone, or a malformed request: it must not take the
            # fork server down.
            err = exc.errno if isinstance(exc, OSError) else errno.EINVAL
            send(self.sock, {"t": Tag.SPAWN_FAILED, "id": cid, "errno": err or 0, "message": str(exc)})
            return
        finally:
            for fd in fds:
                os.close(fd)
        self.children[pidfd] = cid
        self.poller.register(pidfd, select.POLLIN)
        send(self.sock, {"t": Tag.SPAWNED, "id": cid, "pid": pid}, [pidfd])

    def reap(self, pidfd: int) -> None:
        try:
            res = os.waitid(c.P_PIDFD, pidfd, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            res = None
        if res is None:
            return  # spurious wake-up; poll again
        # Still a zombie: its name tells whether it reached execve.
        try:
            execd = linux.comm(res.si_pid) != SETUP_COMM
        except OSError:
            execd = True  # unreadable: take it as the payload's own exit
        try:
            res = os.waitid(c.P_PIDFD, pidfd, os.WEXITED | os.WNOHANG) or res
        except ChildProcessError:
            pass
        cid = self.children.pop(pidfd, "?")
        # PID 1 ran its setup in our memory (CLONE_VM): its stack and plan
        # are freed once it exec'd or exited, as this one has.
        _spawn.collect()
        self.poller.unregister(pidfd)
        os.close(pidfd)
        record = {"t": Tag.EXITED, "id": cid, "code": res.si_code, "status": res.si_status, "execd": execd}
        try:
            send(self.sock, record)
        except OSError:
            pass

    def shutdown(self) -> None:
        """Kill and reap every container still alive (the supervisor is gone)."""
        for pidfd in list(self.children):
            try:
                linux.pidfd_send_signal(pidfd, signal.SIGKILL)
            except OSError:
                pass
        for pidfd in list(self.children):
            try:
                os.waitid(c.P_PIDFD, pidfd, os.WEXITED)
            except ChildProcessError:
                pass
            os.close(pidfd)
        self.children.clear()


def main(fd: int) -> None:
    """Entry point: serve the supervisor on inherited socket ``fd``."""
    # Ctrl-C belongs to the supervisor, which turns it into cancellation; we
    # also run in a session of our own, so the terminal never signals us.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sock = socket.socket(fileno=fd)
    sock.setblocking(True)
    # Freeze what we have: the collector then never touches these objects, so
    # cloned children do not dirty (copy) the pages that hold them.
    gc.collect()
    gc.freeze()
    gc.disable()
    ForkServer(sock).serve()
    sys.exit(0)
