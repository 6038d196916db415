"""The payload's standard streams and passed descriptors: which descriptor
becomes its 0, 1, 2, 3..., and which ends the supervisor keeps.

:func:`plan` opens everything before the clone, with two sets of
descriptors to close, as trio's ``open_process`` does with two exit stacks:
one for the ends that go to PID 1, closed in this process right after the
spawn whatever happened; one for the ends the supervisor keeps, closed when
the run ends. If planning fails half-way, both are closed at once, so a
failed plan leaves no descriptor open. A :class:`Closer` holds each set: an
exit stack's callbacks cost a run more than the descriptors' own ``close``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

#: ``stdin``/``stdout``/``stderr`` value asking for a pipe whose other end the
#: caller gets as a stream (the same value as ``subprocess.PIPE``).
PIPE = -1


class Closer:
    """Descriptors and close functions to close together, the last added
    first (as an exit stack would); closing again closes nothing more.

    A descriptor that is already closed is no error; the first exception
    of a close function is raised once every other item was closed.
    """

    __slots__ = ("_items",)

    def __init__(self) -> None:
        self._items: list[int | Callable[[], object]] = []

    def fd(self, fd: int) -> int:
        """Close ``fd`` with the others; returns it."""
        self._items.append(fd)
        return fd

    def call(self, close: Callable[[], object]) -> None:
        """Call ``close()`` with the others."""
        self._items.append(close)

    def close(self) -> None:
        """Close everything held, the last added first."""
        items, self._items = self._items, []
        error: BaseException | None = None
        for item in reversed(items):
            if isinstance(item, int):
                close_quietly(item)
                continue
            try:
                item()
            except BaseException as exc:  # noqa: BLE001 - raised below, once all is closed
                error = error or exc
        if error is not None:
            raise error


class Stdio:
    """The descriptors of one run's standard streams, as :func:`plan` made them.

    Attributes:
        child: PID 1's descriptors, in its order: stdin, stdout, stderr, then
            the passed ones (PID 1 makes them its 0, 1, 2, 3, ...).
        child_side: closes this process's copies of :attr:`child`: right
            after the spawn, whatever happened.
        our_side: closes the ends the supervisor keeps to read (the
            captures): when the run ends.
        capture: our read ends of the stdout and stderr pipes when output is
            captured, else ``None``.
        pipes: the ends the caller takes over (they are in neither stack):
            ``"input"``, the stdin pipe's write end that ``input`` is written
            to; ``"stdin"``, ``"stdout"``, ``"stderr"``, those of the
            :data:`PIPE` streams.
    """

    def __init__(self) -> None:
        self.child: list[int] = []
        self.child_side = Closer()
        self.our_side = Closer()
        self.capture: tuple[int, int] | None = None
        self.pipes: dict[str, int] = {}

    def _for_child(self, fd: int) -> None:
        self.child.append(self.child_side.fd(fd))

    def _ours(self, fd: int) -> int:
        return self.our_side.fd(fd)


def plan(
    *,
    capture_output: bool,
    input: bytes | None = None,
    stdin: int | None = None,
    stdout: int | None = None,
    stderr: int | None = None,
    pass_fds: Sequence[int] = (),
) -> Stdio:
    """Open the payload's standard streams as :meth:`supervisor.Supervisor.run`'s
    arguments say (they are checked there).

    Args:
        capture_output: pipes for stdout and stderr, read by the supervisor.
        input: bytes to feed to stdin through a pipe.
        stdin: a descriptor to duplicate as stdin, or :data:`PIPE` (default:
            ``/dev/null``).
        stdout: a descriptor for stdout when not capturing, or :data:`PIPE`
            (default: ours).
        stderr: as ``stdout``, for stderr.
        pass_fds: the caller's descriptors, duplicated in order.

    Returns:
        the plan: its child side is closed after the spawn, its own side when
        the run ends, and its pipes are the caller's.

    Raises:
        ValueError: a passed descriptor was closed meanwhile (by the caller,
            while the run waited for its turn).
        OSError: a pipe or ``/dev/null`` could not be opened (out of
            descriptors).
    """
    stdio = Stdio()
    handed_over = Closer()  # the pipes, until returned
    try:
        if input is not None:
            r, w = os.pipe2(os.O_CLOEXEC)
            stdio._for_child(r)
            stdio.pipes["input"] = w
            handed_over.fd(w)
        elif stdin == PIPE:
            r, w = os.pipe2(os.O_CLOEXEC)
            stdio._for_child(r)
            stdio.pipes["stdin"] = w
            handed_over.fd(w)
        elif stdin is not None:
            stdio._for_child(os.dup(stdin))
        else:
            stdio._for_child(os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC))
        if capture_output:
            out_r, w = os.pipe2(os.O_CLOEXEC)
            stdio._ours(out_r)
            stdio._for_child(w)
            err_r, w = os.pipe2(os.O_CLOEXEC)
            stdio._ours(err_r)
            stdio._for_child(w)
            stdio.capture = (out_r, err_r)
        else:
            for fd, default, name in ((stdout, 1, "stdout"), (stderr, 2, "stderr")):
                if fd == PIPE:
                    r, w = os.pipe2(os.O_CLOEXEC)
                    stdio._for_child(w)
                    stdio.pipes[name] = r
                    handed_over.fd(r)
                else:
                    stdio._for_child(os.dup(default if fd is None else fd))
        for fd in pass_fds:
            try:
                stdio._for_child(os.dup(fd))
            except OSError as exc:
                raise ValueError(f"pass_fds: {fd} is not an open descriptor ({exc.strerror})") from None
    except BaseException:
        handed_over.close()
        stdio.our_side.close()
        stdio.child_side.close()
        raise
    return stdio


def close_quietly(fd: int) -> None:
    """Close ``fd``, ignoring an already-closed descriptor."""
    try:
        os.close(fd)
    except OSError:
        pass
