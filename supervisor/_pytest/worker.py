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
test cost little more than an in-process one (``docs/design.rst``).

Between two units the worker, PID 1 of the container, kills every other
process in it (nothing a test started outlives its unit) and empties
``/tmp`` (no unit sees another's files there), leaving the binds alone.
"""

from __future__ import annotations

import errno
import faulthandler
import json
import os
import signal
import stat
import sys
from typing import Any

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


def _end_the_others() -> None:
    """Kill every process of the container but this one (PID 1), and reap them."""
    if os.getpid() != 1:
        return  # not a container's PID 1: kill(-1) would reach far beyond it
    try:
        os.kill(-1, signal.SIGKILL)
    except ProcessLookupError:
        pass
    while True:
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            return


class Worker:
    """The worker's pytest plugin (registered by :func:`main`)."""

    def __init__(self, config: dict[str, Any]) -> None:
        self._config = config
        self._fd: int = config["fd"]
        self._stderr = os.dup(2)  # the sandbox's stderr, whatever pytest captures later
        self._in_fork = False
        self._keep = frozenset(config["keep"])

    @pytest.hookimpl(trylast=True)
    def pytest_configure(self, config: pytest.Config) -> None:
        # The host's terminal shows the session; this pytest prints nothing of its own.
        reporter = config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            config.pluginmanager.unregister(reporter)

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtestloop(self, session: pytest.Session) -> bool:
        items = {item.nodeid: item for item in session.items}
        factory = getattr(session.config, "_tmp_path_factory", None)
        if factory is not None:
            # Made once here, so that every fork's tmp_path lies below the same
            # base (a fork's own first use would empty it for the next one).
            factory.getbasetemp()
        wire.send(self._fd, {"op": "ready", "count": len(items)})
        while True:
            pid = os.fork()
            if pid == 0:
                self._in_fork = True
                code = 1
                try:
                    code = self._run_unit(items)
                finally:
                    sys.stdout.flush()
                    sys.stderr.flush()
                    os._exit(code)
            _, status = os.waitpid(pid, 0)
            _end_the_others()
            for path in ("/tmp", "/dev/shm", "/var/tmp"):
                _wipe(path, self._keep)
            if os.WIFEXITED(status) and os.WEXITSTATUS(status) == _HOST_GONE:
                break
            message: dict[str, Any] = {"op": "exit"}
            if os.WIFSIGNALED(status):
                message["signal"] = os.WTERMSIG(status)
            else:
                message["status"] = os.WEXITSTATUS(status)
            try:
                wire.send(self._fd, message)
            except wire.Closed:
                break
        # Nothing of the session's end is the worker's to do (the host writes
        # the summary, the JUnit XML and the cache): end here.
        sys.stdout.flush()
        os._exit(0)

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
    return int(pytest.main(config["args"], plugins=[Worker(config)]))
