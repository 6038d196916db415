"""Supervision features: events, max_parallel, overlay roots, crash safety, run-many."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import trio
from _util import REPO, run_with_repo, running

import supervisor
from supervisor import Spec, Supervisor

pytestmark = pytest.mark.anyio


async def test_events_cover_every_phase_and_outcome() -> None:
    seen: list[supervisor.Event] = []
    async with Supervisor() as sup, trio.open_nursery() as nursery:
        events = sup.events()  # subscribed from this call on, before the runs

        async def watch() -> None:
            async for event in events:
                seen.append(event)

        nursery.start_soon(watch)
        ok = await sup.run(Spec(["true"]))
        with pytest.raises(supervisor.SetupError):
            await sup.run(Spec(["no-such-program"]))
        await trio.sleep(0.05)
        nursery.cancel_scope.cancel()
    by_id: dict[str, list[str]] = {}
    for event in seen:
        by_id.setdefault(event.container_id, []).append(event.kind)
        assert event.timestamp > 0
        assert json.loads(json.dumps(event.to_json()))["id"] == event.container_id
    good = by_id.pop(ok.id)
    assert good.count("phase") == len(supervisor.Phase)
    assert good[-3:] == ["started", "exited", "cleaned_up"]
    (bad,) = by_id.values()
    assert bad[-2:] == ["failed", "cleaned_up"]
    assert "started" not in bad


async def test_an_events_iterator_never_started_unsubscribes_when_dropped() -> None:
    import gc

    async with Supervisor() as sup:
        sup.events()  # dropped at once, never iterated
        gc.collect()
        assert not sup._events.has_subscribers


async def test_events_end_when_the_supervisor_closes() -> None:
    async with Supervisor() as sup:
        iterator = sup.events()
    # The hub was closed: iterating ends at once instead of hanging.
    with trio.fail_after(2):
        assert [e async for e in iterator] == []


def _rss_kb() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


async def test_a_lagging_watcher_costs_a_bounded_buffer(busybox: str) -> None:
    """A watcher that does not keep up loses the oldest events, is told how many, and
    the supervisor's memory stays bounded (the events' results carry 32 KiB of output each)."""
    n, limit = 1500, 100
    spec = Spec(["sh", "-c", "head -c 32768 /dev/zero"], rootfs=busybox)
    got: list[supervisor.Event] = []
    rss: list[int] = []
    async with Supervisor() as sup:
        lagging = sup.events(max_buffered=limit)
        complete = sup.events(max_buffered=None)
        kept: list[int] = []

        async def drain_all() -> None:
            async for _event in complete:
                kept.append(1)

        async with trio.open_nursery() as outer:
            outer.start_soon(drain_all)
            sem = trio.Semaphore(16)

            async def one() -> None:
                async with sem:
                    await sup.run(spec)
                if len(got) == 0:
                    rss.append(_rss_kb())

            async with trio.open_nursery() as runs:
                for _ in range(n):
                    runs.start_soon(one)
            # Only now does the lagging watcher read: everything it missed is one "dropped".
            async with contextlib.aclosing(lagging):  # type: ignore[type-var]
                async for event in lagging:
                    got.append(event)
                    if len(got) == limit + 1:
                        break
            outer.cancel_scope.cancel()
    assert got[0].kind == "dropped"
    per_run = len(supervisor.Phase) + 3  # the phases, started, exited, cleaned_up
    assert got[0].data["count"] == n * per_run - limit
    assert [e.kind for e in got[1:]][-1] == "cleaned_up"
    assert len(got) == limit + 1
    # The unbounded reader that kept up saw every event.
    assert len(kept) >= n * per_run - 100
    # Memory: from the first hundred runs to the last, well below what 1500
    # buffered results (with their output) would take.
    assert rss[-1] - rss[99] < 20_000, (rss[99], rss[-1])


async def test_max_parallel_bounds_running_containers(busybox: str) -> None:
    in_flight = 0
    peak = 0
    async with Supervisor(max_parallel=3) as sup:
        events = sup.events()  # subscribed before the runs

        async def watch() -> None:
            nonlocal in_flight, peak
            async for event in events:
                if event.kind == "phase" and event.phase == "spawned":
                    in_flight += 1
                    peak = max(peak, in_flight)
                elif event.kind == "cleaned_up":
                    in_flight -= 1

        async with trio.open_nursery() as outer:
            outer.start_soon(watch)
            async with trio.open_nursery() as nursery:
                for _ in range(9):
                    nursery.start_soon(sup.run, Spec(["sleep", "0.1"], rootfs=busybox))
            outer.cancel_scope.cancel()
    assert peak == 3


def test_max_parallel_is_validated() -> None:
    with pytest.raises(ValueError, match="max_parallel"):
        Supervisor(max_parallel=0)


async def test_overlay_root_is_private_and_discarded(busybox: str) -> None:
    script = "echo a > /written; mkdir /newdir; cat /written; ls /"
    async with Supervisor() as sup:
        first = await sup.run(Spec(["sh", "-c", script], rootfs=busybox, overlay=True))
        second = await sup.run(Spec(["sh", "-c", "ls /written 2>&1; true"], rootfs=busybox, overlay=True))
    assert first.exit_code == 0, first.stderr
    assert first.stdout.startswith(b"a\n")
    assert b"newdir" in first.stdout
    # The next container on the same base sees none of it, nor does the host
    # (the busybox fixture checks the folder is byte-for-byte unchanged).
    assert b"No such file" in second.stdout


async def test_overlay_base_shared_by_many_at_once(busybox: str) -> None:
    """16 containers at once on one base: each writes its own /mine and sees
    only its own; the base folder is untouched (the busybox fixture checks)."""
    script = "echo $0 > /mine; sleep 0.2; cat /mine; ls / | grep -c mine"
    results: dict[int, bytes] = {}
    async with Supervisor() as sup, trio.open_nursery() as nursery:

        async def one(i: int) -> None:
            result = await sup.run(Spec(["sh", "-c", script, str(i)], rootfs=busybox, overlay=True))
            assert result.exit_code == 0, result.stderr
            results[i] = result.stdout

        for i in range(16):
            nursery.start_soon(one, i)
    assert results == {i: f"{i}\n1\n".encode() for i in range(16)}
    assert not os.path.exists(os.path.join(busybox, "mine"))


def test_overlay_needs_a_rootfs() -> None:
    with pytest.raises(ValueError, match=r"Spec\.overlay"):
        Spec(["true"], overlay=True)


def _run_dir(host_dir: Path) -> Path:
    path = host_dir / "run"
    path.mkdir()
    return path


def test_gc_sweeps_dead_owners_only(host_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = _run_dir(host_dir)
    monkeypatch.setenv("SUPERVISOR_RUN_DIR", str(root))
    # A dead owner: a PID that exists with another start time cannot be ours.
    dead = root / f"{os.getpid()}-1"
    dead.mkdir()
    leftover = host_dir / "leftover"
    leftover.mkdir()
    (leftover / "file").write_text("x")
    (dead / "c1.jsonl").write_text(json.dumps({"kind": "dir", "path": str(leftover)}) + "\n")
    # A live owner: this very process.
    from supervisor._parent.rundir import RunDir

    live = RunDir()
    kept = host_dir / "kept"
    kept.mkdir()
    live.record("c2", "dir", path=str(kept))
    report = supervisor.collect_garbage()
    assert report.owners == [dead.name]
    assert report.removed == [{"kind": "dir", "path": str(leftover)}]
    assert not leftover.exists()
    assert not dead.exists()
    assert kept.exists()
    live.forget("c2")
    live.close()
    assert list(root.iterdir()) == []


def test_gc_sweeps_only_what_was_not_released(host_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The ledger is append-only: a released container's records stay in the
    file (until compaction) but are never swept; the compacted file keeps
    exactly the live records."""
    from supervisor._parent.rundir import RunDir

    root = _run_dir(host_dir)
    monkeypatch.setenv("SUPERVISOR_RUN_DIR", str(root))
    monkeypatch.setattr(RunDir, "COMPACT_AT", 8)
    live = RunDir()
    released, pending = host_dir / "released", host_dir / "pending"
    for d in (released, pending):
        d.mkdir()
    live.record("c0", "dir", path=str(pending))
    for i in range(1, 20):
        live.record(f"c{i}", "dir", path=str(released))
        live.forget(f"c{i}")
    lines = Path(live.file).read_text().splitlines()
    assert len(lines) < 8, lines  # compacted: the live record and what came after
    assert json.loads(lines[0]) == {"cid": "c0", "kind": "dir", "path": str(pending)}
    # The same ledger, left by a dead owner.
    dead = root / f"{os.getpid()}-1"
    dead.mkdir()
    (dead / "ledger-0.jsonl").write_text(Path(live.file).read_text())
    report = supervisor.collect_garbage()
    assert report.removed == [{"kind": "dir", "path": str(pending)}]
    assert released.exists()
    assert not pending.exists()
    live.forget("c0")
    live.close()
    assert list(root.iterdir()) == []


def test_gc_cli(host_dir: Path) -> None:
    root = _run_dir(host_dir)
    dead = root / "999999999-5"
    dead.mkdir()
    leftover = host_dir / "leftover"
    leftover.mkdir()
    (dead / "c.jsonl").write_text(json.dumps({"kind": "dir", "path": str(leftover)}) + "\n")
    env = {**os.environ, "SUPERVISOR_RUN_DIR": str(root), "PYTHONPATH": REPO}
    out = subprocess.run(
        [sys.executable, "-m", "supervisor", "gc", "--json"], env=env, capture_output=True, text=True, check=True
    )
    report = json.loads(out.stdout)
    assert report["owners"] == [dead.name]
    assert not leftover.exists()


LIFELINE = textwrap.dedent(
    """
    import sys, trio, supervisor
    async def main():
        async with supervisor.Supervisor() as sup, trio.open_nursery() as nursery:
            pids = []
            for _ in range(4):
                c = await nursery.start(sup.run, supervisor.Spec(["sleep", "1000"], rootfs=sys.argv[1]))
                pids.append(c.pid)
            print(*pids, flush=True)
            await trio.sleep(1000)
    trio.run(main)
    """
)


def test_sigkilled_supervisor_takes_its_containers_within_a_second(busybox: str) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", LIFELINE, busybox],
        env={**os.environ, "PYTHONPATH": REPO},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        containers = list(map(int, proc.stdout.readline().split()))
        assert len(containers) == 4
        assert all(running(pid) for pid in containers)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        deadline = time.monotonic() + 1.0
        while any(running(pid) for pid in containers) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not any(running(pid) for pid in containers), "a container outlived its supervisor by 1 s"
        # Its host-side leftovers (the containers' cgroups) are what gc is
        # for: the owner is dead, so they are swept.
        report = supervisor.collect_garbage()
        assert report.errors == []
        assert any(r["kind"] == "cgroup" for r in report.removed)
        for record in report.removed:
            for path in record.get("paths", []):
                assert not os.path.exists(path)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


CHURN = textwrap.dedent(
    """
    import sys, trio, supervisor
    async def main():
        spec = supervisor.Spec(["sh", "-c", "sleep 1000 & sleep 1000"], rootfs=sys.argv[1])
        async with supervisor.Supervisor(max_parallel=24) as sup, trio.open_nursery() as nursery:
            for i in range(10_000):
                nursery.start_soon(sup.run, spec)
                if i == 8:
                    print("churning", flush=True)
                await trio.sleep(0.002)
    trio.run(main)
    """
)

#: Runs the churning supervisor as its child, SIGKILLs it after a delay, and
#: reports which of its descendants are still running a second later: as a
#: child subreaper, every orphan (the containers' PID 1s) becomes its child.
SUBREAPER = textwrap.dedent(
    """
    import ctypes, json, os, signal, subprocess, sys, time
    ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
    churn, rootfs, delay = sys.argv[1], sys.argv[2], float(sys.argv[3])
    sup = subprocess.Popen([sys.executable, "-c", churn, rootfs], stdout=subprocess.PIPE, text=True)
    assert sup.stdout.readline() == "churning\\n"
    time.sleep(delay)
    os.kill(sup.pid, signal.SIGKILL)
    sup.wait()

    def children():
        with open(f"/proc/self/task/{os.getpid()}/children") as f:
            return [int(p) for p in f.read().split()]

    def alive(pid):
        try:
            with open(f"/proc/{pid}/stat") as f:
                return f.read().rsplit(")", 1)[1].split()[0] != "Z"
        except (FileNotFoundError, ProcessLookupError):
            return False

    adopted = children()
    deadline = time.monotonic() + 1.0
    while any(alive(p) for p in children()) and time.monotonic() < deadline:
        time.sleep(0.01)
    left = [p for p in children() if alive(p)]
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    while True:
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            break
    print(json.dumps({"adopted": len(adopted), "left": left}))
    """
)


@pytest.mark.parametrize("delay", [0.0, 0.1, 0.4])
def test_sigkilled_mid_run_under_load_leaves_nothing(busybox: str, delay: float) -> None:
    """The supervisor SIGKILLed while it keeps starting containers (some in
    setup, some running, some ending): within a second none of them runs, and
    gc then removes what it left on the host."""
    out = run_with_repo([sys.executable, "-c", SUBREAPER, CHURN, busybox, str(delay)])
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["adopted"] >= 1, report  # at least one container was orphaned
    assert report["left"] == [], f"still running 1 s after the supervisor died: {report}"
    swept = supervisor.collect_garbage()
    assert swept.errors == []


def _cli(*args: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "supervisor", *args],
        env={**os.environ, "PYTHONPATH": REPO},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        **kwargs,  # type: ignore[arg-type]
    )


def test_run_many_count(busybox: str) -> None:
    out = _cli("run-many", "-n", "20", "-j", "4", "-m", busybox, "--", "sh", "-c", "exit 0")
    assert out.returncode == 0, out.stderr
    assert "20 containers" in out.stdout
    assert "exited" in out.stdout


def test_run_many_reports_failures_and_exit_status(busybox: str, host_dir: Path) -> None:
    specs = host_dir / "specs.toml"
    specs.write_text(
        textwrap.dedent(
            f"""
            [[container]]
            command = "sh -c 'exit 3'"
            rootfs = "{busybox}"
            count = 2
            [[container]]
            command = ["true"]
            rootfs = "{busybox}"
            [[container]]
            command = ["no-such-program"]
            rootfs = "{busybox}"
            """
        )
    )
    out = _cli("run-many", str(specs))
    assert out.returncode == 1
    lines = out.stdout.splitlines()
    assert lines[0].startswith("4 containers")
    assert any(line.split()[:3] == ["exited", "3", "2"] for line in lines)
    assert any(line.split()[:3] == ["exited", "0", "1"] for line in lines)
    assert any(line.split()[:2] == ["setup_failed", "-"] for line in lines)
    # Each failure with its status, or the phase that failed.
    assert sum(": exited status 3" in line for line in lines) == 2, lines
    assert any(": setup_failed exec" in line for line in lines), lines


def test_run_many_spec_file_keys_are_the_flags_and_output_dir(busybox: str, host_dir: Path) -> None:
    """An entry's keys are run's long flags (or Spec's fields); --output keeps each one's output."""
    (host_dir / "data").mkdir()
    (host_dir / "data" / "f").write_text("bound\n")
    specs = host_dir / "specs.toml"
    # /mnt/data lies in the tmpfs at /mnt: the busybox root has no /data.
    script = "id -u; cat /mnt/data/f; echo $A; pwd; ulimit -n; grep -c ' /mnt ' /proc/self/mountinfo; echo oops >&2"
    specs.write_text(
        textwrap.dedent(
            f"""
            [[container]]
            command = ["sh", "-c", "{script}"]
            rootfs = "{busybox}"
            name = "flags"
            user = "user"
            volume = ["{host_dir / "data"}:/mnt/data:ro"]
            env = ["A=from-flag"]
            workdir = "/tmp"
            ulimit = ["nofile=64:64"]
            tmpfs = ["/mnt"]
            pids_limit = 20
            [[container]]
            command = ["sh", "-c", "echo $A; pwd"]
            rootfs = "{busybox}"
            hostname = "fields"
            env = {{ A = "from-field" }}
            cwd = "/mnt"
            limits = {{ pids = 20 }}
            """
        )
    )
    out = _cli("run-many", "--output", str(host_dir / "out"), str(specs))
    assert out.returncode == 0, (out.stdout, out.stderr)
    assert (host_dir / "out" / "flags.out").read_text() == "1000\nbound\nfrom-flag\n/tmp\n64\n1\n"
    assert (host_dir / "out" / "flags.err").read_text() == "oops\n"
    result = json.loads((host_dir / "out" / "flags.json").read_text())
    assert (result["hostname"], result["reason"], result["exit_code"]) == ("flags", "exited", 0)
    assert "stdout" not in result
    assert (host_dir / "out" / "fields.out").read_text() == "from-field\n/mnt\n"
    # A flag's own error is the entry's.
    specs.write_text(f'[[container]]\ncommand = ["true"]\nrootfs = "{busybox}"\nmemory = "lots"\n')
    out = _cli("run-many", str(specs))
    assert out.returncode == 125
    assert f"{specs}: entry 0:" in out.stderr
    assert "lots" in out.stderr
    specs.write_text('[[container]]\ncommand = ["true"]\nrlimits = { nofile = [64] }\n')
    out = _cli("run-many", str(specs))
    assert out.returncode == 125
    assert "rlimits.nofile: give [soft, hard] or one number" in out.stderr
    specs.write_text('[[container]]\ncommand = ["true"]\ntimeout = 5\n')
    out = _cli("run-many", str(specs))
    assert "give --timeout on the command line" in out.stderr


def test_run_many_json_event_stream(busybox: str, host_dir: Path) -> None:
    specs = host_dir / "specs.json"
    specs.write_text(json.dumps([{"command": ["true"], "rootfs": busybox, "count": 3}]))
    out = _cli("run-many", "--json", str(specs))
    assert out.returncode == 0, out.stderr
    events = [json.loads(line) for line in out.stdout.splitlines()]
    kinds = [e["event"] for e in events]
    assert kinds.count("started") == 3
    assert kinds.count("exited") == 3
    assert {e["id"] for e in events} == {e["id"] for e in events if e["event"] == "exited"}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-j", "0", "-n", "1", "--", "true"], "-j 0: give at least 1"),
        (["-j", "-1", "-n", "1", "--", "true"], "-j -1: give at least 1"),
        (["-n", "0", "--", "true"], "-n 0: give a count from 1 to 1000000"),
        (["-n", "1000000000000", "--", "true"], "-n 1000000000000: give a count from 1 to 1000000"),
        (["--grace-period", "inf", "-n", "1", "--", "true"], "Spec.grace_period: must be from 0 to 3600"),
    ],
)
def test_run_many_refuses_bad_counts_in_one_line(args: list[str], message: str) -> None:
    out = _cli("run-many", *args)
    assert out.returncode == 125, out
    assert out.stderr.strip().startswith(f"supervisor: {message}"), out.stderr


def test_run_many_refuses_a_huge_spec_file_count(host_dir: Path) -> None:
    specs = host_dir / "specs.json"
    for count in (10**12, 0, "3", True):
        specs.write_text(json.dumps([{"command": ["true"], "count": count}]))
        out = _cli("run-many", str(specs))
        assert out.returncode == 125, count
        assert "count must be a whole number from 1 to 1000000" in out.stderr, (count, out.stderr)


def test_run_many_names_a_missing_specs_file(host_dir: Path) -> None:
    out = _cli("run-many", str(host_dir / "missing.toml"))
    assert out.returncode == 125
    assert out.stderr.strip() == (
        f"supervisor: specs file {host_dir / 'missing.toml'} does not exist (to run a command, give -n COUNT)"
    )


def test_run_many_rejects_a_bad_file(host_dir: Path) -> None:
    specs = host_dir / "specs.json"
    specs.write_text(json.dumps([{"command": ["true"], "colour": "red"}]))
    out = _cli("run-many", str(specs))
    assert out.returncode == 125
    assert "unknown key 'colour'" in out.stderr
