"""The supervisor's side of the fork server: start it, talk to it, stop it."""

from __future__ import annotations

import array
import os
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.lowlevel

from .._errors import ForkServerError
from .._protocol import SpawnConfig, Tag, encode, recv

#: Loads the child-side modules without executing supervisor/__init__.py, so the
#: fork server never imports anyio, trio or pyroute2 (see _child/__init__.py).
_BOOTSTRAP = (
    "import sys, types\n"
    "pkg = types.ModuleType('supervisor')\n"
    "pkg.__path__ = [sys.argv[2]]\n"
    "sys.modules['supervisor'] = pkg\n"
    "from supervisor._child.forkserver import main\n"
    "main(int(sys.argv[1]))\n"
)

_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclass
class Slot:
    """What the fork server has told us about one container."""

    spawned: anyio.Event = field(default_factory=anyio.Event)
    exited: anyio.Event = field(default_factory=anyio.Event)
    pid: int = 0
    pidfd: int = -1
    spawn_error: tuple[int, str] | None = None
    exit_code: int = 0  # waitid si_code (CLD_EXITED, CLD_KILLED, CLD_DUMPED)
    exit_status: int = 0
    #: False if PID 1 died before ``execve`` (it still had its setup name).
    execd: bool = True


class ForkServerClient:
    """Starts the fork server and multiplexes its replies to containers.

    **Cancellation:** :meth:`spawn` shields its wait for the fork server's
    reply, so a caller cancelled mid-spawn still gets the pidfd it needs to
    stop and reap the container.
    """

    def __init__(self) -> None:
        self._sock: socket.socket | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._slots: dict[str, Slot] = {}
        self._broken: str | None = None
        self._send_lock = anyio.Lock()
        self.pid = 0

    async def start(self, startup_timeout: float = 30.0) -> None:
        """Start the fork server and wait for its ``ready`` record.

        Raises:
            ForkServerError: it failed to start or to say ready in time.

        **Cancellation:** the fork server is stopped and reaped (shielded)
        before the cancellation propagates.
        """
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        try:
            # Popen from this (the event loop's) thread, never from a worker
            # thread: a short-lived spawning thread is a PDEATHSIG trap
            # (peers.md §0). Its own session: the terminal's Ctrl-C is ours.
            self._proc = subprocess.Popen(
                [sys.executable, "-I", "-S", "-c", _BOOTSTRAP, str(child.fileno()), _PACKAGE_DIR],
                pass_fds=(child.fileno(),),
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        except OSError as exc:
            parent.close()
            raise ForkServerError(f"cannot start the fork server: {exc}") from exc
        finally:
            child.close()
        parent.setblocking(False)
        self._sock = parent
        try:
            with anyio.fail_after(startup_timeout):
                record = await self._recv_one()
        except TimeoutError:
            await self.aclose()
            raise ForkServerError(f"the fork server did not start within {startup_timeout} s") from None
        except BaseException:  # cancelled while it starts: no fork server may outlive us
            await self.aclose()
            raise
        if record is None or record.get("t") != Tag.READY:
            await self.aclose()
            raise ForkServerError(f"the fork server failed to start (said {record!r})")
        self.pid = int(record["pid"])

    async def _recv_one(self) -> dict[str, Any] | None:
        assert self._sock is not None
        while True:
            try:
                record, fds = recv(self._sock)
            except BlockingIOError:
                await anyio.wait_readable(self._sock)
                continue
            for fd in fds:
                os.close(fd)
            return record

    async def serve(self) -> None:
        """Dispatch the fork server's records until it goes away.

        Run as a task for the supervisor's lifetime.

        **Cancellation:** shielded: it ends only when :meth:`aclose` closes
        the socket (or the fork server goes away), so that runs that are
        being cancelled, the whole supervisor's included, still get their
        spawn replies and exit statuses while they stop and reap.
        """
        sock = self._sock
        if sock is None:
            return  # closed before this task first ran
        with anyio.CancelScope(shield=True):
            await self._serve(sock)

    async def _serve(self, sock: socket.socket) -> None:
        try:
            while True:
                try:
                    record, fds = recv(sock)
                except BlockingIOError:
                    try:
                        await anyio.wait_readable(sock)
                    except anyio.ClosedResourceError:
                        return
                    continue
                except (OSError, ValueError) as exc:
                    self._break(f"fork server socket error: {exc}")
                    return
                if record is None:
                    self._break("the fork server exited")
                    return
                self._dispatch(record, fds)
        finally:
            if self._broken is None:
                self._break("the supervisor stopped listening to the fork server")

    def _dispatch(self, record: dict[str, Any], fds: list[int]) -> None:
        slot = self._slots.get(str(record.get("id")))
        tag = record["t"]
        if slot is None:
            for fd in fds:
                os.close(fd)
            return
        if tag == Tag.SPAWNED and fds:
            slot.pid = int(record["pid"])
            slot.pidfd = fds[0]
            for fd in fds[1:]:
                os.close(fd)
            slot.spawned.set()
        elif tag == Tag.SPAWN_FAILED:
            slot.spawn_error = (int(record.get("errno") or 0), str(record.get("message")))
            slot.spawned.set()
            slot.exited.set()
        elif tag == Tag.EXITED:
            slot.exit_code = int(record["code"])
            slot.exit_status = int(record["status"])
            slot.execd = bool(record.get("execd", True))
            slot.spawned.set()
            slot.exited.set()
        else:
            for fd in fds:
                os.close(fd)

    def _break(self, why: str) -> None:
        self._broken = why
        for slot in self._slots.values():
            slot.spawned.set()
            slot.exited.set()

    @property
    def broken(self) -> str | None:
        """Why the fork server is unusable, or ``None`` while it works."""
        return self._broken

    async def spawn(self, cid: str, config: SpawnConfig, fds: list[int]) -> Slot:
        """Ask for a container; return its slot once the fork server answered.

        Raises:
            ForkServerError: the fork server is gone.
            OSError: clone() failed (errno and message from the fork server).
        """
        if self._broken is not None or self._sock is None:
            raise ForkServerError(self._broken or "the fork server is not running")
        slot = Slot()
        self._slots[cid] = slot
        data = encode({"t": Tag.SPAWN, "id": cid, "config": config.to_wire()})
        anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))]
        async with self._send_lock:
            while True:
                try:
                    self._sock.sendmsg([data], anc)
                    break
                except BlockingIOError:
                    await anyio.wait_writable(self._sock)
                except OSError as exc:
                    self._slots.pop(cid, None)
                    raise ForkServerError(f"cannot reach the fork server: {exc}") from exc
        # Shielded: once the request is sent, a container may exist, and only
        # this reply (immediate: the fork server answers right after clone)
        # gives us the pidfd needed to stop it. Without it a cancelled run
        # would orphan its container.
        with anyio.CancelScope(shield=True):
            await slot.spawned.wait()
        if slot.spawn_error is not None:
            self._slots.pop(cid, None)
            err, message = slot.spawn_error
            raise OSError(err, message)
        if slot.pidfd < 0:
            self._slots.pop(cid, None)
            raise ForkServerError(self._broken or "the fork server did not spawn the container")
        return slot

    def forget(self, cid: str) -> None:
        """Drop a container's slot (after its exit was consumed)."""
        slot = self._slots.pop(cid, None)
        if slot is not None and slot.pidfd >= 0:
            os.close(slot.pidfd)
            slot.pidfd = -1

    async def aclose(self) -> None:
        """Stop the fork server: it kills what is left, reaps, and exits.

        **Cancellation:** shielded; always waits for the fork server to exit.
        """
        with anyio.CancelScope(shield=True):
            proc = self._proc
            # Open the pidfd while the socket still holds its fd number: under
            # asyncio, the woken serve() task unregisters "its" fd number only
            # when it next runs, which would silently drop a wait on a pidfd
            # that reused that number (the fork server's exit then went
            # unnoticed for the whole 10 s timeout).
            pidfd = os.pidfd_open(proc.pid) if proc is not None else -1
            if self._sock is not None:
                # Wake the serve() task, and let it finish with the fd number,
                # before that number can be reused.
                anyio.notify_closing(self._sock)
                self._sock.close()
                self._sock = None
                await anyio.lowlevel.checkpoint()
            if proc is not None:
                try:
                    with anyio.move_on_after(10):
                        await anyio.wait_readable(pidfd)
                    if proc.poll() is None:
                        proc.kill()
                        await anyio.wait_readable(pidfd)
                finally:
                    os.close(pidfd)
                proc.wait()
                self._proc = None
            self._break(self._broken or "the fork server was stopped")
