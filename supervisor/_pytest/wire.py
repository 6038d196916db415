"""What the plugin and a sandbox's worker say to each other: JSON lines on a socketpair.

The host end stays in the pytest process; the other end is the worker's
fd 3 (``pass_fds``). Every message is one JSON object on one line, with an
``op``:

========== ========= ==========================================================
op         from      meaning
========== ========= ==========================================================
``ready``  worker    collected ``count`` tests; waits for ``run``
``run``    host      run ``nodeid``; ``next`` is the next test of the same
                     sandbox unit (the fork keeps its fixtures for it), or
                     ``null`` (the fork tears everything down and ends);
                     ``timeout`` seconds, or ``null``
``report`` fork      a test report, as ``pytest_report_to_serializable`` made it
``warning`` fork     a warning pytest recorded (``pytest_warning_recorded``)
``done``   fork      the test's reports are all sent
``exit``   worker    a fork ended: ``status`` (its exit code) or ``signal``
========== ========= ==========================================================

The reports travel through pytest's own public serialisation hooks, so they
come back as the same report objects an in-process run makes.
"""

from __future__ import annotations

import json
import os
import select
import socket
import time
from typing import Any

#: The worker's end of the socketpair, in the sandbox.
WORKER_FD = 3


class Closed(EOFError):
    """The other end closed the socket (the sandbox ended, or pytest did)."""


class Timeout(TimeoutError):
    """No message came before the deadline."""


def send(fd: int, message: dict[str, Any]) -> None:
    """Write one message (blocking until all of it is written).

    Raises:
        Closed: the other end is gone.
    """
    data = json.dumps(message, separators=(",", ":")).encode() + b"\n"
    view = memoryview(data)
    while view:
        try:
            n = os.write(fd, view)
        except (BrokenPipeError, ConnectionResetError):
            raise Closed("the other end of the sandbox's socket is gone") from None
        view = view[n:]


class Reader:
    """Reads messages from one descriptor, a line at a time."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._buffer = bytearray()

    def receive(self, deadline: float | None = None) -> dict[str, Any]:
        """The next message.

        Args:
            deadline: a :func:`time.monotonic` time to give up at, or ``None``.

        Raises:
            Closed: end of file before a whole message.
            Timeout: the deadline passed.
        """
        while True:
            end = self._buffer.find(b"\n")
            if end >= 0:
                line = bytes(self._buffer[:end])
                del self._buffer[: end + 1]
                message: dict[str, Any] = json.loads(line)
                return message
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0 or not select.select([self._fd], [], [], left)[0]:
                    if time.monotonic() >= deadline:
                        raise Timeout()
                    continue
            try:
                chunk = os.read(self._fd, 1 << 16)
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                raise Closed("the sandbox's socket was closed")
            self._buffer += chunk


def socketpair() -> tuple[socket.socket, socket.socket]:
    """A connected pair (host end, worker end), close-on-exec both."""
    return socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
