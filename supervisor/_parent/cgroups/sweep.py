"""Crash recovery: the leftover cgroups that a crash ledger recorded are
killed and removed, synchronously, before any event loop work (supervisor
start, ``supervisor gc``); registered as the ledger's ``"cgroup"`` sweeper."""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Iterable

from ..rundir import register_sweeper
from .files import kill_pass, procs, rmdir_tree
from .host import mount_points

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


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
    mounts = mount_points()
    for path in paths:
        if (
            not isinstance(path, str)
            or os.path.normpath(path) != path
            or not any(path.startswith(m.rstrip("/") + "/") for m in mounts)
        ):
            raise ValueError(f"refusing to sweep {path!r}: not a normalised path below a mounted cgroup hierarchy")
    existing = [p for p in paths if os.path.isdir(p)]
    for path in existing:
        if os.getpid() in procs(path):
            raise ValueError(f"refusing to sweep {path!r}: it holds this process")
    for path in existing:
        try:
            kill_pass(path)
        except FileNotFoundError:
            pass
    deadline = time.monotonic() + timeout
    delay = 0.001
    remaining = list(reversed(existing))
    while remaining:
        busy: list[str] = []
        for path in remaining:
            try:
                rmdir_tree(path)
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
                kill_pass(path)
            except FileNotFoundError:
                pass
        time.sleep(delay)
        delay = min(delay * 2, 0.1)
        remaining = busy


def _sweep_record(record: dict[str, Any]) -> None:
    sweep_paths(record.get("paths") or [])


register_sweeper("cgroup", _sweep_record)
