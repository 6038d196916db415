"""What a container is: the frozen, validated :class:`Spec` and :class:`Mount`.

Validation happens in the constructors, so a bad value raises
:class:`ValueError`/:class:`TypeError` naming the field before anything starts.
Checks that need the host (does the rootfs exist?) run in
:meth:`Spec.check_host`, which the supervisor calls before spawning.
"""

from __future__ import annotations

import math
import os
import re
import resource
import time
from collections.abc import Mapping, Sequence
from types import MappingProxyType

from . import _capabilities as _caps
from ._limits import Limits, is_cgroup_name
from ._protocol import MAX_IDMAPPED
from ._record import field, record

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (3 ms for a command line)
if TYPE_CHECKING:
    from typing import Any

#: The clocks a time namespace shifts (``Spec.time_offsets`` keys), as ``time`` ids.
TIME_OFFSET_CLOCKS = {"monotonic": time.CLOCK_MONOTONIC, "boottime": time.CLOCK_BOOTTIME}
#: The largest offset taken, either way (100 years; the kernel's own bound is
#: about 146 years for the shifted clock).
TIME_OFFSET_MAX_S = 100 * 365 * 86400

#: ``Spec.tmpfs`` options that are mount data, each with the form of its value.
_TMPFS_DATA = {
    "size": re.compile(r"^[0-9]+[kKmMgG%]?$"),
    "nr_inodes": re.compile(r"^[0-9]+[kKmMgG]?$"),
    "mode": re.compile(r"^[0-7]{3,4}$"),
    "uid": re.compile(r"^[0-9]+$"),
    "gid": re.compile(r"^[0-9]+$"),
}
#: ``Spec.tmpfs`` options that are mount flags.
_TMPFS_FLAGS = ("ro", "rw", "exec", "noexec", "nosuid", "nodev")
#: Most ``Spec.tmpfs`` entries.
MAX_TMPFS = 8

#: The longest ``Spec.grace_period`` (an hour).
MAX_GRACE_PERIOD_S = 3600

#: Container paths no bind may cover: they are the container's own procfs
#: and sysfs, and a bind there (the host's /proc, say) would show the host's
#: (runc refuses them too).
_KERNEL_FILESYSTEMS = ("/proc", "/sys")

#: ``Spec.subnet``'s default, valid as written.
_DEFAULT_SUBNET = "10.88.0.0/16"

_HOSTNAME_RE = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)(\.(?!-)[A-Za-z0-9-]{1,63}(?<!-))*$")
_ENV_KEY_RE = re.compile(r"^[^=\x00]+$")


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


def _field_error(name: str, message: str) -> ValueError:
    return ValueError(f"Spec.{name}: {message}")


def _rlim_gt(a: int, b: int) -> bool:
    """``a > b`` for rlimit values, where RLIM_INFINITY is above everything."""
    if a == resource.RLIM_INFINITY:
        return b != resource.RLIM_INFINITY
    return b != resource.RLIM_INFINITY and a > b


def _rlim_str(value: int) -> str:
    return "unlimited" if value == resource.RLIM_INFINITY else str(value)


@record
class Mount:
    """A bind mount of a host path into the container (crabcan's ``--add``).

    The container's ids are host ids nobody owns (``Spec.map_base``..., 100000
    and up by default), so in a plain bind the host's files belong to no one
    the container knows: it reads and writes them through their "others"
    permission bits, and what it creates belongs to host uid 100000. An
    *id-mapped* bind (Linux 5.12+, a filesystem that supports it: ext4, xfs,
    btrfs, tmpfs 6.3+...) shows the files of the source's owner as the
    payload's own, and the payload's writes land on the host as that owner,
    as ``git`` and build tools expect of a work folder.

    Args:
        source: host path; must exist when the container starts.
        target: absolute path inside the container.
        read_only: mount read-only (recursively).
        idmap: ``True``: id-mapped (refused where the kernel or the filesystem
            cannot); ``False``: never; ``None`` (the default): id-mapped when
            the bind is writable, the source is owned by a user other than
            the host's root, and its filesystem supports it. A root-owned
            source is id-mapped only when asked, since the container would
            then write as the host's root (see docs/security).

    Raises:
        ValueError: ``target`` is not absolute, or either path is empty.
        TypeError: a path is not a string or path-like.
    """

    source: str
    target: str
    read_only: bool = False
    idmap: bool | None = None

    def __post_init__(self) -> None:
        for name in ("source", "target"):
            value = getattr(self, name)
            if not isinstance(value, (str, os.PathLike)):
                raise TypeError(f"Mount.{name} must be a path, not {type(value).__name__}")
            value = os.fspath(value)
            if not isinstance(value, str) or not value or "\x00" in value:
                raise ValueError(f"Mount.{name} must be a non-empty path without NUL bytes")
            object.__setattr__(self, name, value)
        if not self.target.startswith("/"):
            raise ValueError(f"Mount.target must be absolute, got {self.target!r}")
        if not self.target.strip("/"):  # "/", "//" (normpath keeps a leading "//")
            raise ValueError("Mount.target cannot be / (use Spec.rootfs)")
        if not isinstance(self.read_only, bool):
            raise TypeError("Mount.read_only must be a bool")
        if self.idmap is not None and not isinstance(self.idmap, bool):
            raise TypeError("Mount.idmap must be a bool or None")

    @classmethod
    def parse(cls, text: str) -> Mount:
        """Parse docker's ``SRC:DST[:OPTIONS]`` (crabcan's ``--add`` ``from:to``).

        ``OPTIONS`` is a comma-separated list of ``ro`` or ``rw``, and
        ``idmap`` or ``noidmap`` (podman's names).

        Raises:
            ValueError: not of that form.
        """
        parts = text.split(":")
        if len(parts) == 2:
            src, dst, options = parts[0], parts[1], []
        elif len(parts) == 3:
            src, dst, options = parts[0], parts[1], parts[2].split(",")
        else:
            raise ValueError(f"mount {text!r} is not SRC:DST[:OPTIONS]")
        read_only, idmap = False, None
        for option in options:
            if option in ("ro", "rw"):
                read_only = option == "ro"
            elif option in ("idmap", "noidmap"):
                idmap = option == "idmap"
            else:
                raise ValueError(f"mount {text!r}: unknown option {option!r} (ro, rw, idmap, noidmap)")
        return cls(os.path.abspath(src) if src else src, dst, read_only, idmap)


@record
class Publish:
    """A published port: the supervisor forwards ``host_ip:host_port`` to the container.

    Only for ``Spec(network="bridge")``. The supervisor itself listens on the
    host side and relays each TCP connection (or UDP datagram) to
    ``container_port`` on the container's address; the proxy ends with the
    container.

    Args:
        host_port: the port the supervisor listens on (1-65535).
        container_port: the port inside the container (1-65535).
        protocol: ``"tcp"`` or ``"udp"``.
        host_ip: the host address to listen on (default loopback only).

    Raises:
        ValueError: a port is out of range, the protocol unknown, or
            ``host_ip`` is not an IP address.
        TypeError: a field has the wrong type.
    """

    host_port: int
    container_port: int
    protocol: str = "tcp"
    host_ip: str = "127.0.0.1"

    def __post_init__(self) -> None:
        for name in ("host_port", "container_port"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise TypeError(f"Publish.{name} must be an int")
            if not 1 <= value <= 65535:
                raise ValueError(f"Publish.{name}: {value} is not a port (1-65535)")
        if not isinstance(self.protocol, str) or self.protocol.lower() not in ("tcp", "udp"):
            raise ValueError(f"Publish.protocol must be 'tcp' or 'udp', not {self.protocol!r}")
        object.__setattr__(self, "protocol", self.protocol.lower())
        if not isinstance(self.host_ip, str):
            raise TypeError("Publish.host_ip must be a str")
        import ipaddress

        try:
            ipaddress.ip_address(self.host_ip)
        except ValueError:
            raise ValueError(f"Publish.host_ip: {self.host_ip!r} is not an IP address") from None

    @classmethod
    def parse(cls, text: str) -> Publish:
        """Parse docker's ``[HOST_IP:]HOSTPORT:CONTAINERPORT[/tcp|/udp]``.

        Args:
            text: for example ``"8080:80"``, ``"5353:53/udp"`` or
                ``"127.0.0.2:8080:80"``.

        Returns:
            the :class:`Publish`.

        Raises:
            ValueError: not of that form.
        """
        spec, _, proto = text.partition("/")
        parts = spec.rsplit(":", 2)
        try:
            if len(parts) == 2:
                return cls(int(parts[0]), int(parts[1]), proto or "tcp")
            if len(parts) == 3 and parts[0]:
                return cls(int(parts[1]), int(parts[2]), proto or "tcp", parts[0].strip("[]"))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"publish {text!r}: {exc}") from None
        raise ValueError(f"publish {text!r} is not [HOST_IP:]HOSTPORT:CONTAINERPORT[/tcp|udp]")


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
    subnet: str = _DEFAULT_SUBNET
    publish: Sequence[Publish] = ()
    init: bool = False
    time_offsets: Mapping[str, float] = field(default_factory=dict)
    tmpfs: Mapping[str, str] = field(default_factory=dict)
    cgroup_parent: str | None = None

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        # command
        if isinstance(self.command, (str, bytes)) or not isinstance(self.command, Sequence):
            raise TypeError(f"Spec.command must be a list of str, not {type(self.command).__name__}")
        if not self.command:
            raise _field_error("command", "must not be empty")
        for arg in self.command:
            if not isinstance(arg, str):
                raise TypeError(f"Spec.command items must be str, not {type(arg).__name__}")
            if "\x00" in arg:
                raise _field_error("command", "arguments cannot contain NUL bytes")
        if not self.command[0]:
            raise _field_error("command", "the program name is empty")
        set_(self, "command", tuple(self.command))
        # rootfs
        if self.rootfs is not None:
            if not isinstance(self.rootfs, (str, os.PathLike)):
                raise TypeError(f"Spec.rootfs must be a path or None, not {type(self.rootfs).__name__}")
            rootfs = os.fspath(self.rootfs)
            if not isinstance(rootfs, str) or not rootfs:
                raise _field_error("rootfs", "must be a non-empty path")
            set_(self, "rootfs", os.path.abspath(rootfs))
        # hostname
        if self.hostname is not None:
            if not isinstance(self.hostname, str):
                raise TypeError("Spec.hostname must be a str or None")
            if len(self.hostname) > 64 or not _HOSTNAME_RE.match(self.hostname):
                raise _field_error("hostname", f"{self.hostname!r} is not a valid hostname")
        # ids
        for name in ("map_base", "map_size"):
            value = getattr(self, name)
            if name == "map_base" and value == "auto":
                continue
            if not isinstance(value, int) or isinstance(value, bool):
                raise TypeError(f"Spec.{name} must be an int" + (" or 'auto'" if name == "map_base" else ""))
        if not isinstance(self.map_base, int):  # "auto"
            if not 1 <= self.map_size <= 1 << 24:
                raise _field_error("map_size", "with map_base='auto', from 1 to 2**24 ids")
        elif self.map_base < 1:
            raise _field_error("map_base", "must be >= 1 (host root is never mapped)")
        elif not 1 <= self.map_size <= 2**32 - 1 - self.map_base:
            raise _field_error("map_size", "out of range")
        gid = self.uid if self.gid is None else self.gid
        for name, value in (("uid", self.uid), ("gid", gid)):
            if not isinstance(value, int) or isinstance(value, bool):
                raise TypeError(f"Spec.{name} must be an int")
            if not 0 <= value < self.map_size:
                raise _field_error(name, f"{value} is outside the mapped range 0..{self.map_size - 1}")
        set_(self, "gid", gid)
        # mounts
        if isinstance(self.mounts, (str, bytes)) or not isinstance(self.mounts, Sequence):
            raise TypeError("Spec.mounts must be a list of Mount")
        mounts = []
        targets: set[str] = set()
        for m in self.mounts:
            if not isinstance(m, Mount):
                raise TypeError(f"Spec.mounts items must be Mount (see Mount.parse), not {type(m).__name__}")
            target = os.path.normpath("/" + m.target.lstrip("/"))
            if target in targets:
                raise _field_error("mounts", f"two mounts at {target} (the second would hide the first)")
            targets.add(target)
            for kernel in _KERNEL_FILESYSTEMS:
                if target == kernel or target.startswith(kernel + "/"):
                    raise _field_error("mounts", f"{m.target} is in the container's own {kernel}: no bind may cover it")
            mounts.append(m)
        if sum(m.idmap is True for m in mounts) > MAX_IDMAPPED:
            raise _field_error("mounts", f"at most {MAX_IDMAPPED} binds may ask for idmap")
        set_(self, "mounts", tuple(mounts))
        # env
        if not isinstance(self.env, Mapping):
            raise TypeError("Spec.env must be a mapping of str to str")
        for key, value in self.env.items():
            if not isinstance(key, str) or not isinstance(value, str):
                raise TypeError("Spec.env keys and values must be str")
            if not _ENV_KEY_RE.match(key) or "\x00" in value:
                raise _field_error("env", f"invalid variable {key!r}")
        set_(self, "env", MappingProxyType(dict(self.env)))
        self._check_limits()
        # cwd
        if not isinstance(self.cwd, str):
            raise TypeError("Spec.cwd must be a str")
        if not self.cwd.startswith("/") or "\x00" in self.cwd:
            raise _field_error("cwd", f"must be an absolute path, got {self.cwd!r}")
        # flags and numbers
        for name in ("read_only", "tty", "overlay", "init"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"Spec.{name} must be a bool")
        if self.init and self.limits is not None and self.limits.memory_bytes is not None:
            # The init runs in the supervisor's memory (it is cloned with
            # CLONE_VM and never execs): in the container's memory cgroup it
            # would be the OOM killer's first choice, and the kernel kills
            # every process sharing a victim's memory, the supervisor too.
            raise _field_error(
                "init",
                "cannot be combined with a memory limit yet: the init shares the supervisor's memory, so an "
                "out-of-memory kill in the container would kill the supervisor",
            )
        if self.overlay:
            if self.rootfs is None:
                raise _field_error("overlay", "needs a rootfs (the embedded default root is already read-only)")
            if any(ch in self.rootfs for ch in ",:\\"):
                raise _field_error("overlay", f"the rootfs path {self.rootfs!r} cannot contain ',', ':' or '\\'")
        if not isinstance(self.grace_period, (int, float)) or isinstance(self.grace_period, bool):
            raise TypeError("Spec.grace_period must be a number")
        # Bounded: a stop waits it out under a shield, and every wait in
        # cleanup must end.
        if not 0 <= self.grace_period <= MAX_GRACE_PERIOD_S:
            raise _field_error(
                "grace_period", f"must be from 0 to {MAX_GRACE_PERIOD_S} seconds, not {self.grace_period}"
            )
        self._validate_hardening()
        self._validate_network()
        self._validate_time_offsets()
        self._validate_tmpfs()
        self._validate_cgroup_parent()

    def _validate_cgroup_parent(self) -> None:
        """cgroup_parent: an absolute cgroup path of plain directory names."""
        if self.cgroup_parent is None or self.cgroup_parent == "/":
            return
        if not isinstance(self.cgroup_parent, str):
            raise TypeError("Spec.cgroup_parent must be a str (a cgroup path such as '/supervisor') or None")
        names = self.cgroup_parent.strip("/").split("/")
        if (
            not self.cgroup_parent.startswith("/")
            or len(self.cgroup_parent) > 4096
            or not all(is_cgroup_name(name) for name in names)
        ):
            raise _field_error(
                "cgroup_parent",
                f"{self.cgroup_parent!r} is not an absolute cgroup path of plain names (such as '/supervisor')",
            )
        object.__setattr__(self, "cgroup_parent", "/" + "/".join(names))

    def _validate_tmpfs(self) -> None:
        """tmpfs: absolute paths, docker's options (data and flags), at most MAX_TMPFS."""
        if not isinstance(self.tmpfs, Mapping):
            raise TypeError("Spec.tmpfs must be a mapping of container path to options, such as {'/run': 'size=64m'}")
        if len(self.tmpfs) > MAX_TMPFS:
            raise _field_error("tmpfs", f"at most {MAX_TMPFS} tmpfs mounts")
        out: dict[str, str] = {}
        for path, options in self.tmpfs.items():
            if not isinstance(path, str) or not isinstance(options, str):
                raise TypeError("Spec.tmpfs keys (paths) and values (options) must be str")
            if not path.startswith("/") or not path.strip("/") or "\x00" in path:
                raise _field_error("tmpfs", f"{path!r} is not an absolute path below /")
            for option in filter(None, options.split(",")):
                name, sep, value = option.partition("=")
                if sep and name in _TMPFS_DATA:
                    if not _TMPFS_DATA[name].match(value):
                        raise _field_error("tmpfs", f"{path}: {option!r} has a bad value")
                elif sep or option not in _TMPFS_FLAGS:
                    known = ", ".join([*_TMPFS_FLAGS, *(f"{k}=" for k in _TMPFS_DATA)])
                    raise _field_error("tmpfs", f"{path}: unknown option {option!r} ({known})")
            out[path] = options
        object.__setattr__(self, "tmpfs", MappingProxyType(out))

    def _validate_time_offsets(self) -> None:
        """time_offsets: known clocks, finite numbers within TIME_OFFSET_MAX_S."""
        if not isinstance(self.time_offsets, Mapping):
            raise TypeError("Spec.time_offsets must be a mapping such as {'monotonic': 3600, 'boottime': 3600}")
        offsets: dict[str, float] = {}
        for clock, value in self.time_offsets.items():
            if clock not in TIME_OFFSET_CLOCKS:
                raise _field_error("time_offsets", f"unknown clock {clock!r} (only monotonic and boottime)")
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                raise TypeError(f"Spec.time_offsets[{clock!r}] must be a number of seconds")
            if not math.isfinite(value) or abs(value) > TIME_OFFSET_MAX_S:
                raise _field_error("time_offsets", f"{clock}={value} is not within ±{TIME_OFFSET_MAX_S} s (100 years)")
            offsets[clock] = value
        object.__setattr__(self, "time_offsets", MappingProxyType(offsets))

    def _validate_hardening(self) -> None:
        """cap_add, cap_drop, seccomp and rlimits (normalised in place)."""
        set_ = object.__setattr__
        for name in ("cap_add", "cap_drop"):
            value = getattr(self, name)
            if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
                raise TypeError(f"Spec.{name} must be a list of capability names")
            names = []
            for item in value:
                if not isinstance(item, str):
                    raise TypeError(f"Spec.{name} items must be str, not {type(item).__name__}")
                try:
                    names.append(_caps.normalize(item))
                except ValueError as exc:
                    raise _field_error(name, str(exc)) from None
            set_(self, name, tuple(names))
        try:
            _caps.resolve(self.cap_add, self.cap_drop)
        except ValueError as exc:
            raise _field_error("cap_add", str(exc)) from None
        if isinstance(self.seccomp, os.PathLike):
            set_(self, "seccomp", os.fspath(self.seccomp))
        if not isinstance(self.seccomp, str):
            raise TypeError("Spec.seccomp must be 'default', 'unconfined' or a path")
        if not self.seccomp or "\x00" in self.seccomp:
            raise _field_error("seccomp", "must be 'default', 'unconfined' or a path")
        if self.seccomp not in ("default", "unconfined"):
            set_(self, "seccomp", os.path.abspath(self.seccomp))
        if not isinstance(self.rlimits, Mapping):
            raise TypeError("Spec.rlimits must be a mapping of NAME to (soft, hard)")
        limits: dict[str, tuple[int, int]] = {}
        for key, pair in self.rlimits.items():
            if not isinstance(key, str):
                raise TypeError("Spec.rlimits keys must be str")
            name = key.upper().removeprefix("RLIMIT_")
            if not isinstance(getattr(resource, "RLIMIT_" + name, None), int):
                raise _field_error("rlimits", f"unknown resource {key!r}")
            if isinstance(pair, (str, bytes)) or not isinstance(pair, Sequence) or len(pair) != 2:
                raise TypeError(f"Spec.rlimits[{key!r}] must be a (soft, hard) pair")
            soft, hard = pair
            for v in (soft, hard):
                if not isinstance(v, int) or isinstance(v, bool):
                    raise TypeError(f"Spec.rlimits[{key!r}] values must be int")
                if v < 0 and v != resource.RLIM_INFINITY:
                    raise _field_error("rlimits", f"{key}: negative limit {v}")
            if _rlim_gt(soft, hard):
                raise _field_error("rlimits", f"{key}: soft limit {soft} is above the hard limit {hard}")
            limits[name] = (soft, hard)
        set_(self, "rlimits", MappingProxyType(limits))

    def _validate_addresses(self) -> None:
        """subnet (and ip, within it): IPv4, normalised in place."""
        import ipaddress

        set_ = object.__setattr__
        try:
            net = ipaddress.IPv4Network(self.subnet, strict=True)
        except ValueError as exc:
            raise _field_error("subnet", f"{self.subnet!r} is not an IPv4 network ({exc})") from None
        if not 8 <= net.prefixlen <= 29:
            raise _field_error("subnet", f"prefix length must be 8..29, not {net.prefixlen}")
        set_(self, "subnet", str(net))
        if self.ip is not None:
            if not isinstance(self.ip, str):
                raise TypeError("Spec.ip must be a str or None")
            if self.network != "bridge":
                raise _field_error("ip", "needs network='bridge'")
            try:
                addr = ipaddress.IPv4Address(self.ip)
            except ValueError:
                raise _field_error("ip", f"{self.ip!r} is not an IPv4 address") from None
            if addr not in net or addr in (net.network_address, net.broadcast_address, net.network_address + 1):
                raise _field_error("ip", f"{addr} is not a container address of subnet {net}")
            set_(self, "ip", str(addr))

    def _validate_network(self) -> None:
        """network, ip, subnet and publish (normalised in place)."""
        set_ = object.__setattr__
        if not isinstance(self.network, str):
            raise TypeError("Spec.network must be 'none', 'bridge' or 'host'")
        if self.network not in ("none", "bridge", "host"):
            raise _field_error("network", f"must be 'none', 'bridge' or 'host', not {self.network!r}")
        if not isinstance(self.subnet, str):
            raise TypeError("Spec.subnet must be a str such as '10.88.0.0/16'")
        if self.subnet != _DEFAULT_SUBNET or self.ip is not None:
            self._validate_addresses()  # the default needs no check, nor ipaddress (1.3 ms to import)
        if isinstance(self.publish, (str, bytes)) or not isinstance(self.publish, Sequence):
            raise TypeError("Spec.publish must be a list of Publish (or 'HOSTPORT:CONTAINERPORT' strings)")
        ports: list[Publish] = []
        for item in self.publish:
            port = item
            if isinstance(port, str):
                try:
                    port = Publish.parse(port)
                except ValueError as exc:
                    raise _field_error("publish", str(exc)) from None
            if not isinstance(port, Publish):
                raise TypeError(f"Spec.publish items must be Publish, not {type(port).__name__}")
            ports.append(port)
        if ports and self.network != "bridge":
            raise _field_error("publish", "needs network='bridge'")
        seen = set()
        for p in ports:
            key = (p.host_ip, p.host_port, p.protocol)
            if key in seen:
                raise _field_error("publish", f"{p.host_ip}:{p.host_port}/{p.protocol} is published twice")
            seen.add(key)
        set_(self, "publish", tuple(ports))

    @property
    def capabilities(self) -> frozenset[int]:
        """The capability numbers kept in the container (from cap_add/cap_drop)."""
        return _caps.resolve(self.cap_add, self.cap_drop)

    def _check_limits(self) -> None:
        if self.limits is not None and not isinstance(self.limits, Limits):
            raise TypeError(f"Spec.limits must be a supervisor.Limits or None, not {type(self.limits).__name__}")

    def check_host(self) -> None:
        """Check what the host must provide: the rootfs and mount sources.

        Raises:
            ValueError: naming the field whose path is missing.
        """
        if self.rootfs is not None:
            # Resolved first, then checked: a symlink to / is the host's root.
            resolved = os.path.realpath(self.rootfs)
            if not os.path.isdir(resolved):
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
        for name, (soft, hard) in self.rlimits.items():
            _cur_soft, cur_hard = resource.getrlimit(getattr(resource, "RLIMIT_" + name))
            if _rlim_gt(hard, cur_hard) or _rlim_gt(soft, cur_hard):
                raise _field_error(
                    "rlimits",
                    f"{name}: {soft}:{hard} is above the caller's own hard limit {_rlim_str(cur_hard)} "
                    "(a container never gets more than its supervisor)",
                )

    def to_json(self) -> dict[str, Any]:
        """The spec as a JSON-ready dict (for the CLI's ``--json`` and events).

        Every field, by its name, derived from the field list itself, so that
        no field can be left out: records (:class:`Mount`, :class:`Publish`,
        :class:`Limits`) as objects of their fields, sequences as lists,
        mappings as objects.
        """
        return {name: _jsonable(getattr(self, name)) for name in type(self).__record_names__}  # type: ignore[attr-defined]
