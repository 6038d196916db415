"""Thin wrappers over the Linux calls that :mod:`os` lacks on Python 3.11.

Every wrapper raises :class:`OSError` whose message names the call and its
arguments, for example ``setns(7, 0x40000000) failed: Invalid argument``.
What runs in PID 1 is C (``supervisor/_child``); these serve the supervisor.
"""

from __future__ import annotations

import ctypes
import functools
import os
import time
from typing import Any

from . import constants as c

_libc = ctypes.CDLL(None, use_errno=True)

_syscall = _libc.syscall
_syscall.restype = ctypes.c_long
_setns = _libc.setns
_setns.argtypes = [ctypes.c_int, ctypes.c_int]
_setns.restype = ctypes.c_int


def _fail(call: str, *args: Any) -> OSError:
    err = ctypes.get_errno()
    shown = ", ".join(repr(a) for a in args)
    return OSError(err, f"{call}({shown}) failed: {os.strerror(err)}")


def setns(fd: int, nstype: int) -> None:
    """setns(2).

    Raises:
        OSError: naming the fd and type.
    """
    if _setns(fd, nstype) != 0:
        raise _fail("setns", fd, hex(nstype))


def comm(pid: int) -> bytes:
    """The name of process ``pid`` (``/proc/<pid>/comm``; a zombie keeps it).

    Raises:
        OSError: ``FileNotFoundError`` once the process is reaped; another
            error if ``/proc`` hides it.
    """
    fd = os.open(f"/proc/{pid}/comm", os.O_RDONLY | os.O_CLOEXEC)
    try:
        return os.read(fd, 64).rstrip(b"\n")  # at most 16 bytes (TASK_COMM_LEN)
    finally:
        os.close(fd)


@functools.lru_cache(maxsize=1)
def has_time_namespaces() -> bool:
    """Whether the running kernel has time namespaces (Linux 5.6+, ``CONFIG_TIME_NS``)."""
    return os.path.exists("/proc/self/ns/time")


@functools.lru_cache(maxsize=1)
def own_time_offsets() -> dict[str, int]:
    """Our clocks' offsets against the initial time namespace, in nanoseconds,
    by name (``monotonic``, ``boottime``).

    Read from ``/proc/self/timens_offsets``, which shows the namespace our
    children get: ours, unless this process unshared one without entering it.
    All zero outside a time namespace of our own; empty without time
    namespaces.
    """
    try:
        with open("/proc/self/timens_offsets") as f:
            text = f.read()
    except OSError:
        return {}
    names = {str(time.CLOCK_MONOTONIC): "monotonic", str(time.CLOCK_BOOTTIME): "boottime"}
    out = {}
    for line in text.splitlines():
        try:
            clock, seconds, nanoseconds = line.split()
            out[names.get(clock, clock)] = int(seconds) * 1_000_000_000 + int(nanoseconds)
        except ValueError:
            continue
    return out


def pidfd_send_signal(pidfd: int, sig: int) -> None:
    """pidfd_send_signal(2): signal a process by pidfd, never by a reusable PID.

    Raises:
        OSError: naming the fd and signal (ESRCH once the process has exited).
    """
    if (
        _syscall(ctypes.c_long(c.SYS_PIDFD_SEND_SIGNAL), ctypes.c_int(pidfd), ctypes.c_int(sig), None, ctypes.c_uint(0))
        != 0
    ):
        raise _fail("pidfd_send_signal", pidfd, sig)
