"""``supervisor run``: one container, its status as ours.

Its parser and its entry point. The run goes one of two ways: without an
event loop (:mod:`supervisor._parent.oneshot`) when nothing needs one, else
through a :class:`supervisor.Supervisor` under trio, with a terminal relayed
for ``-t``. Either way the outcome becomes the exit status: the payload's own;
128+N when killed by signal N; 124 on ``--timeout``; 125 when setup failed
(one line naming the phase); 126 when the program is not executable; 127 when
it is not found.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import functools
import json
import math
import os
import sys
from collections.abc import Callable, Sequence

from .common import (
    EXIT_NOT_EXECUTABLE,
    EXIT_NOT_FOUND,
    EXIT_SETUP_FAILED,
    EXIT_TIMEOUT,
    RawFormatter,
    fail,
    run_stoppable,
    stopped,
)
from .options import add_container_options
from .spec import spec_from_args

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (3 ms for a command line)
if TYPE_CHECKING:
    from typing import Any

    from .. import Container, Phase, Result, Spec, Supervisor, SupervisorError

_EPILOG = """\
exit status: the payload's; 128+N if it was killed by signal N (an OOM kill
is 137); 124 if --timeout struck; 125 if the container could not be set up;
126 if the program is not executable; 127 if it was not found; 130 after
Ctrl-C, 143 after SIGTERM, 129 after SIGHUP (the container is stopped first).

examples:
  supervisor run -- python3 -c 'print(1)'          # embedded default root
  supervisor run -m ./rootfs -u 0 -c /bin/sh -a /lib:/lib   # crabcan's flags
  supervisor run -v "$PWD:/src:ro" -w /src --hostname ci -- ls -l
"""


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``run`` subcommand and its options.

    Args:
        sub: the top-level parser's subcommands.
    """
    run = sub.add_parser(
        "run",
        help="run one container",
        description="Run CMD in a new container and exit with its status.",
        usage="supervisor run [OPTIONS] -- CMD [ARGS...]",
        epilog=_EPILOG,
        formatter_class=RawFormatter,
    )
    add_container_options(run)
    run.add_argument("-i", "--interactive", action="store_true", help="keep stdin attached (default: /dev/null)")
    run.add_argument(
        "-t",
        "--tty",
        action="store_true",
        help="allocate a terminal inside the container. The payload is its PID 1, which ignores the signals it"
        " has no handler for: Ctrl-C stops a shell's child but not a bare 'sleep'; add --init for that",
    )
    run.add_argument(
        "-d", "--debug", action="store_true", help="show each setup phase as it happens, with its duration"
    )
    run.add_argument("--json", action="store_true", help="print the result (with phases and output) as one JSON object")
    run.add_argument("cmd", nargs=argparse.REMAINDER, metavar="CMD [ARGS...]", help="the program and its arguments")


def main(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """Entry point of ``supervisor run``.

    Args:
        parser: the top-level parser, whose ``error()`` reports a missing command.
        args: the parsed command line.

    Returns:
        the exit status.
    """
    try:
        spec = spec_from_args(parser, args)
        spec.check_host()
    except (ValueError, TypeError) as exc:
        return fail(str(exc))
    if args.tty and not os.isatty(0):
        return fail("-t needs a terminal on stdin")
    from .._privileges import check_privileges

    try:
        check_privileges()
    except PermissionError as exc:
        return fail(str(exc.strerror))
    if args.preserve_fds < 0:
        return fail("--preserve-fds must be 0 or more")
    if args.timeout is not None and not 0 < args.timeout < math.inf:
        return fail(f"--timeout {args.timeout}: give a number of seconds above 0")
    # Checked before trio and the supervisor open descriptors of their own:
    # a gap in 3..3+N-1 would otherwise be filled by one of ours.
    for fd in range(3, 3 + args.preserve_fds):
        try:
            os.fstat(fd)
        except OSError:
            return fail(f"--preserve-fds {args.preserve_fds}: fd {fd} is not open")

    from .._parent.oneshot import runs_blocking

    if not args.json and runs_blocking(spec):
        return _run_blocking(spec, args)
    return run_stoppable(_run_async, spec, args)


#: Signals that stop a run: systemd and kill send SIGTERM, a closed terminal
#: SIGHUP, Ctrl-C SIGINT.
_STOP_SIGNALS = ("SIGINT", "SIGTERM", "SIGHUP")


def _run_blocking(spec: Spec, args: argparse.Namespace) -> int:
    """Run without an event loop (see :mod:`supervisor._parent.oneshot`).

    A stop signal (SIGINT, SIGTERM, SIGHUP) stops the container as on
    cancellation and ends with 128+N and one line, as :func:`run_stoppable`
    does: its handler only writes to a wake-up pipe that the run watches.
    """
    import signal

    from .._errors import SupervisorError
    from .._parent.oneshot import run_blocking

    stop_r, stop_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    stopped_by: list[int] = []

    def note(signum: int, _frame: object) -> None:
        stopped_by.append(signum)

    signums = [getattr(signal, name) for name in _STOP_SIGNALS]
    saved = {signum: signal.signal(signum, note) for signum in signums}
    saved_wakeup = signal.set_wakeup_fd(stop_w, warn_on_full_buffer=False)
    phases = _PhasePrinter(args.debug, spec)
    try:
        result = run_blocking(
            spec,
            stdin=0 if args.interactive else None,
            pass_fds=range(3, 3 + args.preserve_fds),  # checked open by main
            timeout=args.timeout,
            stop_fd=stop_r,
            on_phase=phases.on_phase if args.debug else None,
            on_started=phases.started,
        )
    except (SupervisorError, ValueError, TypeError) as exc:
        return _failed(exc, spec, args)
    finally:
        signal.set_wakeup_fd(saved_wakeup)
        for signum, handler in saved.items():
            signal.signal(signum, handler)
        os.close(stop_r)
        os.close(stop_w)
    if stopped_by:
        return stopped(stopped_by[0])
    return _finished(result, args, phases)


def _id_mapping(spec: Spec) -> str:
    """How the container's ids map to the host's, for ``--debug``'s userns line."""
    from .._parent import userns
    from .._privileges import is_rootless

    if spec.map_base == "auto" and not is_rootless():
        return f"container ids 0-{spec.map_size - 1}: a host range leased for this container"
    return userns.resolve(spec).describe()


class _PhasePrinter:
    """``--debug``: each setup phase with its duration, as the next one starts
    (after the userns line, how the ids are mapped)."""

    def __init__(self, debug: bool, spec: Spec | None = None) -> None:
        self.debug = debug
        self.spec = spec
        self.last: tuple[Phase, float] | None = None

    def on_phase(self, phase: Phase, seconds: float) -> None:
        if self.last is not None:
            prev, start = self.last
            print(f"supervisor: {prev.label:<13} {(seconds - start) * 1e3:8.3f} ms", file=sys.stderr)
            if prev.label == "userns" and self.spec is not None:
                print(f"supervisor: {'ids':<13} {_id_mapping(self.spec)}", file=sys.stderr)
        self.last = (phase, seconds)

    def started(self, pid: int = 0) -> None:
        """The payload runs: its phase's line, with PID 1's host PID if given (for ``nsenter -t``)."""
        if self.debug and self.last is not None:
            where = f", host PID {pid}" if pid else ""
            print(f"supervisor: {self.last[0].label:<13} (payload started{where})", file=sys.stderr)
        self.last = None


def _failed(exc: SupervisorError | ValueError | TypeError, spec: Spec, args: argparse.Namespace) -> int:
    """The exit status and line of a run that did not get to its end.

    126/127 when the program itself could not be executed or found; 125 for
    any other setup failure, a spec the host cannot run (a seccomp profile
    that does not compile, say) or a protocol error. A run whose clean-up
    failed did get to its end: the payload's status, and a line saying so.
    """
    from .._errors import CleanupError, SetupError
    from .._protocol import Phase

    if isinstance(exc, CleanupError):
        # The payload ran to its end: its status, and a line about what is left.
        print(f"supervisor: {exc} (left for 'supervisor gc')", file=sys.stderr)
        return _finished(exc.result, args, _PhasePrinter(False))
    if not isinstance(exc, SetupError):
        return fail(str(exc) if isinstance(exc, (ValueError, TypeError)) else f"{type(exc).__name__}: {exc}")
    if args.json and exc.result is not None:
        print(json.dumps(exc.result.to_json()))
    if exc.phase == Phase.EXEC and exc.errno == errno.ENOENT:
        print(f"supervisor: {exc.message}", file=sys.stderr)
        return EXIT_NOT_FOUND
    if exc.phase == Phase.EXEC and exc.errno in (errno.EACCES, errno.ENOEXEC, errno.EISDIR, errno.EPERM):
        print(f"supervisor: cannot execute {spec.command[0]}: {exc.message}", file=sys.stderr)
        return EXIT_NOT_EXECUTABLE
    return fail(f"setup failed in phase {exc.phase.label}: {exc.message}")


def _finished(result: Result, args: argparse.Namespace, phases: _PhasePrinter) -> int:
    """The exit status of a run that ended (the payload's, 128+N, 124), with its lines."""
    if args.debug:
        phases.started()
        print(f"supervisor: {result.reason}; wall {result.wall_s * 1e3:.1f} ms", file=sys.stderr)
    if args.json:
        print(json.dumps(result.to_json()))
    if result.reason == "timeout":
        print(f"supervisor: timed out after {args.timeout} s", file=sys.stderr)
        return EXIT_TIMEOUT
    if result.reason == "oom":
        print("supervisor: the container hit its memory limit and was killed", file=sys.stderr)
    if result.signal is not None:
        return 128 + result.signal
    return result.exit_code if result.exit_code is not None else EXIT_SETUP_FAILED


async def _run_async(spec: Spec, args: argparse.Namespace) -> int:
    from .. import Supervisor, SupervisorError

    phases = _PhasePrinter(args.debug, spec)
    on_phase = phases.on_phase if args.debug else None
    stdin_fd = 0 if (args.interactive or args.tty) else None
    pass_fds = range(3, 3 + args.preserve_fds)  # checked open by main
    started: list[Container] = []
    try:
        async with Supervisor() as sup:
            result: Result
            if spec.tty:
                result = await _run_tty(sup, spec, on_phase, args.timeout, pass_fds)
            else:
                run = functools.partial(
                    sup.run,
                    spec,
                    check=False,
                    pass_fds=pass_fds,
                    timeout=args.timeout,
                    capture_output=args.json,
                    stdin=stdin_fd,
                    on_phase=on_phase,
                )
                result = await _start_and_wait(run, phases.started, started)
    except (SupervisorError, ValueError, TypeError) as exc:
        return _failed(exc, spec, args)
    except BaseException:
        # Stopped (a stop signal's cancellation, Ctrl-C): the run has stopped
        # the container and set its result ("cancelled", with the output so
        # far) before this unwinds; --json still prints it.
        if args.json and started and started[0]._result is not None:
            print(json.dumps(started[0]._result.to_json()))
        raise
    return _finished(result, args, phases)


async def _start_and_wait(run: Callable[..., Any], started: Callable[[int], None], handles: list[Container]) -> Result:
    """``nursery.start(run)``, call ``started(pid)`` once the payload runs, then wait.

    The container's handle is appended to ``handles`` once it runs.

    Raises:
        the run's own exception (not wrapped in an exception group).
    """
    import trio

    try:
        async with trio.open_nursery() as nursery:
            container: Container = await nursery.start(run)
            handles.append(container)
            started(container.pid)
            return await container.wait()
    except BaseExceptionGroup as group:
        raise _single(group) from None


def _single(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The one exception a nursery wrapped (the same one may be in it twice:
    raised by the run and again by ``wait()``); else the group itself."""
    unique = list({id(exc): exc for exc in group.exceptions}.values())
    return unique[0] if len(unique) == 1 and not isinstance(unique[0], BaseExceptionGroup) else group


async def _run_tty(
    sup: Supervisor,
    spec: Spec,
    on_phase: Callable[[Phase, float], None] | None,
    timeout: float | None,
    pass_fds: Sequence[int],
) -> Result:
    """Run with the container's terminal relayed to ours, in raw mode."""
    import signal
    import termios
    import tty

    import trio

    saved = termios.tcgetattr(0)
    try:
        async with trio.open_nursery() as nursery:
            container: Container = await nursery.start(
                functools.partial(
                    sup.run,
                    spec,
                    check=False,
                    capture_output=False,
                    stdin=0,
                    on_phase=on_phase,
                    timeout=timeout,
                    pass_fds=pass_fds,
                )
            )
            # TCSANOW, not setraw's default TCSAFLUSH: keys typed while the
            # container started are the payload's input and must not be dropped.
            # A terminal that hung up meanwhile (EIO) has no modes to set: its
            # SIGHUP stops the run (run_stoppable).
            with contextlib.suppress(termios.error):
                tty.setraw(0, termios.TCSANOW)

            def resize() -> None:
                try:
                    size = os.get_terminal_size(0)
                except OSError:  # hung up (EIO): no size to follow
                    return
                container.resize_terminal(size.lines, size.columns)

            resize()

            async def follow_window_size() -> None:
                with trio.open_signal_receiver(signal.SIGWINCH) as signals:
                    async for _ in signals:
                        resize()

            nursery.start_soon(follow_window_size)
            result = await container.wait()
            nursery.cancel_scope.cancel()
        return result
    except BaseExceptionGroup as group:
        raise _single(group) from None
    finally:
        with contextlib.suppress(termios.error):  # the terminal hung up (EIO): no modes to give back
            termios.tcsetattr(0, termios.TCSADRAIN, saved)
