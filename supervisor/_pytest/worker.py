"""The payload of a sandbox: a pytest that collects the tests and runs each in a fresh fork.

Run as ``python -P -m supervisor._pytest CONFIG`` in the container
(which the supervisor's C setup made before this interpreter started), with
the host's end of a socketpair as fd 3. It collects the same tests as the
pytest that started it (the same arguments, ``sys.path`` and directory), says
``ready``, then forks one process per sandbox unit (a test, or a module's or
the session's tests): the fork reads ``run`` messages, runs each test's whole
protocol (setup, call, teardown) through pytest's own hooks, and sends its
reports back serialised by pytest's public hooks. Forking an interpreter that
has already imported pytest and the test modules is what makes a sandboxed
test cost little more than an in-process one (``docs/design.rst``). Each
unit's process is forked while the one before runs, and waits for its turn.

Between two units every other process of the container is killed (nothing a
test started outlives its unit) and ``/tmp``, ``/dev/shm`` and ``/var/tmp``
are emptied (no unit sees another's files there), leaving the binds alone.
"""

from __future__ import annotations

import contextlib
import errno
import faulthandler
import gc
import json
import os
import select
import signal
import stat
import sys
from collections.abc import Collection
from typing import Any, ClassVar

import pytest

from . import wire

#: The fork found the host gone: the worker ends too.
_HOST_GONE = 100
#: Set in a worker's interpreter: the plugin's host half stays off there.
ACTIVE = False


def _wipe(path: str, keep: frozenset[str]) -> None:
    """Empty the directory ``path``, never crossing into another filesystem or a path in ``keep``."""
    try:
        top = os.lstat(path)
    except OSError:
        return
    if not stat.S_ISDIR(top.st_mode):
        return
    _wipe_below(path, top.st_dev, keep)


def _wipe_below(path: str, dev: int, keep: frozenset[str]) -> None:
    try:
        names = os.listdir(path)
    except OSError:
        return
    for name in names:
        full = os.path.join(path, name)
        if full in keep:
            continue
        try:
            st = os.lstat(full)
        except OSError:
            continue
        if st.st_dev != dev:
            continue  # a mount point: a bind of the host's, never ours to empty
        if stat.S_ISDIR(st.st_mode):
            _wipe_below(full, dev, keep)
            if not any(k.startswith(full + "/") for k in keep):
                try:
                    os.rmdir(full)
                except OSError as exc:
                    if exc.errno not in (errno.ENOTEMPTY, errno.EBUSY, errno.ENOENT):
                        raise
        else:
            try:
                os.unlink(full)
            except FileNotFoundError:
                pass


def _kill_all_others() -> None:
    """SIGKILL every process of the container but PID 1 and the caller (``kill(-1)``)."""
    try:
        os.kill(-1, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _others(spare: int, exiting: Collection[int]) -> bool:
    """Whether the container has processes other than PID 1, ``spare`` and ``exiting`` (zombies included)."""
    for name in os.listdir("/proc"):
        if name.isdigit():
            pid = int(name)
            if pid not in (1, spare) and pid not in exiting:
                return True
    return False


class _Unit:
    """A forked unit process: its pid, and the pipes PID 1 gives it orders and takes answers on."""

    #: PID 1's ends of every unit's pipes, which a new fork closes at once.
    open_fds: ClassVar[set[int]] = set()

    def __init__(self, pid: int, go: int, ack: int) -> None:
        self.pid = pid
        self._go = go
        self._ack = ack
        #: The exit status the process said it ends with (see :meth:`wait`).
        self.code = 0
        self._said = bytearray()  # after "r": b"s" (started), then b"f" and the exit status
        _Unit.open_fds.update((go, ack))

    @property
    def started(self) -> bool:
        """Whether it took its turn: a spare a test killed never says so."""
        return self._said[:1] == b"s"

    def _hear(self) -> bool:
        """Read what it said since (the pipe is non-blocking); False once the pipe is closed."""
        while True:
            try:
                chunk = os.read(self._ack, 64)
            except BlockingIOError:
                return True
            if not chunk:
                return False
            self._said += chunk

    def tell(self, order: bytes) -> bool:
        """Send ``order`` (``k``: end the others, ``r``: run); False if the process is gone."""
        if self._go < 0:
            return False
        try:
            os.write(self._go, order)
        except BrokenPipeError:
            return False
        return True

    def acked(self) -> bool:
        """Wait for the answer to ``k``; False if the process ended instead."""
        if self._ack < 0:
            return False
        select.select([self._ack], [], [])
        try:
            return os.read(self._ack, 1) == b"d"
        except BlockingIOError:
            return False

    def wait(self, exiting: _Exiting) -> int | None:
        """Wait until the unit is done: None if it said so (and :attr:`code`), else its wait status.

        A unit that ends without saying it is done (a test's crash or
        ``os._exit``, or a spare a test killed before its turn: see
        :attr:`started`) is waited for through a pidfd, since a process the
        test started may hold the answering pipe open. Meanwhile the units
        of ``exiting`` are reaped as they end.
        """
        try:
            pidfd = os.pidfd_open(self.pid)
        except OSError:  # no pidfds (Linux before 5.3): wait for the whole exit
            status = os.waitpid(self.pid, 0)[1]
            self._hear()
            return status
        try:
            poller = select.poll()
            poller.register(self._ack, select.POLLIN)
            poller.register(pidfd, select.POLLIN)
            for fd in exiting.fds:
                poller.register(fd, select.POLLIN)
            while True:
                ready = {fd for fd, _ in poller.poll()}
                for fd in exiting.fds & ready:
                    poller.unregister(fd)
                    exiting.reap_fd(fd)
                if self._ack in ready:
                    if not self._hear():
                        poller.unregister(self._ack)  # closed: it died
                    if self._said[1:2] == b"f" and len(self._said) >= 3:
                        self.code = self._said[2]
                        return None
                if pidfd in ready:
                    return os.waitpid(self.pid, 0)[1]
        finally:
            os.close(pidfd)

    def close(self) -> None:
        """Close PID 1's ends of the pipes (the process reads the end of its orders). Idempotent."""
        for fd in (self._go, self._ack):
            if fd >= 0:
                os.close(fd)
                _Unit.open_fds.discard(fd)
        self._go = self._ack = -1


class _Quiet:
    """Makes this pytest's terminal reporter write to ``/dev/null``.

    The host's terminal shows the session: the sandbox's own progress and
    summary would only be noise in its output. The reporter stays registered
    (assertion messages and other plugins ask it for its terminal writer); it
    is made on ``sys.stdout`` in pytest's own ``pytest_configure``, so
    ``sys.stdout`` is ``/dev/null`` from before that hook to after it (output
    capturing is suspended then).
    """

    _saved: ClassVar[Any] = None

    @pytest.hookimpl(tryfirst=True)
    def pytest_configure(self, config: pytest.Config) -> None:
        _Quiet._saved = sys.stdout
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - the reporter's, for the whole session

    @staticmethod
    def restore() -> None:
        """Give ``sys.stdout`` back (from the worker's last ``pytest_configure``)."""
        if _Quiet._saved is not None:
            sys.stdout, _Quiet._saved = _Quiet._saved, None


class _Exiting:
    """Units that said they are done and are exiting: pid and pidfd, until reaped."""

    def __init__(self) -> None:
        self._by_fd: dict[int, int] = {}

    @property
    def pids(self) -> set[int]:
        return set(self._by_fd.values())

    @property
    def fds(self) -> set[int]:
        return set(self._by_fd)

    def watch(self, pid: int) -> None:
        """Reap ``pid`` once it is gone (or now, without pidfds)."""
        try:
            fd = os.pidfd_open(pid)
        except OSError:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
            return
        self._by_fd[fd] = pid

    def reap_fd(self, fd: int) -> None:
        """The process of pidfd ``fd`` ended: reap it."""
        pid = self._by_fd.pop(fd)
        os.close(fd)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)

    def forget(self, pid: int) -> None:
        """``pid`` was reaped elsewhere."""
        for fd, known in list(self._by_fd.items()):
            if known == pid:
                del self._by_fd[fd]
                os.close(fd)

    def forget_all(self) -> None:
        """Every one was reaped elsewhere."""
        for fd in self._by_fd:
            os.close(fd)
        self._by_fd.clear()


class Worker:
    """The worker's pytest plugin (registered by :func:`main`)."""

    def __init__(self, config: dict[str, Any]) -> None:
        self._config = config
        self._fd: int = config["fd"]
        self._stderr = os.dup(2)  # the sandbox's stderr, whatever pytest captures later
        self._in_fork = False
        self._keep = frozenset(config["keep"])
        self._exiting = _Exiting()

    @pytest.hookimpl(trylast=True)
    def pytest_configure(self, config: pytest.Config) -> None:
        _Quiet.restore()

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtestloop(self, session: pytest.Session) -> bool:
        items = {item.nodeid: item for item in session.items}
        factory = getattr(session.config, "_tmp_path_factory", None)
        if factory is not None:
            # Made once here, so that every fork's tmp_path lies below the same
            # base (a fork's own first use would empty it for the next one).
            factory.getbasetemp()
        # What collection built (pytest, the plugins, the test modules) is
        # shared with every fork copy-on-write; a garbage collection in a fork
        # would touch each of those objects and copy nearly every page of the
        # heap (some 20 ms a test). Frozen, the collector leaves them alone.
        gc.collect()
        gc.freeze()
        wire.send(self._fd, {"op": "ready", "count": len(items)})
        # Each unit's process is forked while the unit before it runs (the
        # spare), so that the fork and the new process's first page faults
        # are not paid between two tests; and the next unit starts once a
        # unit said it is done, while its exit (the teardown of its copy of
        # the address space) goes on beside it.
        spare = self._fork_unit(items)
        while True:
            current = spare
            current.tell(b"r")
            spare = self._fork_unit(items)
            status = current.wait(self._exiting)
            current.close()
            if not current.started:  # a test killed it before its turn: the next one takes the turn
                continue
            if status is None:  # said it is done: it is exiting, reaped once it is gone
                self._exiting.watch(current.pid)
            spare = self._end_the_others(spare, items)
            for path in ("/tmp", "/dev/shm", "/var/tmp"):
                _wipe(path, self._keep)
            code = current.code if status is None else os.waitstatus_to_exitcode(status)
            if code == _HOST_GONE:
                break
            try:
                wire.send(self._fd, {"op": "exit", "signal": -code} if code < 0 else {"op": "exit", "status": code})
            except wire.Closed:
                break
        # Nothing of the session's end is the worker's to do (the host writes
        # the summary, the JUnit XML and the cache): end here, and the
        # container's other processes (the spare) with it.
        sys.stdout.flush()
        os._exit(0)

    def _fork_unit(self, items: dict[str, pytest.Item]) -> _Unit:
        """Fork the process of a unit; it waits for :meth:`_Unit.tell` before it reads the host's socket."""
        go_r, go_w = os.pipe2(os.O_CLOEXEC)
        ack_r, ack_w = os.pipe2(os.O_CLOEXEC)
        pid = os.fork()
        if pid == 0:
            # The other units' pipes and pidfds: a test must not inherit them.
            for fd in (go_w, ack_r, *_Unit.open_fds, *self._exiting.fds):
                os.close(fd)
            _Unit.open_fds.clear()
            self._exiting = _Exiting()
            self._in_fork = True
            me = os.getpid()
            code = 1
            try:
                code = self._wait_for_turn(go_r, ack_w, items)
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                if os.getpid() == me:  # not a fork of the test's that came back here
                    with contextlib.suppress(OSError):
                        os.write(ack_w, b"f" + bytes([code & 0xFF]))
                os._exit(code)
        os.close(go_r)
        os.close(ack_w)
        os.set_blocking(ack_r, False)
        return _Unit(pid, go_w, ack_r)

    def _wait_for_turn(self, go: int, ack: int, items: dict[str, pytest.Item]) -> int:
        """The spare: end the others when PID 1 asks, run the unit when it is this one's turn."""
        while True:
            try:
                order = os.read(go, 1)
            except InterruptedError:
                continue
            if order == b"k":
                _kill_all_others()
                os.write(ack, b"d")
            elif order == b"r":
                os.close(go)
                os.write(ack, b"s")
                return self._run_unit(items)
            else:  # PID 1 is gone
                return _HOST_GONE

    def _end_the_others(self, spare: _Unit, items: dict[str, pytest.Item]) -> _Unit:
        """Kill every process of the container but PID 1, the spare and the exiting units, and reap them.

        The spare sends the SIGKILLs (``kill(-1)`` spares the sender and PID 1,
        and is atomic against forks: no leftover can escape it by forking).
        Returns the spare, or a new one if a test had killed it.
        """
        if os.getpid() != 1:
            return spare  # not a container's PID 1: kill(-1) would reach far beyond it
        if not _others(spare.pid, self._exiting.pids):
            return spare  # nothing left, and nothing can appear but by a fork of what is there
        if spare.tell(b"k") and spare.acked():
            while True:
                if not _others(spare.pid, self._exiting.pids):
                    return spare
                try:
                    pid, _ = os.waitpid(-1, 0)
                except ChildProcessError:
                    return spare
                self._exiting.forget(pid)
                if pid == spare.pid:  # killed by a leftover before the spare's SIGKILL reached it
                    spare.close()
                    break
        spare.close()
        _kill_all_others()
        while True:
            try:
                os.waitpid(-1, 0)
            except ChildProcessError:
                break
        self._exiting.forget_all()
        return self._fork_unit(items)

    def _run_unit(self, items: dict[str, pytest.Item]) -> int:
        """The fork: run tests as the host asks until the unit ends; the exit status."""
        reader = wire.Reader(self._fd)
        while True:
            try:
                message = reader.receive()
            except wire.Closed:
                return _HOST_GONE
            item = items.get(message["nodeid"])
            if item is None:
                wire.send(self._fd, {"op": "missing"})
                return 0
            following = message.get("next")
            nextitem = items.get(following) if following else None
            timeout = message.get("timeout")
            if timeout:
                # Where the test hangs, shown in the host's failure report
                # before the host kills the sandbox at the timeout.
                faulthandler.dump_traceback_later(max(timeout * 0.9, timeout - 0.5), file=self._stderr)
            item.ihook.pytest_runtest_protocol(item=item, nextitem=nextitem)
            faulthandler.cancel_dump_traceback_later()
            wire.send(self._fd, {"op": "done"})
            if nextitem is None:
                self._save_coverage()
                return 0

    def _save_coverage(self) -> None:
        """Write what coverage measured in this fork where the host gathers it."""
        if not self._config.get("coverage"):
            return
        try:
            import coverage
        except ImportError:
            return
        cov = coverage.Coverage.current()
        if cov is None:
            return
        cov.stop()
        # The worker's data file (COVERAGE_FILE, in that directory) is every
        # fork's: this fork's lines go to a file of its own there too.
        data = coverage.CoverageData(basename=os.environ["COVERAGE_FILE"], suffix=True)
        data.update(cov.get_data())
        data.write()

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if not self._in_fork:
            return
        config = self._config_of_session
        data = config.hook.pytest_report_to_serializable(config=config, report=report)
        wire.send(self._fd, {"op": "report", "data": data})

    def pytest_warning_recorded(
        self, warning_message: Any, when: str, nodeid: str, location: tuple[str, int, str] | None
    ) -> None:
        if not self._in_fork:
            return
        category = warning_message.category
        wire.send(
            self._fd,
            {
                "op": "warning",
                "message": str(warning_message.message),
                "category": f"{category.__module__}:{category.__qualname__}",
                "filename": warning_message.filename,
                "lineno": warning_message.lineno,
                "when": when,
                "nodeid": nodeid,
                "location": location,
            },
        )

    def pytest_sessionstart(self, session: pytest.Session) -> None:
        self._config_of_session = session.config


def main(argv: list[str]) -> int:
    """Run the worker with the JSON configuration ``argv[1]``."""
    global ACTIVE
    ACTIVE = True
    config = json.loads(argv[1])
    sys.path[:] = config["sys_path"]
    return int(pytest.main(config["args"], plugins=[_Quiet(), Worker(config)]))
