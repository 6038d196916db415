"""The cgroup files: reading, writing, the process lists, removal, the one
way a cgroup's processes are killed, and polling for a state.

Reads go through ``os.open``/``os.read`` (a text file object costs more than
the kernel's part for these small files), and every error names the file.
"""

from __future__ import annotations

import errno
import os
import signal
import time
from collections.abc import Callable, Iterator


def write(path: str, value: str) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise OSError(exc.errno, f"open {path} to write {value!r}: {exc.strerror}") from exc
    try:
        os.write(fd, value.encode())
    except OSError as exc:
        raise OSError(exc.errno, f"write {path} {value!r}: {exc.strerror}") from exc
    finally:
        os.close(fd)


def open_fd(path: str, flags: int) -> int:
    """os.open with close-on-exec; the error names the path."""
    try:
        return os.open(path, flags | os.O_CLOEXEC)
    except OSError as exc:
        raise OSError(exc.errno, f"open {path}: {exc.strerror}") from exc


def read(path: str) -> str:
    # os.open/os.read: a text file object costs more than the kernel's part
    # for these small files, read after every run.
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            # A short first read of these kernel files is all of them: no
            # second read for the end of file.
            chunks = [os.read(fd, 65536)]
            while len(chunks[-1]) == 65536:
                chunks.append(os.read(fd, 65536))
        finally:
            os.close(fd)
    except OSError as exc:
        raise OSError(exc.errno, f"read {path}: {exc.strerror}") from exc
    return b"".join(chunks).decode()


def inherit_cpuset(path: str, names: tuple[str, ...] = ("cpus", "mems")) -> None:
    """Give v1 cpuset cgroup ``path`` its parent's ``cpuset.NAME`` values: a
    new one has none, and no task may join it then."""
    for name in names:
        write(os.path.join(path, f"cpuset.{name}"), read(os.path.join(os.path.dirname(path), f"cpuset.{name}")).strip())


def keyed(path: str) -> dict[str, int]:
    """Parse a ``key value`` per line file (``cpu.stat``, ``memory.events``, ...)."""
    result: dict[str, int] = {}
    for line in read(path).splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].lstrip("-").isdigit():
            result[parts[0]] = int(parts[1])
    return result


def subtree(path: str) -> Iterator[str]:
    """``path`` and its descendant cgroups, children before parents."""
    for dirpath, _dirnames, _files in os.walk(path, topdown=False):
        yield dirpath


def procs(path: str) -> list[int]:
    """PIDs in the cgroup ``path`` and its descendants (missing cgroups count as empty)."""
    pids: list[int] = []
    for d in subtree(path):
        try:
            with open(os.path.join(d, "cgroup.procs")) as f:
                pids.extend(int(x) for x in f.read().split())
        except FileNotFoundError:
            continue
    return pids


def rmdir_tree(path: str) -> None:
    # Fast path: a container rarely makes sub-cgroups, and one rmdir is much
    # cheaper than walking the folder; walk (children first) only if needed.
    try:
        os.rmdir(path)
        return
    except FileNotFoundError:
        return
    except OSError as exc:
        if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.EBUSY):  # cgroupfs: EBUSY with children
            raise
    for d in subtree(path):
        try:
            os.rmdir(d)
        except FileNotFoundError:
            pass


def kill_pids(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def host_has_swap() -> bool:
    try:
        with open("/proc/swaps") as f:
            return len(f.read().splitlines()) > 1
    except OSError:
        return False


def kill_pass(path: str, freeze_timeout: float = 1.0) -> None:
    """SIGKILL every process of the cgroup ``path`` and its descendants, once.

    ``cgroup.kill`` where the kernel has it (v2, Linux 5.14+). Otherwise the
    cgroup is frozen (v2 ``cgroup.freeze``, v1 ``freezer.state``), every PID
    of its subtree's ``cgroup.procs`` is killed (a frozen task can neither fork
    nor exit, so the list is complete and no PID is reused), and it is thawed,
    always, so that the signals are delivered. Without a freezer, the listed
    PIDs are killed (one round; a PID could in theory be reused between the
    read and the kill, so callers repeat until the cgroup is empty).

    Blocking: at most ``freeze_timeout`` for a freeze (a task in
    uninterruptible sleep may delay it; what is listed is killed anyway).

    Args:
        path: a cgroup directory (v1 or v2).
        freeze_timeout: the longest wait for the freeze, in seconds.

    Raises:
        FileNotFoundError: the cgroup is gone.
        OSError: a control file write failed (naming it).
    """
    if os.path.exists(os.path.join(path, "cgroup.kill")):
        write(os.path.join(path, "cgroup.kill"), "1")
        return
    for control, freeze, thaw in (("cgroup.freeze", "1", "0"), ("freezer.state", "FROZEN", "THAWED")):
        control_path = os.path.join(path, control)
        if not os.path.exists(control_path):
            continue
        write(control_path, freeze)
        try:
            deadline = time.monotonic() + freeze_timeout
            while time.monotonic() < deadline and not _frozen(path, control_path):
                time.sleep(0.002)
            kill_pids(procs(path))
        finally:
            write(control_path, thaw)
        return
    kill_pids(procs(path))


def _frozen(path: str, control_path: str) -> bool:
    if control_path.endswith("freezer.state"):
        return read(control_path).strip() == "FROZEN"
    return keyed(os.path.join(path, "cgroup.events")).get("frozen", 0) == 1


async def wait_until(check: Callable[[], bool], timeout: float) -> bool:
    """Poll ``check()`` with a backoff from 1 ms to 50 ms until it is true or ``timeout`` passes."""
    import anyio  # imported here: a run without an event loop never needs it

    deadline = time.monotonic() + timeout
    delay = 0.001
    while True:
        if check():
            return True
        if time.monotonic() >= deadline:
            return False
        await anyio.sleep(delay)
        delay = min(delay * 2, 0.05)
