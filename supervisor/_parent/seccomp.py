"""Seccomp profiles, compiled once in the supervisor with libseccomp.

PID 1 never parses a profile: the supervisor builds the filter here with
libseccomp (through the ``pyseccomp`` binding, which has the API of libseccomp's
own ``seccomp`` module), exports it as classic BPF, and sends the bytes in the
config. Compiling is cached per profile (and, for a JSON file, per file
version and kept capability set), so a thousand containers cost one compile.

Profiles (:attr:`supervisor.Spec.seccomp`):

``"default"``
    crabcan's rules, corrected (default action: allow; errno EPERM unless said):

    - refuse ``keyctl``, ``add_key``, ``request_key`` (keyrings are not
      namespaced), ``mbind``, ``migrate_pages``, ``move_pages``,
      ``set_mempolicy``, ``userfaultfd``, ``perf_event_open``, and beyond
      crabcan ``io_uring_setup``/``io_uring_enter``/``io_uring_register``;
    - refuse ``socket(AF_VSOCK, ...)`` (vsock is not namespaced), comparing the
      low 32 bits of the family as the kernel reads it;
    - refuse ``chmod``/``fchmod``/``fchmodat``/``fchmodat2`` when the mode sets
      ``S_ISUID`` (``MASKED_EQ`` on that bit), and the same for a file created
      with that mode (``open``/``openat`` with ``O_CREAT`` or ``O_TMPFILE``,
      ``creat``, ``mknod``, ``mknodat``); ``openat2`` fails with ``ENOSYS``
      (its mode lives in memory seccomp cannot read; callers fall back to
      ``openat``). ``S_ISGID`` is allowed, as in Docker's default, for shared
      group folders (``chmod 2775 dir``);
    - refuse ``unshare``/``clone`` with ``CLONE_NEWUSER``; ``clone3`` fails with
      ``ENOSYS`` (its flags live in memory seccomp cannot read; libcs then
      fall back to ``clone``, which is checked);
    - refuse ``ioctl`` ``TIOCSTI`` and ``TIOCLINUX`` by exact match of the low
      32 bits of the request (the kernel's ``cmd`` is an ``unsigned int``; crabcan's
      ``MASKED_EQ`` with the request as mask also refused TIOCGWINSZ and
      FIONREAD);
    - native architecture only: a syscall through another ABI (x86 ``int 0x80``,
      x32) kills the process, since no rule covers it.

``"unconfined"``
    no filter (``no_new_privs`` is still set).

a path
    an OCI runtime-spec / Docker seccomp JSON profile: ``defaultAction``,
    ``defaultErrnoRet``, ``architectures`` or Docker's ``archMap``, ``flags``,
    ``syscalls[]`` with ``names`` (or the old ``name``), ``action``, ``errnoRet``,
    ``args`` (``index``, ``value``, ``valueTwo``, ``op`` ``SCMP_CMP_*``) and Docker's
    ``includes``/``excludes`` conditions on ``caps``, ``arches`` and ``minKernel``
    (evaluated against the container's kept capabilities and this host).
    Syscall names libseccomp does not know are skipped, as Docker does;
    ``SCMP_ACT_NOTIFY`` and ``listenerPath`` are refused. ``SCMP_CMP_EQ`` and
    ``SCMP_CMP_MASKED_EQ`` on an argument the kernel reads as an ``int`` (a
    socket's family and type, ioctl requests, personality, prctl options,
    ids, fds...) or a ``umode_t`` compare only those 32 or 16 bits, as the
    kernel reads them, so that a payload setting high bits cannot slip past
    the rule; the other comparisons (``NE``, ``LT``...) compare the 64 bits as
    written, which libseccomp cannot mask.
"""

from __future__ import annotations

import errno
import functools
import importlib.machinery
import json
import os
import stat
from collections.abc import Callable, Iterable

from .._record import record
from .._sys import constants as c
from .rundir import private_root, run_root

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (3 ms for a command line)
if TYPE_CHECKING:
    from typing import Any

DEFAULT = "default"
UNCONFINED = "unconfined"

_S_ISUID = stat.S_ISUID
_TIOCSTI = 0x5412  # <asm-generic/ioctls.h>
_TIOCLINUX = 0x541C
#: fchmodat2 (Linux 6.6); libseccomp 2.5.4 does not know its name.
_NR_FCHMODAT2 = 452
#: openat2 (Linux 5.6), by number where libseccomp does not know it.
_NR_OPENAT2 = 437
#: O_TMPFILE without the O_DIRECTORY it includes (<asm-generic/fcntl.h> __O_TMPFILE).
_O_TMPFILE_BIT = os.O_TMPFILE & ~os.O_DIRECTORY

#: Syscalls the default profile refuses outright.
DEFAULT_DENIED = (
    "keyctl",
    "add_key",
    "request_key",
    "mbind",
    "migrate_pages",
    "move_pages",
    "set_mempolicy",
    "userfaultfd",
    "perf_event_open",
    # Beyond crabcan: io_uring can open sockets and
    # files outside the reach of syscall filters, and is a large attack surface.
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
)
#: <linux/socket.h>: vsock reaches the hypervisor and other guests, across
#: every network namespace.
_AF_VSOCK = 40


def _lib() -> Any:
    """The libseccomp binding, imported on first use.

    Importing it costs 15 to 30 ms (it runs ``ldconfig -p`` twice to find
    libc and libseccomp): a program that imports supervisor pays it only when
    it compiles a filter, and :func:`warm_up` can pay it in a worker thread
    while the supervisor starts.
    """
    import pyseccomp

    return pyseccomp


#: This host's architecture, as ``platform.machine()`` says it.
_MACHINE = os.uname().machine


@record
class CompiledFilter:
    """A filter ready for the config.

    Attributes:
        bpf: the classic BPF program (``struct sock_filter`` records).
        flags: ``SECCOMP_FILTER_FLAG_*`` to load it with.
    """

    bpf: bytes
    flags: int = 0


def new_filter(default_action: Any) -> Any:
    """A libseccomp filter whose syscall checks are a binary tree.

    libseccomp's default tests the syscall number against each rule in turn;
    sorted into a tree, a syscall takes a few comparisons whatever the
    profile's size. That is cheaper for every system call the payload makes,
    and for the kernel's own pass over the filter when PID 1 loads it (it
    runs the filter for every syscall number to cache the ones that are
    always allowed): measured here, the default profile's load went from
    about 110 to 60 us. A libseccomp without the attribute (before 2.5)
    keeps the list.
    """
    seccomp = _lib()
    flt = seccomp.SyscallFilter(default_action)
    try:
        flt.set_attr(seccomp.Attr.CTL_OPTIMIZE, 2)
    except (AttributeError, OSError, RuntimeError, ValueError):
        pass
    return flt


def compile_profile(profile: str, caps: Iterable[int]) -> CompiledFilter | None:
    """The filter for ``profile``, compiled once per profile (cached).

    Args:
        profile: ``"default"``, ``"unconfined"`` or the absolute path of a JSON
            profile.
        caps: the container's kept capabilities (for ``includes``/``excludes``).

    Returns:
        The compiled filter, or ``None`` for ``unconfined``.

    Raises:
        ValueError: ``Spec.seccomp: ...``, naming what is wrong with the profile.
    """
    if profile == UNCONFINED:
        return None
    if profile == DEFAULT:
        return _default_filter()
    try:
        st = os.stat(profile)
    except OSError as exc:
        raise ValueError(f"Spec.seccomp: cannot read profile {profile}: {exc.strerror}") from None
    return _json_filter(profile, st.st_ino, st.st_mtime_ns, st.st_size, frozenset(caps))


#: The first line of a filter file in the disk cache.
_CACHE_MAGIC = b"supervisor-bpf-1\n"


def _cache_dir() -> str:
    return os.path.join(run_root(), "seccomp")


def _stamp(path: str | None) -> str:
    """A file's identity and version (inode, size, mtime), or ``-`` if absent."""
    try:
        st = os.stat(path) if path else None
    except OSError:
        st = None
    return f"{st.st_ino:x}.{st.st_size:x}.{st.st_mtime_ns:x}" if st else "-"


@functools.lru_cache(maxsize=1)
def _toolchain_stamp() -> str:
    """What a compiled filter depends on besides its profile, as a file name part.

    This module (the default rules are code), the binding's file, and the
    dynamic linker's cache, which ``ldconfig`` rewrites whenever a library
    (libseccomp among them) is installed or upgraded; and the architecture.
    """
    spec = importlib.machinery.PathFinder.find_spec("pyseccomp")
    binding = spec.origin if spec is not None else None
    return "-".join((_MACHINE, _stamp(__file__), _stamp(binding), _stamp("/etc/ld.so.cache")))


def _on_disk(name: str, build: Callable[[], CompiledFilter]) -> CompiledFilter:
    """``build()``, or the filter an earlier process built under ``name``.

    Compiling needs the binding, whose import alone costs 15 to 30 ms; a
    short-lived process (one ``supervisor run``) would pay that every time.
    The cache lives in the run root, in memory (``/run``, gone at boot), in
    a directory only this user can write; a file found there is used only
    if that still holds and it is well formed, and is written atomically
    (rename). Any failure to use the cache only means compiling here.
    """
    try:
        private_root(run_root())  # rootless: a run root that is not the user's own is not used
    except OSError:
        return build()
    directory = _cache_dir()
    path = os.path.join(directory, f"{name}-{_toolchain_stamp()}.bpf")
    found = _read_cached(directory, path)
    if found is not None:
        return found
    compiled = build()
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        if _trusted(os.lstat(directory), stat.S_ISDIR):
            tmp = f"{path}.{os.getpid()}.tmp"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            try:
                os.write(fd, _CACHE_MAGIC + compiled.flags.to_bytes(4, "little") + compiled.bpf)
            finally:
                os.close(fd)
            os.replace(tmp, path)
            # The same profile built by an earlier toolchain is dead weight.
            for other in os.listdir(directory):
                if other.startswith(f"{name}-") and other != os.path.basename(path) and other.endswith(".bpf"):
                    os.unlink(os.path.join(directory, other))
    except OSError:
        pass
    return compiled


def _trusted(st: os.stat_result, kind: Callable[[int], bool]) -> bool:
    """Ours, of the right kind, and writable by nobody else."""
    return kind(st.st_mode) and st.st_uid == os.geteuid() and not st.st_mode & 0o022


def _read_cached(directory: str, path: str) -> CompiledFilter | None:
    try:
        if not _trusted(os.lstat(directory), stat.S_ISDIR):
            return None
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        if not _trusted(os.fstat(fd), stat.S_ISREG):
            return None
        data = os.read(fd, 1 << 20)
    except OSError:
        return None
    finally:
        os.close(fd)
    head = len(_CACHE_MAGIC) + 4
    bpf = data[head:]
    # struct sock_filter records, at most BPF_MAXINSNS of them.
    if not data.startswith(_CACHE_MAGIC) or not bpf or len(bpf) % 8 or len(bpf) > 4096 * 8:
        return None
    return CompiledFilter(bpf, int.from_bytes(data[len(_CACHE_MAGIC) : head], "little"))


def warm_up() -> None:
    """Import the binding and compile the ``"default"`` profile now (both are cached).

    Meant for a worker thread while the supervisor starts, so that the first
    run does not wait for them. Best effort: a failure (libseccomp missing,
    say) is left to the run that needs the filter, which reports it as its
    own error (the cache keeps only successes).
    """
    try:
        _default_filter()
    except Exception:  # noqa: BLE001 - reported by the real compile
        pass


@functools.lru_cache(maxsize=1)
def _default_filter() -> CompiledFilter:
    return _on_disk("default", _compile_default)


def _compile_default() -> CompiledFilter:
    seccomp = _lib()
    flt = new_filter(seccomp.ALLOW)
    # Non-native ABIs are not covered by the rules below: refuse them whole.
    flt.set_attr(seccomp.Attr.ACT_BADARCH, seccomp.KILL_PROCESS)
    eperm = seccomp.ERRNO(errno.EPERM)
    for name in DEFAULT_DENIED:
        flt.add_rule(eperm, name)
    chmods: list[tuple[str | int, int]] = [("chmod", 1), ("fchmod", 1), ("fchmodat", 2)]
    chmods.append((_syscall_or_number("fchmodat2", _NR_FCHMODAT2), 2))
    # S_ISGID stays allowed: seccomp cannot tell a folder from a file, and a
    # setgid folder is how a shared group folder works. See docs/security.rst.
    for syscall, index in chmods:
        flt.add_rule(eperm, syscall, seccomp.Arg(index, seccomp.MASKED_EQ, _S_ISUID, _S_ISUID))
    # Nor is a setuid file created whole: open/openat with O_CREAT or
    # O_TMPFILE, creat and mknod take a mode too. openat2 keeps its mode in
    # memory seccomp cannot read: ENOSYS, so callers fall back to openat.
    for syscall, flags, mode in (("open", 1, 2), ("openat", 2, 3)):
        for flag in (os.O_CREAT, _O_TMPFILE_BIT):
            flt.add_rule(
                eperm,
                syscall,
                seccomp.Arg(flags, seccomp.MASKED_EQ, flag, flag),
                seccomp.Arg(mode, seccomp.MASKED_EQ, _S_ISUID, _S_ISUID),
            )
    for syscall, mode in (("creat", 1), ("mknod", 1), ("mknodat", 2)):
        flt.add_rule(eperm, syscall, seccomp.Arg(mode, seccomp.MASKED_EQ, _S_ISUID, _S_ISUID))
    flt.add_rule(seccomp.ERRNO(errno.ENOSYS), _syscall_or_number("openat2", _NR_OPENAT2))
    for name in ("unshare", "clone"):
        flt.add_rule(eperm, name, seccomp.Arg(0, seccomp.MASKED_EQ, c.CLONE_NEWUSER, c.CLONE_NEWUSER))
    flt.add_rule(seccomp.ERRNO(errno.ENOSYS), "clone3")
    # The family is an int: the kernel reads the low 32 bits, so the rule
    # compares those alone (0x100000028 is AF_VSOCK to the kernel too).
    flt.add_rule(eperm, "socket", seccomp.Arg(0, seccomp.MASKED_EQ, 0xFFFFFFFF, _AF_VSOCK))
    for request in (_TIOCSTI, _TIOCLINUX):
        flt.add_rule(eperm, "ioctl", seccomp.Arg(1, seccomp.MASKED_EQ, 0xFFFFFFFF, request))
    return CompiledFilter(_export(flt))


def _syscall_or_number(name: str, number: int) -> str | int:
    """``name`` if libseccomp knows it, else its (native) number."""
    seccomp = _lib()
    return name if seccomp.resolve_syscall(seccomp.Arch.NATIVE, name) >= 0 else number


@functools.lru_cache(maxsize=32)
def _json_filter(path: str, _ino: int, _mtime_ns: int, _size: int, caps: frozenset[int]) -> CompiledFilter:
    """Compile a JSON profile (cached per file version and capability set)."""
    try:
        with open(path, "rb") as fh:
            text = fh.read()
        data = json.loads(text.decode("utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"Spec.seccomp: cannot load profile {path}: {exc}") from None

    def build() -> CompiledFilter:
        from .seccomp_oci import compile_oci

        try:
            return compile_oci(data, caps)
        except (ValueError, TypeError, KeyError, OSError) as exc:
            raise ValueError(f"Spec.seccomp: profile {path}: {exc}") from None

    import hashlib

    # The compile depends on the text, the kept capabilities and (through
    # minKernel conditions) the kernel.
    key = hashlib.sha256(text + repr((sorted(caps), os.uname().release)).encode()).hexdigest()[:32]
    return _on_disk(f"json-{key}", build)


def _export(flt: Any) -> bytes:
    """The filter as raw BPF, through an anonymous memory file."""
    fd = os.memfd_create("supervisor-seccomp", os.MFD_CLOEXEC)
    try:
        flt.export_bpf(_Fd(fd))
        size = os.lseek(fd, 0, os.SEEK_END)
        return os.pread(fd, size, 0)
    finally:
        os.close(fd)


class _Fd:
    """The ``fileno()`` that ``export_bpf`` asks for."""

    def __init__(self, fd: int) -> None:
        self._fd = fd

    def fileno(self) -> int:
        return self._fd
