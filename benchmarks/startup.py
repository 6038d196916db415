#!/usr/bin/env python3
"""Start-up, throughput and memory benchmark: supervisor beside bwrap, crun, runc and unshare.

Run it as root from the repository (it uses the installed ``supervisor``
package, or the checkout with ``PYTHONPATH``)::

    python benchmarks/startup.py                 # the full run (a few minutes)
    python benchmarks/startup.py --quick         # under a minute
    python benchmarks/startup.py --json out.json --chart docs/_static/startup.png

What it does, all from **one trio program** (this process):

* builds a busybox rootfs and OCI bundles in a temporary directory (removed at
  the end), says which peers it found (it installs nothing);
* for each repetition, each concurrency K and each contender (the order rotates
  with the repetition), runs N containers of ``/bin/true`` with at most K in
  flight and records every latency, the wall time and the CPU time spent;
* starts 200 containers of ``sleep 300`` per contender and sums the unique set
  size (USS = Private_Clean + Private_Dirty of ``/proc/PID/smaps_rollup``) of
  every process the contender keeps, plus the growth of the processes that
  were already there (this driver); it also reads the
  isolation each payload really got from ``/proc``;
* times the whole ``supervisor run -m ROOTFS -- /bin/true`` process beside
  ``bwrap`` and ``crun run``.

Our contender is one :class:`supervisor.Supervisor` and many
``sup.run(Spec(["/bin/true"], rootfs=...))``. The peers are processes started
with ``trio.lowlevel.open_process`` (what ``trio.run_process`` uses) and waited
for. crun 1.8 refuses hybrid cgroup hosts: it is started from dedicated
threads of this program that live in a private mount namespace with a tmpfs
over ``/sys/fs/cgroup/unified`` (nothing outside that namespace changes; the
other contenders stay in the host's namespace). bwrap's pid 1 outlives bwrap:
this program is a child subreaper and reaps those orphans, so their CPU time is
counted.

The issue's targets are printed as PASS/FAIL lines; nothing is asserted.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import functools
import gc
import itertools
import json
import math
import os
import platform
import queue
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import trio

try:
    import supervisor
    from supervisor import Result, Spec, Supervisor
    from supervisor._capabilities import DEFAULT_CAPS as _DEFAULT_CAPS
    from supervisor._capabilities import mask as _caps_mask
    from supervisor._parent import cgroups as _cgroups
    from supervisor._parent.seccomp import DEFAULT_DENIED as _DEFAULT_DENIED
    from supervisor._parent.seccomp import compile_profile as _compile_profile
except ImportError as _exc:  # pragma: no cover - depends on the environment
    sys.exit(f"startup.py: cannot import supervisor ({_exc}); install the project or set PYTHONPATH to the checkout")

PEERS = ("bwrap", "crun", "runc", "unshare", "floor")
#: Not a peer: supervisor's default isolation done in C (``floor.c``), the
#: kernel's share of our start-up, to tell reachable targets from others.
FLOOR = "floor"
#: The same floor, one process starting every container (``floor -n N -k K``).
FLOOR_ONE = "floor-1proc"
FLOOR_SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "floor.c")
OURS = "supervisor"
#: Names as they appear in the table, in this order.
ALL_CONTENDERS = (OURS, *PEERS)
#: What runs for a user other than root (supervisor rootless, bwrap and
#: unshare through unprivileged user namespaces).
ROOTLESS_CONTENDERS = (OURS, "bwrap", "unshare")

PR_SET_CHILD_SUBREAPER = 36
CLONE_NEWNS = 0x00020000
MS_REC = 0x4000
MS_PRIVATE = 1 << 18
UNIFIED = "/sys/fs/cgroup/unified"
CLK_TCK = os.sysconf("SC_CLK_TCK")

#: Syscalls the peers' seccomp filter refuses with EPERM: the syscall part of
#: supervisor's "default" profile (its argument rules, setuid chmod,
#: CLONE_NEWUSER and TIOCSTI, have no exact equivalent in every peer).
PEER_SECCOMP_DENY = _DEFAULT_DENIED  # the very list our default profile uses

_libc = ctypes.CDLL(None, use_errno=True)


class BenchError(Exception):
    """A contender failed to start or run a container."""


# ---------------------------------------------------------------- statistics


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) with linear interpolation."""
    if not values:
        return float("nan")
    data = sorted(values)
    pos = (len(data) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(data) - 1)
    return data[lo] + (data[hi] - data[lo]) * (pos - lo)


def median(values: Iterable[float]) -> float:
    """Median, NaN for no values."""
    data = list(values)
    return statistics.median(data) if data else float("nan")


def summarize(values: Sequence[float]) -> dict[str, float]:
    """Median and range of per-repetition values."""
    return {"median": median(values), "min": min(values), "max": max(values)} if values else {}


# ---------------------------------------------------------------- /proc helpers


def read_text(path: str) -> str:
    """The file's text, or ``""`` if it cannot be read (process gone)."""
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


#: kcmp(2) and its KCMP_VM type (<linux/kcmp.h>): do two processes share one memory?
_SYS_KCMP = {"x86_64": 312, "aarch64": 272}.get(platform.machine())
_KCMP_VM = 1


def shares_our_memory(pid: int) -> bool:
    """Whether ``pid`` runs in this process's memory (an init cloned with
    ``CLONE_VM``): its pages are ours, counted once, as the driver's growth."""
    if _SYS_KCMP is None:
        return False
    libc = ctypes.CDLL(None)
    libc.syscall.restype = ctypes.c_long
    return bool(libc.syscall(_SYS_KCMP, os.getpid(), pid, _KCMP_VM, 0, 0) == 0)


def uss_kb(pid: int | str) -> dict[str, int]:
    """USS, PSS and RSS of one process in kB, from ``smaps_rollup`` (zeros if gone)."""
    out = {"uss": 0, "pss": 0, "rss": 0}
    for line in read_text(f"/proc/{pid}/smaps_rollup").splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if not parts:
            continue
        if key in ("Private_Clean", "Private_Dirty"):
            out["uss"] += int(parts[0])
        elif key == "Pss":
            out["pss"] = int(parts[0])
        elif key == "Rss":
            out["rss"] = int(parts[0])
    return out


def proc_stat(pid: int | str) -> tuple[int, str, str, float] | None:
    """(ppid, comm, state letter, CPU seconds incl. reaped children) or None."""
    text = read_text(f"/proc/{pid}/stat")
    if not text:
        return None
    lparen, rparen = text.find("("), text.rfind(")")
    comm = text[lparen + 1 : rparen]
    rest = text[rparen + 2 :].split()
    ticks = sum(int(x) for x in rest[11:15])  # utime stime cutime cstime
    return int(rest[1]), comm, rest[0], ticks / CLK_TCK


def process_table() -> dict[int, tuple[int, str]]:
    """pid -> (ppid, comm) for every process."""
    table: dict[int, tuple[int, str]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            st = proc_stat(name)
            if st is not None:
                table[int(name)] = (st[0], st[1])
    return table


def descendants(root: int | None = None) -> dict[int, str]:
    """pid -> comm of every descendant of ``root`` (default: this process)."""
    root = os.getpid() if root is None else root
    children: dict[int, list[int]] = {}
    table = process_table()
    for pid, (ppid, _comm) in table.items():
        children.setdefault(ppid, []).append(pid)
    out: dict[int, str] = {}
    todo = list(children.get(root, []))
    while todo:
        pid = todo.pop()
        out[pid] = table[pid][1]
        todo.extend(children.get(pid, []))
    return out


def nspid_depth(pid: int) -> int:
    """How many pid namespaces ``pid`` is visible in (0 if gone)."""
    for line in read_text(f"/proc/{pid}/status").splitlines():
        if line.startswith("NSpid:"):
            return len(line.split()) - 1
    return 0


def cpu_busy_seconds() -> float:
    """Busy CPU seconds of the whole machine since boot (``/proc/stat``)."""
    fields = [int(x) for x in read_text("/proc/stat").splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]
    return (sum(fields[:8]) - idle) / CLK_TCK


def psi_some_total_us() -> int:
    """The ``some total=`` CPU pressure stall counter (µs), 0 if unavailable."""
    for line in read_text("/proc/pressure/cpu").splitlines():
        if line.startswith("some"):
            return int(line.rsplit("total=", 1)[1])
    return 0


def probe_isolation(pid: int) -> dict[str, Any]:
    """What isolation a running payload really has, read from ``/proc``."""
    new_ns = []
    for ns in ("user", "mnt", "uts", "ipc", "net", "pid", "cgroup"):
        try:
            if os.readlink(f"/proc/{pid}/ns/{ns}") != os.readlink(f"/proc/self/ns/{ns}"):
                new_ns.append(ns)
        except OSError:
            pass
    status = {}
    for line in read_text(f"/proc/{pid}/status").splitlines():
        key, _, value = line.partition(":")
        status[key] = value.strip()
    ours = {line.split(":", 2)[1]: line.split(":", 2)[2] for line in read_text("/proc/self/cgroup").splitlines()}
    own_cgroups = []
    for line in read_text(f"/proc/{pid}/cgroup").splitlines():
        _hid, ctrl, path = line.split(":", 2)
        if ours.get(ctrl) != path:
            own_cgroups.append(ctrl or "cgroup2")
    uid_map = " ".join(read_text(f"/proc/{pid}/uid_map").split()[:3])
    return {
        "namespaces": new_ns,
        "uid_map": uid_map,
        "pid_in_container": status.get("NSpid", "").split()[-1:] or None,
        "seccomp": {"0": "none", "1": "strict", "2": "filter"}.get(status.get("Seccomp", ""), "?"),
        "no_new_privs": status.get("NoNewPrivs") == "1",
        "cap_eff": status.get("CapEff"),
        "own_cgroups": own_cgroups,
    }


def describe_isolation(probe: dict[str, Any]) -> str:
    """One line for the table."""
    ns = ",".join(probe["namespaces"]) or "-"
    userns = "userns " + probe["uid_map"] if "user" in probe["namespaces"] else "no userns"
    cg = "cgroup:" + ",".join(probe["own_cgroups"]) if probe["own_cgroups"] else "no cgroup"
    nnp = int(probe["no_new_privs"])
    return f"ns={ns}; {userns}; {cg}; seccomp={probe['seccomp']}; nnp={nnp}; caps={probe['cap_eff']}"


# ---------------------------------------------------------------- reaping


class Reaper:
    """Reaps orphans from child pid namespaces (bwrap's pid 1 outlives bwrap).

    This process is a child subreaper, so such orphans become our children.
    Only processes that live in a *nested* pid namespace are reaped: the
    processes trio and our spawner threads started live in ours, so their exit
    statuses are never stolen. Our own containers' PID 1s are children of this
    process too, in nested namespaces, which their supervisor reaps: only
    processes named ``bwrap`` (bwrap's pid 1) are taken.
    """

    def __init__(self) -> None:
        self.depth = nspid_depth(os.getpid())
        self.reaped = 0

    def _orphan(self, pid: int) -> bool:
        try:
            name = read_text(f"/proc/{pid}/comm").strip()
        except OSError:
            return False
        return name == "bwrap" and nspid_depth(pid) > self.depth

    def step(self) -> None:
        """Reap what is reapable now (never blocks)."""
        while True:
            try:
                info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:
                return
            if info is None or not self._orphan(info.si_pid):
                return  # nothing, or a child someone else waits for
            self._reap(info.si_pid)

    def _reap(self, pid: int) -> bool:
        try:
            res = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG)
        except ChildProcessError:
            return True
        if res is None:
            return False
        self.reaped += 1
        return True

    async def run(self) -> None:
        """Reap every 50 ms, for the whole benchmark."""
        while True:
            self.step()
            await trio.sleep(0.05)

    async def drain(self, timeout: float = 10.0) -> int:
        """Wait until no orphan from a nested pid namespace is left.

        Returns:
            how many are still there after ``timeout`` (0 normally).
        """
        deadline = time.monotonic() + timeout
        me = os.getpid()
        while True:
            left = [
                pid
                for pid, (ppid, _comm) in process_table().items()
                if ppid == me and self._orphan(pid) and not self._reap(pid)
            ]
            if not left or time.monotonic() > deadline:
                return len(left)
            await trio.sleep(0.01)

    def reap_pids(self, pids: Iterable[int]) -> None:
        """Reap these children if they have exited (any namespace)."""
        for pid in pids:
            with contextlib.suppress(OSError):
                if os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG) is not None:
                    self.reaped += 1


# ---------------------------------------------------------------- processes


class Proc(Protocol):
    """What we need of a started process."""

    pid: int

    async def wait(self) -> int:
        """Wait for the exit; return the exit status."""
        ...

    def kill(self) -> None:
        """SIGKILL it."""
        ...


class PopenProc:
    """A :class:`subprocess.Popen` waited for through a pidfd, trio-style."""

    def __init__(self, popen: subprocess.Popen[bytes]) -> None:
        self.popen = popen
        self.pid = popen.pid
        self._pidfd = os.pidfd_open(popen.pid)

    async def wait(self) -> int:
        """Wait for the exit (cancellable: the process is then killed and reaped)."""
        try:
            await trio.lowlevel.wait_readable(self._pidfd)
        except BaseException:
            with trio.CancelScope(shield=True):
                self.kill()
                await trio.lowlevel.wait_readable(self._pidfd)
            raise
        finally:
            rc = self.popen.wait()
            if self._pidfd >= 0:
                os.close(self._pidfd)
                self._pidfd = -1
        return rc

    def kill(self) -> None:
        """SIGKILL it."""
        if self.popen.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.popen.kill()


class Launcher:
    """Starts processes with ``trio.lowlevel.open_process`` (as ``trio.run_process`` does)."""

    namespace = "host"

    async def open(self, argv: Sequence[str], **kwargs: Any) -> Proc:
        """Start ``argv`` (stdio /dev/null unless given)."""
        for key in ("stdin", "stdout", "stderr"):
            kwargs.setdefault(key, subprocess.DEVNULL)
        proc: Proc = await trio.lowlevel.open_process(list(argv), **kwargs)
        return proc

    async def run(self, argv: Sequence[str], **kwargs: Any) -> int:
        """Start ``argv`` and wait for it; return its exit status."""
        proc = await self.open(argv, **kwargs)
        return await proc.wait()


class PrivateMountLauncher(Launcher):
    """Starts processes from threads that live in a private mount namespace.

    Each thread calls ``unshare(CLONE_NEWNS)`` (a mount namespace is per
    thread), makes every mount private and mounts a tmpfs over the cgroup2
    mount, so crun no longer sees a hybrid host. The namespace dies with the
    threads and the processes started from them; nothing outside it changes.
    The rest of this program stays in the host's mount namespace.

    Args:
        threads: how many spawner threads (each spawn is a fork+exec).
    """

    namespace = "private (tmpfs over " + UNIFIED + ")"

    def __init__(self, threads: int = 4) -> None:
        self._queue: queue.SimpleQueue[tuple[Any, ...] | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self.setup_ms: list[float] = []
        self._errors: list[str] = []
        self._nthreads = threads

    def start(self) -> None:
        """Start the threads and wait until each is in its namespace.

        Raises:
            OSError: unshare or mount failed.
        """
        for _ in range(self._nthreads):
            ready = threading.Event()
            thread = threading.Thread(target=self._worker, args=(ready,), name="bench-private-mntns", daemon=True)
            thread.start()
            ready.wait()
            self._threads.append(thread)
            if self._errors:
                self.stop()
                raise OSError(self._errors[0])

    def stop(self) -> None:
        """End the threads (the namespace goes with them)."""
        for _ in self._threads:
            self._queue.put(None)
        for thread in self._threads:
            thread.join()
        self._threads = []

    def _worker(self, ready: threading.Event) -> None:
        t0 = time.perf_counter()
        try:
            if _libc.unshare(CLONE_NEWNS) != 0:
                raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNS)")
            if _libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None) != 0:
                raise OSError(ctypes.get_errno(), "mount(/, MS_REC|MS_PRIVATE)")
            if _libc.mount(b"bench-hide-unified", UNIFIED.encode(), b"tmpfs", 0, b"size=4k") != 0:
                raise OSError(ctypes.get_errno(), f"mount tmpfs on {UNIFIED}")
        except OSError as exc:
            self._errors.append(f"{exc.strerror or ''} {exc.args}")
            ready.set()
            return
        self.setup_ms.append((time.perf_counter() - t0) * 1e3)
        ready.set()
        while True:
            item = self._queue.get()
            if item is None:
                return
            argv, kwargs, token, deliver = item
            try:
                outcome: tuple[PopenProc | None, BaseException | None] = (
                    PopenProc(subprocess.Popen(argv, **kwargs)),
                    None,
                )
            except Exception as exc:  # noqa: BLE001 - handed to the trio task
                outcome = (None, exc)
            token.run_sync_soon(deliver, outcome)

    async def open(self, argv: Sequence[str], **kwargs: Any) -> Proc:
        """Start ``argv`` from one of the namespace's threads."""
        for key in ("stdin", "stdout", "stderr"):
            kwargs.setdefault(key, subprocess.DEVNULL)
        done = trio.Event()
        box: list[tuple[PopenProc | None, BaseException | None]] = []

        def deliver(outcome: tuple[PopenProc | None, BaseException | None]) -> None:
            box.append(outcome)
            done.set()

        self._queue.put((list(argv), kwargs, trio.lowlevel.current_trio_token(), deliver))
        with trio.CancelScope(shield=True):  # the process will exist: wait for it
            await done.wait()
        proc, exc = box[0]
        if exc is not None:
            raise exc
        assert proc is not None
        return proc


# ---------------------------------------------------------------- fixtures


def find_busybox() -> str:
    """A static busybox (busybox-static), or exit with a message."""
    for path in ("/bin/busybox", "/usr/bin/busybox", shutil.which("busybox") or ""):
        if path and os.path.isfile(path):
            return path
    sys.exit("startup.py: needs a static busybox (Debian: apt-get install busybox-static)")


def build_rootfs(work: str) -> str:
    """A busybox rootfs under ``work``, readable by the containers' mapped ids."""
    root = os.path.join(work, "rootfs")
    for sub in ("bin", "proc", "dev", "sys", "tmp", "etc"):
        os.makedirs(os.path.join(root, sub), mode=0o755)
    shutil.copy2(find_busybox(), os.path.join(root, "bin", "busybox"))
    for applet in ("sh", "true", "sleep", "cat", "id"):
        os.symlink("busybox", os.path.join(root, "bin", applet))
    os.chmod(root, 0o755)
    return root


def container_cgroups() -> set[str]:
    """Cgroups named like ours or the floor's, where either creates them."""
    out: set[str] = set()
    for parent in cgroup_parents():
        with contextlib.suppress(OSError):
            out |= {os.path.join(parent, n) for n in os.listdir(parent) if n.startswith(("sv-", "floor-"))}
    return out


def rootfs_snapshot(root: str) -> list[tuple[str, float, float]]:
    """(path, mtime, ctime) of every entry, to show the rootfs stayed unchanged."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in sorted(dirnames + filenames):
            st = os.lstat(os.path.join(dirpath, name))
            out.append((os.path.join(dirpath, name), st.st_mtime, st.st_ctime))
    return sorted(out)


def oci_config(rootfs: str, args: Sequence[str], seccomp: bool) -> dict[str, Any]:
    """An OCI runtime config as close to our default isolation as runc/crun allow.

    ``crun spec``'s namespaces plus user and cgroup, ids mapped like ours
    (container 0..65535 -> host 100000..), a read-only root, ``/proc`` and a
    ``/dev`` tmpfs (so the runtime never writes into the shared rootfs), no
    masked paths, 3 capabilities, no_new_privs and (optionally) a seccomp
    filter refusing :data:`PEER_SECCOMP_DENY`.
    """
    caps = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]
    config: dict[str, Any] = {
        "ociVersion": "1.0.2",
        "process": {
            "terminal": False,
            "user": {"uid": 0, "gid": 0},
            "args": list(args),
            "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "TERM=dumb"],
            "cwd": "/",
            "capabilities": dict.fromkeys(("bounding", "effective", "permitted"), caps),
            "noNewPrivileges": True,
        },
        "root": {"path": rootfs, "readonly": True},
        "hostname": "bench",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {
                "destination": "/dev",
                "type": "tmpfs",
                "source": "tmpfs",
                "options": ["nosuid", "strictatime", "mode=755", "size=65536k"],
            },
        ],
        "linux": {
            "namespaces": [{"type": t} for t in ("user", "pid", "network", "ipc", "uts", "mount", "cgroup")],
            "uidMappings": [{"containerID": 0, "hostID": 100000, "size": 65536}],
            "gidMappings": [{"containerID": 0, "hostID": 100000, "size": 65536}],
            "resources": {},
        },
    }
    if seccomp:
        config["linux"]["seccomp"] = {
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": list(PEER_SECCOMP_DENY), "action": "SCMP_ACT_ERRNO", "errnoRet": 1}],
        }
    return config


def write_bundle(path: str, rootfs: str, args: Sequence[str], seccomp: bool) -> str:
    """Write ``path/config.json``; return ``path``."""
    os.makedirs(path, mode=0o755)
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(oci_config(rootfs, args, seccomp), f, indent=1)
    return path


def compile_bwrap_seccomp(path: str) -> bool:
    """Write a BPF filter refusing :data:`PEER_SECCOMP_DENY` for ``bwrap --seccomp``.

    Returns:
        False if libseccomp's Python binding (pyseccomp) is missing.
    """
    try:
        import errno

        import pyseccomp as sc
    except ImportError:
        return False
    flt = sc.SyscallFilter(sc.ALLOW)
    for name in PEER_SECCOMP_DENY:
        flt.add_rule(sc.ERRNO(errno.EPERM), name)
    with open(path, "wb") as f:
        flt.export_bpf(f)
    return True


def tool_version(argv: Sequence[str]) -> str:
    """First line of ``argv``'s output, or ``"?"``."""
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    text = (out.stdout or out.stderr).strip().splitlines()
    return text[0] if text else "?"


def hybrid_cgroups() -> bool:
    """True when a cgroup2 mount at /sys/fs/cgroup/unified has controllers (crun refuses)."""
    return bool(read_text(os.path.join(UNIFIED, "cgroup.controllers")).strip())


# ---------------------------------------------------------------- contenders


@dataclass
class Contender:
    """One way of starting containers."""

    name: str
    isolation: str
    command: list[str] = field(default_factory=list)
    version: str = ""

    async def check(self) -> None:
        """Run one container; raise BenchError naming what went wrong."""
        await self.run_once("check")

    async def run_once(self, cid: str) -> Result | None:
        """Run one ``/bin/true`` container to the end."""
        raise NotImplementedError

    async def start_idle(self, hold: trio.Nursery, cid: str) -> None:
        """Start one ``sleep 300`` container and return once it was started."""
        raise NotImplementedError

    async def stop_idle(self, kept: Sequence[int], reaper: Reaper) -> None:
        """Kill the idle containers (``kept`` are their processes) and clean up."""
        raise NotImplementedError

    def extra_cpu_seconds(self) -> float:
        """CPU seconds of long-lived helpers not in RUSAGE_CHILDREN."""
        return 0.0


class Ours(Contender):
    """supervisor: one Supervisor, many ``sup.run(spec)``."""

    def __init__(self, sup: Supervisor, rootfs: str, *, init: bool = False) -> None:
        spec = Spec(["/bin/true"], rootfs=rootfs)
        ids = f"{spec.map_size} ids -> {spec.map_base}.." if os.geteuid() == 0 else f"rootless: 0 -> uid {os.geteuid()}"
        iso = (
            f"the Spec defaults: user ({ids}), mnt, uts, ipc, net, pid, cgroup;"
            " pivot_root; fresh /proc, /dev, /sys, /tmp;"
            f" seccomp {getattr(spec, 'seccomp', '?')!r}; network {getattr(spec, 'network', '?')!r};"
            " cgroup as the package does by default (see the observed line)"
        )
        super().__init__(
            OURS, iso, ["sup.run(Spec(['/bin/true'], rootfs=ROOTFS))"], f"supervisor {supervisor.__version__}"
        )
        self.sup = sup
        self.spec_true = spec
        self.spec_sleep = Spec(["/bin/sleep", "300"], rootfs=rootfs, init=init)
        self.handles: list[Any] = []

    async def run_once(self, cid: str) -> Result | None:
        try:
            result = await self.sup.run(self.spec_true)
        except supervisor.SupervisorError as exc:
            raise BenchError(f"{type(exc).__name__}: {exc}") from exc
        if not result.ok:
            raise BenchError(f"{result.reason} exit={result.exit_code} {result.error or ''} {result.stderr[-200:]!r}")
        return result

    async def start_idle(self, hold: trio.Nursery, cid: str) -> None:
        try:
            handle = await hold.start(functools.partial(self.sup.run, self.spec_sleep))
        except supervisor.SupervisorError as exc:
            raise BenchError(f"{type(exc).__name__}: {exc}") from exc
        self.handles.append(handle)

    async def stop_idle(self, kept: Sequence[int], reaper: Reaper) -> None:
        # Cancelling the runs (the caller cancels `hold`) stops and reaps them;
        # kill first so that they all go at once.
        for handle in self.handles:
            handle.kill()
        self.handles = []

    def extra_cpu_seconds(self) -> float:
        # PID 1s are children of this process: their CPU time is in its
        # RUSAGE_CHILDREN, and no other process works for them.
        return 0.0


class Peer(Contender):
    """A peer tool started as a process."""

    def __init__(
        self,
        name: str,
        isolation: str,
        launcher: Launcher,
        make_argv: Callable[[str, bool], list[str]],
        version: str,
        pass_seccomp_fd: str | None = None,
    ) -> None:
        super().__init__(name, isolation, make_argv("ID", False), version)
        self.launcher = launcher
        self.make_argv = make_argv
        self.seccomp_bpf = pass_seccomp_fd
        self.procs: list[Proc] = []
        self.idle_ids: list[str] = []

    async def _open(self, argv: list[str], **kwargs: Any) -> Proc:
        if self.seccomp_bpf is None:
            return await self.launcher.open(argv, **kwargs)
        # bwrap reads the filter from a fd to its end: a fresh fd for every run.
        fd = os.open(self.seccomp_bpf, os.O_RDONLY)
        try:
            return await self.launcher.open([a.replace("SECCOMP_FD", str(fd)) for a in argv], pass_fds=(fd,), **kwargs)
        finally:
            os.close(fd)

    async def check(self) -> None:
        proc = await self._open(self.make_argv("check", False), stderr=subprocess.PIPE)
        rc = await proc.wait()
        if rc != 0:
            err: bytes | bytearray = b""
            if isinstance(proc, PopenProc) and proc.popen.stderr is not None:
                err = proc.popen.stderr.read()
            elif isinstance(proc, trio.Process) and proc.stderr is not None:
                err = await proc.stderr.receive_some()
            raise BenchError(f"exit status {rc}: {err.decode(errors='replace').strip()[-300:]}")

    async def run_once(self, cid: str) -> Result | None:
        try:
            proc = await self._open(self.make_argv(cid, False))
        except OSError as exc:
            raise BenchError(f"cannot start {self.name}: {exc}") from exc
        rc = await proc.wait()
        if rc != 0:
            raise BenchError(f"exit status {rc}")
        return None

    async def start_idle(self, hold: trio.Nursery, cid: str) -> None:
        argv = self.make_argv(cid, True)
        try:
            proc = await self._open(argv)
        except OSError as exc:
            raise BenchError(f"cannot start {self.name}: {exc}") from exc
        if self.name in ("crun", "runc"):  # `run -d`: returns once the payload runs
            rc = await proc.wait()
            if rc != 0:
                raise BenchError(f"{self.name} run -d exit status {rc}")
            self.idle_ids.append(cid)
        else:
            self.procs.append(proc)

    async def stop_idle(self, kept: Sequence[int], reaper: Reaper) -> None:
        kill_all(kept)
        for proc in self.procs:
            await proc.wait()
        self.procs = []
        if self.idle_ids:
            state = self.make_argv("ID", False)[:3]  # [tool, --root, DIR]
            limiter = trio.CapacityLimiter(8)

            async def delete(cid: str) -> None:
                async with limiter:
                    await self.launcher.run([*state, "delete", "-f", cid])

            async with trio.open_nursery() as nursery:
                for cid in self.idle_ids:
                    nursery.start_soon(delete, cid)
            self.idle_ids = []
        # run -d payloads (and crun's exited intermediates) were re-parented to us.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            reaper.reap_pids(kept)
            if not set(kept) & set(descendants()):
                break
            await trio.sleep(0.02)


class FloorPeer(Peer):
    """The floor: stopped through its payloads, so that each floor process
    reaps its container and removes its cgroups itself (a SIGKILLed floor
    would leave them)."""

    async def stop_idle(self, kept: Sequence[int], reaper: Reaper) -> None:
        kept_set = set(kept)
        floors = {p for p, (_ppid, comm) in process_table().items() if comm == "floor" and p in kept_set}
        kill_all(p for p in kept if p not in floors)
        with trio.move_on_after(10):
            for proc in self.procs:
                await proc.wait()
        await super().stop_idle(kept, reaper)


def kill_all(pids: Iterable[int]) -> None:
    """SIGKILL each pid (through a pidfd, so a recycled pid is never hit)."""
    for pid in pids:
        try:
            fd = os.pidfd_open(pid)
        except OSError:
            continue
        try:
            signal.pidfd_send_signal(fd, signal.SIGKILL)
        except OSError:
            pass
        finally:
            os.close(fd)


def build_floor(work: str, rootfs: str) -> tuple[list[str] | None, str]:
    """Compile ``floor.c`` and give the command before ``-- PROGRAM``; or None and why not.

    The floor gets exactly our defaults: the BPF program of the "default"
    seccomp profile, the default kept capabilities, and a cgroup in each
    hierarchy where supervisor would create one.
    """
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        return None, "no C compiler (cc) to build benchmarks/floor.c"
    exe = os.path.join(work, "floor")
    proc = subprocess.run([cc, "-O2", "-o", exe, FLOOR_SOURCE], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        return None, f"cc failed: {proc.stderr.strip()[-300:]}"
    caps = _DEFAULT_CAPS
    program = _compile_profile("default", caps)
    if program is None:  # pragma: no cover - "default" always compiles
        return None, "no default seccomp program"
    bpf = os.path.join(work, "floor.bpf")
    with open(bpf, "wb") as f:
        f.write(program.bpf)
    return [exe, rootfs, bpf, f"{_caps_mask(caps):x}", *cgroup_parents()], ""


def cgroup_parents() -> list[str]:
    """Where supervisor creates a container's cgroups (one folder per hierarchy)."""
    probe = _cgroups.ContainerCgroup(_cgroups.detect(), "floor-probe")
    return [os.path.dirname(path) for path in probe.planned_paths]


def make_peers(
    work: str, rootfs: str, wanted: Sequence[str], peer_seccomp: bool, crun_launcher: Launcher | None
) -> tuple[list[Peer], dict[str, str]]:
    """The peers that are installed (and asked for); the reasons for the others."""
    host = Launcher()
    peers: list[Peer] = []
    missing: dict[str, str] = {}
    bpf = os.path.join(work, "peer-seccomp.bpf")
    bwrap_seccomp = peer_seccomp and compile_bwrap_seccomp(bpf)
    for name in PEERS:
        if name not in wanted:
            continue
        if name == FLOOR:
            pre, why = build_floor(work, rootfs)
            if pre is None:
                missing[name] = why
                continue

            def floor_argv(cid: str, sleep: bool, pre: list[str] = pre) -> list[str]:
                return [*pre, "--", *(["/bin/sleep", "300"] if sleep else ["/bin/true"])]

            iso = (
                "not a product: our default isolation in C, one process per container (benchmarks/floor.c): user"
                " (65536 ids -> 100000..), mnt, uts, ipc, net, pid, cgroup; pivot_root; /proc, /dev, /sys, /tmp;"
                " runc's masks; our cgroups, capabilities and default seccomp program; no phase reports"
            )
            peers.append(FloorPeer(name, iso, host, floor_argv, "floor.c (cc -O2)"))
            continue
        exe = shutil.which(name)
        if exe is None:
            missing[name] = f"not found in PATH (Debian: apt-get install {'bubblewrap' if name == 'bwrap' else name})"
            continue
        if name == "bwrap":
            base = [exe, "--unshare-all", "--die-with-parent"]
            if bwrap_seccomp:
                base += ["--seccomp", "SECCOMP_FD"]

            def bwrap_argv(cid: str, sleep: bool, base: list[str] = base) -> list[str]:
                payload = ["/bin/sleep", "300"] if sleep else ["/bin/true"]
                return [*base, "--bind", rootfs, "/", "--proc", "/proc", "--dev", "/dev", *payload]

            iso = (
                "--unshare-all: user (uid_map 0 0 1, as root; rootless, the caller's uid as itself), "
                "mnt, uts, ipc, net, pid, cgroup; /proc, /dev; "
                f"no cgroup; seccomp {'filter' if bwrap_seccomp else 'none (pyseccomp missing)'}"
            )
            peers.append(
                Peer(name, iso, host, bwrap_argv, tool_version([exe, "--version"]), bpf if bwrap_seccomp else None)
            )
        elif name == "unshare":

            def unshare_argv(cid: str, sleep: bool, exe: str = exe) -> list[str]:
                payload = ["/bin/sleep", "300"] if sleep else ["/bin/true"]
                flags = ["--user", "--map-root-user", "--mount", "--uts", "--ipc", "--net", "--pid", "--cgroup"]
                return [exe, *flags, "--fork", "--mount-proc", f"--root={rootfs}", *payload]

            iso = "user (the caller as root), mnt, uts, ipc, net, pid, cgroup; chroot + /proc; no cgroup; no seccomp"
            peers.append(Peer(name, iso, host, unshare_argv, tool_version([exe, "--version"])))
        else:
            state = os.path.join(work, f"state-{name}")
            os.makedirs(state, mode=0o700)
            b_true = write_bundle(os.path.join(work, f"bundle-{name}-true"), rootfs, ["/bin/true"], peer_seccomp)
            b_sleep = write_bundle(
                os.path.join(work, f"bundle-{name}-sleep"), rootfs, ["/bin/sleep", "300"], peer_seccomp
            )
            launcher: Launcher = host
            pre = [exe, "--root", state]
            if name == "crun":
                pre.append("--cgroup-manager=disabled")
                if crun_launcher is None:
                    missing[name] = "refuses this hybrid cgroup host and the private mount namespace is unavailable"
                    continue
                launcher = crun_launcher

            def oci_argv(cid: str, sleep: bool, pre: list[str] = pre, bt: str = b_true, bs: str = b_sleep) -> list[str]:
                if sleep:
                    return [*pre, "run", "-d", "--bundle", bs, cid]
                return [*pre, "run", "--bundle", bt, cid]

            cg = "no cgroup (--cgroup-manager=disabled)" if name == "crun" else "cgroups (runc cannot disable them)"
            iso = (
                "user (0..65535 -> 100000..), mnt, uts, ipc, net, pid, cgroup; read-only root, /proc, /dev tmpfs; "
                f"{cg}; seccomp {'filter' if peer_seccomp else 'none'}; 3 caps; no_new_privs"
            )
            peers.append(Peer(name, iso, launcher, oci_argv, tool_version([exe, "--version"])))
    return peers, missing


# ---------------------------------------------------------------- measurements


@dataclass
class CpuMark:
    """CPU counters at one instant."""

    wall: float
    self_s: float
    children_s: float
    extra_s: float
    machine_s: float
    psi_us: int

    @classmethod
    def take(cls, contender: Contender) -> CpuMark:
        """Read the counters now."""
        me = resource.getrusage(resource.RUSAGE_SELF)
        ch = resource.getrusage(resource.RUSAGE_CHILDREN)
        return cls(
            time.perf_counter(),
            me.ru_utime + me.ru_stime,
            ch.ru_utime + ch.ru_stime,
            contender.extra_cpu_seconds(),
            cpu_busy_seconds(),
            psi_some_total_us(),
        )


async def floor_batch(floor_cmd: list[str], n: int, k: int) -> dict[str, Any]:
    """``floor -n N -k K``: one C process starts all N containers, K at a time.

    The floor of a C program starting them all (no runtime exec'd per container,
    no Python anywhere): throughput and CPU only, as one process reports no
    per-container latency.
    """
    argv = [floor_cmd[0], "-n", str(n), "-k", str(k), *floor_cmd[1:], "/bin/true"]
    ch0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = await trio.run_process(argv, check=False, capture_stderr=True)
    wall = time.perf_counter() - t0
    ch1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise BenchError(f"floor -n {n} -k {k}: exit status {proc.returncode}: {proc.stderr.decode()[-300:]}")
    cpu = (ch1.ru_utime + ch1.ru_stime) - (ch0.ru_utime + ch0.ru_stime)
    return {"k": k, "n": n, "wall_s": wall, "per_s": n / wall, "cpu_ms_per_container": cpu * 1e3 / n}


async def run_batch(contender: Contender, n: int, k: int, warmup: int, tag: str, reaper: Reaper) -> dict[str, Any]:
    """N containers with at most K in flight; latencies, wall time and CPU."""
    for i in range(warmup):
        await contender.run_once(f"{tag}-w{i}")
    await reaper.drain()
    latencies: list[float] = []
    results: list[Result] = []
    failures: list[str] = []
    limiter = trio.CapacityLimiter(k)

    async def one(i: int) -> None:
        async with limiter:
            t0 = time.perf_counter()
            try:
                result = await contender.run_once(f"{tag}-{i}")
            except BenchError as exc:
                failures.append(str(exc))
                return
            latencies.append(time.perf_counter() - t0)
            if result is not None:
                results.append(result)

    before = CpuMark.take(contender)
    async with trio.open_nursery() as nursery:
        for i in range(n):
            nursery.start_soon(one, i)
    wall = time.perf_counter() - before.wall
    left = await reaper.drain()  # bwrap's late inits, outside the timed wall
    after = CpuMark.take(contender)
    done = max(len(latencies), 1)
    return {
        "contender": contender.name,
        "k": k,
        "n": n,
        "wall_s": wall,
        "per_s": len(latencies) / wall,
        "p50_ms": percentile(latencies, 50) * 1e3,
        "p95_ms": percentile(latencies, 95) * 1e3,
        "cpu_ms_per_container": (
            (after.self_s - before.self_s) + (after.children_s - before.children_s) + (after.extra_s - before.extra_s)
        )
        * 1e3
        / done,
        "driver_cpu_ms_per_container": (after.self_s - before.self_s) * 1e3 / done,
        "machine_busy_ms_per_container": (after.machine_s - before.machine_s) * 1e3 / done,
        "psi_stall_frac": (after.psi_us - before.psi_us) / 1e6 / max(after.wall - before.wall, 1e-9),
        "failures": len(failures),
        "failure_sample": failures[:3],
        "orphans_left": left,
        "latencies_ms": [round(x * 1e3, 4) for x in latencies],
        "_results": results,
    }


async def memory_test(
    contender: Contender, count: int, k: int, settle: float, reaper: Reaper, exclude: set[int]
) -> dict[str, Any]:
    """``count`` idle containers: USS of what the contender keeps, per container."""
    gc.collect()
    before = {pid: uss_kb(pid) for pid in descendants() if pid not in exclude}
    me_before = uss_kb("self")
    t0 = time.perf_counter()
    limiter = trio.CapacityLimiter(k)
    failures: list[str] = []
    out: dict[str, Any] = {"count": count}
    async with trio.open_nursery() as hold:

        async def start(i: int) -> None:
            async with limiter:
                try:
                    await contender.start_idle(hold, f"mem-{contender.name}-{os.getpid()}-{i}")
                except BenchError as exc:
                    failures.append(str(exc))

        async with trio.open_nursery() as nursery:
            for i in range(count):
                nursery.start_soon(start, i)
        out["start_s"] = time.perf_counter() - t0
        # Wait until every payload runs (busybox `sleep`), then let things settle.
        deadline = time.monotonic() + 30
        while True:
            sleeping = [p for p, comm in descendants().items() if comm == "sleep"]
            if len(sleeping) >= count - len(failures) or time.monotonic() > deadline:
                break
            await trio.sleep(0.05)
        await trio.sleep(settle)
        gc.collect()
        me_after = uss_kb("self")
        now = {pid: comm for pid, comm in descendants().items() if pid not in exclude}
        kept = [pid for pid in now if pid not in before]
        mem = {pid: uss_kb(pid) for pid in kept if not shares_our_memory(pid)}
        growth = {pid: uss_kb(pid)["uss"] - before[pid]["uss"] for pid in before if pid in now}
        sleeping = [p for p, comm in now.items() if comm == "sleep"]
        live = max(len(sleeping), 1)
        kept_uss = sum(m["uss"] for m in mem.values())
        comms: dict[str, int] = {}
        zombies = 0
        for pid in kept:
            if pid in mem and mem[pid]["rss"] == 0:  # exited, not yet reaped (crun's `run -d` intermediates)
                zombies += 1
                continue
            comms[now[pid]] = comms.get(now[pid], 0) + 1
        out.update(
            {
                "live": len(sleeping),
                "failures": len(failures),
                "failure_sample": failures[:3],
                "processes_per_container": sum(comms.values()) / live,
                "process_kinds": comms,
                "zombies": zombies,
                "kept_uss_kb_per_container": kept_uss / live,
                "kept_pss_kb_per_container": sum(m["pss"] for m in mem.values()) / live,
                "helpers_growth_kb_per_container": sum(growth.values()) / live,
                "driver_growth_kb_per_container": (me_after["uss"] - me_before["uss"]) / live,
                "driver_uss_kb": me_after["uss"],
            }
        )
        out["uss_kb_per_container"] = (
            out["kept_uss_kb_per_container"]
            + out["helpers_growth_kb_per_container"]
            + out["driver_growth_kb_per_container"]
        )
        out["isolation_observed"] = probe_isolation(sleeping[0]) if sleeping else {}
        await contender.stop_idle(kept, reaper)
        hold.cancel_scope.cancel()
    # Check that nothing is left behind.
    deadline = time.monotonic() + 10
    while True:
        reaper.step()
        left = [p for p in descendants() if p not in before and p not in exclude]
        if not left or time.monotonic() > deadline:
            break
        await trio.sleep(0.05)
    out["left_behind"] = len(left)
    return out


async def cli_timing(
    commands: dict[str, tuple[Launcher, list[str]]], runs: int, warmup: int = 2
) -> dict[str, dict[str, Any]]:
    """Whole-process wall time of each command, interleaved, ``runs`` times."""
    times: dict[str, list[float]] = {name: [] for name in commands}
    failures: dict[str, int] = dict.fromkeys(commands, 0)
    names = list(commands)
    for i in range(runs + warmup):
        order = names[i % len(names) :] + names[: i % len(names)]
        for name in order:
            launcher, argv = commands[name]
            argv = [a.replace("ID", f"cli-{os.getpid()}-{i}") for a in argv]
            t0 = time.perf_counter()
            rc = await launcher.run(argv)
            elapsed = time.perf_counter() - t0
            if rc != 0:
                failures[name] += 1
            elif i >= warmup:
                times[name].append(elapsed * 1e3)
    return {
        name: {
            "median_ms": median(times[name]),
            "min_ms": min(times[name], default=float("nan")),
            "max_ms": max(times[name], default=float("nan")),
            "runs": len(times[name]),
            "failures": failures[name],
            "command": commands[name][1],
        }
        for name in names
    }


def stale_bytecode() -> dict[str, Any]:
    """Which of the package's modules have no up-to-date ``.pyc``.

    Those are compiled from source on every import when bytecode is not
    written (``PYTHONDONTWRITEBYTECODE``, a read-only tree), which inflates
    the CLI's whole-process time; a wheel install compiles them once.
    """
    import importlib.util
    import struct

    root = os.path.dirname(os.path.abspath(supervisor.__file__))
    stale: list[str] = []
    total = 0
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            if not name.endswith(".py"):
                continue
            total += 1
            src = os.path.join(dirpath, name)
            try:
                with open(importlib.util.cache_from_source(src), "rb") as f:
                    header = f.read(16)
                st = os.stat(src)
                flags, mtime, size = struct.unpack("<III", header[4:16])
                fresh = flags != 0 or (mtime == int(st.st_mtime) & 0xFFFFFFFF and size == st.st_size & 0xFFFFFFFF)
            except (OSError, struct.error):
                fresh = False
            if not fresh:
                stale.append(os.path.relpath(src, root))
    return {
        "modules": total,
        "without_current_pyc": sorted(stale),
        "dont_write_bytecode": bool(os.environ.get("PYTHONDONTWRITEBYTECODE")),
    }


async def cli_imports(argv: list[str]) -> dict[str, Any]:
    """Which heavy modules ``supervisor run`` imports (``-X importtime``), and the costliest."""
    proc = await trio.run_process(argv, capture_stderr=True, stdout=subprocess.DEVNULL, check=False)
    top: list[tuple[str, float]] = []
    seen: set[str] = set()
    for line in proc.stderr.decode(errors="replace").splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        parts = [p.strip() for p in line[len("import time:") :].split("|")]
        if len(parts) != 3 or not parts[1].isdigit():
            continue
        name = parts[2]
        seen.add(name.strip().split(".")[0])
        if not name.startswith(" "):
            top.append((name, int(parts[1]) / 1e3))
    top.sort(key=lambda x: -x[1])
    heavy = ("pyroute2", "rich", "pyseccomp", "seccomp", "trio", "anyio", "attrs")
    return {
        "exit_status": proc.returncode,
        "imported": {m: m in seen for m in heavy},
        "top_level_cumulative_ms": [[n, round(ms, 2)] for n, ms in top[:10]],
    }


# ---------------------------------------------------------------- report


def phase_breakdown(results: Sequence[Result], latencies_ms: Sequence[float]) -> dict[str, Any]:
    """Median duration of each phase of our runs (ms), plus spawn and post-exec."""
    rows: dict[str, list[float]] = {}
    order: list[str] = []

    def add(key: str, value: float) -> None:
        if key not in rows:
            rows[key] = []
            order.append(key)
        rows[key].append(value * 1e3)

    for res in results:
        phases = res.phases
        if not phases:
            continue
        add("spawn (run() -> PID 1 reports spawned)", phases[0].seconds)
        for cur, nxt in itertools.pairwise(phases):
            add(cur.name, nxt.seconds - cur.seconds)
        add(f"{phases[-1].name} -> reaped (execve, payload, exit, reap, clean-up)", res.wall_s - phases[-1].seconds)
        add("wall_s (Result.wall_s)", res.wall_s)
    out: dict[str, Any] = {"runs": len(results), "median_ms": {k: round(median(rows[k]), 4) for k in order}}
    out["median_latency_ms"] = round(median(latencies_ms), 4)
    return out


def fmt(x: float | None, digits: int = 1) -> str:
    """Number for the table."""
    if x is None or x != x:  # noqa: PLR0124 - NaN check
        return "-"
    return f"{x:.{digits}f}"


def build_report(data: dict[str, Any]) -> str:
    """The stdout table."""
    lines: list[str] = []
    add = lines.append
    meta = data["meta"]
    add(f"# supervisor start-up benchmark ({meta['date']}, {meta['machine']})")
    add(
        f"# N={meta['n']} per batch, reps={meta['reps']}, K={meta['concurrency']}, "
        f"memory: {meta['mem_count']} sleeping containers; idle machine busy before: {fmt(meta['idle_busy_pct'])} %"
    )
    if meta["idle_busy_pct"] > 20:
        add(
            "# WARNING: other work kept the CPUs busy before this run; absolute times are inflated"
            " (ratios between contenders run in the same batches are steadier)"
        )
    add("")
    ks = meta["concurrency"]
    head = f"{'contender':<11}{'p50 ms':>8}{'p95 ms':>8}" + "".join(f"{'/s c=' + str(k):>10}" for k in ks)
    head += f"{'CPU ms/ctr':>11}{'USS kB/ctr':>11}{'procs/ctr':>10}"
    add(head)
    add("-" * len(head))
    for name, c in data["contenders"].items():
        t = c.get("throughput", {})
        first = t.get(str(ks[0]), {})
        row = f"{name:<11}{fmt(first.get('p50_ms'), 2):>8}{fmt(first.get('p95_ms'), 2):>8}"
        row += "".join(f"{fmt(t.get(str(k), {}).get('per_s'), 0):>10}" for k in ks)
        mem = c.get("memory", {})
        cpu = t.get(str(ks[-1] if len(ks) < 2 else ks[1]), {}).get("cpu_ms_per_container")
        row += f"{fmt(cpu, 2):>11}{fmt(mem.get('uss_kb_per_container'), 0):>11}"
        row += f"{fmt(mem.get('processes_per_container'), 1):>10}"
        add(row)
    add(
        "(p50/p95 at c="
        + str(ks[0])
        + "; medians over reps; CPU = driver + children, at c="
        + str(ks[1] if len(ks) > 1 else ks[0])
        + ")"
    )
    one = data.get("floor_one_process") or {}
    if one:
        bw = data["contenders"].get("bwrap", {}).get("throughput", {})
        cells = []
        for k in ks:
            f = one.get(str(k))
            if f:
                ratio = f["per_s"] / bw[str(k)]["per_s"] if str(k) in bw else None
                cells.append(f"c={k} {fmt(f['per_s'], 0)}/s ({fmt(ratio, 2)}x bwrap)")
        cpu = one.get(str(ks[1] if len(ks) > 1 else ks[0]), {}).get("cpu_ms_per_container")
        add(
            f"{FLOOR_ONE}: the floor as one C process starting them all: "
            + ", ".join(cells)
            + f"; CPU {fmt(cpu, 2)} ms/ctr"
        )
    add("")
    for name, r in data["ratios_to_bwrap"].items():
        parts = [f"p50 {fmt(r.get('p50'), 2)}x"]
        parts += [f"/s c={k} {fmt(r.get(f'per_s_c{k}'), 2)}x" for k in ks]
        parts.append(f"USS {fmt(r.get('uss'), 2)}x")
        add(f"ratio to bwrap  {name:<10} " + ", ".join(parts))
    add("")
    add("Memory detail (kB per live container: kept processes' USS + growth of pre-existing helpers + driver growth):")
    rows = [(name, c.get("memory")) for name, c in data["contenders"].items()]
    rows.append((f"{OURS} --init", data["contenders"].get(OURS, {}).get("memory_init")))
    for name, m in rows:
        if m:
            add(
                f"  {name:<10} {fmt(m['kept_uss_kb_per_container'], 0)}"
                f" + {fmt(m['helpers_growth_kb_per_container'], 1)}"
                f" + {fmt(m['driver_growth_kb_per_container'], 1)} = {fmt(m['uss_kb_per_container'], 0)}"
                f"  (PSS {fmt(m['kept_pss_kb_per_container'], 0)}; {m['live']} live; kinds {m['process_kinds']};"
                f" start {fmt(m['start_s'], 2)} s; left behind {m['left_behind']}"
                + (f"; {m['zombies']} exited, unreaped" if m.get("zombies") else "")
                + ")"
            )
    add("")
    add("Isolation (declared; observed from /proc of one sleeping payload):")
    for name, c in data["contenders"].items():
        add(f"  {name:<10} {c['isolation']}")
        obs = c.get("memory", {}).get("isolation_observed")
        if obs:
            add(f"  {'':<10} observed: {describe_isolation(obs)}")
    add("")
    for label, key in (("c=1", "c1"), ("c=8", "c8")):
        ph = data["phases"].get(key)
        if not ph:
            continue
        add(
            f"Our phases at {label} (median ms over {ph['runs']} runs;"
            f" median latency {fmt(ph['median_latency_ms'], 3)} ms):"
        )
        for name, ms in ph["median_ms"].items():
            add(f"  {name:<72}{ms:8.3f}")
        add("")
    add("CLI, whole process (median ms over runs, interleaved):")
    for name, c in data["cli"].items():
        add(
            f"  {name:<26}{fmt(c['median_ms'], 2):>9}  [{fmt(c['min_ms'], 1)}-{fmt(c['max_ms'], 1)}]"
            f"  n={c['runs']}  {' '.join(c['command']).replace(meta['workdir'], '$WORK')}"
        )
    imp = data.get("cli_imports", {})
    if imp:
        flags = ", ".join(f"{m} {'yes' if v else 'no'}" for m, v in imp["imported"].items())
        add(f"  imported by `supervisor run`: {flags}")
        bc = imp.get("bytecode")
        if bc and bc["without_current_pyc"] and bc["dont_write_bytecode"]:
            add(
                f"  note: {len(bc['without_current_pyc'])} of the package's {bc['modules']} modules have no"
                " current .pyc and PYTHONDONTWRITEBYTECODE is set: every CLI run compiles them"
                " (a wheel install would not)"
            )
        add(
            "  costliest top-level imports (ms): "
            + ", ".join(f"{n} {ms}" for n, ms in imp["top_level_cumulative_ms"][:6])
        )
    add("")
    w = data["crun_workaround"]
    add(f"crun workaround: {w['method']}; one-time {fmt(w.get('setup_ms_total'), 2)} ms; per run 0 ms")
    if w.get("per_run_wrapper_ms") is not None:
        add(
            "  (the alternative, a per-run `unshare -m ... sh -c 'mount ...; exec'` wrapper,"
            f" would add {fmt(w['per_run_wrapper_ms'], 2)} ms per run)"
        )
    add(
        f"rootfs unchanged: {data['meta']['rootfs_unchanged']};"
        f" bwrap orphans reaped by the subreaper: {data['meta']['orphans_reaped']};"
        f" cgroups left behind: {len(data['meta']['cgroups_left'])}"
    )
    if data["missing"]:
        add("not measured: " + "; ".join(f"{k}: {v}" for k, v in data["missing"].items()))
    add("")
    for t in data["targets"]:
        add(f"{t['result']}: {t['name']} ({t['detail']})")
    return "\n".join(lines)


def compute_targets(data: dict[str, Any]) -> list[dict[str, str]]:
    """The issue's targets, as PASS/FAIL/SKIP (never asserted)."""
    cs = data["contenders"]

    def get(name: str, *path: str) -> float | None:
        node: Any = cs.get(name)
        for p in path:
            if not isinstance(node, dict) or p not in node:
                return None
            node = node[p]
        return float(node) if isinstance(node, (int, float)) else None

    out = []

    def target(name: str, path: tuple[str, ...], ref_name: str, factor: float, higher_better: bool, unit: str) -> None:
        ours, ref = get(OURS, *path), get(ref_name, *path)
        if ours is None or ref is None:
            out.append({"name": name, "result": "SKIP", "detail": "peer not measured"})
            return
        goal = ref * factor
        ok = ours >= goal if higher_better else ours <= goal
        rel = ">=" if higher_better else "<="
        detail = f"ours {ours:.2f} {unit} {rel} {goal:.2f} {unit}?"
        entry = {"name": name, "result": "PASS" if ok else "FAIL", "detail": detail}
        floor = get(FLOOR, *path)
        one = (data.get("floor_one_process") or {}).get(path[1], {}).get("per_s") if path[-1] == "per_s" else None
        if floor is not None and one is not None:
            floor = max(floor, float(one))
        if floor is not None:
            # Whether any implementation of our isolation could pass, as far
            # as one process per container in C tells.
            reachable = floor >= goal if higher_better else floor <= goal
            entry["floor"] = f"{floor:.2f}"
            entry["floor_reaches_goal"] = "yes" if reachable else "no"
            enough = "enough" if reachable else "not enough"
            entry["detail"] += f"; the C floor of our isolation, at best: {floor:.2f} {unit}, {enough}"
        if path[-1] == "per_s":
            # Each repetition against the peer's batch of the same repetition:
            # how far the verdict would move with the machine's drift.
            per_rep = []
            for rep in sorted({b["rep"] for b in data.get("batches", []) if "rep" in b}):
                rates = {
                    b["contender"]: b["per_s"]
                    for b in data["batches"]
                    if b.get("rep") == rep and str(b["k"]) == path[1] and b["contender"] in (OURS, ref_name)
                }
                if len(rates) == 2 and rates[ref_name] > 0:
                    per_rep.append(f"{rates[OURS] / rates[ref_name]:.2f}x")
            if per_rep:
                entry["detail"] += f"; per repetition: {', '.join(per_rep)} (goal {factor:g}x)"
        out.append(entry)

    target("p50 latency at c=1 <= 0.75x bwrap's", ("throughput", "1", "p50_ms"), "bwrap", 0.75, False, "ms")
    target("throughput at c=8 >= 1.5x bwrap's", ("throughput", "8", "per_s"), "bwrap", 1.5, True, "/s")
    target("throughput at c=8 >= 2x crun's", ("throughput", "8", "per_s"), "crun", 2.0, True, "/s")
    target("USS per idle container <= bwrap's", ("memory", "uss_kb_per_container"), "bwrap", 1.0, False, "kB")
    ours_init = get(OURS, "memory_init", "uss_kb_per_container")
    bwrap_mem = get("bwrap", "memory", "uss_kb_per_container")
    name = "USS per idle container with --init <= bwrap's"
    if ours_init is None or bwrap_mem is None:
        out.append({"name": name, "result": "SKIP", "detail": "not measured"})
    else:
        detail = f"ours {ours_init:.2f} kB <= {bwrap_mem:.2f} kB? (the init runs in the supervisor's memory)"
        out.append({"name": name, "result": "PASS" if ours_init <= bwrap_mem else "FAIL", "detail": detail})
    driver = get(OURS, "throughput", "8", "driver_cpu_ms_per_container")
    for entry in out:
        if entry["name"].startswith("throughput") and driver is not None:
            entry["detail"] += f"; our driver's own CPU {driver:.2f} ms per container"
    cli = data.get("cli") or {}
    ours_cli = (cli.get("supervisor run (CLI)") or {}).get("median_ms")
    ref_cli = (cli.get("python -c pass (reference)") or {}).get("median_ms")
    name = "CLI `supervisor run -- /bin/true` <= 4x `python -c pass`"
    if isinstance(ours_cli, (int, float)) and isinstance(ref_cli, (int, float)) and not math.isnan(ours_cli):
        ok = ours_cli <= 4 * ref_cli
        detail = f"ours {ours_cli:.1f} ms <= {4 * ref_cli:.1f} ms?"
        out.append({"name": name, "result": "PASS" if ok else "FAIL", "detail": detail})
    else:
        out.append({"name": name, "result": "SKIP", "detail": "not measured"})
    return out


def write_chart(data: dict[str, Any], path: str) -> None:
    """A small PNG: latency, throughput and memory per contender (matplotlib, Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(data["contenders"])
    ks = data["meta"]["concurrency"]

    def color(name: str, shade: float = 1.0) -> tuple[float, float, float, float]:
        base = (0.12, 0.47, 0.71) if name == OURS else (0.45, 0.5, 0.55)
        return (*base, 0.35 + 0.65 * shade)

    one = data.get("floor_one_process") or {}
    # The throughput panel also shows the floor as one process (no latency, no memory figure).
    rate_names = [*names, FLOOR_ONE] if one else names

    def throughput(name: str, k: int) -> float:
        if name == FLOOR_ONE:
            return float(one.get(str(k), {}).get("per_s", 0))
        return float(data["contenders"][name].get("throughput", {}).get(str(k), {}).get("per_s", 0))

    from matplotlib.patches import Patch

    fig, axes = plt.subplots(1, 3, figsize=(13, 4.6), dpi=100)
    p50 = [data["contenders"][n].get("throughput", {}).get(str(ks[0]), {}).get("p50_ms", 0) for n in names]
    bars = axes[0].bar(names, p50, color=[color(n) for n in names])
    axes[0].bar_label(bars, fmt="%.1f", fontsize=8)
    axes[0].set_title(f"p50 latency at concurrency {ks[0]}, ms\n(lower is better)", fontsize=10)
    width = 0.8 / len(ks)
    for j, k in enumerate(ks):
        xs = [i - 0.4 + width * (j + 0.5) for i in range(len(rate_names))]
        shade = j / max(len(ks) - 1, 1)
        rates = [throughput(n, k) for n in rate_names]
        bars = axes[1].bar(xs, rates, width, color=[color(n, shade) for n in rate_names])
        axes[1].bar_label(bars, fmt="%.0f", fontsize=7, rotation=90, padding=2)
    axes[1].set_xticks(range(len(rate_names)), rate_names)
    axes[1].set_title("containers per second\n(higher is better)", fontsize=10)
    axes[1].legend(
        handles=[Patch(color=color("peer", j / max(len(ks) - 1, 1)), label=f"{k} at a time") for j, k in enumerate(ks)],
        title="concurrency (lighter: fewer)",
        fontsize=8,
        title_fontsize=8,
        loc="upper left",
    )
    top = max((throughput(n, k) for n in rate_names for k in ks), default=0)
    axes[1].set_ylim(0, top * 1.25 or 1)  # room for the labels and the legend
    uss = [data["contenders"][n].get("memory", {}).get("uss_kb_per_container", 0) for n in names]
    bars = axes[2].bar(names, uss, color=[color(n) for n in names])
    axes[2].bar_label(bars, fmt="%.0f", fontsize=8)
    axes[2].set_title("private memory (USS) per idle container, kB\n(lower is better)", fontsize=10)
    for ax in axes:
        ax.tick_params(axis="x", labelsize=9, rotation=30)
        ax.tick_params(axis="y", labelsize=8)
        ax.grid(axis="y", alpha=0.3)
        ax.set_axisbelow(True)
    meta = data["meta"]
    fig.suptitle(f"supervisor (blue) and its peers (grey), in one run: {meta['machine']}; {meta['date']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ---------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--quick", action="store_true", help="small N, one repetition, 100 idle containers (< 1 minute)")
    p.add_argument("-n", "--n", type=int, default=None, help="containers per batch (default 300; --quick 40)")
    p.add_argument("--reps", type=int, default=None, help="repetitions (default 3; --quick 1)")
    p.add_argument("--concurrency", default="1,8,32", help="comma-separated K values (default 1,8,32)")
    p.add_argument("--warmup", type=int, default=5, help="unrecorded containers before each batch (default 5)")
    p.add_argument("--mem-count", type=int, default=None, help="idle containers for memory (default 200; --quick 100)")
    p.add_argument(
        "--settle", type=float, default=None, help="seconds to wait before reading memory (default 3; --quick 1)"
    )
    p.add_argument("--cli-runs", type=int, default=None, help="runs per CLI command (default 20; --quick 5)")
    p.add_argument("--contenders", default=",".join(ALL_CONTENDERS), help="comma-separated subset (default: all found)")
    p.add_argument("--no-peer-seccomp", action="store_true", help="run bwrap, crun and runc without a seccomp filter")
    p.add_argument("--json", metavar="PATH", help="write every figure as JSON")
    p.add_argument("--chart", metavar="PATH", help="write a PNG chart (needs matplotlib)")
    args = p.parse_args(argv)
    quick = args.quick
    args.n = args.n or (40 if quick else 300)
    args.reps = args.reps or (1 if quick else 3)
    args.mem_count = args.mem_count or (100 if quick else 200)
    args.settle = args.settle if args.settle is not None else (1.0 if quick else 3.0)
    args.cli_runs = args.cli_runs or (5 if quick else 20)
    args.ks = [int(k) for k in args.concurrency.split(",") if k]
    args.wanted = [c.strip() for c in args.contenders.split(",") if c.strip()]
    return args


def cli_command(rootfs: str) -> list[str]:
    """``supervisor run -m ROOTFS -- /bin/true``, with this interpreter's installed script if any."""
    script = os.path.join(os.path.dirname(sys.executable), "supervisor")
    if os.access(script, os.X_OK):
        return [script, "run", "-m", rootfs, "--", "/bin/true"]
    return [sys.executable, "-m", "supervisor", "run", "-m", rootfs, "--", "/bin/true"]


def machine_line() -> str:
    """Kernel, CPUs and Python, for the report."""
    model = ""
    for line in read_text("/proc/cpuinfo").splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    python = platform.python_version()
    return f"Linux {platform.release()}, {os.cpu_count()} CPUs ({model}), Python {python}, trio {trio.__version__}"


def idle_busy_pct(seconds: float) -> float:
    """Machine CPU use (% of all CPUs) over ``seconds`` before we start."""
    b0, t0 = cpu_busy_seconds(), time.monotonic()
    time.sleep(seconds)
    return (cpu_busy_seconds() - b0) / (time.monotonic() - t0) / (os.cpu_count() or 1) * 100


async def bench(args: argparse.Namespace, work: str) -> dict[str, Any]:
    """The whole benchmark, in one trio run."""
    rootfs = build_rootfs(work)
    snapshot = rootfs_snapshot(rootfs)
    cgroups_before = container_cgroups()
    reaper = Reaper()
    data: dict[str, Any] = {
        "meta": {
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "machine": machine_line(),
            "quick": args.quick,
            "n": args.n,
            "reps": args.reps,
            "warmup": args.warmup,
            "concurrency": args.ks,
            "mem_count": args.mem_count,
            "settle_s": args.settle,
            "workdir": work,
            "cgroups": "hybrid (v1 + cgroup2 at " + UNIFIED + ")" if hybrid_cgroups() else "not hybrid",
            "psi_cpu_before": read_text("/proc/pressure/cpu").strip(),
            "idle_busy_pct": idle_busy_pct(0.5 if args.quick else 2.0),
        },
        "contenders": {},
        "missing": {},
        "phases": {},
        "cli": {},
    }
    crun_launcher: PrivateMountLauncher | None = None
    workaround: dict[str, Any] = {"method": "not needed"}
    if "crun" in args.wanted and shutil.which("crun") and hybrid_cgroups():
        crun_launcher = PrivateMountLauncher()
        try:
            crun_launcher.start()
            workaround = {
                "method": f"crun started from {len(crun_launcher.setup_ms)} spawner threads of this program in a "
                "private "
                f"mount namespace (unshare(CLONE_NEWNS), MS_REC|MS_PRIVATE, tmpfs over {UNIFIED}); every other "
                "contender stays in the host mount namespace",
                "setup_ms_total": sum(crun_launcher.setup_ms),
            }
        except OSError as exc:
            crun_launcher = None
            workaround = {"method": f"unavailable ({exc})"}
    peers, missing = make_peers(
        work,
        rootfs,
        args.wanted,
        not args.no_peer_seccomp,
        crun_launcher or (Launcher() if not hybrid_cgroups() else None),
    )
    data["missing"] = missing
    print("peers found: " + (", ".join(f"{p.name} ({p.version})" for p in peers) or "none"), file=sys.stderr)
    for name, why in missing.items():
        print(f"peer not measured: {name}: {why}", file=sys.stderr)

    async with trio.open_nursery() as outer:
        outer.start_soon(reaper.run)
        t_sup = time.perf_counter()
        async with Supervisor() as sup:
            data["meta"]["supervisor_start_ms"] = (time.perf_counter() - t_sup) * 1e3
            ours = Ours(sup, rootfs)
            contenders: list[Contender] = ([ours] if OURS in args.wanted else []) + list(peers)
            usable: list[Contender] = []
            for c in contenders:
                try:
                    await c.check()
                except (BenchError, OSError) as exc:
                    data["missing"][c.name] = f"failed its first run: {exc}"
                    print(f"peer not measured: {c.name}: {exc}", file=sys.stderr)
                    if c is ours:
                        raise SystemExit(f"startup.py: our own first container failed: {exc}") from None
                    continue
                usable.append(c)
                data["contenders"][c.name] = {"version": c.version, "isolation": c.isolation, "command": c.command}

            # Throughput and latency: contenders interleaved, the order rotating per repetition.
            batches: list[dict[str, Any]] = []
            floor_batches: list[dict[str, Any]] = []
            floor_peer = next((p for p in usable if p.name == FLOOR), None)
            floor_cmd = floor_peer.make_argv("ID", False)[:-1] if isinstance(floor_peer, Peer) else None
            for rep in range(args.reps):
                for k in args.ks:
                    order = usable[rep % len(usable) :] + usable[: rep % len(usable)]
                    for c in order:
                        print(f"rep {rep + 1}/{args.reps} K={k:<3} {c.name:<11}", end="", file=sys.stderr, flush=True)
                        b = await run_batch(c, args.n, k, args.warmup, f"b-{c.name}-{os.getpid()}-r{rep}-k{k}", reaper)
                        b["rep"] = rep
                        batches.append(b)
                        print(f" {b['per_s']:7.1f}/s p50 {b['p50_ms']:6.2f} ms", file=sys.stderr)
                    if floor_cmd is not None:
                        print(
                            f"rep {rep + 1}/{args.reps} K={k:<3} {FLOOR_ONE:<11}", end="", file=sys.stderr, flush=True
                        )
                        fb = await floor_batch(floor_cmd, args.n, k)
                        fb["rep"] = rep
                        floor_batches.append(fb)
                        print(f" {fb['per_s']:7.1f}/s (one process)", file=sys.stderr)

            # Memory: idle containers, one contender at a time.
            exclude: set[int] = set()
            for c in usable:
                print(f"memory: {args.mem_count} x sleep 300 with {c.name}", file=sys.stderr)
                m = await memory_test(c, args.mem_count, 32, args.settle, reaper, exclude)
                data["contenders"][c.name]["memory"] = m
            if OURS in data["contenders"] and os.geteuid() == 0:  # rootless has no init
                print(f"memory: {args.mem_count} x sleep 300 with {OURS} --init", file=sys.stderr)
                m = await memory_test(Ours(sup, rootfs, init=True), args.mem_count, 32, args.settle, reaper, exclude)
                data["contenders"][OURS]["memory_init"] = m

            # The CLI.
            cli: dict[str, tuple[Launcher, list[str]]] = {"supervisor run (CLI)": (Launcher(), cli_command(rootfs))}
            for p in peers:
                if p.name in ("bwrap", "crun") and p.name in data["contenders"]:
                    argv = p.make_argv("ID", False)
                    if "SECCOMP_FD" in argv:  # the CLI comparison runs bwrap without the fd dance
                        i = argv.index("SECCOMP_FD")
                        argv = argv[: i - 1] + argv[i + 1 :]
                    cli[p.name] = (p.launcher, argv)
            cli["python -c pass (reference)"] = (Launcher(), [sys.executable, "-c", "pass"])
            print(f"CLI: {args.cli_runs} runs each of {', '.join(cli)}", file=sys.stderr)
            data["cli"] = await cli_timing(cli, args.cli_runs)
            data["cli_imports"] = await cli_imports([sys.executable, "-X", "importtime", *_cli_py_args(rootfs)])
            data["cli_imports"]["bytecode"] = stale_bytecode()
            if crun_launcher is not None:
                wrapper = [
                    "unshare",
                    "-m",
                    "--propagation",
                    "private",
                    "sh",
                    "-c",
                    f"mount -t tmpfs bench-hide-unified {UNIFIED} && exec /bin/true",
                ]
                w = await cli_timing(
                    {"wrapper": (Launcher(), wrapper), "true": (Launcher(), ["/bin/true"])}, max(5, args.cli_runs // 2)
                )
                workaround["per_run_wrapper_ms"] = w["wrapper"]["median_ms"] - w["true"]["median_ms"]
        outer.cancel_scope.cancel()
    if crun_launcher is not None:
        crun_launcher.stop()
    data["crun_workaround"] = workaround

    # Aggregate.
    for name, c in data["contenders"].items():
        c["throughput"] = {}
        for k in args.ks:
            mine = [b for b in batches if b["contender"] == name and b["k"] == k]
            if not mine:
                continue
            c["throughput"][str(k)] = {
                "per_s": median(b["per_s"] for b in mine),
                "per_s_range": [min(b["per_s"] for b in mine), max(b["per_s"] for b in mine)],
                "p50_ms": median(b["p50_ms"] for b in mine),
                "p95_ms": median(b["p95_ms"] for b in mine),
                "cpu_ms_per_container": median(b["cpu_ms_per_container"] for b in mine),
                "driver_cpu_ms_per_container": median(b["driver_cpu_ms_per_container"] for b in mine),
                "machine_busy_ms_per_container": median(b["machine_busy_ms_per_container"] for b in mine),
                "psi_stall_frac": median(b["psi_stall_frac"] for b in mine),
                "failures": sum(b["failures"] for b in mine),
            }
    data["floor_one_process"] = {
        str(k): {
            "per_s": median(b["per_s"] for b in fbs),
            "cpu_ms_per_container": median(b["cpu_ms_per_container"] for b in fbs),
            "batches": len(fbs),
        }
        for k in args.ks
        if (fbs := [b for b in floor_batches if b["k"] == k])
    }
    for key, k in (("c1", 1), ("c8", 8)):
        mine = [b for b in batches if b["contender"] == OURS and b["k"] == k]
        if mine:
            data["phases"][key] = phase_breakdown(
                [r for b in mine for r in b["_results"]], [x for b in mine for x in b["latencies_ms"]]
            )
    for b in batches:
        del b["_results"]
    data["batches"] = batches
    ratios: dict[str, dict[str, float]] = {}
    ref = data["contenders"].get("bwrap")
    if ref:
        for name, c in data["contenders"].items():
            r: dict[str, float] = {}
            with contextlib.suppress(KeyError, ZeroDivisionError):
                r["p50"] = c["throughput"][str(args.ks[0])]["p50_ms"] / ref["throughput"][str(args.ks[0])]["p50_ms"]
            for k in args.ks:
                with contextlib.suppress(KeyError, ZeroDivisionError):
                    r[f"per_s_c{k}"] = c["throughput"][str(k)]["per_s"] / ref["throughput"][str(k)]["per_s"]
            with contextlib.suppress(KeyError, ZeroDivisionError):
                r["uss"] = c["memory"]["uss_kb_per_container"] / ref["memory"]["uss_kb_per_container"]
            ratios[name] = r
    data["ratios_to_bwrap"] = ratios
    data["targets"] = compute_targets(data)
    data["meta"]["rootfs_unchanged"] = rootfs_snapshot(rootfs) == snapshot
    data["meta"]["cgroups_left"] = sorted(container_cgroups() - cgroups_before)
    data["meta"]["orphans_reaped"] = reaper.reaped
    data["meta"]["psi_cpu_after"] = read_text("/proc/pressure/cpu").strip()
    return data


def _cli_py_args(rootfs: str) -> list[str]:
    """``-c`` code that runs the CLI's entry point like the console script does."""
    code = (
        f"import sys; sys.argv = ['supervisor', 'run', '-m', {rootfs!r}, '--', '/bin/true'];"
        " from supervisor._cli import console_main; console_main()"
    )
    return ["-c", code]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point."""
    args = parse_args(argv)
    if os.geteuid() != 0:
        wanted = set(args.contenders.split(","))
        if not wanted <= set(ROOTLESS_CONTENDERS):
            print(
                "startup.py: as a user other than root (rootless) only "
                f"--contenders {','.join(ROOTLESS_CONTENDERS)} (or a subset) can run: "
                "crun, runc and the floor need root here",
                file=sys.stderr,
            )
            return 2
    if args.chart:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            print(
                "startup.py: --chart needs matplotlib, which is not installed "
                "(pip install matplotlib, or the project's 'bench' extra)",
                file=sys.stderr,
            )
            return 2
    if _libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        print("startup.py: cannot become a child subreaper", file=sys.stderr)
        return 2
    work = tempfile.mkdtemp(prefix="supervisor-bench-")
    os.chmod(work, 0o755)  # the containers' mapped root must reach the rootfs
    t0 = time.monotonic()
    try:
        data = trio.run(bench, args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    data["meta"]["duration_s"] = time.monotonic() - t0
    print(build_report(data))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(data, f, indent=1)
        print(f"wrote {args.json}", file=sys.stderr)
    if args.chart:
        write_chart(data, args.chart)
        print(f"wrote {args.chart}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
