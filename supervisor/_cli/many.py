"""``supervisor run-many``: many containers, live progress, a summary table.

Its parser and its entry point. The containers are COUNT copies of one
command line's, or a specs file's entries (:mod:`.specfile`, loaded only for
a file); they run on one :class:`supervisor.Supervisor`, at most PARALLEL at
a time, watched through ``sup.events()`` for the live line and ``--json``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator

from .common import EXIT_SETUP_FAILED, MAX_CONTAINERS, Formatter, fail, run_stoppable
from .options import add_container_options
from .spec import spec_from_args

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (3 ms for a command line)
if TYPE_CHECKING:
    from typing import Any

    from .. import Event, Result, Spec


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``run-many`` subcommand and its options.

    Args:
        sub: the top-level parser's subcommands.
    """
    many = sub.add_parser(
        "run-many",
        help="run many containers, with live progress and a summary",
        description=(
            "Run COUNT copies of CMD, or every container listed in FILE (a TOML file of [[container]] tables, or a"
            " JSON list of objects, whose keys are run's long flags, such as memory or volume, or the fields of"
            " supervisor.Spec), at most PARALLEL at a time."
        ),
        usage="supervisor run-many -n COUNT [-j PARALLEL] [OPTIONS] -- CMD [ARGS...]\n       supervisor run-many FILE",
        formatter_class=Formatter,
        epilog="exit status: 0 if every container exited 0, 1 otherwise (a setup failure counts as a"
        " failed container); 125 for a bad option or specs file.",
    )
    many.add_argument("-n", "--count", type=int, help="how many copies of CMD to run")
    many.add_argument(
        "-j", "--parallel", type=int, default=None, metavar="PARALLEL", help="containers at once (default: 4 per CPU)"
    )
    add_container_options(many)
    many.add_argument("--json", action="store_true", help="print the event stream as JSON lines on stdout")
    many.add_argument(
        "--output",
        metavar="DIR",
        help="write each container's stdout, stderr and result to DIR/NAME.out, .err and .json (NAME: its"
        " hostname); without it the output is only in --json's events",
    )
    many.add_argument("cmd", nargs=argparse.REMAINDER, metavar="CMD [ARGS...] | FILE", help="the program, or a file")


def main(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """Entry point of ``supervisor run-many``.

    Args:
        parser: the top-level parser, whose ``error()`` reports neither a count nor a file.
        args: the parsed command line.

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
            from .specfile import load_specs

            specs = load_specs(cmd[0])
        else:
            if not 1 <= args.count <= MAX_CONTAINERS:
                raise ValueError(f"-n {args.count}: give a count from 1 to {MAX_CONTAINERS}")
            spec = spec_from_args(parser, args)
            specs = [spec] * args.count
        for spec in specs:
            spec.check_host()
    except (ValueError, TypeError, OSError) as exc:
        return fail(str(exc))
    from .._privileges import check_privileges

    try:
        check_privileges()
    except PermissionError as exc:
        return fail(str(exc.strerror))
    if args.parallel is not None and args.parallel < 1:
        return fail(f"-j {args.parallel}: give at least 1 container at a time")
    timeout = getattr(args, "timeout", None)
    if timeout is not None and not 0 < timeout < math.inf:
        return fail(f"--timeout {timeout}: give a number of seconds above 0")
    parallel = args.parallel or 4 * (os.cpu_count() or 1)
    output = getattr(args, "output", None)
    if output is not None:
        try:
            os.makedirs(output, exist_ok=True)
        except OSError as exc:
            return fail(f"--output {output}: {exc.strerror}")
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

    from .. import CleanupError, SetupError, Supervisor

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
        return EXIT_SETUP_FAILED
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
