"""Public entry to the crash sweeper (``supervisor gc``)."""

from __future__ import annotations

from ._parent.rundir import SweepReport, sweep


def collect_garbage(root: str | None = None) -> SweepReport:
    """Remove the host-side leftovers of supervisors that died uncleanly.

    Each supervisor records its containers' host-side resources (cgroups,
    network links, address leases, folders) under a run directory named after
    its PID and start time, before creating them. This removes the recorded
    resources of every owner that is no longer running; running supervisors
    are left alone. A new :class:`Supervisor` does the same when it starts.

    Args:
        root: the run-directory root (default ``$SUPERVISOR_RUN_DIR``, else
            ``/run/supervisor`` for root and the user's own for anyone else,
            as ``docs/rootless.rst`` says). A rootless
            caller's root that is not a folder of its own that only it can
            write is not swept (an error says so).

    Returns:
        a :class:`SweepReport`: the dead owners, the records removed, and the
        errors met (collected, not raised).
    """
    return sweep(root)


__all__ = ["SweepReport", "collect_garbage"]
