"""Reliability under load: many containers, faults, random cancellation, memory.

Every test here also runs under the autouse leak check (conftest.py): mounts,
cgroups, links, processes, temp folders and our fds must be as before.
"""

from __future__ import annotations

import os
import random

import pytest
import trio
from _util import PARENT_STEP_PHASES, running

from supervisor import Phase, SetupError, Spec, Supervisor
from supervisor.testing import fail_at, fail_in_parent

pytestmark = pytest.mark.anyio


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


async def test_a_thousand_containers_sixty_four_at_a_time(busybox: str) -> None:
    spec = Spec(["true"], rootfs=busybox)
    results = []
    async with Supervisor(max_parallel=64) as sup, trio.open_nursery() as nursery:

        async def one() -> None:
            results.append(await sup.run(spec))

        for _ in range(1000):
            nursery.start_soon(one)
    assert len(results) == 1000
    assert all(r.ok for r in results), [r for r in results if not r.ok][:3]
    assert len({r.hostname for r in results}) > 900  # names are reused only once freed


async def test_faults_at_every_phase_and_parent_step_under_load(busybox: str) -> None:
    """Each injected fault fails only its own run; the others succeed."""
    faults: list[tuple[str, Phase]] = [("child", p) for p in Phase]
    faults += [(where, p) for p in PARENT_STEP_PHASES for where in ("parent", "parent, after its work")]
    good = Spec(["sh", "-c", "sleep 0.01"], rootfs=busybox)
    # Every container has a cgroup step; only bridged ones have a network
    # step, so the NETWORK faults run bridged (and really reach that step).
    bridged = Spec(["sh", "-c", "sleep 0.01"], rootfs=busybox, network="bridge")
    outcomes: dict[tuple[str, Phase], Phase | None] = {}
    reasons: list[str] = []
    ok = 0
    async with Supervisor(max_parallel=16) as sup, trio.open_nursery() as nursery:

        async def faulty(where: str, phase: Phase) -> None:
            if where == "child":
                injector = fail_at(phase)
            else:
                injector = fail_in_parent(phase, after=where != "parent")
            with injector:
                try:
                    await sup.run(bridged if phase == Phase.NETWORK else good)
                    outcomes[(where, phase)] = None
                except SetupError as exc:
                    outcomes[(where, phase)] = exc.phase
                    reasons.append(exc.result.reason if exc.result else "no result")

        async def healthy() -> None:
            nonlocal ok
            result = await sup.run(good)  # not `ok += await ...`: that reads ok before awaiting
            ok += result.ok

        for _ in range(3):
            for where, phase in faults:
                nursery.start_soon(faulty, where, phase)
                nursery.start_soon(healthy)
    assert len(outcomes) == len(faults)
    for (_where, phase), failed_at in outcomes.items():
        assert failed_at == phase
    assert ok == 3 * len(faults)
    assert set(reasons) == {"setup_failed"}


async def test_cancellation_at_random_moments(busybox: str) -> None:
    """200 runs cancelled at seeded random moments: no leak, no hang."""
    rng = random.Random(20261129)
    spec = Spec(["sleep", "0.05"], rootfs=busybox, grace_period=0.5)
    completed = cancelled = 0
    pids: list[int] = []
    async with Supervisor() as sup:
        for _ in range(200):
            delay = rng.uniform(0, 0.02)
            with trio.move_on_after(delay) as scope, trio.fail_after(10):
                if rng.random() < 0.5:
                    await sup.run(spec)
                else:
                    async with trio.open_nursery() as nursery:
                        container = await nursery.start(sup.run, spec)
                        pids.append(container.pid)
                        await container.wait()
            if scope.cancelled_caught:
                cancelled += 1
            else:
                completed += 1
    assert cancelled > 20
    assert completed + cancelled == 200
    for pid in pids:
        assert not running(pid)


async def test_concurrent_cancellation_at_random_moments(busybox: str) -> None:
    """8 tasks at once, each cancelling its runs at seeded random moments,
    setup included: every container is reaped, nothing leaks, nothing hangs."""
    rng = random.Random(20261201)
    spec = Spec(["sleep", "0.2"], rootfs=busybox, grace_period=0.2)
    pids: list[int] = []
    outcomes = {"completed": 0, "cancelled": 0}

    async def worker(delays: list[float]) -> None:
        for delay in delays:
            with trio.move_on_after(delay) as scope, trio.fail_after(20):
                async with trio.open_nursery() as nursery:
                    container = await nursery.start(sup.run, spec)
                    pids.append(container.pid)
                    await container.wait()
            outcomes["cancelled" if scope.cancelled_caught else "completed"] += 1

    async with Supervisor() as sup, trio.open_nursery() as nursery:
        for _ in range(8):
            nursery.start_soon(worker, [rng.uniform(0, 0.3) for _ in range(25)])
    assert sum(outcomes.values()) == 200
    assert outcomes["cancelled"] > 20
    assert not [pid for pid in pids if running(pid)]


async def test_whole_supervisor_cancelled_at_random_moments(busybox: str) -> None:
    """A supervisor with 16 containers in every stage, cancelled as a whole at
    a seeded random moment, 10 times: every container is stopped and reaped."""
    rng = random.Random(7)
    spec = Spec(["sleep", "30"], rootfs=busybox, grace_period=0.2)
    for _ in range(10):
        pids: list[int] = []
        with trio.move_on_after(rng.uniform(0.01, 0.3)) as scope, trio.fail_after(30):
            async with Supervisor() as sup, trio.open_nursery() as nursery:

                async def one(pids: list[int]) -> None:
                    container = await nursery.start(sup.run, spec)
                    pids.append(container.pid)

                for _ in range(16):
                    nursery.start_soon(one, pids)
        assert scope.cancelled_caught
        assert not [pid for pid in pids if running(pid)]


async def test_supervisor_memory_stays_flat(busybox: str) -> None:
    spec = Spec(["true"], rootfs=busybox)
    async with Supervisor() as sup:
        for _ in range(200):  # warm-up: caches, allocator arenas
            await sup.run(spec)
        before = _rss_bytes()
        for _ in range(1000):
            await sup.run(spec)
        growth = _rss_bytes() - before
    # A leak of even one small object per run would show up as a steady climb.
    assert growth < 2 * 1024 * 1024, f"supervisor RSS grew by {growth} bytes over 1000 runs"


# -- a clean-up that fails ---------------------------------------------------


@pytest.fixture
def failing_release(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Each container's cgroup removal does its work, then fails as if a directory stayed busy."""
    from supervisor._parent.cgroups import ContainerCgroup

    real_remove = ContainerCgroup.remove
    calls: list[int] = []

    async def remove(self: ContainerCgroup, timeout: float = 10.0) -> None:
        await real_remove(self, timeout)
        calls.append(1)
        raise OSError(16, f"rmdir {self.name}: Device or resource busy (on purpose)")

    monkeypatch.setattr(ContainerCgroup, "remove", remove)
    return calls


async def test_a_failed_release_is_a_cleanup_error_and_strands_no_waiter(
    busybox: str, failing_release: list[int]
) -> None:
    import shutil

    sup = Supervisor()
    try:
        await _cleanup_errors(sup, busybox)
    finally:
        # The resources are really gone (the fault came after), but their
        # records stay in the ledger for gc, as for a real failure: drop it.
        shutil.rmtree(sup._rundir.path, ignore_errors=True)
    assert len(failing_release) == 4


async def _cleanup_errors(sup: Supervisor, busybox: str) -> None:
    import supervisor

    async with sup:
        with pytest.raises(supervisor.CleanupError) as info:
            await sup.run(Spec(["sh", "-c", "echo ran"], rootfs=busybox))
        assert info.value.result.stdout == b"ran\n"
        assert isinstance(info.value.__cause__, OSError)
        assert "on purpose" in str(info.value)
        # The handle's waiter is not stranded, and the hostname is free again.
        async with trio.open_nursery() as nursery:
            handle = await nursery.start(_start_and_expect_cleanup_error, sup, busybox)
            with trio.fail_after(10):
                result = await handle.wait()
            assert (result.reason, result.exit_code) == ("exited", 0)
        assert sup._ctx is not None
        assert not sup._ctx.hostnames  # bookkeeping done
        # The run's own error stays the one raised, with the clean-up's as a note.
        with pytest.raises(SetupError) as setup:
            await sup.run(Spec(["no-such-program"], rootfs=busybox))
        assert any("releasing its host resources failed" in n for n in getattr(setup.value, "__notes__", []))
        with pytest.raises(supervisor.ContainerFailed) as failed:
            await sup.run(Spec(["false"], rootfs=busybox))
        assert any("on purpose" in n for n in getattr(failed.value, "__notes__", []))


async def _start_and_expect_cleanup_error(
    sup: Supervisor, busybox: str, *, task_status: trio.TaskStatus[object] = trio.TASK_STATUS_IGNORED
) -> None:
    import supervisor

    with pytest.raises(supervisor.CleanupError):
        await sup.run(Spec(["sleep", "0.2"], rootfs=busybox), task_status=task_status)


async def test_run_many_goes_on_past_a_failed_clean_up(
    busybox: str, failing_release: list[int], capsys: pytest.CaptureFixture[str]
) -> None:
    import shutil

    from supervisor._cli import many
    from supervisor._parent import rundir

    before = set(os.listdir(rundir.run_root())) if os.path.isdir(rundir.run_root()) else set()
    try:
        status = await many._run_all([Spec(["true"], rootfs=busybox)] * 3, 2, False, None)
    finally:
        for name in set(os.listdir(rundir.run_root())) - before:  # the records kept for gc
            shutil.rmtree(os.path.join(rundir.run_root(), name), ignore_errors=True)
    out, err = capsys.readouterr()
    assert status == 0
    assert out.startswith("3 containers")
    assert err.count("left for 'supervisor gc'") == 3
