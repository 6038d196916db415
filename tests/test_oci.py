"""The OCI runtime ``supervisor-oci``, driven through its command line as engines drive runc.

Each test makes a bundle (the session's busybox root and a ``config.json``
like ``runc spec``'s), runs the runtime's commands in subprocesses, and
checks the state, the container from inside, and that nothing is left: the
fixture force-deletes whatever a test left under its ``--root``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from _cgroup_util import engine_parent
from _util import IN_SANDBOX, REPO

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="the OCI runtime runs as root"),
    pytest.mark.skipif(IN_SANDBOX, reason="starts containers"),
]

DEFAULT_CAPS = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]


def base_config(args: list[str]) -> dict[str, Any]:
    """A config.json as ``runc spec`` writes it, running ``args``."""
    return {
        "ociVersion": "1.0.2",
        "process": {
            "terminal": False,
            "user": {"uid": 0, "gid": 0},
            "args": args,
            "env": ["PATH=/bin", "TERM=xterm"],
            "cwd": "/",
            "capabilities": {name: list(DEFAULT_CAPS) for name in ("bounding", "effective", "permitted")},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": True,
        },
        "root": {"path": "rootfs", "readonly": True},
        "hostname": "oci-test",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "mode=755"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "size=65536k"]},
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "ro"]},
            {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": ["ro"]},
        ],
        "linux": {
            "resources": {"devices": [{"allow": False, "access": "rwm"}]},
            "namespaces": [{"type": t} for t in ("pid", "network", "ipc", "uts", "mount")],
            "maskedPaths": ["/proc/kcore", "/proc/keys", "/sys/firmware"],
            "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/sys"],
        },
    }


class Oci:
    """The runtime under one private ``--root``, and bundles for it."""

    def __init__(self, root: str, rootfs: str, tmp: Path) -> None:
        self.root = root
        self.rootfs = rootfs
        self.tmp = tmp
        self.pids: set[int] = set()

    def __call__(self, *args: str, check: bool = False, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """One command; its output through files (a created container keeps its stdio open)."""
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            done = subprocess.run(
                [sys.executable, "-P", "-m", "supervisor._oci", "--root", self.root, *args],
                env={**os.environ, "PYTHONPATH": REPO},
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                timeout=timeout,
                check=False,
            )
            out.seek(0)
            err.seek(0)
            result = subprocess.CompletedProcess(done.args, done.returncode, out.read().decode(), err.read().decode())
        if check:
            assert result.returncode == 0, f"supervisor-oci {' '.join(args)}: {result.stderr}"
        return result

    def bundle(self, config: dict[str, Any], name: str = "b") -> str:
        path = self.tmp / name
        path.mkdir()
        os.symlink(self.rootfs, path / "rootfs")
        (path / "config.json").write_text(json.dumps(config))
        return str(path)

    def state(self, cid: str) -> dict[str, Any]:
        done = self("state", cid, check=True)
        state: dict[str, Any] = json.loads(done.stdout)
        if "pid" in state:
            self.pids.add(state["pid"])
        return state

    def create(self, cid: str, bundle: str, *extra: str) -> dict[str, Any]:
        self("create", "--bundle", bundle, *extra, cid, check=True)
        return self.state(cid)

    def wait_status(self, cid: str, status: str, timeout: float = 10) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            state = self.state(cid)
            if state["status"] == status or time.monotonic() > deadline:
                return state
            time.sleep(0.02)


def reap(pids: set[int]) -> None:
    """Reap the containers' PID 1s that came back to this process (a child subreaper)."""
    for pid in pids:
        for _ in range(500):
            try:
                if os.waitpid(pid, os.WNOHANG)[0]:
                    break
            except ChildProcessError:
                break
            time.sleep(0.01)


@pytest.fixture
def oci(busybox_rootfs: str) -> Iterator[Oci]:
    tmp = Path(tempfile.mkdtemp(prefix="supervisor-test-oci-"))
    runtime = Oci(str(tmp / "root"), busybox_rootfs, tmp)
    try:
        yield runtime
    finally:
        for cid in runtime("list", "--quiet").stdout.split():
            with_pid = runtime("state", cid)
            if with_pid.returncode == 0:
                runtime.pids.add(json.loads(with_pid.stdout).get("pid", 0))
            runtime("delete", "--force", cid)
        reap({p for p in runtime.pids if p > 0})
        leftover = os.listdir(runtime.root) if os.path.isdir(runtime.root) else []
        shutil.rmtree(tmp)
        assert leftover == [], f"containers left under --root: {leftover}"


def check_state_schema(state: dict[str, Any]) -> None:
    """The runtime spec's state schema (schema/state-schema.json): its required fields and types."""
    assert set(state) <= {"ociVersion", "id", "status", "pid", "bundle", "annotations"}
    assert isinstance(state["ociVersion"], str)
    assert state["ociVersion"].startswith("1.")
    assert isinstance(state["id"], str)
    assert state["id"]
    assert state["status"] in ("creating", "created", "running", "stopped", "paused")
    assert isinstance(state["bundle"], str)
    assert os.path.isabs(state["bundle"])
    if state["status"] in ("created", "running", "paused"):
        assert isinstance(state["pid"], int)
        assert state["pid"] > 0
    if "annotations" in state:
        assert all(isinstance(k, str) and isinstance(v, str) for k, v in state["annotations"].items())


def comm(pid: int) -> str:
    return Path(f"/proc/{pid}/comm").read_text().strip()


def test_lifecycle_create_start_kill_delete(oci: Oci) -> None:
    config = base_config(["sleep", "60"])
    config["annotations"] = {"org.example.key": "value"}
    bundle = oci.bundle(config)
    pid_file = oci.tmp / "pid"
    state = oci.create("c1", bundle, "--pid-file", str(pid_file))
    check_state_schema(state)
    assert state["status"] == "created"
    assert state["bundle"] == bundle
    assert state["annotations"] == {"org.example.key": "value"}
    pid = state["pid"]
    assert int(pid_file.read_text()) == pid
    # The container outlived create, and waits before its execve.
    assert comm(pid) == "sv-pid1-setup"
    assert os.readlink(f"/proc/{pid}/ns/pid") != os.readlink("/proc/self/ns/pid")

    oci("start", "c1", check=True)
    state = oci.state("c1")
    check_state_schema(state)
    assert state["status"] == "running"
    assert state["pid"] == pid
    assert comm(pid) == "sleep"
    listed = json.loads(oci("list", "--format", "json", check=True).stdout)
    assert [(c["id"], c["status"], c["pid"]) for c in listed] == [("c1", "running", pid)]
    assert json.loads(oci("ps", "--format", "json", "c1", check=True).stdout) == [pid]

    oci("pause", "c1", check=True)
    assert oci.state("c1")["status"] == "paused"
    oci("resume", "c1", check=True)
    assert oci.state("c1")["status"] == "running"

    oci("kill", "c1", "KILL", check=True)
    state = oci.wait_status("c1", "stopped")
    check_state_schema(state)
    assert state["status"] == "stopped"
    assert "pid" not in state
    oci("delete", "c1", check=True)
    gone = oci("state", "c1")
    assert gone.returncode == 1
    assert gone.stderr.strip() == "supervisor-oci: container 'c1' does not exist"


def test_the_spec_forbids_what_the_state_refuses(oci: Oci) -> None:
    bundle = oci.bundle(base_config(["sleep", "60"]))
    oci.create("c2", bundle)
    refused = oci("delete", "c2")
    assert refused.returncode == 1
    assert "it is created, not stopped" in refused.stderr
    assert oci.state("c2")["status"] == "created"  # the error left it as it was
    assert oci("create", "--bundle", bundle, "c2").stderr.strip() == "supervisor-oci: container 'c2' already exists"
    oci("start", "c2", check=True)
    again = oci("start", "c2")
    assert again.returncode == 1
    assert "it is running, not created" in again.stderr
    oci("kill", "c2", "SIGKILL", check=True)
    oci.wait_status("c2", "stopped")
    late = oci("kill", "c2", "TERM")
    assert late.returncode == 1
    assert "it is stopped" in late.stderr
    for command in (["start"], ["kill"], ["delete"], ["pause"], ["state"]):
        unknown = oci(*command, "nope")
        assert unknown.returncode == 1
        assert unknown.stderr.strip() == "supervisor-oci: container 'nope' does not exist", command
    oci("delete", "c2", check=True)


def test_delete_force_kills_a_running_container_and_its_cgroup(oci: Oci) -> None:
    bundle = oci.bundle(base_config(["sh", "-c", "sleep 60 & sleep 60"]))
    pid = oci.create("c3", bundle)["pid"]
    record = json.loads((Path(oci.root) / "c3" / "state.json").read_text())
    cgroups = record["supervisor"]["cgroup"]
    assert cgroups
    assert all(os.path.isdir(p) for p in cgroups)
    oci("start", "c3", check=True)
    oci("delete", "--force", "c3", check=True)
    reap({pid})
    assert not any(os.path.exists(p) for p in cgroups)
    assert not (Path(oci.root) / "c3").exists()


def test_state_stays_valid_json_during_kill(oci: Oci) -> None:
    bundle = oci.bundle(base_config(["sleep", "60"]))
    oci.create("c4", bundle)
    oci("start", "c4", check=True)
    with ThreadPoolExecutor(max_workers=10) as pool:
        futures = [pool.submit(oci, "state", "c4") for _ in range(50)]
        oci("kill", "c4", "KILL", check=True)
        results = [f.result() for f in futures]
    seen = set()
    for done in results:
        assert done.returncode == 0, done.stderr
        state = json.loads(done.stdout)
        check_state_schema(state)
        seen.add(state["status"])
    assert seen <= {"running", "stopped"}
    oci.wait_status("c4", "stopped")
    oci("delete", "c4", check=True)


@pytest.mark.parametrize(("script", "code"), [("exit 0", 0), ("exit 7", 7)])
def test_run_exits_with_the_process(oci: Oci, script: str, code: int) -> None:
    bundle = oci.bundle(base_config(["sh", "-c", script]))
    done = oci("run", "--bundle", bundle, "r1")
    assert done.returncode == code, done.stderr
    assert oci("list", "--quiet").stdout.split() == []


def test_run_of_a_killed_process_exits_128_plus_the_signal(oci: Oci) -> None:
    bundle = oci.bundle(base_config(["sleep", "60"]))
    running = subprocess.Popen(
        [sys.executable, "-P", "-m", "supervisor._oci", "--root", oci.root, "run", "--bundle", bundle, "r2"],
        env={**os.environ, "PYTHONPATH": REPO},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while oci("state", "r2").stdout.count('"running"') == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        oci("kill", "r2", "KILL", check=True)
        assert running.wait(30) == 128 + 9
    finally:
        if running.poll() is None:
            running.kill()
            running.wait()
    assert oci("list", "--quiet").stdout.split() == []


def inside(oci: Oci, config: dict[str, Any], name: str = "b") -> str:
    """Run the config's process with ``run``; its output (exit 0 checked)."""
    bundle = oci.bundle(config, name)
    done = oci("run", "--bundle", bundle, "in-" + name)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_config_is_honoured_inside(oci: Oci, host_dir: Path) -> None:
    (host_dir / "data").write_text("from the host\n")
    script = """
        echo host=$(hostname) cwd=$(pwd) env=$GREETING
        echo ids=$(id -u):$(id -g) groups=$(id -G)
        echo nofile=$(ulimit -n)
        grep -E '^(CapBnd|CapEff|NoNewPrivs)' /proc/self/status
        cat /mnt/data; echo x > /mnt/data 2>/dev/null && echo bind=rw || echo bind=ro
        echo y > /scratch/f && echo tmpfs=rw
        touch /newfile 2>/dev/null && echo root=rw || echo root=ro
        test -c /proc/keys && echo keys=masked
        echo ping=$(cat /proc/sys/net/ipv4/ping_group_range)
        cat /proc/self/uid_map
        ls /sys/fs/cgroup/ | grep -c procs
        ls -d /dev/mqueue
    """
    config = base_config(["sh", "-c", script])
    config["process"]["cwd"] = "/tmp"
    config["process"]["env"].append("GREETING=hello")
    config["process"]["user"] = {"uid": 1000, "gid": 1000, "additionalGids": [5, 7]}
    config["process"]["capabilities"] = {"bounding": ["CAP_KILL"]}
    config["process"]["rlimits"] = [{"type": "RLIMIT_NOFILE", "hard": 512, "soft": 256}]
    config["mounts"] += [
        {"destination": "/mnt", "type": "bind", "source": str(host_dir), "options": ["rbind", "ro"]},
        {"destination": "/scratch", "type": "tmpfs", "source": "tmpfs", "options": ["size=1m"]},
    ]
    config["linux"]["sysctl"] = {"net.ipv4.ping_group_range": "0 0"}
    out = inside(oci, config)
    assert "host=oci-test cwd=/tmp env=hello" in out
    assert "ids=1000:1000 groups=1000 5 7" in out
    assert "nofile=256" in out
    assert "CapBnd:\t0000000000000020" in out  # CAP_KILL alone
    assert "CapEff:\t0000000000000000" in out
    assert "NoNewPrivs:\t1" in out
    assert "from the host" in out
    assert "bind=ro" in out
    assert "tmpfs=rw" in out
    assert "root=ro" in out
    assert "keys=masked" in out  # the null device over it
    assert "ping=0 0" in out
    assert "0          0 4294967295" in out  # no user namespace in the config: the identity map
    assert (host_dir / "data").read_text() == "from the host\n"


def test_capability_sets_no_new_privs_and_dev_shm_as_the_config_says(oci: Oci) -> None:
    config = base_config(
        ["sh", "-c", "grep -E '^(CapInh|CapAmb|NoNewPrivs)' /proc/self/status; grep ' /dev/shm ' /proc/self/mountinfo"]
    )
    config["process"]["capabilities"] = {
        name: ["CAP_KILL", "CAP_CHOWN"] for name in ("bounding", "effective", "permitted", "inheritable")
    }
    config["process"]["capabilities"]["ambient"] = ["CAP_KILL"]
    config["process"]["noNewPrivileges"] = False
    out = inside(oci, config)
    assert "CapInh:\t0000000000000021" in out
    assert "CapAmb:\t0000000000000020" in out
    assert "NoNewPrivs:\t0" in out
    shm = [line for line in out.splitlines() if " /dev/shm " in line]
    assert len(shm) == 1, out  # the bundle's alone
    assert " - tmpfs shm " in shm[0]


def test_mounts_follow_the_configs_order(oci: Oci, host_dir: Path) -> None:
    # /dev/shm between /dev/pts and /dev/mqueue, a bind inside a tmpfs, and
    # /sys last: mountinfo lists them so (the bound device nodes aside).
    config = base_config(["cat", "/proc/self/mountinfo"])
    standard = config["mounts"][:-1]
    sys_mount = standard.pop()
    config["mounts"] = [
        *standard,
        {"destination": "/scratch", "type": "tmpfs", "source": "tmpfs", "options": ["size=1m"]},
        {"destination": "/scratch/in", "type": "bind", "source": str(host_dir), "options": ["rbind"]},
        sys_mount,
    ]
    out = inside(oci, config)
    points = [line.split()[4] for line in out.splitlines()]
    listed = [m["destination"] for m in config["mounts"]]
    assert [p for p in points if p in listed] == listed, out


def test_no_new_privs_false_with_a_seccomp_filter(oci: Oci) -> None:
    # The filter is loaded with CAP_SYS_ADMIN (kept for it alone), and it is in force.
    config = base_config(["sh", "-c", "grep -E '^(CapEff|CapPrm|NoNewPrivs|Seccomp):' /proc/self/status; mkdir /tmp/d"])
    config["process"]["noNewPrivileges"] = False
    config["mounts"].append({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs"})
    config["linux"]["seccomp"] = {
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"}],
    }
    done = oci("run", "--bundle", oci.bundle(config), "nnp")
    assert done.returncode == 1, done.stderr
    assert "NoNewPrivs:\t0" in done.stdout
    assert "Seccomp:\t2" in done.stdout
    wanted = f"{sum(1 << n for n in (29, 5, 10)):016x}"  # AUDIT_WRITE, KILL, NET_BIND_SERVICE
    assert f"CapEff:\t{wanted}" in done.stdout
    assert f"CapPrm:\t{wanted}" in done.stdout
    assert "Operation not permitted" in done.stderr


def test_a_non_root_user_keeps_its_ambient_capabilities(oci: Oci) -> None:
    config = base_config(["grep", "-E", "^Cap(Inh|Prm|Eff|Amb):", "/proc/self/status"])
    config["process"]["user"] = {"uid": 1000, "gid": 1000}
    config["process"]["capabilities"] = {
        name: ["CAP_KILL", "CAP_CHOWN"] for name in ("bounding", "effective", "permitted", "inheritable", "ambient")
    }
    out = inside(oci, config)
    assert out.split()[1::2] == ["0000000000000021"] * 4, out


@pytest.mark.parametrize("kind", ["shared", "unbindable", "private"])
def test_root_and_mount_propagation_as_the_config_says(oci: Oci, kind: str) -> None:
    config = base_config(["cat", "/proc/self/mountinfo"])
    config["linux"]["rootfsPropagation"] = kind
    config["mounts"] += [
        {"destination": "/s", "type": "tmpfs", "source": "tmpfs", "options": ["shared"]},
        {"destination": "/p", "type": "tmpfs", "source": "tmpfs", "options": ["private"]},
    ]
    lines = {line.split()[4]: line.split(" - ")[0] for line in inside(oci, config).splitlines()}
    assert ("shared:" in lines["/"]) == (kind == "shared"), lines["/"]
    assert ("unbindable" in lines["/"]) == (kind == "unbindable"), lines["/"]
    assert "shared:" in lines["/s"]
    assert "shared:" not in lines["/p"]


@contextlib.contextmanager
def namespace_holder(*options: str) -> Iterator[int]:
    """A process of the test's own in new namespaces (``unshare`` options); its pid."""
    holder = subprocess.Popen(["unshare", *options, "sleep", "60"])
    try:
        deadline = time.monotonic() + 10
        while os.readlink(f"/proc/{holder.pid}/ns/net") == os.readlink("/proc/self/ns/net"):
            assert time.monotonic() < deadline, "unshare did not enter its namespaces"
            time.sleep(0.01)
        yield holder.pid
    finally:
        holder.kill()
        holder.wait()


def test_namespaces_joined_by_path(oci: Oci) -> None:
    # A network and a UTS namespace of a process of the test's own: the
    # container is in them, and its hostname is set in the joined one.
    with namespace_holder("--net", "--uts") as pid:
        config = base_config(["sh", "-c", "for n in net uts; do readlink /proc/self/ns/$n; done; hostname"])
        config["linux"]["namespaces"] = [{"type": t} for t in ("pid", "ipc", "mount")] + [
            {"type": t, "path": f"/proc/{pid}/ns/{n}"} for t, n in (("network", "net"), ("uts", "uts"))
        ]
        out = inside(oci, config).split()
        assert out[:2] == [os.readlink(f"/proc/{pid}/ns/{n}") for n in ("net", "uts")]
        assert out[2] == "oci-test"
        done = subprocess.run(["nsenter", "-t", str(pid), "-u", "hostname"], capture_output=True, text=True, check=True)
        assert done.stdout.strip() == "oci-test"


def test_exec_enters_the_namespaces_a_bundle_joined_by_path(oci: Oci) -> None:
    with namespace_holder("--net") as pid:
        config = base_config(["sleep", "60"])
        config["linux"]["namespaces"] = [{"type": t} for t in ("pid", "ipc", "uts", "mount")]
        config["linux"]["namespaces"].append({"type": "network", "path": f"/proc/{pid}/ns/net"})
        config["linux"]["rootfsPropagation"] = "rprivate"
        config["linux"]["devices"] = [{"path": "/dev/sv-x", "type": "c", "major": 10, "minor": 667}]
        oci.create("j1", oci.bundle(config))
        oci("start", "j1", check=True)
        done = oci("exec", "j1", "sh", "-c", "readlink /proc/self/ns/net; ls /dev/sv-x")
        assert done.returncode == 0, done.stderr
        assert done.stdout.split() == [os.readlink(f"/proc/{pid}/ns/net"), "/dev/sv-x"]
        oci("delete", "--force", "j1", check=True)


def test_a_device_path_that_exists_is_left_as_it_is(oci: Oci, host_dir: Path) -> None:
    (host_dir / "keep").write_text("the host's file\n")
    config = base_config(["sh", "-c", "cat /h/keep; grep ' /dev ' /proc/self/mountinfo"])
    config["mounts"].append({"destination": "/h", "type": "bind", "source": str(host_dir), "options": ["rbind"]})
    config["linux"]["devices"] = [{"path": "/h/keep", "type": "c", "major": 10, "minor": 668}]
    out = inside(oci, config)
    assert "the host's file" in out
    assert (host_dir / "keep").read_text() == "the host's file\n"
    devices_listed = [line for line in out.splitlines() if " /dev " in line]
    assert "nodev" not in devices_listed[0].split(" - ")[0]  # nodes made here must open


def test_dev_is_nodev_without_devices_to_make(oci: Oci) -> None:
    out = inside(oci, base_config(["grep", " /dev ", "/proc/self/mountinfo"]))
    assert "nodev" in out.split(" - ")[0]


def test_a_non_root_user_with_inheritable_capabilities_alone(oci: Oci) -> None:
    config = base_config(["grep", "-E", "^Cap(Inh|Eff|Amb):", "/proc/self/status"])
    config["process"]["user"] = {"uid": 1000, "gid": 1000}
    config["process"]["capabilities"] = {"bounding": ["CAP_KILL"], "inheritable": ["CAP_KILL"]}
    out = inside(oci, config)
    assert out.split()[1::2] == ["0000000000000020", "0000000000000000", "0000000000000000"], out


def test_exec_into_a_user_namespace_with_maps_of_two_sizes(oci: Oci) -> None:
    config = base_config(["sleep", "60"])
    config["linux"]["namespaces"].append({"type": "user"})
    config["linux"]["uidMappings"] = [{"containerID": 0, "hostID": 200000, "size": 65536}]
    config["linux"]["gidMappings"] = [{"containerID": 0, "hostID": 300000, "size": 1000}]
    oci.create("j2", oci.bundle(config))
    oci("start", "j2", check=True)
    done = oci("exec", "j2", "cat", "/proc/self/gid_map")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["0", "300000", "1000"]
    oci("delete", "--force", "j2", check=True)


def test_device_nodes_without_a_user_namespace(oci: Oci) -> None:
    config = base_config(["sh", "-c", "stat -c '%F %t:%T %a %u:%g' /dev/sv-c /dev/sv-p; cat /proc/self/uid_map"])
    config["linux"]["devices"] = [
        {"path": "/dev/sv-c", "type": "c", "major": 10, "minor": 666, "fileMode": 0o640, "uid": 5, "gid": 6},
        {"path": "/dev/sv-p", "type": "p", "fileMode": 0o600},
    ]
    out = inside(oci, config).splitlines()
    assert out[0] == "character special file a:29a 640 5:6"
    assert out[1] == "fifo 0:0 600 0:0"
    assert out[2].split() == ["0", "0", "4294967295"]  # the host's own user namespace


def test_a_user_namespace_with_its_mapping(oci: Oci) -> None:
    config = base_config(["cat", "/proc/self/uid_map", "/proc/self/gid_map"])
    config["linux"]["namespaces"].append({"type": "user"})
    config["linux"]["uidMappings"] = [{"containerID": 0, "hostID": 200000, "size": 65536}]
    config["linux"]["gidMappings"] = [{"containerID": 0, "hostID": 300000, "size": 1000}]
    config["root"]["readonly"] = True
    out = inside(oci, config)
    assert out.split() == ["0", "200000", "65536", "0", "300000", "1000"]


def test_masked_and_read_only_paths_anywhere_in_the_root(oci: Oci, host_dir: Path) -> None:
    (host_dir / "secret").write_text("hidden\n")
    (host_dir / "sub").mkdir()
    (host_dir / "sub" / "f").write_text("visible\n")
    script = """
        echo secret=$(cat /h/secret) sub=$(ls /h/sub | wc -l)
        touch /w/x 2>/dev/null && echo w=rw || echo w=ro
        touch /h/ok && echo h=rw
    """
    config = base_config(["sh", "-c", script])
    config["mounts"] += [
        {"destination": "/w", "type": "tmpfs", "source": "tmpfs"},
        {"destination": "/h", "type": "bind", "source": str(host_dir), "options": ["rbind"]},
    ]
    config["linux"]["maskedPaths"] += ["/h/secret", "/h/sub", "/no/such/path"]
    config["linux"]["readonlyPaths"] += ["/w"]
    out = inside(oci, config)
    assert "secret= sub=0" in out
    assert "w=ro" in out
    assert "h=rw" in out
    assert (host_dir / "secret").read_text() == "hidden\n"
    (host_dir / "ok").unlink()


def test_resources_become_the_cgroup_limits(oci: Oci) -> None:
    config = base_config(["sleep", "60"])
    config["linux"]["resources"] = {
        "memory": {"limit": 64 * 1024 * 1024},
        "pids": {"limit": 32},
        "devices": [{"allow": False, "access": "rwm"}, {"allow": True, "type": "c", "major": 10, "minor": 229}],
    }
    v1_cpu = os.path.exists("/sys/fs/cgroup/cpu/cpu.shares")
    if v1_cpu:  # exact v1 values (a v2 host here may not delegate cpu)
        config["linux"]["resources"]["cpu"] = {"shares": 2048, "quota": 50000, "period": 500000}
    config["linux"]["cgroupsPath"] = "oci-test-parent/limited"
    bundle = oci.bundle(config)
    oci.create("c5", bundle)
    record = json.loads((Path(oci.root) / "c5" / "state.json").read_text())
    paths = record["supervisor"]["cgroup"]
    assert all(p.endswith("/oci-test-parent/limited") for p in paths)
    values = {}
    for path in paths:
        for name in (
            "memory.max",
            "memory.limit_in_bytes",
            "pids.max",
            "cpu.shares",
            "cpu.cfs_period_us",
            "devices.list",
        ):
            if os.path.exists(os.path.join(path, name)):
                values[name] = Path(path, name).read_text().strip()
    assert str(64 * 1024 * 1024) in (values.get("memory.max"), values.get("memory.limit_in_bytes"))
    assert values.get("pids.max") == "32"
    if v1_cpu:
        assert (values["cpu.shares"], values["cpu.cfs_period_us"]) == ("2048", "500000")
    if os.path.exists("/sys/fs/cgroup/devices/devices.list"):  # v1: denied but for the rules and the defaults
        assert values["devices.list"].splitlines()[:2] == ["c 10:229 rwm", "c 1:3 rwm"]
    parents = record["supervisor"]["parents"]
    oci("delete", "--force", "c5", check=True)
    assert not any(os.path.exists(p) for p in paths + parents)


@pytest.mark.parametrize(
    ("change", "where"),
    [
        (lambda c: c["mounts"].append({"destination": "/x", "type": "nfs", "source": "h:/x"}), "mounts[7].type"),
        (lambda c: c["linux"]["resources"].update(blockIO={"weight": 10}), "linux.resources.blockIO"),
        (lambda c: c["linux"].update(sysctl={"kernel.domainname": "x"}), "linux.sysctl.kernel.domainname"),
        (
            lambda c: c["linux"]["namespaces"].append({"type": "cgroup", "path": "/proc/1/ns/cgroup"}),
            "linux.namespaces[5].path",
        ),
        (lambda c: c["process"]["capabilities"].update(effective=["CAP_SYS_ADMIN"]), "process.capabilities.effective"),
        (lambda c: c["process"]["user"].update(uid=1000), "process.capabilities.effective"),
        (lambda c: c["process"].update(apparmorProfile="p"), "process.apparmorProfile"),
        (
            lambda c: c["process"]["rlimits"].append({"type": "RLIMIT_BOGUS", "soft": 1, "hard": 1}),
            "process.rlimits[1].type",
        ),
        (lambda c: c["linux"].update(cgroupsPath="system.slice:sv:x"), "linux.cgroupsPath"),
        (lambda c: c.update(ociVersion="0.9"), "ociVersion"),
        (
            lambda c: c["linux"]["namespaces"].__setitem__(4, {"type": "mount", "path": "/proc/self/ns/mnt"}),
            "linux.namespaces[4].path",
        ),
        (
            lambda c: (
                c["linux"]["namespaces"].__setitem__(1, {"type": "network", "path": "/proc/self/ns/net"})
                or c["linux"].update(sysctl={"net.ipv4.ip_forward": "1"})
            ),
            "linux.sysctl.net.ipv4.ip_forward",
        ),
    ],
)
def test_what_cannot_be_honoured_is_refused_by_its_json_path(
    oci: Oci, change: Callable[[dict[str, Any]], None], where: str
) -> None:
    config = base_config(["true"])
    change(config)
    done = oci("create", "--bundle", oci.bundle(config), "bad")
    assert done.returncode == 1
    assert done.stderr.startswith(f"supervisor-oci: config.json: {where}: "), done.stderr
    assert done.stderr.count("\n") == 1
    assert oci("list", "--quiet").stdout.split() == []


def test_capabilities_the_runtime_lacks_are_refused_at_create(oci: Oci) -> None:
    with open("/proc/self/status") as f:
        bounding = next(int(line.split()[1], 16) for line in f if line.startswith("CapBnd:"))
    last = int(Path("/proc/sys/kernel/cap_last_cap").read_text())
    lacking = [n for n in range(last + 1) if not bounding >> n & 1]
    if not lacking:
        pytest.skip("this runtime's bounding set is full: no capability to lack")
    from supervisor._capabilities import CAP_NAMES

    name = "CAP_" + CAP_NAMES[lacking[0]]
    config = base_config(["true"])
    for kind in ("bounding", "effective", "permitted"):
        config["process"]["capabilities"][kind].append(name)
    done = oci("create", "--bundle", oci.bundle(config), "lacking")
    assert done.returncode == 1
    assert f"process.capabilities.bounding: {name}: not in this runtime's own bounding set" in done.stderr


def test_a_setup_failure_names_the_call_and_leaves_nothing(oci: Oci) -> None:
    done = oci("create", "--bundle", oci.bundle(base_config(["/no/such/program"])), "bad")
    assert done.returncode == 1
    assert "setup failed in phase exec" in done.stderr
    assert "/no/such/program" in done.stderr
    assert oci("list", "--quiet").stdout.split() == []


def test_exec_enters_the_running_container(oci: Oci) -> None:
    config = base_config(["sleep", "60"])
    config["process"]["env"].append("FROM=config")
    config["process"]["user"]["umask"] = 0o027
    bundle = oci.bundle(config)
    pid = oci.create("x1", bundle)["pid"]
    refused = oci("exec", "x1", "true")
    assert refused.returncode == 1
    assert "it is created, not running" in refused.stderr
    oci("start", "x1", check=True)
    script = "echo $$ $(hostname) $FROM $EXTRA $(pwd) $(id -u) $(umask); cat /proc/1/comm; exit 4"
    done = oci("exec", "-e", "EXTRA=added", "--cwd", "/tmp", "-u", "1000:1000", "x1", "sh", "-c", script)
    assert done.returncode == 4, done.stderr
    first, second = done.stdout.splitlines()
    assert first.split() == [first.split()[0], "oci-test", "config", "added", "/tmp", "1000", "0027"]
    assert int(first.split()[0]) > 1  # a process of the container's PID namespace, not its PID 1
    assert second == "sleep"
    ns = {n: os.readlink(f"/proc/{pid}/ns/{n}") for n in ("pid", "mnt", "net", "uts", "ipc", "user")}
    process = oci.tmp / "process.json"
    process.write_text(
        json.dumps({**config["process"], "args": ["sh", "-c", "for n in /proc/self/ns/*; do readlink $n; done"]})
    )
    seen = oci("exec", "--process", str(process), "x1")
    assert seen.returncode == 0, seen.stderr
    for name, link in ns.items():
        assert link in seen.stdout, name
    oci("kill", "x1", "KILL", check=True)
    oci.wait_status("x1", "stopped")
    late = oci("exec", "x1", "true")
    assert late.returncode == 1
    assert "it is stopped" in late.stderr
    oci("delete", "x1", check=True)


def test_log_format_json_carries_the_error(oci: Oci) -> None:
    log = oci.tmp / "log.json"
    done = oci("--log", str(log), "--log-format", "json", "state", "nope")
    assert done.returncode == 1
    entry = json.loads(log.read_text().splitlines()[-1])
    assert entry["level"] == "error"
    assert entry["msg"] == "container 'nope' does not exist"


def read_terminal(master: int, until: bytes | None = None, timeout: float = 60) -> bytes:
    """What a terminal's master gives, to its end (or to ``until``)."""
    out = b""
    deadline = time.monotonic() + timeout
    while (until is None or until not in out) and time.monotonic() < deadline:
        try:
            chunk = os.read(master, 4096)
        except OSError:  # EIO: the last slave end closed
            break
        if not chunk:
            break
        out += chunk
    return out


def test_console_socket_gets_the_terminal(oci: Oci) -> None:
    config = base_config(["sh", "-c", "tty; echo on-the-terminal"])
    config["process"]["terminal"] = True
    bundle = oci.bundle(config)
    path = str(oci.tmp / "console.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(path)
        listener.listen(1)
        creating = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "supervisor._oci",
                "--root",
                oci.root,
                "create",
                "--bundle",
                bundle,
                "--console-socket",
                path,
                "t1",
            ],
            env={**os.environ, "PYTHONPATH": REPO},
        )
        conn, _ = listener.accept()
        with conn:
            _msg, fds, _flags, _addr = socket.recv_fds(conn, 64, 1)
        assert creating.wait(30) == 0
    assert len(fds) == 1
    master = fds[0]
    try:
        oci("start", "t1", check=True)
        out = read_terminal(master, b"on-the-terminal")
    finally:
        os.close(master)
    assert b"/dev/pts/0" in out
    oci.wait_status("t1", "stopped")
    oci("delete", "t1", check=True)


def test_preserve_fds_passes_descriptors(oci: Oci) -> None:
    bundle = oci.bundle(base_config(["sh", "-c", "echo through-fd-3 >&3"]))
    r, w = os.pipe()
    try:
        done = _run_with_fd3(oci, bundle, w)
        os.close(w)
        w = -1
        assert done.returncode == 0, done.stderr
        assert os.read(r, 100) == b"through-fd-3\n"
    finally:
        os.close(r)
        if w >= 0:
            os.close(w)


def _run_with_fd3(oci: Oci, bundle: str, fd: int) -> subprocess.CompletedProcess[str]:
    """``run --preserve-fds 1`` with ``fd`` as the runtime's descriptor 3."""
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "supervisor._oci",
            "--root",
            oci.root,
            "run",
            "--preserve-fds",
            "1",
            "--bundle",
            bundle,
            "p1",
        ],
        env={**os.environ, "PYTHONPATH": REPO},
        preexec_fn=lambda: os.dup2(fd, 3),
        pass_fds=(3,),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_hooks_run_with_the_state(oci: Oci) -> None:
    out = oci.tmp / "hooks"
    out.mkdir()
    hook = oci.tmp / "hook.sh"
    hook.write_text(f"#!/bin/sh\ncat > {out}/$1.json\n")
    hook.chmod(0o755)
    config = base_config(["true"])
    config["hooks"] = {
        name: [{"path": str(hook), "args": ["hook.sh", name]}] for name in ("createRuntime", "poststart", "poststop")
    }
    bundle = oci.bundle(config)
    state = oci.create("h1", bundle)
    created = json.loads((out / "createRuntime.json").read_text())
    assert (created["id"], created["status"], created["pid"]) == ("h1", "created", state["pid"])
    oci("start", "h1", check=True)
    assert json.loads((out / "poststart.json").read_text())["id"] == "h1"
    oci.wait_status("h1", "stopped")
    oci("delete", "h1", check=True)
    assert json.loads((out / "poststop.json").read_text())["status"] == "stopped"


def test_unsupported_commands_say_so_in_one_line(oci: Oci) -> None:
    for command in ("checkpoint", "restore"):
        done = oci(command, "x")
        assert done.returncode == 1
        assert done.stderr == f"supervisor-oci: {command} is not supported by supervisor-oci\n"
    assert oci("--systemd-cgroup", "state", "x").returncode == 1
    features = json.loads(oci("features", check=True).stdout)
    assert features["ociVersionMax"].startswith("1.")
    assert "user" in features["linux"]["namespaces"]
    assert "supervisor-oci version" in oci("--version", check=True).stdout


# -- podman ---------------------------------------------------------------------


@pytest.fixture
def podman(oci: Oci, busybox_rootfs: str) -> Iterator[Callable[..., subprocess.CompletedProcess[str]]]:
    """``podman`` with a private storage and our runtime, a busybox image imported."""
    exe = shutil.which("podman")
    if exe is None:
        pytest.skip("podman not installed (tests/install-system-deps.sh installs Debian's)")
    wrapper = oci.tmp / "supervisor-oci"
    wrapper.write_text(f'#!/bin/sh\nexport PYTHONPATH={REPO}\nexec {sys.executable} -P -m supervisor._oci "$@"\n')
    wrapper.chmod(0o755)
    # podman wants its runroot within 50 characters.
    base = Path(tempfile.mkdtemp(prefix="supervisor-test-pm-", dir="/tmp"))
    # Its containers' and conmon's cgroups go below our own, never at a
    # hierarchy's root (its default, libpod_parent).
    scope = contextlib.ExitStack()
    cgroup_parent = scope.enter_context(engine_parent(base.name))
    options = [
        exe,
        "--root",
        str(base / "storage"),
        "--runroot",
        str(base / "run"),
        "--storage-driver",
        "vfs",
        "--cgroup-manager",
        "cgroupfs",
        "--events-backend",
        "file",
        "--tmpdir",
        str(base / "tmp"),
        "--runtime",
        str(wrapper),
    ]
    # This machine's hard limits are below podman's defaults (1048576): as
    # for runc and crun, the container gets limits it may have.
    limits = ["--network", "none", "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"]
    limits += ["--cgroup-parent", cgroup_parent]

    def argv_of(*args: str) -> list[str]:
        if args and args[0] in ("run", "create"):
            return [*options, args[0], *limits, *args[1:]]
        return [*options, *args]

    def run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(argv_of(*args), capture_output=True, text=True, timeout=timeout, check=False)

    run.argv = argv_of  # type: ignore[attr-defined]

    tar = oci.tmp / "bb.tar"
    subprocess.run(["tar", "-C", busybox_rootfs, "-cf", str(tar), "."], check=True)
    imported = run("import", str(tar), "localhost/sv-busybox")
    assert imported.returncode == 0, imported.stderr
    try:
        yield run
    finally:
        run("rm", "--all", "--force")
        run("rmi", "--all", "--force")
        scope.close()
        shutil.rmtree(base)


@pytest.mark.slow
def test_podman_runs_containers_with_our_runtime(podman: Callable[..., subprocess.CompletedProcess[str]]) -> None:
    done = podman("run", "--rm", "localhost/sv-busybox", "sh", "-c", "echo hello from $(hostname) as pid $$")
    assert done.returncode == 0, done.stderr
    assert "hello from" in done.stdout
    assert done.stdout.split()[-1] == "1"
    failed = podman("run", "--rm", "localhost/sv-busybox", "sh", "-c", "exit 42")
    assert failed.returncode == 42
    # Detached, then stopped: SIGTERM is ignored by a PID 1 without a
    # handler, so podman's timeout ends in our kill with SIGKILL.
    started = podman("run", "-d", "--name", "sleeper", "localhost/sv-busybox", "sleep", "600")
    assert started.returncode == 0, started.stderr
    state = podman("inspect", "--format", "{{.State.Status}}", "sleeper")
    assert state.stdout.strip() == "running"
    t0 = time.monotonic()
    stopped = podman("stop", "-t", "1", "sleeper")
    assert stopped.returncode == 0, stopped.stderr
    assert time.monotonic() - t0 < 30
    assert podman("inspect", "--format", "{{.State.Status}}", "sleeper").stdout.strip() == "exited"
    removed = podman("rm", "sleeper")
    assert removed.returncode == 0, removed.stderr


@pytest.mark.slow
def test_podman_exec_enters_the_container(podman: Callable[..., subprocess.CompletedProcess[str]]) -> None:
    started = podman("run", "-d", "--name", "target", "--hostname", "inside", "localhost/sv-busybox", "sleep", "600")
    assert started.returncode == 0, started.stderr
    done = podman("exec", "-e", "X=y", "target", "sh", "-c", "echo $(hostname) $X; cat /proc/1/comm; exit 3")
    assert done.returncode == 3, done.stderr
    assert done.stdout.split() == ["inside", "y", "sleep"]
    assert podman("rm", "-f", "-t", "0", "target").returncode == 0


@pytest.mark.slow
def test_podman_stop_with_init(podman: Callable[..., subprocess.CompletedProcess[str]]) -> None:
    if not os.path.exists("/usr/libexec/podman/catatonit"):
        pytest.skip("catatonit not installed (tests/install-system-deps.sh installs Debian's)")
    started = podman("run", "-d", "--init", "--name", "with-init", "localhost/sv-busybox", "sleep", "600")
    assert started.returncode == 0, started.stderr
    seen = podman("exec", "with-init", "cat", "/proc/1/comm")
    assert seen.returncode == 0, seen.stderr
    assert seen.stdout.strip() in ("catatonit", "podman-init")  # podman copies it in under its own name
    t0 = time.monotonic()
    stopped = podman("stop", "-t", "10", "with-init")
    assert stopped.returncode == 0, stopped.stderr
    # The init forwards SIGTERM to sleep, which dies of it: no wait for the timeout.
    assert time.monotonic() - t0 < 8
    assert podman("inspect", "--format", "{{.State.ExitCode}}", "with-init").stdout.strip() == "143"
    assert podman("rm", "with-init").returncode == 0


@pytest.mark.slow
def test_podman_run_it_gives_a_terminal(podman: Callable[..., subprocess.CompletedProcess[str]]) -> None:
    import pty

    argv = podman.argv("run", "--rm", "-it", "localhost/sv-busybox", "sh")  # type: ignore[attr-defined]
    pid, master = pty.fork()
    if pid == 0:
        try:
            os.execv(argv[0], argv)
        finally:
            os._exit(127)
    try:
        os.write(master, b"tty; echo typed-$((6*7)); exit 3\r")
        out = read_terminal(master)
    finally:
        os.close(master)
        _, status = os.waitpid(pid, 0)
    assert b"typed-42" in out
    assert b"/dev/pts/0" in out
    assert os.waitstatus_to_exitcode(status) == 3


# -- containerd -------------------------------------------------------------------


@pytest.mark.slow
def test_ctr_runs_a_container_through_the_runc_shim(oci: Oci) -> None:
    """containerd 1.6 with a private root, state and socket; ``ctr run
    --runc-binary`` drives our runtime through containerd-shim-runc-v2."""
    containerd, ctr = shutil.which("containerd"), shutil.which("ctr")
    if containerd is None or ctr is None:
        pytest.skip("containerd not installed (tests/install-system-deps.sh installs Debian's)")
    wrapper = oci.tmp / "supervisor-oci"
    wrapper.write_text(f'#!/bin/sh\nexport PYTHONPATH={REPO}\nexec {sys.executable} -P -m supervisor._oci "$@"\n')
    wrapper.chmod(0o755)
    base = Path(tempfile.mkdtemp(prefix="supervisor-test-ctd-", dir="/tmp"))  # a short socket path
    sock = base / "sock"
    (base / "config.toml").write_text(
        f'version = 2\nroot = "{base}/root"\nstate = "{base}/state"\n'
        'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
        f'[grpc]\n  address = "{sock}"\n[ttrpc]\n  address = "{sock}.ttrpc"\n'
    )
    # Its shims' sockets and the runc shim's --root go below /run/containerd
    # whatever the config says: removed at the end if this test made them.
    had_run_dir = os.path.exists("/run/containerd")
    log = open(base / "containerd.log", "wb")  # noqa: SIM115 - closed below, after the daemon
    daemon = subprocess.Popen([containerd, "--config", str(base / "config.toml")], stdout=log, stderr=log)
    try:
        with engine_parent(base.name) as parent:
            deadline = time.monotonic() + 30
            while not sock.exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            argv = [
                ctr,
                "-a",
                str(sock),
                "run",
                "--rm",
                "--fifo-dir",
                str(base / "fifo"),
                "--runc-binary",
                str(wrapper),
            ]
            argv += ["--cgroup", f"{parent}/c1", "--rootfs", oci.rootfs, "c1"]
            script = "echo hello from $(hostname) as $$; exit 3"
            done = subprocess.run([*argv, "sh", "-c", script], capture_output=True, text=True, timeout=120, check=False)
            assert done.returncode == 3, done.stderr
            assert done.stdout.split()[-1] == "1"
            listed = subprocess.run(
                [ctr, "-a", str(sock), "containers", "list", "-q"], capture_output=True, text=True, check=False
            )
            assert listed.stdout.split() == []
    finally:
        daemon.terminate()
        try:
            daemon.wait(30)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait()
        log.close()
        shutil.rmtree(base)
        if not had_run_dir:
            for directory, _dirs, _files in sorted(os.walk("/run/containerd"), key=lambda t: -len(t[0])):
                with contextlib.suppress(OSError):
                    os.rmdir(directory)
