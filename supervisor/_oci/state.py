"""The OCI runtime's state of each container, under ``--root``.

One directory per container, ``ROOT/ID/``, holding:

- ``state.json``: the container's record, replaced atomically (a new file
  renamed over it), so that a reader never sees half of one;
- ``lock``: taken (``flock``) by every command that changes the container,
  for the whole change;
- ``start.sock``: between ``create`` and ``start``, the socket PID 1 waits on.

A container's status is never read from the file alone: the record names
its PID 1 by pid *and* start time (``/proc/PID/stat``'s 22nd field), so that
a pid reused by another process reads as ``stopped``; a PID 1 still in its
setup (its name is the setup's) is ``created``; a frozen cgroup is
``paused``.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
from collections.abc import Iterator

from .._parent.rundir import stat_fields
from .._protocol import SETUP_COMM

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

#: The runtime spec's version this runtime reports.
OCI_VERSION = "1.2.0"

#: ``--root``'s default (runc's is ``/run/runc``).
DEFAULT_ROOT = "/run/supervisor-oci"

#: A container id: what runc accepts.
_ID = re.compile(r"^[\w+\-.]+$")


class StateError(Exception):
    """A command that the container's state refuses (the message says why)."""


def check_id(cid: str) -> None:
    """Refuse an id that is not a plain name (it becomes a directory name).

    Raises:
        StateError: ``cid`` is empty, too long, or has other characters than
            letters, digits, ``_+-.``.
    """
    if not cid or len(cid) > 1024 or not _ID.match(cid) or cid in (".", ".."):
        raise StateError(f"invalid container id {cid!r}: use letters, digits and _+-.")


def start_time(pid: int) -> int | None:
    """The start time of process ``pid`` (clock ticks since boot), or ``None`` if gone or a zombie."""
    fields = stat_fields(pid)
    if fields is None or fields[0] in (b"Z", b"X"):
        return None
    return int(fields[19])


class Store:
    """The containers under one ``--root``.

    Args:
        root: the state directory (created, mode 0700, on first write).
    """

    def __init__(self, root: str) -> None:
        self.root = os.path.abspath(root)

    def dir(self, cid: str) -> str:
        """The container's state directory."""
        return os.path.join(self.root, cid)

    def new(self, cid: str) -> str:
        """Make the directory of a new container.

        Raises:
            StateError: a container of that id exists.
            OSError: the directory cannot be made.
        """
        check_id(cid)
        os.makedirs(self.root, 0o700, exist_ok=True)
        path = self.dir(cid)
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            raise StateError(f"container {cid!r} already exists") from None
        return path

    @contextlib.contextmanager
    def locked(self, cid: str) -> Iterator[None]:
        """Hold the container's lock (blocking) for a change.

        Raises:
            StateError: the container does not exist.
        """
        check_id(cid)
        try:
            fd = os.open(os.path.join(self.dir(cid), "lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except FileNotFoundError:
            raise StateError(f"container {cid!r} does not exist") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            if not os.path.isdir(self.dir(cid)):  # deleted while we waited
                raise StateError(f"container {cid!r} does not exist")
            yield
        finally:
            os.close(fd)

    def read(self, cid: str) -> dict[str, Any]:
        """The container's record.

        Raises:
            StateError: the container does not exist.
        """
        check_id(cid)
        try:
            with open(os.path.join(self.dir(cid), "state.json"), "rb") as f:
                record: dict[str, Any] = json.load(f)
        except FileNotFoundError:
            raise StateError(f"container {cid!r} does not exist") from None
        return record

    def write(self, cid: str, record: dict[str, Any]) -> None:
        """Replace the container's record atomically."""
        path = os.path.join(self.dir(cid), "state.json")
        tmp = f"{path}.{os.getpid()}"
        with open(tmp, "w") as f:
            json.dump(record, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

    def ids(self) -> list[str]:
        """Every container id with a record, sorted."""
        try:
            names = os.listdir(self.root)
        except FileNotFoundError:
            return []
        return sorted(n for n in names if os.path.exists(os.path.join(self.root, n, "state.json")))

    def remove(self, cid: str) -> None:
        """Remove the container's directory, its record last."""
        path = self.dir(cid)
        for name in sorted(os.listdir(path), key=lambda n: n == "state.json"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(path, name))
        with contextlib.suppress(FileNotFoundError):
            os.rmdir(path)


def alive(record: dict[str, Any]) -> bool:
    """Whether the record's PID 1 is still the process it recorded (and not a zombie)."""
    pid: int = record.get("pid", 0)
    return pid > 0 and start_time(pid) == int(record["supervisor"]["starttime"])


def status(record: dict[str, Any]) -> str:
    """The container's status now: ``created``, ``running``, ``paused`` or ``stopped``."""
    if not alive(record):
        return "stopped"
    try:
        with open(f"/proc/{record['pid']}/comm", "rb") as f:
            in_setup = f.read().rstrip(b"\n") == SETUP_COMM
    except OSError:
        return "stopped"
    if in_setup:
        return "created"
    if frozen(record):
        return "paused"
    return "running"


#: The freezer's file in a cgroup directory (v2, then v1), and its frozen and thawed values.
_FREEZERS = (("cgroup.freeze", "1", "0"), ("freezer.state", "FROZEN", "THAWED"))


def frozen(record: dict[str, Any]) -> bool:
    """Whether the container's cgroup is frozen (``cgroup.freeze`` or v1's ``freezer.state``)."""
    for path in record["supervisor"].get("cgroup", []):
        for name, on, _off in _FREEZERS:
            try:
                with open(os.path.join(path, name)) as f:
                    if f.read().strip() == on:
                        return True
            except OSError:
                continue
    return False


def freeze_cgroup(record: dict[str, Any], freeze: bool) -> bool:
    """Freeze or thaw the container's cgroup through the first freezer it has; whether it had one.

    Raises:
        OSError: the write failed.
    """
    for path in record["supervisor"].get("cgroup", []):
        for name, on, off in _FREEZERS:
            target = os.path.join(path, name)
            if os.path.exists(target):
                with open(target, "w") as f:
                    f.write(on if freeze else off)
                return True
    return False


def public(record: dict[str, Any]) -> dict[str, Any]:
    """The state the runtime spec defines, as ``state`` prints it."""
    now = status(record)
    out: dict[str, Any] = {"ociVersion": OCI_VERSION, "id": record["id"], "status": now}
    if now != "stopped":
        out["pid"] = record["pid"]
    out["bundle"] = record["bundle"]
    if record.get("annotations"):
        out["annotations"] = record["annotations"]
    return out


def pidfd_of(record: dict[str, Any]) -> int:
    """A pidfd of the record's PID 1, checked to be that process.

    Raises:
        ProcessLookupError: it is gone (or its pid is another process's).
    """
    pid = record["pid"]
    try:
        fd = os.pidfd_open(pid)
    except OSError as exc:
        if exc.errno == errno.ESRCH:
            raise ProcessLookupError(errno.ESRCH, f"container {record['id']!r} is not running") from None
        raise
    # The pidfd pins the process; checked after it is open, the start time
    # says it is the one recorded.
    if start_time(pid) != record["supervisor"]["starttime"]:
        os.close(fd)
        raise ProcessLookupError(errno.ESRCH, f"container {record['id']!r} is not running")
    return fd
