"""What a run produced: :class:`Result` and :class:`PhaseTiming`."""

from __future__ import annotations

from ._record import record

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (3 ms for a command line)
if TYPE_CHECKING:
    from typing import Any, Literal

if TYPE_CHECKING:
    Reason = Literal["exited", "signaled", "setup_failed", "cancelled", "timeout", "oom"]
else:
    Reason = str  # at run time: the alias needs typing.Literal, which is not imported


@record
class PhaseTiming:
    """When a setup phase started, in seconds since the run started."""

    name: str
    seconds: float


@record
class Result:
    """The outcome of one container run.

    Attributes:
        id: the supervisor's id for the container.
        hostname: the container's hostname.
        exit_code: the payload's exit status, or ``None`` if it did not exit
            by itself (killed by a signal, setup failed).
        signal: the signal that killed the payload, or ``None``.
        reason: ``"exited"``, ``"signaled"``, ``"setup_failed"``,
            ``"cancelled"`` (stopped because its run was cancelled),
            ``"timeout"`` (stopped by ``timeout=``) or ``"oom"`` (its memory
            limit was hit: the whole container was killed).
        stdout: captured standard output (empty unless captured).
        stderr: captured standard error (empty unless captured).
        wall_s: wall-clock seconds from the start of the run to the end.
        phases: setup phases in order, each with its start time.
        failed_phase: for ``setup_failed``, the phase that failed.
        error: for ``setup_failed``, the message naming the failed call.
        cpu_user_s: CPU seconds in user mode, of every process of the
            container (from its cgroup; without one, rootless, from PID 1's
            rusage, which counts every process reaped by a wait: all of its
            PID namespace's as they end, but those freed unreaped because
            their parent ignores ``SIGCHLD``).
        cpu_system_s: CPU seconds in kernel mode, likewise.
        peak_memory_bytes: the container's peak memory use (from its cgroup;
            ``None`` where the kernel does not report it).
        oom_killed: whether the OOM killer struck inside the container.
        stdout_dropped: bytes dropped from the start of ``stdout`` to keep
            it within ``max_output`` (0: it is whole).
        stderr_dropped: likewise for ``stderr``.
        id_mapping: how the container's ids map to the host's: ``"range"``
            (a root supervisor: container ids ``0..map_size-1`` are a host
            range), ``"subids"`` (rootless: container id 0 is the caller,
            the next ids its subordinate ids, mapped by ``newuidmap`` and
            ``newgidmap``) or ``"own"`` (rootless: the caller's own uid and
            gid are the payload's, the only ids mapped; see :doc:`rootless`).
    """

    id: str
    hostname: str
    exit_code: int | None
    signal: int | None
    reason: Reason
    stdout: bytes
    stderr: bytes
    wall_s: float
    phases: tuple[PhaseTiming, ...]
    failed_phase: str | None = None
    error: str | None = None
    cpu_user_s: float | None = None
    cpu_system_s: float | None = None
    peak_memory_bytes: int | None = None
    oom_killed: bool = False
    stdout_dropped: int = 0
    stderr_dropped: int = 0
    id_mapping: str = "range"

    @property
    def ok(self) -> bool:
        """True when the payload exited with status 0."""
        return self.reason == "exited" and self.exit_code == 0

    def to_json(self) -> dict[str, Any]:
        """The result as a JSON-ready dict; output as UTF-8 text (or base64)."""

        def text(data: bytes) -> dict[str, str] | str:
            try:
                return data.decode()
            except UnicodeDecodeError:
                import base64

                return {"base64": base64.b64encode(data).decode()}

        return {
            "id": self.id,
            "hostname": self.hostname,
            "exit_code": self.exit_code,
            "signal": self.signal,
            "reason": self.reason,
            "stdout": text(self.stdout),
            "stderr": text(self.stderr),
            "wall_s": round(self.wall_s, 6),
            "phases": [{"name": p.name, "seconds": round(p.seconds, 6)} for p in self.phases],
            "failed_phase": self.failed_phase,
            "error": self.error,
            "cpu_user_s": None if self.cpu_user_s is None else round(self.cpu_user_s, 6),
            "cpu_system_s": None if self.cpu_system_s is None else round(self.cpu_system_s, 6),
            "peak_memory_bytes": self.peak_memory_bytes,
            "oom_killed": self.oom_killed,
            "stdout_dropped": self.stdout_dropped,
            "stderr_dropped": self.stderr_dropped,
        }
