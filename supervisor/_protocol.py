"""The setup protocol between the supervisor, the fork server and PID 1.

Choreography, for one container::

    supervisor                    fork server                  PID 1 (the container)
    ----------                    -----------                  ---------------------
    socketpair(SEQPACKET|CLOEXEC)
    create the cgroup, open its
      entry files
    SPAWN {id, config} + fds ---> clone3(NEWUSER|NEWNS|NEWUTS|
      (control end, stdio,          NEWIPC|NEWNET|NEWPID|PIDFD|
       cgroup entry files)          INTO_CGROUP) ----------------> child starts in its v2 cgroup
                         <--- SPAWNED {id, pid} + pidfd
                                                               REQUEST USERNS {before: [SPAWNED]}
    write uid_map/gid_map
    ACK USERNS ----------------------------------------------> setresuid(0)...
                                                               CGROUP: write 0 to the v1 tasks files
                                                               [REQUEST NETWORK, waited for,
                                                                in bridge mode]
                                                               HOSTNAME, ROOTFS, MOUNTS, PIVOT, ...
                                                               PHASE {list: [..., EXEC]}
    EOF on the control socket  <------------------------------ execve() closes the
      = the payload is running                                 close-on-exec end
                         <--- EXITED {id, code, status} (waitid(P_PIDFD))

Phase starts are timestamped as they happen. When the supervisor watches them
live (``on_phase``, ``events()``), PID 1 sends each one at once in a ``PHASE``
record; otherwise it holds them back and sends them with the next record that
goes anyway (``before`` of a request or failure, or the final ``PHASE`` list
just before ``execve``).

Every message is one SEQPACKET record: a JSON object with a type tag ``t``,
optionally with file descriptors attached (SCM_RIGHTS). Nothing is ever
unpickled across the boundary. A failure in PID 1 is one ``FAIL`` record
carrying the phase, the errno and a message naming the call. The control end
held by PID 1 is close-on-exec, so end-of-file right after ``EXEC`` means
``execve`` succeeded, and a setup failure can never be mistaken for the
payload's exit status.

This module is imported by both sides, including the fork server, so it uses
only the standard library.
"""

from __future__ import annotations

import array
import enum
import json
import os
import socket
from typing import Any

#: Largest record we ever receive (a spawn request carries the container's config).
MAX_RECORD = 1 << 20
#: PID 1's name (``/proc/PID/comm``) from clone until ``execve`` renames it
#: after the program: how the fork server and the supervisor tell a PID 1
#: that died just before ``execve`` from a payload that ran and exited.
SETUP_COMM = b"sv-pid1-setup"

#: The descriptors every spawn request starts with: PID 1's end of the
#: control socket, then its stdin, stdout and stderr.
SPAWN_FIXED_FDS = 4
#: Most descriptors a caller may pass into one container (``pass_fds``).
MAX_PASS_FDS = 32
#: Most cgroup entry descriptors of one spawn request (a v2 directory and its
#: cgroup.procs, one ``tasks`` file per v1 hierarchy we use).
MAX_CGROUP_FDS = 8
#: Most descriptors one record may carry (control socket, stdio, passed fds,
#: cgroup entry fds).
MAX_FDS = SPAWN_FIXED_FDS + MAX_PASS_FDS + MAX_CGROUP_FDS


class Phase(enum.IntEnum):
    """The container's setup phases. Declaration order is protocol order.

    Each member's docstring says why it sits where it does. PID 1 reports each
    phase as it starts it, with a ``CLOCK_MONOTONIC`` timestamp; the members
    marked *request* wait for the supervisor's answer before going on.
    """

    SPAWNED = 1
    """Cloned by the fork server into new user, mount, UTS, IPC, network and PID
    namespaces at once (the user namespace is created first and owns the rest)."""

    USERNS = 2
    """*Request*: the supervisor writes ``uid_map``/``gid_map``. First, because
    nothing that creates files or checks ids works before the maps exist."""

    CGROUP = 3
    """PID 1 enters its cgroup. The supervisor created it (and wrote its
    limits) before the clone, and the fork server cloned PID 1 into its v2
    directory; here PID 1 joins the v1 ones itself, through files the
    supervisor opened (a thread moving itself takes no global lock, where a
    move by PID waits for an RCU grace period: milliseconds). Right after the
    maps, so that the whole setup is accounted to the container; its cgroup
    namespace, rooted there, is unshared after ``PIVOT``."""

    NETWORK = 4
    """Loopback up (and, on request, the supervisor's veth configured). Needs the
    network namespace to be owned by our user namespace, which it is."""

    HOSTNAME = 5
    """sethostname in the new UTS namespace; cheap and independent of the root."""

    ROOTFS = 6
    """``/`` made recursively private (before any mount, so nothing propagates to
    the host), a private staging tmpfs pivoted to, the new root bound in."""

    MOUNTS = 7
    """Fresh ``/proc``, ``/dev``, ``/sys`` and ``/tmp``, then the caller's bind
    mounts, then the masked and read-only paths. After the root exists, while
    the host is still reachable as the old root (bind sources, /dev nodes)."""

    PIVOT = 8
    """pivot_root into the new root and detach the old one: from here on the host
    filesystem is unreachable."""

    CAPABILITIES = 9
    """Capability sets reduced once every privileged mount is done: the
    bounding set cut to the kept set, inheritable and ambient cleared. The
    final permitted/effective sets are set (and all five verified) in
    ``SECCOMP``, after the uid switch, which still needs CAP_SETUID/SETGID."""

    RLIMITS = 10
    """Resource limits applied to the container (never to the supervisor)."""

    IDENTITY = 11
    """setgroups/setresgid/setresuid to the payload's ids, after the privileged
    work; the working directory is entered and checked as that user."""

    SECCOMP = 12
    """``no_new_privs`` and the seccomp filter: last before exec, so the filter
    never has to allow anything our setup needs."""

    EXEC = 13
    """execve of the payload; end-of-file on the control socket confirms it."""

    @property
    def label(self) -> str:
        """Lower-case name used in events, JSON and messages."""
        return self.name.lower()


#: Phases whose start is a request that the supervisor must answer.
REQUEST_PHASES = frozenset({Phase.USERNS, Phase.NETWORK})
#: Phases with a step of the supervisor's own: the requests, and ``CGROUP``,
#: whose step (creating the cgroup) runs before the clone.
PARENT_STEP_PHASES = REQUEST_PHASES | {Phase.CGROUP}


class Tag:
    """Record type tags (the ``t`` field)."""

    # supervisor -> fork server
    SPAWN = "spawn"
    # fork server -> supervisor
    SPAWNED = "spawned"
    SPAWN_FAILED = "spawn_failed"
    EXITED = "exited"
    # PID 1 -> supervisor
    PHASE = "phase"
    REQUEST = "request"
    FAIL = "fail"
    PTY = "pty"  # carries the master of the container's terminal
    # supervisor -> PID 1
    ACK = "ack"


def encode(record: dict[str, Any]) -> bytes:
    """Serialise one record (compact JSON)."""
    return json.dumps(record, separators=(",", ":")).encode()


def decode(data: bytes) -> dict[str, Any]:
    """Parse one record.

    Raises:
        ValueError: the bytes are not a JSON object with a string ``t``.
    """
    obj = json.loads(data)
    if not isinstance(obj, dict) or not isinstance(obj.get("t"), str):
        raise ValueError(f"malformed record: {data[:80]!r}")
    return obj


def send(sock: socket.socket, record: dict[str, Any], fds: list[int] | tuple[int, ...] = ()) -> None:
    """Send one record with optional descriptors (blocking socket)."""
    data = encode(record)
    if fds:
        sock.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))])
    else:
        sock.send(data)


def recv(sock: socket.socket) -> tuple[dict[str, Any] | None, list[int]]:
    """Receive one record and the descriptors attached to it.

    Returns:
        ``(None, [])`` at end-of-file; otherwise the record and its fds (which
        the caller now owns; they arrive close-on-exec).

    Raises:
        ValueError: a malformed record (its fds are closed first).
    """
    data, fds = recv_raw(sock)
    if not data:
        for fd in fds:
            _close(fd)
        return None, []
    try:
        return decode(data), fds
    except ValueError:
        for fd in fds:
            _close(fd)
        raise


def recv_raw(sock: socket.socket) -> tuple[bytes, list[int]]:
    """One raw record and its fds; ``b""`` means end-of-file."""
    fd_size = socket.CMSG_SPACE(MAX_FDS * array.array("i").itemsize)
    data, ancdata, _flags, _addr = sock.recvmsg(MAX_RECORD, fd_size, socket.MSG_CMSG_CLOEXEC)
    fds: list[int] = []
    for level, kind, payload in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            arr = array.array("i")
            arr.frombytes(payload[: len(payload) - (len(payload) % arr.itemsize)])
            fds.extend(arr)
    return data, fds


def _close(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass
