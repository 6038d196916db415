"""Test-only fault injection, in one place: what :mod:`supervisor.testing`
sets, and the one check each injection point makes.

PID 1's faults travel in the spawn configuration (:func:`spawn_faults`) and
are checked by its C code as it reports a phase; the supervisor's own steps
call :func:`check_parent_fault` before and after their work.
"""

from __future__ import annotations

import contextvars
import errno

from .._protocol import Phase

#: The phase at which PID 1 must fail (see :func:`supervisor.testing.fail_at`).
FAULT: contextvars.ContextVar[Phase | None] = contextvars.ContextVar("supervisor_fault", default=None)
#: The phase whose supervisor-side step must fail, and whether after doing its
#: work (see :func:`supervisor.testing.fail_in_parent`).
PARENT_FAULT: contextvars.ContextVar[tuple[Phase, bool] | None] = contextvars.ContextVar(
    "supervisor_parent_fault", default=None
)


def spawn_faults() -> tuple[int, int]:
    """The spawn configuration's ``fault`` and ``id_maps_fault`` for a run
    started now.

    Returns:
        the phase PID 1 fails at (0: none), and the clone thread's id maps
        fault (0: none, 1: instead of writing them, 2: after).
    """
    fault = FAULT.get()
    parent = PARENT_FAULT.get()
    return (
        int(fault) if fault is not None else 0,
        (1 + parent[1]) if parent is not None and parent[0] == Phase.USERNS else 0,
    )


def check_parent_fault(phase: Phase, *, after: bool) -> None:
    """Raise the fault :func:`supervisor.testing.fail_in_parent` injects here, if any.

    Raises:
        OSError: ``EIO``, naming the step, inside such a block.
    """
    if PARENT_FAULT.get() == (phase, after):
        where = "after" if after else "in"
        raise OSError(errno.EIO, f"fault injected {where} the supervisor's {phase.label} step (supervisor.testing)")
