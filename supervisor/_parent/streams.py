"""Byte streams over pipe file descriptors (the running container's stdio)."""

from __future__ import annotations

import os

import anyio
import anyio.abc
import anyio.lowlevel


class _FdStream:
    """An owned, non-blocking pipe end."""

    def __init__(self, fd: int) -> None:
        os.set_blocking(fd, False)
        self._fd = fd

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
        while True:
            if self._fd < 0:
                raise anyio.ClosedResourceError
            try:
                data = os.read(self._fd, max_bytes)
            except BlockingIOError:
                await anyio.wait_readable(self._fd)
                continue
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
        view = memoryview(item)
        while view:
            if self._fd < 0:
                raise anyio.ClosedResourceError
            try:
                n = os.write(self._fd, view)
            except BlockingIOError:
                await anyio.wait_writable(self._fd)
                continue
            except BrokenPipeError as exc:
                raise anyio.BrokenResourceError from exc
            view = view[n:]
