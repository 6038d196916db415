"""Host-side resources of one container, owned by its run: created when PID 1
asks for them, and released by one idempotent, shielded function on every path
(success, setup failure, cancellation, supervisor shutdown).

Each resource is recorded here *before* it is created, so a failure half-way
through creating it is still cleaned up.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import anyio

from .._protocol import Phase

if TYPE_CHECKING:
    from .._spec import Spec
    from .container import ContainerProcess, ParentStep
    from .rundir import RunDir


class HostResources:
    """The cgroup and network pieces of one container (when the spec asks).

    Args:
        spec: the container's spec.
        cid: the supervisor's id for the container (used in resource names).
        rundir: the supervisor's ledger; every resource is recorded there
            before it is created, so ``supervisor gc`` can remove it after a
            crash.
    """

    def __init__(self, spec: Spec, cid: str, rundir: RunDir) -> None:
        self.spec = spec
        self.cid = cid
        self.rundir = rundir
        self._released = False

    @property
    def wants_cgroup(self) -> bool:
        """Whether PID 1 must request the CGROUP step."""
        return False

    @property
    def wants_network(self) -> bool:
        """Whether PID 1 must request the NETWORK step."""
        return False

    def parent_steps(self) -> dict[Phase, ParentStep]:
        """The coroutines answering PID 1's requests."""
        steps: dict[Phase, ParentStep] = {}
        if self.wants_cgroup:
            steps[Phase.CGROUP] = self.setup_cgroup
        if self.wants_network:
            steps[Phase.NETWORK] = self.setup_network
        return steps

    async def setup_cgroup(self, proc: ContainerProcess) -> None:
        """Create the container's cgroup and move PID 1 into it."""

    async def setup_network(self, proc: ContainerProcess) -> None:
        """Configure the container's network from the host side."""

    async def release(self) -> None:
        """Release everything, in reverse order of creation; idempotent.

        **Cancellation:** shielded: always runs to the end.
        """
        with anyio.CancelScope(shield=True):
            if self._released:
                return
            self._released = True
            # Everything is gone: the crash ledger has nothing left to sweep.
            self.rundir.forget(self.cid)
