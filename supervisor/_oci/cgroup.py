"""Where an OCI container's cgroup goes: ``linux.cgroupsPath`` in each hierarchy.

The runtime spec's two forms of the cgroupfs path: an absolute path is
taken from each hierarchy's root (``/libpod_parent/libpod-ID``), a relative
one below the runtime's own cgroup; without one, the container's id below
the runtime's own. The systemd form (``slice:prefix:name``) needs
``--systemd-cgroup``, which this runtime does not support. Missing parents
are created (on v2 with the cpu, memory and pids controllers their parent
offers enabled for their children) and recorded, so that ``delete`` removes
those it made once they are empty.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os

from .._limits import Limits
from .._parent.cgroups import ContainerCgroup
from .._parent.cgroups.host import CgroupHost, Hierarchy, detect, make_parents
from .bundle import BundleError


def _root_dir(h: Hierarchy) -> str:
    """The directory of the hierarchy's root cgroup as this process sees it."""
    own = h.own_path.rstrip("/")
    if own and h.own_dir.rstrip("/").endswith(own):
        return h.own_dir.rstrip("/")[: -len(own)] or "/"
    return h.mount


def place(
    cgroups_path: str | None, cid: str, limits: Limits, cpu_shares: int | None = None, mknod: bool = False
) -> tuple[ContainerCgroup, list[str]]:
    """The container's cgroup (not yet set up) and the parent directories made for it.

    ``cpu_shares``, the config's: where the cpu controller is v1's, the
    weight becomes the one the library writes as those shares (the v1
    mapping, ``shares = weight * 1024 / 100``) rather than crun's v2
    conversion. ``mknod``: the container gets a ``/dev`` where nodes open
    (it lists devices) and keeps ``CAP_MKNOD``, which only a v1 devices
    cgroup can then confine.

    Raises:
        BundleError: ``linux.cgroupsPath`` is in the systemd form or not a plain path.
        OSError: a parent directory cannot be made (naming it), or a limit
            needs a controller this host does not give.
    """
    path = cgroups_path or cid
    if ":" in path and not path.startswith("/"):
        raise BundleError("linux.cgroupsPath", f"{path!r} is in the systemd form, which needs --systemd-cgroup")
    norm = os.path.normpath(path)
    if ".." in norm.split("/") or norm in ("/", "."):
        raise BundleError("linux.cgroupsPath", f"{path!r} is not a cgroup below a hierarchy's root")
    parent, name = os.path.split(norm)
    host = detect()
    cpu = host.placement("cpu")
    if cpu_shares and limits.cpu_weight is not None and cpu is not None and cpu.version == 1:
        limits = dataclasses.replace(limits, cpu_weight=Limits.weight_for_shares(cpu_shares))
    if host.v1_hierarchy("devices") is None:
        # v2 controls devices with BPF programs, which this runtime does not
        # load: the rules are honoured by every filesystem of the container
        # being nodev (its own nodes are binds), which a bundle that lists
        # devices gives up for /dev; then nothing would stop CAP_MKNOD.
        if mknod:
            raise BundleError(
                "linux.devices",
                "device nodes with CAP_MKNOD in the bounding set need a v1 devices cgroup to confine the container "
                "(this host has none): drop CAP_MKNOD",
            )
        limits = dataclasses.replace(limits, device_rules=None)
    made: list[str] = []

    def moved(h: Hierarchy) -> Hierarchy:
        base = _root_dir(h) if norm.startswith("/") else h.own_dir
        directory = os.path.normpath(base + "/" + parent.lstrip("/")) if parent.strip("/") else base
        made.extend(make_parents(directory, v2=h.version == 2))
        controllers = h.controllers
        if h.version == 2:
            with open(os.path.join(directory, "cgroup.subtree_control")) as f:
                controllers = frozenset(f.read().split())
        own_path = os.path.normpath((parent if norm.startswith("/") else h.own_path + "/" + parent) or "/")
        return dataclasses.replace(h, own_path=own_path, own_dir=directory, controllers=controllers)

    try:
        unified = moved(host.unified) if host.unified is not None else None
        v1 = tuple(moved(h) for h in host.v1)
        cgroup = ContainerCgroup(CgroupHost(host.version, unified, v1), name, limits)
    except BaseException:
        remove_parents(made)
        raise
    return cgroup, made


def remove_parents(made: list[str]) -> None:
    """Remove the parent directories :func:`place` made, deepest first, those now empty."""
    for d in sorted(made, key=len, reverse=True):
        with contextlib.suppress(OSError):
            os.rmdir(d)


def dirs(cgroup: ContainerCgroup) -> list[str]:
    """The container's cgroup directories, as created."""
    return cgroup.paths
