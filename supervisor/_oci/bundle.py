"""An OCI bundle's ``config.json``, turned into the :class:`SpawnConfig` PID 1 runs from.

The same declared spawn configuration a :class:`~supervisor.Spec` becomes
(:func:`supervisor._parent.config.build_config`), built here from the
runtime spec's JSON instead. Every field is either honoured or refused: a
value this runtime cannot give is a :class:`BundleError` at ``create`` that
names its JSON path, never silently dropped. What each field becomes is
listed in ``docs/oci.rst``.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
from collections.abc import Iterator

from .._capabilities import CAP_NAMES, CAP_NUMBERS, mask
from .._limits import Limits
from .._parent.config import DEFAULT_PATH, last_cap
from .._protocol import Bind, Device, NsPath, Rlimit, SpawnConfig, Sysctl, TimeOffset, Tmpfs
from .._record import field, record
from .._sys import constants as c

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

#: The runtime-spec versions this runtime reads (``ociVersion``'s major).
SPEC_MAJOR = "1."

#: Filesystems PID 1 mounts itself, where the OCI config lists them:
#: (destination, type) -> its letter in SpawnConfig.mount_order.
_STANDARD_MOUNTS = {
    ("/proc", "proc"): "p",
    ("/dev", "tmpfs"): "d",
    ("/dev/pts", "devpts"): "t",
    ("/dev/mqueue", "mqueue"): "q",
    ("/sys", "sysfs"): "s",
}

#: Those every container has, first and in this order where the config
#: does not list them (``/dev/mqueue`` only where it does).
_ALWAYS_MOUNTED = "pdts"

#: Mount options that say what every bind and tmpfs of ours is anyway, or
#: that only concern labelling (SELinux relabel requests, which need no
#: action on a host without SELinux).
_ALWAYS = {"nosuid", "nodev", "z", "Z", "bind", "rbind", "noatime", "relatime", "strictatime"}

#: A tmpfs's data options.
_TMPFS_DATA = ("size", "mode", "nr_inodes", "uid", "gid")

#: Propagation types (``linux.rootfsPropagation``, a mount's options): MS_* flags.
_PROPAGATION = {
    prefix + kind: flag | recursive
    for kind, flag in (
        ("shared", c.MS_SHARED),
        ("slave", c.MS_SLAVE),
        ("private", c.MS_PRIVATE),
        ("unbindable", c.MS_UNBINDABLE),
    )
    for prefix, recursive in (("", 0), ("r", c.MS_REC))
}

#: The device nodes every container has (mounts.c binds them from the
#: host, devpts makes the terminals): (type, major, minor; -1: any) -> where.
STANDARD_DEVICES = {
    ("c", 1, 3): "/dev/null",
    ("c", 1, 5): "/dev/zero",
    ("c", 1, 7): "/dev/full",
    ("c", 1, 8): "/dev/random",
    ("c", 1, 9): "/dev/urandom",
    ("c", 5, 0): "/dev/tty",
    ("c", 5, 2): "/dev/ptmx",
    ("c", 136, -1): "/dev/pts/",
}

#: Namespaces a config may join by ``path`` (without a user namespace of its own).
_JOINABLE = ("network", "ipc", "uts", "mount", "pid")

_NS_FLAGS = {
    "pid": c.CLONE_NEWPID,
    "network": c.CLONE_NEWNET,
    "mount": c.CLONE_NEWNS,
    "ipc": c.CLONE_NEWIPC,
    "uts": c.CLONE_NEWUTS,
    "user": c.CLONE_NEWUSER,
}


class BundleError(ValueError):
    """A ``config.json`` this runtime cannot honour.

    Args:
        path: the JSON path of the value (``linux.resources.blockIO``).
        message: what is wrong with it.
    """

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"config.json: {path}: {message}")
        self.path = path


#: One hook: its path, args, env and timeout in seconds (``None``: none).
Hook = tuple[str, tuple[str, ...], tuple[str, ...], float | None]


@record
class Hooks:
    """The hooks of the config that run in the runtime's namespaces."""

    create_runtime: tuple[Hook, ...] = ()
    """``prestart`` and ``createRuntime``: run by ``create``, PID 1 at its start gate."""
    poststart: tuple[Hook, ...] = ()
    """Run by ``start`` once the process runs."""
    poststop: tuple[Hook, ...] = ()
    """Run by ``delete``."""


@record
class Bundle:
    """What ``create`` needs of a bundle, resolved."""

    path: str
    """The bundle's directory, absolute."""
    config: SpawnConfig
    """PID 1's configuration, without its cgroup entries."""
    cgroups_path: str | None
    """``linux.cgroupsPath``, or ``None`` for a cgroup named after the id."""
    limits: Limits
    """``linux.resources``, as the library's limits (``cpu.shares`` as a v2
    weight, crun's conversion)."""
    oom_score_adj: int | None
    cpu_shares: int | None = None
    """``linux.resources.cpu.shares`` as given: on a v1 cpu hierarchy
    :func:`~supervisor._oci.cgroup.place` makes the weight one whose
    ``cpu.shares`` is this (exactly for a multiple of 256)."""
    annotations: dict[str, str] = field(default_factory=dict)
    hooks: Hooks = field(default_factory=Hooks)
    cgroup_mounts: tuple[int, ...] = ()
    """``cgroup`` mounts: the indexes in ``config.binds`` of their places (a
    bind without source), each to become a bind of the
    container's cgroup2 directory, added once that exists."""


def load(bundle: str) -> Bundle:
    """Read ``bundle/config.json`` and resolve it.

    Args:
        bundle: the bundle's directory.

    Returns:
        the resolved bundle.

    Raises:
        BundleError: a value is malformed or cannot be honoured (naming its JSON path).
        OSError: ``config.json`` cannot be read.
    """
    path = os.path.abspath(bundle)
    with open(os.path.join(path, "config.json"), "rb") as f:
        try:
            doc = json.load(f)
        except ValueError as exc:
            raise BundleError("(document)", f"not JSON: {exc}") from None
    return resolve(doc, path)


def _get(doc: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str, default: Any = None) -> Any:
    if not isinstance(doc, dict):
        raise BundleError(where, "must be an object")
    value = doc.get(key, default)
    if value is None:
        return default
    if isinstance(value, bool) and kind in (int, float):
        raise BundleError(f"{where}.{key}" if where else key, f"must be {kind.__name__}, not a boolean")
    if not isinstance(value, kind):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise BundleError(f"{where}.{key}" if where else key, f"must be {names}, not {type(value).__name__}")
    return value


def _unsupported(doc: dict[str, Any], where: str, keys: tuple[str, ...]) -> None:
    """Refuse each of ``keys`` that is set to something other than empty."""
    for key in keys:
        value = doc.get(key)
        if value not in (None, "", [], {}):
            raise BundleError(f"{where}.{key}" if where else key, "not supported by this runtime")


def resolve(doc: dict[str, Any], bundle: str) -> Bundle:
    """:func:`load` for a parsed document (``bundle``: its directory, absolute)."""
    version = _get(doc, "ociVersion", str, "")
    if not version or not version.startswith(SPEC_MAJOR):
        raise BundleError("ociVersion", f"must be a 1.x version of the runtime spec, got {version!r}")
    process = _get(doc, "process", dict, "", {})
    if not process:
        raise BundleError("process", "is required by create")
    root = _get(doc, "root", dict, "", {})
    linux = _get(doc, "linux", dict, "", {})
    _unsupported(doc, "", ("solaris", "windows", "vm", "zos"))
    _unsupported(
        process,
        "process",
        ("apparmorProfile", "selinuxLabel", "consoleSize", "ioPriority", "scheduler", "execCPUAffinity"),
    )
    _unsupported(
        linux,
        "linux",
        ("intelRdt", "personality", "mountLabel", "memoryPolicy", "netDevices"),
    )
    domain = _get(doc, "domainname", str, "", "")
    if domain:
        raise BundleError("domainname", "not supported by this runtime")

    # process
    args = _get(process, "args", list, "process", [])
    if not args or not all(isinstance(a, str) for a in args):
        raise BundleError("process.args", "must be a non-empty list of strings")
    cwd = _get(process, "cwd", str, "process", "/")
    if not cwd.startswith("/"):
        raise BundleError("process.cwd", f"must be an absolute path, got {cwd!r}")
    env = _get(process, "env", list, "process", [])
    if not all(isinstance(e, str) and "=" in e for e in env):
        raise BundleError("process.env", "must be a list of NAME=value strings")
    # Without PATH, the program is looked up where execvp and runc would find it.
    search_path = next((e[5:] for e in env if e.startswith("PATH=")), DEFAULT_PATH)
    user = _get(process, "user", dict, "process", {})
    uid = _get(user, "uid", int, "process.user", 0)
    gid = _get(user, "gid", int, "process.user", 0)
    groups = _get(user, "additionalGids", list, "process.user", [])
    if not all(isinstance(g, int) and not isinstance(g, bool) and g >= 0 for g in groups):
        raise BundleError("process.user.additionalGids", "must be a list of gids")
    umask = _get(user, "umask", int, "process.user")
    if umask is not None and not 0 <= umask <= 0o777:
        raise BundleError("process.user.umask", f"must be within 0..0777, got {umask:o}")
    if _get(user, "username", str, "process.user", ""):
        raise BundleError("process.user.username", "not supported on Linux (the spec's Windows field)")
    for name in ("uid", "gid"):
        value = user.get(name, 0)
        if not 0 <= value < 2**32 - 1:
            raise BundleError(f"process.user.{name}", f"out of range: {value}")
    terminal = bool(_get(process, "terminal", bool, "process", False))
    caps, inheritable, ambient = _capabilities(_get(process, "capabilities", dict, "process", {}), uid)
    no_new_privs = bool(_get(process, "noNewPrivileges", bool, "process", False))
    rlimits = list(_rlimits(_get(process, "rlimits", list, "process", [])))
    oom = _get(process, "oomScoreAdj", int, "process")
    if oom is not None and not -1000 <= oom <= 1000:
        raise BundleError("process.oomScoreAdj", f"must be within -1000..1000, got {oom}")

    # root
    root_path = _get(root, "path", str, "root", "")
    if not root_path:
        raise BundleError("root.path", "is required")
    rootfs = os.path.realpath(os.path.join(bundle, root_path))
    if not os.path.isdir(rootfs):
        raise BundleError("root.path", f"{root_path!r} is not a directory (resolved in the bundle: {rootfs})")
    read_only = bool(_get(root, "readonly", bool, "root", False))

    # linux
    flags, time_ns, ns_paths = _namespaces(_get(linux, "namespaces", list, "linux", []))
    user_ns = bool(flags & c.CLONE_NEWUSER)
    if not user_ns:
        # In the host's user namespace PID 1 has only the runtime's own
        # bounding set to give (a user namespace of its own would have all).
        missing = caps - _own_bounding_set()
        if missing:
            names = ", ".join(sorted("CAP_" + CAP_NAMES[n] for n in missing if n in CAP_NAMES))
            raise BundleError("process.capabilities.bounding", f"{names}: not in this runtime's own bounding set")
    map_base, map_size = _mapping(linux, "uidMappings", user_ns)
    gid_base, gid_size = _mapping(linux, "gidMappings", user_ns)
    propagation = _get(linux, "rootfsPropagation", str, "linux", "")
    if propagation and propagation not in _PROPAGATION:
        raise BundleError("linux.rootfsPropagation", f"{propagation!r} is not a propagation type")
    devices = _devices(_get(linux, "devices", list, "linux", []), user_ns)
    limits = _resources(_get(linux, "resources", dict, "linux", {}), devices)
    # Namespaces of the container's: its own, and those it joins by path.
    owned = flags | sum(p.kind for p in ns_paths if not (p.kind == c.CLONE_NEWNET and _is_hosts(p.path, "net")))
    sysctls = _sysctls(_get(linux, "sysctl", dict, "linux", {}), owned)
    cgroups_path = _get(linux, "cgroupsPath", str, "linux") or None
    offsets = list(_time_offsets(_get(linux, "timeOffsets", dict, "linux", {}), time_ns))
    masked = _paths(linux, "maskedPaths")
    readonly = _paths(linux, "readonlyPaths")
    seccomp = _get(linux, "seccomp", dict, "linux")
    bpf, seccomp_flags = _seccomp(seccomp, caps) if seccomp else (b"", 0)

    binds, tmpfs, cgroup_mounts, order = _mounts(_get(doc, "mounts", list, "", []), bundle)
    hostname = _get(doc, "hostname", str, "", "")
    if hostname and not owned & c.CLONE_NEWUTS:
        raise BundleError("hostname", "needs a uts namespace of the container's own")
    annotations = _get(doc, "annotations", dict, "", {})
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in annotations.items()):
        raise BundleError("annotations", "must map strings to strings")

    config = SpawnConfig(
        clone_flags=flags,
        argv=list(args),
        env=list(env),
        search_path=search_path,
        cwd=cwd,
        hostname=hostname or ("localhost" if flags & c.CLONE_NEWUTS else ""),
        uid=uid,
        gid=gid,
        map_base=map_base,
        map_gid_base=gid_base,
        map_size=map_size,
        map_gid_size=gid_size,
        map_uid_inside=0,
        map_gid_inside=0,
        uid_helper=None,
        gid_helper=None,
        sub_uid_base=0,
        sub_gid_base=0,
        sub_size=0,
        rootless=False,
        rootfs=rootfs,
        overlay=False,
        read_only_root=read_only,
        tty=terminal,
        network_request=False,
        own_loopback=bool(flags & c.CLONE_NEWNET),
        live_phases=False,
        fault=0,
        id_maps_fault=0,
        capabilities=mask(caps),
        last_cap=last_cap(),
        binds=binds,
        rlimits=rlimits,
        masked_paths=masked,
        readonly_paths=readonly,
        seccomp_bpf=bpf,
        seccomp_flags=seccomp_flags,
        time_namespace=time_ns,
        time_offsets=offsets,
        tmpfs=tmpfs,
        groups=list(groups),
        inheritable=mask(inheritable),
        ambient=mask(ambient),
        no_new_privs=no_new_privs,
        sysctls=sysctls,
        umask=-1 if umask is None else umask,
        mount_order=order,
        ns_paths=ns_paths,
        devices=devices,
        rootfs_propagation=_PROPAGATION.get(propagation, 0),
        start_gate=True,
    )
    return Bundle(
        path=bundle,
        config=config,
        cgroups_path=cgroups_path,
        limits=limits,
        cpu_shares=_get(
            _get(_get(linux, "resources", dict, "linux", {}), "cpu", dict, "linux.resources", {}),
            "shares",
            int,
            "linux.resources.cpu",
        )
        or None,
        oom_score_adj=oom,
        annotations=dict(annotations),
        hooks=_hooks(_get(doc, "hooks", dict, "", {})),
        cgroup_mounts=tuple(cgroup_mounts),
    )


def _capabilities(caps: dict[str, Any], uid: int) -> tuple[frozenset[int], frozenset[int], frozenset[int]]:
    """The kept set (the bounding set), and the inheritable and ambient sets,
    checked against what PID 1 can give.

    PID 1 leaves root the bounding set in its effective and permitted sets
    and any other uid its ambient set (what execve gives each without file
    capabilities); an ambient capability is raised only if also inheritable
    (the kernel's rule). A config that asks for a different result is
    refused.
    """
    sets: dict[str, frozenset[int]] = {}
    for name in ("bounding", "effective", "permitted", "inheritable", "ambient"):
        where = f"process.capabilities.{name}"
        names = _get(caps, name, list, "process.capabilities", [])
        nums = set()
        for i, cap in enumerate(names):
            if not isinstance(cap, str) or not cap.startswith("CAP_") or cap[4:] not in CAP_NUMBERS:
                raise BundleError(f"{where}[{i}]", f"unknown capability {cap!r}")
            nums.add(CAP_NUMBERS[cap[4:]])
        sets[name] = frozenset(nums)
    bounding = sets["bounding"]
    for name in ("effective", "permitted", "inheritable", "ambient"):
        if sets[name] - bounding:
            raise BundleError(f"process.capabilities.{name}", "holds capabilities outside the bounding set")
    # The kernel raises an ambient capability only if it is also inheritable
    # (and root has the rest in its permitted set anyway): like runc, which
    # warns, the others are not raised ("runc spec" lists ambient ones alone).
    ambient = sets["ambient"] & sets["inheritable"]
    for name in ("effective", "permitted"):
        if uid == 0 and sets[name] != bounding:
            raise BundleError(
                f"process.capabilities.{name}",
                "must equal the bounding set for uid 0 (execve gives root the whole bounding set)",
            )
        if uid != 0 and sets[name] != ambient:
            raise BundleError(
                f"process.capabilities.{name}",
                "must equal the ambient set (within the inheritable one) for a uid other than 0: "
                "execve gives such a process only its ambient capabilities",
            )
    return bounding, sets["inheritable"], ambient


def _own_bounding_set() -> frozenset[int]:
    """This process's bounding set (``CapBnd`` of ``/proc/self/status``)."""
    with open("/proc/self/status") as f:
        value = next(int(line.split()[1], 16) for line in f if line.startswith("CapBnd:"))
    return frozenset(n for n in range(64) if value >> n & 1)


def _rlimits(items: list[Any]) -> Iterator[Rlimit]:
    seen = set()
    for i, item in enumerate(items):
        where = f"process.rlimits[{i}]"
        kind = _get(item, "type", str, where, "")
        number = getattr(resource, kind, None) if kind.startswith("RLIMIT_") else None
        if number is None:
            raise BundleError(f"{where}.type", f"unknown resource limit {kind!r}")
        if kind in seen:
            raise BundleError(f"{where}.type", f"{kind} is set twice")
        seen.add(kind)
        soft, hard = _get(item, "soft", int, where), _get(item, "hard", int, where)
        if soft is None or hard is None:
            raise BundleError(where, "needs both soft and hard")
        if not 0 <= soft <= hard <= 2**64 - 1:
            raise BundleError(where, f"needs 0 <= soft ({soft}) <= hard ({hard})")
        yield Rlimit(number, soft, hard)


def _namespaces(items: list[Any]) -> tuple[int, bool, list[NsPath]]:
    """The clone flags, whether a time namespace is asked for, and the namespaces joined by path."""
    flags = 0
    seen = set()
    time_ns = False
    paths: list[NsPath] = []
    for i, item in enumerate(items):
        where = f"linux.namespaces[{i}]"
        kind = _get(item, "type", str, where, "")
        if kind in seen:
            raise BundleError(f"{where}.type", f"{kind} namespace listed twice")
        seen.add(kind)
        path = _get(item, "path", str, where, "")
        if path and kind not in _JOINABLE:
            raise BundleError(f"{where}.path", f"joining a {kind} namespace by path is not supported by this runtime")
        if kind == "cgroup":
            continue  # PID 1 always unshares one, rooted at the container's cgroup
        if kind == "time":
            time_ns = True
            continue
        if kind not in _NS_FLAGS:
            raise BundleError(f"{where}.type", f"unknown namespace type {kind!r}")
        if path:
            if not os.path.exists(path):
                raise BundleError(f"{where}.path", f"{path} does not exist")
            if kind == "mount" and _is_hosts(path, "mnt"):
                # PID 1 pivots the namespace it is in into the container's root.
                raise BundleError(f"{where}.path", f"{path} is the host's mount namespace, which would be pivoted")
            paths.append(NsPath(_NS_FLAGS[kind], path))
        else:
            flags |= _NS_FLAGS[kind]
    if "mount" not in seen:
        # PID 1 would mount the container's filesystems in the runtime's
        # own mount namespace: on the host, left behind on every path.
        raise BundleError("linux.namespaces", "sharing the runtime's mount namespace is not supported: list one")
    if paths and flags & c.CLONE_NEWUSER:
        raise BundleError("linux.namespaces", "joining namespaces by path needs the host's user namespace")
    return flags, time_ns, paths


def _is_hosts(path: str, kind: str) -> bool:
    """Whether namespace ``path`` is this runtime's own or its PID 1's (the host's)."""
    st = os.stat(path)
    for owner in ("self", "1"):
        with contextlib.suppress(OSError):
            own = os.stat(f"/proc/{owner}/ns/{kind}")
            if (own.st_dev, own.st_ino) == (st.st_dev, st.st_ino):
                return True
    return False


def _mapping(linux: dict[str, Any], key: str, user: bool) -> tuple[int, int]:
    """(host base, size) of one map: one extent at container id 0, or (no user
    namespace in the config) the identity."""
    items = _get(linux, key, list, "linux", [])
    if not user:
        if items:
            raise BundleError(f"linux.{key}", "needs a user namespace in linux.namespaces")
        return 0, 2**32 - 1  # the identity map: ids are the host's
    if not items:
        raise BundleError(f"linux.{key}", "a user namespace needs its id mappings")
    if len(items) != 1:
        raise BundleError(f"linux.{key}", "only one extent, at containerID 0, is supported")
    where = f"linux.{key}[0]"
    inside = _get(items[0], "containerID", int, where, 0)
    host = _get(items[0], "hostID", int, where, 0)
    size = _get(items[0], "size", int, where, 0)
    if inside != 0:
        raise BundleError(f"{where}.containerID", "must be 0")
    if size < 1 or host < 0 or host + size > 2**32 - 1:
        raise BundleError(where, f"hostID {host} and size {size} do not give a range of host ids")
    return host, size


def _devices(items: list[Any], user_ns: bool) -> list[Device]:
    """``linux.devices``: the nodes PID 1 makes (those every container has
    already are left to it)."""
    out = []
    for i, item in enumerate(items):
        where = f"linux.devices[{i}]"
        kind = _get(item, "type", str, where, "")
        major, minor = _get(item, "major", int, where, 0), _get(item, "minor", int, where, 0)
        path = _get(item, "path", str, where, "")
        if _is_standard(kind, major, minor, path):
            continue  # a node it has already, where it is
        if kind not in ("c", "b", "p", "u"):
            raise BundleError(f"{where}.type", f"must be c, b, u or p, got {kind!r}")
        if not path.startswith("/"):
            raise BundleError(f"{where}.path", f"must be an absolute path, got {path!r}")
        if user_ns:
            raise BundleError(where, f"making device {path} needs the host's user namespace (mknod)")
        mode = _get(item, "fileMode", int, where, 0o666)
        if not 0 <= mode <= 0o7777:
            raise BundleError(f"{where}.fileMode", f"must be permission bits, got {mode:o}")
        ids = [_get(item, key, int, where, 0) for key in ("uid", "gid")]
        out.append(Device(os.path.normpath(path), "c" if kind == "u" else kind, major, minor, mode, *ids))
    return out


def _is_standard(kind: str, major: int, minor: int, path: str) -> bool:
    """Whether the node is one of :data:`STANDARD_DEVICES`, at its place."""
    exact = STANDARD_DEVICES.get((kind, major, minor))
    folder = STANDARD_DEVICES.get((kind, major, -1))
    return (exact is not None and os.path.normpath(path or "/") == exact) or (
        folder is not None and path.startswith(folder)
    )


def _device_rule(rule: Any, where: str) -> tuple[bool, str]:
    """(allow, the rule in the v1 devices cgroup's form)."""
    allow = bool(_get(rule, "allow", bool, where, False))
    kind = _get(rule, "type", str, where, "a")
    if kind not in ("a", "b", "c"):
        raise BundleError(f"{where}.type", "must be a, b or c")
    access = _get(rule, "access", str, where, "rwm")
    if not access or set(access) - set("rwm"):
        raise BundleError(f"{where}.access", f"must be letters of rwm, got {access!r}")
    major, minor = _get(rule, "major", int, where), _get(rule, "minor", int, where)
    if kind == "a" and major is None and minor is None:
        return allow, "a"
    number = f"{'*' if major is None or major < 0 else major}:{'*' if minor is None or minor < 0 else minor}"
    return allow, f"{kind} {number} {access}"


def _resources(res: dict[str, Any], devices: list[Device]) -> Limits:
    where = "linux.resources"
    _unsupported(res, where, ("blockIO", "hugepageLimits", "network", "rdma", "unified"))
    # The device rules, then the default nodes and the config's own allowed
    # whatever they say (as runc adds them after the config's rules).
    # Written to a v1 devices cgroup where the host has one; elsewhere
    # cgroup.place says how the rules hold.
    rules = [
        _device_rule(rule, f"{where}.devices[{i}]") for i, rule in enumerate(_get(res, "devices", list, where, []))
    ]
    rules += [(True, f"{kind} {major}:{'*' if minor < 0 else minor} rwm") for kind, major, minor in STANDARD_DEVICES]
    rules += [(True, f"{d.kind} {d.major}:{d.minor} rwm") for d in devices if d.kind != "p"]  # as runc allows them
    memory = _get(res, "memory", dict, where, {})
    _unsupported(memory, f"{where}.memory", ("useHierarchy", "checkBeforeUpdate"))
    # memory.kernel is not applied: Linux ignores kmem.limit_in_bytes since
    # 5.16 (the write succeeds and changes nothing), and runc ignores it too.
    _get(memory, "kernel", int, f"{where}.memory")
    reservation = _get(memory, "reservation", int, f"{where}.memory")
    swappiness = _get(memory, "swappiness", int, f"{where}.memory")
    kernel_tcp = _get(memory, "kernelTCP", int, f"{where}.memory")
    oom_kill_disable = bool(_get(memory, "disableOOMKiller", bool, f"{where}.memory", False))
    limit = _get(memory, "limit", int, f"{where}.memory")
    swap = _get(memory, "swap", int, f"{where}.memory")
    if limit is not None and limit < 0:
        limit = None  # -1: unlimited
    if swap is not None and limit is None and swap != -1:
        raise BundleError(f"{where}.memory.swap", "needs memory.limit")
    cpu = _get(res, "cpu", dict, where, {})
    _unsupported(cpu, f"{where}.cpu", ("realtimeRuntime", "realtimePeriod", "idle", "burst"))
    shares = _get(cpu, "shares", int, f"{where}.cpu")
    quota = _get(cpu, "quota", int, f"{where}.cpu")
    period = _get(cpu, "period", int, f"{where}.cpu") or 100_000
    cpus = None
    if quota is not None and quota > 0:
        cpus = quota / period
    elif quota is None and cpu.get("period") is not None:
        raise BundleError(f"{where}.cpu.period", "needs cpu.quota")
    weight = None
    if shares:
        if not 2 <= shares <= 262144:
            raise BundleError(f"{where}.cpu.shares", f"must be within 2..262144, got {shares}")
        weight = 1 + ((shares - 2) * 9999) // 262142  # crun's and systemd's conversion
    pids = _get(_get(res, "pids", dict, where, {}), "limit", int, f"{where}.pids")
    if pids is not None and pids <= 0:
        pids = None  # 0 or -1: unlimited
    try:
        return Limits(
            memory_bytes=limit,
            memory_swap_bytes=swap if limit is not None else None,
            cpus=cpus,
            cpu_period_us=period if cpus is not None and cpu.get("period") is not None else None,
            cpu_weight=weight,
            pids=pids,
            memory_reservation_bytes=None if reservation is None or reservation < 0 else reservation,
            memory_swappiness=swappiness,
            memory_kernel_tcp_bytes=None if kernel_tcp is None or kernel_tcp < 0 else kernel_tcp,
            oom_kill_disable=oom_kill_disable,
            cpuset_cpus=_get(cpu, "cpus", str, f"{where}.cpu") or None,
            cpuset_mems=_get(cpu, "mems", str, f"{where}.cpu") or None,
            device_rules=tuple(rules),
        )
    except (TypeError, ValueError) as exc:
        raise BundleError(where, str(exc)) from None


#: Kernel parameters of a namespace (runc's list): prefix -> the namespace it needs.
_NAMESPACED_SYSCTLS = (
    ("kernel.msgmax", c.CLONE_NEWIPC),
    ("kernel.msgmnb", c.CLONE_NEWIPC),
    ("kernel.msgmni", c.CLONE_NEWIPC),
    ("kernel.sem", c.CLONE_NEWIPC),
    ("kernel.shmall", c.CLONE_NEWIPC),
    ("kernel.shmmax", c.CLONE_NEWIPC),
    ("kernel.shmmni", c.CLONE_NEWIPC),
    ("kernel.shm_rmid_forced", c.CLONE_NEWIPC),
    ("fs.mqueue.", c.CLONE_NEWIPC),
    ("net.", c.CLONE_NEWNET),
)


def _sysctls(items: dict[str, Any], flags: int) -> list[Sysctl]:
    out = []
    for key, value in items.items():
        where = f"linux.sysctl.{key}"
        if not isinstance(value, str):
            raise BundleError(where, "must be a string")
        need = next((ns for prefix, ns in _NAMESPACED_SYSCTLS if key == prefix or key.startswith(prefix)), None)
        if need is None:
            raise BundleError(where, "not a parameter of a namespace of the container's own: refused")
        if not flags & need:
            raise BundleError(where, "needs a namespace of the container's own that linux.namespaces does not list")
        path = key.replace(".", "/")
        if ".." in key or "/" in key:
            raise BundleError(where, "not a sysctl name")
        out.append(Sysctl(path, value))
    return out


def _time_offsets(offsets: dict[str, Any], time_ns: bool) -> Iterator[TimeOffset]:
    if offsets and not time_ns:
        raise BundleError("linux.timeOffsets", "needs a time namespace in linux.namespaces")
    for clock, value in offsets.items():
        where = f"linux.timeOffsets.{clock}"
        if clock not in ("monotonic", "boottime"):
            raise BundleError(where, "only monotonic and boottime have offsets")
        secs = _get(value, "secs", int, where, 0)
        nanos = _get(value, "nanosecs", int, where, 0)
        if not 0 <= nanos < 1_000_000_000:
            raise BundleError(f"{where}.nanosecs", "must be within 0..999999999")
        if secs or nanos:
            yield TimeOffset(clock, secs, nanos)


def _paths(linux: dict[str, Any], key: str) -> list[str]:
    items = _get(linux, key, list, "linux", [])
    for i, p in enumerate(items):
        if not isinstance(p, str) or not p.startswith("/"):
            raise BundleError(f"linux.{key}[{i}]", "must be an absolute path")
    return list(items)


def _seccomp(profile: dict[str, Any], caps: frozenset[int]) -> tuple[bytes, int]:
    from .._parent.seccomp_oci import compile_oci

    _unsupported(profile, "linux.seccomp", ("listenerPath", "listenerMetadata"))
    flags = _get(profile, "flags", list, "linux.seccomp", [])
    for i, flag in enumerate(flags):
        if flag not in ("SECCOMP_FILTER_FLAG_SPEC_ALLOW", "SECCOMP_FILTER_FLAG_LOG"):
            raise BundleError(f"linux.seccomp.flags[{i}]", f"{flag!r} is not supported")
    try:
        compiled = compile_oci(profile, caps)
    except (ValueError, OSError) as exc:
        raise BundleError("linux.seccomp", str(exc)) from None
    extra = 0
    if "SECCOMP_FILTER_FLAG_SPEC_ALLOW" in flags:
        extra |= 4
    if "SECCOMP_FILTER_FLAG_LOG" in flags:
        extra |= 2
    return compiled.bpf, compiled.flags | extra


def _mounts(items: list[Any], bundle: str) -> tuple[list[Bind], list[Tmpfs], list[int], str]:
    """The binds, the tmpfs mounts, the indexes of the cgroup mounts' places
    among the binds, and SpawnConfig.mount_order."""
    binds: list[Bind] = []
    tmpfs: list[Tmpfs] = []
    cgroup_mounts: list[int] = []
    order = ""
    for i, item in enumerate(items):
        where = f"mounts[{i}]"
        dst = _get(item, "destination", str, where, "")
        if not dst.startswith("/"):
            raise BundleError(f"{where}.destination", f"must be an absolute path, got {dst!r}")
        dst = os.path.normpath(dst)
        kind = _get(item, "type", str, where, "")
        options = _get(item, "options", list, where, [])
        if not all(isinstance(o, str) for o in options):
            raise BundleError(f"{where}.options", "must be a list of strings")
        _unsupported(item, where, ("uidMappings", "gidMappings"))
        is_bind = "bind" in options or "rbind" in options or kind == "bind"
        letter = _STANDARD_MOUNTS.get((dst, kind))
        if letter is not None and not is_bind:
            if letter in order:
                raise BundleError(f"{where}.destination", f"{dst} is listed twice")
            order += letter  # PID 1's own (mounts.c), with the same flags or stricter
            continue
        if kind == "cgroup":
            # The container's own cgroup2 directory, bound once it exists
            # (runtime.py): what a cgroup namespace's cgroup2 mount shows.
            cgroup_mounts.append(len(binds))
            binds.append(Bind("", dst, "rw" not in options))
            order += "B"
            continue
        if is_bind:
            src = _get(item, "source", str, where, "")
            if not src:
                raise BundleError(f"{where}.source", "a bind needs a source")
            src = os.path.realpath(os.path.join(bundle, src))
            if not os.path.exists(src):
                raise BundleError(f"{where}.source", f"{src} does not exist")
            read_only, propagation = False, 0
            for option in options:
                if option in ("ro", "rw"):
                    read_only = option == "ro"
                elif option in _PROPAGATION:
                    propagation = _PROPAGATION[option]
                elif option.split("=", 1)[0] in _TMPFS_DATA:
                    pass  # a filesystem's data, which mount(2) ignores for a bind (runc passes it)
                elif option not in _ALWAYS and option not in ("exec", "noexec", "suid", "dev"):
                    raise BundleError(f"{where}.options", f"{option!r} is not supported on a bind")
            binds.append(Bind(src, dst, read_only, propagation=propagation))
            order += "B"
        elif kind == "tmpfs":
            data, read_only, exec_, propagation = [], False, False, 0
            for option in options:
                if option in ("ro", "rw"):
                    read_only = option == "ro"
                elif option in _PROPAGATION:
                    propagation = _PROPAGATION[option]
                elif option in ("exec", "noexec"):
                    exec_ = option == "exec"
                elif option.split("=", 1)[0] in _TMPFS_DATA:
                    data.append(option)
                elif option not in _ALWAYS:
                    raise BundleError(f"{where}.options", f"{option!r} is not supported on a tmpfs")
            source = _get(item, "source", str, where, "") or "tmpfs"
            tmpfs.append(Tmpfs(dst, ",".join(data), read_only, exec_, source, propagation))
            order += "T"
        else:
            raise BundleError(f"{where}.type", f"mounting {kind or 'a mount without type'} at {dst} is not supported")
    missing = "".join(k for k in _ALWAYS_MOUNTED if k not in order)
    return binds, tmpfs, cgroup_mounts, missing + order


def _hooks(hooks: dict[str, Any]) -> Hooks:
    out: dict[str, list[Hook]] = {}
    for name in ("createContainer", "startContainer"):
        if hooks.get(name):
            raise BundleError(f"hooks.{name}", "hooks run in the container's namespaces are not supported")
    for name, key in (("prestart", "create_runtime"), ("createRuntime", "create_runtime"), ("poststart", "poststart")):
        for i, hook in enumerate(_get(hooks, name, list, "hooks", [])):
            out.setdefault(key, []).append(_hook(hook, f"hooks.{name}[{i}]"))
    for i, hook in enumerate(_get(hooks, "poststop", list, "hooks", [])):
        out.setdefault("poststop", []).append(_hook(hook, f"hooks.poststop[{i}]"))
    return Hooks(**{k: tuple(v) for k, v in out.items()})


def _hook(hook: Any, where: str) -> Hook:
    path = _get(hook, "path", str, where, "")
    if not path.startswith("/"):
        raise BundleError(f"{where}.path", "must be an absolute path")
    args = tuple(_get(hook, "args", list, where, []) or [path])
    env = tuple(_get(hook, "env", list, where, []))
    timeout = _get(hook, "timeout", int, where)
    if timeout is not None and timeout <= 0:
        raise BundleError(f"{where}.timeout", "must be positive")
    return path, args, env, float(timeout) if timeout else None
