"""Thin wrappers over the Linux calls that :mod:`os` lacks on Python 3.11.

Every wrapper raises :class:`OSError` whose message names the call and its
arguments, for example ``setns(7, 0x40000000) failed: Invalid argument``.
What runs in PID 1 is C (``supervisor/_child``); these serve the supervisor.
"""

from __future__ import annotations

import functools
import os
import signal
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def _fail(call: str, err: int, *args: Any) -> OSError:
    shown = ", ".join(repr(a) for a in args)
    return OSError(err, f"{call}({shown}) failed: {os.strerror(err)}")


def setns(fd: int, nstype: int) -> None:
    """setns(2) (``os.setns`` from Python 3.12; libc's through ctypes before).

    Raises:
        OSError: naming the fd and type.
    """
    import ctypes

    if _libc_setns()(fd, nstype) != 0:
        raise _fail("setns", ctypes.get_errno(), fd, hex(nstype))


@functools.cache
def _libc_setns() -> Any:
    """libc's setns, loaded on first use: importing ctypes costs a command line some 2.5 ms."""
    import ctypes

    setns = ctypes.CDLL(None, use_errno=True).setns
    setns.argtypes = [ctypes.c_int, ctypes.c_int]
    setns.restype = ctypes.c_int
    return setns


def real_dir(path: str) -> str | None:
    """The resolved path of the directory ``path`` (symlinks followed), or
    ``None`` if it is not an existing directory.

    What ``os.path.realpath`` and ``os.path.isdir`` say together, with one
    ``open`` and one ``readlink`` of its ``/proc/self/fd`` entry instead of an
    ``lstat`` per path component (without ``/proc``: those).
    """
    try:
        fd = os.open(path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        resolved = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        resolved = os.path.realpath(path)
    finally:
        os.close(fd)
    return resolved if resolved.startswith("/") else os.path.realpath(path)


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


def kernel_at_least(major: int, minor: int) -> bool:
    """Whether the running kernel is Linux ``major.minor`` or later (from ``uname``'s
    release, such as ``6.1.0-57-amd64``)."""
    have = []
    for part in os.uname().release.split(".")[:2]:
        digits = "".join(ch for ch in part.split("-", 1)[0] if ch.isdigit()) or "0"
        have.append(int(digits))
    return tuple(have) >= (major, minor)


@functools.lru_cache(maxsize=1)
def exec_enters_time_namespace() -> bool:
    """Whether ``execve`` moves a process into the time namespace it unshared
    for its children (Linux 6.2+).

    Before that, the exec'd program stays in the old namespace while its
    children go to the new one, and such a program cannot ``vfork`` (the
    kernel refuses ``CLONE_VM`` across time namespaces, so ``posix_spawn``
    and ``dash`` fail): there, only a forked payload (``Spec.init``) gets a
    time namespace.
    """
    return kernel_at_least(6, 2)


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
    try:
        signal.pidfd_send_signal(pidfd, sig)
    except OSError as exc:
        raise _fail("pidfd_send_signal", exc.errno or 0, pidfd, sig) from None
