"""The setup protocol between the supervisor and PID 1.

Choreography, for one container::

    supervisor (Python)                                  PID 1 (C, in the container)
    -------------------                                  ---------------------------
    socketpair(SEQPACKET|CLOEXEC)
    create the cgroup, open its entry files
    _spawn.spawn(SpawnConfig, fds): the plan is
      filled in C, then clone3(NEWUSER|NEWNS|NEWUTS|
      NEWIPC|NEWNET|NEWPID|VM|PIDFD|INTO_CGROUP) ------> starts in its v2 cgroup, on a
                                                         stack of its own
    the clone thread writes uid_map/gid_map
      and wakes PID 1 (a futex) -------------------------> USERNS: setresuid(0)...
                                                         CGROUP: write 0 to the v1 tasks files
                                                         [REQUEST NETWORK, waited for,
                                                          in bridge mode]
                                                         HOSTNAME, ROOTFS, MOUNTS, PIVOT, ...
                                                         PHASE [..., EXEC]
    EOF on the control socket <------------------------- execve() closes the
      = the payload is running                           close-on-exec end
                                                         (with init: PID 1 forks the
                                                         payload, waits for its execve,
                                                         then closes its own end)
    pidfd readable: waitid(P_PIDFD, __WALL) <----------- exit

Everything here is declared once and read by both sides: the phases
(:class:`Phase`), the records between PID 1 and the supervisor
(:class:`Record`, :data:`HEADER`, :data:`MARK`), and the spawn configuration
PID 1 runs from (:class:`SpawnConfig`). PID 1's C code takes its constants and
record layouts from ``sv_protocol.h``, which :func:`c_header` renders from
these declarations when the package is built, and its plan from a
:class:`SpawnConfig`; the tables in ``docs/protocol.rst`` are rendered from
them too.

Every message is one SEQPACKET record: a :data:`HEADER` (the record type, a
phase, an errno, a count of marks), that many :data:`MARK` entries (a phase
and the ``CLOCK_MONOTONIC`` time it started), then, in a ``FAIL``, the
message text. Phase starts are stamped as they happen; when the supervisor
watches them live (``on_phase``, ``events()``) PID 1 sends each at once in a
``PHASE`` record, otherwise it holds them back and sends them with the next
record that goes anyway (a request, a failure, or the last ``PHASE`` record
just before ``execve``). A failure in PID 1 is one ``FAIL`` record: the phase,
the errno and a text naming the call and its arguments. The control end held
by PID 1 is close-on-exec, so end-of-file right after ``EXEC`` means
``execve`` succeeded, and a setup failure can never be mistaken for the
payload's exit status. Nothing is ever unpickled across the boundary;
descriptors travel as SCM_RIGHTS.

This module is imported by the build too (to render the C header), so it
uses only the standard library.
"""

from __future__ import annotations

import array
import enum
import socket
import struct

from ._record import field, record

#: PID 1's name (``/proc/PID/comm``) from clone until ``execve`` renames it
#: after the program: how the supervisor tells a PID 1
#: that died just before ``execve`` from a payload that ran and exited.
SETUP_COMM = b"sv-pid1-setup"

#: The descriptors every spawn starts with: PID 1's end of the control
#: socket, then its stdin, stdout and stderr.
SPAWN_FIXED_FDS = 4
#: Most descriptors a caller may pass into one container (``pass_fds``).
MAX_PASS_FDS = 32
#: Most cgroup entry descriptors of one spawn (a v2 directory and its
#: cgroup.procs, one ``tasks`` file per v1 hierarchy we use).
MAX_CGROUP_FDS = 8
#: Most id-mapped bind mounts of one spawn (one detached mount descriptor each).
MAX_IDMAPPED = 16
#: Most descriptors of one spawn (control socket, stdio, passed fds, cgroup
#: entry fds, id-mapped mounts).
MAX_FDS = SPAWN_FIXED_FDS + MAX_PASS_FDS + MAX_CGROUP_FDS + MAX_IDMAPPED
#: Most phase marks one record from PID 1 carries (every phase fits).
MAX_MARKS = 16
#: Longest failure text PID 1 sends (longer ones are cut).
MAX_MESSAGE = 1024
#: Largest record PID 1 sends (a header, every mark, the longest text).
MAX_RECORD = 16 + 16 * MAX_MARKS + MAX_MESSAGE


class Phase(enum.IntEnum):
    """The container's setup phases. Declaration order is protocol order.

    Each member's docstring says why it sits where it does. PID 1 reports each
    phase as it starts it, with a ``CLOCK_MONOTONIC`` timestamp; the members
    marked *request* wait for the supervisor's answer before going on.
    """

    SPAWNED = 1
    """Cloned by the supervisor into new user, mount, UTS, IPC, network and PID
    namespaces at once (the user namespace is created first and owns the rest).
    A time namespace for the payload is unshared here (clone(2) has no room for
    its flag), its offsets written while PID 1 still has the supervisor's
    credentials, which own its ``/proc/self``; the payload enters it at execve."""

    USERNS = 2
    """PID 1 waits for its ``uid_map``/``gid_map``, which the supervisor's
    clone thread writes as soon as the clone returns (no round trip through the
    event loop: a futex word in the memory they share says when). First,
    because nothing that creates files or checks ids works before the maps
    exist."""

    CGROUP = 3
    """PID 1 enters its cgroup. The supervisor created it (and wrote its
    limits) before the clone, and the clone put PID 1 into its v2
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
    """execve of the payload; end-of-file on the control socket confirms it.
    With an init (``Spec(init=True)``), PID 1 first forks the payload (PID 2)
    and closes the socket once the payload has exec'd."""

    @property
    def label(self) -> str:
        """Lower-case name used in events, JSON and messages."""
        return _LABELS[self]


_LABELS = {phase: phase.name.lower() for phase in Phase}

#: Phases whose start is a request that the supervisor must answer
#: (``EXEC`` only with :attr:`SpawnConfig.start_gate`).
REQUEST_PHASES = frozenset({Phase.NETWORK, Phase.EXEC})
#: Phases with a step of the supervisor's own: ``NETWORK``, a request;
#: ``CGROUP``, whose step (creating the cgroup) runs before the clone; and
#: ``USERNS``, whose step (writing the id maps) its clone thread does right
#: after the clone. (The start gate's ``EXEC`` request is the OCI runtime's.)
PARENT_STEP_PHASES = frozenset({Phase.NETWORK, Phase.USERNS, Phase.CGROUP})


class Record(enum.IntEnum):
    """Record types between PID 1 and the supervisor (:data:`HEADER`'s ``tag``)."""

    PHASE = 1
    """PID 1 -> supervisor: phase marks (held back ones, or one live)."""

    REQUEST = 2
    """PID 1 -> supervisor: the marks held back, after which the current phase
    is the request's own (in ``phase``); PID 1 waits for the ``ACK``."""

    FAIL = 3
    """PID 1 -> supervisor: setup failed in ``phase`` with ``err``; the marks,
    then the text naming the call. PID 1 exits 125 after it."""

    PTY = 4
    """PID 1 -> supervisor: the master of the container's terminal (SCM_RIGHTS)."""

    ACK = 5
    """Supervisor -> PID 1: the step of the request ``phase`` is done."""


@record
class Layout:
    """A fixed binary record layout, shared with C: native byte order, no
    padding of its own (every field is aligned already).

    Attributes:
        c_name: the C struct's name in ``sv_protocol.h``.
        fields: ``(name, struct format letter, description)``.
    """

    c_name: str
    fields: tuple[tuple[str, str, str], ...]

    @property
    def struct(self) -> struct.Struct:
        """The :class:`struct.Struct` of one record."""
        return struct.Struct("=" + "".join(f for _n, f, _d in self.fields))


#: Every record between PID 1 and the supervisor starts with this header.
HEADER = Layout(
    "sv_header",
    (
        ("tag", "I", "the record type (:class:`Record`)"),
        ("phase", "I", "PID 1's current phase: the request's, the failure's"),
        ("err", "i", "the errno of a ``FAIL`` (0 when not a system call's)"),
        ("nmarks", "I", "how many :data:`MARK` entries follow"),
    ),
)
#: One phase start, as PID 1 stamped it.
MARK = Layout(
    "sv_mark",
    (
        ("phase", "I", "the phase (:class:`Phase`)"),
        ("pad", "I", "zero"),
        ("ts", "Q", "when it started: ``CLOCK_MONOTONIC``, in nanoseconds"),
    ),
)
_HEADER = HEADER.struct
_MARK = MARK.struct


@record
class Pid1Record:
    """One record between PID 1 and the supervisor, decoded."""

    tag: Record
    phase: int = 0
    err: int = 0
    marks: tuple[tuple[int, int], ...] = ()
    message: str = ""


def encode_pid1(record: Pid1Record) -> bytes:
    """The bytes of one record between PID 1 and the supervisor."""
    marks = b"".join(_MARK.pack(p, 0, ts) for p, ts in record.marks)
    head = _HEADER.pack(int(record.tag), record.phase, record.err, len(record.marks))
    return head + marks + record.message.encode()


def decode_pid1(data: bytes) -> Pid1Record:
    """Parse one record from PID 1.

    Raises:
        ValueError: too short, an unknown type, or more marks than it holds.
    """
    if len(data) < _HEADER.size:
        raise ValueError(f"malformed record: {data[:80]!r}")
    tag, phase, err, nmarks = _HEADER.unpack_from(data)
    end = _HEADER.size + nmarks * _MARK.size
    if nmarks > MAX_MARKS or len(data) < end:
        raise ValueError(f"malformed record: {nmarks} marks in {len(data)} bytes")
    try:
        kind = Record(tag)
    except ValueError:
        raise ValueError(f"malformed record: unknown type {tag}") from None
    marks = tuple([(p, ts) for p, _pad, ts in _MARK.iter_unpack(data[_HEADER.size : end])])
    return Pid1Record(kind, phase, err, marks, data[end:].decode(errors="replace"))


# -- the spawn configuration ------------------------------------------------


@record
class Bind:
    """A bind mount of a host path into the container."""

    src: str
    """Host path, absolute and resolved (PID 1 opens it below the old root)."""
    dst: str
    """Container path (resolved inside the new root)."""
    read_only: bool
    """Mounted read-only (always nodev and nosuid)."""
    idmapped: bool = False
    """An id-mapped mount the supervisor made of :attr:`src`: its descriptor
    travels after the cgroup entries' (one per such bind, in order), and PID 1
    moves it into place instead of binding :attr:`src`."""
    propagation: int = 0
    """``MS_SHARED``, ``MS_SLAVE``, ``MS_PRIVATE`` or ``MS_UNBINDABLE``, with
    ``MS_REC`` or not, set on the mount once it is in place (an OCI mount's
    option); 0: as the container's root."""


@record
class SystemDir:
    """A host top-level folder shown by the embedded default root."""

    name: str
    """``usr``, ``lib``, ...: bound read-only at ``/NAME``."""
    link: str | None
    """Its symlink target where the host has one (merged /usr), else ``None``."""


@record
class Rlimit:
    """One resource limit, set in PID 1."""

    resource: int
    """``RLIMIT_*`` number."""
    soft: int
    """The soft limit (``RLIM_INFINITY`` for none)."""
    hard: int
    """The hard limit, never above the caller's (checked by the supervisor)."""


@record
class CgroupEntry:
    """A cgroup file the supervisor opened before the clone; its descriptor
    travels with the spawn request, in the same order."""

    kind: str
    """``clone`` (a v2 directory: clone3 starts PID 1 there), ``procs`` (its
    ``cgroup.procs``, written only where clone3 could not be used) or ``tasks``
    (a v1 ``tasks`` file, always written)."""
    path: str
    """Host path, for messages."""


@record
class Tmpfs:
    """A tmpfs of the caller's (docker's ``--tmpfs``); always nosuid and nodev."""

    path: str
    """Container path (resolved inside the new root; created if missing in a filesystem of ours)."""
    options: str
    """The mount's data: ``size=``, ``mode=``, ``nr_inodes=``, ``uid=``, ``gid=`` (checked by ``Spec``)."""
    read_only: bool
    """Mounted read-only."""
    exec: bool
    """Programs may run from it; without it, ``noexec`` (docker's default)."""
    source: str = "tmpfs"
    """Its source as ``/proc/self/mountinfo`` shows it (an OCI mount's ``source``)."""
    propagation: int = 0
    """As :attr:`Bind.propagation`."""


@record
class Device:
    """A device node an OCI bundle lists, made by PID 1 with ``mknod``."""

    path: str
    """Container path (resolved inside the new root)."""
    kind: str
    """``c`` (character), ``b`` (block) or ``p`` (a FIFO)."""
    major: int
    """Its major number (0 for a FIFO)."""
    minor: int
    """Its minor number (0 for a FIFO)."""
    mode: int
    """Its permission bits."""
    uid: int
    """Its owner (a host uid: such a bundle has no user namespace)."""
    gid: int
    """Its group."""


@record
class NsPath:
    """A namespace an OCI bundle joins instead of making one."""

    kind: int
    """Its ``CLONE_NEW*`` flag: net, ipc, uts, mnt or pid."""
    path: str
    """Host path of the namespace (``/proc/PID/ns/net``, ``/run/netns/NAME``)."""


@record
class Sysctl:
    """A kernel parameter of one of the container's own namespaces, written by PID 1."""

    path: str
    """Below ``/proc/sys``: ``net/ipv4/ping_group_range``."""
    value: str
    """What is written."""


@record
class TimeOffset:
    """One clock's offset in the container's time namespace (a line of
    ``/proc/PID/timens_offsets``), relative to the initial time namespace."""

    clock: str
    """``monotonic`` or ``boottime``."""
    seconds: int
    nanoseconds: int
    """``0..999_999_999``, added to :attr:`seconds` (also when that is negative)."""


@record
class SpawnConfig:
    """Everything PID 1 runs from: the Spec's policy, resolved before the clone.

    PID 1 (C) reads exactly these fields, converted into its plan before the
    clone; it has no policy of its own. Descriptors are not part of it: they
    travel beside it (:data:`SPAWN_FIXED_FDS`, then the passed ones, then one
    per :attr:`cgroup` entry, then one per id-mapped :attr:`binds` entry).
    """

    clone_flags: int
    """``CLONE_NEW*`` flags of the clone (no ``CLONE_NEWNET`` with the host's
    network). ``CLONE_NEWUSER`` always, but for an OCI bundle without a user
    namespace, which runs as root of the host's (as runc runs it): the clone
    thread then writes no id maps."""
    argv: list[str]
    """The payload's command."""
    env: list[str]
    """Its environment, ``NAME=value``."""
    search_path: str
    """``$PATH`` inside the container, for the program lookup."""
    cwd: str
    """The working directory, entered as the payload's user."""
    hostname: str
    """Set in the container's UTS namespace; empty (an OCI bundle that sets
    none in a UTS namespace it does not own): left as it is."""
    uid: int
    """The payload's uid inside the container."""
    gid: int
    """The payload's gid inside the container (its only group)."""
    map_base: int
    """First host uid of the container's uids: ``map_uid_inside..`` (``map_size``
    of them) map to ``map_base..`` in ``uid_map`` (written by the clone thread)."""
    map_gid_base: int
    """First host gid of the container's gids, in ``gid_map``: :attr:`map_base`
    again, except rootless, where it is the caller's own gid."""
    map_size: int
    """How many ids that first extent has (1 rootless: the caller's own id)."""
    map_uid_inside: int
    """The container uid that :attr:`map_base` is: 0, except rootless without
    subordinate ids, where the caller's own uid is the payload's."""
    map_gid_inside: int
    """The container gid that :attr:`map_gid_base` is (as :attr:`map_uid_inside`)."""
    uid_helper: str | None
    """Rootless with subordinate ids: the ``newuidmap`` that writes ``uid_map``
    (the kernel lets only a helper with ``CAP_SETUID`` map ids other than the
    caller's, within ``/etc/subuid``'s grant); ``None``: the clone thread
    writes the maps itself."""
    gid_helper: str | None
    """The ``newgidmap`` that writes ``gid_map``, with :attr:`uid_helper`. It
    leaves ``setgroups`` allowed (the grant includes groups), so PID 1 drops
    the caller's supplementary groups as a root-started one does."""
    sub_uid_base: int
    """First subordinate uid: container uids ``1..sub_size`` map to
    ``sub_uid_base..`` (0 with :attr:`sub_size` 0)."""
    sub_gid_base: int
    """First subordinate gid, as :attr:`sub_uid_base`."""
    sub_size: int
    """How many subordinate ids are mapped after the caller's own at 0, or 0.
    A payload uid or gid among them makes PID 1 a clone with memory of its own
    (no ``CLONE_VM``): the change of ids makes the changer's memory
    non-dumpable, which would shut the supervisor's later PID 1s out of their
    maps if that memory were the supervisor's."""
    rootless: bool
    """The supervisor is not root: ``deny`` is written to ``/proc/PID/setgroups``
    before ``gid_map`` (the kernel's condition for an unprivileged map), PID 1
    keeps the caller's supplementary groups (nobody in the namespace can change
    them), and PID 1 stays dumpable until ``execve``: its ``/proc`` files must
    stay the caller's for the clone thread's map writes, and whoever could
    ptrace it (the caller's uid, outside the PID namespace) can ptrace the
    supervisor whose memory it shares anyway."""
    rootfs: str | None
    """Host path of the root (resolved), or ``None`` for the embedded default root."""
    overlay: bool
    """A copy-on-write root over :attr:`rootfs`."""
    read_only_root: bool
    """The root mount read-only (always so for the embedded default root)."""
    tty: bool
    """A terminal of the container's own, its master sent back (``PTY``)."""
    network_request: bool
    """Ask the supervisor for the ``NETWORK`` step (bridge mode)."""
    own_loopback: bool
    """Bring up ``lo`` (false with the host's network)."""
    live_phases: bool
    """Send each phase mark at once instead of holding it back."""
    fault: int
    """Test-only: the phase at which PID 1 fails on purpose, or 0."""
    id_maps_fault: int
    """Test-only: the clone thread's id-map step fails on purpose instead of
    writing the maps (1) or after writing them (2); 0: it does not."""
    capabilities: int
    """The kept capability set, as a mask."""
    last_cap: int
    """The highest capability number the kernel knows (every other one is dropped)."""
    system: list[SystemDir] = field(default_factory=list)
    """The host folders of the embedded default root."""
    binds: list[Bind] = field(default_factory=list)
    """Bind mounts, in order (the supervisor's /etc files first, then the caller's)."""
    rlimits: list[Rlimit] = field(default_factory=list)
    """Resource limits set in PID 1."""
    cgroup: list[CgroupEntry] = field(default_factory=list)
    """The cgroup entry files, one descriptor each after the passed ones."""
    masked_paths: list[str] = field(default_factory=list)
    """Hidden: files under the null device, folders under an empty tmpfs."""
    readonly_paths: list[str] = field(default_factory=list)
    """Made read-only, with nosuid, nodev and noexec."""
    seccomp_bpf: bytes = b""
    """The compiled filter (classic BPF), or empty for none."""
    seccomp_flags: int = 0
    """``SECCOMP_FILTER_FLAG_*``."""
    init: bool = False
    """PID 1 forks the payload (PID 2) at the end of ``EXEC`` and stays as its
    init: it reaps, forwards signals, exits with the payload's status."""
    time_namespace: bool = False
    """Unshare a time namespace at ``SPAWNED``; the payload enters it at execve
    (Linux 6.2+) or, with ``init``, at its fork; asked for only where one of
    those holds."""
    time_offsets: list[TimeOffset] = field(default_factory=list)
    """Its clock offsets (written before anyone enters it); none: the initial
    namespace's clocks."""
    tmpfs: list[Tmpfs] = field(default_factory=list)
    """The caller's tmpfs mounts, after the standard ones and before :attr:`binds`."""
    hosts: str | None = None
    """The text of the container's ``/etc/hosts``, written by PID 1 into its
    staging root and bound read-only over the root's own (before the caller's
    binds); ``None``: the root's own file, or the bridge's bind."""
    sysctls: list[Sysctl] = field(default_factory=list)
    """Kernel parameters written through the container's fresh ``/proc``
    right after it is mounted (only those of its own namespaces)."""
    groups: list[int] = field(default_factory=list)
    """The payload's supplementary groups (container gids; none by default)."""
    start_gate: bool = False
    """OCI ``create``: PID 1 outlives the process that cloned it (no
    parent-death signal, memory of its own). Its last descriptor is a
    listening socket: at the end of ``EXEC``, the program found, PID 1 asks
    for ``EXEC`` (a request, answered once the container is recorded as
    created), then waits for one connection there whose first record is the
    ``ACK`` of ``EXEC`` (``start``), and reports the rest on it."""
    inheritable: int = 0
    """The payload's inheritable set, as a mask (within :attr:`capabilities`;
    0, but for an OCI bundle that lists some)."""
    ambient: int = 0
    """Its ambient set (within :attr:`inheritable`; 0, but for an OCI bundle).
    A payload uid other than 0 keeps these in its effective and permitted
    sets (PID 1 keeps them across the uid switch), and only these."""
    no_new_privs: bool = True
    """``PR_SET_NO_NEW_PRIVS`` before ``execve``: always, but for an OCI
    bundle whose ``noNewPrivileges`` is false. With a seccomp filter, PID 1
    then keeps ``CAP_SYS_ADMIN`` until the filter is loaded (the kernel's
    condition without ``no_new_privs``) and drops it with one ``capset``
    right after, which the filter must allow."""
    mount_order: str = ""
    """An OCI bundle's mounts in its config's order, one letter each: ``p``
    ``/proc``, ``d`` ``/dev`` (a tmpfs with the standard nodes), ``t``
    ``/dev/pts``, ``q`` ``/dev/mqueue`` (the IPC namespace's message queues),
    ``s`` ``/sys``, ``T`` the next of :attr:`tmpfs`, ``B`` the next of
    :attr:`binds`; ``p``, ``d``, ``t`` and ``s`` once each. Empty: the
    library's order (``/proc``, ``/dev`` with ``/dev/pts`` and ``/dev/shm``,
    ``/sys``, ``/tmp``, then :attr:`tmpfs`, then :attr:`binds`), without
    ``/dev/mqueue``."""
    umask: int = -1
    """The payload's file mode creation mask, set at ``IDENTITY``; -1: the caller's."""
    join: bool = False
    """OCI ``exec``: enter a running container instead of making one. The
    last descriptor is a pidfd of its PID 1: the clone enters its PID
    namespace and (by :attr:`cgroup`) its cgroup, then one ``setns`` on the
    pidfd the namespaces of :attr:`clone_flags`; from ``CAPABILITIES`` on,
    the setup is a new container's. Outlives the caller, as
    :attr:`start_gate` does."""
    map_gid_size: int = 0
    """How many gids the first extent of ``gid_map`` has, where that differs
    from :attr:`map_size` (an OCI bundle's maps); 0: :attr:`map_size`."""
    rootfs_propagation: int = 0
    """An OCI bundle's ``linux.rootfsPropagation``: ``MS_SHARED``,
    ``MS_SLAVE``, ``MS_PRIVATE`` or ``MS_UNBINDABLE``, with ``MS_REC`` or not
    (``rshared``...), set on the container's root after the pivot. With
    ``MS_SHARED`` or ``MS_SLAVE`` the tree is made a slave of the host's
    instead of private before the first mount, so that the host's later
    mounts reach it and none of the container's reach the host. 0: private."""
    ns_paths: list[NsPath] = field(default_factory=list)
    """An OCI bundle's namespaces by path (none also in :attr:`clone_flags`),
    for a bundle without a user namespace of its own: PID 1 enters them
    first, as root of the host's user namespace, and the clone thread clones
    it into a PID namespace among them."""
    devices: list[Device] = field(default_factory=list)
    """An OCI bundle's device nodes (without a user namespace of its own):
    made after its mounts and before the masks, each replacing what is at
    its path."""


def c_header() -> str:
    """``sv_protocol.h``: these declarations for PID 1's C code (the build renders it)."""
    ctypes_of = {"I": "uint32_t", "i": "int32_t", "Q": "uint64_t"}
    lines = [
        "/* Rendered from supervisor/_protocol.py when the package is built. */",
        "#ifndef SV_PROTOCOL_H",
        "#define SV_PROTOCOL_H",
        "#include <stdint.h>",
        "",
        "enum sv_phase {",
        *(f"    SV_PHASE_{p.name} = {int(p)}," for p in Phase),
        "};",
        "",
        "enum sv_record {",
        *(f"    SV_REC_{r.name} = {int(r)}," for r in Record),
        "};",
        "",
    ]
    for layout in (HEADER, MARK):
        lines.append(f"struct {layout.c_name} {{")
        lines += [f"    {ctypes_of[f]} {name};" for name, f, _d in layout.fields]
        lines += ["};", f'_Static_assert(sizeof(struct {layout.c_name}) == {layout.struct.size}, "layout");', ""]
    lines += [
        f'#define SV_SETUP_COMM "{SETUP_COMM.decode()}"',
        f"#define SV_SPAWN_FIXED_FDS {SPAWN_FIXED_FDS}",
        f"#define SV_MAX_PASS_FDS {MAX_PASS_FDS}",
        f"#define SV_MAX_CGROUP_FDS {MAX_CGROUP_FDS}",
        f"#define SV_MAX_IDMAPPED {MAX_IDMAPPED}",
        f"#define SV_MAX_FDS {MAX_FDS}",
        f"#define SV_MAX_MARKS {MAX_MARKS}",
        f"#define SV_MAX_MESSAGE {MAX_MESSAGE}",
        "",
        "static inline const char *sv_phase_label(uint32_t phase)",
        "{",
        "    switch (phase) {",
        *(f'    case {int(p)}: return "{p.label}";' for p in Phase),
        '    default: return "unknown";',
        "    }",
        "}",
        "",
        "#endif",
        "",
    ]
    return "\n".join(lines)


# Room for the descriptors of one record: PID 1 sends one at most (PTY); a
# few more are read (and closed) rather than silently cut.
_FD_SPACE = socket.CMSG_SPACE(4 * array.array("i").itemsize)


def recv_raw(sock: socket.socket) -> tuple[bytes, list[int]]:
    """One raw record and its fds; ``b""`` means end-of-file."""
    data, ancdata, _flags, _addr = sock.recvmsg(MAX_RECORD, _FD_SPACE, socket.MSG_CMSG_CLOEXEC)
    fds: list[int] = []
    for level, kind, payload in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            arr = array.array("i")
            arr.frombytes(payload[: len(payload) - (len(payload) % arr.itemsize)])
            fds.extend(arr)
    return data, fds
