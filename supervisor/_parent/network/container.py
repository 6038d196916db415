"""One container's network on its bridge: its address lease, its records in
the crash ledger, its /etc files, its published ports; set up when PID 1
asks (its ``NETWORK`` phase), released with the container's other host
resources (:class:`~supervisor._parent.resources.HostResources`).
"""

from __future__ import annotations

import errno
import os
import secrets

import anyio
import anyio.abc

from ..._errors import SetupError
from ..._protocol import Phase
from ..rundir import run_root
from . import bridge
from .etc import write_host_files
from .pool import BRIDGE_RECORD_PREFIX, Attachment, bridge_name

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (3 ms for a command line)
if TYPE_CHECKING:
    from collections.abc import Callable

    from ..._spec import Publish, Spec
    from ..container import ContainerProcess
    from ..rundir import RunDir
    from .janitor import Janitor


class ContainerNetwork:
    """The bridge pieces of one container (``Spec(network="bridge")``).

    Made by :class:`~supervisor._parent.resources.HostResources`, with its
    own arguments (``hostname`` already resolved).
    """

    def __init__(
        self,
        spec: Spec,
        cid: str,
        rundir: RunDir,
        hostname: str,
        task_group: anyio.abc.TaskGroup | None,
        janitor: Callable[[], Janitor] | None,
    ) -> None:
        self.spec = spec
        self.cid = cid
        self.rundir = rundir
        self.hostname = hostname
        self._task_group = task_group
        self._janitor_of_supervisor = janitor
        self._own_janitor: Janitor | None = None
        self.etc_dir = os.path.join(run_root(), "etc", f"{cid}-{secrets.token_hex(4)}")
        """Where ``hosts`` and ``resolv.conf`` are written."""
        self.attachment: Attachment | None = None
        """The container's place on the bridge, once reserved."""
        self._allocated: anyio.Event | None = None  # set when the early allocation is over
        self._allocation_error: Exception | None = None
        self._ports: list[tuple[anyio.CancelScope, anyio.Event]] = []

    def start_allocation(self) -> None:
        """Start reserving the address in the background, before the clone.

        Without a task group (no supervisor), :meth:`setup` reserves
        it itself.

        Raises:
            SetupError: phase ``NETWORK``: the crash ledger cannot be written.

        **Cancellation:** synchronous; :meth:`release` waits for the
        background allocation and frees what it reserved.
        """
        if self._task_group is None:
            return
        try:
            self._record()
        except OSError as exc:
            raise SetupError.caused_by(Phase.NETWORK, exc) from exc
        self._allocated = anyio.Event()
        self._task_group.start_soon(self._allocate, self._allocated)

    async def _allocate(self, done: anyio.Event) -> None:
        """The background allocation; its error is raised by :meth:`setup`.

        **Cancellation:** the worker thread completes and its address is kept
        for :meth:`release` to free.
        """
        try:
            self.attachment = await bridge.allocate(self.spec.subnet, self.spec.ip, self.cid, self._janitor())
        except Exception as exc:  # noqa: BLE001 - reported by setup_network, in the container's run
            self._allocation_error = exc
        finally:
            done.set()

    async def setup(self, proc: ContainerProcess) -> None:
        """Put the container on its bridge, write its /etc files, publish its ports.

        Runs while PID 1 waits in its ``NETWORK`` request: the veth, address
        and default route exist before the payload can run.

        Args:
            proc: the container (``proc.slot`` identifies PID 1 race-free).

        Raises:
            OSError: netlink refused, a published port cannot be bound, or
                PID 1 died.
            ValueError: the fixed address is taken, or the subnet is full.

        **Cancellation:** whatever was set up so far is recorded here and
        undone by :meth:`release`.
        """
        slot = proc.slot
        assert slot is not None
        if self.spec.publish and self._task_group is None:
            raise ValueError("Spec.publish: published ports need a Supervisor")
        if self._allocated is None:  # no early start (no task group)
            self._record()
            self.attachment = await bridge.allocate(self.spec.subnet, self.spec.ip, self.cid, self._janitor())
        else:
            await self._allocated.wait()
            if self._allocation_error is not None:
                raise self._allocation_error
        if self.attachment is None:
            raise OSError(errno.ECANCELED, "the network allocation was cancelled (the supervisor is closing)")
        self.attachment = await bridge.connect(self.attachment, slot.pid, slot.pidfd)
        write_host_files(self.etc_dir, self.hostname, self.attachment.address)
        for publish in self.spec.publish:
            await self._publish(publish, self.attachment.address)

    async def _publish(self, publish: Publish, target: str) -> None:
        """Serve one published port in the supervisor's task group until :meth:`release`.

        Raises:
            OSError: the host address/port cannot be bound.

        **Cancellation:** if cancelled before the listener is bound, nothing
        is left running.
        """
        from . import ports

        assert self._task_group is not None
        scope = anyio.CancelScope()
        ended = anyio.Event()

        async def serve(*, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
            try:
                with scope:
                    await ports.serve_port(publish, target, task_status=task_status)
            finally:
                ended.set()

        self._ports.append((scope, ended))
        await self._task_group.start(serve)

    def _record(self) -> None:
        """Note the /etc folder and the address lease in the crash ledger."""
        name = bridge_name(self.spec.subnet)
        self.rundir.record(self.cid, "dir", path=self.etc_dir)
        self.rundir.record(self.cid, "net-lease", subnet=self.spec.subnet, bridge=name)
        # The bridge outlives its containers (it lingers, then goes in the
        # background): it has a record of its own, kept until the supervisor
        # has finished that deletion, so a crash in between leaves it to gc.
        own = BRIDGE_RECORD_PREFIX + name
        self.rundir.record_once(own, "net-lease", subnet=self.spec.subnet, bridge=name)

    def _janitor(self) -> Janitor:
        """The janitor that deletes what the container's network leaves behind."""
        if self._janitor_of_supervisor is not None:
            return self._janitor_of_supervisor()
        if self._own_janitor is None:
            from .janitor import Janitor

            self._own_janitor = Janitor()
        return self._own_janitor

    async def release(self) -> None:
        """Stop the published ports, free the address, remove the /etc files.

        Each step is tried whatever the one before did.

        Raises:
            OSError: freeing the address failed.

        **Cancellation:** the caller shields it.
        """
        # Published ports first: no new connection may reach a dead container.
        for scope, _ended in self._ports:
            scope.cancel()
        for _scope, ended in self._ports:
            await ended.wait()
        if self._allocated is not None:
            await self._allocated.wait()  # a few ms at most: a worker thread
        try:
            if self.attachment is not None:
                # Frees the address; the veth dies with the netns, the bridge
                # (if this was its last user) in the background.
                await bridge.detach(self.attachment, self._janitor())
        finally:
            import shutil

            shutil.rmtree(self.etc_dir, ignore_errors=True)
