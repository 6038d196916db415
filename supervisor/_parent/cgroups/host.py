"""The host's cgroup layout: which hierarchies are mounted where, our own
cgroup in each, and what the v2 one lets our children use.

Pure text parsing of ``/proc/self/cgroup`` and ``/proc/self/mountinfo``
(:func:`parse_host`), read once (:func:`detect`); :func:`with_parent` places
containers below another v2 cgroup.
"""

from __future__ import annotations

import errno
import functools
import os
import re
from collections.abc import Iterator

from ..._privileges import is_rootless
from ..._record import field, record
from .files import inherit_cpuset, write

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (3 ms for a command line)
if TYPE_CHECKING:
    from typing import Literal

if TYPE_CHECKING:
    CgroupVersion = Literal["v1", "v2", "hybrid"]
else:
    CgroupVersion = str  # at run time: the alias needs typing.Literal, which is not imported


@record
class Hierarchy:
    """One mounted cgroup hierarchy, as seen from the supervisor.

    Attributes:
        version: 1 or 2.
        mount: where it is mounted.
        own_path: our cgroup in it, as ``/proc/self/cgroup`` names it.
        own_dir: the directory of our cgroup (``mount`` + ``own_path`` relative
            to the mount's root).
        controllers: v1: the controllers bound to this hierarchy; v2: the
            controllers our children can use (our ``cgroup.subtree_control``).
    """

    version: Literal[1, 2]
    mount: str
    own_path: str
    own_dir: str
    controllers: frozenset[str]


@record
class CgroupHost:
    """The cgroup layout of this host, from :func:`detect`.

    Attributes:
        version: ``"v1"``, ``"v2"`` or ``"hybrid"`` (both mounted).
        unified: the cgroup2 hierarchy, or ``None``.
        v1: the v1 hierarchies that hold controllers (named ones such as
            ``name=systemd`` are left out), one entry per hierarchy.
    """

    version: CgroupVersion
    unified: Hierarchy | None
    v1: tuple[Hierarchy, ...] = field(default=())

    def v1_hierarchy(self, controller: str) -> Hierarchy | None:
        """The v1 hierarchy ``controller`` is bound to.

        Args:
            controller: a controller name such as ``"memory"``.

        Returns:
            The hierarchy, or ``None`` when no v1 hierarchy has it.
        """
        for hierarchy in self.v1:
            if controller in hierarchy.controllers:
                return hierarchy
        return None

    def placement(self, controller: str) -> Hierarchy | None:
        """Where a container gets ``controller``: v2 if delegated to our children there, else v1.

        Args:
            controller: a controller name such as ``"memory"``.

        Returns:
            The hierarchy, or ``None`` when the controller is not available to us.
        """
        if self.unified is not None and controller in self.unified.controllers:
            return self.unified
        return self.v1_hierarchy(controller)

    def restricted(self, version: Literal["v1", "v2"]) -> CgroupHost:
        """This host with only its v1 or only its v2 part (forces one code path; for tests and fallbacks).

        Args:
            version: the part to keep.

        Returns:
            A new layout with ``version`` set accordingly.

        Raises:
            ValueError: the host has no hierarchy of that version.
        """
        if version == "v1":
            if not self.v1:
                raise ValueError("this host has no cgroup v1 hierarchy with controllers")
            return CgroupHost("v1", None, self.v1)
        if self.unified is None:
            raise ValueError("this host has no cgroup2 hierarchy")
        return CgroupHost("v2", self.unified, ())


def _unescape(text: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), text)


def mountinfo_entries(mountinfo: str) -> Iterator[tuple[str, str, list[str], str, str]]:
    """Each mount of a ``/proc/PID/mountinfo`` text, as ``(root, mount point,
    mount options, filesystem type, superblock options)``, paths unescaped."""
    for line in mountinfo.splitlines():
        fields = line.split()
        try:
            sep = fields.index("-", 6)
        except ValueError:
            continue
        superopts = fields[sep + 3] if len(fields) > sep + 3 else ""
        yield _unescape(fields[3]), _unescape(fields[4]), fields[5].split(","), fields[sep + 1], superopts


def mount_points() -> list[str]:
    """Where cgroup hierarchies (v1 and v2) are mounted in our mount namespace."""
    with open("/proc/self/mountinfo") as f:
        text = f.read()
    return [mount for _root, mount, _opts, fstype, _super in mountinfo_entries(text) if fstype in ("cgroup", "cgroup2")]


def _relative_dir(mount: str, root: str, own: str) -> str | None:
    root = root.rstrip("/")
    if own != root and not own.startswith(root + "/"):
        return None
    rel = own[len(root) :].strip("/")
    return os.path.join(mount, rel) if rel else mount


def _read_controllers(path: str) -> frozenset[str]:
    try:
        with open(path) as f:
            return frozenset(f.read().split())
    except OSError:
        return frozenset()


def parse_host(proc_cgroup: str, mountinfo: str) -> CgroupHost:
    """Build a :class:`CgroupHost` from the text of ``/proc/self/cgroup`` and ``/proc/self/mountinfo``.

    A hierarchy is used only through a read-write mount whose root contains
    our cgroup. The v2 controllers are read from our cgroup's
    ``cgroup.subtree_control`` under that mount.

    Args:
        proc_cgroup: contents of ``/proc/self/cgroup``.
        mountinfo: contents of ``/proc/self/mountinfo``.

    Returns:
        The layout.

    Raises:
        OSError: no usable cgroup hierarchy is mounted (``ENOENT``).
    """
    own_v1: dict[str, str] = {}
    own_v2: str | None = None
    for line in proc_cgroup.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        hid, names, path = parts
        if hid == "0" and names == "":
            own_v2 = path
        else:
            for ctrl in names.split(","):
                if ctrl and not ctrl.startswith("name="):
                    own_v1[ctrl] = path
    unified: Hierarchy | None = None
    v1: list[Hierarchy] = []
    seen: set[frozenset[str]] = set()
    for root, mount, opts, fstype, superopts in mountinfo_entries(mountinfo):
        if "ro" in opts:
            continue
        if fstype == "cgroup2" and unified is None and own_v2 is not None:
            own_dir = _relative_dir(mount, root, own_v2)
            if own_dir is not None:
                ctrls = _read_controllers(os.path.join(own_dir, "cgroup.subtree_control"))
                unified = Hierarchy(2, mount, own_v2, own_dir, ctrls)
        elif fstype == "cgroup":
            ctrls = frozenset(opt for opt in superopts.split(",") if opt in own_v1)
            if not ctrls or ctrls in seen:
                continue
            own = own_v1[next(iter(ctrls))]
            own_dir = _relative_dir(mount, root, own)
            if own_dir is not None:
                seen.add(ctrls)
                v1.append(Hierarchy(1, mount, own, own_dir, ctrls))
    if unified is None and not v1:
        raise OSError(errno.ENOENT, "no writable cgroup hierarchy containing our own cgroup is mounted")
    version: CgroupVersion = "hybrid" if unified and v1 else "v2" if unified else "v1"
    return CgroupHost(version, unified, tuple(v1))


@functools.cache
def detect() -> CgroupHost:
    """Detect this host's cgroup layout once (cached; ``detect.cache_clear()`` forgets it).

    Returns:
        The layout: version, and per hierarchy its mount point and our own cgroup.

    Raises:
        OSError: ``/proc`` is unreadable, or no usable cgroup hierarchy is mounted.
    """
    with open("/proc/self/cgroup") as f:
        proc_cgroup = f.read()
    with open("/proc/self/mountinfo") as f:
        mountinfo = f.read()
    return parse_host(proc_cgroup, mountinfo)


#: The controllers a parent made by :func:`with_parent` enables for its children.
_PARENT_CONTROLLERS = ("cpu", "memory", "pids")


def make_parents(directory: str, v2: bool) -> list[str]:
    """Create ``directory`` and its missing parents, each (on v2) with the cpu,
    memory and pids controllers its own parent offers enabled for its
    children (a new cgroup holds no process, so the kernel allows that), or
    (in a v1 cpuset hierarchy) with its parent's CPUs and memory nodes, which
    a new v1 cpuset cgroup lacks; an existing directory, or one another
    process makes meanwhile, is never written to.

    Returns:
        the directories made, outermost first.

    Raises:
        OSError: a ``mkdir`` or a write failed; the message names the path.
    """
    missing: list[str] = []
    probe = directory
    while not os.path.isdir(probe):
        missing.append(probe)
        probe = os.path.dirname(probe)
    made = []
    for path in reversed(missing):
        try:
            os.mkdir(path, 0o755)
        except FileExistsError:
            continue  # another container made it meanwhile: not ours to write
        except OSError as exc:
            raise OSError(exc.errno, f"mkdir {path}: {exc.strerror}") from exc
        made.append(path)
        if v2:
            offered = _read_controllers(os.path.join(path, "cgroup.controllers"))
            enable = " ".join("+" + name for name in _PARENT_CONTROLLERS if name in offered)
            if enable:
                write(os.path.join(path, "cgroup.subtree_control"), enable)
        elif os.path.exists(os.path.join(path, "cpuset.cpus")):
            inherit_cpuset(path)
    return made


def with_parent(host: CgroupHost, parent: str) -> CgroupHost:
    """``host`` with the containers' v2 cgroups placed below ``parent`` instead of our own cgroup.

    ``parent`` is a cgroup path as ``/proc/self/cgroup`` names one (docker's
    ``--cgroup-parent``). Its missing directories are created, each with the
    cpu, memory and pids controllers its own parent offers enabled for its
    children (a new cgroup holds no process, so the kernel allows that); an
    existing directory is used as it is, never written to. They are left in
    place for the next containers. The v1 hierarchies are not affected.

    Args:
        host: the layout from :func:`detect`.
        parent: an absolute cgroup path.

    Returns:
        The layout with that cgroup as the v2 hierarchy's "own" one; its
        controllers are those ``parent`` enables for its children.

    Raises:
        OSError: no cgroup2 hierarchy (``EOPNOTSUPP``), ``parent`` outside the
            mounted part of it (``EXDEV``), or a ``mkdir`` or a write failed;
            the message names the path.
    """
    unified = host.unified
    if unified is None:
        raise OSError(errno.EOPNOTSUPP, f"cgroup_parent {parent}: no cgroup2 hierarchy is mounted")
    rel_own = os.path.relpath(unified.own_dir, unified.mount)
    root = unified.own_path if rel_own == "." else unified.own_path[: -len(rel_own)]
    directory = _relative_dir(unified.mount, root, parent)
    if directory is None:
        raise OSError(errno.EXDEV, f"cgroup_parent {parent}: outside {root}, the part of cgroup2 mounted here")
    make_parents(directory, v2=True)
    controllers = _read_controllers(os.path.join(directory, "cgroup.subtree_control"))
    return CgroupHost(host.version, Hierarchy(2, unified.mount, parent, directory, controllers), host.v1)


def delegated_parent(host: CgroupHost) -> str | None:
    """Rootless: the cgroup v2 subtree delegated to the caller, as a ``cgroup_parent``.

    The nearest cgroup above our own that the caller owns (the directory and
    its ``cgroup.subtree_control``, as systemd's ``Delegate=yes`` or an
    administrator's ``chown`` hands a subtree over) and that enables
    controllers for its children: containers' cgroups are made there, beside
    ours. The walk stops at the first cgroup the caller does not own, as
    crun's and podman's checks do: nothing outside a delegated subtree is
    ever written. Read at each call (a few ``stat`` calls): a subtree may be
    handed over, or its controllers enabled, while the supervisor runs.

    Returns:
        Its cgroup path (as :attr:`Hierarchy.own_path` names ours), or None:
        not rootless, no v2 hierarchy, or no such cgroup.
    """
    unified = host.unified
    if not is_rootless() or unified is None:
        return None
    euid = os.geteuid()
    path, directory = unified.own_path.rstrip("/") or "/", unified.own_dir.rstrip("/")
    while path != "/" and directory != unified.mount.rstrip("/"):
        path, directory = os.path.dirname(path), os.path.dirname(directory)
        control = os.path.join(directory, "cgroup.subtree_control")
        try:
            owned = os.stat(directory).st_uid == euid and os.stat(control).st_uid == euid
        except OSError:
            return None
        if not owned:
            return None
        if _read_controllers(control):
            return path
    return None


def unavailable(host: CgroupHost, controller: str, what: str) -> OSError:
    where = []
    if host.unified is not None:
        where.append(
            f"not enabled in {os.path.join(host.unified.own_dir, 'cgroup.subtree_control')} (v2: the supervisor's "
            "cgroup must delegate it; this library never enables controllers in a cgroup it did not create)"
        )
    if is_rootless():
        where.append("rootless, only a delegated cgroup v2 subtree can give it (v1 hierarchies are root's)")
    else:
        where.append("not mounted as a cgroup v1 hierarchy containing our own cgroup")
    return OSError(
        errno.EOPNOTSUPP, f"cgroup controller {controller!r} is needed for {what} but is " + "; and ".join(where)
    )
