"""The plugin's hooks: ``--sandbox``, the ini options, ``@pytest.mark.sandbox``, the ``sandbox`` fixture.

Loaded through the ``pytest11`` entry point ``supervisor`` (``-p no:supervisor``
unloads it). It costs one hook call per test until a test asks for a
sandbox; only then does it import the supervisor's machinery and start one.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
from collections.abc import Iterator, Sequence
from typing import Any, Literal

import pytest

from .options import OPTIONS, SCOPES, OptionError, SandboxOptions

_PLUGIN_NAME = "supervisor-sandbox"


class _SandboxAction(argparse.Action):
    """``--sandbox[=test|module|session|off]``; ``--sandbox PATH`` leaves PATH a test path."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        value = values if isinstance(values, str) else None
        if value is None or value in SCOPES or value == "off":
            setattr(namespace, self.dest, value or "test")
            return
        setattr(namespace, self.dest, "test")
        stray = list(getattr(namespace, "sandbox_paths", None) or [])
        stray.append(value)
        namespace.sandbox_paths = stray


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("sandbox", "run tests in sandboxes (supervisor)")
    group.addoption(
        "--sandbox",
        action=_SandboxAction,
        nargs="?",
        dest="sandbox",
        default=None,
        metavar="SCOPE",
        help="run every test in a sandbox: one per test (the default), module or session; off: none",
    )
    parser.addini(
        "sandbox", "run every test in a sandbox: test, module, session (empty: only marked tests)", default=""
    )
    for option in OPTIONS:
        default: Any = option.default
        if option.ini_type == "string":
            # "" for none: pytest 7 gives [] for a string option without a default.
            default = "" if default is None else str(default)
        if option.ini_type == "linelist":
            default = list(default)
        parser.addini(option.ini, f"sandboxes: {option.help}", type=option.ini_type, default=default)  # type: ignore[arg-type]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "sandbox(**options): run this test in a sandbox, with these options "
        "(network, memory, pids, cpus, timeout, read_only, binds)",
    )
    worker = sys.modules.get("supervisor._pytest.worker")
    if worker is not None and getattr(worker, "ACTIVE", False):
        return  # a sandbox's own pytest: the host does the sandboxing
    scope = config.getoption("sandbox") or config.getini("sandbox") or None
    if scope == "off":
        scope = None
    if scope is not None and scope not in SCOPES:
        raise pytest.UsageError(f"sandbox = {scope!r} in the ini file: not one of {', '.join(SCOPES)} (or empty)")
    stray = getattr(config.option, "sandbox_paths", None)
    if stray:
        if config.args_source == pytest.Config.ArgsSource.ARGS:
            config.args.extend(stray)
        else:
            config.args[:] = stray
    try:
        base = SandboxOptions().replace({o.name: config.getini(o.ini) for o in OPTIONS}, "the ini file")
    except OptionError as exc:
        raise pytest.UsageError(str(exc)) from None
    if config.getoption("usepdb", False) or config.getoption("trace", False):
        if scope is not None:
            config.issue_config_time_warning(
                pytest.PytestConfigWarning("--pdb/--trace: the tests run in-process, without sandboxes, in this run"),
                stacklevel=2,
            )
        return
    config.pluginmanager.register(Sandboxing(config, scope, base), _PLUGIN_NAME)


class Sandboxing:
    """Runs the tests that ask for it in sandboxes (registered by :func:`pytest_configure`)."""

    def __init__(self, config: pytest.Config, scope: str | None, base: SandboxOptions) -> None:
        self._config = config
        self._scope = scope
        self._base = base
        self._host: Any = None
        self._plan: Any = None
        self._sandboxes: dict[SandboxOptions, Any] = {}
        self._old_sigterm: Any = None

    # -- which tests, which options ------------------------------------------

    def _wanted(self, item: pytest.Item) -> bool:
        return self._scope is not None or item.get_closest_marker("sandbox") is not None

    def _options(self, item: pytest.Item) -> SandboxOptions:
        options = self._base
        for mark in reversed(list(item.iter_markers("sandbox"))):
            if mark.args:
                raise OptionError(f"@pytest.mark.sandbox on {item.nodeid}: options are keywords only ({mark.args!r})")
            options = options.replace(mark.kwargs, f"@pytest.mark.sandbox on {item.nodeid}")
        return options

    def _following(self, item: pytest.Item, nextitem: pytest.Item | None, options: SandboxOptions) -> str | None:
        """The next test of the same sandbox unit, if any."""
        scope = self._scope or "test"
        if nextitem is None or scope == "test" or not self._wanted(nextitem):
            return None
        try:
            if self._options(nextitem).container_key != options.container_key:
                return None
        except OptionError:
            return None
        if scope == "module" and nextitem.path != item.path:
            return None
        return nextitem.nodeid

    # -- the sandboxes -------------------------------------------------------

    def _plan_of(self) -> Any:
        if self._plan is None:
            from .host import Plan, runtime_paths

            config = self._config
            basetemp = _basetemp(config)
            coverage_file = None
            cov = sys.modules["coverage"].Coverage.current() if "coverage" in sys.modules else None
            if cov is not None:
                # The sandboxes' coverage data is written below the base temp
                # dir, and moved beside the host's data file at the end.
                coverage_dir = os.path.join(basetemp, "sandbox-coverage")
                os.makedirs(coverage_dir, exist_ok=True)
                coverage_file = os.path.join(coverage_dir, os.path.basename(cov.config.data_file))
            project = [str(config.rootpath), str(config.invocation_params.dir)]
            if config.inipath is not None:
                project.append(str(config.inipath.parent))
            self._plan = Plan(
                args=tuple(_worker_args(config)),
                cwd=str(config.invocation_params.dir),
                sys_path=tuple(sys.path),
                basetemp=basetemp,
                project=tuple(dict.fromkeys(project)),
                runtime=runtime_paths(),
                coverage_file=coverage_file,
                live=config.getoption("capture") == "no",
            )
        return self._plan

    def _sandbox(self, options: SandboxOptions) -> Any:
        key = options.container_key
        sandbox = self._sandboxes.get(key)
        if sandbox is None:
            from .host import Host, Sandbox

            if self._host is None:
                self._host = Host()
                self._catch_sigterm()
            worker = getattr(self._config, "workerinput", {}).get("workerid", "main")
            sandbox = Sandbox(self._host, self._plan_of(), key, f"{worker}-{len(self._sandboxes)}")
            self._sandboxes[key] = sandbox
        return sandbox

    def _catch_sigterm(self) -> None:
        """SIGTERM stops the run as Ctrl-C does: every sandbox stopped, the summary written."""
        if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
            return

        def stop(signum: int, frame: object) -> None:
            raise KeyboardInterrupt("SIGTERM")

        try:
            self._old_sigterm = signal.signal(signal.SIGTERM, stop)
        except ValueError:  # not the main thread
            self._old_sigterm = None

    def close(self) -> None:
        """Stop every sandbox and the supervisor. Idempotent."""
        sandboxes, self._sandboxes = list(self._sandboxes.values()), {}
        try:
            for sandbox in sandboxes:
                sandbox.close()
        finally:
            if self._host is not None:
                self._host.close()
                self._host = None
            if self._old_sigterm is not None:
                signal.signal(signal.SIGTERM, self._old_sigterm)
                self._old_sigterm = None
        self._gather_coverage()

    def _gather_coverage(self) -> None:
        """Move what coverage measured in the sandboxes next to the data file pytest-cov combines."""
        plan = self._plan
        if plan is None or plan.coverage_file is None:
            return
        cov = sys.modules["coverage"].Coverage.current()
        if cov is None:
            return
        source = os.path.dirname(plan.coverage_file)
        target = os.path.dirname(os.path.abspath(cov.config.data_file))
        prefix = os.path.basename(plan.coverage_file) + "."
        for name in os.listdir(source):
            if name.startswith(prefix):
                os.replace(os.path.join(source, name), os.path.join(target, name))

    # -- hooks ---------------------------------------------------------------

    @pytest.hookimpl(tryfirst=True)
    def pytest_collection(self, session: pytest.Session) -> None:
        """With ``--sandbox``, start the sandbox of the default options now: its
        pytest starts and collects beside this one's collection."""
        config = self._config
        if self._scope is None or config.option.collectonly:
            return
        if not hasattr(config, "workerinput") and config.pluginmanager.has_plugin("dsession"):
            return  # pytest-xdist's controller: its workers run the tests
        self._sandbox(self._base).launch()

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_protocol(self, item: pytest.Item, nextitem: pytest.Item | None) -> bool | None:
        if not self._wanted(item):
            return None
        ihook = item.ihook
        ihook.pytest_runtest_logstart(nodeid=item.nodeid, location=item.location)
        try:
            options = self._options(item)
        except OptionError as exc:
            _emit_failure(item, "setup", str(exc))
        else:
            self._run(item, nextitem, options)
        ihook.pytest_runtest_logfinish(nodeid=item.nodeid, location=item.location)
        return True

    def _run(self, item: pytest.Item, nextitem: pytest.Item | None, options: SandboxOptions) -> None:
        from .host import SandboxError, warning_message

        config = self._config

        def on_report(data: dict[str, Any]) -> None:
            _tuples_again(data)
            report = config.hook.pytest_report_from_serializable(config=config, data=data)
            item.ihook.pytest_runtest_logreport(report=report)

        def on_warning(message: dict[str, Any]) -> None:
            config.hook.pytest_warning_recorded.call_historic(
                kwargs={
                    "warning_message": warning_message(message),
                    "when": message.get("when", "runtest"),
                    "nodeid": message.get("nodeid", item.nodeid),
                    "location": tuple(message["location"]) if message.get("location") else None,
                }
            )

        sandbox = self._sandbox(options)
        try:
            for when, text in sandbox.run(
                item, self._following(item, nextitem, options), options.timeout, on_report, on_warning
            ):
                _emit_failure(item, when, text)
        except SandboxError as exc:
            _emit_failure(item, "setup", str(exc))

    @pytest.hookimpl(hookwrapper=True, trylast=True)
    def pytest_runtestloop(self, session: pytest.Session) -> Iterator[None]:
        try:
            yield
        finally:
            # Inside pytest-cov's own wrapper: its combine sees the sandboxes' data.
            self.close()

    def pytest_unconfigure(self, config: pytest.Config) -> None:
        self.close()


def _tuples_again(data: dict[str, Any]) -> None:
    """Give a serialised report back the tuples JSON made lists (a skip's longrepr, locations)."""
    for key in ("location", "longrepr"):
        if isinstance(data.get(key), list):
            data[key] = tuple(data[key])
    for key in ("sections", "user_properties"):
        if isinstance(data.get(key), list):
            data[key] = [tuple(x) if isinstance(x, list) else x for x in data[key]]


def _emit_failure(item: pytest.Item, when: str, text: str) -> None:
    """Report that ``item`` failed in phase ``when`` (and the phases after it, as pytest does)."""
    keywords: dict[str, Literal[1]] = dict.fromkeys(item.keywords, 1)
    phase: Literal["setup", "call", "teardown"] = (
        "setup" if when == "setup" else "call" if when == "call" else "teardown"
    )
    item.ihook.pytest_runtest_logreport(
        report=pytest.TestReport(item.nodeid, item.location, keywords, "failed", text, phase)
    )
    if phase != "teardown":
        item.ihook.pytest_runtest_logreport(
            report=pytest.TestReport(item.nodeid, item.location, keywords, "passed", None, "teardown")
        )


def _basetemp(config: pytest.Config) -> str:
    """pytest's base temp dir of this session, made now."""
    factory = getattr(config, "_tmp_path_factory", None)
    if factory is not None:
        return str(factory.getbasetemp())
    return tempfile.mkdtemp(prefix="pytest-sandbox-")


def _worker_args(config: pytest.Config) -> list[str]:
    """The arguments of this pytest, for the worker's (without ``--sandbox``)."""
    workerinput = getattr(config, "workerinput", None)
    if workerinput is not None and "mainargv" in workerinput:
        raw = list(workerinput["mainargv"][1:])  # a pytest-xdist worker: the controller's command line
    else:
        raw = [str(a) for a in config.invocation_params.args]
    args: list[str] = []
    skip = False
    for i, arg in enumerate(raw):
        if skip:
            skip = False
            continue
        if arg == "--sandbox":
            following = raw[i + 1] if i + 1 < len(raw) else None
            skip = following in (*SCOPES, "off")
            continue
        if arg.startswith("--sandbox="):
            continue
        args.append(arg)
    if config.pluginmanager.hasplugin("xdist"):
        args += ["-n", "0"]
    return args


@pytest.fixture
def sandbox() -> Iterator[Any]:
    """Start containers from a test; every one of them is stopped and cleaned up when the test ends.

    See :class:`supervisor._pytest.fixture.SandboxFixture`.
    """
    from .fixture import SandboxFixture

    fixture = SandboxFixture()
    try:
        yield fixture
    finally:
        fixture.close()
