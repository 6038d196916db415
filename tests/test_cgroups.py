"""cgroups on the real kernel: detection, limits, attach, kill, accounting, removal.

Every cgroup is created below the test process's own cgroup, named
``sv-test-<pid>-...``, and removed in a ``finally`` block (the autouse
``leak_check`` fixture of conftest.py verifies nothing is left in any
hierarchy). The test process itself is never moved; every process started here
is killed by PID (or through its cgroup) and reaped.

This host is hybrid (memory, pids, cpu, cpuacct, freezer on v1; a cgroup2
hierarchy with no usable controller): v1 is tested fully, v2 for creation,
``cgroup.procs``, ``cgroup.kill``, ``cgroup.events`` and ``cpu.stat``. v2 limit
files (memory.max, pids.max, cpu.max, ...) need delegated controllers this host
does not have; the refusal to run without them is tested instead.
"""

from __future__ import annotations

import errno
import itertools
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import _cgroup_util as cgu
import anyio
import pytest
from _util import running

from supervisor._limits import Limits, parse_size
from supervisor._parent import cgroups
from supervisor._parent.cgroups import CgroupHost, ContainerCgroup, accounting, detect, files
from supervisor._parent.cgroups import limits as cgroup_limits

pytestmark = pytest.mark.anyio

MiB = 1 << 20
_counter = itertools.count()


def _name(tag: str) -> str:
    return f"sv-test-{os.getpid()}-{tag}-{next(_counter)}"


def _read(path: str) -> str:
    with open(path) as f:
        return f.read().strip()


@pytest.fixture
def anyio_backend() -> str:
    return "trio"


@pytest.fixture(scope="module")
def host() -> CgroupHost:
    return detect()


@pytest.fixture
def v1(host: CgroupHost) -> CgroupHost:
    if not host.v1:
        pytest.skip("no cgroup v1 hierarchy on this host")
    return host.restricted("v1")


@pytest.fixture
def v2(host: CgroupHost) -> CgroupHost:
    if host.unified is None:
        pytest.skip("no cgroup2 hierarchy on this host")
    return host.restricted("v2")


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Processes a test starts: killed by PID and reaped afterwards, whatever happened."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait(5)
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def _start(procs: list[subprocess.Popen[bytes]], *argv: str) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    procs.append(proc)
    return proc


def _release(proc: subprocess.Popen[bytes]) -> None:
    """Let a process gated on ``read`` from stdin go on."""
    assert proc.stdin is not None
    proc.stdin.write(b"go\n")
    proc.stdin.flush()


async def _wait_exit(proc: subprocess.Popen[bytes], timeout: float = 5.0) -> int:
    with anyio.fail_after(timeout):
        while proc.poll() is None:
            await anyio.sleep(0.005)
    assert proc.returncode is not None
    return proc.returncode


async def _output(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> str:
    await _wait_exit(proc, timeout)
    assert proc.stdout is not None
    return proc.stdout.read().decode()


def _ppid(pid: int) -> int:
    try:
        return int(_read(f"/proc/{pid}/stat").rsplit(")", 1)[1].split()[1])
    except (FileNotFoundError, ProcessLookupError):
        return 0


def _reap_if_ours(pid: int) -> None:
    """Orphans come to us (conftest makes the test process a subreaper)."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


# -- pure functions ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [("4096", 4096), ("256M", 256 * MiB), ("256m", 256 * MiB), ("1G", 1 << 30), ("1.5g", 3 << 29), ("64KiB", 65536),
     ("2gb", 2 << 30), (" 8k ", 8192)],
)  # fmt: skip
def test_parse_size(text: str, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "M", "-1M", "0", "1X", "1.2.3G", "12 34"])
def test_parse_size_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="invalid size"):
        parse_size(text)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"memory_bytes": 0}, "memory_bytes"),
        ({"memory_swap_bytes": MiB}, "memory_swap_bytes"),
        ({"memory_bytes": 8 * MiB, "memory_swap_bytes": 7 * MiB}, "memory_swap_bytes"),
        ({"cpus": 0.001}, "cpus"),
        ({"cpus": float("inf")}, "cpus"),
        ({"cpu_weight": 0}, "cpu_weight"),
        ({"cpu_weight": 10001}, "cpu_weight"),
        ({"pids": 0}, "pids"),
        ({"memory_swappiness": 101}, "memory_swappiness"),
        ({"memory_reservation_bytes": 0}, "memory_reservation_bytes"),
        ({"cpuset_cpus": "0-"}, "cpuset_cpus"),
        ({"cpu_period_us": 500_000}, "cpu_period_us"),
        ({"cpus": 0.5, "cpu_period_us": 999}, "cpu_period_us"),
        ({"device_rules": ((True, "c 1:3"),)}, "device_rules"),
    ],
)
def test_limits_validation_names_the_field(kwargs: dict[str, float], field: str) -> None:
    with pytest.raises(ValueError, match=f"Limits.{field}"):
        Limits(**kwargs)  # type: ignore[arg-type]


def test_limits_types() -> None:
    with pytest.raises(TypeError, match=r"Limits\.pids"):
        Limits(pids=True)
    with pytest.raises(TypeError, match=r"Limits\.cpus"):
        Limits(cpus="1")  # type: ignore[arg-type]


def test_limits_conversions_and_crabcan_preset() -> None:
    assert Limits(cpu_weight=100).cpu_shares == 1024
    assert Limits(cpu_weight=1).cpu_shares == 10
    assert Limits(cpu_weight=10000).cpu_shares == 102400
    assert Limits(cpus=0.5).cfs_quota_us == 50_000
    assert Limits(cpus=2).cfs_quota_us == 200_000
    assert Limits(memory_bytes=6 * MiB, memory_swap_bytes=-1).memory_swap_bytes == -1
    preset = Limits.crabcan()
    assert (preset.memory_bytes, preset.pids, preset.cpu_weight) == (1 << 30, 64, 256)
    assert preset.cpu_shares == 2621


def test_cpu_time_split_like_cputime_adjust() -> None:
    assert accounting.split_cpu(1.0, 0, 0) == (1.0, 0.0)
    assert accounting.split_cpu(1.0, 0, 5) == (0.0, 1.0)
    assert accounting.split_cpu(1.0, 3, 1) == pytest.approx((0.75, 0.25))


def test_parse_host_pure_v2(host_dir: Path) -> None:
    mount = str(host_dir)
    os.makedirs(os.path.join(mount, "system.slice", "sv.service"))
    with open(os.path.join(mount, "system.slice", "sv.service", "cgroup.subtree_control"), "w") as f:
        f.write("cpu memory pids\n")
    mountinfo = (
        f"30 23 0:26 / {mount} rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate\n"
        "31 23 0:27 / /ro-cgroup ro,relatime - cgroup2 cgroup2 ro\n"
    )
    parsed = cgroups.parse_host("0::/system.slice/sv.service\n", mountinfo)
    assert parsed.version == "v2"
    assert parsed.v1 == ()
    assert parsed.unified is not None
    assert parsed.unified.own_dir == os.path.join(mount, "system.slice", "sv.service")
    assert parsed.unified.controllers == {"cpu", "memory", "pids"}
    assert parsed.placement("memory") is parsed.unified
    assert parsed.placement("freezer") is None


def test_v2_limit_files_and_values(host_dir: Path) -> None:
    """v2 limit writes, checked on a plain-file tree (this host delegates no v2 controller to test them live)."""
    mount = str(host_dir)
    own = os.path.join(mount, "own")
    os.mkdir(own)
    with open(os.path.join(own, "cgroup.subtree_control"), "w") as f:
        f.write("cpu memory pids\n")
    fake = cgroups.parse_host("0::/own\n", f"30 23 0:26 / {mount} rw - cgroup2 cgroup2 rw\n")
    assert fake.unified is not None
    limits = Limits(memory_bytes=64 * MiB, memory_swap_bytes=96 * MiB, cpus=0.25, cpu_weight=300, pids=20)
    cg = ContainerCgroup(fake, "c1", limits)
    d = os.path.join(own, "c1")
    os.mkdir(d)
    files = ("memory.max", "memory.swap.max", "memory.oom.group", "cpu.max", "cpu.weight", "pids.max")
    for name in files:
        open(os.path.join(d, name), "w").close()  # cgroupfs would have created them
    cg._dirs[fake.unified] = d  # what setup() records after its mkdir
    cgroup_limits.write_limits(cg.limits, cg._dir_for)
    written = {name: _read(os.path.join(d, name)) for name in files}
    assert written == {
        "memory.max": str(64 * MiB),
        "memory.swap.max": str(32 * MiB),  # memory plus swap, minus memory
        "memory.oom.group": "1",
        "cpu.max": "25000 100000",
        "cpu.weight": "300",
        "pids.max": "20",
    }


def test_parse_host_v1_bind_mounted_subtree() -> None:
    proc_cgroup = "5:cpu,cpuacct:/a/b\n4:memory:/a/b\n1:name=systemd:/a\n"
    mountinfo = (
        "40 31 0:37 /a /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct\n"
        "41 31 0:38 /other /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n"
        "42 31 0:39 / /mnt/with\\040space rw,relatime - cgroup cgroup rw,memory\n"
        "43 31 0:40 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd\n"
    )
    parsed = cgroups.parse_host(proc_cgroup, mountinfo)
    assert parsed.version == "v1"
    assert parsed.unified is None
    cpu = parsed.v1_hierarchy("cpuacct")
    assert cpu is not None
    assert cpu is parsed.v1_hierarchy("cpu")
    assert cpu.own_dir == "/sys/fs/cgroup/cpu,cpuacct/b"
    memory = parsed.v1_hierarchy("memory")
    assert memory is not None
    assert memory.own_dir == "/mnt/with space/a/b"  # the mount whose root contains /a/b
    assert len(parsed.v1) == 2


def test_parse_host_nothing_mounted() -> None:
    with pytest.raises(OSError, match="no writable cgroup hierarchy") as info:
        cgroups.parse_host("0::/\n", "22 1 0:21 / /proc rw - proc proc rw\n")
    assert info.value.errno == errno.ENOENT


def test_invalid_names(host: CgroupHost) -> None:
    for name in ("", ".", "..", "a/b", "cgroup.procs", "-x", "x" * 201, "a b"):
        with pytest.raises(ValueError, match="invalid cgroup name"):
            ContainerCgroup(host, name)


# -- detection on this host -----------------------------------------------------


def test_detect_this_host(host: CgroupHost) -> None:
    assert detect() is host  # cached
    own: dict[str, str] = {}
    with open("/proc/self/cgroup") as f:
        for line in f:
            _hid, names, path = line.rstrip("\n").split(":", 2)
            for name in names.split(",") if names else [""]:
                own[name] = path
    for hierarchy in host.v1:
        for controller in hierarchy.controllers:
            assert own[controller] == hierarchy.own_path
        assert os.path.isfile(os.path.join(hierarchy.own_dir, "cgroup.procs"))
        assert str(os.getpid()) in _read(os.path.join(hierarchy.own_dir, "cgroup.procs")).split()
    if host.unified is not None:
        assert host.unified.own_path == own[""]
        assert str(os.getpid()) in _read(os.path.join(host.unified.own_dir, "cgroup.procs")).split()
    expected = "hybrid" if host.v1 and host.unified else "v1" if host.v1 else "v2"
    assert host.version == expected
    if host.version == "hybrid":
        # This VM: memory is on v1 below /process_api/<hash>; v2 delegates nothing usable.
        memory = host.placement("memory")
        assert memory is not None
        assert memory.version == 1
        assert memory.own_dir == memory.mount + own["memory"]


# -- v1 ---------------------------------------------------------------------------


async def test_v1_create_writes_limits(v1: CgroupHost) -> None:
    limits = Limits(memory_bytes=64 * MiB, memory_swap_bytes=64 * MiB, cpus=0.5, cpu_weight=50, pids=16)
    cg = cgu.create(v1, _name("limits"), limits)
    try:
        memory, cpu, pids = (v1.v1_hierarchy(c) for c in ("memory", "cpu", "pids"))
        assert memory is not None
        assert cpu is not None
        assert pids is not None
        mdir = os.path.join(memory.own_dir, cg.name)
        assert os.path.dirname(mdir) == memory.own_dir  # below our own cgroup, nowhere else
        assert int(_read(os.path.join(mdir, "memory.limit_in_bytes"))) == 64 * MiB
        if os.path.exists(os.path.join(mdir, "memory.memsw.limit_in_bytes")):
            assert int(_read(os.path.join(mdir, "memory.memsw.limit_in_bytes"))) == 64 * MiB
        cdir = os.path.join(cpu.own_dir, cg.name)
        assert _read(os.path.join(cdir, "cpu.cfs_period_us")) == "100000"
        assert _read(os.path.join(cdir, "cpu.cfs_quota_us")) == "50000"
        assert _read(os.path.join(cdir, "cpu.shares")) == "512"
        assert _read(os.path.join(pids.own_dir, cg.name, "pids.max")) == "16"
        assert all(os.path.isdir(p) for p in cg.paths)
        assert cgu.v2_dir_fd(cg) is None
    finally:
        await cg.remove()
    assert cg.paths == []
    for hierarchy in v1.v1:
        assert not os.path.exists(os.path.join(hierarchy.own_dir, cg.name))


async def test_v1_create_writes_the_other_limits(v1: CgroupHost) -> None:
    limits = Limits(
        memory_reservation_bytes=32 * MiB,
        memory_swappiness=10,
        memory_kernel_tcp_bytes=16 * MiB,
        oom_kill_disable=True,
        cpus=0.1,
        cpu_period_us=500_000,
        cpuset_cpus="0",
        device_rules=((True, "c 1:3 rwm"), (True, "c 10:200 r")),
    )
    if v1.v1_hierarchy("cpuset") is None or v1.v1_hierarchy("devices") is None:
        pytest.skip("no v1 cpuset or devices hierarchy here")
    cg = cgu.create(v1, _name("other"), limits)
    try:
        memory, cpu, cpuset, devices = (v1.v1_hierarchy(c) for c in ("memory", "cpu", "cpuset", "devices"))
        assert memory is not None
        assert cpu is not None
        assert cpuset is not None
        assert devices is not None
        mdir = os.path.join(memory.own_dir, cg.name)
        assert int(_read(os.path.join(mdir, "memory.soft_limit_in_bytes"))) == 32 * MiB
        assert _read(os.path.join(mdir, "memory.swappiness")) == "10"
        assert int(_read(os.path.join(mdir, "memory.kmem.tcp.limit_in_bytes"))) == 16 * MiB
        assert "oom_kill_disable 1" in _read(os.path.join(mdir, "memory.oom_control"))
        cdir = os.path.join(cpu.own_dir, cg.name)
        assert _read(os.path.join(cdir, "cpu.cfs_period_us")) == "500000"
        assert _read(os.path.join(cdir, "cpu.cfs_quota_us")) == "50000"
        sdir = os.path.join(cpuset.own_dir, cg.name)
        assert _read(os.path.join(sdir, "cpuset.cpus")) == "0"
        assert _read(os.path.join(sdir, "cpuset.mems")) == _read(os.path.join(cpuset.own_dir, "cpuset.mems"))
        ddir = os.path.join(devices.own_dir, cg.name)
        assert _read(os.path.join(ddir, "devices.list")).split("\n") == ["c 1:3 rwm", "c 10:200 r"]
    finally:
        await cg.remove()
    assert cg.paths == []


async def test_name_collision_is_refused_and_untouched(v1: CgroupHost) -> None:
    name = _name("dup")
    first = cgu.create(v1, name, Limits(pids=5))
    try:
        with pytest.raises(FileExistsError, match=r"mkdir .*already exists"):
            cgu.create(v1, name, Limits(pids=7))
        pids = v1.v1_hierarchy("pids")
        assert pids is not None
        assert _read(os.path.join(pids.own_dir, name, "pids.max")) == "5"
        assert all(os.path.isdir(p) for p in first.paths)
    finally:
        await first.remove()


async def test_setup_failure_rolls_back(v1: CgroupHost, monkeypatch: pytest.MonkeyPatch) -> None:
    real_write = files.write

    def failing_write(path: str, value: str) -> None:
        if path.endswith("pids.max"):
            raise OSError(errno.EINVAL, f"write {path} {value!r}: injected")
        real_write(path, value)

    monkeypatch.setattr(cgroup_limits, "write", failing_write)
    cg = ContainerCgroup(v1, _name("rollback"), Limits(memory_bytes=64 * MiB, pids=4))
    with pytest.raises(OSError, match=r"pids\.max '4'"):
        cg.setup()
    assert cg.paths == []
    for hierarchy in v1.v1:
        assert not os.path.exists(os.path.join(hierarchy.own_dir, cg.name))
    await cg.remove()  # still safe


async def test_attach_sleep(host: CgroupHost, procs: list[subprocess.Popen[bytes]]) -> None:
    cg = cgu.create(host, _name("attach"), Limits(memory_bytes=64 * MiB))
    try:
        proc = _start(procs, "sleep", "30")
        cgu.attach(cg, proc.pid)
        for path in cg.paths:
            assert _read(os.path.join(path, "cgroup.procs")).split() == [str(proc.pid)]
        with open(f"/proc/{proc.pid}/cgroup") as f:
            memberships = f.read()
        assert memberships.count(f"/{cg.name}\n") == len(cg.paths)
        assert cg.pids() == [proc.pid]
        assert not cg.is_empty()
        assert await cg.kill(timeout=2)
        assert await _wait_exit(proc) == -signal.SIGKILL
        assert cg.is_empty()
        with pytest.raises(ProcessLookupError, match=r"cgroup\.procs"):
            cgu.attach(cg, proc.pid + 10_000_000 if proc.pid < 4_000_000 else 1 << 30)
    finally:
        await cg.remove()


@pytest.mark.parametrize("path", ["v1-freezer", "v1-no-freezer", "v2-cgroup.kill", "v2-cgroup.freeze"])
async def test_kill_tree_with_double_forked_daemon(
    host: CgroupHost, path: str, procs: list[subprocess.Popen[bytes]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every kill path ends a process tree, including a daemon that double-forked away from it."""
    version = path[:2]
    if (version == "v1" and not host.v1) or (version == "v2" and host.unified is None):
        pytest.skip(f"no cgroup {version} on this host")
    target = host.restricted(version)  # type: ignore[arg-type]
    if path == "v1-no-freezer":
        target = CgroupHost("v1", None, tuple(h for h in target.v1 if "freezer" not in h.controllers))
    if path == "v2-cgroup.freeze":  # what kernels 5.2 to 5.13 have
        real_exists = os.path.exists
        monkeypatch.setattr(os.path, "exists", lambda p: not str(p).endswith("cgroup.kill") and real_exists(p))
    writes: list[tuple[str, str]] = []
    real_write = files.write

    def spy(file: str, value: str) -> None:
        writes.append((os.path.basename(file), value))
        real_write(file, value)

    monkeypatch.setattr(files, "write", spy)
    cg = cgu.create(target, _name("tree"))
    try:
        # Attached while it waits on stdin, before it forks anything.
        proc = _start(procs, "sh", "-c", "read x; (sleep 300 &); sleep 300 & wait")
        cgu.attach(cg, proc.pid)
        _release(proc)
        with anyio.fail_after(5):
            while True:
                pids = cg.pids()
                orphans = [p for p in pids if p != proc.pid and _ppid(p) != proc.pid]
                if len(pids) >= 3 and orphans:
                    break
                await anyio.sleep(0.005)
        freezer = target.v1_hierarchy("freezer")
        freezer_dir = os.path.join(freezer.own_dir, cg.name) if freezer is not None else None
        assert (freezer_dir in cg.paths) == (path == "v1-freezer")
        t0 = time.monotonic()
        assert await cg.kill(timeout=3)
        assert time.monotonic() - t0 < 2
        assert await _wait_exit(proc) == -signal.SIGKILL
        for pid in pids:
            assert not running(pid), f"pid {pid} survived the kill"
            _reap_if_ours(pid)
        control = [w for w in writes if w[0] in ("cgroup.kill", "cgroup.freeze", "freezer.state")]
        expected = {
            "v1-freezer": [("freezer.state", "FROZEN"), ("freezer.state", "THAWED")],
            "v1-no-freezer": [],
            "v2-cgroup.kill": [("cgroup.kill", "1")],
            "v2-cgroup.freeze": [("cgroup.freeze", "1"), ("cgroup.freeze", "0")],
        }[path]
        assert control == expected
        if freezer_dir is not None:
            assert _read(os.path.join(freezer_dir, "freezer.state")) == "THAWED"
        if path == "v2-cgroup.freeze":
            assert _read(os.path.join(cg.paths[0], "cgroup.freeze")) == "0"
        assert await cg.kill()  # idempotent
    finally:
        await cg.remove()


async def test_v1_memory_limit_oom_kills_hog(v1: CgroupHost, procs: list[subprocess.Popen[bytes]]) -> None:
    limit = 48 * MiB
    cg = cgu.create(v1, _name("oom"), Limits(memory_bytes=limit, memory_swap_bytes=limit))
    try:
        hog = "import sys\nsys.stdin.readline()\nb = []\nwhile True:\n    b.append(bytearray(1 << 20))\n"
        proc = _start(procs, sys.executable, "-c", hog)
        cgu.attach(cg, proc.pid)
        assert not cg.stats().oom_killed
        _release(proc)
        assert await _wait_exit(proc, 10) == -signal.SIGKILL
        stats = cg.stats()
        assert stats.oom_killed
        assert stats.oom_kills >= 1
        assert stats.peak_memory_bytes is not None
        assert limit * 0.8 <= stats.peak_memory_bytes <= limit
    finally:
        await cg.remove()


async def test_v1_wait_oom_then_kill_whole_container(v1: CgroupHost, procs: list[subprocess.Popen[bytes]]) -> None:
    """v1 OOM-kills one process; wait_oom() + kill() end the rest (memory.oom.group's effect on v2)."""
    limit = 48 * MiB
    cg = cgu.create(v1, _name("oomgroup"), Limits(memory_bytes=limit, memory_swap_bytes=limit))
    try:
        hog = "b = []\nwhile True:\n    b.append(bytearray(1 << 20))\n"
        proc = _start(procs, "sh", "-c", f"read x; sleep 300 & {sys.executable} -c '{hog}'; sleep 300")
        cgu.attach(cg, proc.pid)
        async with anyio.create_task_group() as tg:
            tg.start_soon(_release_soon, proc)
            with anyio.fail_after(10):
                await cg.wait_oom()
        pids = cg.pids()
        assert proc.pid in pids  # the shell survived the OOM kill of the hog
        assert cg.stats().oom_killed
        assert await cg.kill(timeout=3)
        assert await _wait_exit(proc) == -signal.SIGKILL
        for pid in pids:
            assert not running(pid)
            _reap_if_ours(pid)
    finally:
        await cg.remove()


async def test_v1_wait_oom_is_cancellable_and_ends_on_removal(v1: CgroupHost) -> None:
    cg = cgu.create(v1, _name("oomwait"), Limits(memory_bytes=48 * MiB))
    try:
        with anyio.move_on_after(0.05) as scope:
            await cg.wait_oom()
        assert scope.cancelled_caught

        async def remove_soon() -> None:
            await anyio.sleep(0.05)
            await cg.remove()

        with anyio.fail_after(5):
            async with anyio.create_task_group() as tg:
                tg.start_soon(remove_soon)
                with pytest.raises(FileNotFoundError, match="removed while waiting"):
                    await cg.wait_oom()
    finally:
        await cg.remove()


async def _release_soon(proc: subprocess.Popen[bytes]) -> None:
    await anyio.sleep(0.05)  # wait_oom() registers its eventfd first
    _release(proc)


async def test_v1_pids_limit_stops_fork_loop(v1: CgroupHost, procs: list[subprocess.Popen[bytes]]) -> None:
    limit = 8
    cg = cgu.create(v1, _name("pids"), Limits(pids=limit))
    try:
        forker = (
            "import os, sys, time\nsys.stdin.readline()\nn = 0\n"
            "while n < 100:\n"
            "    try:\n        pid = os.fork()\n    except OSError:\n        break\n"
            "    if pid == 0:\n        os.close(1)\n        time.sleep(30)\n        os._exit(0)\n"
            "    n += 1\n"
            "print(n, flush=True)\n"
        )
        proc = _start(procs, sys.executable, "-c", forker)
        cgu.attach(cg, proc.pid)
        _release(proc)
        out = await _output(proc)
        assert int(out) == limit - 1  # the forking process itself counts
        pids_dir = next(p for p in cg.paths if p.startswith(v1.v1_hierarchy("pids").own_dir))  # type: ignore[union-attr]
        assert int(_read(os.path.join(pids_dir, "pids.current"))) == limit - 1
        assert "max 0" not in _read(os.path.join(pids_dir, "pids.events"))
        children = cg.pids()
        assert len(children) == limit - 1
        assert await cg.kill(timeout=3)
        for pid in children:
            _reap_if_ours(pid)
    finally:
        await cg.remove()


_BURN = (
    "import resource, sys\n"
    "print('ready', flush=True)\n"
    "sys.stdin.readline()\n"
    "r0 = resource.getrusage(resource.RUSAGE_SELF)\n"
    "x = 0\n"
    "while resource.getrusage(resource.RUSAGE_SELF).ru_utime - r0.ru_utime < 0.3:\n"
    "    for i in range(20000):\n        x += i\n"
    "r1 = resource.getrusage(resource.RUSAGE_SELF)\n"
    "print(r1.ru_utime - r0.ru_utime, r1.ru_stime - r0.ru_stime, flush=True)\n"
    "sys.stdin.readline()\n"
)


@pytest.mark.parametrize("version", ["v1", "v2"])
async def test_cpu_stats_match_rusage(host: CgroupHost, version: str, procs: list[subprocess.Popen[bytes]]) -> None:
    if (version == "v1" and not host.v1) or (version == "v2" and host.unified is None):
        pytest.skip(f"no cgroup {version} on this host")
    target = host.restricted(version)  # type: ignore[arg-type]
    cg = cgu.create(target, _name(f"cpu{version}"))
    try:
        proc = _start(procs, sys.executable, "-c", _BURN)
        assert proc.stdout is not None
        with anyio.fail_after(30):
            # After the interpreter's start-up (long when emulated): the
            # rusage deltas start at the gate.
            assert await anyio.to_thread.run_sync(proc.stdout.readline) == b"ready\n"
        cgu.attach(cg, proc.pid)
        before = cg.stats()
        _release(proc)
        with anyio.fail_after(10):
            line = await anyio.to_thread.run_sync(proc.stdout.readline)
        user, system = map(float, line.split())
        stats = cg.stats()  # while it waits: its exit (slow when emulated) is not counted
        _release(proc)
        await _wait_exit(proc)
        used = (stats.cpu_user_s - before.cpu_user_s) + (stats.cpu_system_s - before.cpu_system_s)
        assert user >= 0.3
        # The cgroup also sees the print after the last getrusage; 10 ms ticks split user/system.
        assert used == pytest.approx(user + system, abs=0.05 + 0.1 * (user + system))
        assert stats.cpu_user_s - before.cpu_user_s == pytest.approx(user, abs=0.06 + 0.1 * user)
    finally:
        await cg.remove()


async def test_remove_kills_stragglers_and_nested_cgroups(
    host: CgroupHost, procs: list[subprocess.Popen[bytes]]
) -> None:
    cg = cgu.create(host, _name("busy"), Limits(memory_bytes=64 * MiB))
    paths = cg.paths
    try:
        proc = _start(procs, "sleep", "30")
        cgu.attach(cg, proc.pid)
        # A container may create cgroups inside its own; they go too.
        for path in paths:
            os.mkdir(os.path.join(path, "nested"))
        with anyio.CancelScope() as scope:
            scope.cancel()
            await cg.remove()  # shielded: completes although cancelled
        assert await _wait_exit(proc) == -signal.SIGKILL
        assert cg.paths == []
        await cg.remove()  # idempotent
    finally:
        await cg.remove()
    for path in paths:
        assert not os.path.exists(path)


async def test_leftovers_are_found_and_adopted(host: CgroupHost, procs: list[subprocess.Popen[bytes]]) -> None:
    prefix = f"sv-test-{os.getpid()}-crash"
    cg = cgu.create(host, _name("crash"), Limits(memory_bytes=64 * MiB))
    try:
        proc = _start(procs, "sleep", "30")
        cgu.attach(cg, proc.pid)
        assert cgu.find_leftovers(host, prefix) == [cg.name]
        adopted = cgu.adopt(host, cg.name)
        assert sorted(adopted.paths) == sorted(cg.paths)
        assert adopted.pids() == [proc.pid]
        await adopted.remove()
        assert await _wait_exit(proc) == -signal.SIGKILL
        assert cgu.find_leftovers(host, prefix) == []
    finally:
        await cg.remove()
    with pytest.raises(ValueError, match="prefix"):
        cgu.find_leftovers(host, "")


async def test_sweep_paths_from_the_ledger(host: CgroupHost, procs: list[subprocess.Popen[bytes]]) -> None:
    from supervisor._parent import rundir

    cg = ContainerCgroup(host, _name("sweep"), Limits(memory_bytes=64 * MiB, pids=10))
    planned = cg.planned_paths
    cg.setup()
    try:
        assert cg.paths == planned
        proc = _start(procs, "sleep", "30")
        cgu.attach(cg, proc.pid)
        rundir._SWEEPERS["cgroup"]({"kind": "cgroup", "paths": planned})  # what a crash-recovery sweep does
        assert not any(os.path.exists(p) for p in planned)
        assert await _wait_exit(proc) == -signal.SIGKILL
        cgroups.sweep_paths(planned)  # already gone: a no-op
        own_dirs = [h.own_dir for h in host.v1 if h.own_path != "/"]  # never our own cgroup
        for bad in ("/tmp/x", "/sys/fs/cgroup/../../tmp", planned[0] + "/..", *own_dirs):
            with pytest.raises(ValueError, match="refusing to sweep"):
                cgroups.sweep_paths([bad])
    finally:
        await cg.remove()  # the directories went behind its back: still fine
    assert cg.paths == []


async def test_hybrid_memory_on_v1_killed_through_v2(host: CgroupHost, procs: list[subprocess.Popen[bytes]]) -> None:
    if host.version != "hybrid":
        pytest.skip("not a hybrid host")
    cg = cgu.create(host, _name("hybrid"), Limits(memory_bytes=64 * MiB, pids=10, cpus=1.5))
    try:
        assert host.unified is not None
        v2dir = os.path.join(host.unified.own_dir, cg.name)
        assert v2dir in cg.paths
        freezer = host.v1_hierarchy("freezer")
        assert freezer is not None
        assert os.path.join(freezer.own_dir, cg.name) not in cg.paths  # cgroup.kill does the job
        proc = _start(procs, "sh", "-c", "read x; sleep 300 & sleep 300 & wait")
        cgu.attach(cg, proc.pid)
        _release(proc)
        with anyio.fail_after(5):
            while len(cg.pids()) < 3:
                await anyio.sleep(0.005)
        pids = cg.pids()
        assert await cg.kill(timeout=3)
        assert await _wait_exit(proc) == -signal.SIGKILL
        assert not any(running(p) for p in pids)
        stats = cg.stats()
        assert stats.peak_memory_bytes is not None
        assert stats.peak_memory_bytes > 0
        assert not stats.oom_killed
    finally:
        await cg.remove()


# -- v2 ---------------------------------------------------------------------------


async def test_v2_create_attach_kill_events(v2: CgroupHost, procs: list[subprocess.Popen[bytes]]) -> None:
    assert v2.unified is not None
    cg = cgu.create(v2, _name("v2"))
    try:
        (path,) = cg.paths
        assert path == os.path.join(v2.unified.own_dir, cg.name)
        assert _read(os.path.join(path, "cgroup.events")).splitlines()[0] == "populated 0"
        proc = _start(procs, "sh", "-c", "read x; sleep 300 & sleep 300 & wait")
        cgu.attach(cg, proc.pid)
        assert _read(os.path.join(path, "cgroup.procs")).split() == [str(proc.pid)]
        assert "populated 1" in _read(os.path.join(path, "cgroup.events"))
        _release(proc)
        with anyio.fail_after(5):
            while len(cg.pids()) < 3:
                await anyio.sleep(0.005)
        stats = cg.stats()  # cpu.stat needs no controller
        assert stats.cpu_user_s >= 0
        assert stats.cpu_system_s >= 0
        if "memory" in v2.unified.controllers:
            assert stats.peak_memory_bytes is not None
            assert stats.peak_memory_bytes > 0
        else:
            assert stats.peak_memory_bytes is None  # no memory controller delegated here
        pids = cg.pids()
        assert os.path.exists(os.path.join(path, "cgroup.kill"))
        assert await cg.kill(timeout=3)
        assert "populated 0" in _read(os.path.join(path, "cgroup.events"))
        assert await _wait_exit(proc) == -signal.SIGKILL
        assert not any(running(p) for p in pids)
        fd = cgu.v2_dir_fd(cg)
        assert fd is not None
        try:
            assert os.path.samestat(os.fstat(fd), os.stat(path))
        finally:
            os.close(fd)
    finally:
        await cg.remove()
    assert not os.path.exists(path)


ENTER = """
import os, sys
os.setgroups([]); os.setresgid(65534, 65534, 65534); os.setresuid(65534, 65534, 65534)
for fd in map(int, sys.argv[1:]):
    os.write(fd, b"0")
print(open("/proc/self/cgroup").read(), end="")
"""


async def test_entry_fds_let_an_unprivileged_process_join_only_itself(host: CgroupHost) -> None:
    """Through the v1 ``tasks`` and v2 ``cgroup.procs`` files we opened (as
    root), a process of another uid joins the cgroup: the kernel checks the
    opener's credentials. ``tasks`` moves the writer's thread alone, without
    the global lock a move by PID takes."""
    cg = cgu.create(host, _name("entry"))
    entry = cg.entry_fds()
    try:
        kinds = [kind for kind, _fd, _path in entry]
        assert kinds.count("clone") == kinds.count("procs") == (1 if host.unified is not None else 0)
        assert kinds.count("tasks") == len(cg.paths) - kinds.count("clone")
        writable = [fd for kind, fd, _path in entry if kind in ("tasks", "procs")]
        out = subprocess.run(
            [sys.executable, "-c", ENTER, *map(str, writable)],
            pass_fds=writable,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert out.returncode == 0, out.stderr
        joined = {line.split(":", 2)[2] for line in out.stdout.splitlines()}
        for path in cg.paths:
            assert any(path.endswith(g) and g.endswith("/" + cg.name) for g in joined), (path, joined)
    finally:
        for _kind, fd, _path in entry:
            os.close(fd)
        await cg.remove()


async def test_v2_limit_without_delegated_controller_is_refused(v2: CgroupHost) -> None:
    assert v2.unified is not None
    if "cpu" in v2.unified.controllers:
        pytest.skip("this host delegates the cpu controller on v2")
    with pytest.raises(OSError, match=r"'cpu' is needed for cpus=0\.5.*cgroup\.subtree_control") as info:
        cgu.create(v2, _name("nocpu"), Limits(cpus=0.5))
    assert info.value.errno == errno.EOPNOTSUPP
    assert not [n for n in os.listdir(v2.unified.own_dir) if n.startswith(f"sv-test-{os.getpid()}-nocpu")]
