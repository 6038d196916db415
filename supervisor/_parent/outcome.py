"""How a finished run ends for its caller: its :class:`~supervisor.Result`,
and its outcome (the result, or the error to raise), for both run paths
(:mod:`.run` in the event loop, :mod:`.oneshot` without one).
"""

from __future__ import annotations

import time

from .._errors import CleanupError, SetupError
from .._result import PhaseTiming, Reason, Result

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (3 ms for a command line)
if TYPE_CHECKING:
    from .cgroups import CgroupStats
    from .pid1 import Pid1


def run_result(
    proc: Pid1,
    hostname: str,
    reason: Reason | None,
    ending: Reason | None,
    usage: CgroupStats | None,
    setup_error: SetupError | None,
    stdout: bytes = b"",
    stderr: bytes = b"",
    dropped: tuple[int, int] = (0, 0),
) -> Result:
    """The :class:`Result` of a run that is over: PID 1 reaped (or given up on).

    Args:
        proc: the run's PID 1.
        hostname: the container's hostname.
        reason: the run's own verdict if it has one (``"setup_failed"``,
            ``"cancelled"``), else ``None``: decided here from how PID 1 ended.
        ending: ``"timeout"`` or ``"oom"`` if the supervisor ended the run
            for that reason.
        usage: what the cgroup counted, read before it was removed.
        setup_error: the setup's failure, if any.
        stdout: the captured output.
        stderr: the captured error output.
        dropped: the bytes dropped from the start of each to respect a limit.
    """
    exit_code: int | None = None
    sig: int | None = None
    if proc.slot is not None and proc.exited:
        exit_code, sig = proc.exit_status()
    if reason is None:
        if ending is not None:
            reason = ending
        elif usage is not None and usage.oom_killed and sig == 9:
            # PID 1 was OOM-killed (the kernel's choice, before we noticed);
            # an OOM kill of another process that PID 1 survived is only
            # Result.oom_killed.
            reason = "oom"
        elif proc.stopped_by_us and not proc.stopped_by_caller:
            reason = "cancelled"
        else:
            reason = "exited" if exit_code is not None else "signaled"
    if reason == "setup_failed":
        exit_code = sig = None
    # Without a cgroup (rootless), PID 1's own rusage counts the container's CPU.
    cpu = proc.slot.cpu_s if proc.slot is not None else None
    return Result(
        id=proc.cid,
        hostname=hostname,
        exit_code=exit_code,
        signal=sig,
        reason=reason,
        stdout=stdout,
        stderr=stderr,
        wall_s=(time.monotonic_ns() - proc.t0) / 1e9,
        phases=tuple(PhaseTiming(p.label, s) for p, s in proc.phases),
        failed_phase=setup_error.phase.label if setup_error else None,
        error=setup_error.message if setup_error else None,
        cpu_user_s=usage.cpu_user_s if usage else cpu[0] if cpu else None,
        cpu_system_s=usage.cpu_system_s if usage else cpu[1] if cpu else None,
        peak_memory_bytes=usage.peak_memory_bytes if usage else None,
        oom_killed=bool(usage and usage.oom_killed),
        stdout_dropped=dropped[0],
        stderr_dropped=dropped[1],
        id_mapping=proc.id_mapping,
    )


def note_cleanup(error: BaseException, result: Result, cleanup_error: OSError | None) -> BaseException:
    """``error`` (the run's own), with a failed clean-up added to it as a note."""
    if cleanup_error is not None:
        error.add_note(str(CleanupError(result, cleanup_error)))
    return error


def outcome(
    result: Result,
    setup_error: SetupError | None,
    cleanup_error: OSError | None,
    failure: Exception | None = None,
) -> Result:
    """What a finished run gives its caller: its own error first (a setup
    failure, then ``failure``, a failed check), with a failed clean-up as a
    note; else that clean-up's :class:`CleanupError`; else ``result``.

    Raises:
        SetupError: the setup failed (``.result`` set here).
        Exception: ``failure``.
        CleanupError: only the clean-up failed (the ``OSError`` chained).
    """
    if setup_error is not None:
        setup_error.result = result
        raise note_cleanup(setup_error, result, cleanup_error)
    if failure is not None:
        raise note_cleanup(failure, result, cleanup_error)
    if cleanup_error is not None:
        raise CleanupError(result, cleanup_error) from cleanup_error
    return result
