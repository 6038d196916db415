"""The supervisor's half of the clone: start PID 1 from this process, watch it, reap it.

PID 1 is cloned from the supervisor's own process by the C extension
:mod:`supervisor._child._spawn` (its half: ``spawn.c``), as CPython's
``_posixsubprocess`` does for :mod:`subprocess`: the
:class:`~supervisor._protocol.SpawnConfig` is converted in C, in the event
loop's thread, and no Python runs in the child. The clone itself (the kernel
creating the namespaces: about half a millisecond) is made by one thread of
the extension's that does nothing else and never ends, so the event loop
drives other containers meanwhile. The child shares this process's memory
until its ``execve`` (``CLONE_VM``, on a stack of its own), so a large
supervisor makes no clone dearer, and it touches nothing of ours but its
stack and its plan: raw system calls only, every signal blocked, no lock, no
allocation.

Each PID 1 is a child of this process, cloned with no exit signal: until its
``execve`` only a wait with ``__WALL`` sees it (``execve`` makes the exit
signal ``SIGCHLD`` again, so, as with :mod:`subprocess`, a ``waitpid(-1)``
elsewhere in the program would take a running payload's exit status). It is
reaped race-free through its pidfd by the supervisor's reaper task,
shielded, which first reads the zombie's name to tell whether it reached
``execve``. PID 1 carries ``PR_SET_PDEATHSIG(SIGKILL)``:
it dies with the thread that cloned it, which lives as long as the process,
so with the supervisor, even when that is killed by SIGKILL.
"""

from __future__ import annotations

import errno
import math
import os
import select
import signal

import anyio
import anyio.abc

from .._child import _spawn
from .._protocol import SpawnConfig
from .._record import field, mutable_record
from .._sys import linux
from . import pid1


@mutable_record
class Slot(pid1.Slot):
    """One PID 1, with an event set once it is reaped."""

    exited: anyio.Event = field(default_factory=anyio.Event)


class Spawner:
    """Clones the containers of one supervisor and reaps them.

    Args:
        task_group: where the reaper task runs (the supervisor's).
    """

    def __init__(self, task_group: anyio.abc.TaskGroup) -> None:
        self._tg = task_group
        self._slots: dict[str, Slot] = {}
        self._closed = False
        #: Reply pipes, empty, for the next spawns (one pipe per spawn in flight).
        self._pipes: list[tuple[int, int]] = []
        #: The pidfds of the PID 1s not yet reaped, in one epoll set.
        self._ready: select.epoll | None = None
        self._watched: dict[int, Slot] = {}
        self._reaper: anyio.CancelScope | None = None

    async def spawn(self, cid: str, config: SpawnConfig, fds: list[int]) -> Slot:
        """Clone PID 1 and start watching it.

        Args:
            cid: the container's id.
            config: what PID 1 runs.
            fds: control socket, stdin, stdout, stderr, the passed fds, then
                one per cgroup entry (the caller keeps and closes them, once
                this returned).

        Raises:
            OSError: the kernel refused the clone (naming its namespaces), or
                the supervisor is closing (``ESHUTDOWN``).
            ValueError, TypeError: ``config`` does not convert.

        **Cancellation:** shielded once the request is made: the clone
        thread's answer (immediate) carries the pidfd without which the
        container could be neither stopped nor reaped.
        """
        if self._closed:
            raise OSError(errno.ESHUTDOWN, "the supervisor is closing: no container is started any more")
        pipe = self._pipes.pop() if self._pipes else os.pipe2(os.O_CLOEXEC)
        try:
            _spawn.spawn(config, fds, 0, pipe[1])
        except BaseException:
            self._release(pipe)  # nothing was asked of the clone thread
            raise
        try:
            with anyio.CancelScope(shield=True):
                await anyio.wait_readable(pipe[0])
                pid, pidfd = pid1.read_clone_reply(pipe[0], config)
        finally:
            self._release(pipe)
        slot = Slot(pid=pid, pidfd=pidfd)
        self._slots[cid] = slot
        self._watch(slot)
        return slot

    def _release(self, pipe: tuple[int, int]) -> None:
        """Keep an emptied reply pipe for the next spawn, or close it once closing."""
        if self._closed:
            os.close(pipe[0])
            os.close(pipe[1])
        else:
            self._pipes.append(pipe)

    def _watch(self, slot: Slot) -> None:
        """Have the reaper watch PID 1's pidfd (and start the reaper if it is not running)."""
        if self._ready is None:
            self._ready = select.epoll()
        self._ready.register(slot.pidfd, select.EPOLLIN)
        self._watched[slot.pidfd] = slot
        if self._reaper is None:
            self._reaper = anyio.CancelScope(shield=True)
            self._tg.start_soon(self._reap_all, self._reaper)

    async def _reap_all(self, scope: anyio.CancelScope) -> None:
        """Reap every PID 1 as it exits, until :meth:`aclose` ends it.

        One task for all containers: their pidfds share one epoll set, whose
        descriptor is what it waits on (a watcher task per container would
        cost each a task, a cancel scope and a wake-up of its own).

        **Cancellation:** shielded: every PID 1 is reaped, the supervisor's
        own exit included (it kills what is left first); only :meth:`aclose`
        cancels it, once none is left.
        """
        assert self._ready is not None
        ready = self._ready
        with scope:
            while True:
                await anyio.wait_readable(ready.fileno())
                for fd, _events in ready.poll(0):
                    ready.unregister(fd)
                    self._reap(self._watched.pop(fd))

    def _reap(self, slot: Slot) -> None:
        """Reap PID 1 (its pidfd is readable: it exited) and wake its waiters."""
        pid1.reap(slot)
        slot.exited.set()

    def forget(self, cid: str) -> None:
        """Drop a container's slot and close its pidfd (after its exit was consumed)."""
        slot = self._slots.pop(cid, None)
        if slot is not None and slot.pidfd >= 0 and slot.exited.is_set():
            os.close(slot.pidfd)
            slot.pidfd = -1

    def close(self) -> None:
        """Clone no more containers (:meth:`spawn` refuses from now on)."""
        self._closed = True

    async def aclose(self, timeout: float = math.inf) -> None:
        """Kill every PID 1 still alive and wait until each is reaped.

        **Cancellation:** shielded.
        """
        self.close()
        with anyio.CancelScope(shield=True):
            left = [s for s in self._slots.values() if not s.exited.is_set()]
            for slot in left:
                try:
                    linux.pidfd_send_signal(slot.pidfd, signal.SIGKILL)
                except OSError:
                    pass
            with anyio.move_on_after(timeout):
                for slot in left:
                    await slot.exited.wait()
            for cid in list(self._slots):
                self.forget(cid)
            while self._pipes:
                for fd in self._pipes.pop():
                    os.close(fd)
            if not self._watched and self._reaper is not None:
                # Every PID 1 is reaped. (One that is not, stuck in the kernel
                # past the timeout, keeps the reaper and so the supervisor's
                # exit waiting for it.)
                self._reaper.cancel()
                self._reaper = None
                if self._ready is not None:
                    self._ready.close()
                    self._ready = None
