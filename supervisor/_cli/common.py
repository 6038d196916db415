"""What every subcommand of the CLI shares: exit codes, help formatting,
error lines, and running under trio with a clean stop on a signal.

The subcommand modules (:mod:`.run`, :mod:`.many`, :mod:`.gc`) import this
one and never each other. Like the rest of the package, it imports nothing
heavy at module level: a command line's start-up is measured.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Awaitable, Callable

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (3 ms for a command line)
if TYPE_CHECKING:
    from typing import Any

EXIT_TIMEOUT = 124  # as timeout(1)
EXIT_SETUP_FAILED = 125
EXIT_NOT_EXECUTABLE = 126
EXIT_NOT_FOUND = 127

#: The most containers one run-many starts (their results are kept for the summary).
MAX_CONTAINERS = 1_000_000


class Formatter(argparse.HelpFormatter):
    """argparse's formatter, measuring the terminal as ``shutil`` would without
    importing it: argparse makes one for every ``add_argument`` (to check the
    metavar), and ``shutil`` costs a command line some 2.5 ms."""

    def __init__(self, prog: str, indent_increment: int = 2, max_help_position: int = 24, width: int | None = None):
        if width is None:
            width = _terminal_columns() - 2
        super().__init__(prog, indent_increment, max_help_position, width)


class RawFormatter(Formatter, argparse.RawDescriptionHelpFormatter):
    """:class:`Formatter` keeping the description's and epilog's line breaks."""


def _terminal_columns() -> int:
    """``shutil.get_terminal_size().columns``: ``$COLUMNS``, then stdout's terminal, else 80."""
    try:
        columns = int(os.environ.get("COLUMNS", "0"))
    except ValueError:
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns if sys.__stdout__ else 0
        except (AttributeError, ValueError, OSError):
            columns = 0
    return columns or 80


def fail(message: str) -> int:
    """Print ``supervisor: MESSAGE`` on stderr.

    Args:
        message: what went wrong, on one line.

    Returns:
        :data:`EXIT_SETUP_FAILED`, the status of a run that could not start.
    """
    print(f"supervisor: {message}", file=sys.stderr)
    return EXIT_SETUP_FAILED


def stopped(signum: int) -> int:
    """One line naming the stop signal.

    Args:
        signum: the signal that stopped the run.

    Returns:
        128+``signum``.
    """
    import signal

    try:
        print(f"supervisor: stopped by {signal.Signals(signum).name}", file=sys.stderr)
    except OSError:  # stderr was the terminal that hung up
        pass
    return 128 + signum


def run_stoppable(main: Callable[..., Awaitable[int]], *args: Any) -> int:
    """``trio.run(main, *args)``; a stop signal or Ctrl-C stops it cleanly.

    On SIGTERM or SIGHUP, ``main`` is cancelled: its supervisor stops the
    containers as on any cancellation (SIGTERM if PID 1 handles it, the grace
    period, SIGKILL) and removes their cgroups, veths and run directories;
    then one line names the signal. Ctrl-C (SIGINT: trio's KeyboardInterrupt,
    which unwinds the supervisor the same way) ends with the same line and no
    traceback. Without this, the default action would end the process at once
    and leave that to the next supervisor's sweep.

    Args:
        main: the async function to run.
        *args: its arguments.

    Returns:
        ``main``'s status; 128+N after stop signal N; 130 after Ctrl-C.

    Raises:
        BaseExceptionGroup: ``main`` failed with anything other than Ctrl-C.
    """
    import signal

    import trio

    stopped_by: list[int] = []

    async def until_stopped() -> int:
        status = EXIT_SETUP_FAILED  # replaced unless a stop signal cancels main
        async with trio.open_nursery() as nursery:

            async def watch(task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
                # systemd and kill send SIGTERM, a closed terminal SIGHUP;
                # SIGINT stays trio's (KeyboardInterrupt).
                with trio.open_signal_receiver(signal.SIGTERM, signal.SIGHUP) as signals:
                    task_status.started()
                    async for signum in signals:
                        stopped_by.append(signum)
                        nursery.cancel_scope.cancel()
                        return

            # Before main: the signal is ours from before any cgroup exists.
            await nursery.start(watch)
            status = await main(*args)
            nursery.cancel_scope.cancel()
        return status

    try:
        status = trio.run(until_stopped)
    except KeyboardInterrupt:
        stopped_by.insert(0, signal.SIGINT)
    except BaseExceptionGroup as group:
        # Ctrl-C reached a task inside a nursery: trio raises it grouped.
        _interrupts, others = group.split(KeyboardInterrupt)
        if others is not None:
            raise
        stopped_by.insert(0, signal.SIGINT)
    if stopped_by:
        return stopped(stopped_by[0])
    return status
