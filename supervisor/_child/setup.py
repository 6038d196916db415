"""PID 1's setup: one linear sequence, each step with the reason it sits there.

This runs in the child of the fork server's ``clone()``, which already created
the user, mount, UTS, IPC, network and PID namespaces (the user namespace
first, owning the rest). It is the executable form of the container's security
argument: read :func:`run_setup` top to bottom.

Rules for this module (it runs in a freshly cloned process): only ``os.*``,
:mod:`supervisor._sys.linux` and the protocol's blocking send/recv; no imports
after the fork server preloaded us, no logging, no buffered I/O; every failure
is reported as one ``FAIL`` record, then ``os._exit``.
"""

from __future__ import annotations

import errno
import fcntl
import os
import resource
import signal
import socket
import struct
import time
from typing import Any, NoReturn

from .._protocol import SETUP_COMM, Phase, Tag, recv, send
from .._sys import constants as c
from .._sys import linux
from . import capabilities, seccomp
from .rootfs import RootBuilder

#: The first fd of PID 1 above stdio: the caller's passed fds start here,
#: and the control socket (close-on-exec) comes right after them.
FIRST_FD = 3

_SIOCGIFFLAGS = 0x8913
_SIOCSIFFLAGS = 0x8914
_IFF_UP = 0x1


class SetupFailure(Exception):
    """Raised inside PID 1 to abort setup with a phase, errno and message."""

    def __init__(self, err: int, message: str) -> None:
        super().__init__(message)
        self.errno = err


class Channel:
    """PID 1's end of the control socket, with the current phase.

    Each phase start is timestamped as it happens. In *live* mode (someone in
    the supervisor watches phases as they come: ``on_phase``, ``events()``)
    each one is sent at once; otherwise they are held back and sent with the
    next record that has to go anyway (a request, the final report before
    execve, or a failure), which saves the supervisor a wake-up per phase.
    """

    def __init__(self, sock: socket.socket, fault: int | None, live: bool = True) -> None:
        self.sock = sock
        self.phase = Phase.SPAWNED
        self.fault = fault
        self.live = live
        self.pending: list[list[int]] = []
        #: ``(fd, path)`` of the cgroup files to write 0 to (see :func:`_enter_cgroup`).
        self.cgroup_joins: list[tuple[int, str]] = []

    def enter(self, phase: Phase) -> None:
        """Note the start of ``phase`` (with a CLOCK_MONOTONIC timestamp)."""
        self.phase = phase
        self.pending.append([int(phase), time.monotonic_ns()])
        if self.live:
            self.flush()
        self._maybe_fault()

    def flush(self) -> None:
        """Send the phases not reported yet."""
        if self.pending:
            send(self.sock, {"t": Tag.PHASE, "list": self.pending})
            self.pending = []

    def request(self, phase: Phase) -> None:
        """Start a request phase; block until the supervisor acknowledges it."""
        self.phase = phase
        ts = time.monotonic_ns()
        if self.fault == int(phase):
            self.pending.append([int(phase), ts])  # reported with the failure
            self._maybe_fault()
        before, self.pending = self.pending, []
        send(self.sock, {"t": Tag.REQUEST, "phase": int(phase), "ts": ts, "before": before})
        record, fds = recv(self.sock)
        for fd in fds:
            os.close(fd)
        if record is None or record["t"] != Tag.ACK or record.get("phase") != int(phase):
            # The supervisor went away or gave up: nothing to report to.
            os._exit(1)

    def _maybe_fault(self) -> None:
        if self.fault == int(self.phase):
            raise SetupFailure(errno.EIO, f"fault injected at phase {self.phase.label} (supervisor.testing)")

    def fail(self, err: int, message: str) -> None:
        before, self.pending = self.pending, []
        try:
            send(
                self.sock,
                {"t": Tag.FAIL, "phase": int(self.phase), "errno": err, "message": message, "before": before},
            )
        except OSError:
            pass


def child_main(config: dict[str, Any], fds: list[int], cgroup_joins: list[tuple[int, str]]) -> NoReturn:
    """Entry point in the cloned child. Never returns.

    Args:
        config: the spawn request's config.
        fds: control socket, stdin, stdout, stderr, then the passed fds.
        cgroup_joins: ``(fd, path)`` of the cgroup files to write 0 to at
            ``CGROUP`` (see :func:`_enter_cgroup`).
    """
    try:
        chan = _adopt_fds(fds, cgroup_joins)
        # Named until execve renames it: its exit then says whether it got
        # there (a seccomp profile that kills execve must not pass for the
        # payload's own death).
        linux.set_name(SETUP_COMM)
    except BaseException:  # noqa: BLE001 - nothing to report to yet
        os._exit(125)
    try:
        run_setup(config, chan)
    except SetupFailure as exc:
        chan.fail(exc.errno, str(exc))
    except OSError as exc:
        message = exc.strerror or str(exc)
        if exc.filename is not None:
            message = f"{message}: {exc.filename}"
        chan.fail(exc.errno or 0, message)
    except BaseException as exc:  # noqa: BLE001 - report anything, then die
        chan.fail(0, f"{type(exc).__name__}: {exc}")
    os._exit(125)


def _adopt_fds(fds: list[int], cgroup_joins: list[tuple[int, str]]) -> Channel:
    """Move stdio, the passed fds and the control socket into place; close the rest.

    ``fds`` is the control socket, stdin, stdout, stderr, then the caller's
    passed fds, which become 3, 4, ... in that order (inheritable); the
    control socket goes right after them (close-on-exec), then the cgroup
    files to join (close-on-exec; closed at ``CGROUP``).
    """
    ctl, stdin, stdout, stderr, *passed = fds
    # Park them all above any fd we will write to, then dup2 into place.
    floor = 64 + len(fds) + len(cgroup_joins)
    joins = [fd for fd, _path in cgroup_joins]
    high = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, floor) for fd in (stdin, stdout, stderr, *passed, ctl, *joins)]
    for target, fd in enumerate(high[: 3 + len(passed)]):
        os.dup2(fd, target, inheritable=True)
    control = FIRST_FD + len(passed)
    for offset, fd in enumerate(high[3 + len(passed) :]):
        os.dup2(fd, control + offset, inheritable=False)
    # Nothing of the fork server (its socket to the supervisor, other
    # containers' pidfds) survives into the container, not even until exec.
    linux.close_range(control + 1 + len(joins))
    sock = socket.socket(fileno=control)
    sock.setblocking(True)
    chan = Channel(sock, None)
    chan.cgroup_joins = [(control + 1 + i, path) for i, (_fd, path) in enumerate(cgroup_joins)]
    return chan


def run_setup(config: dict[str, Any], chan: Channel) -> NoReturn:
    """The setup sequence, in protocol order (see :class:`supervisor.Phase`)."""
    chan.fault = config.get("fault")
    chan.live = bool(config.get("live_phases", True))
    # SPAWNED: die with the fork server (our parent, single-threaded, so the
    # parent-thread caveat of PDEATHSIG does not bite), and stay non-dumpable
    # until exec so nothing in the container can ptrace or read our memory.
    linux.prctl(c.PR_SET_PDEATHSIG, signal.SIGKILL)
    linux.prctl(c.PR_SET_DUMPABLE, 0)
    # A session of our own: the payload can never reach the caller's terminal
    # (TIOCSTI) and is not hit by the caller's Ctrl-C.
    os.setsid()
    chan.enter(Phase.SPAWNED)

    # USERNS: first, because files created and ids checked from here on need
    # the maps. The supervisor writes them (root in the host user namespace),
    # then we become root of the container (still without any host privilege).
    chan.request(Phase.USERNS)
    os.setgroups([])
    os.setresgid(0, 0, 0)
    os.setresuid(0, 0, 0)
    # A uid change clears the parent-death signal (commit_creds): re-arm it at
    # once, so there is no window in which the fork server's death spares us.
    linux.prctl(c.PR_SET_PDEATHSIG, signal.SIGKILL)

    # CGROUP: right after the maps, before any other work, so that the whole
    # setup is accounted to the container. The supervisor made the cgroup
    # before the clone and clone3 put us in its v2 directory; join the v1
    # ones through the files it opened for us.
    chan.enter(Phase.CGROUP)
    _enter_cgroup(chan.cgroup_joins)

    # NETWORK: the namespace exists since clone(); bring loopback up here, in
    # the namespace's owner, then let the supervisor add its veth if asked.
    if config.get("network"):
        chan.request(Phase.NETWORK)
    else:
        chan.enter(Phase.NETWORK)
    if config.get("network_mode") != "host":  # host mode: the host's own lo, not ours to touch
        _loopback_up()

    # HOSTNAME: in the new UTS namespace; independent of the filesystem.
    chan.enter(Phase.HOSTNAME)
    linux.sethostname(config["hostname"])

    # ROOTFS: / private before any mount; staging tmpfs; new root bound in.
    chan.enter(Phase.ROOTFS)
    root = RootBuilder(config)
    root.stage()
    root.bind_root()

    # MOUNTS: /proc (needs to be mounted by a process inside the PID
    # namespace: us), /dev, /sys, /tmp, then the caller's binds, while the
    # host is still reachable as /oldroot.
    chan.enter(Phase.MOUNTS)
    root.mount_filesystems()

    # PIVOT: into the new root; the old root is detached and unreachable.
    chan.enter(Phase.PIVOT)
    root.pivot()
    # In our cgroup since CGROUP, unshare the cgroup namespace, so its root
    # is the container's own cgroup; while we still hold CAP_SYS_ADMIN, and
    # before any payload code.
    linux.unshare(c.CLONE_NEWCGROUP)
    if config.get("tty"):
        # A terminal from the container's own devpts instance, so ttyname()
        # and /dev/pts agree inside; the master goes to the supervisor.
        _attach_terminal(chan)

    # CAPABILITIES: after the last privileged mount and pivot, which need
    # CAP_SYS_ADMIN. Here: the bounding set reduced to the kept set (dropping
    # needs CAP_SETPCAP, which we still hold), ambient and inheritable emptied,
    # permitted/effective cut to the kept set plus CAP_SETUID/CAP_SETGID, which
    # IDENTITY still needs. Their final value is set after the uid switch.
    chan.enter(Phase.CAPABILITIES)
    kept = [int(cap) for cap in config.get("capabilities", [])]
    capabilities.limit(kept)

    # RLIMITS: in PID 1, so they bind the payload and never the supervisor or
    # the fork server (crabcan set NOFILE on its own parent); checked against
    # the caller's hard limits by the supervisor, so no privilege is needed.
    chan.enter(Phase.RLIMITS)
    for res, soft, hard in config.get("rlimits") or ():
        try:
            resource.setrlimit(int(res), (int(soft), int(hard)))
        except (OSError, ValueError) as exc:
            raise SetupFailure(errno.EPERM, f"setrlimit({res}, ({soft}, {hard})) failed: {exc}") from None

    # IDENTITY: the payload's ids; then the working directory, entered as that
    # user and checked to be inside the container (CVE-2024-21626).
    chan.enter(Phase.IDENTITY)
    gid = int(config["gid"])
    uid = int(config["uid"])
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    linux.prctl(c.PR_SET_PDEATHSIG, signal.SIGKILL)  # cleared again by the uid change
    try:
        os.chdir(config["cwd"])
        cwd = os.getcwd()  # ENOENT when the kernel says "(unreachable)"
    except OSError as exc:
        raise SetupFailure(exc.errno or 0, f"working directory {config['cwd']}: {exc.strerror}") from None
    if not cwd.startswith("/"):
        raise SetupFailure(errno.EPERM, f"working directory {cwd!r} is outside the container")

    # SECCOMP: first the final capability sets, now that the uid switch is
    # done (uid 0 keeps the kept set; any other uid has none: the kernel
    # cleared them at setresuid, and we make that explicit and verify all five
    # sets). Then no_new_privs, always, before the filter (an unprivileged
    # filter requires it, and it stops setuid/file-capability gains). The
    # filter is only decoded here; it is loaded at the very end of EXEC.
    chan.enter(Phase.SECCOMP)
    capabilities.finish(kept, uid)
    # (The parent-death signal re-armed after the uid switch stays: capset
    # only shrinks the sets, which commit_creds does not count as a change.)
    linux.prctl(c.PR_SET_NO_NEW_PRIVS, 1)
    program = seccomp.prepare(config.get("seccomp"))

    # EXEC: resolve the program in the container's PATH, report, execve.
    chan.enter(Phase.EXEC)
    env: dict[str, str] = config["env"]
    path = _find_program(config["argv"][0], env.get("PATH", ""))
    _reset_signals()
    # Nothing but stdio and the passed fds survives execve: every fd from
    # the control socket up becomes close-on-exec (the control socket already
    # is, so EOF still reports exec).
    linux.close_range(chan.sock.fileno(), 0xFFFFFFFF, c.CLOSE_RANGE_CLOEXEC)
    # The seccomp filter, last: after it only execve runs, so the profile
    # never has to allow anything of our setup (youki does the same).
    chan.flush()  # the phases held back, EXEC included (batched mode)
    seccomp.load(program)
    os.execve(path, config["argv"], env)
    raise AssertionError("unreachable")  # pragma: no cover


def _enter_cgroup(joins: list[tuple[int, str]]) -> None:
    """Join our cgroup through the supervisor's files, then close them.

    Writing ``0`` moves the writer: to a v1 ``tasks`` file, one thread, so no
    global lock (we are single-threaded); to the v2 ``cgroup.procs`` only
    where clone3 could not clone us into it. The kernel checks the
    credentials of whoever opened the file (the supervisor, root).

    Raises:
        SetupFailure: a write failed (naming the file).
    """
    try:
        for fd, path in joins:
            try:
                os.write(fd, b"0")
            except OSError as exc:
                message = f"cannot enter the cgroup: write 0 to {path}: {exc.strerror}"
                raise SetupFailure(exc.errno or 0, message) from None
    finally:
        for fd, _path in joins:
            os.close(fd)


def _find_program(name: str, search: str) -> str:
    """PATH lookup inside the container (like execvp, but before exec)."""
    if "/" in name:
        return name
    denied: str | None = None  # the last match we may not execute
    for directory in search.split(":"):
        candidate = os.path.join(directory or ".", name)
        if not os.path.exists(candidate):
            continue
        if not os.path.isdir(candidate) and os.access(candidate, os.X_OK):
            return candidate
        denied = candidate
    if denied is not None:
        raise SetupFailure(errno.EACCES, f"{denied}: permission denied")
    raise SetupFailure(errno.ENOENT, f"executable file not found in $PATH: {name}")


def _attach_terminal(chan: Channel) -> None:
    """Open a pty pair in the container; make the slave our stdio and ctty."""
    master = os.open("/dev/ptmx", os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
    fcntl.ioctl(master, c.TIOCSPTLCK, struct.pack("i", 0))
    number = struct.unpack("I", fcntl.ioctl(master, c.TIOCGPTN, struct.pack("I", 0)))[0]
    slave = os.open(f"/dev/pts/{number}", os.O_RDWR | os.O_NOCTTY)
    fcntl.ioctl(slave, c.TIOCSCTTY, 0)
    for fd in (0, 1, 2):
        os.dup2(slave, fd, inheritable=True)
    os.close(slave)
    send(chan.sock, {"t": Tag.PTY}, [master])
    os.close(master)


def _reset_signals() -> None:
    """Give the payload default dispositions and an empty signal mask.

    Python ignores SIGPIPE and SIGXFSZ, and the fork server ignores SIGINT;
    ignored signals stay ignored across execve, so restore them.
    """
    for sig in (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGINT):
        signal.signal(sig, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, [])


def _loopback_up() -> None:
    """ioctl(SIOCSIFFLAGS, lo, IFF_UP): no netlink library needed for this."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
        ifreq = struct.pack("16sH14x", b"lo", 0)
        flags = struct.unpack("16sH14x", fcntl.ioctl(s.fileno(), _SIOCGIFFLAGS, ifreq))[1]
        fcntl.ioctl(s.fileno(), _SIOCSIFFLAGS, struct.pack("16sH14x", b"lo", flags | _IFF_UP))
