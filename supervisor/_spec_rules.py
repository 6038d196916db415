"""The rules of a :class:`~supervisor.Spec`'s fields, group by group.

:func:`check_fields` is the frozen Spec's ``__post_init__``: each step checks
its fields, raising :class:`ValueError`/:class:`TypeError` naming the field,
and stores their normal form (tuples, read-only mappings, absolute paths)
in place. Checks that need the host are :meth:`~supervisor.Spec.check_host`'s.
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
from ._mount import Mount
from ._protocol import MAX_IDMAPPED
from ._publish import Publish

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (3 ms for a command line)
if TYPE_CHECKING:
    from ._spec import Spec

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
DEFAULT_SUBNET = "10.88.0.0/16"

_HOSTNAME_RE = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)(\.(?!-)[A-Za-z0-9-]{1,63}(?<!-))*$")
_ENV_KEY_RE = re.compile(r"^[^=\x00]+$")


def field_error(name: str, message: str) -> ValueError:
    """The error refusing ``Spec.<name>``."""
    return ValueError(f"Spec.{name}: {message}")


def rlim_gt(a: int, b: int) -> bool:
    """``a > b`` for rlimit values, where RLIM_INFINITY is above everything."""
    if a == resource.RLIM_INFINITY:
        return b != resource.RLIM_INFINITY
    return b != resource.RLIM_INFINITY and a > b


def rlim_str(value: int) -> str:
    """An rlimit value as a person reads it."""
    return "unlimited" if value == resource.RLIM_INFINITY else str(value)


def _is_sequence(value: object) -> bool:
    """A list-like value; a str or bytes is not one. (A list or tuple is
    told without the ABC's instance check, which costs each Spec.)"""
    kind = type(value)
    if kind is list or kind is tuple:
        return True
    return not isinstance(value, (str, bytes)) and isinstance(value, Sequence)


def _is_mapping(value: object) -> bool:
    """A dict-like value (a dict or a read-only view told at once)."""
    kind = type(value)
    return kind is dict or kind is MappingProxyType or isinstance(value, Mapping)


def check_fields(spec: Spec) -> None:
    """Check and normalise every field of ``spec``, in place.

    Raises:
        ValueError: a field's value is refused (naming the field).
        TypeError: a field has the wrong type.
    """
    set_ = object.__setattr__
    # command
    if not _is_sequence(spec.command):
        raise TypeError(f"Spec.command must be a list of str, not {type(spec.command).__name__}")
    if not spec.command:
        raise field_error("command", "must not be empty")
    for arg in spec.command:
        if not isinstance(arg, str):
            raise TypeError(f"Spec.command items must be str, not {type(arg).__name__}")
        if "\x00" in arg:
            raise field_error("command", "arguments cannot contain NUL bytes")
    if not spec.command[0]:
        raise field_error("command", "the program name is empty")
    set_(spec, "command", tuple(spec.command))
    # rootfs
    if spec.rootfs is not None:
        if not isinstance(spec.rootfs, (str, os.PathLike)):
            raise TypeError(f"Spec.rootfs must be a path or None, not {type(spec.rootfs).__name__}")
        rootfs = os.fspath(spec.rootfs)
        if not isinstance(rootfs, str) or not rootfs:
            raise field_error("rootfs", "must be a non-empty path")
        set_(spec, "rootfs", os.path.abspath(rootfs))
    # hostname
    if spec.hostname is not None:
        if not isinstance(spec.hostname, str):
            raise TypeError("Spec.hostname must be a str or None")
        if len(spec.hostname) > 64 or not _HOSTNAME_RE.match(spec.hostname):
            raise field_error("hostname", f"{spec.hostname!r} is not a valid hostname")
    # ids
    for name in ("map_base", "map_size"):
        value = getattr(spec, name)
        if name == "map_base" and value == "auto":
            continue
        if not isinstance(value, int) or isinstance(value, bool):
            raise TypeError(f"Spec.{name} must be an int" + (" or 'auto'" if name == "map_base" else ""))
    if not isinstance(spec.map_base, int):  # "auto"
        if not 1 <= spec.map_size <= 1 << 24:
            raise field_error("map_size", "with map_base='auto', from 1 to 2**24 ids")
    elif spec.map_base < 1:
        raise field_error("map_base", "must be >= 1 (host root is never mapped)")
    elif not 1 <= spec.map_size <= 2**32 - 1 - spec.map_base:
        raise field_error("map_size", "out of range")
    gid = spec.uid if spec.gid is None else spec.gid
    for name, value in (("uid", spec.uid), ("gid", gid)):
        if not isinstance(value, int) or isinstance(value, bool):
            raise TypeError(f"Spec.{name} must be an int")
        if not 0 <= value < spec.map_size:
            raise field_error(name, f"{value} is outside the mapped range 0..{spec.map_size - 1}")
    set_(spec, "gid", gid)
    # mounts
    if not _is_sequence(spec.mounts):
        raise TypeError("Spec.mounts must be a list of Mount")
    mounts = []
    targets: set[str] = set()
    for m in spec.mounts:
        if not isinstance(m, Mount):
            raise TypeError(f"Spec.mounts items must be Mount (see Mount.parse), not {type(m).__name__}")
        target = os.path.normpath("/" + m.target.lstrip("/"))
        if target in targets:
            raise field_error("mounts", f"two mounts at {target} (the second would hide the first)")
        targets.add(target)
        for kernel in _KERNEL_FILESYSTEMS:
            if target == kernel or target.startswith(kernel + "/"):
                raise field_error("mounts", f"{m.target} is in the container's own {kernel}: no bind may cover it")
        mounts.append(m)
    if sum(m.idmap is True for m in mounts) > MAX_IDMAPPED:
        raise field_error("mounts", f"at most {MAX_IDMAPPED} binds may ask for idmap")
    set_(spec, "mounts", tuple(mounts))
    # env
    if not _is_mapping(spec.env):
        raise TypeError("Spec.env must be a mapping of str to str")
    for key, value in spec.env.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise TypeError("Spec.env keys and values must be str")
        if not _ENV_KEY_RE.match(key) or "\x00" in value:
            raise field_error("env", f"invalid variable {key!r}")
    set_(spec, "env", MappingProxyType(dict(spec.env)))
    _check_limits(spec)
    # cwd
    if not isinstance(spec.cwd, str):
        raise TypeError("Spec.cwd must be a str")
    if not spec.cwd.startswith("/") or "\x00" in spec.cwd:
        raise field_error("cwd", f"must be an absolute path, got {spec.cwd!r}")
    # flags and numbers
    for name in ("read_only", "tty", "overlay", "init"):
        if not isinstance(getattr(spec, name), bool):
            raise TypeError(f"Spec.{name} must be a bool")
    if spec.init and spec.limits is not None and spec.limits.memory_bytes is not None:
        # The init runs in the supervisor's memory (it is cloned with
        # CLONE_VM and never execs): in the container's memory cgroup it
        # would be the OOM killer's first choice, and the kernel kills
        # every process sharing a victim's memory, the supervisor too.
        raise field_error(
            "init",
            "cannot be combined with a memory limit yet: the init shares the supervisor's memory, so an "
            "out-of-memory kill in the container would kill the supervisor",
        )
    if spec.overlay:
        if spec.rootfs is None:
            raise field_error("overlay", "needs a rootfs (the embedded default root is already read-only)")
        if any(ch in spec.rootfs for ch in ",:\\"):
            raise field_error("overlay", f"the rootfs path {spec.rootfs!r} cannot contain ',', ':' or '\\'")
    if not isinstance(spec.grace_period, (int, float)) or isinstance(spec.grace_period, bool):
        raise TypeError("Spec.grace_period must be a number")
    # Bounded: a stop waits it out under a shield, and every wait in
    # cleanup must end.
    if not 0 <= spec.grace_period <= MAX_GRACE_PERIOD_S:
        raise field_error("grace_period", f"must be from 0 to {MAX_GRACE_PERIOD_S} seconds, not {spec.grace_period}")
    _hardening(spec)
    _network(spec)
    _time_offsets(spec)
    _tmpfs(spec)
    _cgroup_parent(spec)


def _cgroup_parent(spec: Spec) -> None:
    """cgroup_parent: an absolute cgroup path of plain directory names."""
    if spec.cgroup_parent is None or spec.cgroup_parent == "/":
        return
    if not isinstance(spec.cgroup_parent, str):
        raise TypeError("Spec.cgroup_parent must be a str (a cgroup path such as '/supervisor') or None")
    names = spec.cgroup_parent.strip("/").split("/")
    if (
        not spec.cgroup_parent.startswith("/")
        or len(spec.cgroup_parent) > 4096
        or not all(is_cgroup_name(name) for name in names)
    ):
        raise field_error(
            "cgroup_parent",
            f"{spec.cgroup_parent!r} is not an absolute cgroup path of plain names (such as '/supervisor')",
        )
    object.__setattr__(spec, "cgroup_parent", "/" + "/".join(names))


def _tmpfs(spec: Spec) -> None:
    """tmpfs: absolute paths, docker's options (data and flags), at most MAX_TMPFS."""
    if not _is_mapping(spec.tmpfs):
        raise TypeError("Spec.tmpfs must be a mapping of container path to options, such as {'/run': 'size=64m'}")
    if len(spec.tmpfs) > MAX_TMPFS:
        raise field_error("tmpfs", f"at most {MAX_TMPFS} tmpfs mounts")
    out: dict[str, str] = {}
    for path, options in spec.tmpfs.items():
        if not isinstance(path, str) or not isinstance(options, str):
            raise TypeError("Spec.tmpfs keys (paths) and values (options) must be str")
        if not path.startswith("/") or not path.strip("/") or "\x00" in path:
            raise field_error("tmpfs", f"{path!r} is not an absolute path below /")
        for option in filter(None, options.split(",")):
            name, sep, value = option.partition("=")
            if sep and name in _TMPFS_DATA:
                if not _TMPFS_DATA[name].match(value):
                    raise field_error("tmpfs", f"{path}: {option!r} has a bad value")
            elif sep or option not in _TMPFS_FLAGS:
                known = ", ".join([*_TMPFS_FLAGS, *(f"{k}=" for k in _TMPFS_DATA)])
                raise field_error("tmpfs", f"{path}: unknown option {option!r} ({known})")
        out[path] = options
    object.__setattr__(spec, "tmpfs", MappingProxyType(out))


def _time_offsets(spec: Spec) -> None:
    """time_offsets: known clocks, finite numbers within TIME_OFFSET_MAX_S."""
    if not _is_mapping(spec.time_offsets):
        raise TypeError("Spec.time_offsets must be a mapping such as {'monotonic': 3600, 'boottime': 3600}")
    offsets: dict[str, float] = {}
    for clock, value in spec.time_offsets.items():
        if clock not in TIME_OFFSET_CLOCKS:
            raise field_error("time_offsets", f"unknown clock {clock!r} (only monotonic and boottime)")
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise TypeError(f"Spec.time_offsets[{clock!r}] must be a number of seconds")
        if not math.isfinite(value) or abs(value) > TIME_OFFSET_MAX_S:
            raise field_error("time_offsets", f"{clock}={value} is not within ±{TIME_OFFSET_MAX_S} s (100 years)")
        offsets[clock] = value
    object.__setattr__(spec, "time_offsets", MappingProxyType(offsets))


def _hardening(spec: Spec) -> None:
    """cap_add, cap_drop, seccomp and rlimits (normalised in place)."""
    set_ = object.__setattr__
    for name in ("cap_add", "cap_drop"):
        value = getattr(spec, name)
        if not _is_sequence(value):
            raise TypeError(f"Spec.{name} must be a list of capability names")
        names = []
        for item in value:
            if not isinstance(item, str):
                raise TypeError(f"Spec.{name} items must be str, not {type(item).__name__}")
            try:
                names.append(_caps.normalize(item))
            except ValueError as exc:
                raise field_error(name, str(exc)) from None
        set_(spec, name, tuple(names))
    try:
        _caps.resolve(spec.cap_add, spec.cap_drop)
    except ValueError as exc:
        raise field_error("cap_add", str(exc)) from None
    if isinstance(spec.seccomp, os.PathLike):
        set_(spec, "seccomp", os.fspath(spec.seccomp))
    if not isinstance(spec.seccomp, str):
        raise TypeError("Spec.seccomp must be 'default', 'unconfined' or a path")
    if not spec.seccomp or "\x00" in spec.seccomp:
        raise field_error("seccomp", "must be 'default', 'unconfined' or a path")
    if spec.seccomp not in ("default", "unconfined"):
        set_(spec, "seccomp", os.path.abspath(spec.seccomp))
    if not _is_mapping(spec.rlimits):
        raise TypeError("Spec.rlimits must be a mapping of NAME to (soft, hard)")
    limits: dict[str, tuple[int, int]] = {}
    for key, pair in spec.rlimits.items():
        if not isinstance(key, str):
            raise TypeError("Spec.rlimits keys must be str")
        name = key.upper().removeprefix("RLIMIT_")
        if not isinstance(getattr(resource, "RLIMIT_" + name, None), int):
            raise field_error("rlimits", f"unknown resource {key!r}")
        if not _is_sequence(pair) or len(pair) != 2:
            raise TypeError(f"Spec.rlimits[{key!r}] must be a (soft, hard) pair")
        soft, hard = pair
        for v in (soft, hard):
            if not isinstance(v, int) or isinstance(v, bool):
                raise TypeError(f"Spec.rlimits[{key!r}] values must be int")
            if v < 0 and v != resource.RLIM_INFINITY:
                raise field_error("rlimits", f"{key}: negative limit {v}")
        if rlim_gt(soft, hard):
            raise field_error("rlimits", f"{key}: soft limit {soft} is above the hard limit {hard}")
        limits[name] = (soft, hard)
    set_(spec, "rlimits", MappingProxyType(limits))


def _addresses(spec: Spec) -> None:
    """subnet (and ip, within it): IPv4, normalised in place."""
    import ipaddress

    set_ = object.__setattr__
    try:
        net = ipaddress.IPv4Network(spec.subnet, strict=True)
    except ValueError as exc:
        raise field_error("subnet", f"{spec.subnet!r} is not an IPv4 network ({exc})") from None
    if not 8 <= net.prefixlen <= 29:
        raise field_error("subnet", f"prefix length must be 8..29, not {net.prefixlen}")
    set_(spec, "subnet", str(net))
    if spec.ip is not None:
        if not isinstance(spec.ip, str):
            raise TypeError("Spec.ip must be a str or None")
        if spec.network != "bridge":
            raise field_error("ip", "needs network='bridge'")
        try:
            addr = ipaddress.IPv4Address(spec.ip)
        except ValueError:
            raise field_error("ip", f"{spec.ip!r} is not an IPv4 address") from None
        if addr not in net or addr in (net.network_address, net.broadcast_address, net.network_address + 1):
            raise field_error("ip", f"{addr} is not a container address of subnet {net}")
        set_(spec, "ip", str(addr))


def _network(spec: Spec) -> None:
    """network, ip, subnet and publish (normalised in place)."""
    set_ = object.__setattr__
    if not isinstance(spec.network, str):
        raise TypeError("Spec.network must be 'none', 'bridge' or 'host'")
    if spec.network not in ("none", "bridge", "host"):
        raise field_error("network", f"must be 'none', 'bridge' or 'host', not {spec.network!r}")
    if not isinstance(spec.subnet, str):
        raise TypeError("Spec.subnet must be a str such as '10.88.0.0/16'")
    if spec.subnet != DEFAULT_SUBNET or spec.ip is not None:
        _addresses(spec)  # the default needs no check, nor ipaddress (1.3 ms to import)
    if not _is_sequence(spec.publish):
        raise TypeError("Spec.publish must be a list of Publish (or 'HOSTPORT:CONTAINERPORT' strings)")
    ports: list[Publish] = []
    for item in spec.publish:
        port = item
        if isinstance(port, str):
            try:
                port = Publish.parse(port)
            except ValueError as exc:
                raise field_error("publish", str(exc)) from None
        if not isinstance(port, Publish):
            raise TypeError(f"Spec.publish items must be Publish, not {type(port).__name__}")
        ports.append(port)
    if ports and spec.network != "bridge":
        raise field_error("publish", "needs network='bridge'")
    seen = set()
    for p in ports:
        key = (p.host_ip, p.host_port, p.protocol)
        if key in seen:
            raise field_error("publish", f"{p.host_ip}:{p.host_port}/{p.protocol} is published twice")
        seen.add(key)
    set_(spec, "publish", tuple(ports))


def _check_limits(spec: Spec) -> None:
    if spec.limits is not None and not isinstance(spec.limits, Limits):
        raise TypeError(f"Spec.limits must be a supervisor.Limits or None, not {type(spec.limits).__name__}")
