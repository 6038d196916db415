"""The host half of a sandbox: its container, its worker, and the tests it is sent.

A :class:`Host` is one per pytest process: a :class:`~supervisor.Supervisor`
open in an event loop of its own (an anyio blocking portal on trio, in a
thread), since pytest's own loop is synchronous. A :class:`Sandbox` is one
container running the worker (:mod:`.worker`) for one set of options, started
when the first test that needs it runs, and started again after a test ended
it (a timeout, an out-of-memory kill).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import importlib
import os
import signal
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from typing import Any

import pytest

from . import wire
from .options import SandboxOptions, to_mount

#: Bytes of the sandbox's output kept for a failure report.
TAIL_BYTES = 4096
#: Seconds a sandbox gets to end by itself once its socket is closed.
CLOSE_WAIT_S = 10.0
#: What the embedded default root shows of the host already (read-only).
_IN_DEFAULT_ROOT = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc")


class SandboxError(Exception):
    """A sandbox could not start, or ended before its worker was ready."""


@dataclasses.dataclass(frozen=True)
class Plan:
    """What every sandbox of this pytest process shares: its worker's command and binds."""

    args: tuple[str, ...]
    cwd: str
    sys_path: tuple[str, ...]
    basetemp: str
    project: tuple[str, ...]
    runtime: tuple[str, ...]
    coverage_file: str | None
    live: bool


def _under(path: str, parent: str) -> bool:
    return path == parent or path.startswith(parent.rstrip("/") + "/")


def runtime_paths() -> tuple[str, ...]:
    """The interpreter's paths a worker needs: ``sys.path``, the prefixes, the executable's folder."""
    paths = [p for p in sys.path if p]
    paths += [sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix]
    paths.append(os.path.dirname(os.path.realpath(sys.executable)))
    paths.append(os.path.dirname(os.path.abspath(sys.executable)))
    return tuple(dict.fromkeys(os.path.abspath(p) for p in paths))


def mounts_of(plan: Plan, options: SandboxOptions, rootless: bool) -> list[Any]:
    """The binds of a sandbox: what the worker needs, read-only, and the base temp dir, writable.

    A path inside another bound the same way is left out; a writable path
    inside a read-only one (or the other way round) is bound after it. As
    root every bind is id-mapped (host root's files stay the container root's
    own, without mapping host root), as far as the kernel allows.
    """
    from .._mount import Mount
    from .._protocol import MAX_IDMAPPED

    wanted: dict[str, tuple[str, bool]] = {}  # target -> (source, read_only)

    def add(source: str, target: str, read_only: bool) -> None:
        if not os.path.exists(source) or target == "/":
            return
        if read_only and any(_under(target, d) for d in _IN_DEFAULT_ROOT):
            return
        wanted.setdefault(target, (source, read_only))

    add(plan.basetemp, plan.basetemp, False)
    for text in options.binds:
        m = to_mount(text)
        add(m.source, m.target, m.read_only)
    for path in plan.project:
        add(path, path, options.read_only)
    for path in plan.runtime:
        add(path, path, True)
    kept: list[tuple[str, str, bool]] = []
    for target in sorted(wanted, key=lambda t: (t.count("/"), t)):
        source, read_only = wanted[target]
        parents = [k for k in kept if _under(target, k[0])]
        if parents:
            p_target, p_source, p_read_only = max(parents, key=lambda k: len(k[0]))
            same_files = os.path.normpath(os.path.join(p_source, os.path.relpath(target, p_target))) == source
            if p_read_only == read_only and same_files:
                continue  # already there, as it should be, through the parent's bind
        kept.append((target, source, read_only))
    room = 0 if rootless else MAX_IDMAPPED
    mounts = []
    for target, source, read_only in kept:
        idmap = True if room > 0 else None
        room -= 1
        mounts.append(Mount(source, target, read_only=read_only, idmap=idmap))
    return mounts


def _spec(plan: Plan, options: SandboxOptions, tag: str) -> Any:
    import json

    from .._limits import Limits, parse_size
    from .._privileges import is_rootless, subid_grant
    from .._spec import Spec

    worker_config = {
        "fd": wire.WORKER_FD,
        "sys_path": list(plan.sys_path),
        "args": [*plan.args, f"--basetemp={os.path.join(plan.basetemp, 'sandbox-' + tag)}"],
        "keep": [plan.basetemp],
        "coverage": plan.coverage_file is not None,
    }
    limits = None
    if options.memory or options.pids or options.cpus:
        limits = Limits(
            memory_bytes=parse_size(options.memory) if options.memory else None,
            pids=options.pids,
            cpus=options.cpus,
        )
    env = dict(os.environ)
    # Hypothesis keeps its examples in the project's directory, read-only here.
    env.setdefault("HYPOTHESIS_STORAGE_DIRECTORY", os.path.join(plan.basetemp, "sandbox-hypothesis"))
    if plan.coverage_file is not None:
        env["COVERAGE_FILE"] = plan.coverage_file
    rootless = is_rootless()
    # The tests run as the caller's uid, as on the host. As root that is
    # container root, mapped to an unprivileged host range (the binds are
    # id-mapped back). Rootless, the caller's own id is mapped to itself;
    # with subordinate ids granted, container ids other than 0 are those
    # (strangers to the caller's files), so the tests run as container root,
    # which is the caller's own id (as root there is no grant).
    uid = 0 if subid_grant() is not None else os.getuid()
    return Spec(
        command=[sys.executable, "-P", "-m", "supervisor._pytest", json.dumps(worker_config)],
        uid=uid,
        mounts=mounts_of(plan, options, rootless),
        env=env,
        cwd=plan.cwd,
        network=options.network,
        limits=limits,
        grace_period=1.0,
    )


class Host:
    """The event loop and the :class:`~supervisor.Supervisor` every sandbox of this process uses."""

    def __init__(self) -> None:
        self._stack: contextlib.ExitStack | None = None
        self.portal: Any = None
        self.supervisor: Any = None

    def open(self) -> None:
        """Start the loop's thread and open the supervisor (once)."""
        if self._stack is not None:
            return
        from anyio.from_thread import start_blocking_portal

        from .._api import Supervisor

        stack = contextlib.ExitStack()
        try:
            self.portal = stack.enter_context(start_blocking_portal(backend="trio"))
            self.supervisor = stack.enter_context(self.portal.wrap_async_context_manager(Supervisor()))
        except BaseException:
            stack.close()
            raise
        self._stack = stack

    def close(self) -> None:
        """Close the supervisor (which stops what still runs) and end the thread. Idempotent."""
        stack, self._stack = self._stack, None
        if stack is not None:
            stack.close()


class Sandbox:
    """One container running a worker, for one set of options."""

    def __init__(self, host: Host, plan: Plan, options: SandboxOptions, tag: str) -> None:
        self._host = host
        self._plan = plan
        self.options = options
        self._tag = tag
        self._sock: Any = None
        self._reader: wire.Reader | None = None
        self._future: Future[Any] | None = None
        self._container: Any = None
        self._pending_exit = False
        self._busy = False
        self._tail = bytearray()
        self._output_total = 0
        self._lock = threading.Lock()
        self._broken: str | None = None  # why it could not start: every later test fails at once
        self._ready = False  # its worker collected the tests
        self._launch_mark = 0

    @property
    def alive(self) -> bool:
        return self._reader is not None and self._ready

    # -- output ------------------------------------------------------------

    def _keep_output(self, data: bytes) -> None:
        with self._lock:
            self._tail += data
            self._output_total += len(data)
            if len(self._tail) > TAIL_BYTES * 16:
                del self._tail[: len(self._tail) - TAIL_BYTES * 8]

    def output_mark(self) -> int:
        """A mark of the output so far (for :meth:`output_since`)."""
        with self._lock:
            return self._output_total

    def output_since(self, mark: int) -> str:
        """What the sandbox printed since ``mark``: its first and last :data:`TAIL_BYTES` / 2.

        The head holds a crash's or a timeout's innermost frames (faulthandler
        prints them first), the tail what came last.
        """
        with self._lock:
            n = min(self._output_total - mark, len(self._tail))
            data = bytes(self._tail[len(self._tail) - n :]) if n > 0 else b""
        if len(data) > TAIL_BYTES:
            half = TAIL_BYTES // 2
            data = data[:half] + f"\n[... {len(data) - 2 * half} bytes ...]\n".encode() + data[-half:]
        return data.decode(errors="replace")

    async def _relay(self, stream: Any, fd: int) -> None:
        import anyio

        try:
            async for chunk in stream:
                self._keep_output(chunk)
                if self._plan.live:
                    with contextlib.suppress(OSError):
                        os.write(fd, chunk)
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            pass

    async def _serve(self, spec: Any, fd: int, *, task_status: Any) -> Any:
        import anyio

        from .._api import PIPE

        sup = self._host.supervisor
        async with anyio.create_task_group() as tg:
            run = functools.partial(
                sup.run, spec, check=False, capture_output=False, stdout=PIPE, stderr=PIPE, pass_fds=[fd]
            )
            container = await tg.start(run)
            tg.start_soon(self._relay, container.stdout, 1)
            tg.start_soon(self._relay, container.stderr, 2)
            task_status.started(container)
        return await container.wait()

    # -- life --------------------------------------------------------------

    def launch(self) -> None:
        """Start the container, not waiting for its worker to collect the tests. Idempotent.

        The worker then starts and collects beside the caller; :meth:`start`
        waits for it. A failure is kept for :meth:`start` to raise.
        """
        if self._reader is not None or self._broken is not None:
            return
        try:
            self._launch()
        except SandboxError as exc:
            self._broken = str(exc)

    def start(self) -> None:
        """Start the container (unless launched) and wait until its worker collected the tests.

        Raises:
            SandboxError: the container could not start, or its worker ended first.
        """
        if self._broken is not None:
            raise SandboxError(self._broken)
        try:
            if self._reader is None:
                self._launch()
            self._wait_ready()
        except SandboxError as exc:
            self._broken = str(exc)
            raise

    def _launch(self) -> None:
        self._host.open()
        self._launch_mark = self.output_mark()
        spec = _spec(self._plan, self.options, self._tag)
        host_end, worker_end = wire.socketpair()
        try:
            self._future, self._container = self._host.portal.start_task(
                self._serve, spec, worker_end.fileno(), name=f"sandbox {self._tag}"
            )
        except Exception as exc:
            host_end.close()
            raise SandboxError(f"sandbox: the sandbox could not start: {_cause(exc)}") from exc
        finally:
            worker_end.close()
        self._sock = host_end
        self._reader = wire.Reader(host_end.fileno())
        self._pending_exit = False

    def _wait_ready(self) -> None:
        assert self._reader is not None
        try:
            message = self._reader.receive()
        except wire.Closed:
            why = self._ended()
            raise SandboxError(
                self._failure(f"its pytest ended before it collected the tests: {why}", self._launch_mark)
            ) from None
        if message.get("op") != "ready":
            raise SandboxError(f"the sandbox's pytest said {message!r} first")
        self._ready = True

    def _result(self, timeout: float = CLOSE_WAIT_S) -> Any:
        future = self._future
        if future is None:
            return None
        try:
            return future.result(timeout=timeout)
        except Exception:  # noqa: BLE001 - how the run failed, the missing result says
            return None

    def _ended(self) -> str:
        """The sandbox ended: say how (from its container's result), and forget it."""
        result = self._result()
        self._forget()
        if result is None:
            return "it ended"
        if result.oom_killed:
            return f"OOM-killed (limit {self.options.memory})"
        if result.signal is not None:
            return f"killed by signal {result.signal} ({signal.Signals(result.signal).name})"
        return f"exit status {result.exit_code}" + (f": {result.error}" if result.error else "")

    def _forget(self) -> None:
        if self._sock is not None:
            self._sock.close()
        self._sock = None
        self._reader = None
        self._ready = False
        self._container = None
        self._future = None
        self._busy = False

    def kill(self) -> None:
        """SIGKILL the container (every process of it) and wait until it is gone."""
        container = self._container
        if container is not None:
            with contextlib.suppress(Exception):
                self._host.portal.call(container.kill)
        self._result()
        self._forget()

    def close(self) -> None:
        """End the sandbox: at once if a test is running, else by closing its socket. Idempotent."""
        if self._busy:
            self.kill()
            return
        if self._sock is not None:
            self._sock.close()
            self._sock = None
            if self._result() is None:
                self.kill()
        self._forget()

    # -- tests -------------------------------------------------------------

    def run(
        self,
        item: pytest.Item,
        following: str | None,
        timeout: float | None,
        on_report: Callable[[dict[str, Any]], None],
        on_warning: Callable[[dict[str, Any]], None],
    ) -> Iterator[tuple[str, str]]:
        """Run ``item`` in the sandbox; yields ``(when, failure)`` for a test that sent no full report.

        ``on_report`` gets each serialised report as it comes, ``on_warning``
        each warning. Then, if the test's process never said it was done,
        this yields once: the phase the report is missing for and what
        happened (a crash, a timeout, the sandbox's end), after which the
        sandbox is started again for the next test if it had ended.
        """
        if not self.alive:
            self.start()
        reader, sock = self._reader, self._sock
        assert reader is not None
        assert sock is not None
        mark = self.output_mark()
        started = time.monotonic()
        deadline = started + timeout if timeout else None
        seen: list[str] = []
        self._busy = True
        try:
            wire.send(sock.fileno(), {"op": "run", "nodeid": item.nodeid, "next": following, "timeout": timeout})
        except wire.Closed:
            pass
        while True:
            try:
                message = reader.receive(deadline)
            except wire.Timeout:
                self.kill()
                yield self._missing(seen), self._failure(f"timed out after {timeout:g} s", mark)
                return
            except wire.Closed:
                why = self._ended()
                yield self._missing(seen), self._failure(f"the sandbox ended: {why}", mark)
                return
            op = message.get("op")
            if op == "report":
                seen.append(message["data"].get("when", ""))
                on_report(message["data"])
            elif op == "warning":
                on_warning(message)
            elif op == "done":
                self._busy = False
                self._pending_exit = following is None
                return
            elif op == "missing":
                self._busy = False
                self._pending_exit = True
                yield "setup", "the sandbox's pytest did not collect this test (collection differs in the sandbox)"
                return
            elif op == "exit" and self._pending_exit:
                self._pending_exit = False
            elif op == "exit":
                self._busy = False
                if "signal" in message:
                    sig = message["signal"]
                    what = f"the test's process was killed by signal {sig} ({signal.Signals(sig).name})"
                else:
                    what = f"the test's process exited with status {message.get('status')} before its test ended"
                yield self._missing(seen), self._failure(what, mark)
                return

    @staticmethod
    def _missing(seen: list[str]) -> str:
        for when in ("setup", "call", "teardown"):
            if when not in seen:
                return when
        return "teardown"

    def _failure(self, what: str, mark: int) -> str:
        tail = self.output_since(mark).rstrip()
        text = f"sandbox: {what}"
        if tail:
            text += f"\n\nthe sandbox's output (tail):\n{tail}"
        return text


def _cause(exc: BaseException) -> str:
    """The message of ``exc``, or of the one exception an exception group holds."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return str(exc)


def warning_message(message: dict[str, Any]) -> warnings.WarningMessage:
    """The :class:`warnings.WarningMessage` of a forwarded warning."""
    category: type[Warning] = UserWarning
    module, _, name = str(message.get("category", "")).partition(":")
    with contextlib.suppress(Exception):
        obj: Any = importlib.import_module(module)
        for part in name.split("."):
            obj = getattr(obj, part)
        if isinstance(obj, type) and issubclass(obj, Warning):
            category = obj
    text = message.get("message", "")
    try:
        instance = category(text)
    except Exception:  # noqa: BLE001 - a warning class of the test's that wants other arguments
        category, instance = UserWarning, UserWarning(text)
    return warnings.WarningMessage(instance, category, message.get("filename", ""), message.get("lineno", 0))
