"""A failure at every setup phase ends as SetupError with that phase, and leaves nothing behind.

Faults are injected with :func:`supervisor.testing.fail_at` (PID 1 fails as it
starts the phase) and :func:`supervisor.testing.fail_in_parent` (the
supervisor's side of a request phase fails). The autouse leak check compares
mounts, cgroups, links, run directories, processes, descriptors and temp
folders before and after every test; the ``busybox`` fixture proves the rootfs
folder is untouched.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import anyio
import pytest
from _util import PARENT_STEP_PHASES

import supervisor
from supervisor import Mount, Phase, SetupError, Spec
from supervisor.testing import fail_at, fail_in_parent

pytestmark = pytest.mark.anyio

ALL_PHASES = list(Phase)


def labels_up_to(phase: Phase) -> list[str]:
    return [p.label for p in Phase if p <= phase]


@pytest.fixture(params=["default", "busybox"])
def rootfs(request: pytest.FixtureRequest) -> str | None:
    if request.param == "busybox":
        path: str = request.getfixturevalue("busybox")
        return path
    return None


@pytest.mark.parametrize("phase", ALL_PHASES, ids=[p.label for p in ALL_PHASES])
async def test_fault_at_every_phase(phase: Phase, rootfs: str | None, host_dir: Path) -> None:
    (host_dir / "data").write_text("bound\n")
    spec = Spec(["cat"], rootfs=rootfs, mounts=[Mount(str(host_dir), "/tmp/bound", read_only=True)])
    # More input than a pipe holds: the feeder must give up cleanly when PID 1 dies.
    data = b"x" * (1 << 20)
    t0 = time.monotonic()
    with fail_at(phase), pytest.raises(SetupError) as info:
        await supervisor.run(spec, input=data)
    err = info.value
    assert err.phase is phase
    assert err.errno == errno.EIO
    assert "fault injected" in err.message
    assert phase.label in str(err)
    result = err.result
    assert result is not None
    assert result.reason == "setup_failed"
    assert result.failed_phase == phase.label
    assert result.error == err.message
    assert (result.exit_code, result.signal) == (None, None)
    assert not result.ok
    assert [p.name for p in result.phases] == labels_up_to(phase)
    assert result.stdout == b""
    assert time.monotonic() - t0 < 10
    assert (host_dir / "data").read_text() == "bound\n"
    assert sorted(os.listdir(host_dir)) == ["data"]


async def test_supervisor_survives_a_fault_at_every_phase(busybox: str) -> None:
    spec = Spec(["echo", "ok"], rootfs=busybox)
    async with supervisor.Supervisor() as sup:
        for phase in Phase:
            with fail_at(phase), pytest.raises(SetupError) as info:
                await sup.run(spec)
            assert info.value.phase is phase
            # The fault ends with the block; the same supervisor runs the next one.
            result = await sup.run(spec)
            assert result.stdout == b"ok\n"
            assert [p.name for p in result.phases] == labels_up_to(Phase.EXEC)


async def test_fault_applies_only_to_the_task_that_set_it(busybox: str) -> None:
    spec = Spec(["echo", "ok"], rootfs=busybox)
    outcomes: dict[str, object] = {}

    async def faulty() -> None:
        with fail_at(Phase.PIVOT):
            try:
                await sup.run(spec)
            except SetupError as exc:
                outcomes["faulty"] = exc.phase

    async def healthy() -> None:
        outcomes["healthy"] = (await sup.run(spec)).stdout

    async with supervisor.Supervisor() as sup, anyio.create_task_group() as tg:
        for _ in range(3):
            tg.start_soon(faulty)
            tg.start_soon(healthy)
    assert outcomes == {"faulty": Phase.PIVOT, "healthy": b"ok\n"}


@pytest.mark.parametrize("phase", [Phase.SPAWNED, Phase.USERNS, Phase.MOUNTS, Phase.EXEC], ids=lambda p: p.label)
async def test_fault_propagates_out_of_start(phase: Phase, busybox: str) -> None:
    async with supervisor.Supervisor() as sup, anyio.create_task_group() as tg:
        with fail_at(phase), pytest.raises(SetupError) as info:
            await tg.start(sup.run, Spec(["sleep", "30"], rootfs=busybox))
        assert info.value.phase is phase
        # The task group is unharmed and still usable.
        handle = await tg.start(sup.run, Spec(["echo", "after"], rootfs=busybox))
        assert (await handle.wait()).stdout == b"after\n"


async def test_fault_in_the_supervisors_step() -> None:
    with fail_in_parent(Phase.USERNS), pytest.raises(SetupError) as info:
        await supervisor.run(Spec(["true"]))
    assert info.value.phase is Phase.USERNS
    assert info.value.errno == errno.EIO
    assert info.value.result is not None
    assert [p.name for p in info.value.result.phases] == ["spawned", "userns"]


@pytest.mark.parametrize("phase", PARENT_STEP_PHASES, ids=[p.label for p in PARENT_STEP_PHASES])
async def test_fault_after_the_supervisors_step_is_cleaned_up(phase: Phase, busybox: str) -> None:
    """The step did all its work (id maps; cgroup made with its limits;
    veth, address and route), then failed: what it made goes too (the leak
    check sees cgroups and links; the address lease is checked here)."""
    from supervisor._parent import network
    from supervisor._parent.rundir import owner_token

    spec = Spec(["true"], rootfs=busybox, network="bridge" if phase == Phase.NETWORK else "none")
    with fail_in_parent(phase, after=True), pytest.raises(SetupError) as info:
        await supervisor.run(spec)
    assert info.value.phase is phase
    assert "after the supervisor's" in info.value.message
    me = owner_token()
    for name in os.listdir(network.NET_DIR) if os.path.isdir(network.NET_DIR) else []:
        if name.endswith(".json"):
            with open(os.path.join(network.NET_DIR, name)) as f:
                assert me not in {e["owner"] for e in json.load(f)["entries"].values()}, "address lease left"


def test_fault_helpers_check_their_argument() -> None:
    with pytest.raises(TypeError), fail_at("pivot"):  # type: ignore[arg-type]
        pass
    with pytest.raises(TypeError), fail_at(8):  # type: ignore[arg-type]
        pass
    with pytest.raises(ValueError, match="has no supervisor step"), fail_in_parent(Phase.PIVOT):
        pass


@pytest.mark.parametrize("phase", ALL_PHASES, ids=[p.label for p in ALL_PHASES])
async def test_cancel_at_every_phase(phase: Phase, busybox: str) -> None:
    """Cancelling the caller while a phase runs kills, reaps and cleans up."""
    seen: list[Phase] = []
    t0 = time.monotonic()
    with anyio.CancelScope() as scope:

        def on_phase(p: Phase, _seconds: float) -> None:
            seen.append(p)
            if p == phase:
                scope.cancel()

        await supervisor.run(Spec(["sleep", "30"], rootfs=busybox, grace_period=30), on_phase=on_phase)
        pytest.fail("run() returned although it was cancelled")
    assert scope.cancelled_caught
    assert phase in seen
    # sleep has no SIGTERM handler: SIGKILL at once, no grace period spent.
    assert time.monotonic() - t0 < 10


async def test_cancel_at_random_moments(busybox: str) -> None:
    """Cancellation at any point, even while spawning, leaks nothing."""
    spec = Spec(["true"], rootfs=busybox)
    completed = 0
    async with supervisor.Supervisor() as sup:
        for i in range(40):
            with anyio.move_on_after(i * 0.0007):
                await sup.run(spec)
                completed += 1
        # Still healthy afterwards.
        assert (await sup.run(spec)).ok
    assert completed < 40


@pytest.mark.parametrize(
    ("argv", "env", "err"),
    [
        (["no-such-program"], {}, errno.ENOENT),
        (["/no/such/program"], {}, errno.ENOENT),
        (["/etc/passwd"], {}, errno.EACCES),
        (["passwd"], {"PATH": "/etc"}, errno.EACCES),
        (["/tmp"], {}, errno.EACCES),
    ],
)
async def test_exec_failures(rootfs: str | None, argv: list[str], env: dict[str, str], err: int) -> None:
    with pytest.raises(SetupError) as info:
        await supervisor.run(Spec(argv, rootfs=rootfs, env=env))
    assert info.value.phase is Phase.EXEC
    assert info.value.errno == err
    result = info.value.result
    assert result is not None
    assert (result.reason, result.failed_phase, result.exit_code) == ("setup_failed", "exec", None)
    assert [p.name for p in result.phases] == labels_up_to(Phase.EXEC)


async def test_payload_exit_125_is_not_a_setup_failure(busybox: str) -> None:
    result = await supervisor.run(Spec(["sh", "-c", "exit 125"], rootfs=busybox), check=False)
    assert (result.reason, result.exit_code, result.failed_phase) == ("exited", 125, None)


async def test_missing_host_paths_fail_before_anything_starts(host_dir: Path) -> None:
    async with supervisor.Supervisor() as sup:
        with pytest.raises(ValueError, match=r"Spec\.rootfs"):
            await sup.run(Spec(["true"], rootfs=str(host_dir / "missing")))
        with pytest.raises(ValueError, match=r"Spec\.mounts"):
            await sup.run(Spec(["true"], mounts=[Mount(str(host_dir / "missing"), "/mnt")]))


LEAKY_TESTS = """
import os
import subprocess


def test_leaks_a_descriptor():
    os.open("/dev/null", os.O_RDONLY)


def test_leaks_a_process():
    subprocess.Popen(["sleep", "30"])


def test_clean():
    with open("/dev/null") as f:
        assert f.read() == ""
"""


def test_leak_check_catches_leaks(host_dir: Path) -> None:
    """The leak check itself: a leaked descriptor or process fails the test that leaked it."""
    inner = host_dir / "inner"
    inner.mkdir()
    for name in ("conftest.py", "_util.py"):
        shutil.copy(Path(__file__).with_name(name), inner / name)
    (inner / "test_leaky.py").write_text(LEAKY_TESTS)
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(inner), str(inner)],
        capture_output=True,
        text=True,
        cwd=inner,
        env={**os.environ, "SUPERVISOR_TEST_SETTLE_S": "0.3"},
        timeout=120,
        check=False,
    )
    out = proc.stdout
    assert proc.returncode == 1, out
    assert "3 passed, 2 errors" in out, out
    assert "ERROR test_leaky.py::test_leaks_a_descriptor" in out
    assert "file descriptors left open" in out
    assert "ERROR test_leaky.py::test_leaks_a_process" in out
    assert "child processes left behind" in out
