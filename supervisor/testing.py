"""Test helpers: make a chosen setup phase fail, to prove cleanup on every path.

Not part of the container API and never imported by it; import it from tests::

    from supervisor import Phase, SetupError
    from supervisor.testing import fail_at

    with fail_at(Phase.PIVOT):
        with pytest.raises(SetupError) as info:
            await supervisor.run(spec)
    assert info.value.phase is Phase.PIVOT

The fault is carried by a :class:`contextvars.ContextVar`, so it applies to the
runs *started* (``Supervisor.run`` called) inside the ``with`` block by the
current task, and by tasks it spawns there; other tasks are not affected.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from ._parent.faults import FAULT, PARENT_FAULT
from ._protocol import PARENT_STEP_PHASES, Phase

__all__ = ["fail_at", "fail_in_parent"]


@contextlib.contextmanager
def fail_at(phase: Phase) -> Iterator[None]:
    """Make PID 1 fail as it starts ``phase``, in every run started inside.

    PID 1 reports the phase, then fails with ``EIO`` and a message saying the
    fault was injected; the run raises :class:`~supervisor.SetupError` with
    ``.phase == phase`` after the container was reaped and cleaned up.

    Args:
        phase: the :class:`~supervisor.Phase` to fail.

    Raises:
        TypeError: ``phase`` is not a :class:`~supervisor.Phase`.
    """
    if not isinstance(phase, Phase):
        raise TypeError(f"fail_at() needs a supervisor.Phase, not {type(phase).__name__}")
    token = FAULT.set(phase)
    try:
        yield
    finally:
        FAULT.reset(token)


@contextlib.contextmanager
def fail_in_parent(phase: Phase, *, after: bool = False) -> Iterator[None]:
    """Make the supervisor's own step of a phase fail.

    The supervisor has a step of its own in ``USERNS`` (its clone thread
    writes the id maps right after the clone), in ``CGROUP`` (creating the
    cgroup, before the clone) and in ``NETWORK`` (when PID 1 asks); inside
    this block that step fails with ``EIO`` instead, as if writing the id maps
    (or creating the cgroup, configuring the network) had failed.

    Args:
        phase: ``Phase.USERNS``, ``Phase.CGROUP`` or ``Phase.NETWORK``.
        after: fail once the step has done all its work (the id maps written,
            the cgroup created with its limits, the veth, address and route
            configured), so that what it created must be cleaned up too.

    Raises:
        TypeError: ``phase`` is not a :class:`~supervisor.Phase`.
        ValueError: ``phase`` has no supervisor step.
    """
    if not isinstance(phase, Phase):
        raise TypeError(f"fail_in_parent() needs a supervisor.Phase, not {type(phase).__name__}")
    if phase not in PARENT_STEP_PHASES:
        names = ", ".join(p.name for p in sorted(PARENT_STEP_PHASES))
        raise ValueError(f"{phase.name} has no supervisor step (only {names} have)")
    token = PARENT_FAULT.set((phase, after))
    try:
        yield
    finally:
        PARENT_FAULT.reset(token)
