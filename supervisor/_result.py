"""What a run produced: :class:`Result` and :class:`PhaseTiming`."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any, Literal

Reason = Literal["exited", "signaled", "setup_failed", "cancelled"]


@dataclass(frozen=True)
class PhaseTiming:
    """When a setup phase started, in seconds since the run started."""

    name: str
    seconds: float


@dataclass(frozen=True)
class Result:
    """The outcome of one container run.

    Attributes:
        id: the supervisor's id for the container.
        hostname: the container's hostname.
        exit_code: the payload's exit status, or ``None`` if it did not exit
            by itself (killed by a signal, setup failed).
        signal: the signal that killed the payload, or ``None``.
        reason: ``"exited"``, ``"signaled"``, ``"setup_failed"`` or
            ``"cancelled"``.
        stdout: captured standard output (empty unless captured).
        stderr: captured standard error (empty unless captured).
        wall_s: wall-clock seconds from the start of the run to the end.
        phases: setup phases in order, each with its start time.
        failed_phase: for ``setup_failed``, the phase that failed.
        error: for ``setup_failed``, the message naming the failed call.
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
        }
