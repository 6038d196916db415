"""Per-container cgroups on cgroup v1, v2 and hybrid hosts: limits, accounting, kill, removal.

Every container gets one cgroup of its own, created **below the supervisor's
own cgroup** in each hierarchy it needs (read from ``/proc/self/cgroup`` and
mapped to mount points through ``/proc/self/mountinfo``; no path is
hard-coded). Nothing here ever moves the supervisor, writes a file of a cgroup
it did not create, or reuses an existing directory of the same name.

Where each option goes (``cpus`` quota uses a 100 000 µs period; v2 wins for a
controller that is enabled for our children on the unified hierarchy, v1 is
used for the rest):

=========================  ==================================================  =========================================
option / operation         cgroup v1 (hierarchy: file)                         cgroup v2 (container's directory)
=========================  ==================================================  =========================================
``memory_bytes``           memory: ``memory.limit_in_bytes``                   ``memory.max``
``memory_swap_bytes``      memory: ``memory.memsw.limit_in_bytes`` (total)     ``memory.swap.max`` = total - memory
whole-container OOM        (none: :meth:`~ContainerCgroup.wait_oom`, kill)     ``memory.oom.group`` = 1 (always)
``cpus``                   cpu: ``cpu.cfs_period_us``, ``cpu.cfs_quota_us``    ``cpu.max`` = ``"<quota> 100000"``
``cpu_weight``             cpu: ``cpu.shares`` = weight * 1024 / 100           ``cpu.weight``
``pids``                   pids: ``pids.max``                                  ``pids.max``
attach                     every hierarchy: ``cgroup.procs``                   ``cgroup.procs``
kill                       freezer: ``freezer.state`` FROZEN, SIGKILL each     ``cgroup.kill`` (5.14+; else
                           pid of ``cgroup.procs``, THAWED                     ``cgroup.freeze`` + SIGKILL + thaw)
empty?                     ``cgroup.procs`` of the subtree is empty            ``cgroup.events``: ``populated 0``
``cpu_user_s/system_s``    cpuacct: ``cpuacct.usage`` (ns, exact) split in     ``cpu.stat``: ``user_usec``,
                           the ratio of ``cpuacct.stat`` user/system ticks     ``system_usec`` (no controller needed)
``peak_memory_bytes``      memory: ``memory.max_usage_in_bytes``               ``memory.peak`` (5.19+)
``oom_killed``             memory: ``memory.oom_control``: ``oom_kill``        ``memory.events``: ``oom_kill``,
                                                                               ``oom_group_kill``
wait for an OOM kill       memory: eventfd on ``memory.oom_control`` through   ``memory.events`` (polled; the kernel
                           ``cgroup.event_control``; then ``kill()``           already killed the whole group)
=========================  ==================================================  =========================================

Layout and the v2 delegation rules (the choice, and why):

* v1: ``<mount>/<own cgroup>/<name>`` in each hierarchy that is needed
  (memory always when it is on v1, for accounting; pids and cpu when limited;
  cpuacct and freezer only when there is no v2 directory to account and kill
  with). Co-mounted controllers (``cpu,cpuacct``) share one directory.
* v2: ``<mount>/<own cgroup>/<name>``, always when a cgroup2 hierarchy is
  mounted, even with no controller (``cgroup.kill``, ``cgroup.events`` and the
  core ``cpu.stat`` work without one). A v2 cgroup can only use the
  controllers its parent lists in ``cgroup.subtree_control``, and we never
  write that file of a cgroup we did not create. **No intermediate
  "supervisor-<pid>" parent is created**: its ``cgroup.controllers`` would be
  exactly our own cgroup's ``cgroup.subtree_control``, so it cannot gain a
  controller that a direct child lacks. The one thing that would (moving the
  supervisor into a leaf so that its old cgroup has no processes and may enable
  domain controllers, the no-internal-process rule) is never done here. So a v2
  controller is used exactly when our own cgroup already delegates it (the root
  cgroup, or a cgroup arranged by the deployment); otherwise the v1 hierarchy
  of that controller is used (hybrid); otherwise a limit that needs it raises
  :class:`OSError` (``EOPNOTSUPP``) naming the controller and the file, before
  anything is created. The container's cgroup itself always stays a leaf
  holding processes and never enables controllers for children.

On a pure v2 host, a cgroup other than the root may hand domain controllers
to its children only while it holds no process (the no-internal-process
rule), and ours holds the supervisor: so v2 limits there need the supervisor
in the root cgroup with the controllers enabled for its children; in a
systemd service or scope they are refused (``EOPNOTSUPP``) while accounting,
``cgroup.kill`` and the freezer still work.

Crash recovery: record :attr:`ContainerCgroup.planned_paths` in the run
directory's ledger (kind ``"cgroup"``, key ``paths``) before
:meth:`ContainerCgroup.setup`; the sweeper registered at the end of this module
hands them to :func:`sweep_paths`. Without a ledger, :func:`find_leftovers` and
:meth:`ContainerCgroup.adopt` find cgroups by name prefix.

Synchronous calls (:meth:`ContainerCgroup.create`, :meth:`~ContainerCgroup.attach`,
:meth:`~ContainerCgroup.stats`) are a few file writes or reads, well under a
millisecond each; only killing (waiting for a freeze, for emptiness) and removal
(EBUSY retries) are async.
"""

from __future__ import annotations

import errno
import functools
import os
import re
import signal
import time
from collections.abc import Callable, Iterable, Iterator

from .._limits import (
    CFS_PERIOD_US,
    Limits,
)
from .._record import field, record
from .rundir import register_sweeper

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (3 ms for a command line)
if TYPE_CHECKING:
    from typing import Any, Literal

if TYPE_CHECKING:
    CgroupVersion = Literal["v1", "v2", "hybrid"]
else:
    CgroupVersion = str  # at run time: the alias needs typing.Literal, which is not imported

_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.@:+-]{0,199}$")


# -- limits -----------------------------------------------------------------


@record
class CgroupStats:
    """What a container's cgroup used, over every process it ever held.

    Attributes:
        cpu_user_s: user CPU time, in seconds (``None`` when the host has
            neither a cgroup2 hierarchy nor a v1 cpuacct one).
        cpu_system_s: system CPU time, in seconds (``None`` likewise).
        peak_memory_bytes: highest memory use (``None`` when the memory
            controller is not available, or v2 before Linux 5.19).
        oom_killed: the kernel's OOM killer killed at least one process.
        oom_kills: how many processes it killed (v2 counts a group kill as
            at least one).
    """

    cpu_user_s: float | None
    cpu_system_s: float | None
    peak_memory_bytes: int | None
    oom_killed: bool
    oom_kills: int


# -- host detection -----------------------------------------------------------


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
    for line in mountinfo.splitlines():
        fields = line.split()
        try:
            sep = fields.index("-", 6)
        except ValueError:
            continue
        fstype, superopts = fields[sep + 1], fields[sep + 3] if len(fields) > sep + 3 else ""
        root, mount, opts = _unescape(fields[3]), _unescape(fields[4]), fields[5].split(",")
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
    missing: list[str] = []
    probe = directory
    while not os.path.isdir(probe):
        missing.append(probe)
        probe = os.path.dirname(probe)
    for path in reversed(missing):
        try:
            os.mkdir(path, 0o755)
        except FileExistsError:
            continue  # another container made it meanwhile: not ours to write
        except OSError as exc:
            raise OSError(exc.errno, f"mkdir {path}: {exc.strerror}") from exc
        offered = _read_controllers(os.path.join(path, "cgroup.controllers"))
        enable = " ".join("+" + name for name in _PARENT_CONTROLLERS if name in offered)
        if enable:
            _write(os.path.join(path, "cgroup.subtree_control"), enable)
    controllers = _read_controllers(os.path.join(directory, "cgroup.subtree_control"))
    return CgroupHost(host.version, Hierarchy(2, unified.mount, parent, directory, controllers), host.v1)


# -- file helpers -------------------------------------------------------------


def _write(path: str, value: str) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise OSError(exc.errno, f"open {path} to write {value!r}: {exc.strerror}") from exc
    try:
        os.write(fd, value.encode())
    except OSError as exc:
        raise OSError(exc.errno, f"write {path} {value!r}: {exc.strerror}") from exc
    finally:
        os.close(fd)


def _open(path: str, flags: int) -> int:
    """os.open with close-on-exec; the error names the path."""
    try:
        return os.open(path, flags | os.O_CLOEXEC)
    except OSError as exc:
        raise OSError(exc.errno, f"open {path}: {exc.strerror}") from exc


def _read(path: str) -> str:
    # os.open/os.read: a text file object costs more than the kernel's part
    # for these small files, read after every run.
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            # A short first read of these kernel files is all of them: no
            # second read for the end of file.
            chunks = [os.read(fd, 65536)]
            while len(chunks[-1]) == 65536:
                chunks.append(os.read(fd, 65536))
        finally:
            os.close(fd)
    except OSError as exc:
        raise OSError(exc.errno, f"read {path}: {exc.strerror}") from exc
    return b"".join(chunks).decode()


def _keyed(path: str) -> dict[str, int]:
    """Parse a ``key value`` per line file (``cpu.stat``, ``memory.events``, ...)."""
    result: dict[str, int] = {}
    for line in _read(path).splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].lstrip("-").isdigit():
            result[parts[0]] = int(parts[1])
    return result


def _subtree(path: str) -> Iterator[str]:
    """``path`` and its descendant cgroups, children before parents."""
    for dirpath, _dirnames, _files in os.walk(path, topdown=False):
        yield dirpath


def _procs(path: str) -> list[int]:
    """PIDs in the cgroup ``path`` and its descendants (missing cgroups count as empty)."""
    pids: list[int] = []
    for d in _subtree(path):
        try:
            with open(os.path.join(d, "cgroup.procs")) as f:
                pids.extend(int(x) for x in f.read().split())
        except FileNotFoundError:
            continue
    return pids


def _split(total: float, user_ticks: int, system_ticks: int) -> tuple[float, float]:
    """Split an exact CPU time in the ratio of sampled user and system ticks (the kernel's ``cputime_adjust``)."""
    if system_ticks <= 0:
        return total, 0.0
    if user_ticks <= 0:
        return 0.0, total
    system = total * system_ticks / (user_ticks + system_ticks)
    return total - system, system


def _host_has_swap() -> bool:
    try:
        with open("/proc/swaps") as f:
            return len(f.read().splitlines()) > 1
    except OSError:
        return False


async def _wait_until(check: Callable[[], bool], timeout: float) -> bool:
    """Poll ``check()`` with a backoff from 1 ms to 50 ms until it is true or ``timeout`` passes."""
    import anyio  # imported here: a run without an event loop never needs it

    deadline = time.monotonic() + timeout
    delay = 0.001
    while True:
        if check():
            return True
        if time.monotonic() >= deadline:
            return False
        await anyio.sleep(delay)
        delay = min(delay * 2, 0.05)


def _unavailable(host: CgroupHost, controller: str, what: str) -> OSError:
    where = []
    if host.unified is not None:
        where.append(
            f"not enabled in {os.path.join(host.unified.own_dir, 'cgroup.subtree_control')} (v2: the supervisor's "
            "cgroup must delegate it; this library never enables controllers in a cgroup it did not create)"
        )
    where.append("not mounted as a cgroup v1 hierarchy containing our own cgroup")
    return OSError(
        errno.EOPNOTSUPP, f"cgroup controller {controller!r} is needed for {what} but is " + "; and ".join(where)
    )


# -- the container's cgroup ------------------------------------------------------


class ContainerCgroup:
    """One container's cgroup, in every hierarchy it needs.

    Constructing it has no side effect (it only checks that the limits can be
    enforced on ``host``), so a caller can register its cleanup first;
    :meth:`setup` then creates the directories and writes the limits, and
    :meth:`remove` undoes whatever was created. :meth:`create` does both steps.
    Each directory is recorded before it is made, and a failure inside
    :meth:`setup` removes what it made (nothing is attached yet, so that
    ``rmdir`` cannot be busy).

    Args:
        host: the layout from :func:`detect`.
        name: the cgroup's directory name, one path component, unique per
            container (for example ``supervisor-<pid>-<id>``, so that
            :func:`find_leftovers` can find it after a crash). An existing
            directory of that name is never reused.
        limits: what to enforce.

    Raises:
        ValueError: ``name`` is not a plain directory name.
        OSError: a limit needs a controller this host does not give us
            (``EOPNOTSUPP``; the message names the controller and the file).
    """

    def __init__(self, host: CgroupHost, name: str, limits: Limits | None = None) -> None:
        if not isinstance(name, str) or not _NAME_RE.match(name) or name.startswith("cgroup."):
            raise ValueError(
                f"invalid cgroup name {name!r}: use 1-200 characters from [A-Za-z0-9_.@:+-], "
                "not starting with '.', '-' or 'cgroup.'"
            )
        self.host = host
        self.name = name
        self.limits = limits if limits is not None else Limits()
        self._plan = self._make_plan()
        self._dirs: dict[Hierarchy, str] = {}
        self._created: list[str] = []

    def __repr__(self) -> str:
        return f"<ContainerCgroup {self.name!r} {self.host.version} dirs={self.paths}>"

    def _make_plan(self) -> list[Hierarchy]:
        host, lim = self.host, self.limits
        plan: list[Hierarchy] = []
        if host.unified is not None:
            plan.append(host.unified)
        wanted = (
            ("memory", lim.memory_bytes is not None, f"memory_bytes={lim.memory_bytes}", True),
            ("pids", lim.pids is not None, f"pids={lim.pids}", False),
            (
                "cpu",
                lim.cpus is not None or lim.cpu_weight is not None,
                f"cpus={lim.cpus}/cpu_weight={lim.cpu_weight}",
                False,
            ),
        )
        for controller, limited, what, for_accounting in wanted:
            hierarchy = host.placement(controller)
            if hierarchy is None:
                if limited:
                    raise _unavailable(host, controller, what)
                continue
            if (limited or for_accounting) and hierarchy not in plan:
                plan.append(hierarchy)
        if host.unified is None:
            # No v2 directory to read cpu.stat from and to kill through.
            for controller in ("cpuacct", "freezer"):
                hierarchy = host.v1_hierarchy(controller)
                if hierarchy is not None and hierarchy not in plan:
                    plan.append(hierarchy)
        return plan

    # -- creation ------------------------------------------------------------
    @classmethod
    def create(cls, host: CgroupHost, name: str, limits: Limits | None = None) -> ContainerCgroup:
        """Create the container's cgroups and write its limits (constructor plus :meth:`setup`).

        Args:
            host: the layout from :func:`detect`.
            name: the directory name (see the class).
            limits: what to enforce.

        Returns:
            The cgroup, with no process attached yet.

        Raises:
            ValueError: ``name`` is not a plain directory name.
            OSError: a ``mkdir`` or a limit write failed, or a needed
                controller is missing; the message names the file and value.
                Nothing is left behind.
        """
        cgroup = cls(host, name, limits)
        cgroup.setup()
        return cgroup

    def setup(self) -> None:
        """Make one directory per planned hierarchy and write the limits.

        Raises:
            OSError: a ``mkdir`` (``EEXIST``: the name is taken) or a limit
                write failed; the message names the file and value. What this
                call created is removed again before raising.
            RuntimeError: called twice.
        """
        if self._dirs or self._created:
            raise RuntimeError(f"cgroup {self.name!r} is already set up")
        try:
            for hierarchy in self._plan:
                path = os.path.join(hierarchy.own_dir, self.name)
                self._created.append(path)
                try:
                    os.mkdir(path, 0o755)
                except OSError as exc:
                    self._created.pop()  # not ours: never remove what someone else made
                    hint = (
                        " (a cgroup of that name already exists; names are never reused)"
                        if exc.errno == errno.EEXIST
                        else ""
                    )
                    raise OSError(exc.errno, f"mkdir {path}: {exc.strerror}{hint}") from exc
                self._dirs[hierarchy] = path
            self._apply_limits()
        except BaseException:
            for path in reversed(list(self._created)):
                try:
                    os.rmdir(path)
                except FileNotFoundError:
                    pass
                except OSError:
                    continue  # kept in _created, so remove() retries it
                self._created.remove(path)
            self._dirs = {h: p for h, p in self._dirs.items() if p in self._created}
            raise

    @classmethod
    def adopt(cls, host: CgroupHost, name: str) -> ContainerCgroup:
        """Take ownership of existing cgroups named ``name`` below our own (crash recovery).

        The result only knows which directories exist; use it to :meth:`kill`
        and :meth:`remove` them.

        Args:
            host: the layout from :func:`detect`.
            name: a name from :func:`find_leftovers`.

        Returns:
            A cgroup whose existing directories count as created by it.

        Raises:
            ValueError: ``name`` is not a plain directory name.
        """
        cgroup = cls(host, name, None)
        for hierarchy in ([host.unified] if host.unified is not None else []) + list(host.v1):
            path = os.path.join(hierarchy.own_dir, name)
            if os.path.isdir(path):
                cgroup._created.append(path)
                cgroup._dirs[hierarchy] = path
        return cgroup

    def _apply_limits(self) -> None:
        lim = self.limits
        memory = self._dir_for("memory")
        if memory is not None:
            hierarchy, d = memory
            swap_total = lim.memory_swap_bytes
            if hierarchy.version == 2:
                if lim.memory_bytes is not None:
                    _write(os.path.join(d, "memory.max"), str(lim.memory_bytes))
                if swap_total is not None and lim.memory_bytes is not None:
                    swap = "max" if swap_total == -1 else str(swap_total - lim.memory_bytes)
                    self._write_swap(os.path.join(d, "memory.swap.max"), swap)
                _write(os.path.join(d, "memory.oom.group"), "1")
            else:
                if lim.memory_bytes is not None:
                    _write(os.path.join(d, "memory.limit_in_bytes"), str(lim.memory_bytes))
                if swap_total is not None:
                    self._write_swap(os.path.join(d, "memory.memsw.limit_in_bytes"), str(swap_total))
        if lim.pids is not None:
            pids = self._dir_for("pids")
            assert pids is not None  # guaranteed by the plan
            _write(os.path.join(pids[1], "pids.max"), str(lim.pids))
        if lim.cpus is not None or lim.cpu_weight is not None:
            cpu = self._dir_for("cpu")
            assert cpu is not None  # guaranteed by the plan
            hierarchy, d = cpu
            if hierarchy.version == 2:
                if lim.cfs_quota_us is not None:
                    _write(os.path.join(d, "cpu.max"), f"{lim.cfs_quota_us} {CFS_PERIOD_US}")
                if lim.cpu_weight is not None:
                    _write(os.path.join(d, "cpu.weight"), str(lim.cpu_weight))
            else:
                if lim.cfs_quota_us is not None:
                    _write(os.path.join(d, "cpu.cfs_period_us"), str(CFS_PERIOD_US))
                    _write(os.path.join(d, "cpu.cfs_quota_us"), str(lim.cfs_quota_us))
                if lim.cpu_shares is not None:
                    _write(os.path.join(d, "cpu.shares"), str(lim.cpu_shares))

    def _write_swap(self, path: str, value: str) -> None:
        if not os.path.exists(path):
            if not _host_has_swap():
                return  # no swap at all: memory plus swap is memory, already limited
            raise OSError(
                errno.EOPNOTSUPP,
                f"cannot write {path} {value!r} for memory_swap_bytes={self.limits.memory_swap_bytes}: the kernel "
                "does not account swap (boot with swapaccount=1 / CONFIG_MEMCG_SWAP)",
            )
        _write(path, value)

    # -- queries -------------------------------------------------------------
    @property
    def planned_paths(self) -> list[str]:
        """The directories :meth:`setup` will create, in order: record them in the crash ledger first.

        For example ``rundir.record(cid, "cgroup", paths=cg.planned_paths)``;
        the sweeper registered below for the ``"cgroup"`` kind removes them
        with :func:`sweep_paths` after a crash.
        """
        return [os.path.join(h.own_dir, self.name) for h in self._plan]

    @property
    def paths(self) -> list[str]:
        """The directories created and not yet removed, in creation order."""
        return list(self._created)

    def _v2_dir(self) -> str | None:
        return self._dirs.get(self.host.unified) if self.host.unified is not None else None

    def _dir_for(self, controller: str) -> tuple[Hierarchy, str] | None:
        """Where this container has ``controller``: v2 if delegated there, else its v1 hierarchy."""
        unified = self.host.unified
        if unified is not None and controller in unified.controllers and unified in self._dirs:
            return unified, self._dirs[unified]
        for hierarchy, d in self._dirs.items():
            if hierarchy.version == 1 and controller in hierarchy.controllers:
                return hierarchy, d
        return None

    def _procs_dir(self) -> str | None:
        """The directory whose subtree lists every process (v2 first, then v1 freezer, then any)."""
        v2 = self._v2_dir()
        if v2 is not None:
            return v2
        freezer = self._dir_for("freezer")
        if freezer is not None:
            return freezer[1]
        return next(iter(self._dirs.values()), None)

    def v2_dir_fd(self) -> int | None:
        """Open the v2 directory for clone3's ``CLONE_INTO_CGROUP`` (the caller closes the fd).

        ``CLONE_INTO_CGROUP`` only places the child in the v2 cgroup; on a
        hybrid host it must still be :meth:`attach`-ed to the v1 ones.

        Returns:
            An ``O_RDONLY | O_DIRECTORY | O_CLOEXEC`` fd, or ``None`` without a v2 directory.

        Raises:
            OSError: the directory cannot be opened (naming it).
        """
        d = self._v2_dir()
        return None if d is None else _open(d, os.O_RDONLY | os.O_DIRECTORY)

    def entry_fds(self) -> list[tuple[str, int, str]]:
        """Descriptors through which a new process enters the cgroup without a move by PID.

        A move by PID (:meth:`attach`) write-locks the kernel's global
        ``cgroup_threadgroup_rwsem``, which waits for an RCU grace period:
        5 to 15 ms on an otherwise idle host, the largest part of a lone
        container's start. Instead:

        - ``("clone", fd, dir)``: the v2 directory, for clone3's
          ``CLONE_INTO_CGROUP`` (the child starts inside, as in crun and
          isolate; see ``supervisor/_child/spawn.c``);
        - ``("procs", fd, path)``: its ``cgroup.procs``, to which the child
          writes ``0`` only where clone3 was refused (a move, with the lock);
        - ``("tasks", fd, path)``: each v1 directory's ``tasks``, to which the
          single-threaded child writes ``0``. A thread moving itself takes no
          global lock, and the kernel checks the opener's credentials (ours,
          root), so the child needs no right of its own on the host's files.

        The caller passes them to the new process, which closes them before
        running anything of the payload; they let it move only itself.

        Returns:
            ``(kind, fd, path)`` triples, fds close-on-exec; the caller closes them.

        Raises:
            OSError: a file cannot be opened (naming it); nothing stays open.
            RuntimeError: nothing is set up.
        """
        if not self._dirs:
            raise RuntimeError(f"cgroup {self.name!r} is not set up (or already removed)")
        wanted = [("tasks", d + "/tasks", os.O_WRONLY) for h, d in self._dirs.items() if h.version == 1]
        if (v2 := self._v2_dir()) is not None:
            wanted[:0] = [("clone", v2, os.O_RDONLY | os.O_DIRECTORY), ("procs", v2 + "/cgroup.procs", os.O_WRONLY)]
        out: list[tuple[str, int, str]] = []
        try:
            for kind, path, flags in wanted:
                out.append((kind, _open(path, flags), path))
        except BaseException:
            for _kind, fd, _path in out:
                os.close(fd)
            raise
        return out

    def pids(self) -> list[int]:
        """PIDs of every process in the container's cgroup and its descendants.

        Returns:
            The PIDs (thread-group ids), empty once removed.
        """
        d = self._procs_dir()
        return _procs(d) if d is not None else []

    def is_empty(self) -> bool:
        """Whether no process is left (v2 ``cgroup.events`` ``populated 0``, else an empty ``cgroup.procs``).

        Exited but unreaped processes (zombies) no longer count.

        Returns:
            True when empty, or when nothing was created.
        """
        v2 = self._v2_dir()
        if v2 is not None:
            try:
                return _keyed(os.path.join(v2, "cgroup.events")).get("populated", 0) == 0
            except FileNotFoundError:
                return True
        return not self.pids()

    def stats(self) -> CgroupStats:
        """Read CPU time, peak memory and OOM kills (call it before :meth:`remove`).

        Returns:
            The accounting, covering every process the cgroup ever held.

        Raises:
            OSError: an accounting file is unreadable (naming it), for example
                after :meth:`remove`.
        """
        user_s: float | None = None
        system_s: float | None = None
        v2 = self._v2_dir()
        cpuacct = self._dir_for("cpuacct")
        if v2 is not None:
            cpu_stat = _keyed(os.path.join(v2, "cpu.stat"))
            user_s, system_s = cpu_stat["user_usec"] / 1e6, cpu_stat["system_usec"] / 1e6
        elif cpuacct is not None:
            # cpuacct.usage is the exact scheduler runtime (ns); the user/system
            # split (cpuacct.stat in USER_HZ ticks, and usage_user/usage_sys,
            # which are the same tick samples in ns) is sampled at each tick
            # and was 30 % off the real total under load here. So, like
            # getrusage() and v2's cpu.stat (the kernel's cputime_adjust), the
            # exact total is split in the sampled ratio.
            d = cpuacct[1]
            total = int(_read(os.path.join(d, "cpuacct.usage"))) / 1e9
            ticks = _keyed(os.path.join(d, "cpuacct.stat"))
            user_s, system_s = _split(total, ticks.get("user", 0), ticks.get("system", 0))
        peak: int | None = None
        oom_kills = 0
        oom_killed = False
        memory = self._dir_for("memory")
        if memory is not None:
            hierarchy, d = memory
            if hierarchy.version == 2:
                if os.path.exists(os.path.join(d, "memory.peak")):
                    peak = int(_read(os.path.join(d, "memory.peak")))
                events = _keyed(os.path.join(d, "memory.events"))
                oom_kills = events.get("oom_kill", 0)
                oom_killed = oom_kills > 0 or events.get("oom_group_kill", 0) > 0
                oom_kills = max(oom_kills, 1) if oom_killed else 0
            else:
                peak = int(_read(os.path.join(d, "memory.max_usage_in_bytes")))
                oom_kills = self._oom_events(hierarchy, d)
                oom_killed = oom_kills > 0
        return CgroupStats(
            cpu_user_s=user_s,
            cpu_system_s=system_s,
            peak_memory_bytes=peak,
            oom_killed=oom_killed,
            oom_kills=oom_kills,
        )

    def _oom_events(self, hierarchy: Hierarchy, d: str) -> int:
        if hierarchy.version == 2:
            events = _keyed(os.path.join(d, "memory.events"))
            return events.get("oom_kill", 0) + events.get("oom_group_kill", 0)
        return _keyed(os.path.join(d, "memory.oom_control")).get("oom_kill", 0)

    async def wait_oom(self, poll_interval: float = 0.1) -> None:
        """Return once the OOM killer has killed a process of this container.

        On v2, ``memory.oom.group=1`` already makes the kernel kill the whole
        container; this only reports it (polling ``memory.events`` every
        ``poll_interval``). On v1 the kernel kills a single process, so a
        supervisor that wants whole-container OOM semantics runs this next to
        the container and calls :meth:`kill` when it returns. The v1 path does
        not poll: an eventfd is registered through ``cgroup.event_control`` on
        ``memory.oom_control`` (the kernel also signals it when the cgroup is
        removed, which ends the wait with an error).

        **Cancellation:** cancellable at any point; nothing is left registered
        (the eventfd is closed, which unregisters it).

        Args:
            poll_interval: seconds between reads of ``memory.events`` (v2).

        Raises:
            OSError: the container has no memory controller (``EOPNOTSUPP``),
                or its cgroup was removed while waiting (``ENOENT``), or a
                control file failed (naming it).
        """
        import anyio  # imported here: a run without an event loop never needs it

        memory = self._dir_for("memory")
        if memory is None:
            raise OSError(errno.EOPNOTSUPP, f"cgroup {self.name!r} has no memory controller to watch for OOM kills")
        hierarchy, d = memory
        if hierarchy.version == 2:
            while self._oom_events(hierarchy, d) == 0:
                await anyio.sleep(poll_interval)
            return
        efd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        try:
            control = os.path.join(d, "memory.oom_control")
            try:
                ofd = os.open(control, os.O_RDONLY | os.O_CLOEXEC)
            except OSError as exc:
                raise OSError(exc.errno, f"open {control}: {exc.strerror}") from exc
            try:
                _write(os.path.join(d, "cgroup.event_control"), f"{efd} {ofd}")
            finally:
                os.close(ofd)
            while True:
                # Checked after registering, so an OOM kill just before is not missed.
                if self._oom_events(hierarchy, d) > 0:
                    return
                await anyio.wait_readable(efd)
                try:
                    os.eventfd_read(efd)
                except BlockingIOError:
                    continue
                if not os.path.isdir(d):
                    raise OSError(errno.ENOENT, f"cgroup {d} was removed while waiting for an OOM kill")
                # The event fires when the OOM starts; the victim is counted a moment later.
                if await _wait_until(lambda: self._oom_events(hierarchy, d) > 0, 1.0):
                    return
        finally:
            os.close(efd)

    # -- processes -----------------------------------------------------------
    def attach(self, pid: int) -> None:
        """Move process ``pid`` into the container's cgroup in every hierarchy.

        Do it before the process runs payload code (its children inherit the
        membership); charges made earlier stay with its old cgroup.

        Args:
            pid: host PID.

        Raises:
            OSError: a ``cgroup.procs`` write failed (``ESRCH``: no such
                process); the message names the file and the PID.
            RuntimeError: nothing is set up.
        """
        if not self._dirs:
            raise RuntimeError(f"cgroup {self.name!r} is not set up (or already removed)")
        for d in self._dirs.values():
            _write(os.path.join(d, "cgroup.procs"), str(pid))

    async def kill(self, timeout: float = 5.0) -> bool:
        """SIGKILL every process of the container, then wait until the cgroup is empty.

        v2: ``cgroup.kill`` (or, before Linux 5.14, ``cgroup.freeze``, SIGKILL
        each PID, thaw). v1: ``freezer.state`` FROZEN and wait for it, SIGKILL
        each PID of the subtree's ``cgroup.procs`` (a frozen task can neither
        fork nor exit, so the list is complete and no PID is reused), THAWED
        so that the signals are delivered. Without a freezer, PIDs are killed
        in rounds until none is left (a PID could in theory be reused between
        the read and the kill). Killing an empty or removed cgroup is a no-op.

        **Cancellation:** shielded: a cancelled caller still gets a thawed
        cgroup whose processes were all signalled; the wait is bounded by
        ``timeout``.

        Args:
            timeout: the longest wait for the cgroup to empty, in seconds.

        Returns:
            True if the cgroup is empty (processes stuck in uninterruptible
            sleep can keep it populated past ``timeout``).

        Raises:
            OSError: a control file write failed (naming it).
        """
        import anyio  # imported here: a run without an event loop never needs it

        empty = True
        with anyio.CancelScope(shield=True):
            deadline = time.monotonic() + timeout
            while self._dirs and not self.is_empty():
                await self._signal_all(deadline)
                remaining = deadline - time.monotonic()
                if await _wait_until(self.is_empty, max(0.0, min(0.5, remaining))):
                    break
                if time.monotonic() >= deadline:
                    empty = False
                    break
        return empty

    async def _signal_all(self, deadline: float) -> None:
        v2 = self._v2_dir()
        try:
            if v2 is not None and os.path.exists(os.path.join(v2, "cgroup.kill")):
                _write(os.path.join(v2, "cgroup.kill"), "1")
            elif v2 is not None and os.path.exists(os.path.join(v2, "cgroup.freeze")):

                def frozen_v2() -> bool:
                    return _keyed(os.path.join(v2, "cgroup.events")).get("frozen", 0) == 1

                await _freeze_kill_thaw(v2, os.path.join(v2, "cgroup.freeze"), ("1", "0"), frozen_v2, deadline)
            elif (freezer := self._dir_for("freezer")) is not None:
                d = freezer[1]
                state = os.path.join(d, "freezer.state")

                def frozen_v1() -> bool:
                    return _read(state).strip() == "FROZEN"

                await _freeze_kill_thaw(d, state, ("FROZEN", "THAWED"), frozen_v1, deadline)
            else:
                _kill_pids(self.pids())
        except FileNotFoundError:
            pass  # removed meanwhile: nothing left to kill

    async def remove(self, timeout: float = 10.0) -> None:
        """Remove every cgroup this object created, children before parents; idempotent.

        Sub-cgroups the container made inside its own are removed first. On
        ``EBUSY`` (processes still exiting) it kills what is left and retries
        with a backoff from 1 ms to 100 ms until ``timeout``.

        **Cancellation:** shielded: it runs to completion (bounded by
        ``timeout``) even when the caller is cancelled.

        Args:
            timeout: the longest time to keep retrying, in seconds.

        Raises:
            OSError: some directory could not be removed in time; it stays
                recorded, so calling again retries it. The message names
                each such directory.
        """
        import anyio  # imported here: a run without an event loop never needs it

        with anyio.CancelScope(shield=True):
            deadline = time.monotonic() + timeout
            failures: list[tuple[str, OSError]] = []
            for path in reversed(list(self._created)):
                delay = 0.001
                while True:
                    try:
                        _rmdir_tree(path)
                    except OSError as exc:
                        if exc.errno != errno.EBUSY or time.monotonic() >= deadline:
                            failures.append((path, exc))
                            break
                        if not self.is_empty():
                            await self.kill(timeout=max(0.0, min(1.0, deadline - time.monotonic())))
                        await anyio.sleep(delay)
                        delay = min(delay * 2, 0.1)
                        continue
                    self._created.remove(path)
                    self._dirs = {h: p for h, p in self._dirs.items() if p != path}
                    break
            if failures:
                text = "; ".join(f"rmdir {p}: {e.strerror or e}" for p, e in failures)
                raise OSError(failures[0][1].errno, f"cannot remove cgroup {self.name!r}: {text}")

    def remove_blocking(self, timeout: float = 10.0) -> None:
        """:meth:`remove` for a run without an event loop: kill what is left,
        remove the directories, retry ``EBUSY`` until ``timeout``; idempotent.

        Raises:
            OSError: some directory could not be removed in time (naming it);
                it stays recorded, so calling again retries it.
        """
        created = list(self._created)
        try:
            sweep_paths(created, timeout)
        except (OSError, ValueError) as exc:
            code = getattr(exc, "errno", None) or errno.EBUSY
            raise OSError(code, f"cannot remove cgroup {self.name!r}: {exc}") from exc
        self._created.clear()
        self._dirs.clear()


def _rmdir_tree(path: str) -> None:
    # Fast path: a container rarely makes sub-cgroups, and one rmdir is much
    # cheaper than walking the folder; walk (children first) only if needed.
    try:
        os.rmdir(path)
        return
    except FileNotFoundError:
        return
    except OSError as exc:
        if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.EBUSY):  # cgroupfs: EBUSY with children
            raise
    for d in _subtree(path):
        try:
            os.rmdir(d)
        except FileNotFoundError:
            pass


def _kill_pids(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


async def _freeze_kill_thaw(
    d: str, control: str, values: tuple[str, str], frozen: Callable[[], bool], deadline: float
) -> None:
    """Freeze the cgroup ``d`` through ``control``, SIGKILL its subtree's PIDs, thaw it (always)."""
    freeze, thaw = values
    _write(control, freeze)
    try:
        # At most 1 s: a task in uninterruptible sleep may delay the freeze;
        # then kill what is listed anyway, and the caller loops.
        await _wait_until(frozen, max(0.0, min(1.0, deadline - time.monotonic())))
        _kill_pids(_procs(d))
    finally:
        _write(control, thaw)


def find_leftovers(host: CgroupHost, prefix: str) -> list[str]:
    """Names of cgroups below our own, in any hierarchy, that start with ``prefix`` (crash recovery).

    Pair it with :meth:`ContainerCgroup.adopt` and :meth:`ContainerCgroup.remove`
    after checking that the owner recorded in the name is gone.

    Args:
        host: the layout from :func:`detect`.
        prefix: a non-empty name prefix, such as ``"supervisor-"``.

    Returns:
        Sorted, de-duplicated directory names.

    Raises:
        ValueError: ``prefix`` is empty or contains ``/``.
    """
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


# -- crash recovery (synchronous) ---------------------------------------------------


def _cgroup_mounts() -> list[str]:
    mounts = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            try:
                sep = fields.index("-", 6)
            except ValueError:
                continue
            if fields[sep + 1] in ("cgroup", "cgroup2"):
                mounts.append(_unescape(fields[4]))
    return mounts


def _kill_pass_sync(path: str, freeze_timeout: float = 1.0) -> None:
    """One synchronous kill pass over the cgroup ``path`` (cgroup.kill, else freeze-kill-thaw, else kill)."""
    if os.path.exists(os.path.join(path, "cgroup.kill")):
        _write(os.path.join(path, "cgroup.kill"), "1")
        return
    for control, freeze, thaw in (("freezer.state", "FROZEN", "THAWED"), ("cgroup.freeze", "1", "0")):
        control_path = os.path.join(path, control)
        if os.path.exists(control_path):
            _write(control_path, freeze)
            try:
                deadline = time.monotonic() + freeze_timeout
                while time.monotonic() < deadline:
                    if control == "freezer.state":
                        if _read(control_path).strip() == "FROZEN":
                            break
                    elif _keyed(os.path.join(path, "cgroup.events")).get("frozen", 0) == 1:
                        break
                    time.sleep(0.002)
                _kill_pids(_procs(path))
            finally:
                _write(control_path, thaw)
            return
    _kill_pids(_procs(path))


def sweep_paths(paths: Iterable[str], timeout: float = 5.0) -> None:
    """Kill the processes in leftover cgroups and remove them, synchronously (crash recovery).

    For the crash ledger's sweeper, which runs before any event loop work
    (supervisor start, ``supervisor gc``). Paths that no longer exist are
    skipped; sub-cgroups are removed first; ``EBUSY`` is retried with a
    backoff until ``timeout``.

    Args:
        paths: cgroup directories, as recorded from :attr:`ContainerCgroup.planned_paths`.
        timeout: the longest time to keep retrying, in seconds.

    Raises:
        ValueError: a path is not normalised, not strictly below a mounted
            cgroup hierarchy, or holds this process (nothing is touched then).
        OSError: some cgroup could not be removed in time (naming them).
    """
    paths = list(paths)
    mounts = _cgroup_mounts()
    for path in paths:
        if (
            not isinstance(path, str)
            or os.path.normpath(path) != path
            or not any(path.startswith(m.rstrip("/") + "/") for m in mounts)
        ):
            raise ValueError(f"refusing to sweep {path!r}: not a normalised path below a mounted cgroup hierarchy")
    existing = [p for p in paths if os.path.isdir(p)]
    for path in existing:
        if os.getpid() in _procs(path):
            raise ValueError(f"refusing to sweep {path!r}: it holds this process")
    for path in existing:
        try:
            _kill_pass_sync(path)
        except FileNotFoundError:
            pass
    deadline = time.monotonic() + timeout
    delay = 0.001
    remaining = list(reversed(existing))
    while remaining:
        busy: list[str] = []
        for path in remaining:
            try:
                _rmdir_tree(path)
            except OSError as exc:
                if exc.errno != errno.EBUSY:
                    raise OSError(exc.errno, f"rmdir {exc.filename or path}: {exc.strerror}") from exc
                busy.append(path)
        if not busy:
            return
        if time.monotonic() >= deadline:
            raise OSError(errno.EBUSY, f"cgroups still busy after {timeout} s: {', '.join(busy)}")
        for path in busy:
            try:
                _kill_pass_sync(path)
            except FileNotFoundError:
                pass
        time.sleep(delay)
        delay = min(delay * 2, 0.1)
        remaining = busy


def _sweep_record(record: dict[str, Any]) -> None:
    sweep_paths(record.get("paths") or [])


register_sweeper("cgroup", _sweep_record)
