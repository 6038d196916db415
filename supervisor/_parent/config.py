"""Turn a :class:`~supervisor.Spec` into the :class:`SpawnConfig` PID 1 runs from.

Everything is resolved here, once, in the supervisor: paths made absolute,
the environment completed, the embedded default root described, the seccomp
filter compiled, the capability set turned into a mask. PID 1 then needs no
policy of its own.
"""

from __future__ import annotations

import functools
import os
import resource
import stat

from .._privileges import is_rootless
from .._protocol import Bind, Rlimit, SpawnConfig, SystemDir, TimeOffset, Tmpfs
from .._spec import TIME_OFFSET_CLOCKS, Spec
from .._sys import constants as c
from .._sys import linux
from . import idmap, userns
from .faults import spawn_faults
from .seccomp import compile_profile

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

#: The host folders the embedded default root shows, read-only.
SYSTEM_DIRS = ("usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32", "etc")


#: Hidden from the container (runc's defaults): files under a /dev/null bind,
#: directories under an empty read-only tmpfs.
MASKED_PATHS = (
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
)
#: Made read-only (runc's defaults).
READONLY_PATHS = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")


@functools.lru_cache(maxsize=1)
def system_entries() -> tuple[SystemDir, ...]:
    """Each host system folder that exists, for the embedded default root.

    Merged-/usr hosts have /bin -> usr/bin and friends: those stay symlinks.
    """
    out = []
    for name in SYSTEM_DIRS:
        path = "/" + name
        if os.path.islink(path):
            out.append(SystemDir(name, os.readlink(path)))
        elif os.path.isdir(path):
            out.append(SystemDir(name, None))
    return tuple(out)


@functools.lru_cache(maxsize=1)
def last_cap() -> int:
    """The highest capability number the running kernel knows."""
    with open("/proc/sys/kernel/cap_last_cap", "rb") as f:
        return int(f.read())


def default_home(spec: Spec) -> str:
    """HOME: /root for uid 0; /home on the default root; / otherwise."""
    if spec.uid == 0:
        return "/root"
    return "/home" if spec.rootfs is None else "/"


def build_env(spec: Spec, hostname: str, tty: bool = False) -> dict[str, str]:
    """The payload's clean environment: sane defaults, then the caller's."""
    env = {
        "PATH": DEFAULT_PATH,
        "HOME": default_home(spec),
        "TERM": "xterm" if tty else "dumb",
        "HOSTNAME": hostname,
    }
    env.update(spec.env)
    return env


def build_config(
    spec: Spec, hostname: str, *, network: bool = False, etc_dir: str | None = None, live_phases: bool = True
) -> SpawnConfig:
    """The configuration PID 1 runs from.

    ``etc_dir`` is the per-container folder where the supervisor writes
    ``hosts`` and ``resolv.conf`` in bridge mode (see :func:`network_mounts`).
    ``cgroup`` is filled in by the caller once the cgroup exists (see
    :meth:`supervisor._parent.cgroups.ContainerCgroup.entry_fds`).

    Raises:
        ValueError: ``Spec.seccomp`` names a profile that does not compile.
    """
    fault, id_maps_fault = spawn_faults()
    env = build_env(spec, hostname, tty=spec.tty)
    caps = spec.capabilities
    compiled = compile_profile(spec.seccomp, caps)
    mask = 0
    for cap in caps:
        mask |= 1 << int(cap)
    timens = linux.has_time_namespaces() and (spec.init or linux.exec_enters_time_namespace())
    rootless = is_rootless()
    if rootless:
        spec.check_rootless()  # again here: the euid may have changed since the run's own check
    ids = userns.resolve(spec)
    return SpawnConfig(
        # network="host": no network namespace of its own (unsafe, documented).
        clone_flags=c.CONTAINER_NAMESPACES & ~c.CLONE_NEWNET if spec.network == "host" else c.CONTAINER_NAMESPACES,
        argv=list(spec.command),
        env=[f"{k}={v}" for k, v in env.items()],
        search_path=env.get("PATH", ""),
        cwd=spec.cwd,
        hostname=hostname,
        uid=spec.uid,
        gid=spec.gid if spec.gid is not None else spec.uid,
        # map_base="auto": the leased range, set by the caller before the spawn.
        map_base=ids.uid_base,
        map_gid_base=ids.gid_base,
        map_size=ids.size,
        map_uid_inside=ids.uid_inside,
        map_gid_inside=ids.gid_inside,
        uid_helper=ids.uid_helper,
        gid_helper=ids.gid_helper,
        sub_uid_base=ids.sub_uid_base,
        sub_gid_base=ids.sub_gid_base,
        sub_size=ids.sub_size,
        rootless=rootless,
        # Host paths resolved here: PID 1 opens them below its old root, where
        # an absolute symlink on the way (/var/run -> /run) would point into
        # its staging root instead of the host.
        rootfs=(linux.real_dir(spec.rootfs) or os.path.realpath(spec.rootfs)) if spec.rootfs is not None else None,
        overlay=spec.overlay,
        read_only_root=spec.read_only,
        tty=spec.tty,
        network_request=network,
        own_loopback=spec.network != "host",  # host mode: the host's own lo, not ours to touch
        live_phases=live_phases,
        fault=fault,
        id_maps_fault=id_maps_fault,
        capabilities=mask,
        last_cap=last_cap(),
        system=list(system_entries()) if spec.rootfs is None else [],
        binds=network_mounts(spec, etc_dir) + idmap.binds_of(spec),
        rlimits=[
            Rlimit(getattr(resource, "RLIMIT_" + name), soft, hard) for name, (soft, hard) in spec.rlimits.items()
        ],
        masked_paths=list(MASKED_PATHS),
        readonly_paths=list(READONLY_PATHS),
        seccomp_bpf=compiled.bpf if compiled is not None else b"",
        seccomp_flags=compiled.flags if compiled is not None else 0,
        init=spec.init,
        # A time namespace of its own wherever the payload can be in it
        # (asked-for offsets where it cannot were refused by Spec.check_host).
        time_namespace=timens,
        time_offsets=time_offsets(spec) if timens else [],
        tmpfs=[_tmpfs(path, options) for path, options in spec.tmpfs.items()],
        hosts=etc_hosts(spec, hostname) if etc_dir is None else None,
    )


def _tmpfs(path: str, options: str) -> Tmpfs:
    """A ``Spec.tmpfs`` entry as PID 1 mounts it: the flags apart from the mount's data."""
    data, read_only, exec_ = [], False, False
    for option in filter(None, options.split(",")):
        if option in ("ro", "rw"):
            read_only = option == "ro"
        elif option in ("exec", "noexec"):
            exec_ = option == "exec"
        elif option not in ("nosuid", "nodev"):  # always so
            data.append(option)
    return Tmpfs(path, ",".join(data), read_only, exec_)


def with_map_base(config: SpawnConfig, base: int) -> SpawnConfig:
    """``config`` with its leased host id range (``Spec(map_base="auto")``,
    leased once the run's clean-up is in place, after :func:`build_config`)."""
    import dataclasses  # only for map_base="auto": not on every command line's path

    return dataclasses.replace(config, map_base=base, map_gid_base=base)


def time_offsets(spec: Spec) -> list[TimeOffset]:
    """The lines of the container's ``timens_offsets``, none if all are zero.

    The kernel takes offsets against the initial time namespace; ``Spec``'s are
    against the supervisor's clocks, so the supervisor's own offsets (zero
    unless it runs in a time namespace of its own) are added.
    """
    own = linux.own_time_offsets()
    out = []
    for clock in TIME_OFFSET_CLOCKS:
        value = spec.time_offsets.get(clock, 0)
        ns = own.get(clock, 0) + (value * 1_000_000_000 if isinstance(value, int) else round(value * 1e9))
        if ns:
            seconds, nanoseconds = divmod(ns, 1_000_000_000)
            out.append(TimeOffset(clock, seconds, nanoseconds))
    return out


def network_mounts(spec: Spec, etc_dir: str | None) -> list[Bind]:
    """Read-only binds of the supervisor-written ``/etc/hosts`` and ``/etc/resolv.conf``.

    They go first, so the caller's own mounts can still replace them. A bind
    needs its mount point: a ``rootfs`` lacking the file keeps its own (none),
    since the supervisor never creates files in the host's rootfs.

    Args:
        spec: the container's spec.
        etc_dir: the host folder holding ``hosts`` and ``resolv.conf``, or
            ``None`` (no bridge network).

    Returns:
        the binds, first in :attr:`SpawnConfig.binds`.
    """
    if etc_dir is None:
        return []
    return [
        Bind(os.path.join(etc_dir, name), "/etc/" + name, True)
        for name in ("hosts", "resolv.conf")
        if _has_file(spec, "/etc/" + name)
    ]


def _has_file(spec: Spec, path: str) -> bool:
    """Whether the container's root has the file ``path`` to bind over.

    The embedded default root has the host's ``/etc``. A rootfs must have it
    itself, with or without an overlay: its folders belong to host ids the
    container does not map, so not even an overlay's upper layer may create
    files in them.
    """
    if spec.rootfs is None:
        return os.path.isfile(path)
    try:
        resolved = resolve_in_root(spec.rootfs, path)
    except OSError:
        return False
    return os.path.isfile(spec.rootfs + resolved)


#: The most of the host's ``/etc/hosts`` carried into a container with the
#: host's network (PID 1 writes it into a 64 KiB staging tmpfs).
_HOST_HOSTS_MAX = 32 * 1024


def hosts_text(hostname: str, address: str, header: str) -> str:
    """A container's ``/etc/hosts``: localhost, and its hostname at ``address``.

    Args:
        hostname: the container's hostname (its first label is named too).
        address: where the hostname resolves.
        header: the comment line that opens the file (without ``#``).

    Returns:
        the file's text.
    """
    short = hostname.split(".", 1)[0]
    names = hostname if short == hostname else f"{hostname} {short}"
    return f"# {header}\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n{address}\t{names}\n"


def etc_hosts(spec: Spec, hostname: str) -> str | None:
    """The ``/etc/hosts`` PID 1 writes, so that the container's hostname resolves.

    Without a bridge the hostname resolves to ``127.0.1.1`` (Debian's own
    convention for a host without a fixed address; it is loopback in every
    network namespace). With the host's network, the host's own entries come
    first. A ``rootfs`` without the file keeps none (the supervisor never
    creates files in the host's rootfs), as for the bridge's files.

    Args:
        spec: the container's spec (not in bridge mode: the bridge writes its own).
        hostname: the container's hostname.

    Returns:
        the text, or ``None`` for the root's own file.
    """
    if not _has_file(spec, "/etc/hosts"):
        return None
    text = hosts_text(hostname, "127.0.1.1", f"written by supervisor (network={spec.network})")
    if spec.network == "host":
        try:
            with open("/etc/hosts", "rb") as f:
                raw = f.read(_HOST_HOSTS_MAX + 1)
        except OSError:
            raw = b""
        # NULs dropped (PID 1 takes a C string), and the size counted in the
        # bytes PID 1 writes (the staging tmpfs holds 64 KiB).
        own = raw.replace(b"\0", b"").decode("utf-8", "replace")
        if len(own.encode()) <= _HOST_HOSTS_MAX:
            if own and not own.endswith("\n"):
                own += "\n"
            text = own + text.splitlines(keepends=True)[-1]  # the host's lines, then the hostname's
    return text


def resolve_in_root(root: str, path: str) -> str:
    """Resolve ``path`` as if ``root`` were ``/``; return the container path.

    Follows symlinks found under ``root`` but never lets ``..`` or an absolute
    target escape it (the contract of ``openat2(RESOLVE_IN_ROOT)``, and of
    PID 1's own resolution of mount points). A missing tail is kept as is.

    Raises:
        OSError: too many levels of symbolic links (ELOOP).
    """
    parts = [p for p in path.split("/") if p not in ("", ".")]
    done: list[str] = []
    budget = 40
    missing = False
    while parts:
        part = parts.pop(0)
        if part == "..":
            if done:
                done.pop()
            continue
        if missing:
            done.append(part)
            continue
        candidate = root + "/" + "/".join([*done, part])
        try:
            st = os.lstat(candidate)
        except FileNotFoundError:
            missing = True
            done.append(part)
            continue
        if stat.S_ISLNK(st.st_mode):
            budget -= 1
            if budget == 0:
                raise OSError(40, f"too many levels of symbolic links resolving {path}")
            target = os.readlink(candidate)
            if target.startswith("/"):
                done = []
            parts = [p for p in target.split("/") if p not in ("", ".")] + parts
            continue
        done.append(part)
    return "/" + "/".join(done)
