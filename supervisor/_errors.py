"""Exceptions, split by cause.

The hierarchy::

    SupervisorError                  anything this library raises on purpose
     ├── SetupError                  the container failed before its payload ran
     │                               (.phase, .errno, .result); never confused
     │                               with the payload's own exit status
     ├── ContainerFailed             the payload ran and failed, with check=True,
     │                               the default (.result, .returncode, .stdout...)
     ├── ProtocolError               PID 1 broke the setup protocol
     └── CleanupError                the run ended, but a host resource of it
                                     could not be released (.result; the cause
                                     chained; the resource stays for gc)

Invalid specs raise the standard :class:`ValueError`/:class:`TypeError`, naming
the field, before anything starts. Cancellation is never wrapped.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (3 ms for a command line)


if TYPE_CHECKING:
    from collections.abc import Sequence

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

    @classmethod
    def caused_by(cls, phase: Phase, error: OSError | ValueError, what: str = "") -> SetupError:
        """The failure of ``phase`` that ``error`` is: an :class:`OSError`
        keeps its errno, a :class:`ValueError` (a value the kernel or a file
        refused) has errno 0.

        Args:
            phase: the phase that failed.
            error: why.
            what: what was attempted, before the error's text (if it does
                not say so itself).

        Returns:
            the error, to raise ``from error``.
        """
        code = (error.errno or 0) if isinstance(error, OSError) else 0
        return cls(phase, code, f"{what}: {error}" if what else str(error))


class ContainerFailed(SupervisorError):
    """The payload did not exit 0, and ``check`` was true (the default).

    It reads like :class:`subprocess.CalledProcessError`, which trio's and
    anyio's ``run_process`` raise in the same case.

    Attributes:
        result: the :class:`~supervisor.Result` of the run.
        returncode: the payload's exit status, or ``-N`` when signal ``N``
            killed it (as :attr:`subprocess.Popen.returncode`).
        cmd: the payload's command.
        stdout: its captured standard output (``b""`` when not captured).
        output: the same (``CalledProcessError``'s other name for it).
        stderr: its captured standard error.
    """

    def __init__(self, result: Result, cmd: Sequence[str] = ()) -> None:
        if result.signal is not None:
            what = f"was killed by signal {result.signal}"
        else:
            what = f"exited with status {result.exit_code}"
        why = {"timeout": " (timed out)", "oom": " (out of memory)"}.get(result.reason, "")
        shown = f" {list(cmd)!r}" if cmd else ""
        super().__init__(f"container {result.hostname!r}: command{shown} {what}{why}")
        self.result = result
        self.cmd = tuple(cmd)
        self.returncode = -result.signal if result.signal is not None else (result.exit_code or 0)
        self.stdout = self.output = result.stdout
        self.stderr = result.stderr


class CleanupError(SupervisorError):
    """The run is over, but one of its host resources could not be released.

    The container is gone (PID 1 reaped) and the run's own bookkeeping is done
    (:meth:`Container.wait` returns, the hostname is free); what failed is
    releasing a host-side resource, such as a cgroup directory that stayed
    busy. That resource stays in the crash ledger, so ``supervisor gc`` (or
    the next supervisor's start-up sweep) removes it later. The ``OSError``
    is chained as ``__cause__``. When the run itself failed too (a
    :class:`SetupError`, :class:`ContainerFailed`, a cancellation), that error
    is the one raised, and this one is added to it as a note.

    Attributes:
        result: the run's :class:`~supervisor.Result`.
    """

    def __init__(self, result: Result, error: OSError) -> None:
        super().__init__(f"container {result.hostname!r} ended, but releasing its host resources failed: {error}")
        self.result = result


class ProtocolError(SupervisorError):
    """A peer sent something the setup protocol does not allow."""
