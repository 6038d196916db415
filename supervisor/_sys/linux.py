"""Thin wrappers over the Linux calls that :mod:`os` lacks on Python 3.11.

Every wrapper raises :class:`OSError` whose message names the call and its
arguments, for example ``mount('proc', '/newroot/proc', 'proc',
MS_NOSUID|MS_NODEV|MS_NOEXEC, None) failed: Operation not permitted``, so a
setup failure reported from inside a container says exactly what was tried.

The module is safe to use in a process that has just been cloned: it holds no
locks, and it resolves every libc symbol at import time, before any fork.
"""

from __future__ import annotations

import ctypes
import functools
import os
import time
from typing import Any

from . import constants as c

_libc = ctypes.CDLL(None, use_errno=True)
# clone(2) with fork semantics must run with the GIL held: a PyDLL call does
# not release it, so the child wakes up as the only thread, owning the GIL.
_pylibc = ctypes.PyDLL(None, use_errno=True)

_syscall = _libc.syscall
_syscall.restype = ctypes.c_long
_syscall_gil = _pylibc.syscall
_syscall_gil.restype = ctypes.c_long

_mount = _libc.mount
_mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
_mount.restype = ctypes.c_int
_umount2 = _libc.umount2
_umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
_umount2.restype = ctypes.c_int
_unshare = _libc.unshare
_unshare.argtypes = [ctypes.c_int]
_unshare.restype = ctypes.c_int
_setns = _libc.setns
_setns.argtypes = [ctypes.c_int, ctypes.c_int]
_setns.restype = ctypes.c_int
_prctl = _libc.prctl
_prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
_prctl.restype = ctypes.c_int
_sethostname = _libc.sethostname
_sethostname.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
_sethostname.restype = ctypes.c_int


def _fail(call: str, *args: Any) -> OSError:
    err = ctypes.get_errno()
    shown = ", ".join(a if isinstance(a, str) and a.startswith("MS_") else repr(a) for a in args)
    return OSError(err, f"{call}({shown}) failed: {os.strerror(err)}")


def _b(path: str | None) -> bytes | None:
    return None if path is None else os.fsencode(path)


class _MountAttr(ctypes.Structure):
    _fields_ = [
        ("attr_set", ctypes.c_uint64),
        ("attr_clr", ctypes.c_uint64),
        ("propagation", ctypes.c_uint64),
        ("userns_fd", ctypes.c_uint64),
    ]


def clone_fork(flags: int) -> tuple[int, int]:
    """clone(2) with fork semantics and ``CLONE_PIDFD``.

    Args:
        flags: ``CLONE_*`` flags; ``CLONE_PIDFD`` and ``SIGCHLD`` are added.

    Returns:
        ``(0, -1)`` in the child; ``(pid, pidfd)`` in the parent. The pidfd is
        close-on-exec and refers to the child race-free.

    Raises:
        OSError: the kernel refused (naming the flags).
    """
    pidfd = ctypes.c_int(-1)
    full = flags | c.CLONE_PIDFD | c.SIGCHLD
    pid = _syscall_gil(
        ctypes.c_long(c.SYS_CLONE),
        ctypes.c_ulong(full),
        ctypes.c_void_p(0),
        ctypes.byref(pidfd),
        ctypes.c_void_p(0),
        ctypes.c_ulong(0),
    )
    if pid < 0:
        raise _fail("clone", hex(full))
    return int(pid), (pidfd.value if pid else -1)


class _CloneArgs(ctypes.Structure):
    """``struct clone_args`` (<linux/sched.h>), up to ``cgroup``."""

    _fields_ = [
        ("flags", ctypes.c_uint64),
        ("pidfd", ctypes.c_uint64),
        ("child_tid", ctypes.c_uint64),
        ("parent_tid", ctypes.c_uint64),
        ("exit_signal", ctypes.c_uint64),
        ("stack", ctypes.c_uint64),
        ("stack_size", ctypes.c_uint64),
        ("tls", ctypes.c_uint64),
        ("set_tid", ctypes.c_uint64),
        ("set_tid_size", ctypes.c_uint64),
        ("cgroup", ctypes.c_uint64),
    ]


def clone3_into_cgroup(flags: int, cgroup_fd: int) -> tuple[int, int]:
    """clone3(2) with fork semantics, ``CLONE_PIDFD`` and ``CLONE_INTO_CGROUP``.

    The child starts in the cgroup v2 directory ``cgroup_fd`` refers to: no
    migration afterwards (which would wait for an RCU grace period, and
    leaves a window in which the child is outside its cgroup).

    Args:
        flags: ``CLONE_*`` flags; ``CLONE_PIDFD`` and ``CLONE_INTO_CGROUP`` are added.
        cgroup_fd: an open cgroup v2 directory.

    Returns:
        As :func:`clone_fork`.

    Raises:
        OSError: the kernel refused (naming the flags and fd); ``ENOSYS`` or
            ``E2BIG`` where clone3 or the field is unknown (or filtered).
    """
    pidfd = ctypes.c_int(-1)
    full = flags | c.CLONE_PIDFD | c.CLONE_INTO_CGROUP
    args = _CloneArgs(flags=full, pidfd=ctypes.addressof(pidfd), exit_signal=c.SIGCHLD, cgroup=cgroup_fd)
    pid = _syscall_gil(ctypes.c_long(c.SYS_CLONE3), ctypes.byref(args), ctypes.c_size_t(ctypes.sizeof(args)))
    if pid < 0:
        raise _fail("clone3", hex(full), f"cgroup={cgroup_fd}")
    return int(pid), (pidfd.value if pid else -1)


def mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    """mount(2).

    Raises:
        OSError: naming source, target, type, flags and data.
    """
    if _mount(_b(source), _b(target), _b(fstype), flags, _b(data)) != 0:
        raise _fail("mount", source, target, fstype, c.mount_flag_names(flags), data)


def umount2(target: str, flags: int) -> None:
    """umount2(2).

    Raises:
        OSError: naming the target and flags.
    """
    if _umount2(_b(target), flags) != 0:
        raise _fail("umount2", target, flags)


def pivot_root(new_root: str, put_old: str) -> None:
    """pivot_root(2).

    Raises:
        OSError: naming both paths.
    """
    if _syscall(ctypes.c_long(c.SYS_PIVOT_ROOT), _b(new_root), _b(put_old)) != 0:
        raise _fail("pivot_root", new_root, put_old)


def mount_setattr(path: str, attr_set: int, *, recursive: bool = True, dirfd: int = c.AT_FDCWD) -> None:
    """mount_setattr(2): add mount attributes, recursively by default.

    Raises:
        OSError: naming the path and attributes.
    """
    attr = _MountAttr(attr_set, 0, 0, 0)
    flags = c.AT_RECURSIVE if recursive else 0
    res = _syscall(
        ctypes.c_long(c.SYS_MOUNT_SETATTR),
        ctypes.c_int(dirfd),
        _b(path),
        ctypes.c_uint(flags),
        ctypes.byref(attr),
        ctypes.c_size_t(ctypes.sizeof(attr)),
    )
    if res != 0:
        raise _fail("mount_setattr", path, hex(attr_set), flags)


def unshare(flags: int) -> None:
    """unshare(2).

    Raises:
        OSError: naming the flags.
    """
    if _unshare(flags) != 0:
        raise _fail("unshare", hex(flags))


def setns(fd: int, nstype: int) -> None:
    """setns(2).

    Raises:
        OSError: naming the fd and type.
    """
    if _setns(fd, nstype) != 0:
        raise _fail("setns", fd, hex(nstype))


def set_name(name: bytes) -> None:
    """prctl(PR_SET_NAME): the calling thread's ``comm`` (15 bytes at most).

    Raises:
        OSError: naming the call and the name.
    """
    buf = ctypes.create_string_buffer(name[:15])
    if _prctl(c.PR_SET_NAME, ctypes.addressof(buf), 0, 0, 0) < 0:
        raise _fail("prctl", "PR_SET_NAME", name)


def comm(pid: int) -> bytes:
    """The name of process ``pid`` (``/proc/<pid>/comm``; a zombie keeps it).

    Raises:
        OSError: ``FileNotFoundError`` once the process is reaped; another
            error if ``/proc`` hides it.
    """
    with open(f"/proc/{pid}/comm", "rb") as f:
        return f.read().rstrip(b"\n")


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


def prctl(option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> int:
    """prctl(2).

    Returns:
        The call's non-negative result.

    Raises:
        OSError: naming the option and arguments.
    """
    res = _prctl(option, arg2, arg3, arg4, arg5)
    if res < 0:
        raise _fail("prctl", option, arg2, arg3, arg4, arg5)
    return int(res)


def sethostname(name: str) -> None:
    """sethostname(2).

    Raises:
        OSError: naming the hostname.
    """
    raw = name.encode()
    if _sethostname(raw, len(raw)) != 0:
        raise _fail("sethostname", name)


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


def close_range(first: int, last: int = 0xFFFFFFFF, flags: int = 0) -> None:
    """close_range(2).

    Raises:
        OSError: naming the range and flags.
    """
    if _syscall(ctypes.c_long(c.SYS_CLOSE_RANGE), ctypes.c_uint(first), ctypes.c_uint(last), ctypes.c_uint(flags)) != 0:
        raise _fail("close_range", first, last, flags)


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def capget() -> tuple[int, int, int]:
    """capget(2) of the calling thread, with ``_LINUX_CAPABILITY_VERSION_3``.

    Returns:
        ``(effective, permitted, inheritable)`` as 64-bit masks.

    Raises:
        OSError: naming the call.
    """
    header = _CapHeader(c.LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    if _syscall(ctypes.c_long(c.SYS_CAPGET), ctypes.byref(header), ctypes.byref(data)) != 0:
        raise _fail("capget", "_LINUX_CAPABILITY_VERSION_3", 0)
    return (
        data[0].effective | (data[1].effective << 32),
        data[0].permitted | (data[1].permitted << 32),
        data[0].inheritable | (data[1].inheritable << 32),
    )


def capset(effective: int, permitted: int, inheritable: int) -> None:
    """capset(2) of the calling thread, with ``_LINUX_CAPABILITY_VERSION_3``.

    Args:
        effective: 64-bit mask (bit n = capability n).
        permitted: 64-bit mask.
        inheritable: 64-bit mask.

    Raises:
        OSError: naming the three masks (EPERM when adding to permitted, or
            to inheritable beyond the bounding set).
    """
    header = _CapHeader(c.LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    for i in (0, 1):
        shift = 32 * i
        data[i].effective = (effective >> shift) & 0xFFFFFFFF
        data[i].permitted = (permitted >> shift) & 0xFFFFFFFF
        data[i].inheritable = (inheritable >> shift) & 0xFFFFFFFF
    if _syscall(ctypes.c_long(c.SYS_CAPSET), ctypes.byref(header), ctypes.byref(data)) != 0:
        raise _fail("capset", hex(effective), hex(permitted), hex(inheritable))


class _SockFilter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8), ("k", ctypes.c_uint32)]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


class SeccompProgram:
    """A classic BPF program (``struct sock_fprog``) ready for :func:`seccomp_set_mode_filter`.

    Built before the filter is loaded, so that loading it allocates nothing.

    Args:
        bpf: the raw program, ``struct sock_filter`` records (8 bytes each,
            native byte order) as written by libseccomp's ``seccomp_export_bpf``.
        flags: ``SECCOMP_FILTER_FLAG_*`` to load it with.

    Raises:
        ValueError: empty, not a whole number of instructions, or longer than
            ``BPF_MAXINSNS``.
    """

    def __init__(self, bpf: bytes, flags: int = 0) -> None:
        self.flags = flags
        size = ctypes.sizeof(_SockFilter)
        count = len(bpf) // size
        if not bpf or len(bpf) % size or count > c.BPF_MAXINSNS:
            raise ValueError(f"not a seccomp BPF program: {len(bpf)} bytes")
        self.count = count
        self._buffer = ctypes.create_string_buffer(bpf, len(bpf))
        self._prog = _SockFprog(count, ctypes.addressof(self._buffer))

    def pointer(self) -> Any:
        """A ctypes reference to the ``struct sock_fprog``."""
        return ctypes.byref(self._prog)


def seccomp_set_mode_filter(program: SeccompProgram) -> None:
    """seccomp(SECCOMP_SET_MODE_FILTER, program.flags, &prog): install a filter.

    Needs ``no_new_privs`` (or CAP_SYS_ADMIN in the user namespace).

    Args:
        program: the prepared program, with its flags.

    Raises:
        OSError: naming the call, the flags and the program's length.
    """
    res = _syscall(
        ctypes.c_long(c.SYS_SECCOMP),
        ctypes.c_uint(c.SECCOMP_SET_MODE_FILTER),
        ctypes.c_uint(program.flags),
        program.pointer(),
    )
    if res != 0:
        raise _fail("seccomp", c.SECCOMP_SET_MODE_FILTER, program.flags, f"<{program.count} instructions>")
