"""Resources through the public API: cgroup limits, accounting, OOM, timeout.

The cgroup layer itself is tested in test_cgroups.py; here every check runs a
real container and looks at its Result.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from functools import partial

import anyio
import pytest
from _cgroup_util import unit_cgroup
from _util import REPO, cmdline, descendants, gone, run_with_repo

from supervisor import PIPE, Limits, Result, Spec, Supervisor, parse_size

pytestmark = pytest.mark.anyio


# A single-process payload that reports its own getrusage as JSON after burning CPU.
BURN = (
    "import json, resource, time\n"
    "t = time.process_time()\n"
    "while time.process_time() - t < 0.4: pass\n"
    "r = resource.getrusage(resource.RUSAGE_SELF)\n"
    "print(json.dumps([r.ru_utime, r.ru_stime]))\n"
)


async def test_accounting_matches_the_payloads_own_rusage() -> None:
    async with Supervisor() as sup:
        result = await sup.run(Spec(["python3", "-c", BURN]))
    assert result.exit_code == 0, result.stderr
    user, system = json.loads(result.stdout)
    assert result.cpu_user_s is not None
    assert result.cpu_system_s is not None
    total = result.cpu_user_s + result.cpu_system_s
    # The cgroup also counts the interpreter's start-up before getrusage's snapshot.
    assert user + system <= total + 0.02
    assert total < user + system + 0.25
    assert result.peak_memory_bytes is not None
    assert result.peak_memory_bytes > 1 << 20
    assert result.oom_killed is False
    assert result.to_json()["cpu_user_s"] == round(result.cpu_user_s, 6)


async def test_memory_hog_ends_the_whole_container_with_oom() -> None:
    # The hog runs as a child of a shell: a single-process OOM kill would leave
    # the shell alive; the whole container must end (memory.oom.group semantics).
    hog = "python3 -c 'a = []\nwhile True: a.append(bytearray(1 << 20))'; sleep 30"
    async with Supervisor() as sup:
        t = time.monotonic()
        result = await sup.run(Spec(["sh", "-c", hog], limits=Limits(memory_bytes=parse_size("48M"))), check=False)
    assert result.reason == "oom"
    assert result.oom_killed
    assert result.signal == 9
    assert time.monotonic() - t < 15
    assert result.peak_memory_bytes is not None
    assert result.peak_memory_bytes <= parse_size("48M")


BOMB = (
    "import os, time\n"
    "n = 0\n"
    "for _ in range(300):\n"
    "    try:\n"
    "        pid = os.fork()\n"
    "    except OSError:\n"
    "        continue\n"
    "    if pid == 0:\n"
    "        time.sleep(3)\n"
    "        os._exit(0)\n"
    "    n += 1\n"
    "print(n, flush=True)\n"
    "time.sleep(1)  # hold the limit while the host checks itself\n"
    "os._exit(0)\n"
)


async def test_fork_bomb_stays_under_the_pids_limit() -> None:
    """The bomb hits its pids limit; meanwhile the host still starts processes
    and our event loop keeps its pace."""
    lags: list[float] = []
    async with Supervisor() as sup, anyio.create_task_group() as tg:
        done = anyio.Event()

        async def watch() -> None:
            while not done.is_set():
                t = time.monotonic()
                await anyio.sleep(0.01)
                lags.append(time.monotonic() - t - 0.01)

        tg.start_soon(watch)
        spec = Spec(["python3", "-c", BOMB], limits=Limits(pids=16))
        handle = await tg.start(partial(sup.run, spec, timeout=30, stdout=PIPE, capture_output=False))
        assert handle.stdout is not None
        spawned = int(await handle.stdout.receive())  # the limit is reached and held from here
        host = await anyio.run_process(["true"])
        result = await handle.wait()
        done.set()
    assert host.returncode == 0
    assert max(lags) < 1.0, f"the event loop stalled for {max(lags):.2f} s"
    assert result.reason == "exited", result
    assert 5 <= spawned <= 15  # the forking process itself is the 16th


async def test_cpu_quota_gives_about_half_a_cpu() -> None:
    """A busy loop under ``cpus=0.5`` uses about half a CPU.

    The lower bound is relative to the same loop without a quota, run just
    before: on a loaded machine the loop may get less than half a CPU anyway.
    """
    spin = "import time\nt = time.monotonic()\nwhile time.monotonic() - t < 1.5: pass\n"

    def share(result: Result) -> float:
        assert result.exit_code == 0, result.stderr
        assert result.cpu_user_s is not None
        assert result.cpu_system_s is not None
        return (result.cpu_user_s + result.cpu_system_s) / result.wall_s

    async with Supervisor() as sup:
        free = share(await sup.run(Spec(["python3", "-c", spin])))
        used = share(await sup.run(Spec(["python3", "-c", spin], limits=Limits(cpus=0.5))))
    assert used < 0.65, f"used {used:.2f} CPUs under a 0.5 quota"
    assert used > 0.6 * min(0.5, free), f"used {used:.2f} CPUs under a 0.5 quota, {free:.2f} without"


@pytest.mark.parametrize("pid1", ["handles TERM", "ignores TERM"])
async def test_timeout_kills_the_tree(busybox: str, pid1: str) -> None:
    """SIGTERM, the grace period, SIGKILL; every process of the tree goes,
    double-forked ones included, and the result says ``timeout``."""
    trap = 'trap "echo term; exit 5" TERM' if pid1 == "handles TERM" else 'trap "" TERM'
    tree = f"{trap}; sleep 100 & sleep 100 & (sleep 100 &); echo up; while :; do sleep 0.05; done"
    spec = Spec(["sh", "-c", tree], rootfs=busybox, grace_period=0.5)
    async with Supervisor() as sup, anyio.create_task_group() as tg:
        t = time.monotonic()
        handle = await tg.start(partial(sup.run, spec, timeout=1.5, check=False))
        # PID 1 and the three long sleeps (the loop's short ones come and go).
        while True:
            tree_pids = descendants(handle.pid)
            if sum(cmdline(p) == b"sleep\x00100\x00" for p in tree_pids) == 3:
                break
            await anyio.sleep(0.01)
        result = await handle.wait()
    elapsed = time.monotonic() - t
    assert result.reason == "timeout"
    if pid1 == "handles TERM":
        assert (result.exit_code, result.signal) == (5, None)
        assert result.stdout == b"up\nterm\n"
        assert 1.4 < elapsed < 10
    else:
        assert (result.exit_code, result.signal) == (None, 9)
        assert 1.4 < elapsed < 10
    assert all(gone(p, start) for p, start in tree_pids.items())


async def test_timeout_during_setup_is_a_timeout() -> None:
    async with Supervisor() as sup:
        result = await sup.run(Spec(["true"]), timeout=0, check=False)
    assert result.reason == "timeout"


async def test_timeout_during_setup_of_a_started_run_gives_its_result() -> None:
    """``start()`` returns the handle even when the timeout ends the run in
    its setup (the run never calls ``started`` otherwise): its result is the
    timeout's."""
    async with Supervisor() as sup, anyio.create_task_group() as tg:
        for timeout in (0, 0.0005):
            handle = await tg.start(partial(sup.run, Spec(["sleep", "1"]), timeout=timeout, check=False))
            result = await handle.wait()
            assert result.reason == "timeout", result


@pytest.mark.parametrize("timeout", [-1.0, math.nan])
async def test_a_timeout_that_is_no_duration_is_refused(timeout: float) -> None:
    async with Supervisor() as sup:
        with pytest.raises(ValueError, match="timeout must be a number of seconds"):
            await sup.run(Spec(["true"]), timeout=timeout)


def test_limits_are_validated() -> None:
    with pytest.raises(ValueError, match="memory_bytes"):
        Limits(memory_bytes=0)
    with pytest.raises(ValueError, match="at least 6291456"):
        Limits(memory_bytes=(6 << 20) - 1)
    assert Limits(memory_bytes=6 << 20).memory_bytes == 6 << 20
    # The init shares the supervisor's memory: an OOM kill of it would take
    # the supervisor along.
    with pytest.raises(ValueError, match=r"Spec\.init: cannot be combined with a memory limit"):
        Spec(["true"], init=True, limits=Limits(memory_bytes=64 << 20))
    assert Spec(["true"], init=True, limits=Limits(pids=10)).init
    with pytest.raises(TypeError, match=r"Spec\.limits"):
        Spec(["true"], limits={"memory": 1})  # type: ignore[arg-type]
    assert Limits.crabcan() == Limits(memory_bytes=1 << 30, pids=64, cpu_weight=256)
    assert Limits.crabcan_rlimits() == {"NOFILE": (64, 64)}


def _cgroups_of(pid: int) -> dict[str, str]:
    """Controller list -> cgroup path of ``pid``, as the host sees it."""
    with open(f"/proc/{pid}/cgroup") as f:
        return dict(line.strip().split(":", 2)[1:] for line in f)


async def test_crabcans_whole_preset(busybox: str) -> None:
    """The cgroup part and the rlimit part, seen from inside and from the host."""
    spec = Spec(
        ["sh", "-c", "ulimit -n; ulimit -Hn; read -r go"],
        rootfs=busybox,
        limits=Limits.crabcan(),
        rlimits=Limits.crabcan_rlimits(),
    )
    async with Supervisor() as sup, anyio.create_task_group() as tg:
        handle = await tg.start(partial(sup.run, spec, stdin=PIPE))
        groups = _cgroups_of(handle.pid)
        if os.path.isdir("/sys/fs/cgroup/memory"):  # v1 (or hybrid, as on the test VM)
            files = {
                f"/sys/fs/cgroup/memory{groups['memory']}/memory.limit_in_bytes": str(1 << 30),
                f"/sys/fs/cgroup/pids{groups['pids']}/pids.max": "64",
                f"/sys/fs/cgroup/cpu{groups.get('cpu', groups.get('cpu,cpuacct'))}/cpu.shares": "2621",
            }
        else:
            files = {
                f"/sys/fs/cgroup{groups['']}/{n}": v for n, v in (("memory.max", str(1 << 30)), ("pids.max", "64"))
            }
        seen = {}
        for path in files:
            with open(path) as f:
                seen[path] = f.read().strip()
        assert handle.stdin is not None
        await handle.stdin.send(b"go\n")  # only now may it exit (a zombie has left its v1 cgroups)
        result = await handle.wait()
    assert seen == files
    assert result.stdout == b"64\n64\n"
    # The cgroup it ran in (gone now) was the container's own, below ours.
    ours = _cgroups_of(os.getpid())
    for controller in ("memory", "pids") if "memory" in groups else ("",):  # v1 names, or the v2 line
        assert groups[controller].startswith(ours[controller].rstrip("/") + "/")


async def test_pid1_is_in_every_cgroup_of_its_own(busybox: str) -> None:
    """Cloned into the v2 directory, PID 1 joined the v1 ones itself."""
    async with Supervisor() as sup, anyio.create_task_group() as tg:
        handle = await tg.start(partial(sup.run, Spec(["sh", "-c", "read -r go"], rootfs=busybox), stdin=PIPE))
        groups = _cgroups_of(handle.pid)
        assert handle.stdin is not None
        await handle.stdin.send(b"go\n")
        result = await handle.wait()
    assert result.ok, result
    name = f"sv-{result.id}"
    ours = _cgroups_of(os.getpid())
    if "" in groups and os.path.isdir("/sys/fs/cgroup/unified"):  # hybrid, as on the test VM
        assert groups[""] == ours[""].rstrip("/") + "/" + name, groups
    if "memory" in groups:
        assert groups["memory"] == ours["memory"].rstrip("/") + "/" + name, groups


CLONE3_REFUSED = """
import errno, sys
import pyseccomp as s
# As a seccomp profile of the container we might run in (Docker's refuses
# clone3 with ENOSYS): libc falls back to clone, so do we.
f = s.SyscallFilter(s.ALLOW)
f.add_rule(s.ERRNO(errno.ENOSYS), "clone3")
f.load()
from functools import partial
import trio
from supervisor import PIPE, Spec, Supervisor

async def main():
    async with Supervisor() as sup, trio.open_nursery() as nursery:
        spec = Spec(["sh", "-c", "read -r go"], rootfs=sys.argv[1])
        handle = await nursery.start(partial(sup.run, spec, stdin=PIPE))
        with open(f"/proc/{handle.pid}/cgroup") as f:
            v2 = [line.strip() for line in f if line.startswith("0::")]
        await handle.stdin.send(b"go\\n")
        r = await handle.wait()
        print(r.reason, r.exit_code, v2[0].endswith("/sv-" + r.id) if v2 else "no-v2")

trio.run(main)
"""


def test_without_clone3_pid1_joins_its_v2_cgroup_itself(busybox: str) -> None:
    """The clone falls back to clone(2), and PID 1 then enters the v2
    cgroup through ``cgroup.procs`` (a move with the kernel's lock, but the
    same result)."""
    out = subprocess.run(
        [sys.executable, "-c", CLONE3_REFUSED, busybox],
        env={**os.environ, "PYTHONPATH": REPO},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() in (["exited", "0", "True"], ["exited", "0", "no-v2"]), out.stdout


def test_cli_resource_flags(busybox: str) -> None:
    env = {**os.environ, "PYTHONPATH": REPO}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "supervisor", "run", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    out = cli("--json", "--crabcan-limits", "-m", busybox, "--", "sh", "-c", "ulimit -n")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["stdout"] == "64\n"
    for key in ("cpu_user_s", "cpu_system_s", "peak_memory_bytes", "oom_killed"):
        assert key in result
    out = cli("--timeout", "0.3", "-m", busybox, "--", "sleep", "10")
    assert out.returncode == 124
    assert "timed out" in out.stderr
    out = cli("--memory", "32M", "--", "python3", "-c", "a = [bytearray(1 << 20) for _ in range(200)]")
    assert out.returncode == 137
    assert "memory limit" in out.stderr


def _v2_or_skip() -> tuple[str, str]:
    """The cgroup2 hierarchy's mount and our own cgroup's path in it."""
    from supervisor._parent import cgroups

    unified = cgroups.detect().unified
    if unified is None:
        pytest.skip("no cgroup2 hierarchy on this host")
    return unified.mount, unified.own_path


def _controllers(directory: str, name: str) -> set[str]:
    with open(os.path.join(directory, name)) as f:
        return set(f.read().split())


async def test_cgroup_parent_places_the_container_below_it(busybox: str) -> None:
    """docker's --cgroup-parent: the container's v2 cgroup is made below that cgroup, whose
    missing directories are created enabling what their parents offer, and left in place."""
    mount, own = _v2_or_skip()
    parent = own.rstrip("/") + f"/sv-test-parent-{os.getpid()}"
    inner = parent + "/inner"
    dirs = [mount + parent, mount + inner]
    spec = Spec(
        ["sh", "-c", "read -r go"], rootfs=busybox, cgroup_parent=inner + "/", limits=Limits(memory_bytes=64 << 20)
    )
    assert spec.cgroup_parent == inner
    try:
        async with Supervisor() as sup, anyio.create_task_group() as tg:
            handle = await tg.start(partial(sup.run, spec, stdin=PIPE))
            groups = _cgroups_of(handle.pid)
            container_dir = f"{mount}{inner}/{groups[''].rsplit('/', 1)[1]}"
            memory_max = None
            if os.path.exists(os.path.join(container_dir, "memory.max")):
                with open(os.path.join(container_dir, "memory.max")) as f:
                    memory_max = f.read().strip()
            assert handle.stdin is not None
            await handle.stdin.send(b"go\n")
            result = await handle.wait()
        assert result.ok, result
        assert groups[""] == f"{inner}/sv-{result.id}"
        for directory in dirs:
            offered = _controllers(directory, "cgroup.controllers") & {"cpu", "memory", "pids"}
            assert _controllers(directory, "cgroup.subtree_control") >= offered
        if "memory" in _controllers(dirs[1], "cgroup.subtree_control"):
            assert memory_max == str(64 << 20)  # the limit is on v2, through the parent
        assert os.path.isdir(dirs[1])  # left for the next containers
    finally:
        for directory in reversed(dirs):
            if os.path.isdir(directory):
                os.rmdir(directory)


@pytest.mark.parametrize(
    "parent", ["relative/path", "/a/../b", "/a//b", "/cgroup.procs", "/a b", 5, "/" + "x" * 201]
)  # fmt: skip
def test_cgroup_parent_is_validated(parent: object) -> None:
    with pytest.raises((ValueError, TypeError), match=r"Spec\.cgroup_parent"):
        Spec(["true"], cgroup_parent=parent)  # type: ignore[arg-type]


IN_A_LEAF = """
import os, sys
from functools import partial
import trio
from supervisor import Limits, SetupError, Spec, Supervisor

unit_dir, unit = sys.argv[1], sys.argv[2]
# A systemd unit with Delegate=yes: the supervisor in a leaf of its own, the
# unit's cgroup free to enable controllers for its children.
with open(os.path.join(unit_dir, "supervisor", "cgroup.procs"), "w") as f:
    f.write(str(os.getpid()))
with open(os.path.join(unit_dir, "cgroup.subtree_control"), "w") as f:
    f.write("+cpu +memory +pids")
hog = ["python3", "-c", "b = bytearray(256 << 20)"]

async def main():
    async with Supervisor() as sup:
        try:
            await sup.run(Spec(hog, limits=Limits(memory_bytes=64 << 20)))
        except SetupError as exc:
            print("own:", exc.phase.name, exc.errno)
        spec = Spec(hog, limits=Limits(memory_bytes=64 << 20), cgroup_parent=unit + "/containers")
        r = await sup.run(spec, check=False)
        print("parent:", r.reason)

trio.run(main)
"""


def test_a_supervisor_in_a_leaf_gets_v2_limits_through_cgroup_parent() -> None:
    """On a pure v2 host, a supervisor in a non-root cgroup (a systemd unit's leaf) cannot
    give its own children controllers; below a parent without processes it can."""
    import errno

    with unit_cgroup("sv-test-unit", {"memory"}) as (unit, unit_dir):
        out = run_with_repo([sys.executable, "-c", IN_A_LEAF, unit_dir, unit])
        assert out.returncode == 0, out.stderr
        assert out.stdout.split("\n")[:2] == [f"own: CGROUP {errno.EOPNOTSUPP}", "parent: oom"], out
