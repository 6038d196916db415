"""``supervisor run-many``: many containers, live progress, a summary table.

Part of the thin CLI: it uses only the public API (``Supervisor``, ``Spec``,
``sup.events()``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (3 ms for a command line)
if TYPE_CHECKING:
    from typing import Any, NoReturn


if TYPE_CHECKING:
    from . import Event, Result, Spec

SpecBuilder = Callable[[argparse.ArgumentParser, argparse.Namespace], "Spec"]

#: Spec fields whose flag has another name or form in a specs file entry.
_LIMIT_FLAGS = {
    "memory_bytes": "--memory",
    "memory_swap_bytes": "--memory-swap",
    "cpus": "--cpus",
    "cpu_weight": "--cpu-weight",
    "pids": "--pids-limit",
}
#: The most containers one run-many starts (their results are kept for the summary).
MAX_CONTAINERS = 1_000_000
#: Flags that are the whole run's, set on the command line, not per entry.
_RUN_ONLY = {"timeout": "--timeout", "preserve_fds": "--preserve-fds"}


class _EntryParser(argparse.ArgumentParser):
    """``run``'s flags for one specs file entry: an error is the entry's, not an exit."""

    def error(self, message: str) -> NoReturn:
        raise ValueError(message)


def _entry_parser() -> tuple[argparse.ArgumentParser, dict[str, argparse.Action]]:
    """A parser with ``run``'s container flags, and each flag's action by key
    (its long name, ``-`` or ``_`` alike)."""
    from ._cli import _add_container_options, _Formatter

    parser = _EntryParser(prog="entry", add_help=False, exit_on_error=False, formatter_class=_Formatter)
    _add_container_options(parser)
    parser.add_argument("cmd", nargs=argparse.REMAINDER)
    flags: dict[str, argparse.Action] = {}
    for action in parser._actions:  # argparse has no public list of its actions
        for option in action.option_strings:
            if option.startswith("--"):
                flags[option[2:].replace("-", "_")] = action
    return parser, flags


def _mount_text(item: Any) -> str:
    """A ``mounts`` item (``"SRC:DST[:OPTS]"`` or a :class:`Mount`'s fields) as ``-v`` takes it."""
    if isinstance(item, str):
        return item
    if not isinstance(item, dict):
        raise ValueError(f"mounts: {item!r} is neither SRC:DST[:OPTIONS] nor a table of Mount's fields")
    from . import Mount

    m = Mount(**item)
    options = ["ro" if m.read_only else "rw"] + ([] if m.idmap is None else ["idmap" if m.idmap else "noidmap"])
    return f"{m.source}:{m.target}:{','.join(options)}"


def _rlimit_text(name: str, value: Any) -> str:
    """An ``rlimits`` table entry (``[soft, hard]`` or one number) as ``--ulimit`` takes it."""
    if isinstance(value, (list, tuple)):
        if len(value) != 2:
            raise ValueError(f"rlimits.{name}: give [soft, hard] or one number, not {value!r}")
        return f"{name}={value[0]}:{value[1]}"
    return f"{name}={value}"


def _entry_argv(entry: dict[str, Any], flags: dict[str, argparse.Action]) -> list[str]:
    """The ``run`` flags that say what a specs file entry says.

    Keys are ``run``'s long flags (``memory``, ``pids_limit``, ``user``,
    ``volume``, ``env_file``...) or :class:`supervisor.Spec`'s fields
    (``cwd``, ``env`` as a table, ``mounts``, ``limits`` and ``rlimits`` as
    tables, ``time_offsets``, ``tmpfs``...), which are turned into those flags.

    Raises:
        ValueError: an unknown key, or a value of the wrong shape.
    """
    argv: list[str] = []
    command: Any = None
    for key, value in entry.items():
        if key == "command":
            command = value
            continue
        pairs: list[tuple[str, Any]]
        if key == "cwd":
            pairs = [("--workdir", value)]
        elif key == "mounts":
            pairs = [("--volume", _mount_text(m)) for m in value]
        elif key in ("env", "tmpfs") and isinstance(value, dict):
            if not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
                raise ValueError(f"{key}: keys and values must be strings")
            sep = "=" if key == "env" else ":"
            pairs = [(f"--{key}", f"{k}{sep}{v}" if v != "" or key == "env" else k) for k, v in value.items()]
        elif key == "limits" and isinstance(value, dict):
            unknown = set(value) - set(_LIMIT_FLAGS)
            if unknown:
                raise ValueError(f"limits: unknown keys {sorted(unknown)} (known: {', '.join(_LIMIT_FLAGS)})")
            pairs = [(_LIMIT_FLAGS[k], v) for k, v in value.items() if v is not None]
        elif key == "rlimits" and isinstance(value, dict):
            pairs = [("--ulimit", _rlimit_text(k, v)) for k, v in value.items()]
        elif key == "time_offsets" and isinstance(value, dict):
            pairs = [("--time-offset", f"{k}={v}") for k, v in value.items()]
        elif key in _RUN_ONLY:
            raise ValueError(f"{key} is the whole run's: give {_RUN_ONLY[key]} on the command line")
        elif key in flags:
            action = flags[key]
            option = next(o for o in action.option_strings if o.startswith("--"))
            if action.nargs == 0:  # a switch
                if not isinstance(value, bool):
                    raise ValueError(f"{key}: give true or false, not {value!r}")
                pairs = [(option, None)] if value else []
            elif isinstance(value, list):
                if not isinstance(action.default, list):  # the repeatable flags start from []
                    raise ValueError(f"{key}: give one value, not a list")
                pairs = [(option, v) for v in value]
            else:
                pairs = [(option, value)]
        else:
            raise ValueError(f"unknown key {key!r} (keys are run's long flags or Spec's fields)")
        for option, v in pairs:
            argv += [option] if v is None else [f"{option}={v}"]
    if isinstance(command, str):
        argv += [f"--command={command}"]
    elif isinstance(command, list) and all(isinstance(a, str) for a in command):
        argv += ["--", *command]
    elif command is not None:
        raise ValueError("command: give a list of strings or a shell-like string")
    return argv


def load_specs(path: str, build: SpecBuilder) -> list[Spec]:
    """Read a TOML (``[[container]]`` tables) or JSON (a list) file of specs.

    An entry's keys are ``run``'s own flags by their long names (``memory``,
    ``pids_limit``, ``user``, ``volume``, ``tmpfs``...), with the same values as
    on the command line (a list for a repeatable flag, true for a switch), or
    :class:`supervisor.Spec`'s fields (``cwd``, ``env`` and ``limits`` as
    tables, ``mounts``...); ``command`` is a list or a shell-like string, and
    ``count`` repeats an entry. Each entry is parsed by ``run``'s own parser.

    Raises:
        ValueError: unreadable file, unknown keys or bad values (naming them).
    """
    with open(path, "rb") as f:
        raw = f.read()
    entries: Any
    if path.endswith(".toml"):
        import tomllib

        entries = tomllib.loads(raw.decode()).get("container", [])
    else:
        entries = json.loads(raw)
    if not isinstance(entries, list) or not entries:
        raise ValueError(f"{path}: expected a non-empty list of containers")
    parser, flags = _entry_parser()
    specs = []
    for i, item in enumerate(entries):
        if not isinstance(item, dict):
            raise ValueError(f"{path}: entry {i} is not a table/object")
        entry = dict(item)
        count = entry.pop("count", 1)
        if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_CONTAINERS:
            raise ValueError(f"{path}: entry {i}: count must be a whole number from 1 to {MAX_CONTAINERS}")
        try:
            argv = _entry_argv(entry, flags)
            args = parser.parse_args(argv)
            spec = build(parser, args)
        except (argparse.ArgumentError, TypeError, ValueError) as exc:
            raise ValueError(f"{path}: entry {i}: {exc}") from None
        specs.extend([spec] * count)
        if len(specs) > MAX_CONTAINERS:
            raise ValueError(f"{path}: more than {MAX_CONTAINERS} containers in all")
    return specs


def run_many(parser: argparse.ArgumentParser, args: argparse.Namespace, build: SpecBuilder) -> int:
    """Entry point of ``supervisor run-many``.

    Returns:
        the exit status (0 if every container exited 0).
    """
    cmd = [c for c in args.cmd if c != "--"] if args.cmd[:1] == ["--"] else list(args.cmd)
    try:
        if args.count is None:
            if len(cmd) != 1:
                parser.error("give -n COUNT and a command, or a FILE of specs")
            if not os.path.isfile(cmd[0]):
                reason = "is not a file" if os.path.exists(cmd[0]) else "does not exist"
                raise ValueError(f"specs file {cmd[0]} {reason} (to run a command, give -n COUNT)")
            specs = load_specs(cmd[0], build)
        else:
            if not 1 <= args.count <= MAX_CONTAINERS:
                raise ValueError(f"-n {args.count}: give a count from 1 to {MAX_CONTAINERS}")
            spec = build(parser, args)
            specs = [spec] * args.count
        for spec in specs:
            spec.check_host()
    except (ValueError, TypeError, OSError) as exc:
        print(f"supervisor: {exc}", file=sys.stderr)
        return 125
    from ._privileges import check_privileges

    try:
        check_privileges()
    except PermissionError as exc:
        print(f"supervisor: {exc.strerror}", file=sys.stderr)
        return 125
    if args.parallel is not None and args.parallel < 1:
        print(f"supervisor: -j {args.parallel}: give at least 1 container at a time", file=sys.stderr)
        return 125
    timeout = getattr(args, "timeout", None)
    if timeout is not None and not 0 < timeout < math.inf:
        print(f"supervisor: --timeout {timeout}: give a number of seconds above 0", file=sys.stderr)
        return 125
    parallel = args.parallel or 4 * (os.cpu_count() or 1)
    output = getattr(args, "output", None)
    if output is not None:
        try:
            os.makedirs(output, exist_ok=True)
        except OSError as exc:
            print(f"supervisor: --output {output}: {exc.strerror}", file=sys.stderr)
            return 125
    from ._cli import run_stoppable

    return run_stoppable(_run_all, specs, parallel, args.json, timeout, output)


class Progress:
    """Counts for the live display and the summary."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.in_phase: dict[str, str] = {}  # container id -> current phase
        self.running: set[str] = set()
        self.done = 0
        self.failed = 0
        self.started_at = time.monotonic()

    def feed(self, event: Event) -> None:
        """Account for one event."""
        cid = event.container_id
        if event.kind == "phase" and event.phase:
            self.in_phase[cid] = event.phase
        elif event.kind == "started":
            self.in_phase.pop(cid, None)
            self.running.add(cid)
        elif event.kind in ("exited", "failed"):
            self.in_phase.pop(cid, None)
            self.running.discard(cid)
            self.done += 1
            result = event.data.get("result", {})
            if event.kind == "failed" or result.get("exit_code") != 0:
                self.failed += 1

    def line(self) -> str:
        phases = Counter(self.in_phase.values())
        setup = " ".join(f"{name} {n}" for name, n in phases.items())
        rate = self.done / max(time.monotonic() - self.started_at, 1e-9)
        return (
            f"setup [{setup or '-'}] running {len(self.running)} "
            f"done {self.done}/{self.total} failed {self.failed} {rate:.1f}/s"
        )


class _Outputs:
    """``--output DIR``: each container's stdout, stderr and result, by its name."""

    def __init__(self, folder: str) -> None:
        self.folder = folder
        self.taken: Counter[str] = Counter()

    def write(self, result: Result) -> None:
        """Write the files of ``result`` (a name used twice gets ``.2``, ``.3``...)."""
        self.taken[result.hostname] += 1
        n = self.taken[result.hostname]
        name = result.hostname if n == 1 else f"{result.hostname}.{n}"
        base = os.path.join(self.folder, name)
        for suffix, data in ((".out", result.stdout), (".err", result.stderr)):
            with open(base + suffix, "wb") as f:
                f.write(data)
        summary = result.to_json()
        del summary["stdout"], summary["stderr"]
        with open(base + ".json", "w", encoding="utf-8") as f:
            json.dump(summary, f)
            f.write("\n")


async def _run_all(
    specs: list[Spec], parallel: int, as_json: bool, timeout: float | None, output: str | None = None
) -> int:
    import trio

    from . import CleanupError, SetupError, Supervisor

    results: list[Result] = []
    progress = Progress(len(specs))
    live = sys.stderr.isatty() and not as_json
    closed: list[bool] = []

    outputs = _Outputs(output) if output is not None else None

    async def one(spec: Spec) -> None:
        result = None
        try:
            result = await sup.run(spec, check=False, timeout=timeout)
        except SetupError as exc:
            result = exc.result
        except CleanupError as exc:  # this container's alone: the others go on
            print(f"supervisor: {exc} (left for 'supervisor gc')", file=sys.stderr)
            result = exc.result
        if result is None:
            return
        if outputs is not None:
            outputs.write(result)
        results.append(result)

    async def watch(events: AsyncIterator[Event]) -> None:
        async for event in events:
            progress.feed(event)
            if as_json and not closed:
                try:
                    print(json.dumps(event.to_json()), flush=True)
                except BrokenPipeError:  # the reader went away (| head): keep running, stop printing
                    closed.append(True)
                    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())

    async def display() -> None:
        while True:
            print("\r\x1b[K" + progress.line(), end="", file=sys.stderr, flush=True)
            await trio.sleep(0.1)

    async with Supervisor(max_parallel=parallel) as sup, trio.open_nursery() as outer:
        # Subscribed here, before any run starts: a watcher task that first
        # ran after the first runs would miss their first events.
        outer.start_soon(watch, sup.events())
        if live:
            outer.start_soon(display)
        async with trio.open_nursery() as nursery:
            for spec in specs:
                nursery.start_soon(one, spec)
        await trio.sleep(0.05)  # let the watcher drain the last events
        outer.cancel_scope.cancel()
    if live:
        print("\r\x1b[K" + progress.line(), file=sys.stderr)
    _summary(results, time.monotonic() - progress.started_at, sys.stderr if as_json else sys.stdout)
    if not results:
        return 125
    return 0 if all(r.ok for r in results) and len(results) == len(specs) else 1


def _summary(results: list[Result], wall: float, out: Any) -> None:
    """Print the table: outcomes, exit codes, durations, first failures."""
    outcomes = Counter((r.reason, r.exit_code if r.exit_code is not None else r.signal) for r in results)
    print(f"{len(results)} containers in {wall:.2f} s ({len(results) / max(wall, 1e-9):.1f}/s)", file=out)
    print(f"{'reason':<14}{'code/signal':>12}{'count':>8}", file=out)
    for (reason, code), n in sorted(outcomes.items(), key=lambda kv: -kv[1]):
        print(f"{reason:<14}{'-' if code is None else code!s:>12}{n:>8}", file=out)
    if results:
        walls = sorted(r.wall_s for r in results)

        def pct(q: float) -> float:
            return walls[min(len(walls) - 1, int(q * len(walls)))] * 1e3

        print(f"duration ms: p50 {pct(0.5):.1f}  p95 {pct(0.95):.1f}  max {walls[-1] * 1e3:.1f}", file=out)
    failures = [r for r in results if not r.ok]
    for r in failures[:10]:
        detail = r.error or (r.stderr.decode(errors="replace").strip().splitlines() or [""])[-1]
        if r.exit_code is not None:
            status = f"status {r.exit_code}"
        elif r.signal is not None:
            status = f"signal {r.signal}"
        else:
            status = r.failed_phase or ""
        print(f"  {r.hostname}: {r.reason} {status} {detail}".rstrip(), file=out)
    if len(failures) > 10:
        print(f"  ... and {len(failures) - 10} more", file=out)
