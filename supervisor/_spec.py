"""What a container is: the frozen, validated :class:`Spec`.

Validation happens in the constructors (the field rules are in
:mod:`._spec_rules`), so a bad value raises :class:`ValueError`/:class:`TypeError`
naming the field before anything starts. Checks that need the host (does the
rootfs exist?) run in :meth:`Spec.check_host`, which the supervisor calls
before spawning.
"""

from __future__ import annotations

import os
import resource
import time
from collections.abc import Mapping, Sequence

from . import _capabilities as _caps
from ._limits import Limits
from ._mount import Mount
from ._privileges import is_rootless, rootless_refusal, subid_grant
from ._publish import Publish
from ._record import field, record
from ._spec_rules import (
    DEFAULT_SUBNET,
    MAX_GRACE_PERIOD_S,
    MAX_TMPFS,
    TIME_OFFSET_CLOCKS,
    TIME_OFFSET_MAX_S,
    check_fields,
)
from ._spec_rules import field_error as _field_error
from ._spec_rules import rlim_gt as _rlim_gt
from ._spec_rules import rlim_str as _rlim_str
from ._sys.linux import real_dir

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (3 ms for a command line)
if TYPE_CHECKING:
    from typing import Any


def _jsonable(value: Any) -> Any:
    """A field's value as JSON has it (see :meth:`Spec.to_json`)."""
    names = getattr(type(value), "__record_names__", None)
    if names is not None:
        return {name: _jsonable(getattr(value, name)) for name in names}
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


@record
class Spec:
    """A frozen, validated description of one container.

    Args:
        command: the payload's argv, a list of strings (never split on
            whitespace); ``command[0]`` is looked up in the container's PATH
            unless it contains a slash.
        rootfs: host directory to use as the container's root, or ``None`` for
            the embedded default root (a read-only view of the host's ``/usr``,
            ``/bin``, ``/sbin``, ``/lib*`` and ``/etc``, with fresh ``/tmp``,
            ``/proc``, ``/dev`` and an empty home).
        hostname: the container's hostname; ``None`` picks a crabcan-style
            ``adjective-noun-N``, unique among the supervisor's live containers.
        uid: the uid the payload runs as inside the container (crabcan's
            ``--uid``).
        gid: its gid (defaults to ``uid``, as in crabcan).
        mounts: extra bind mounts (:class:`Mount`), at distinct targets, none
            at or below ``/proc`` or ``/sys`` (the container's own procfs and
            sysfs, as runc refuses).
        env: variables added to the clean default environment (``PATH``,
            ``HOME``, ``TERM``, ``HOSTNAME``); they win over the defaults.
        cwd: working directory inside the container (absolute).
        read_only: mount the root read-only (the embedded default root always is).
        overlay: give the container a copy-on-write view of ``rootfs``: any
            number of containers can share one base, each one's writes go to
            a private tmpfs and are discarded at exit (the host folder is never
            written; mount points may then be created). Needs ``rootfs``.
        tty: give the payload a terminal (a pty from the container's own
            devpts) as stdin, stdout and stderr; the supervisor relays it.
        map_base: first host uid/gid of the range the container's ids map to
            (the same range for every container by default), or ``"auto"``: a
            range of its own, leased from a pool shared by every supervisor of
            the host (from 2**30 up, in slots of 65536 ids) and given back at
            the end, so that no two live containers share a host user.
        map_size: size of that range; container ids ``0..map_size-1`` exist.
        grace_period: seconds between SIGTERM and SIGKILL when the container is
            stopped or cancelled (0 to 3600: the stop waits it out under a
            shield).
        limits: cgroup limits (memory, memory+swap, CPU quota and weight,
            pids); ``Limits.crabcan()`` is crabcan's preset. Every container
            gets a cgroup of its own even without limits, for accounting.
        cap_add: capabilities added to the default kept set (names in any
            case, with or without ``CAP_``, or ``"ALL"``); see
            :data:`supervisor._capabilities.DEFAULT_CAPS`.
        cap_drop: capabilities removed from it (``"ALL"`` keeps none).
        seccomp: ``"default"`` (crabcan's filter, corrected), ``"unconfined"``,
            or the path of an OCI/Docker seccomp JSON profile.
        rlimits: resource limits for the container, ``{"NOFILE": (soft, hard)}``
            (names in any case, with or without ``RLIMIT_``;
            ``resource.RLIM_INFINITY`` for unlimited); never above the caller's
            own hard limit. Limits not named are inherited unchanged.
        network: ``"none"`` (default: a network namespace of its own with only
            loopback), ``"bridge"`` (plus a veth on a host-local bridge owned by
            the supervisor, an address from ``subnet``, a default route via the
            bridge, ``/etc/hosts`` and ``/etc/resolv.conf``), or ``"host"`` (the
            supervisor's own network namespace: **unsafe**, the container sees
            and may use every host interface). See ``docs/networking.rst``.
        ip: a fixed IPv4 address in ``subnet`` (bridge mode only); ``None``
            allocates a free one.
        subnet: the bridge's IPv4 subnet; the bridge has its first address,
            containers get the others. Containers of any supervisor that use
            the same subnet share one bridge and one address pool.
        publish: ports forwarded from the host to the container
            (:class:`Publish`, or strings for :meth:`Publish.parse`); bridge mode
            only.
        init: run a tiny init as PID 1 (docker's ``--init``): the payload is
            then PID 2, so its signals have their default actions (a
            ``SIGTERM`` from a stop ends a payload that has no handler for it
            instead of being ignored), every orphaned process in the container
            is reaped, the signals the container gets are forwarded to the
            payload, and the container exits with the payload's status (its
            exit code, or 128+N when signal N killed it). Without it, the
            payload is PID 1: it ignores every signal it has no handler for,
            and a stop sends such a payload ``SIGKILL`` at once, without a
            grace period. Not with a memory limit (yet): the init runs in
            the supervisor's memory, and an out-of-memory kill of it would
            kill the supervisor.
        time_offsets: shift the container's ``CLOCK_MONOTONIC`` and
            ``CLOCK_BOOTTIME`` (and ``/proc/uptime``) by these seconds against
            the supervisor's, ``{"monotonic": S, "boottime": S}`` (either key
            may be left out; numbers within about 100 years either way; the
            shifted clock may not go below zero). Every container gets a time
            namespace of its own where the kernel has them (Linux 6.2+, whose
            ``execve`` enters it; from 5.6 only with ``init``, whose forked
            payload enters it); without offsets its clocks are the
            supervisor's. Offsets where the payload would not be in the
            namespace are refused (``check_host``).
            ``CLOCK_REALTIME`` is never namespaced.
        tmpfs: extra tmpfs mounts, docker's ``--tmpfs``: container path to
            options, a comma-separated list of ``size=`` (bytes, or with
            ``k``/``m``/``g`` or ``%`` of memory), ``mode=`` (octal),
            ``nr_inodes=``, ``uid=``, ``gid=`` (container ids) and ``ro``,
            ``rw``, ``exec``, ``noexec``. Always ``nosuid`` and ``nodev``, and
            ``noexec`` unless ``exec`` is given, as in docker; an empty string is
            a writable tmpfs of half the memory. Mounted after ``/tmp`` (which
            one may replace) and before ``mounts`` (which may go inside one).
        cgroup_parent: docker's ``--cgroup-parent``: the cgroup (a path as
            ``/proc/self/cgroup`` names one, such as ``"/supervisor"``) below
            which the container's cgroup v2 directory is made, instead of
            below the supervisor's own. Missing directories are created, each
            enabling the cpu, memory and pids controllers for its children,
            and left in place. On cgroup v2 the kernel lets a cgroup other
            than the root hand controllers to its children only while it
            holds no process, so a supervisor in a systemd unit gets v2 limits
            this way (see ``docs/resources.rst``). ``None``: below the
            supervisor's own cgroup. The v1 hierarchies are not affected.
            Rootless, the only way to a cgroup: it must lie in a v2 subtree
            delegated to the caller (see ``docs/rootless.rst``).

    Raises:
        TypeError: a field has the wrong type (the message names it).
        ValueError: a field has a bad value (the message names it).
    """

    command: Sequence[str]
    rootfs: str | None = None
    hostname: str | None = None
    uid: int = 0
    gid: int | None = None
    mounts: Sequence[Mount] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: str = "/"
    read_only: bool = False
    tty: bool = False
    overlay: bool = False
    map_base: int | str = 100_000
    map_size: int = 65_536
    grace_period: float = 5.0
    limits: Limits | None = None
    cap_add: Sequence[str] = ()
    cap_drop: Sequence[str] = ()
    seccomp: str = "default"
    rlimits: Mapping[str, tuple[int, int]] = field(default_factory=dict)
    network: str = "none"
    ip: str | None = None
    subnet: str = DEFAULT_SUBNET
    publish: Sequence[Publish] = ()
    init: bool = False
    time_offsets: Mapping[str, float] = field(default_factory=dict)
    tmpfs: Mapping[str, str] = field(default_factory=dict)
    cgroup_parent: str | None = None

    def __post_init__(self) -> None:
        check_fields(self)

    @property
    def capabilities(self) -> frozenset[int]:
        """The capability numbers kept in the container (from cap_add/cap_drop)."""
        return _caps.resolve(self.cap_add, self.cap_drop)

    def check_host(self) -> None:
        """Check what the host must provide: the rootfs and mount sources.

        Raises:
            ValueError: naming the field whose path is missing.
        """
        if self.rootfs is not None:
            # Resolved first, then checked: a symlink to / is the host's root.
            resolved = real_dir(self.rootfs)
            if resolved is None:
                raise _field_error("rootfs", f"{self.rootfs} is not an existing directory")
            if resolved == "/":
                raise _field_error("rootfs", f"{self.rootfs} is the host's root (leave rootfs unset for a view of it)")
        for m in self.mounts:
            if not os.path.exists(m.source):
                raise _field_error("mounts", f"source {m.source} does not exist")
        if self.seccomp not in ("default", "unconfined") and not os.path.isfile(self.seccomp):
            raise _field_error("seccomp", f"profile {self.seccomp} is not an existing file")
        if self.time_offsets:
            from ._sys import linux

            if not linux.has_time_namespaces():
                raise _field_error("time_offsets", "this kernel has no time namespaces (Linux 5.6+, CONFIG_TIME_NS)")
            if not (self.init or linux.exec_enters_time_namespace()):
                raise _field_error(
                    "time_offsets",
                    f"this kernel ({os.uname().release}) does not move an exec'd program into its time"
                    " namespace (Linux 6.2+): give init=True (--init), whose forked payload enters it",
                )
            for clock, value in self.time_offsets.items():
                now = time.clock_gettime(TIME_OFFSET_CLOCKS[clock])
                if now + value < 0:
                    raise _field_error(
                        "time_offsets",
                        f"{clock}={value} would put the container's clock below zero (it reads {now:.0f} s here)",
                    )
        if is_rootless():
            self.check_rootless()
        for name, (soft, hard) in self.rlimits.items():
            _cur_soft, cur_hard = resource.getrlimit(getattr(resource, "RLIMIT_" + name))
            if _rlim_gt(hard, cur_hard) or _rlim_gt(soft, cur_hard):
                raise _field_error(
                    "rlimits",
                    f"{name}: {soft}:{hard} is above the caller's own hard limit {_rlim_str(cur_hard)} "
                    "(a container never gets more than its supervisor)",
                )

    def check_rootless(self) -> None:
        """Refuse, naming the field, what a rootless supervisor cannot give.

        Raises:
            ValueError: the Spec asks for one of those (the message says why).
        """
        refused = (  # (the field named, why: a key of rootless_refusal's, whether asked for)
            ("limits", "limits", self.limits is not None and self.cgroup_parent is None and not _delegated()),
            ("network", "network", self.network == "bridge"),
            ("map_base", "map_base", self.map_base == "auto"),
            ("mounts", "idmap", any(m.idmap for m in self.mounts)),
            ("init", "init", self.init),
            ("mounts", "procfs", any(_on_procfs(m.source) for m in self.mounts)),
        )
        for name, why, wrong in refused:
            if wrong:
                raise _field_error(name, rootless_refusal(why))
        grant = subid_grant() if self.map_size > 1 else None
        if grant is not None:  # else the caller's own ids are the payload's, whatever they are
            top = min(self.map_size - 1, grant.size)
            for name, value in (("uid", self.uid), ("gid", self.gid if self.gid is not None else self.uid)):
                if value > top:
                    raise _field_error(
                        name,
                        f"{value} is not mapped: rootless, container id 0 is your own and 1..{top} your "
                        "subordinate ids (/etc/subuid, /etc/subgid)",
                    )

    def to_json(self) -> dict[str, Any]:
        """The spec as a JSON-ready dict (for the CLI's ``--json`` and events).

        Every field, by its name, derived from the field list itself, so that
        no field can be left out: records (:class:`Mount`, :class:`Publish`,
        :class:`Limits`) as objects of their fields, sequences as lists,
        mappings as objects.
        """
        return {name: _jsonable(getattr(self, name)) for name in type(self).__record_names__}  # type: ignore[attr-defined]


def _delegated() -> bool:
    """Whether a cgroup v2 subtree is delegated to the (rootless) caller above its own cgroup."""
    from ._parent import cgroups

    return cgroups.delegated_parent(cgroups.detect()) is not None


def _on_procfs(path: str) -> bool:
    """Whether ``path`` is on the host's /proc (a bind of it would show the
    caller's own processes, whose uid a rootless container's root is)."""
    try:
        return os.stat(path).st_dev == os.stat("/proc").st_dev
    except OSError:
        return False


__all__ = [
    "MAX_GRACE_PERIOD_S",
    "MAX_TMPFS",
    "TIME_OFFSET_CLOCKS",
    "TIME_OFFSET_MAX_S",
    "Mount",
    "Publish",
    "Spec",
]
