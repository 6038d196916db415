"""Small helpers shared by test modules."""

from __future__ import annotations

import os
import subprocess
from typing import Any

import supervisor
from supervisor._protocol import PARENT_STEP_PHASES as _PARENT_STEP_PHASES

#: Where the supervisor under test is imported from (the installed package, or
#: a checkout with the extension built in place): subprocesses get it too.
REPO = os.path.dirname(os.path.dirname(supervisor.__file__))


def _in_sandbox() -> bool:
    try:
        with open("/proc/1/cmdline", "rb") as f:
            return b"-m\0supervisor._pytest\0" in f.read()
    except OSError:
        return False


#: This session runs in sandboxes (``pytest --sandbox``): its tests start no containers.
IN_SANDBOX = _in_sandbox()

#: Phases with a step of the supervisor's own (USERNS, CGROUP, NETWORK), in order.
PARENT_STEP_PHASES = tuple(sorted(_PARENT_STEP_PHASES))


def running(pid: int) -> bool:
    """True while ``pid`` runs (a zombie waiting for its reaper does not count)."""
    return proc_state(pid) not in (None, "Z")


def run_with_repo(
    argv: list[str], env: dict[str, str] | None = None, **kwargs: Any
) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` with this checkout importable: text output captured, 60 s at most, not checked."""
    return subprocess.run(
        argv,
        env={**os.environ, "PYTHONPATH": REPO, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        **kwargs,
    )


def _stat(pid: int) -> list[str] | None:
    """The fields of ``/proc/<pid>/stat`` after the name (field 3 first), or None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            data = f.read()
    except (FileNotFoundError, ProcessLookupError):  # gone before the open, or reaped before the read
        return None
    return data[data.rindex(")") + 2 :].split()


def proc_state(pid: int) -> str | None:
    """The process's state letter (R, S, Z...), or None once it is gone."""
    fields = _stat(pid)
    return fields[0] if fields else None


def proc_start_time(pid: int) -> str | None:
    """The process's start time, or None once it is gone (a PID alone is reusable)."""
    fields = _stat(pid)
    return fields[19] if fields else None


def gone(pid: int, start: str | None) -> bool:
    """True once the process that had ``start`` as its start time has been reaped."""
    now = proc_start_time(pid)
    return now is None or now != start


def cmdline(pid: int) -> bytes | None:
    """``/proc/<pid>/cmdline`` (NUL-separated), or None once it is gone."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None


def descendants(pid: int) -> dict[int, str | None]:
    """``pid`` and its descendants, each with its start time."""
    out: dict[int, str | None] = {}
    todo = [pid]
    while todo:
        p = todo.pop()
        out[p] = proc_start_time(p)
        # Children are listed per thread (a supervisor's PID 1s are children
        # of its clone thread).
        try:
            tasks = os.listdir(f"/proc/{p}/task")
        except (FileNotFoundError, ProcessLookupError):
            continue
        for tid in tasks:
            try:
                with open(f"/proc/{p}/task/{tid}/children") as f:
                    todo += [int(c) for c in f.read().split()]
            except (FileNotFoundError, ProcessLookupError):
                continue
    return out
