"""Exceptions, split by cause.

The hierarchy::

    SupervisorError                  anything this library raises on purpose
     ├── SetupError                  the container failed before its payload ran
     │                               (.phase, .errno, .result); never confused
     │                               with the payload's own exit status
     ├── ContainerFailed             the payload ran and failed, with check=True
     │                               (.result)
     └── ProtocolError               PID 1 broke the setup protocol

Invalid specs raise the standard :class:`ValueError`/:class:`TypeError`, naming
the field, before anything starts. Cancellation is never wrapped.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._protocol import Phase
    from ._result import Result


class SupervisorError(Exception):
    """Base class of every error this library raises on purpose."""


class SetupError(SupervisorError):
    """The container failed during setup; its payload never ran.

    Attributes:
        phase: the :class:`~supervisor.Phase` that failed.
        errno: the kernel's errno (0 when not a system call failure).
        message: what was attempted, naming the call and its arguments.
        result: a :class:`~supervisor.Result` with ``reason == "setup_failed"``
            and the phases reached (set by the supervisor before raising).
    """

    def __init__(self, phase: Phase, errno: int, message: str, result: Result | None = None) -> None:
        super().__init__(f"setup failed in phase {phase.label}: {message}")
        self.phase = phase
        self.errno = errno
        self.message = message
        self.result = result


class ContainerFailed(SupervisorError):
    """The payload exited non-zero or was killed, and ``check=True`` was given.

    Attributes:
        result: the :class:`~supervisor.Result` of the run.
    """

    def __init__(self, result: Result) -> None:
        if result.signal is not None:
            what = f"was killed by signal {result.signal}"
        else:
            what = f"exited with status {result.exit_code}"
        super().__init__(f"container {result.hostname!r} {what} ({result.reason})")
        self.result = result


class ProtocolError(SupervisorError):
    """A peer sent something the setup protocol does not allow."""
