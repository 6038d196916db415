"""Shared fixtures for the real-kernel tests.

* ``anyio_backend``: trio unless a module asks for more (``test_api.py`` runs
  on trio and asyncio).
* ``busybox_rootfs``: a tiny root folder built once per session from the host's
  static busybox, removed at the end; ``busybox`` is the same folder, checked
  to be byte-for-byte unchanged after each test (supervisor must never create
  anything in the host's rootfs folder).
* ``host_dir``: a fresh temporary folder that the container's root (an
  unprivileged host uid) can traverse; removed after the test.
* ``leak_check`` (autouse): what the host holds before and after every test
  (mounts, temp folders, network links, cgroups below ours, our run
  directories, our child processes, our open file descriptors) must be the
  same. Differences get ``SETTLE_S`` seconds to settle (reaping is
  asynchronous). Host-wide state (mounts, /tmp, links, cgroups) can also be
  changed by other programs: it is held against a test only while no other
  test session or container runs on the machine (otherwise the
  differences are printed); of host-wide additions, only the suite's and the
  product's own count (by name prefix, place or a container's host uid:
  ``_ours``), others are printed; what only we can change (descriptors,
  children, our run directory, the session's private TMPDIR) always counts.
* Session-wide: the test process is a child subreaper (a container orphaned
  by a supervisor that died in a subprocess comes back to us, where the leak
  check sees it), and
  TMPDIR points at a private folder, checked exactly and removed at the end.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from _util import IN_SANDBOX

BUSYBOX_CANDIDATES = ("/bin/busybox", "/usr/bin/busybox", "/sbin/busybox", "/usr/sbin/busybox")
APPLETS = (
    "sh", "true", "false", "echo", "cat", "ls", "sleep", "id", "hostname", "mount", "ps", "env", "pwd",
    "kill", "stat", "readlink", "wc", "grep", "head", "touch", "mkdir", "test", "printf", "tr", "sort",
    "od", "tail", "uname", "cut", "seq", "rm", "dd", "whoami",
)  # fmt: skip
ROOTFS_DIRS = ("proc", "dev", "sys", "tmp", "etc", "root", "mnt")

#: How long a difference in host state may take to settle (reaping is async;
#: other programs on the machine may hold short-lived temp files or cgroups).
SETTLE_S = float(os.environ.get("SUPERVISOR_TEST_SETTLE_S", "3"))

PR_SET_CHILD_SUBREAPER = 36

# Subprocesses (`python -m supervisor`, the benchmark scripts) import the
# supervisor under test, not the checkout's sources from their working
# directory, which have no extension built.
os.environ["PYTHONSAFEPATH"] = "1"

#: Paths that session fixtures create and remove; the per-test leak check
#: ignores them (a session fixture may first be set up inside any test).
SESSION_PATHS: set[str] = set()
#: This session's private temporary folder (TMPDIR), once created.
SESSION_TMP: list[str] = []

#: Host-wide state: also changed by other programs on a shared machine.
HOST_WIDE = ("mounts", "tmp", "links", "cgroups")
#: State that only this process and its descendants change.
OWN = ("session_tmp", "rundir")


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    """Async tests run on trio unless a module overrides this fixture."""
    return "trio"


def _find_busybox() -> str | None:
    found = shutil.which("busybox")
    for path in (found, *BUSYBOX_CANDIDATES):
        if path and os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    return None


@pytest.fixture(scope="session")
def busybox_rootfs() -> Iterator[str]:
    """A minimal root folder: bin/busybox, applet symlinks, empty mount points."""
    busybox = _find_busybox()
    if busybox is None:
        pytest.skip("busybox not found (install Debian's busybox-static: tests/install-system-deps.sh)")
    with open(busybox, "rb") as f:
        head = f.read(4096)
    if b"/lib64/ld-linux" in head or b"/lib/ld-linux" in head:
        pytest.skip(f"{busybox} is dynamically linked; install the static build (busybox-static)")
    root = tempfile.mkdtemp(prefix="supervisor-test-rootfs-")
    SESSION_PATHS.add(root)
    try:
        # The container's root is an unprivileged host uid: it must be able to
        # traverse the folder (mkdtemp makes it 0700).
        os.chmod(root, 0o755)
        os.mkdir(os.path.join(root, "bin"), 0o755)
        shutil.copy2(busybox, os.path.join(root, "bin", "busybox"))
        os.chmod(os.path.join(root, "bin", "busybox"), 0o755)
        for applet in APPLETS:
            os.symlink("busybox", os.path.join(root, "bin", applet))
        for name in ROOTFS_DIRS:
            os.mkdir(os.path.join(root, name), 0o755)
        # A non-executable file, for the exec tests.
        Path(root, "etc", "passwd").write_text("root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000::/:/bin/sh\n")
        Path(root, "etc", "group").write_text("root:x:0:\nuser:x:1000:\n")
        os.chmod(os.path.join(root, "tmp"), 0o1777)
        yield root
    finally:
        shutil.rmtree(root)


def _tree(root: str) -> dict[str, tuple[int, int, int, int, int]]:
    """Every entry below ``root`` (not following symlinks) with its metadata."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [".", *dirnames, *filenames]:
            path = os.path.normpath(os.path.join(dirpath, name))
            st = os.lstat(path)
            out[os.path.relpath(path, root)] = (st.st_mode, st.st_uid, st.st_gid, st.st_size, st.st_mtime_ns)
    return out


@pytest.fixture
def busybox(busybox_rootfs: str) -> Iterator[str]:
    """The busybox rootfs; fails the test if anything in it changed."""
    before = _tree(busybox_rootfs)
    yield busybox_rootfs
    after = _tree(busybox_rootfs)
    assert after == before, "the host's rootfs folder was modified by the container"


@pytest.fixture
def host_dir() -> Iterator[Path]:
    """A fresh folder on the host that a container's root can traverse (0755)."""
    path = tempfile.mkdtemp(prefix="supervisor-test-")
    os.chmod(path, 0o755)
    try:
        yield Path(path)
    finally:
        shutil.rmtree(path)


# -- the leak check ---------------------------------------------------------


@dataclass(frozen=True)
class HostState:
    """What the host holds that a container run could leave behind."""

    mounts: frozenset[str]
    tmp: frozenset[str]
    session_tmp: frozenset[str]
    links: frozenset[str]
    cgroups: frozenset[str]
    rundir: frozenset[str]
    children: dict[int, tuple[str, str]]  # pid -> (starttime, "comm (state)")
    fds: dict[int, str]  # fd -> what it points at


def _read_lines(path: str) -> list[str]:
    with open(path) as f:
        return f.read().splitlines()


def _cgroup_dirs() -> list[str]:
    """Our own cgroup's folder in every mounted hierarchy (v1 and v2)."""
    own = []
    for line in _read_lines("/proc/self/cgroup"):
        _hid, controllers, path = line.split(":", 2)
        own.append((set(filter(None, controllers.split(","))), path))
    dirs = []
    seen = set()
    for line in _read_lines("/proc/self/mountinfo"):
        fields = line.split()
        sep = fields.index("-")
        fstype, super_opts = fields[sep + 1], set(fields[sep + 3].split(","))
        mount_root, mount_point = fields[3], fields[4]
        if fstype not in ("cgroup", "cgroup2"):
            continue
        for controllers, path in own:
            if fstype == "cgroup2":
                match = not controllers
            else:
                match = bool(controllers) and controllers <= super_opts
            if not match or not (path == mount_root or path.startswith(mount_root.rstrip("/") + "/")):
                continue
            key = (fstype, frozenset(controllers))
            if key in seen:
                continue
            seen.add(key)
            rel = path[len(mount_root.rstrip("/")) :]
            dirs.append(mount_point + rel)
    return dirs


def _cgroups() -> frozenset[str]:
    out = set()
    for top in _cgroup_dirs():
        for dirpath, _dirnames, _files in os.walk(top):
            out.add(dirpath)
    return frozenset(out)


def _children() -> dict[int, tuple[str, str]]:
    me = os.getpid()
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                data = f.read()
        except OSError:
            continue
        comm = data[data.index("(") + 1 : data.rindex(")")]
        rest = data[data.rindex(")") + 2 :].split()
        state, ppid, starttime = rest[0], int(rest[1]), rest[19]
        if ppid == me:
            out[int(entry)] = (starttime, f"{comm} ({state})")
    return out


def _fds() -> dict[int, str]:
    out = {}
    for entry in os.listdir("/proc/self/fd"):
        try:
            out[int(entry)] = os.readlink(f"/proc/self/fd/{entry}")
        except OSError:
            continue  # the descriptor listdir itself used
    return out


def _tmp_entries() -> frozenset[str]:
    out = set()
    for top in {"/tmp", tempfile.gettempdir()}:
        for name in os.listdir(top):
            path = os.path.join(top, name)
            if not name.startswith("pytest-of-") and path not in SESSION_PATHS:  # pytest's basetemp, our session's
                out.add(path)
    return frozenset(out)


def _session_tmp_entries() -> frozenset[str]:
    """What is in this session's private temporary folder (see ``_session_tmpdir``)."""
    top = SESSION_TMP[0] if SESSION_TMP else None
    if top is None or not os.path.isdir(top):
        return frozenset()
    paths = (os.path.join(top, name) for name in os.listdir(top) if not name.startswith("pytest-of-"))
    return frozenset(p for p in paths if p not in SESSION_PATHS)


def _rundir() -> frozenset[str]:
    """Our own run directories (named ``<pid>-<start time>``) and what they hold."""
    root = os.environ.get("SUPERVISOR_RUN_DIR", "/run/supervisor")
    out = set()
    try:
        names = os.listdir(root)
    except OSError:
        return frozenset()
    for name in names:
        if name.startswith(f"{os.getpid()}-"):
            for dirpath, _dirnames, filenames in os.walk(os.path.join(root, name)):
                out.add(dirpath)
                out.update(os.path.join(dirpath, f) for f in filenames)
    return frozenset(out)


def _snapshot() -> HostState:
    return HostState(
        mounts=frozenset(_read_lines("/proc/self/mountinfo")),
        tmp=_tmp_entries(),
        session_tmp=_session_tmp_entries(),
        links=frozenset(os.listdir("/sys/class/net")),
        cgroups=_cgroups(),
        rundir=_rundir(),
        children=_children(),
        fds=_fds(),
    )


#: Name prefixes of what the product and the suite make in host-wide places:
#: cgroups (``sv-<id>``, ``sv-test-...``), links (bridges ``sv<hash>``, veths
#: ``svh...``), temporary folders (``supervisor-test-...``).
OUR_PREFIXES = {"cgroups": ("sv-",), "links": ("sv",), "tmp": ("supervisor-", "sv-test")}


def _ours(kind: str, entry: str) -> bool:
    """Whether a host-wide entry that appeared is the suite's or the product's
    own (by name, place or owner), rather than another program's."""
    if kind == "mounts":
        fields = entry.split()
        point = fields[4] if len(fields) > 4 else ""
        places = ["/run/supervisor", os.path.join(tempfile.gettempdir(), "supervisor-"), "/tmp/supervisor-"]
        return any(point.startswith(place) for place in places + SESSION_TMP) or "supervisor" in point
    if kind == "tmp":
        try:
            if os.lstat(entry).st_uid >= 100_000:  # a container's host uid wrote it
                return True
        except OSError:
            return False
    if kind == "cgroups":
        tops = _cgroup_dirs()
        rel = next((entry[len(top) :] for top in tops if entry.startswith(top.rstrip("/") + "/")), "")
        return any(part.startswith(OUR_PREFIXES["cgroups"]) for part in rel.split("/") if part)
    return os.path.basename(entry).startswith(OUR_PREFIXES[kind])


def _foreign(before: HostState, after: HostState) -> list[str]:
    """Host-wide entries that appeared during the test and are not ours: reported, not failed on."""
    out = []
    for name in HOST_WIDE:
        added = sorted(e for e in getattr(after, name) - getattr(before, name) if not _ours(name, e))
        if added:
            out.append(f"{name} added by another program: {added}")
    return out


def _problems(before: HostState, after: HostState) -> list[str]:
    out = []
    # Folders and tables: other programs may add and remove their own entries
    # while we run, so only what appeared (and stays) counts, and host-wide
    # only what is ours (see _ours).
    for name in HOST_WIDE + OWN:
        added = getattr(after, name) - getattr(before, name)
        if name in HOST_WIDE:
            added = frozenset(e for e in added if _ours(name, e))
        if added:
            out.append(f"{name} left behind: {sorted(added)}")
    # Our own process: exact.
    new_children = {pid: v for pid, v in after.children.items() if before.children.get(pid, (None,))[0] != v[0]}
    if new_children:
        out.append(f"child processes left behind: {new_children}")
    gone = {pid: v for pid, v in before.children.items() if after.children.get(pid, (None,))[0] != v[0]}
    if gone:
        out.append(f"child processes that existed before the test are gone: {gone}")
    added_fds = {fd: t for fd, t in after.fds.items() if before.fds.get(fd) != t}
    if added_fds:
        out.append(f"file descriptors left open (or reused): {added_fds}")
    closed_fds = {fd: t for fd, t in before.fds.items() if fd not in after.fds}
    if closed_fds:
        out.append(f"file descriptors closed that the test did not own: {closed_fds}")
    return out


def _kill_and_reap(pids: list[int]) -> None:
    """Last resort after a failed check, so one leak does not fail every later test."""
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass


def _reap_adopted_zombies(before: HostState) -> None:
    """Reap zombies that became our children only because we are a subreaper.

    A live leftover process is a leak and is reported; an exited orphan that
    the kernel re-parented to us holds nothing but its PID.
    """
    for pid, (_start, what) in _children().items():
        if pid not in before.children and what.endswith("(Z)"):
            try:
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass


def _process_table() -> dict[int, tuple[int, bytes, int]]:
    """pid -> (ppid, cmdline, real uid) of every process we can read."""
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/status") as f:
                status = dict(line.split(":", 1) for line in f if ":" in line)
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read()
        except (OSError, ValueError):
            continue
        out[int(entry)] = (int(status["PPid"]), cmdline, int(status["Uid"].split()[0]))
    return out


def _foreign_activity() -> list[str]:
    """Other test sessions or supervisors running on this machine right now.

    Processes outside our own ancestry and descendants that run pytest, or
    that run as a container's unprivileged host uid.
    While they run, host-wide changes cannot be attributed to this test.
    """
    table = _process_table()
    me = os.getpid()
    related = {me}
    pid = me
    while pid in table and table[pid][0] > 0 and table[pid][0] not in related:  # ancestors
        pid = table[pid][0]
        related.add(pid)
    children: dict[int, list[int]] = {}
    for pid, (ppid, _cmd, _uid) in table.items():
        children.setdefault(ppid, []).append(pid)
    todo = [me]
    while todo:  # descendants
        for child in children.get(todo.pop(), []):
            if child not in related:
                related.add(child)
                todo.append(child)
    out = []
    for pid, (_ppid, cmdline, uid) in table.items():
        if pid in related:
            continue
        if b"pytest" in cmdline or uid >= 100_000:
            text = cmdline.replace(b"\0", b" ")[:80].decode(errors="replace")
            out.append(f"{pid}: {text}")
    return out


@pytest.fixture(scope="session", autouse=True)
def _session_tmpdir() -> Iterator[None]:
    """A private TMPDIR for the session: whatever uses :mod:`tempfile` (the
    library, the tests) lands there, where no other program writes, so that
    folder is checked exactly; /tmp itself is checked too, as host-wide state."""
    path = tempfile.mkdtemp(prefix="supervisor-test-session-")
    os.chmod(path, 0o755)  # containers' unprivileged root must traverse it
    SESSION_PATHS.add(path)
    old_env, old_tempdir = os.environ.get("TMPDIR"), tempfile.tempdir
    os.environ["TMPDIR"] = path
    tempfile.tempdir = path
    SESSION_TMP.append(path)
    try:
        yield
    finally:
        SESSION_TMP.remove(path)
        tempfile.tempdir = old_tempdir
        if old_env is None:
            del os.environ["TMPDIR"]
        else:
            os.environ["TMPDIR"] = old_env
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session", autouse=True)
def _clone_thread(_session_tmpdir: None) -> None:
    """Start the extension's clone thread (it and its request pipe live as
    long as the process) before any test counts our threads and descriptors.

    Not in a sandbox of ``pytest --sandbox``, which starts no containers."""
    if IN_SANDBOX:
        return
    import trio

    import supervisor

    trio.run(supervisor.run, supervisor.Spec(["true"]))


@pytest.fixture(scope="session", autouse=True)
def _subreaper() -> Iterator[None]:
    """Become a child subreaper: a container orphaned by a supervisor that died
    in a subprocess is re-parented to the test process (not to init), where
    the leak check sees it."""
    libc = ctypes.CDLL(None, use_errno=True)
    ok = libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    yield
    if ok:
        libc.prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)


@pytest.fixture(autouse=True)
def leak_check() -> Iterator[None]:
    """Fail the test if it left anything behind on the host.

    Differences may take a moment to settle (reaping is asynchronous), so the
    comparison is retried for up to ``SETTLE_S`` seconds. Host-wide state
    (mounts, /tmp, links, cgroups) is only held against the test when no other
    test session or supervisor ran on the machine meanwhile; otherwise its
    differences are printed, not failed on (they cannot be attributed).
    """
    foreign = _foreign_activity()
    before = _snapshot()
    yield
    deadline = time.monotonic() + SETTLE_S
    shared: list[str] = []
    while True:
        _reap_adopted_zombies(before)
        after = _snapshot()
        problems = _problems(before, after)
        if problems and any(p.split()[0] in HOST_WIDE for p in problems):
            foreign = foreign or _foreign_activity()
            if foreign:
                shared = [p for p in problems if p.split()[0] in HOST_WIDE]
                problems = [p for p in problems if p.split()[0] not in HOST_WIDE]
        if not problems or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    if shared:
        print(
            "leak_check: host-wide differences not held against this test while other sessions run "
            f"({'; '.join(sorted(foreign)[:3])}):\n  " + "\n  ".join(shared),
            file=sys.stderr,
        )
    others = _foreign(before, after)
    if others:
        print("leak_check: not held against this test:\n  " + "\n  ".join(others), file=sys.stderr)
    if problems:
        leftover = [pid for pid in after.children if pid not in before.children]
        _kill_and_reap(leftover)
        pytest.fail("the test left host state behind:\n  " + "\n  ".join(problems), pytrace=False)
