"""What a supervisor's bridged containers leave behind, deleted in the
background: host veths that outlive their namespace, and bridges whose last
user left.

A veth normally dies with its container's network namespace, asynchronously
in the kernel (5 to 25 ms after PID 1 is reaped), so nothing waits for
``RTM_DELLINK``. But the kernel keeps a namespace alive, and its veth with
it, while an orphaned TCP socket of the container still retransmits (a FIN
its dead peer never acknowledges): that lasts up to ``tcp_orphan_retries``
backoffs, about two minutes. So each veth is also scheduled here, and deleted
if it is still there :data:`VETH_GRACE` seconds later. A bridge without users
lingers :data:`BRIDGE_LINGER` seconds (back-to-back containers do not each
create and delete it), then goes unless someone uses it again.

One :class:`Janitor` per supervisor, made by its first bridged container;
:meth:`Janitor.wait_idle`, when the supervisor exits, cuts the graces short
and waits for every deletion. Its threads are daemons, so it also finishes
at the interpreter's exit.
"""

from __future__ import annotations

import atexit
import os
import threading
import time
import warnings

import anyio
import anyio.to_thread

#: Seconds a bridge without users is kept before it is deleted, so that
#: back-to-back containers do not each create and delete it
#: (:meth:`Janitor.wait_idle` cuts this short).
BRIDGE_LINGER = 1.0

#: Seconds after its container's release that a host veth still present is
#: deleted explicitly (it normally dies with the namespace well before).
VETH_GRACE = 2.0
#: The grace left to pending veths when a supervisor exits (:meth:`Janitor.wait_idle`).
VETH_EXIT_GRACE = 0.25


class Janitor:
    """Deletes one supervisor's leftover veths and unused bridges, in threads.

    The veths are checked by one thread, started on demand, every
    :attr:`POLL` seconds; the ones still there at their deadline are deleted.
    The thread ends when nothing is pending. Each lingering bridge deletion
    has a thread of its own. Errors are collected for :meth:`wait_idle`.
    """

    #: How often pending veths are checked for having gone by themselves.
    POLL = 0.05

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._due: dict[str, float] = {}  # veth -> deadline
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._pending: dict[str, threading.Event] = {}  # bridge -> the event that ends its linger
        self._running: set[threading.Thread] = set()  # every bridge deletion until it has finished
        self.errors: list[str] = []
        """Errors of background deletions, reported by :meth:`wait_idle`."""
        # Its threads are daemons, which die with the interpreter: finish first.
        atexit.register(self.finish, VETH_EXIT_GRACE)

    # -- veths ----------------------------------------------------------------

    def schedule(self, veths: list[str], delay: float) -> None:
        """Delete each of ``veths`` if it still exists ``delay`` seconds from now.

        Never raises (it runs on cleanup paths): a thread that cannot start is
        an error for :meth:`wait_idle` to report, and the veths stay pending
        for the next call.
        """
        if not veths:
            return
        deadline = time.monotonic() + delay
        with self._cond:
            for veth in veths:
                self._due[veth] = min(self._due.get(veth, deadline), deadline)
            if self._thread is None:
                thread = threading.Thread(target=self._run, name="supervisor-veth-janitor", daemon=True)
                try:
                    thread.start()
                except RuntimeError as exc:  # out of threads (pids limit), or the interpreter is exiting
                    self.errors.append(f"cannot start the veth janitor: {exc}")
                    return
                self._thread = thread
            self._cond.notify()

    def finish(self, grace: float) -> None:
        """Hurry every pending veth deletion to ``grace`` seconds and wait for it (blocking)."""
        thread = self._hurry(grace)
        if thread is not None:
            thread.join(grace + 10)

    def _hurry(self, grace: float) -> threading.Thread | None:
        """Bring every veth's deadline to at most ``grace`` seconds from now.

        Returns:
            the veth thread to join, or None if it is idle.
        """
        deadline = time.monotonic() + grace
        with self._cond:
            for veth, due in self._due.items():
                self._due[veth] = min(due, deadline)
            self._cond.notify()
            return self._thread

    def _run(self) -> None:
        from . import netlink

        while True:
            with self._cond:
                for veth in [v for v in self._due if not os.path.exists(f"/sys/class/net/{v}")]:
                    del self._due[veth]
                if not self._due:
                    self._thread = None
                    return
                now = time.monotonic()
                due = [v for v, t in self._due.items() if t <= now]
                if not due:
                    self._cond.wait(min(self.POLL, min(self._due.values()) - now))
                    continue
                for veth in due:
                    del self._due[veth]
            try:
                self.errors.extend(netlink.delete_links(due))
            except Exception as exc:  # noqa: BLE001 - a thread has no caller: wait_idle reports it
                self.errors.append(f"deleting veths {due}: {exc!r}")

    # -- bridges --------------------------------------------------------------

    def delete_bridge_later(self, bridge: str, subnet: str) -> None:
        """Delete the bridge after :data:`BRIDGE_LINGER` seconds, unless it is used again."""
        from .bridge import delete_bridge_if_unused

        flush = threading.Event()

        def work() -> None:
            try:
                flush.wait(BRIDGE_LINGER)
                with self._lock:
                    self._pending.pop(bridge, None)  # a later detach schedules a new check
                self.errors.extend(delete_bridge_if_unused(bridge, subnet))
            except Exception as exc:  # noqa: BLE001 - a thread has no caller: wait_idle reports it
                self.errors.append(f"deleting bridge {bridge}: {exc!r}")
            finally:
                with self._lock:
                    self._running.discard(threading.current_thread())

        with self._lock:
            if bridge in self._pending:
                return  # one lingering deletion per bridge: it re-checks the users
            thread = threading.Thread(target=work, name=f"supervisor-del-{bridge}")
            self._pending[bridge] = flush
            self._running.add(thread)
            thread.start()

    # -- the end --------------------------------------------------------------

    async def wait_idle(self) -> None:
        """Delete unused bridges now (ending their linger) and wait until that is done.

        Called when the supervisor exits. Bridges still used by other
        supervisors are kept. Veths of ended containers that are still there
        :data:`VETH_EXIT_GRACE` seconds from now are deleted, so none outlives
        the supervisor.

        Warns:
            RuntimeWarning: a background deletion failed (the bridge may be
                left until the subnet's next user leaves). Never an exception:
                this runs while a supervisor exits, maybe with an exception of
                its own.

        **Cancellation:** shielded: returns only when they are done.
        """
        with anyio.CancelScope(shield=True):
            while True:
                with self._lock:
                    for flush in self._pending.values():
                        flush.set()
                    running = list(self._running)
                veths = self._hurry(VETH_EXIT_GRACE)
                if veths is not None:
                    running.append(veths)
                if not running:
                    break
                for thread in running:
                    await anyio.to_thread.run_sync(thread.join)
        atexit.unregister(self.finish)
        if self.errors:
            message = "; ".join(self.errors)
            self.errors.clear()
            warnings.warn(f"supervisor networking: {message}", RuntimeWarning, stacklevel=2)
