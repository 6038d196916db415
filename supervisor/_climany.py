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
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from . import Event, Result, Spec

SpecBuilder = Callable[[argparse.ArgumentParser, argparse.Namespace], "Spec"]

_SPEC_KEYS = frozenset(
    {
        "command", "rootfs", "hostname", "uid", "gid", "mounts", "env", "cwd", "read_only", "overlay",
        "grace_period", "cap_add", "cap_drop", "seccomp", "rlimits", "network", "ip", "subnet", "limits",
        "tmpfs",
    }
)  # fmt: skip


def load_specs(path: str) -> list[Spec]:
    """Read a TOML (``[[container]]`` tables) or JSON (a list) file of specs.

    Each entry has the fields of :class:`supervisor.Spec`; ``mounts`` items are
    ``"SRC:DST[:OPTIONS]"`` strings; ``count`` repeats an entry.

    Raises:
        ValueError: unreadable file, unknown keys or bad values (naming them).
    """
    from . import Mount, Spec

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
    specs = []
    for i, item in enumerate(entries):
        if not isinstance(item, dict):
            raise ValueError(f"{path}: entry {i} is not a table/object")
        entry = dict(item)
        count = entry.pop("count", 1)
        unknown = set(entry) - _SPEC_KEYS
        if unknown:
            raise ValueError(f"{path}: entry {i}: unknown keys {sorted(unknown)}")
        if isinstance(entry.get("command"), str):
            import shlex

            entry["command"] = shlex.split(entry["command"])
        entry["mounts"] = [Mount.parse(m) if isinstance(m, str) else Mount(**m) for m in entry.get("mounts", [])]
        if "limits" in entry:
            from . import Limits, parse_size

            raw_limits = dict(entry["limits"])
            for key in ("memory_bytes", "memory_swap_bytes"):
                if isinstance(raw_limits.get(key), str):
                    raw_limits[key] = parse_size(raw_limits[key])
            entry["limits"] = Limits(**raw_limits)
        if "rlimits" in entry:
            entry["rlimits"] = {k: tuple(v) for k, v in entry["rlimits"].items()}
        try:
            spec = Spec(**entry)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{path}: entry {i}: {exc}") from None
        specs.extend([spec] * int(count))
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
            specs = load_specs(cmd[0])
        else:
            if args.count < 1:
                parser.error("-n must be at least 1")
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
    timeout = getattr(args, "timeout", None)
    if timeout is not None and not 0 < timeout < math.inf:
        print(f"supervisor: --timeout {timeout}: give a number of seconds above 0", file=sys.stderr)
        return 125
    parallel = args.parallel or 4 * (os.cpu_count() or 1)
    from ._cli import run_stoppable

    return run_stoppable(_run_all, specs, parallel, args.json, timeout)


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


async def _run_all(specs: list[Spec], parallel: int, as_json: bool, timeout: float | None) -> int:
    import trio

    from . import SetupError, Supervisor

    results: list[Result] = []
    progress = Progress(len(specs))
    live = sys.stderr.isatty() and not as_json
    closed: list[bool] = []

    async def one(spec: Spec) -> None:
        try:
            results.append(await sup.run(spec, check=False, timeout=timeout))
        except SetupError as exc:
            if exc.result is not None:
                results.append(exc.result)

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
