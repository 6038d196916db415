"""One container's cgroup, in every hierarchy it needs: its plan, creation
with the limits written, the entry descriptors for the clone, the kill and
the removal (see the package's docstring for the files and the rules)."""

from __future__ import annotations

import errno
import os
import time

from ..._limits import Limits, is_cgroup_name
from ..._privileges import is_rootless
from .accounting import CgroupStats, read_stats, wait_oom
from .files import keyed, kill_pass, open_fd, procs, rmdir_tree, wait_until
from .host import CgroupHost, Hierarchy, unavailable
from .limits import write_limits
from .sweep import sweep_paths


def entry_fds_of(v2: str | None, v1: list[str]) -> list[tuple[str, int, str]]:
    """:meth:`ContainerCgroup.entry_fds` of a cgroup given by its directories
    (the v2 one, or ``None``, and the v1 ones): also for entering a running
    container's cgroup (``supervisor-oci exec``).

    Raises:
        OSError: a file cannot be opened (naming it); nothing stays open.
    """
    wanted = [("tasks", d + "/tasks", os.O_WRONLY) for d in v1]
    if v2 is not None:
        wanted[:0] = [("clone", v2, os.O_RDONLY | os.O_DIRECTORY), ("procs", v2 + "/cgroup.procs", os.O_WRONLY)]
    out: list[tuple[str, int, str]] = []
    try:
        for kind, path, flags in wanted:
            out.append((kind, open_fd(path, flags), path))
    except BaseException:
        for _kind, fd, _path in out:
            os.close(fd)
        raise
    return out


class ContainerCgroup:
    """One container's cgroup, in every hierarchy it needs.

    Constructing it has no side effect (it only checks that the limits can be
    enforced on ``host``), so a caller can register its cleanup first;
    :meth:`setup` then creates the directories and writes the limits, and
    :meth:`remove` undoes whatever was created.
    Each directory is recorded before it is made, and a failure inside
    :meth:`setup` removes what it made (nothing is attached yet, so that
    ``rmdir`` cannot be busy).

    Args:
        host: the layout from :func:`detect`.
        name: the cgroup's directory name, one path component, unique per
            container (``sv-<id>``). An existing directory of that name is
            never reused.
        limits: what to enforce.

    Raises:
        ValueError: ``name`` is not a plain directory name.
        OSError: a limit needs a controller this host does not give us
            (``EOPNOTSUPP``; the message names the controller and the file).
    """

    def __init__(self, host: CgroupHost, name: str, limits: Limits | None = None) -> None:
        if not is_cgroup_name(name):
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
        # Rootless: the v2 directory only (a delegated subtree is v2's; the v1
        # hierarchies are root's).
        rootless = is_rootless()
        plan: list[Hierarchy] = []
        if host.unified is not None:
            plan.append(host.unified)
        wanted = (
            (
                "memory",
                lim.memory_bytes is not None
                or lim.memory_reservation_bytes is not None
                or lim.memory_swappiness is not None
                or lim.memory_kernel_tcp_bytes is not None
                or lim.oom_kill_disable,
                f"memory_bytes={lim.memory_bytes} (or another memory limit)",
                True,
            ),
            ("devices", lim.device_rules is not None, "device_rules", False),
            (
                "cpuset",
                lim.cpuset_cpus is not None or lim.cpuset_mems is not None,
                f"cpuset_cpus={lim.cpuset_cpus}/cpuset_mems={lim.cpuset_mems}",
                False,
            ),
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
            if hierarchy is None or (rootless and hierarchy is not host.unified):
                if limited:
                    raise unavailable(host, controller, what)
                continue
            if (limited or for_accounting) and hierarchy not in plan:
                plan.append(hierarchy)
        if host.unified is None and not rootless:
            # No v2 directory to read cpu.stat from and to kill through.
            for controller in ("cpuacct", "freezer"):
                hierarchy = host.v1_hierarchy(controller)
                if hierarchy is not None and hierarchy not in plan:
                    plan.append(hierarchy)
        return plan

    # -- creation ------------------------------------------------------------
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
            write_limits(self.limits, self._dir_for)
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
        return entry_fds_of(self._v2_dir(), [d for h, d in self._dirs.items() if h.version == 1])

    def pids(self) -> list[int]:
        """PIDs of every process in the container's cgroup and its descendants.

        Returns:
            The PIDs (thread-group ids), empty once removed.
        """
        d = self._procs_dir()
        return procs(d) if d is not None else []

    def is_empty(self) -> bool:
        """Whether no process is left (v2 ``cgroup.events`` ``populated 0``, else an empty ``cgroup.procs``).

        Exited but unreaped processes (zombies) no longer count.

        Returns:
            True when empty, or when nothing was created.
        """
        v2 = self._v2_dir()
        if v2 is not None:
            try:
                return keyed(os.path.join(v2, "cgroup.events")).get("populated", 0) == 0
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
        cpuacct = self._dir_for("cpuacct")
        return read_stats(self._v2_dir(), cpuacct[1] if cpuacct else None, self._dir_for("memory"))

    async def wait_oom(self, poll_interval: float = 0.1) -> None:
        """Return once the OOM killer has killed a process of this container.

        On v2, ``memory.oom.group=1`` already makes the kernel kill the whole
        container; this only reports it (polling ``memory.events`` every
        ``poll_interval``). On v1 the kernel kills a single process, so a
        supervisor that wants whole-container OOM semantics runs this next to
        the container and calls :meth:`kill` when it returns (an eventfd on
        ``memory.oom_control``, no polling).

        **Cancellation:** cancellable at any point; nothing is left registered.

        Args:
            poll_interval: seconds between reads of ``memory.events`` (v2).

        Raises:
            OSError: the container has no memory controller (``EOPNOTSUPP``),
                or its cgroup was removed while waiting (``ENOENT``), or a
                control file failed (naming it).
        """
        await wait_oom(self.name, self._dir_for("memory"), poll_interval)

    # -- processes -----------------------------------------------------------
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
                await self._signal_all()
                remaining = deadline - time.monotonic()
                if await wait_until(self.is_empty, max(0.0, min(0.5, remaining))):
                    break
                if time.monotonic() >= deadline:
                    empty = False
                    break
        return empty

    async def _signal_all(self) -> None:
        """One :func:`~.files.kill_pass` over the container's cgroup (its v2
        directory, else its v1 freezer one, else any); in a worker thread
        where it has to wait for a freeze."""
        import anyio  # imported here: a run without an event loop never needs it

        target = self._procs_dir()
        if target is None:
            return
        try:
            if os.path.exists(os.path.join(target, "cgroup.kill")):
                kill_pass(target)
            else:
                await anyio.to_thread.run_sync(kill_pass, target)
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
        if self._remove_now():
            return  # the usual case: no process left, nothing to wait for
        import anyio  # imported here: a run without an event loop never needs it

        with anyio.CancelScope(shield=True):
            deadline = time.monotonic() + timeout
            failures: list[tuple[str, OSError]] = []
            for path in reversed(list(self._created)):
                delay = 0.001
                while True:
                    try:
                        rmdir_tree(path)
                    except OSError as exc:
                        if exc.errno != errno.EBUSY or time.monotonic() >= deadline:
                            failures.append((path, exc))
                            break
                        if not self.is_empty():
                            await self.kill(timeout=max(0.0, min(1.0, deadline - time.monotonic())))
                        await anyio.sleep(delay)
                        delay = min(delay * 2, 0.1)
                        continue
                    self._removed(path)
                    break
            if failures:
                text = "; ".join(f"rmdir {p}: {e.strerror or e}" for p, e in failures)
                raise OSError(failures[0][1].errno, f"cannot remove cgroup {self.name!r}: {text}")

    def _remove_now(self) -> bool:
        """Remove the directories, children first, while none is busy; True if all went."""
        for path in reversed(list(self._created)):
            try:
                rmdir_tree(path)
            except OSError:
                return False  # left to remove()'s retries, which report it
            self._removed(path)
        return True

    def _removed(self, path: str) -> None:
        """Forget the directory ``path``, now removed."""
        self._created.remove(path)
        self._dirs = {h: p for h, p in self._dirs.items() if p != path}

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
