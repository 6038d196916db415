"""What only the cgroup tests need of a container's cgroup: making one in one
call, moving a process into it by PID, finding and adopting leftovers by name
(the product itself clones into its cgroup and recovers from its ledger)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from supervisor._limits import Limits
from supervisor._parent.cgroups import CgroupHost, ContainerCgroup, files


def create(host: CgroupHost, name: str, limits: Limits | None = None) -> ContainerCgroup:
    """A container cgroup, set up (directories made, limits written)."""
    cgroup = ContainerCgroup(host, name, limits)
    cgroup.setup()
    return cgroup


def attach(cgroup: ContainerCgroup, pid: int) -> None:
    """Move ``pid`` into every directory of ``cgroup`` (``cgroup.procs``; the
    error names the file, ``ProcessLookupError`` for no such process)."""
    if not cgroup.paths:
        raise RuntimeError(f"cgroup {cgroup.name!r} is not set up (or already removed)")
    for directory in cgroup.paths:
        files.write(os.path.join(directory, "cgroup.procs"), str(pid))


def find_leftovers(host: CgroupHost, prefix: str) -> list[str]:
    """Names of cgroups below our own, in any hierarchy, that start with ``prefix``."""
    if not prefix or "/" in prefix:
        raise ValueError(f"invalid prefix {prefix!r}: must be non-empty, without '/'")
    names: set[str] = set()
    for hierarchy in ([host.unified] if host.unified is not None else []) + list(host.v1):
        try:
            entries = list(os.scandir(hierarchy.own_dir))
        except OSError:
            continue
        names.update(e.name for e in entries if e.name.startswith(prefix) and e.is_dir(follow_symlinks=False))
    return sorted(names)


def adopt(host: CgroupHost, name: str) -> ContainerCgroup:
    """A cgroup object owning the existing directories called ``name`` below
    our own cgroups, to kill and remove them."""
    cgroup = ContainerCgroup(host, name, None)
    for hierarchy in ([host.unified] if host.unified is not None else []) + list(host.v1):
        path = os.path.join(hierarchy.own_dir, name)
        if os.path.isdir(path):
            cgroup._created.append(path)
            cgroup._dirs[hierarchy] = path
    return cgroup


def v2_dir_fd(cgroup: ContainerCgroup) -> int | None:
    """The v2 directory opened for ``CLONE_INTO_CGROUP``, or ``None`` without one."""
    directory = cgroup._v2_dir()
    return None if directory is None else os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)


@contextlib.contextmanager
def unit_cgroup(prefix: str, controllers: set[str]) -> Iterator[tuple[str, str]]:
    """A cgroup v2 "unit" below our own with a ``supervisor`` leaf, as systemd
    makes for a unit with ``Delegate=yes``; removed afterwards (with the
    ``containers`` cgroup a test may have had the product make in it).

    Skips the test unless the host is pure cgroup v2 and gives our children
    ``controllers``.

    Yields:
        the unit as a cgroup path (as ``/proc/self/cgroup`` names one) and its directory.
    """
    import pytest

    from supervisor._parent import cgroups

    host = cgroups.detect()
    if host.version != "v2" or host.unified is None or not controllers <= set(host.unified.controllers):
        wanted = " and ".join(sorted(controllers))
        pytest.skip(f"needs a pure cgroup v2 host that delegates {wanted} to our children (the v2 guest tier)")
    unit = host.unified.own_path.rstrip("/") + f"/{prefix}-{os.getpid()}"
    unit_dir = host.unified.mount + unit
    os.mkdir(unit_dir)
    os.mkdir(os.path.join(unit_dir, "supervisor"))
    try:
        yield unit, unit_dir
    finally:
        for sub in ("containers", "supervisor", ""):
            path = os.path.join(unit_dir, sub) if sub else unit_dir
            if os.path.isdir(path):
                os.rmdir(path)


def _cgroup_mounts() -> list[tuple[str, str]]:
    """(mount point, root) of every mounted cgroup hierarchy."""
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            kind = fields[fields.index("-") + 1]
            if kind in ("cgroup", "cgroup2"):
                out.append((fields[4], fields[3]))
    return out


@contextlib.contextmanager
def engine_parent(tag: str) -> Iterator[str]:
    """A cgroup path below our own in every hierarchy, for an engine that
    takes one path for all of them (podman's ``--cgroup-parent`` with
    cgroupfs): the deepest of our own paths, then ``tag``. Whatever was made
    for it in any hierarchy (the path, what is below it, missing folders on
    the way) is removed at the end, deepest first, once empty.

    Raises:
        ValueError: our cgroups are not on one path (one hierarchy's own
            path is not a prefix of the deepest).
    """
    with open("/proc/self/cgroup") as f:
        own = [line.rstrip("\n").split(":", 2)[2] for line in f if line.strip()]
    deepest = max(own, key=len)
    if not all(deepest == p or deepest.startswith(p.rstrip("/") + "/") for p in own):
        raise ValueError(f"our cgroups {own} are not on one path")
    parent = deepest.rstrip("/") + "/" + tag
    chain = []
    path = parent
    while path not in ("", "/"):
        chain.append(path)
        path = os.path.dirname(path)
    existed = {(m, p) for m, _root in _cgroup_mounts() for p in chain if os.path.isdir(m + p)}
    try:
        yield parent
    finally:
        for mount, _root in _cgroup_mounts():
            below = mount + parent
            if os.path.isdir(below):
                for directory, _dirs, _files in sorted(os.walk(below), key=lambda t: -len(t[0])):
                    with contextlib.suppress(OSError):
                        os.rmdir(directory)
            for p in chain[1:]:
                if (mount, p) not in existed:
                    with contextlib.suppress(OSError):
                        os.rmdir(mount + p)
