"""Rootless mode: the CLI and the API run by a real unprivileged user.

The module makes a system user of its own (removed at the end) and a folder
that user can read: the supervisor package and the packages it imports,
copied from this test run's environment, with a Python interpreter that user
can run (this one, or the host's of the same version when this one lies in a
folder only root can enter). Every check runs a real ``python -m supervisor``
or a small API program as that user, through ``setpriv``.
"""

from __future__ import annotations

import contextlib
import glob
import importlib.metadata
import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from _cgroup_util import unit_cgroup
from _util import run_with_repo

from supervisor import Spec, Supervisor
from supervisor._privileges import userns_refused

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="making a test user needs root")

#: What the status lines of a payload say about its isolation.
STATUS_KEYS = ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb", "NoNewPrivs", "Seccomp")
#: The namespaces a container gets of its own.
NAMESPACES = ("user", "mnt", "uts", "ipc", "net", "pid", "cgroup")
REPORT = (
    "for k in " + " ".join(STATUS_KEYS) + '; do grep "^$k:" /proc/self/status; done; '
    "for n in " + " ".join(NAMESPACES) + '; do echo "ns $n $(readlink /proc/self/ns/$n)"; done'
)


@dataclass
class User:
    """The test user and how to run a program as it."""

    name: str
    uid: int
    gid: int
    home: str  # the readable folder: site/, run/ (its XDG_RUNTIME_DIR), work/
    python: str

    def env(self, **extra: str) -> dict[str, str]:
        env = {
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "HOME": self.home,
            "PYTHONPATH": os.path.join(self.home, "site"),
            "PYTHONDONTWRITEBYTECODE": "1",
            "XDG_RUNTIME_DIR": os.path.join(self.home, "run"),
        }
        # The sanitizer build's runtime and options (tox's sanitize env).
        env.update({k: v for k, v in os.environ.items() if k in ("LD_PRELOAD", "ASAN_OPTIONS", "UBSAN_OPTIONS")})
        env.update(extra)
        return env

    def run(
        self, *args: str, env: dict[str, str] | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """Run ``args`` as the user, in a clean environment."""
        cmd = ["setpriv", f"--reuid={self.uid}", f"--regid={self.gid}", "--clear-groups", "--"]
        return subprocess.run(
            [*cmd, *args],
            check=False,
            env=env or self.env(),
            cwd=self.home,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def cli(self, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """``python -m supervisor ARGS`` as the user."""
        return self.run(self.python, "-m", "supervisor", *args, env=env)

    def api(self, program: str) -> subprocess.CompletedProcess[str]:
        """A Python program (using the API) as the user."""
        return self.run(self.python, "-c", textwrap.dedent(program))


def _top_levels(dist: importlib.metadata.Distribution) -> set[str]:
    """The top-level modules and packages a distribution installed."""
    names = set()
    for f in dist.files or ():
        first = f.parts[0]
        if first.endswith((".dist-info", ".egg-info", ".pth")) or first in ("..", "__pycache__"):
            continue
        names.add(first)
    return names


def _requirement_name(req: str) -> str:
    name = req.split(";", maxsplit=1)[0].strip()
    for sep in "<>=!~[ (":
        name = name.split(sep)[0]
    return name


def _installed_closure(names: list[str]) -> dict[str, importlib.metadata.Distribution]:
    """The installed distributions among ``names`` and everything they require
    (extras left out; a requirement that is not installed, such as a backport
    for an older Python, is skipped)."""
    found: dict[str, importlib.metadata.Distribution] = {}
    todo = list(names)
    while todo:
        name = todo.pop()
        key = name.lower().replace("_", "-")
        if key in found:
            continue
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        found[key] = dist
        todo.extend(_requirement_name(r) for r in dist.requires or () if "extra ==" not in r)
    return found


def _copy_environment(site: str) -> None:
    """The supervisor package under test and what it imports, into ``site``."""
    import supervisor

    package = os.path.dirname(supervisor.__file__)
    shutil.copytree(package, os.path.join(site, "supervisor"), ignore=shutil.ignore_patterns("__pycache__"))
    with open(os.path.join(os.path.dirname(os.path.dirname(__file__)), "pyproject.toml"), "rb") as f:
        wanted = [_requirement_name(r) for r in tomllib.load(f)["project"]["dependencies"]]
    _copy_distributions(site, wanted)


def _copy_distributions(site: str, names: list[str], metadata: bool = False) -> None:
    """The installed distributions ``names`` and what they require into ``site``;
    with ``metadata`` their ``.dist-info`` too (pytest finds plugins by entry point)."""
    for dist in _installed_closure(names).values():
        tops = _top_levels(dist)
        if metadata:
            tops |= {f.parts[0] for f in dist.files or () if f.parts[0].endswith(".dist-info")}
        for top in tops:
            src, dst = str(dist.locate_file(top)), os.path.join(site, top)
            if os.path.isdir(src):
                shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__"), dirs_exist_ok=True)
            elif os.path.exists(src):
                shutil.copy2(src, dst)


def _usable_python(user: User) -> str | None:
    """An interpreter of this Python's version that the user can run and import the copy with."""
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    for candidate in (sys.executable, f"/usr/bin/python{version}", f"/usr/local/bin/python{version}"):
        if not os.path.exists(candidate):
            continue
        user.python = candidate
        probe = user.run(candidate, "-c", "import sys, supervisor, trio; print(sys.version_info[:2])")
        if probe.returncode == 0 and probe.stdout.strip() == str(sys.version_info[:2]):
            return candidate
    return None


@pytest.fixture(scope="module")
def user() -> Iterator[User]:
    """A fresh unprivileged user that can run the supervisor under test."""
    refused = userns_refused()
    if refused is not None:
        pytest.skip(f"unprivileged user namespaces are off here ({refused})")
    if shutil.which("useradd") is None or shutil.which("setpriv") is None:
        pytest.skip("useradd and setpriv (Debian's passwd and util-linux) are needed to make and become a test user")
    name = f"sv-rl-{os.getpid() % 100000}"
    made = subprocess.run(
        ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", "--user-group", name],
        check=False,
        capture_output=True,
    )
    if made.returncode == 0:
        uid, gid = pwd.getpwnam(name).pw_uid, pwd.getpwnam(name).pw_gid
    elif not os.access("/etc/passwd", os.W_OK):
        # A read-only /etc (the v2 guest shares the host's root read-only):
        # an id no account has is as unprivileged, and setpriv takes it.
        taken = {p.pw_uid for p in pwd.getpwall()} | {p.pw_gid for p in pwd.getpwall()}
        uid = gid = next(i for i in range(61000, 62000) if i not in taken)
        name = str(uid)
    else:
        pytest.fail(f"useradd {name} failed: {made.stderr.strip()}")
    home = tempfile.mkdtemp(prefix="sv-rootless-", dir="/tmp")
    try:
        os.chmod(home, 0o755)
        site = os.path.join(home, "site")
        _copy_environment(site)
        for sub, mode in (("run", 0o700), ("work", 0o755)):
            os.mkdir(os.path.join(home, sub), mode)
            os.chown(os.path.join(home, sub), uid, gid)
        for folder, dirs, files in os.walk(site):
            for d in dirs:
                os.chmod(os.path.join(folder, d), 0o755)
            for f in files:
                os.chmod(os.path.join(folder, f), 0o644 if not f.endswith(".so") else 0o755)
        u = User(name, uid, gid, home, sys.executable)
        if _usable_python(u) is None:
            pytest.skip(f"no Python {sys.version_info.major}.{sys.version_info.minor} that {name} can run here")
        yield u
        left = [p for p in os.listdir("/proc") if p.isdigit() and _owner(p) == uid]
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)
        assert not left, f"processes of {name} outlived the tests: {left}"
    finally:
        shutil.rmtree(home, ignore_errors=True)
        if made.returncode == 0:
            subprocess.run(["userdel", name], check=False, capture_output=True)
            subprocess.run(["groupdel", name], check=False, capture_output=True)


def _owner(pid: str) -> int | None:
    try:
        return os.stat(f"/proc/{pid}").st_uid
    except OSError:
        return None


def _report(text: str) -> dict[str, str]:
    found = {}
    for line in text.splitlines():
        if line.startswith("ns "):
            _, kind, link = line.split(" ", 2)
            found[f"ns {kind}"] = link
        elif ":" in line:
            key, _, value = line.partition(":")
            found[key] = value.strip()
    return found


def test_the_cli_runs_as_the_users_own_id_mapped_to_root(user: User) -> None:
    """Container root is the caller's own uid and gid, the only ids mapped."""
    done = user.cli(
        "run", "--", "sh", "-c", "id -u; id -g; cat /proc/self/uid_map /proc/self/gid_map /proc/self/setgroups"
    )
    assert done.returncode == 0, done.stderr
    lines = [line.split() for line in done.stdout.splitlines()]
    assert lines[0] == ["0"]
    assert lines[1] == ["0"]
    assert lines[2] == ["0", str(user.uid), "1"]
    assert lines[3] == ["0", str(user.gid), "1"]
    assert lines[4] == ["deny"]
    debug = user.cli("run", "-d", "--", "true")
    mapping = f"rootless: container uid 0/gid 0 is host uid {user.uid}/gid {user.gid}, the only ids mapped"
    expected = f"supervisor: ids           {mapping}"
    assert expected in debug.stderr.splitlines(), debug.stderr


@pytest.mark.anyio
async def test_a_rootless_container_is_isolated_like_a_root_started_one(user: User) -> None:
    """The same capabilities, no_new_privs, seccomp mode and namespaces of its own."""
    done = user.cli("run", "--", "sh", "-c", REPORT)
    assert done.returncode == 0, done.stderr
    rootless = _report(done.stdout)
    async with Supervisor() as sup:
        result = await sup.run(Spec(["sh", "-c", REPORT]))
    assert result.id_mapping == "range"
    rooted = _report(result.stdout.decode())
    for key in STATUS_KEYS:
        assert rootless[key] == rooted[key], key
    assert rootless["NoNewPrivs"] == "1"
    assert rootless["Seccomp"] == "2"
    for kind in NAMESPACES:
        assert rootless[f"ns {kind}"] != os.readlink(f"/proc/self/ns/{kind}"), kind


def test_the_users_files_are_the_containers_roots_and_others_stay_out_of_reach(user: User) -> None:
    """A bind of the user's own folder is written as its owner; a root-owned one is not writable."""
    work = os.path.join(user.home, "work")
    root_owned = tempfile.mkdtemp(dir=user.home)  # root's, mode 0700
    try:
        os.chmod(root_owned, 0o755)
        script = "touch /w/made && echo ok; touch /r/nope 2>/dev/null && echo wrote || echo refused"
        done = user.cli("run", "-v", f"{work}:/w", "-v", f"{root_owned}:/r", "--", "sh", "-c", script)
        assert done.returncode == 0, done.stderr
        assert done.stdout.split() == ["ok", "refused"]
        st = os.stat(os.path.join(work, "made"))
        assert (st.st_uid, st.st_gid) == (user.uid, user.gid)
        assert os.listdir(root_owned) == []
    finally:
        shutil.rmtree(root_owned)
        for name in os.listdir(work):
            os.unlink(os.path.join(work, name))


@pytest.mark.parametrize(
    ("flags", "field"),
    [
        (["--memory", "100M"], "limits"),
        (["--pids", "10"], "limits"),
        (["--network", "bridge"], "network"),
        (["--init"], "init"),
        (["--network", "bridge", "-p", "8080:80"], "network"),
        (["-v", "/tmp:/w:idmap"], "mounts"),
        (["-v", "/proc:/p"], "mounts"),
    ],
)
def test_what_needs_root_is_refused_in_one_line(user: User, flags: list[str], field: str) -> None:
    """Exit status 125 and one line naming the field, the caller's uid and what is missing."""
    done = user.cli("run", *flags, "--", "true")
    assert done.returncode == 125, done
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert f"Spec.{field}: needs root: running as uid {user.uid} (rootless)" in lines[0]


def test_many_containers_at_once_through_the_api(user: User) -> None:
    """Run-many, captured output, a timeout and a failing payload, all rootless."""
    done = user.api(
        """
        import json, trio
        from supervisor import Spec, Supervisor

        async def main():
            results = []
            async with Supervisor() as sup:
                async def one(i):
                    r = await sup.run(Spec(["sh", "-c", f"echo {i}"]))
                    results.append(int(r.stdout))
                async with trio.open_nursery() as n:
                    for i in range(24):
                        n.start_soon(one, i)
                late = await sup.run(Spec(["sleep", "30"]), timeout=0.5, check=False)
                failed = await sup.run(Spec(["sh", "-c", "exit 3"]), check=False)
                spin = "import time\\nt = time.process_time()\\nwhile time.process_time() - t < 0.3: pass"
                busy = await sup.run(Spec(["sh", "-c", 'python3 -c "$0" & wait', spin]))
                try:
                    await sup.run(Spec(["true"], map_base="auto"))
                except ValueError as exc:
                    assert str(exc).startswith("Spec.map_base: needs root"), exc
            cpu = busy.cpu_user_s + busy.cpu_system_s
            print(json.dumps([sorted(results), late.reason, failed.exit_code, failed.id_mapping, cpu >= 0.3]))

        trio.run(main)
        """
    )
    assert done.returncode == 0, done.stderr
    # The CPU figures of a container without a cgroup come from PID 1's
    # rusage, its reaped child's included.
    assert json.loads(done.stdout) == [list(range(24)), "timeout", 3, "own", True]


def test_the_run_directory_is_the_users_own(user: User) -> None:
    """$XDG_RUNTIME_DIR/supervisor when that is the user's, else /tmp/supervisor-UID;
    one that another user made is never written to, and gc sees only the user's own."""
    done = user.cli("run", "--", "true")
    assert done.returncode == 0, done.stderr
    runtime = os.path.join(user.home, "run", "supervisor")
    st = os.stat(runtime)
    assert (st.st_uid, st.st_mode & 0o777) == (user.uid, 0o700)
    assert os.listdir(os.path.join(runtime, "seccomp"))  # the compiled default filter, cached
    gc = user.cli("gc")
    assert gc.returncode == 0, gc.stderr
    assert "0 dead supervisor(s)" in gc.stdout

    fallback = f"/tmp/supervisor-{user.uid}"
    assert not os.path.exists(fallback)
    # Another user's (root's here, and anyone's to write) made in advance,
    # with a dead supervisor's ledger that would have the user remove a
    # folder of its own: never swept, never written to.
    canary = tempfile.mkdtemp(dir=os.path.join(user.home, "work"))
    os.chown(canary, user.uid, user.gid)
    os.mkdir(fallback, 0o777)
    os.mkdir(os.path.join(fallback, "999999-5"))
    with open(os.path.join(fallback, "999999-5", "ledger-0.jsonl"), "w") as f:
        f.write(json.dumps({"cid": "planted", "kind": "dir", "path": canary}) + "\n")
    try:
        env = user.env()
        del env["XDG_RUNTIME_DIR"]
        done = user.cli("run", "--", "true", env=env)
        assert done.returncode == 0, done.stderr
        gc = user.cli("gc", env=env)
        assert f"the run directory {fallback} is not a folder of uid {user.uid}'s own" in gc.stderr + gc.stdout
        assert os.path.isdir(canary)
        assert os.listdir(fallback) == ["999999-5"]
        shutil.rmtree(fallback)
        done = user.cli("run", "--", "true", env=env)
        assert done.returncode == 0, done.stderr
        st = os.stat(fallback)
        assert (st.st_uid, st.st_mode & 0o777) == (user.uid, 0o700)
    finally:
        shutil.rmtree(fallback, ignore_errors=True)
        shutil.rmtree(canary, ignore_errors=True)


def _battery(text: str) -> dict[str, str]:
    found = {}
    for line in text.splitlines():
        name, sep, value = line.partition("=")
        if sep:
            found[name] = value
    return found


@pytest.mark.anyio
async def test_the_escape_battery_gives_a_rootless_container_what_it_gives_a_root_started_one(user: User) -> None:
    """Every probe of the hardening battery (mounts, nested namespaces, keyrings,
    modules, clocks, devices, rlimits, capabilities, seccomp...) answers the same."""
    from test_hardening import BATTERY, probe, results

    done = user.cli("run", "--", *probe(BATTERY))
    assert done.returncode == 0, done.stderr
    rootless = _battery(done.stdout)
    rooted = await results(Spec(probe(BATTERY)))
    assert len(rooted) > 30, rooted
    assert rootless.keys() == rooted.keys()
    differing = {k: (rootless[k], rooted[k]) for k in rooted if rootless[k] != rooted[k]}
    assert differing == {}


@pytest.fixture
def user_rootfs(user: User) -> Iterator[str]:
    """A busybox root folder of the user's own."""
    from conftest import APPLETS, ROOTFS_DIRS, _find_busybox

    busybox = _find_busybox()
    if busybox is None:
        pytest.skip("no static busybox (Debian's busybox-static)")
    root = tempfile.mkdtemp(dir=os.path.join(user.home, "work"))
    try:
        for d in (*ROOTFS_DIRS, "bin"):
            os.makedirs(os.path.join(root, d), exist_ok=True)
        shutil.copy2(busybox, os.path.join(root, "bin", "busybox"))
        for applet in APPLETS:
            os.symlink("busybox", os.path.join(root, "bin", applet))
        for folder, dirs, files in os.walk(root):
            for name in (folder, *(os.path.join(folder, n) for n in dirs + files)):
                os.lchown(name, user.uid, user.gid)
        os.chmod(root, 0o755)
        yield root
    finally:
        shutil.rmtree(root)


def test_a_given_root_with_an_overlay_and_a_tmpfs(user: User, user_rootfs: str) -> None:
    """The user's own root folder, copy-on-write: written inside, unchanged outside."""
    before = sorted(os.listdir(os.path.join(user_rootfs, "bin")))
    script = "echo new > /bin/made && cat /bin/made && touch /scratch/f && grep -c ' /scratch tmpfs' /proc/mounts"
    done = user.cli("run", "-m", user_rootfs, "--overlay", "--tmpfs", "/scratch:size=1m", "--", "sh", "-c", script)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["new", "1"]
    assert sorted(os.listdir(os.path.join(user_rootfs, "bin"))) == before


def test_run_many_through_the_cli(user: User) -> None:
    done = user.cli("run-many", "-n", "6", "--", "true")
    assert done.returncode == 0, done.stderr


def test_a_container_dies_with_its_rootless_supervisor(user: User) -> None:
    """SIGKILL of the supervisor ends its container (the lifeline)."""
    cmd = ["setpriv", f"--reuid={user.uid}", f"--regid={user.gid}", "--clear-groups", "--"]
    proc = subprocess.Popen(
        [*cmd, user.python, "-m", "supervisor", "run", "--", "sleep", "1000"],
        env=user.env(),
        cwd=user.home,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while not (sleepers := _user_sleepers(user)):
            assert time.monotonic() < deadline, "the container never started"
            time.sleep(0.02)
    finally:
        proc.kill()
        proc.wait()
    deadline = time.monotonic() + 10
    while _user_sleepers(user):
        assert time.monotonic() < deadline, f"the container outlived its supervisor: {sleepers}"
        time.sleep(0.02)


def _user_sleepers(user: User) -> list[int]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read()
        except OSError:
            continue
        if cmdline == b"sleep\0" + b"1000\0" and _owner(pid) == user.uid:
            found.append(int(pid))
    return found


IN_A_DELEGATED_LEAF = """
import os, sys, trio
from supervisor import Limits, Spec, Supervisor

unit_dir, parent = sys.argv[1], sys.argv[2]
hog = ["python3", "-c", "b = bytearray(256 << 20)"]
BOMB = '''
import os, time
forked = 0
for _ in range(20):
    try:
        pid = os.fork()
    except OSError:
        continue
    if pid == 0:
        time.sleep(2)
        os._exit(0)
    forked += 1
print(forked)
'''
bomb = ["python3", "-c", BOMB]

async def main():
    async with Supervisor() as sup:
        try:  # the unit is the user's, but gives its children no controllers yet
            await sup.run(Spec(hog, limits=Limits(memory_bytes=64 << 20)))
        except ValueError as exc:
            print("none:", "needs root" in str(exc))
    # The user's own unit: its children get the controllers (what systemd does
    # for a unit with Delegate=yes once something below asks for them).
    with open(unit_dir + "/cgroup.subtree_control", "w") as f:
        f.write("+cpu +memory +pids")
    async with Supervisor() as sup:
        # Found without cgroup_parent: the container's cgroup is made in the
        # unit, beside the supervisor's leaf, and removed after.
        r = await sup.run(Spec(hog, limits=Limits(memory_bytes=64 << 20)), check=False)
        left = [n for n in os.listdir(unit_dir) if n.startswith("sv-")]
        print("found:", r.reason, r.peak_memory_bytes is not None, left == [])
        r = await sup.run(Spec(hog, limits=Limits(memory_bytes=64 << 20), cgroup_parent=parent), check=False)
        print("memory:", r.reason, r.peak_memory_bytes is not None)
        r = await sup.run(Spec(bomb, limits=Limits(pids=6), cgroup_parent=parent), check=False)
        print("pids:", r.exit_code, int(r.stdout) < 6)

trio.run(main)
"""


def test_limits_in_a_cgroup_v2_subtree_delegated_to_the_user(user: User) -> None:
    """As systemd's Delegate=yes gives a user a unit's cgroup: the supervisor in a
    leaf of it, the containers' cgroups below a parent in it, their limits enforced."""
    with unit_cgroup("sv-test-user-unit", {"memory", "pids"}) as (unit, unit_dir):
        _run_in_a_delegated_leaf(user, unit, unit_dir)


def _run_in_a_delegated_leaf(user: User, unit: str, unit_dir: str) -> None:
    """Delegate the unit to the user, then run IN_A_DELEGATED_LEAF as the user in its leaf."""
    try:
        for folder in (unit_dir, os.path.join(unit_dir, "supervisor")):
            for name in ("", "cgroup.procs", "cgroup.subtree_control", "cgroup.threads"):
                os.chown(os.path.join(folder, name), user.uid, user.gid)
        program = os.path.join(user.home, "work", "in_a_leaf.py")
        with open(program, "w") as f:
            f.write(IN_A_DELEGATED_LEAF)
        # Root moves the shell into the leaf (moving in from outside the
        # subtree is the delegator's right), which then becomes the user.
        enter = f'echo $$ > {unit_dir}/supervisor/cgroup.procs && exec "$@"'
        setpriv = ["setpriv", f"--reuid={user.uid}", f"--regid={user.gid}", "--clear-groups", "--"]
        out = subprocess.run(
            ["sh", "-c", enter, "sh", *setpriv, user.python, program, unit_dir, unit + "/containers"],
            env=user.env(),
            cwd=user.home,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert out.returncode == 0, out.stderr
        assert out.stdout.splitlines() == [
            "none: True",
            "found: oom True True",
            "memory: oom True",
            "pids: 0 True",
        ], out
    finally:
        for name in os.listdir(os.path.join(user.home, "work")):
            os.unlink(os.path.join(user.home, "work", name))


@pytest.mark.anyio
async def test_the_mount_table_devices_and_masks_are_a_root_started_containers(user: User) -> None:
    """Every mount (its place, options and filesystem), /dev and each masked and
    read-only /proc or /sys path look the same from inside either container."""
    from supervisor._parent.config import MASKED_PATHS, READONLY_PATHS

    paths = " ".join((*MASKED_PATHS, *READONLY_PATHS))
    script = (
        "awk '{print $5, $6, $9}' /proc/self/mountinfo; ls -l /dev | cut -c1-10; ls /dev; "
        f'for p in {paths}; do echo "$p $(stat -c %F:%s "$p" 2>&1)"; done'
    )
    done = user.cli("run", "--", "sh", "-c", script)
    assert done.returncode == 0, done.stderr
    async with Supervisor() as sup:
        rooted = (await sup.run(Spec(["sh", "-c", script]))).stdout.decode()
    assert len(rooted.splitlines()) > 30
    assert done.stdout.splitlines() == rooted.splitlines()


def test_own_ids_map_to_the_uid_asked_for(user: User) -> None:
    """Without subordinate ids, ``--uid 1000`` is the caller's own uid shown as 1000 (root is not mapped)."""
    done = user.cli(
        "run", "--uid", "1000", "--", "sh", "-c", "id -u; id -g; cat /proc/self/uid_map /proc/self/gid_map; " + REPORT
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert [line.split() for line in lines[:4]] == [
        ["1000"],
        ["1000"],
        ["1000", str(user.uid), "1"],
        ["1000", str(user.gid), "1"],
    ]
    report = _report("\n".join(lines[4:]))
    assert report["CapEff"] == report["CapPrm"] == report["CapAmb"] == "0000000000000000"
    assert report["NoNewPrivs"] == "1"


# --- subordinate ids: newuidmap and newgidmap --------------------------------

#: The test user's grant: far from the root mode's default range (100000 and
#: up) and from its leased pool (2**30 and up).
GRANT_BASE = 800_000_000


@contextlib.contextmanager
def _granted(user: User, count: int = 65536) -> Iterator[int]:
    """``user`` given subordinate ids in /etc/subuid and /etc/subgid (removed after)."""
    if shutil.which("newuidmap") is None or shutil.which("newgidmap") is None:
        pytest.skip("newuidmap and newgidmap (Debian's uidmap) are not installed")
    if not os.access("/etc", os.W_OK):
        pytest.skip("/etc is read-only here: no subordinate ids can be granted")
    line = f"{user.name}:{GRANT_BASE}:{count}\n"
    saved = {}
    for path in ("/etc/subuid", "/etc/subgid"):
        try:
            with open(path) as f:
                saved[path] = f.read()
        except FileNotFoundError:
            saved[path] = None
        with open(path, "a") as f:
            f.write(line)
    try:
        yield GRANT_BASE
    finally:
        for path, text in saved.items():
            if text is None:
                os.unlink(path)
            else:
                with open(path, "w") as f:
                    f.write(text)


def test_subordinate_ids_map_a_range_as_podman_does(user: User) -> None:
    """Id 0 is the caller, 1..65535 its subordinate ids; setgroups stays allowed, so
    the caller's groups are dropped; ``-d`` says so."""
    with _granted(user) as base:
        done = user.cli(
            "run", "--", "sh", "-c", "cat /proc/self/uid_map /proc/self/gid_map /proc/self/setgroups; id -G"
        )
        debug = user.cli("run", "-d", "--", "true")
    assert done.returncode == 0, done.stderr
    lines = [line.split() for line in done.stdout.splitlines()]
    assert lines[0] == ["0", str(user.uid), "1"]
    assert lines[1] == ["1", str(base), "65535"]
    assert lines[2] == ["0", str(user.gid), "1"]
    assert lines[3] == ["1", str(base), "65535"]
    assert lines[4] == ["allow"]
    assert lines[5] == ["0"]
    mapping = (
        f"rootless: container id 0 is host uid {user.uid}/gid {user.gid}; ids 1-65535 are subordinate uids "
        f"{base}-{base + 65534}/gids {base}-{base + 65534} (newuidmap, newgidmap)"
    )
    assert f"supervisor: ids           {mapping}" in debug.stderr.splitlines(), debug.stderr


def test_a_subordinate_uid_owns_its_files_and_is_isolated_like_a_root_started_one(user: User) -> None:
    """``--uid 1000`` is host id base+999: a file it writes in a bind is owned so,
    and its capability sets and no_new_privs are those of a root-started ``--uid 1000``."""
    shared = os.path.join(user.home, "work", "shared")
    os.mkdir(shared, 0o777)
    os.chmod(shared, 0o777)
    try:
        with _granted(user) as base:
            done = user.cli("run", "--uid", "1000", "-v", f"{shared}:/s", "--", "sh", "-c", "touch /s/f; " + REPORT)
        assert done.returncode == 0, done.stderr
        st = os.stat(os.path.join(shared, "f"))
        assert (st.st_uid, st.st_gid) == (base + 999, base + 999)
        rootless = _report(done.stdout)
        rooted = run_with_repo([sys.executable, "-m", "supervisor", "run", "--uid", "1000", "--", "sh", "-c", REPORT])
        assert rooted.returncode == 0, rooted.stderr
        assert all(rootless[k] == _report(rooted.stdout)[k] for k in STATUS_KEYS), (rootless, rooted.stdout)
    finally:
        shutil.rmtree(shared)


def test_many_at_once_with_subordinate_and_own_ids_mixed(user: User) -> None:
    """Payloads that change to a subordinate uid (PID 1 then has memory of its own)
    beside ones that stay root, 24 at once: none is shut out of its maps."""
    with _granted(user) as base:
        done = user.api(
            """
            import json, trio
            from supervisor import Spec, Supervisor

            async def main():
                found = []
                async with Supervisor() as sup:
                    async def one(i):
                        uid = 1000 + i if i % 2 else 0
                        r = await sup.run(Spec(["sh", "-c", "id -u; cat /proc/self/status | grep ^Uid"], uid=uid))
                        found.append((i, r.stdout.decode().split()[0], r.id_mapping))
                    async with trio.open_nursery() as n:
                        for i in range(24):
                            n.start_soon(one, i)
                print(json.dumps(sorted(found)))

            trio.run(main)
            """
        )
    assert done.returncode == 0, done.stderr
    want = [[i, str(1000 + i if i % 2 else 0), "subids"] for i in range(24)]
    assert json.loads(done.stdout) == want
    assert base > 0


def test_a_uid_beyond_the_grant_and_a_refusing_helper_say_why(user: User) -> None:
    """A payload id the grant does not cover is refused naming the field; a
    helper that refuses is the setup's error, with what it printed."""
    with _granted(user, count=100):
        beyond = user.cli("run", "--uid", "500", "--", "true")
        bin_dir = os.path.join(user.home, "work", "bin")
        os.mkdir(bin_dir, 0o755)
        try:
            for name in ("newuidmap", "newgidmap"):
                path = os.path.join(bin_dir, name)
                with open(path, "w") as f:
                    f.write('#!/bin/sh\necho "$(basename $0): range not allowed" >&2\nexit 1\n')
                os.chmod(path, 0o755)
            refused = user.cli("run", "--", "true", env=user.env(PATH=f"{bin_dir}:/usr/local/bin:/usr/bin:/bin"))
        finally:
            shutil.rmtree(bin_dir)
    assert beyond.returncode == 125, beyond
    assert (
        "Spec.uid: 500 is not mapped: rootless, container id 0 is your own and 1..100 your subordinate ids"
        in beyond.stderr
    )
    assert refused.returncode == 125, refused
    assert f"{bin_dir}/newuidmap" in refused.stderr, refused.stderr
    assert "failed: newuidmap: range not allowed" in refused.stderr, refused.stderr


# --- the isolation and hardening modules, run by the user --------------------

#: Tests of those modules that check what only a root supervisor does, and why
#: they cannot hold rootless (the behaviour they check is not the same).
ROOT_ONLY = {
    "test_id_maps": "the maps are a host range (100000 and up), not the caller's own id",
    "test_payload_ids": "their host ids are the range's; with the caller's own id only, uid 1000 is the caller",
    "test_host_view_of_payload_ids": "the same",
    "test_auto_id_ranges_make_each_container_a_host_user_of_its_own": "map_base='auto' is refused rootless",
    "test_auto_id_ranges_cannot_signal_or_trace_each_other": "the same",
    "test_busybox_root_content": "the test's rootfs is the caller's, so the container's root (the caller) may write it",
    "test_extra_bind_mounts": "a written file's host owner is the caller, not 100000",
    "test_writable_bind_of_a_users_folder_is_id_mapped": "id-mapped mounts need root (refused, and tested so here)",
    "test_an_id_mapped_bind_propagates_nothing_to_the_host": "the same",
    "test_id_mapping_is_chosen_per_bind": "the same",
    "test_more_binds_than_id_mapped_mounts_stay_plain_past_the_limit": "the same",
    "test_id_mapping_asked_where_the_filesystem_has_none_is_an_error": "the same",
    "test_bind_source_behind_a_closed_folder_names_it": "the closed folder is the caller's: the container's root's",
    "test_cwd_is_entered_as_the_payload_user": "with the caller's own id only, the payload uid is the caller",
}


def _copy_test_environment(user: User) -> str:
    """pytest and its plugins beside the package, and the test modules: a project folder the user can read."""
    site = os.path.join(user.home, "site")
    with open(os.path.join(os.path.dirname(os.path.dirname(__file__)), "pyproject.toml"), "rb") as f:
        meta = tomllib.load(f)["project"]
    wanted = [_requirement_name(r) for r in (*meta["dependencies"], *meta["optional-dependencies"]["test"])]
    _copy_distributions(site, wanted, metadata=True)
    here = os.path.dirname(os.path.abspath(__file__))
    project = os.path.join(user.home, "project")
    shutil.copytree(here, os.path.join(project, "tests"), ignore=shutil.ignore_patterns("__pycache__", "guest"))
    shutil.copy2(os.path.join(os.path.dirname(here), "pyproject.toml"), project)
    for top in (site, project):
        for folder, _dirs, files in os.walk(top):
            os.chmod(folder, 0o755)
            for name in files:
                os.chmod(os.path.join(folder, name), 0o755 if name.endswith(".so") else 0o644)
    return project


@pytest.mark.parametrize("ids", ["own", "subids"])
def test_the_isolation_and_hardening_modules_hold_rootless(user: User, ids: str) -> None:
    """tests/test_isolation.py and tests/test_hardening.py, unchanged, run by the
    user through pytest, with its own id only and with subordinate ids: every
    check of theirs that is not about root's id ranges holds for a rootless
    container."""
    skipped = dict(ROOT_ONLY)
    if ids == "subids":  # uid 1000 is then another host id than the caller's
        del skipped["test_cwd_is_entered_as_the_payload_user"]
    if "libasan" in os.environ.get("LD_PRELOAD", ""):  # tox's sanitize env leaves it out too
        skipped["test_oci_profile_every_feature"] = "pyseccomp's free of libseccomp's names aborts under ASan"
    project = _copy_test_environment(user)
    try:
        deselect = " and ".join(f"not {name}" for name in skipped)
        with _granted(user) if ids == "subids" else contextlib.nullcontext(0):
            done = user.run(
                user.python,
                "-m",
                "pytest",
                "-q",
                "-p",
                "no:cacheprovider",
                "--rootdir",
                project,
                "-c",
                os.path.join(project, "pyproject.toml"),
                "-k",
                deselect,
                os.path.join(project, "tests", "test_isolation.py"),
                os.path.join(project, "tests", "test_hardening.py"),
                timeout=600,
            )
        assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
        summary = done.stdout.strip().splitlines()[-1]
        passed = int(summary.split(" passed")[0].split()[-1])
        assert passed >= 120, summary
        assert " failed" not in summary, summary
        assert " error" not in summary, summary
    finally:
        shutil.rmtree(project)
        for name in os.listdir("/tmp"):  # what a crashed session of the user's left
            path = os.path.join("/tmp", name)
            if name.startswith("supervisor-test") and os.lstat(path).st_uid == user.uid:
                shutil.rmtree(path, ignore_errors=True)


#: The project the user's ``pytest --sandbox`` runs: what holds rootless, and
#: a limit the user has no cgroup for.
PLUGIN_PROJECT = """\
import os, socket

import pytest


def test_runs_as_the_users_own_uid_with_a_writable_tmp_path(tmp_path):
    (tmp_path / "out").write_text("x")
    assert os.getuid() == {uid}


def test_the_project_is_read_only():
    with pytest.raises(OSError):
        open(os.path.join(os.path.dirname(__file__), "written"), "w")


def test_only_loopback():
    assert [name for _, name in socket.if_nameindex()] == ["lo"]


def test_a_private_tmp():
    assert not os.path.exists({host_file!r})


@pytest.mark.sandbox(memory="100M")
def test_a_memory_limit_without_a_delegated_cgroup():
    pass
"""


@pytest.mark.parametrize("ids", ["own", "subids"])
def test_the_pytest_plugin_runs_the_users_tests_in_sandboxes(user: User, ids: str) -> None:
    """``pytest --sandbox`` run by the user: the sandboxes hold what they hold as
    root (a read-only project, only loopback, a private /tmp), the tests run
    as the user's uid (as container root, which is the user, where
    subordinate ids are granted) and what they write in ``tmp_path`` is the
    user's; a limit, which needs a delegated cgroup, fails its test with the
    supervisor's one-line reason."""
    project = _copy_test_environment(user)
    plugin_project = os.path.join(user.home, "plugin-project")
    basetemp = os.path.join(user.home, "work", f"basetemp-{ids}")
    host_file = tempfile.mkstemp(prefix="sv-plugin-host-", dir="/tmp")
    os.close(host_file[0])
    os.chmod(host_file[1], 0o644)
    try:
        os.mkdir(plugin_project, 0o755)
        with open(os.path.join(plugin_project, "test_user.py"), "w") as f:
            f.write(PLUGIN_PROJECT.format(uid=user.uid if ids == "own" else 0, host_file=host_file[1]))
        with open(os.path.join(plugin_project, "pytest.ini"), "w") as f:
            f.write("[pytest]\n")
        for name in os.listdir(plugin_project):
            os.chmod(os.path.join(plugin_project, name), 0o644)
        # The sandbox runs the interpreter at the path the user's pytest has,
        # bound with its folder and prefixes; an interpreter reached through a
        # link into a folder the user cannot read (a venv of root's) is not
        # one the user could bind, so the system's is preferred.
        system = f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}"
        python = system if os.path.exists(system) else user.python
        with _granted(user) if ids == "subids" else contextlib.nullcontext(0):
            done = user.run(
                python,
                "-m",
                "pytest",
                "-p",
                "no:cacheprovider",
                # The copy of the package has no distribution metadata, so no entry point.
                "-p",
                "supervisor._pytest.plugin",
                "-rA",
                "--sandbox",
                # Not /tmp/pytest-of-NAME: the v2 guest's user has no name.
                f"--basetemp={basetemp}",
                "--rootdir",
                plugin_project,
                plugin_project,
                timeout=300,
            )
        out = done.stdout + done.stderr
        summary = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else out[-2000:]
        assert "4 passed" in summary, out[-6000:]
        assert "1 error" in summary, out[-6000:]
        assert "failed" not in summary, out[-6000:]
        assert "ERROR plugin-project/test_user.py::test_a_memory_limit_without_a_delegated_cgroup" in out, out
        assert "Spec.limits: needs root: running as uid" in out, out[-6000:]
        written = glob.glob(f"{basetemp}/sandbox-*/test_runs_as_*/out")
        assert written, out[-3000:]
        assert all(os.stat(path).st_uid == user.uid for path in written)
    finally:
        os.unlink(host_file[1])
        shutil.rmtree(project)
        shutil.rmtree(plugin_project, ignore_errors=True)
        shutil.rmtree(basetemp, ignore_errors=True)
