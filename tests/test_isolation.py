"""Every setup phase, verified from inside a real container.

Each check runs on the embedded default root (``rootfs=None``: the host's
``/usr`` and friends, read-only) and on a tiny busybox root built by the test
session. The ``busybox`` fixture also proves that nothing is ever created in
the host's rootfs folder, and the autouse leak check that nothing outlives the
container on the host.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import socket
import stat
import subprocess
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import pytest

import supervisor
from supervisor import Mount, Phase, Result, SetupError, Spec
from supervisor._parent.config import MASKED_PATHS, READONLY_PATHS
from supervisor._sys import linux

pytestmark = pytest.mark.anyio

#: Every namespace a container has of its own (a time namespace where execve enters one).
NAMESPACES = ("user", "mnt", "uts", "ipc", "net", "pid", "cgroup") + (
    ("time",) if linux.has_time_namespaces() and linux.exec_enters_time_namespace() else ()
)
SYSTEM_DIRS = ("usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32", "etc")
DEV_NODES = {"null": (1, 3), "zero": (1, 5), "full": (1, 7), "random": (1, 8), "urandom": (1, 9), "tty": (5, 0)}
DEV_LINKS = {
    "fd": "/proc/self/fd",
    "stdin": "/proc/self/fd/0",
    "stdout": "/proc/self/fd/1",
    "stderr": "/proc/self/fd/2",
    "ptmx": "pts/ptmx",
}


@dataclass(frozen=True)
class Root:
    """Which root a test runs on."""

    name: str
    rootfs: str | None

    @property
    def default(self) -> bool:
        return self.rootfs is None


@pytest.fixture(params=["default", "busybox"])
def root(request: pytest.FixtureRequest) -> Root:
    if request.param == "busybox":
        return Root("busybox", request.getfixturevalue("busybox"))
    return Root("default", None)


async def run(root: Root, command: list[str], *, input: bytes | None = None, **spec: Any) -> Result:
    """The result whatever the payload's outcome (``check=False``)."""
    return await supervisor.run(Spec(command, rootfs=root.rootfs, **spec), input=input, check=False)


async def sh(root: Root, script: str, *, input: bytes | None = None, **spec: Any) -> str:
    """Run a shell script in the container; it must succeed; return its stdout."""
    result = await run(root, ["sh", "-c", script], input=input, **spec)
    assert result.reason == "exited", result
    assert result.exit_code == 0, (result.exit_code, result.stderr.decode())
    return result.stdout.decode()


def mountinfo(text: str) -> dict[str, tuple[str, str, str]]:
    """Mount point -> (fstype, per-mount options, root of the mount in its filesystem)."""
    out = {}
    for line in text.splitlines():
        fields = line.split()
        sep = fields.index("-")
        out[fields[4]] = (fields[sep + 1], fields[5], fields[3])
    return out


def host_system_dirs() -> set[str]:
    """Host system folders the default root binds (real folders, not symlinks)."""
    return {"/" + n for n in SYSTEM_DIRS if os.path.isdir("/" + n) and not os.path.islink("/" + n)}


def host_submounts(dirs: set[str]) -> set[str]:
    """Host mount points strictly below ``dirs`` (they come along with a recursive bind)."""
    with open("/proc/self/mountinfo") as f:
        points = {line.split()[4] for line in f}
    return {p for p in points for d in dirs if p.startswith(d + "/")}


# -- namespaces and PID 1 ----------------------------------------------------


async def test_namespaces_differ_from_the_host(root: Root) -> None:
    script = "for ns in " + " ".join(NAMESPACES) + "; do readlink /proc/self/ns/$ns; done"
    lines = (await sh(root, script)).split()
    inside = {}
    for line in lines:
        m = re.fullmatch(r"(\w+):\[(\d+)\]", line)
        assert m, line
        inside[m.group(1)] = int(m.group(2))
    assert set(inside) == set(NAMESPACES)
    for ns in NAMESPACES:
        assert inside[ns] != os.stat(f"/proc/self/ns/{ns}").st_ino, f"{ns} namespace is the host's"


async def test_pid_1_view(root: Root) -> None:
    out = await sh(root, "echo $$; ls /proc; grep NSpid /proc/self/status")
    lines = out.split("\n")
    assert lines[0] == "1"
    pids = {int(x) for x in lines[1:] if x.isdigit()}
    # The shell (PID 1) and ls (PID 2): nothing of the host.
    assert 1 in pids
    assert pids <= {1, 2, 3}, pids
    nspid = next(x for x in lines if x.startswith("NSpid:")).split()
    assert len(nspid) == 2, f"only the container's own PID level is visible: {nspid}"


async def test_pid_1_view_python() -> None:
    code = "import os; print(os.getpid(), os.getppid(), sorted(int(p) for p in os.listdir('/proc') if p.isdigit()))"
    result = await supervisor.run(Spec(["python3", "-c", code]))
    assert result.stdout == b"1 0 [1]\n", result


# -- hostname ----------------------------------------------------------------


async def test_hostname_given(root: Root) -> None:
    host_before = socket.gethostname()
    result = await run(root, ["sh", "-c", "cat /proc/sys/kernel/hostname; uname -n; echo $HOSTNAME"], hostname="box-7")
    assert result.stdout.decode().split() == ["box-7"] * 3
    assert result.hostname == "box-7"
    assert socket.gethostname() == host_before


async def test_hostname_resolves() -> None:
    """``hostname -f`` and ``gethostbyname(gethostname())`` work, as under docker."""
    code = (
        "import socket; name = socket.gethostname(); "
        "print(name, socket.gethostbyname(name), socket.getfqdn(), socket.gethostbyname('localhost'))"
    )
    for network in ("none", "host"):
        result = await supervisor.run(Spec(["python3", "-c", code], hostname="box-8", network=network))
        assert (result.reason, result.exit_code) == ("exited", 0), (network, result.stderr)
        assert result.stdout.decode().split() == ["box-8", "127.0.1.1", "box-8", "127.0.0.1"], network
    # With the host's network the host's own entries stay.
    result = await supervisor.run(Spec(["cat", "/etc/hosts"], hostname="box-8", network="host"))
    with open("/etc/hosts") as f:
        assert result.stdout.decode().startswith(f.read().rstrip("\n"))


async def test_hosts_file_follows_the_root(busybox: str, host_dir: Path) -> None:
    """A rootfs without /etc/hosts keeps none (nothing created in it); a caller's bind wins."""
    for overlay in (False, True):
        result = await supervisor.run(
            Spec(["cat", "/etc/hosts"], rootfs=busybox, overlay=overlay, hostname="bb"), check=False
        )
        assert result.reason == "exited", overlay
        assert result.exit_code != 0, overlay
    own = host_dir / "root"
    shutil.copytree(busybox, own, symlinks=True)
    (own / "etc" / "hosts").write_text("# the rootfs's own\n")
    result = await supervisor.run(Spec(["cat", "/etc/hosts"], rootfs=str(own), hostname="bb"), check=False)
    assert "127.0.1.1\tbb\n" in result.stdout.decode()
    assert (own / "etc" / "hosts").read_text() == "# the rootfs's own\n"
    (host_dir / "hosts").write_text("10.1.2.3 mine\n")
    result = await supervisor.run(
        Spec(["cat", "/etc/hosts"], hostname="bb", mounts=[Mount(str(host_dir / "hosts"), "/etc/hosts")]), check=False
    )
    assert result.stdout == b"10.1.2.3 mine\n"


async def test_hostname_generated_and_unique(busybox: str) -> None:
    from supervisor._hostname import ADJECTIVES, NOUNS

    n = 12
    # Each container prints its name, then blocks reading stdin (a pipe we hold).
    spec = Spec(["sh", "-c", "cat /proc/sys/kernel/hostname; read x; exit 0"], rootfs=busybox)
    r, w = os.pipe()
    try:
        async with supervisor.Supervisor() as sup, anyio.create_task_group() as tg:
            handles = [await tg.start(partial(sup.run, spec, stdin=r)) for _ in range(n)]
            # All alive at once: the names must differ.
            names = [h.hostname for h in handles]
            assert len(set(names)) == n, names
            os.close(w)
            w = -1
            results = [await h.wait() for h in handles]
    finally:
        os.close(r)
        if w >= 0:
            os.close(w)
    for name, result in zip(names, results, strict=True):
        adjective, noun, number = name.split("-")
        assert adjective in ADJECTIVES
        assert noun in NOUNS
        assert number.isdigit()
        assert result.hostname == name
        assert result.stdout.decode().strip() == name
        assert (result.reason, result.exit_code) == ("exited", 0)


# -- user namespace: id maps and the payload's ids ---------------------------


async def test_id_maps(root: Root) -> None:
    out = await sh(root, "cat /proc/self/uid_map /proc/self/gid_map; id -u; id -g; id -G")
    lines = out.strip().split("\n")
    assert lines[0].split() == ["0", "100000", "65536"]
    assert lines[1].split() == ["0", "100000", "65536"]
    assert lines[2:] == ["0", "0", "0"]


@pytest.mark.parametrize(("uid", "gid"), [(1000, None), (1000, 1234), (65535, 0)])
async def test_payload_ids(root: Root, uid: int, gid: int | None) -> None:
    out = await sh(root, "id -u; id -g; id -G; cat /proc/self/uid_map", uid=uid, gid=gid)
    lines = out.strip().split("\n")
    want_gid = uid if gid is None else gid
    assert lines[:3] == [str(uid), str(want_gid), str(want_gid)], "no supplementary groups"
    assert lines[3].split() == ["0", "100000", "65536"]


async def test_host_view_of_payload_ids(busybox: str) -> None:
    spec = Spec(["sleep", "30"], rootfs=busybox, uid=1000, gid=1234, map_base=200_000, map_size=5000)
    async with supervisor.Supervisor() as sup, anyio.create_task_group() as tg:
        handle = await tg.start(partial(sup.run, check=False), spec)
        with open(f"/proc/{handle.pid}/status") as f:
            status = dict(line.split(":", 1) for line in f)
        with open(f"/proc/{handle.pid}/uid_map") as f:
            uid_map = f.read().split()
        handle.kill()
    assert status["Uid"].split() == ["201000"] * 4
    assert status["Gid"].split() == ["201234"] * 4
    assert status["NSpid"].split()[1:] == ["1"]
    assert uid_map == ["0", "200000", "5000"]


async def test_auto_id_ranges_make_each_container_a_host_user_of_its_own(host_dir: Path) -> None:
    """map_base="auto": two live containers are two different host users, and a file one of
    them keeps private in a shared bind is private from the other."""
    import json as _json

    from supervisor._parent import idranges

    shared = host_dir / "shared"
    shared.mkdir()
    os.chmod(shared, 0o777)
    mounts = [Mount(str(shared), "/shared", idmap=False)]
    writer = Spec(["sh", "-c", "umask 077; echo secret > /shared/f; read x; exit 0"], map_base="auto", mounts=mounts)
    reader = Spec(["sh", "-c", "cat /shared/f"], map_base="auto", mounts=mounts)
    r, w = os.pipe()
    try:
        async with supervisor.Supervisor() as sup, anyio.create_task_group() as tg:
            first = await tg.start(partial(sup.run, writer, stdin=r))
            with open(f"/proc/{first.pid}/status") as f:
                uid_a = int(next(line for line in f if line.startswith("Uid:")).split()[1])
            for _ in range(200):
                if (shared / "f").exists():
                    break
                await anyio.sleep(0.01)
            result = await sup.run(reader, check=False)
            os.close(w)
            w = -1
            await first.wait()
    finally:
        os.close(r)
        if w >= 0:
            os.close(w)
    assert uid_a >= idranges.FIRST
    owner = (shared / "f").stat().st_uid
    assert owner == uid_a
    assert result.exit_code != 0
    assert b"Permission denied" in result.stderr
    # Both leases are given back.
    _folder, path = idranges._paths()
    with open(path) as f:
        leases = _json.load(f)
    assert not [lease for lease in leases.values() if lease["cid"] in (first.id, result.id)]
    with pytest.raises(ValueError, match="map_size"):
        Spec(["true"], map_base="auto", map_size=1 << 25)


def _as_host_user(uid: int, *argv: str) -> int:
    """The exit status of ``argv`` run on the host as ``uid`` (and gid), without groups."""
    done = subprocess.run(argv, user=uid, group=uid, extra_groups=[], stderr=subprocess.DEVNULL, check=False)
    return done.returncode


async def test_auto_id_ranges_cannot_signal_or_trace_each_other(busybox: str) -> None:
    """Two live containers with their own id ranges: each one's root, as the host user it
    is, can signal its own payload but not the other's, nor read the other's /proc entry
    (a ptrace access check)."""
    tool = shutil.which("busybox") or "/bin/busybox"
    spec = Spec(["sleep", "30"], rootfs=busybox, map_base="auto")
    async with supervisor.Supervisor() as sup, anyio.create_task_group() as tg:
        a = await tg.start(partial(sup.run, check=False), spec)
        b = await tg.start(partial(sup.run, check=False), spec)
        uids = []
        for handle in (a, b):
            with open(f"/proc/{handle.pid}/status") as f:
                uids.append(int(next(line for line in f if line.startswith("Uid:")).split()[1]))
        uid_a, uid_b = uids
        assert uid_a != uid_b
        own = _as_host_user(uid_a, tool, "kill", "-0", str(a.pid))
        other = [_as_host_user(uid_a, tool, "kill", "-0", str(b.pid)),
                 _as_host_user(uid_a, tool, "cat", f"/proc/{b.pid}/environ"),
                 _as_host_user(uid_b, tool, "kill", "-0", str(a.pid))]  # fmt: skip
        a.kill()
        b.kill()
    assert own == 0
    assert all(status != 0 for status in other), other


# -- the root ----------------------------------------------------------------


async def test_default_root_content() -> None:
    root = Root("default", None)
    out = await sh(
        root,
        "ls -a /; echo ---;"
        "touch /usr/.probe 2>/dev/null && echo usr-writable;"
        "touch /etc/.probe 2>/dev/null && echo etc-writable;"
        "mkdir /new 2>/dev/null && echo root-writable;"
        "touch /tmp/x && echo tmp-ok;"
        'touch "$HOME/x" && echo home-ok',
    )
    listing, checks = out.split("---\n")
    expected = {n for n in SYSTEM_DIRS if os.path.lexists("/" + n)} | {"proc", "dev", "sys", "tmp", "root", "home"}
    assert set(listing.split()) == expected | {".", ".."}
    assert checks.split() == ["tmp-ok", "home-ok"]


async def test_default_root_keeps_host_symlinks() -> None:
    links = {n: os.readlink("/" + n) for n in SYSTEM_DIRS if os.path.islink("/" + n)}
    if not links:
        pytest.skip("no merged-/usr symlinks on this host")
    out = await sh(Root("default", None), "for n in " + " ".join(links) + "; do readlink /$n; done")
    assert out.split() == list(links.values())


async def test_busybox_root_content(busybox: str) -> None:
    root = Root("busybox", busybox)
    out = await sh(
        root,
        "ls -a /; echo ---; ls /bin; echo ---; cat /etc/passwd; echo ---;"
        "touch /bin/x 2>/dev/null && echo bin-writable;"
        "mkdir /new 2>/dev/null && echo root-writable;"
        "touch /tmp/x && echo tmp-ok",
    )
    top, bins, passwd, checks = out.split("---\n")
    assert set(top.split()) == {*os.listdir(busybox), ".", ".."}
    assert sorted(bins.split()) == sorted(os.listdir(os.path.join(busybox, "bin")))
    assert passwd == Path(busybox, "etc", "passwd").read_text()
    # The rootfs belongs to the host's root, which is not mapped: not writable.
    assert checks.split() == ["tmp-ok"]


async def test_read_only_root(busybox: str) -> None:
    root = Root("busybox", busybox)
    result = await run(root, ["sh", "-c", "touch /x; touch /tmp/y && echo tmp-ok"], read_only=True)
    assert "Read-only file system" in result.stderr.decode()
    assert result.stdout == b"tmp-ok\n"
    mounts = mountinfo(await sh(root, "cat /proc/self/mountinfo", read_only=True))
    assert mounts["/"][1].split(",")[0] == "ro"
    assert mounts["/tmp"][1].split(",")[0] == "rw"
    # Without read_only the root mount is writable (only permissions stop us).
    mounts = mountinfo(await sh(root, "cat /proc/self/mountinfo"))
    assert mounts["/"][1].split(",")[0] == "rw"


async def test_host_is_unreachable(root: Root, host_dir: Path) -> None:
    marker = host_dir / "marker"
    marker.write_text("host secret")
    probes = [str(marker), str(host_dir), os.path.abspath(__file__), "/oldroot", "/newroot", "/proc/1/root/oldroot"]
    script = "; ".join(f"test -e {p} && echo visible:{p}" for p in probes) + "; grep -c oldroot /proc/self/mountinfo"
    result = await run(root, ["sh", "-c", script])
    assert result.stdout == b"0\n", result.stdout.decode()


async def test_hostile_rootfs_symlinks(busybox_rootfs: str, host_dir: Path) -> None:
    """Symlinks in a rootfs resolve inside it: a mount never lands on the host or on /."""
    rootfs = host_dir / "rootfs"
    shutil.copytree(busybox_rootfs, rootfs, symlinks=True)
    os.chmod(rootfs, 0o755)
    (rootfs / "escape").symlink_to("../../../../../../tmp/escaped")
    (rootfs / "toroot").symlink_to("/")
    data = host_dir / "data"
    data.mkdir()
    (data / "file").write_text("data")
    # /escape/x resolves to the container's /tmp/escaped/x (our tmpfs), not the host's /tmp.
    spec = Spec(["cat", "/tmp/escaped/x/file"], rootfs=str(rootfs), mounts=[Mount(str(data), "/escape/x")])
    result = await supervisor.run(spec)
    assert result.stdout == b"data", result
    assert not os.path.lexists("/tmp/escaped")
    # A mount whose target resolves to the root itself is refused.
    with pytest.raises(SetupError) as info:
        await supervisor.run(Spec(["true"], rootfs=str(rootfs), mounts=[Mount(str(data), "/toroot")]))
    assert info.value.phase is Phase.MOUNTS
    assert info.value.errno == errno.EINVAL


@pytest.mark.parametrize("link", ["/etc", "../../etc"])
async def test_masks_follow_proc_and_sys_wherever_a_hostile_rootfs_puts_them(
    busybox_rootfs: str, host_dir: Path, link: str
) -> None:
    """``/proc -> /etc`` puts the procfs on the rootfs's /etc: the masks and
    read-only paths must land on that procfs, not be skipped."""
    rootfs = host_dir / "rootfs"
    shutil.copytree(busybox_rootfs, rootfs, symlinks=True)
    os.chmod(rootfs, 0o755)
    for name, where in (("proc", "etc"), ("sys", "srv")):
        os.rmdir(rootfs / name)
        (rootfs / where).mkdir(exist_ok=True)
        (rootfs / name).symlink_to(link.replace("etc", where))
    script = "wc -l < /etc/timer_list; echo ---; cat /proc/self/mountinfo"
    result = await supervisor.run(Spec(["sh", "-c", script], rootfs=str(rootfs)))
    assert result.exit_code == 0, result
    lines, _, table = result.stdout.decode().partition("---\n")
    assert lines.strip() == "0", "timer_list is masked"
    mounts = mountinfo(table)
    assert mounts["/etc"][0] == "proc"
    assert mounts["/srv"][0] == "sysfs"
    where = {"/proc": "/etc", "/sys": "/srv"}
    for path in MASKED_PATHS:
        top, _, rest = path[1:].partition("/")
        if os.path.exists(path):
            assert f"{where['/' + top]}/{rest}" in mounts, f"{path} not masked"
    for path in READONLY_PATHS:
        if os.path.exists(path):  # this kernel has it (sysrq-trigger needs CONFIG_MAGIC_SYSRQ)
            point = f"{where['/proc']}/{path.removeprefix('/proc/')}"
            assert mounts[point][1].split(",")[0] == "ro", point


# -- mounts ------------------------------------------------------------------


async def test_mount_table(root: Root) -> None:
    mounts = mountinfo(await sh(root, "cat /proc/self/mountinfo"))
    expected = {"/", "/proc", "/dev", "/dev/pts", "/dev/shm", "/sys", "/tmp"} | {"/dev/" + n for n in DEV_NODES}
    if root.default:
        system = host_system_dirs()
        expected |= system | host_submounts(system) | {"/root", "/home", "/etc/hosts"}
    assert expected <= set(mounts)
    # Anything else may only be a mask over part of /proc or /sys (hardening):
    # read-only, or the host's /dev/null bound over a file.
    for point in set(mounts) - expected:
        fstype, options, source = mounts[point]
        assert point.startswith(("/proc/", "/sys/")), f"unexpected mount {point}"
        assert options.split(",")[0] == "ro" or (fstype == "devtmpfs" and source == "/null"), (point, mounts[point])
    fstypes = {"/proc": "proc", "/dev": "tmpfs", "/dev/pts": "devpts", "/dev/shm": "tmpfs", "/tmp": "tmpfs"}
    for point, fstype in fstypes.items():
        assert mounts[point][0] == fstype, point
    assert mounts["/sys"][0] == "sysfs"
    assert "ro" in mounts["/sys"][1].split(",")
    if root.default:
        assert mounts["/"][0] == "tmpfs"
        for point in system:
            assert "ro" in mounts[point][1].split(","), point
    assert not any("oldroot" in p or "newroot" in p for p in mounts)
    # nosuid and nodev wherever a container has no need for setuid files or
    # devices: everywhere but the device nodes (and /dev/null over masks).
    for point, (fstype, options, _source) in mounts.items():
        flags = options.split(",")
        assert "nosuid" in flags or (fstype == "devtmpfs" and point.startswith(("/dev/", "/proc/"))), point
        assert "nodev" in flags or fstype in ("devtmpfs", "devpts") or point == "/dev", point


async def test_nosuid_nodev_on_caller_binds(root: Root, host_dir: Path) -> None:
    result = await run(root, ["cat", "/proc/self/mountinfo"], mounts=[Mount(str(host_dir), "/mnt")])
    flags = mountinfo(result.stdout.decode())["/mnt"][1].split(",")
    assert {"nosuid", "nodev"} <= set(flags)


async def test_extra_bind_mounts(root: Root, host_dir: Path) -> None:
    rw = host_dir / "rw"
    ro = host_dir / "ro"
    rw.mkdir(mode=0o777)
    os.chmod(rw, 0o777)  # writable by the container's root (an unprivileged host uid)
    ro.mkdir()
    os.chmod(ro, 0o777)  # writable on the host; the mount is what is read-only
    (rw / "hello").write_text("from rw\n")
    (ro / "hello").write_text("from ro\n")
    single = host_dir / "single.txt"
    single.write_text("single file\n")
    mounts = [
        Mount(str(rw), "/tmp/rw"),
        Mount.parse(f"{ro}:/tmp/ro:ro"),
        Mount.parse(f"{single}:/tmp/sub/single.txt:ro"),
    ]
    script = (
        "cat /tmp/rw/hello /tmp/ro/hello /tmp/sub/single.txt;"
        "echo new > /tmp/rw/created && echo rw-ok;"
        "echo new 2>/dev/null > /tmp/ro/created || echo ro-refused;"
        "cat /proc/self/mountinfo"
    )
    out = await sh(root, script, mounts=mounts)
    lines = out.split("\n")
    assert lines[:5] == ["from rw", "from ro", "single file", "rw-ok", "ro-refused"]
    table = mountinfo("\n".join(lines[5:]))
    assert table["/tmp/rw"][1].split(",")[0] == "rw"
    assert table["/tmp/ro"][1].split(",")[0] == "ro"
    assert table["/tmp/sub/single.txt"][1].split(",")[0] == "ro"
    # The write went through to the host, as the container root's host uid.
    created = rw / "created"
    assert created.read_text() == "new\n"
    assert created.stat().st_uid == 100_000
    assert not (ro / "created").exists()


def _owned_folder(host_dir: Path, uid: int, gid: int) -> Path:
    """A folder of ``uid``:``gid`` with one file; the test skips where its
    filesystem has no id-mapped mounts (tmpfs before Linux 6.3)."""
    work = host_dir / f"work-{uid}"
    work.mkdir()
    (work / "in.txt").write_text("from the host\n")
    for path in (work, work / "in.txt"):
        os.chown(path, uid, gid)
    from supervisor._child import _spawn

    userns = _spawn.idmap_userns(uid, 100_000, gid, 100_000)
    try:
        os.close(_spawn.idmap_tree(str(work), userns))
    except OSError as exc:
        pytest.skip(f"no id-mapped mounts on the filesystem of {host_dir} here: {exc}")
    finally:
        os.close(userns)
    return work


async def test_writable_bind_of_a_users_folder_is_id_mapped(host_dir: Path) -> None:
    """The payload works in a user's folder as that user: its files are its own, and land as the owner's."""
    work = _owned_folder(host_dir, 1000, 1001)
    script = "stat -c '%u:%g' /src /src/in.txt; echo new > /src/out.txt && stat -c '%u:%g' /src/out.txt"
    result = await supervisor.run(Spec(["sh", "-c", script], mounts=[Mount(str(work), "/src")]))
    assert result.stdout.decode().split() == ["0:0", "0:0", "0:0"], result
    out = (work / "out.txt").stat()
    assert (out.st_uid, out.st_gid) == (1000, 1001)
    # A payload of another uid is the one shown as the owner.
    result = await supervisor.run(
        Spec(["sh", "-c", "stat -c '%u:%g' /src; touch /src/b"], uid=1234, gid=99, mounts=[Mount(str(work), "/src")])
    )
    assert result.stdout == b"1234:99\n", result
    assert ((work / "b").stat().st_uid, (work / "b").stat().st_gid) == (1000, 1001)


async def test_an_id_mapped_bind_propagates_nothing_to_the_host(host_dir: Path) -> None:
    """The id-mapped copy of a shared host mount is private: a bind made below it stays in the container."""
    shared = host_dir / "shared"
    shared.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(shared)], check=True)
    try:
        subprocess.run(["mount", "--make-shared", str(shared)], check=True)
        work = _owned_folder(shared, 1000, 1000)
        (host_dir / "data").mkdir()
        mounts = [Mount(str(work), "/w"), Mount(str(host_dir / "data"), "/w/inner", read_only=True)]
        result = await supervisor.run(Spec(["cat", "/proc/self/mountinfo"], mounts=mounts))
        table = mountinfo(result.stdout.decode())
        assert "idmapped" in table["/w"][1]
        assert "/w/inner" in table
        with open("/proc/self/mountinfo") as f:
            assert str(work / "inner") not in f.read(), "the container's bind reached the host"
        line = next(x for x in result.stdout.decode().splitlines() if x.split()[4] == "/w")
        assert "shared:" not in line, line
    finally:
        subprocess.run(["umount", "-l", str(shared)], check=True)


async def test_id_mapping_is_chosen_per_bind(host_dir: Path) -> None:
    """Read-only binds, ``noidmap`` and root-owned folders stay plain unless ``idmap`` is asked."""
    work = _owned_folder(host_dir, 1000, 1000)
    root_owned = host_dir / "root-owned"
    root_owned.mkdir()
    os.chmod(root_owned, 0o777)
    mounts = [
        Mount.parse(f"{work}:/ro:ro"),
        Mount.parse(f"{work}:/plain:noidmap"),
        Mount.parse(f"{root_owned}:/rootdir"),
        Mount.parse(f"{root_owned}:/asked:rw,idmap"),
    ]
    script = "stat -c '%u' /ro /plain /rootdir /asked; touch /rootdir/a /asked/b"
    result = await supervisor.run(Spec(["sh", "-c", script], mounts=mounts))
    assert result.stdout.decode().split() == ["65534", "65534", "65534", "0"], result
    assert (root_owned / "a").stat().st_uid == 100_000  # a plain bind: the container's root's host uid
    assert (root_owned / "b").stat().st_uid == 0  # id-mapped as asked: the owner, the host's root
    assert Mount.parse("/a:/b:ro,idmap") == Mount("/a", "/b", read_only=True, idmap=True)
    with pytest.raises(ValueError, match="unknown option 'U'"):
        Mount.parse("/a:/b:U")


async def test_more_binds_than_id_mapped_mounts_stay_plain_past_the_limit(host_dir: Path) -> None:
    """Writable binds of a user's folders are id-mapped up to MAX_IDMAPPED; the rest stay plain binds."""
    from supervisor._protocol import MAX_IDMAPPED

    work = _owned_folder(host_dir, 1000, 1000)
    mounts = [Mount(str(work), f"/m{i}") for i in range(MAX_IDMAPPED + 2)]
    script = " ".join(f"/m{i}" for i in range(MAX_IDMAPPED + 2))
    result = await supervisor.run(Spec(["stat", "-c", "%u", *script.split()], mounts=mounts))
    owners = result.stdout.decode().split()
    assert owners.count("0") == MAX_IDMAPPED
    assert owners.count("65534") == 2
    with pytest.raises(ValueError, match=f"at most {MAX_IDMAPPED} binds may ask for idmap"):
        Spec(["true"], mounts=[Mount(str(work), f"/m{i}", idmap=True) for i in range(MAX_IDMAPPED + 1)])


async def test_id_mapping_asked_where_the_filesystem_has_none_is_an_error() -> None:
    """sysfs has no id-mapped mounts: an asked-for one is refused, naming the source."""
    with pytest.raises(SetupError) as info:
        await supervisor.run(Spec(["true"], mounts=[Mount("/sys/kernel", "/k", idmap=True)]))
    assert info.value.phase is Phase.MOUNTS
    assert "id-mapped bind of '/sys/kernel' at '/k'" in info.value.message
    assert "no id-mapped mounts" in info.value.message


async def test_tmpfs_mounts(root: Root, host_dir: Path) -> None:
    """docker's --tmpfs: nosuid, nodev, noexec unless exec; size and mode; a bind may go inside."""
    (host_dir / "f").write_text("inside\n")
    # /mnt exists in the busybox root; below /tmp, ours, mount points are made.
    tmpfs = {"/mnt": "size=1m,mode=0700", "/tmp/x": "exec", "/tmp/ro": "ro"}
    script = "cat /mnt/in/f; touch /tmp/ro/a 2>/dev/null || echo ro-refused; cat /proc/self/mountinfo"
    mounts = [Mount(str(host_dir), "/mnt/in", read_only=True)]
    lines = (await sh(root, script, tmpfs=tmpfs, mounts=mounts)).split("\n")
    assert lines[:2] == ["inside", "ro-refused"]
    table = mountinfo("\n".join(lines[2:]))
    for point in tmpfs:
        assert table[point][0] == "tmpfs", point
    flags = {point: set(table[point][1].split(",")) for point in tmpfs}
    assert {"nosuid", "nodev", "noexec"} <= flags["/mnt"]
    assert {"nosuid", "nodev"} <= flags["/tmp/x"]
    assert "noexec" not in flags["/tmp/x"]
    assert "ro" in flags["/tmp/ro"]
    out = await sh(root, "stat -c %a /mnt; df -k /mnt | tail -1", tmpfs=tmpfs)
    mode, df = out.split("\n", 1)
    assert mode == "700"
    assert df.split()[1] == "1024"


async def test_bind_mount_onto_existing_rootfs_folder(busybox: str, host_dir: Path) -> None:
    (host_dir / "f").write_text("in mnt\n")
    out = await sh(Root("busybox", busybox), "cat /mnt/f", mounts=[Mount(str(host_dir), "/mnt", read_only=True)])
    assert out == "in mnt\n"


async def test_bind_mount_target_missing_in_rootfs(busybox: str, host_dir: Path) -> None:
    """supervisor never creates a mount point in the host's rootfs folder."""
    with pytest.raises(SetupError) as info:
        await supervisor.run(Spec(["true"], rootfs=busybox, mounts=[Mount(str(host_dir), "/mnt/missing")]))
    assert info.value.phase is Phase.MOUNTS
    assert info.value.errno == errno.ENOENT
    assert "/mnt/missing" in info.value.message
    assert not os.path.exists(os.path.join(busybox, "mnt", "missing"))


async def test_bind_source_behind_a_closed_folder_names_it(host_dir: Path) -> None:
    """The container's root is an unmapped host uid: the error says so and names the folder."""
    (host_dir / "secret" / "x").mkdir(parents=True)
    os.chmod(host_dir / "secret", 0o700)
    for spec in (
        Spec(["true"], mounts=[Mount(str(host_dir / "secret" / "x"), "/x")]),
        Spec(["true"], rootfs=str(host_dir / "secret" / "x")),
    ):
        with pytest.raises(SetupError) as info:
            await supervisor.run(spec)
        assert info.value.errno == errno.EACCES
        message = info.value.message
        assert f'the host folder "{host_dir}/secret" (mode 0700) does not let it search' in message, message
        assert "host uid 100000 (its id mapping)" in message
        assert "oldroot" not in message


async def test_mount_point_in_a_host_system_folder_is_explained(host_dir: Path) -> None:
    """/etc of the default root is the host's, read-only: say so, not EROFS on an internal path."""
    with pytest.raises(SetupError) as info:
        await supervisor.run(Spec(["true"], mounts=[Mount(str(host_dir), "/etc/myapp")]))
    assert info.value.phase is Phase.MOUNTS
    message = info.value.message
    assert message.startswith('mount point "/etc/myapp" does not exist, and "/etc" of the default root'), message
    assert "newroot" not in message
    assert not os.path.exists("/etc/myapp")
    # Outside the host's folders a mount point is made (the root is a tmpfs of ours).
    result = await supervisor.run(Spec(["ls", "-d", "/opt/myapp"], mounts=[Mount(str(host_dir), "/opt/myapp")]))
    assert result.stdout == b"/opt/myapp\n"


async def test_bind_mount_onto_root_is_refused(root: Root, host_dir: Path) -> None:
    try:
        mount = Mount(str(host_dir), "//")
    except ValueError as exc:  # rejected up front: fine too
        assert "Mount.target" in str(exc)  # noqa: PT017
        return
    with pytest.raises(SetupError) as info:
        await run(root, ["true"], mounts=[mount])
    assert info.value.phase is Phase.MOUNTS
    assert info.value.errno == errno.EINVAL


# -- /proc, /dev, /sys -------------------------------------------------------


async def test_dev(root: Root) -> None:
    script = (
        "ls -a /dev; echo ---;"
        "for n in " + " ".join(DEV_NODES) + "; do stat -c '%n %f %t %T' /dev/$n; done; echo ---;"
        "for n in " + " ".join(DEV_LINKS) + "; do readlink /dev/$n; done; echo ---;"
        "head -c 100 /dev/zero | tr -d '\\0' | wc -c;"
        "head -c 100 /dev/urandom | wc -c;"
        "printf x > /dev/null && echo null-ok;"
        "printf x 2>/dev/null > /dev/full || echo full-refused;"
        "touch /dev/shm/x && echo shm-ok;"
        "ls /dev/fd/"
    )
    listing, nodes, links, checks = (await sh(root, script)).split("---\n")
    assert set(listing.split()) == {".", "..", "pts", "shm", *DEV_NODES, *DEV_LINKS}
    for line in nodes.strip().split("\n"):
        path, mode, major, minor = line.split()
        name = path.removeprefix("/dev/")
        assert stat.S_ISCHR(int(mode, 16)), line
        assert (int(major, 16), int(minor, 16)) == DEV_NODES[name], line
    assert links.split() == list(DEV_LINKS.values())
    check_lines = checks.split()
    assert check_lines[:5] == ["0", "100", "null-ok", "full-refused", "shm-ok"]
    # The payload inherits exactly stdin, stdout and stderr (3 is ls's own).
    assert set(check_lines[5:]) <= {"0", "1", "2", "3"}
    assert {"0", "1", "2"} <= set(check_lines[5:])


async def test_proc_is_the_containers(root: Root) -> None:
    out = await sh(root, "cat /proc/1/cmdline | tr '\\0' ' '; echo; readlink /proc/self/exe; ls /proc/1/task")
    cmdline, exe, tasks = out.strip().split("\n")
    assert cmdline.startswith("sh -c ")
    assert exe.startswith("/")
    assert tasks == "1"


async def test_sys_is_read_only(root: Root) -> None:
    result = await run(
        root,
        [
            "sh",
            "-c",
            "touch /sys/x; echo 1 > /sys/kernel/uevent_helper; ls /sys/class/net; cat /sys/class/net/lo/flags",
        ],
    )
    assert "Read-only file system" in result.stderr.decode()
    lines = result.stdout.decode().split()
    assert lines[0] == "lo"
    assert int(lines[1], 16) & 1, "lo is up"


# -- env and cwd -------------------------------------------------------------


def parse_env(out: bytes) -> dict[str, str]:
    return dict(line.split("=", 1) for line in out.decode().splitlines())


async def test_env_is_clean(root: Root, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SUPERVISOR_TEST_SECRET", "must not leak")
    result = await run(root, ["env"], hostname="envbox")
    env = parse_env(result.stdout)
    assert set(env) == {"PATH", "HOME", "TERM", "HOSTNAME"}
    assert {"/usr/bin", "/bin", "/usr/sbin", "/sbin"} <= set(env["PATH"].split(":"))
    assert env["HOME"] == "/root"
    assert env["HOSTNAME"] == "envbox"
    assert env["TERM"]


async def test_env_spec_wins(root: Root) -> None:
    extra = {"FOO": "bar baz", "TERM": "vt100", "EMPTY": "", "PATH": "/bin:/usr/bin"}
    result = await run(root, ["env"], env=extra, hostname="envbox")
    env = parse_env(result.stdout)
    assert env == {**extra, "HOME": "/root", "HOSTNAME": "envbox"}


@pytest.mark.parametrize("uid", [0, 1000])
async def test_home_exists(root: Root, uid: int) -> None:
    out = await sh(root, 'cd "$HOME" && pwd', uid=uid)
    assert out.strip().startswith("/")


async def test_program_looked_up_in_the_containers_path(busybox: str) -> None:
    # python3 exists on the host but not in the busybox root.
    assert shutil.which("python3")
    with pytest.raises(SetupError) as info:
        await supervisor.run(Spec(["python3", "-c", "pass"], rootfs=busybox))
    assert (info.value.phase, info.value.errno) == (Phase.EXEC, errno.ENOENT)
    # And the spec's PATH is the one searched.
    result = await supervisor.run(Spec(["busybox", "echo", "found"], rootfs=busybox, env={"PATH": "/nowhere:/bin"}))
    assert result.stdout == b"found\n"


@pytest.mark.parametrize("cwd", ["/", "/tmp", "/proc", "/dev/shm"])
async def test_cwd(root: Root, cwd: str) -> None:
    out = await sh(root, "pwd", cwd=cwd)
    assert out == cwd + "\n"


async def test_missing_cwd_is_a_setup_error(root: Root) -> None:
    with pytest.raises(SetupError) as info:
        await run(root, ["true"], cwd="/no/such/dir")
    assert info.value.phase is Phase.IDENTITY
    assert info.value.errno == errno.ENOENT
    assert info.value.result is not None
    assert info.value.result.reason == "setup_failed"


async def test_cwd_is_entered_as_the_payload_user() -> None:
    # /root on the default root is a 0700 tmpfs of the container's root user.
    with pytest.raises(SetupError) as info:
        await supervisor.run(Spec(["true"], uid=1000, cwd="/root"))
    assert info.value.phase is Phase.IDENTITY
    assert info.value.errno == errno.EACCES


# -- exit status and signals -------------------------------------------------


@pytest.mark.parametrize("code", [0, 1, 3, 255])
async def test_exit_codes(root: Root, code: int) -> None:
    result = await run(root, ["sh", "-c", f"exit {code}"])
    assert (result.reason, result.exit_code, result.signal) == ("exited", code, None)
    assert result.ok == (code == 0)


async def test_killed_by_a_signal() -> None:
    # A real fault is delivered even to PID 1 (a kill() from inside is not).
    result = await supervisor.run(Spec(["python3", "-c", "import ctypes; ctypes.string_at(0)"]), check=False)
    assert (result.reason, result.exit_code, result.signal) == ("signaled", None, 11)
    assert not result.ok


async def test_pid_1_ignores_signals_it_does_not_handle(busybox: str) -> None:
    # pid_namespaces(7): even SIGKILL from inside the namespace does not kill init.
    out = await sh(Root("busybox", busybox), "kill -9 $$; kill -TERM $$; echo survived")
    assert out == "survived\n"


async def test_other_processes_die_by_signal(root: Root) -> None:
    out = await sh(root, "sh -c 'kill -TERM $$'; echo $?; sh -c 'kill -KILL $$'; echo $?")
    assert out.split() == ["143", "137"]


# -- stdin, stdout, stderr ---------------------------------------------------


async def test_stdin_round_trip(root: Root) -> None:
    data = bytes(range(256)) * 16
    result = await run(root, ["cat"], input=data)
    assert result.stdout == data
    assert result.stderr == b""


async def test_stdin_defaults_to_dev_null(root: Root) -> None:
    result = await run(root, ["sh", "-c", "cat; readlink /proc/self/fd/0"])
    assert result.stdout == b"/dev/null\n"


async def test_stderr_is_captured_separately(root: Root) -> None:
    result = await run(root, ["sh", "-c", "echo out; echo err >&2; echo out2; exit 4"])
    assert result.stdout == b"out\nout2\n"
    assert result.stderr == b"err\n"
    assert result.exit_code == 4


async def test_large_input_and_output(root: Root) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)
    result = await run(root, ["cat"], input=data)
    assert result.stdout == data
    result = await run(root, ["sh", "-c", "head -c 2500000 /dev/zero; head -c 1500000 /dev/zero >&2"])
    assert result.stdout == b"\0" * 2_500_000
    assert result.stderr == b"\0" * 1_500_000


# -- network -----------------------------------------------------------------


async def test_network_has_only_loopback_up(root: Root) -> None:
    out = await sh(root, "ls /sys/class/net; echo ---; cat /sys/class/net/lo/flags; echo ---; cat /proc/net/dev")
    links, flags, dev = out.split("---\n")
    assert links.split() == ["lo"]
    assert int(flags, 16) & 1
    interfaces = [line.split(":")[0].strip() for line in dev.strip().split("\n")[2:]]
    assert interfaces == ["lo"]


async def test_loopback_carries_traffic() -> None:
    code = (
        "import socket\n"
        "s = socket.create_server(('127.0.0.1', 0))\n"
        "c = socket.create_connection(s.getsockname())\n"
        "a, _ = s.accept()\n"
        "c.sendall(b'ping')\n"
        "print(a.recv(4).decode())\n"
    )
    result = await supervisor.run(Spec(["python3", "-c", code]))
    assert result.stdout == b"ping\n", result.stderr


# -- nothing left on the host ------------------------------------------------


def container_owned(top: str) -> list[str]:
    """Entries directly in ``top`` owned by a container's host uid range."""
    out = []
    for name in os.listdir(top):
        try:
            if os.lstat(os.path.join(top, name)).st_uid >= 100_000:
                out.append(name)
        except FileNotFoundError:
            pass
    return out


async def test_nothing_created_on_the_host(busybox: str, host_dir: Path) -> None:
    """A busy container (mounts, writes in every writable place) leaves the rootfs and /tmp as they were."""
    (host_dir / "src").mkdir()
    os.chmod(host_dir / "src", 0o777)
    spec = Spec(
        ["sh", "-c", "for d in /tmp /dev/shm /tmp/deep/mount; do echo x > $d/file || exit 1; done; mkdir /tmp/dir"],
        rootfs=busybox,
        mounts=[Mount(str(host_dir / "src"), "/tmp/deep/mount", read_only=False)],
    )
    tree_before = sorted(p for p, _, _ in os.walk(busybox))
    tmp_before = set(os.listdir("/tmp"))
    owned_before = set(container_owned("/tmp"))
    result = await supervisor.run(spec)
    assert result.ok, result.stderr
    assert sorted(p for p, _, _ in os.walk(busybox)) == tree_before
    # (Other programs may use /tmp meanwhile: look for what the container would have made.)
    assert not {"file", "dir", "deep"} & (set(os.listdir("/tmp")) - tmp_before)
    assert set(container_owned("/tmp")) <= owned_before
    assert (host_dir / "src" / "file").read_text() == "x\n"
    assert os.listdir(host_dir / "src") == ["file"]


async def test_host_paths_through_absolute_symlinks(busybox: str, host_dir: Path) -> None:
    """Host paths are resolved on the host: an absolute symlink on the way still works."""
    data = host_dir / "data"
    data.mkdir()
    (data / "f").write_text("via link\n")
    (host_dir / "data-link").symlink_to(data)  # absolute target
    (host_dir / "root-link").symlink_to(busybox)
    spec = Spec(
        ["cat", "/tmp/x/f"],
        rootfs=str(host_dir / "root-link"),
        mounts=[Mount(str(host_dir / "data-link"), "/tmp/x", read_only=True)],
    )
    result = await supervisor.run(spec)
    assert result.stdout == b"via link\n", result
