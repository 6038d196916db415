"""Pipe I/O in the supervisor: the container's stdio as streams, and relays.

Two primitives, :func:`read_some` and :func:`write_all`, wait through anyio
(so they work under trio and asyncio) on non-blocking descriptors; the byte
streams of :class:`~supervisor.Container` and the relays of
:meth:`~supervisor.Supervisor.run` (capture, input, terminal) are built on them.
"""

from __future__ import annotations

import contextlib
import os
import select
from collections.abc import AsyncIterator, Sequence

import anyio
import anyio.abc
import anyio.lowlevel


async def read_some(fd: int, max_bytes: int = 65536) -> bytes:
    """The next chunk from non-blocking ``fd``; ``b""`` at end-of-file.

    Raises:
        anyio.ClosedResourceError: ``fd`` was closed (``notify_closing``) while waiting.
        OSError: the read failed (EIO on a pty master whose slave is gone).
    """
    while True:
        try:
            return os.read(fd, max_bytes)
        except BlockingIOError:
            await anyio.wait_readable(fd)


async def write_all(fd: int, data: bytes) -> None:
    """Write all of ``data`` to non-blocking ``fd``.

    Raises:
        anyio.ClosedResourceError: ``fd`` was closed while waiting.
        OSError: the write failed (BrokenPipeError: the reader went away).
    """
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view) :]
        except BlockingIOError:
            await anyio.wait_writable(fd)


class _FdStream:
    """An owned, non-blocking pipe end."""

    def __init__(self, fd: int) -> None:
        os.set_blocking(fd, False)
        self._fd = fd

    def _checked_fd(self) -> int:
        if self._fd < 0:
            raise anyio.ClosedResourceError
        return self._fd

    async def aclose(self) -> None:
        """Close the pipe (for a write end, the payload then sees end-of-file)."""
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            anyio.notify_closing(fd)
            os.close(fd)
        await anyio.lowlevel.checkpoint()


class FdReceiveStream(_FdStream, anyio.abc.ByteReceiveStream):
    """Read end of a pipe as an anyio byte stream (works under trio and asyncio)."""

    async def receive(self, max_bytes: int = 65536) -> bytes:
        """Next chunk of bytes.

        Raises:
            anyio.EndOfStream: the container closed its end (or exited).
            anyio.ClosedResourceError: this stream was closed.
        """
        data = await read_some(self._checked_fd(), max_bytes)
        if not data:
            raise anyio.EndOfStream
        return data


class FdSendStream(_FdStream, anyio.abc.ByteSendStream):
    """Write end of a pipe as an anyio byte stream."""

    async def send(self, item: bytes) -> None:
        """Write all of ``item``.

        Raises:
            anyio.BrokenResourceError: the container closed its stdin (or exited).
            anyio.ClosedResourceError: this stream was closed.
        """
        try:
            await write_all(self._checked_fd(), item)
        except BrokenPipeError as exc:
            raise anyio.BrokenResourceError from exc


# -- relays used by Supervisor.run --------------------------------------------


async def read_chunks(fd: int) -> AsyncIterator[bytes]:
    """Read ``fd`` until end-of-file (EIO on a pty master, or closing it, also ends it)."""
    os.set_blocking(fd, False)
    while True:
        try:
            data = await read_some(fd)
        except (anyio.ClosedResourceError, OSError):
            return
        if not data:
            return
        yield data


class Capture:
    """A captured output: every byte, or only the last ``limit`` of them.

    Bytes beyond the limit are dropped from the start as new ones come (the
    end of a log says how it ended), and counted in :attr:`dropped`; the
    payload is never slowed or blocked by the limit.
    """

    def __init__(self, limit: int | None = None) -> None:
        self.limit = limit
        self.chunks: list[bytes] = []
        self.size = 0
        self.dropped = 0

    def append(self, data: bytes) -> None:
        """Keep ``data`` (the newest bytes), dropping the oldest beyond the limit."""
        self.chunks.append(data)
        self.size += len(data)
        if self.limit is None or self.size <= self.limit:
            return
        excess = self.size - self.limit
        self.dropped += excess
        self.size = self.limit
        while excess:
            first = self.chunks[0]
            if len(first) <= excess:
                self.chunks.pop(0)
                excess -= len(first)
            else:
                self.chunks[0] = first[excess:]
                excess = 0

    def value(self) -> bytes:
        """The bytes kept."""
        return b"".join(self.chunks)


async def drain(fd: int, chunks: Capture) -> None:
    """Read a pipe (or pty master) to end-of-file into ``chunks``."""
    async for data in read_chunks(fd):
        chunks.append(data)


class Drained:
    """One container's captured pipes in a :class:`Drainer`: :attr:`done` is
    set once each is at end-of-file (or the drainer stopped)."""

    def __init__(self) -> None:
        self.fds: list[int] = []
        self.done = anyio.Event()


class Drainer:
    """Reads the captured stdout and stderr of every container of one supervisor.

    All their pipes share one epoll set, whose descriptor one task waits on:
    a task, a task group and an epoll set per container would cost each of
    them more than its own start-up's share of the event loop. The task
    starts with the first capture and ends with the supervisor's task group:
    a run that outlives it (started outside the supervisor's block and past
    its exit's wait) keeps the output read until then. A read error ends
    that pipe, as in :func:`read_chunks`.

    Args:
        task_group: where the task runs (the supervisor's).
    """

    def __init__(self, task_group: anyio.abc.TaskGroup) -> None:
        self._tg = task_group
        self._ready: select.epoll | None = None
        self._pipes: dict[int, tuple[Capture, Drained]] = {}

    def add(self, outputs: Sequence[tuple[int, Capture]]) -> Drained:
        """Read each pipe to end-of-file into its capture, from now on.

        Args:
            outputs: (read end, capture) pairs; the read ends stay the
                caller's, who must :meth:`discard` them before closing them.

        Returns:
            what the caller awaits (:attr:`Drained.done`).
        """
        first = self._ready is None  # no task runs: this capture starts it
        ready = self._ready = select.epoll() if first else self._ready
        assert ready is not None
        drained = Drained()
        try:
            for fd, capture in outputs:
                os.set_blocking(fd, False)
                ready.register(fd, select.EPOLLIN)
                self._pipes[fd] = (capture, drained)
                drained.fds.append(fd)
            if first:
                self._tg.start_soon(self._drain_all, ready)
        except BaseException:
            self.discard(drained)
            if first:
                self._ready = None  # no task owns it
                ready.close()
            raise
        return drained

    def discard(self, drained: Drained) -> None:
        """Stop reading ``drained``'s pipes (idempotent); what was read is kept."""
        for fd in drained.fds:
            entry = self._pipes.get(fd)
            if entry is not None and entry[1] is drained:  # the number is still its pipe
                del self._pipes[fd]
                self._unregister(fd)
        drained.fds.clear()

    def _unregister(self, fd: int) -> None:
        if self._ready is not None:
            try:
                self._ready.unregister(fd)
            except OSError:
                pass  # not in the set (any more): nothing to stop

    async def _drain_all(self, ready: select.epoll) -> None:
        """**Cancellation:** cancellable (with the supervisor's task group): every
        pending capture is then marked done with what it has, and the epoll set
        closed."""
        pipes = self._pipes
        try:
            while True:
                await anyio.wait_readable(ready.fileno())
                for fd, _events in ready.poll(0):
                    entry = pipes.get(fd)
                    if entry is None:
                        continue
                    try:
                        data = os.read(fd, 65536)
                    except BlockingIOError:
                        continue
                    except OSError:
                        data = b""
                    capture, drained = entry
                    if data:
                        capture.append(data)
                        continue
                    self._unregister(fd)
                    del pipes[fd]
                    drained.fds.remove(fd)
                    if not drained.fds:
                        drained.done.set()
        finally:
            for _capture, drained in pipes.values():
                drained.fds.clear()
                drained.done.set()
            pipes.clear()
            self._ready = None
            ready.close()


async def write_or_stop(fd: int, data: bytes) -> bool:
    """:func:`write_all`, returning False instead of raising if the reader went away."""
    try:
        await write_all(fd, data)
    except (anyio.ClosedResourceError, OSError):
        return False
    return True


async def copy(src: int, dst: int) -> None:
    """Relay bytes from ``src`` to ``dst`` until either side ends."""
    # The caller's fds may be a shared terminal: restore their blocking mode.
    saved = {fd: os.get_blocking(fd) for fd in (src, dst)}
    os.set_blocking(dst, False)
    try:
        async for data in read_chunks(src):
            if not await write_or_stop(dst, data):
                return
    finally:
        for fd, blocking in saved.items():
            with contextlib.suppress(OSError):
                os.set_blocking(fd, blocking)


async def feed(fd: int, data: bytes) -> None:
    """Write ``data`` to a pipe, then close it (a reader that left is no error)."""
    os.set_blocking(fd, False)
    try:
        await write_or_stop(fd, data)
    finally:
        os.close(fd)


def relay_terminal(
    tg: anyio.abc.TaskGroup,
    master: int,
    capture: Capture | None,
    output: int,
    input: bytes | None,
    stdin: int | None,
) -> anyio.CancelScope:
    """Connect a container's terminal to the caller's descriptors or to a capture.

    Args:
        tg: where the relays run.
        master: the terminal's master side.
        capture: where its output goes, or ``None``: to ``output``.
        output: the caller's descriptor for the output when not captured.
        input: bytes typed into the terminal, or
        stdin: the caller's descriptor relayed into it (or neither).

    Returns:
        the scope of the input relay, to cancel when the payload has ended
        (the caller's stdin, a terminal, may never reach end of file).
    """
    if capture is not None:
        tg.start_soon(drain, master, capture)
    else:
        tg.start_soon(copy, master, output)
    scope = anyio.CancelScope()

    async def relay_input() -> None:
        with scope:
            if input is not None:
                await write_or_stop(master, input)
            elif stdin is not None:
                await copy(stdin, master)

    tg.start_soon(relay_input)
    return scope
