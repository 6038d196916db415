"""What only the cgroup tests need of a container's cgroup: making one in one
call, moving a process into it by PID, finding and adopting leftovers by name
(the product itself clones into its cgroup and recovers from its ledger)."""

from __future__ import annotations

import os

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
