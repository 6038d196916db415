"""Host-side resources of one container, owned by its run: the id range and
the cgroup made before the clone, the network when PID 1 asks for it
(:mod:`.network.container`); released by one
idempotent, shielded function on every path (success, setup failure,
cancellation, supervisor shutdown).

Each resource is recorded here *before* it is created, so a failure half-way
through creating it is still cleaned up.
"""

from __future__ import annotations

import functools
import os

from .._errors import SetupError
from .._privileges import is_rootless
from .._protocol import CgroupEntry, Phase
from . import idmap
from .config import with_map_base
from .faults import check_parent_fault

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (3 ms for a command line)

if TYPE_CHECKING:
    from collections.abc import Callable

    import anyio
    import anyio.abc

    from .._protocol import SpawnConfig
    from .._spec import Spec
    from .cgroups import CgroupStats, ContainerCgroup
    from .container import ParentStep
    from .network import Attachment, Janitor
    from .rundir import RunDir


class HostResources:
    """The cgroup and network pieces of one container.

    Args:
        spec: the container's spec.
        cid: the supervisor's id for the container (used in resource names).
        rundir: the supervisor's ledger; every resource is recorded there
            before it is created, so ``supervisor gc`` can remove it after a
            crash.
        hostname: the container's hostname (for its ``/etc/hosts``).
        task_group: a task group that outlives the container (the
            supervisor's), where published ports are served.
        janitor: gives the supervisor's network janitor (made on first use);
            without one, the container has a janitor of its own.
    """

    def __init__(
        self,
        spec: Spec,
        cid: str,
        rundir: RunDir,
        *,
        hostname: str | None = None,
        task_group: anyio.abc.TaskGroup | None = None,
        janitor: Callable[[], Janitor] | None = None,
    ) -> None:
        self.spec = spec
        self.cid = cid
        self.rundir = rundir
        self.hostname = hostname or spec.hostname or "localhost"
        self._released = False
        self.network: ContainerNetwork | None = None
        """The container's bridge pieces (``network="bridge"`` only)."""
        if self.wants_network:
            from .network.container import ContainerNetwork

            self.network = ContainerNetwork(spec, cid, rundir, self.hostname, task_group, janitor)
        self._cgroup: ContainerCgroup | None = None
        # -- ids (map_base="auto") --
        self.id_base: int | None = None
        """The first host id of the range leased for the container, if any."""

    @property
    def wants_cgroup(self) -> bool:
        """Whether the container gets a cgroup: as root always, one of its
        own, for limits, accounting and kill-everything; rootless only in a
        cgroup v2 subtree delegated to the caller, ``Spec.cgroup_parent`` or
        the one found above our own cgroup (without one, its PID namespace
        still ends every process with PID 1)."""
        return not is_rootless() or self.cgroup_parent is not None

    @functools.cached_property
    def cgroup_parent(self) -> str | None:
        """The cgroup the container's is made below: ``Spec.cgroup_parent``;
        rootless without one, the delegated subtree found (see
        :func:`~supervisor._parent.cgroups.delegated_parent`); else None (our own)."""
        if self.spec.cgroup_parent is not None or not is_rootless():
            return self.spec.cgroup_parent
        from . import cgroups

        return cgroups.delegated_parent(cgroups.detect())

    @property
    def watches_oom(self) -> bool:
        """Whether a memory limit makes an OOM kill end the whole container."""
        return self.spec.limits is not None and self.spec.limits.memory_bytes is not None

    async def wait_oom(self) -> None:
        """Return once the OOM killer struck in the container's cgroup.

        **Cancellation:** cancellable; nothing stays registered.
        """
        assert self._cgroup is not None
        await self._cgroup.wait_oom()

    def stats(self) -> CgroupStats | None:
        """What the container used, from its cgroup (None without one)."""
        if self._cgroup is None:
            return None
        try:
            return self._cgroup.stats()
        except OSError:
            return None

    async def kill_all(self) -> None:
        """Kill every process of the container's cgroup (idempotent).

        **Cancellation:** shielded.
        """
        import anyio  # imported here: a run without an event loop never needs it

        with anyio.CancelScope(shield=True):
            if self._cgroup is not None:
                await self._cgroup.kill()

    @property
    def wants_network(self) -> bool:
        """Whether PID 1 must request the NETWORK step (``network="bridge"``)."""
        return self.spec.network == "bridge"

    @property
    def etc_dir(self) -> str | None:
        """Where the bridge's ``hosts`` and ``resolv.conf`` are written."""
        return self.network.etc_dir if self.network is not None else None

    @property
    def addresses(self) -> tuple[str, ...]:
        """The container's IP addresses on the bridge (empty in other modes)."""
        att = self.attachment
        return (att.address,) if att is not None else ()

    @property
    def attachment(self) -> Attachment | None:
        """The container's place on the bridge, once set up."""
        return self.network.attachment if self.network is not None else None

    def parent_steps(self) -> dict[Phase, ParentStep]:
        """The coroutines answering PID 1's requests."""
        steps: dict[Phase, ParentStep] = {}
        if self.network is not None:
            steps[Phase.NETWORK] = self.network.setup
        return steps

    def start_allocation(self) -> None:
        """Start reserving the bridge address in the background, before the clone.

        Raises:
            SetupError: phase ``NETWORK``: the crash ledger cannot be written.
        """
        if self.network is not None:
            self.network.start_allocation()

    def prepare_cgroup(self) -> list[tuple[str, int, str]]:
        """Create the container's cgroup and write its limits, before the clone.

        PID 1 starts in it: the clone puts it into the v2 directory
        (``CLONE_INTO_CGROUP``), and PID 1 enters the v1 ones itself at its
        ``CGROUP`` phase, through descriptors we opened (see
        :meth:`~supervisor._parent.cgroups.ContainerCgroup.entry_fds`), before
        any payload code. So no process of the container is ever outside it,
        and no move by PID waits for the kernel's RCU grace period.

        Returns:
            The ``(kind, fd, path)`` entry descriptors, to pass to the spawn
            after the other descriptors; the caller closes its copies.

        Raises:
            SetupError: phase ``CGROUP``: a cgroup file could not be written
                (naming it), or a limit needs a controller this host does not
                delegate (EOPNOTSUPP).

        **Cancellation:** synchronous. The cgroup is recorded before it is
        created, and removed by :meth:`release`.
        """
        from . import cgroups

        try:
            check_parent_fault(Phase.CGROUP, after=False)
            host = cgroups.detect()
            parent = self.cgroup_parent
            if parent is not None:
                host = cgroups.with_parent(host, parent)
            cgroup = cgroups.ContainerCgroup(host, f"sv-{self.cid}", self.spec.limits)
            self.rundir.record(self.cid, "cgroup", paths=cgroup.planned_paths)
            self._cgroup = cgroup
            cgroup.setup()
            check_parent_fault(Phase.CGROUP, after=True)
            entry = cgroup.entry_fds()
        except (OSError, ValueError) as exc:
            raise SetupError.caused_by(Phase.CGROUP, exc) from exc
        return entry

    async def release(self) -> None:
        """Release everything, in reverse order of creation; idempotent.

        Raises:
            OSError: a step failed (the first such error; every step was
                tried); the container's records stay in the crash ledger.

        **Cancellation:** shielded: always runs to the end.
        """
        if self._released:
            return
        self._released = True
        if self.network is None:
            # Nothing below can wait (a busy cgroup's retries shield
            # themselves): no cancel scope needed.
            await self._release_all()
            return
        import anyio  # imported here: a run without an event loop never needs it

        with anyio.CancelScope(shield=True):
            await self._release_all()

    async def _release_all(self) -> None:
        """:meth:`release`'s steps (see there)."""
        # Each step is tried whatever the one before did; a failure keeps
        # the records in the crash ledger (for gc) and is raised at the end.
        failed: OSError | None = None
        if self.network is not None:  # first: no new connection may reach a dead container
            try:
                await self.network.release()
            except OSError as exc:
                failed = exc
        if self._cgroup is not None:
            # Kills any straggler (the PID namespace is normally gone
            # already), then removes the directories, retrying on EBUSY.
            try:
                await self._cgroup.remove()
            except OSError as exc:
                failed = failed or exc
        try:
            self._release_ids()  # last: no process of the container is left
        except OSError as exc:
            failed = failed or exc
        if failed is not None:
            raise failed
        # Everything is gone: the crash ledger has nothing left to sweep.
        self.rundir.forget(self.cid)

    def before_clone(self, config: SpawnConfig) -> tuple[SpawnConfig, list[int]]:
        """Make what the host gives PID 1 before the clone, in this order:
        the container's own id range (``Spec(map_base="auto")``: the clone
        thread writes the maps), its cgroup (PID 1 starts in it), and the
        id-mapped binds' mounts (PID 1 may not make them).

        Args:
            config: the spawn's configuration.

        Returns:
            the configuration (with the leased id range and the cgroup
            entries), and the descriptors to pass after the others, in order:
            the cgroup's entries, then the id-mapped mounts. The caller closes
            its copies; on a failure here none is left open.

        Raises:
            SetupError: in the phase of the step that failed (``USERNS``,
                ``CGROUP``, ``MOUNTS``).

        **Cancellation:** synchronous. What was made is recorded first and
        given back by :meth:`release`.
        """
        if self.spec.map_base == "auto":
            config = with_map_base(config, self.lease_ids())
        fds: list[int] = []
        try:
            if self.wants_cgroup:
                entry = self.prepare_cgroup()
                config.cgroup.extend(CgroupEntry(kind, path) for kind, _fd, path in entry)
                fds += [fd for _kind, fd, _path in entry]
            fds += idmap.open_trees(self.spec, config)
        except BaseException:
            for fd in fds:
                os.close(fd)
            raise
        return config, fds

    def lease_ids(self) -> int:
        """Lease the container's own host id range (``Spec(map_base="auto")``).

        Returns:
            its first host id.

        Raises:
            SetupError: phase ``USERNS``: the pool is full, or its files or
                the crash ledger cannot be written.
        """
        from . import idranges
        from .rundir import owner_token

        try:
            base = idranges.allocate(self.cid, self.spec.map_size)
            try:
                self.rundir.record(self.cid, "id-range", base=base, container=self.cid, owner=owner_token())
            except OSError:
                idranges.release(base, self.cid)
                raise
        except OSError as exc:
            raise SetupError.caused_by(Phase.USERNS, exc, "lease a host id range") from exc
        self.id_base = base
        return base

    def _release_ids(self) -> None:
        if self.id_base is not None:
            from . import idranges

            idranges.release(self.id_base, self.cid)
            self.id_base = None

    def release_blocking(self) -> None:
        """:meth:`release` for a run without an event loop (no network: it
        has none); idempotent.

        Raises:
            OSError: the cgroup could not be removed in time (naming it); it
                stays in the crash ledger for the next sweep.
        """
        if self._released:
            return
        assert self.network is None, "a run without an event loop has no network"
        self._released = True
        if self._cgroup is not None:
            self._cgroup.remove_blocking()
        self._release_ids()
        self.rundir.forget(self.cid)
