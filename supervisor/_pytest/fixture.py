"""The ``sandbox`` fixture: containers started from a test, all cleaned up when it ends."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

from .._result import Result
from .._spec import Spec


def _spec_of(spec: Spec | Sequence[str]) -> Spec:
    if isinstance(spec, Spec):
        return spec
    if isinstance(spec, str):
        raise TypeError("sandbox: pass a Spec or the command as a list of strings, not one string")
    return Spec(command=list(spec))


class SandboxFixture:
    """What the ``sandbox`` fixture gives a test.

    Sync tests call :meth:`run` and :meth:`start` (the containers run in an
    event loop of the fixture's own, in a thread); async tests (trio,
    pytest-trio, or anyio on either backend) ``await`` :meth:`run_async` in
    their own loop. Every container started through it is stopped (SIGTERM,
    the grace period, SIGKILL) and cleaned up when the test ends, passed or
    failed.
    """

    def __init__(self) -> None:
        self._host: Any = None
        self._started: list[Any] = []

    def _open(self) -> Any:
        if self._host is None:
            from .host import Host

            host = Host()
            host.open()
            self._host = host
        return self._host

    def run(self, spec: Spec | Sequence[str], **kwargs: Any) -> Result:
        """Run a container to its end, as :meth:`supervisor.Supervisor.run` does (same keywords).

        Args:
            spec: a :class:`~supervisor.Spec`, or a command (a list of
                strings) for the default Spec.
            kwargs: keywords of :meth:`supervisor.Supervisor.run`.

        Returns:
            its :class:`~supervisor.Result`.

        Raises:
            SetupError: the container failed before its payload ran.
            ContainerFailed: ``check`` (the default) and the payload did not exit 0.
        """
        host = self._open()
        result: Result = host.portal.call(functools.partial(host.supervisor.run, _spec_of(spec), **kwargs))
        return result

    def start(self, spec: Spec | Sequence[str], **kwargs: Any) -> Any:
        """Start a container and return its :class:`~supervisor.Container` once its payload runs.

        The container runs until it exits, :meth:`~supervisor.Container.kill`
        ends it, or the test ends (then it is stopped). Its streams
        (``stdout=PIPE``...) are async: read them through :meth:`call`.

        Args:
            spec: a :class:`~supervisor.Spec`, or a command.
            kwargs: keywords of :meth:`supervisor.Supervisor.run`.

        Raises:
            SetupError: the container failed before its payload ran.
        """
        host = self._open()
        future, container = host.portal.start_task(
            functools.partial(host.supervisor.run, _spec_of(spec), check=False, **kwargs)
        )
        self._started.append((future, container))
        return container

    def wait(self, container: Any) -> Result:
        """Wait for a started container's end; its result."""
        result: Result = self._open().portal.call(container.wait)
        return result

    def call(self, fn: Any, *args: Any) -> Any:
        """Call ``fn(*args)`` (async or not) in the fixture's event loop; its return value."""
        return self._open().portal.call(fn, *args)

    async def run_async(self, spec: Spec | Sequence[str], **kwargs: Any) -> Result:
        """:meth:`run`, in the test's own event loop (trio or asyncio).

        **Cancellation:** as :meth:`supervisor.Supervisor.run`: the container
        is stopped and cleaned up, then the cancellation propagates.
        """
        from .._api import run

        return await run(_spec_of(spec), **kwargs)

    def close(self) -> None:
        """Stop what still runs and close the loop. Idempotent."""
        host, self._host = self._host, None
        started, self._started = self._started, []
        if host is None:
            return
        try:
            for future, container in started:
                if not future.done():
                    host.portal.call(container.stop)
        finally:
            host.close()
