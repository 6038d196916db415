"""Crash safety: a ledger of host-side resources under a run directory.

Every host-side resource of a container (cgroup, veth, address lease,
temporary folder) is recorded here *before* it is created, as a JSON line
naming the container, in its supervisor's ledger file inside a directory
named after the owning process's PID and start time (a PID alone is
reusable; PID + start time is not). When the container's resources are
released, a line says so; when the supervisor closes, its file goes, and
with the last one the directory. The file is append-only (two writes per
container, no file made or removed per container) and is rewritten with only
the live records once it has grown well past them.

If a supervisor dies without cleaning up (SIGKILL, OOM, power loss), its
containers die with it (their PID 1 has a parent-death signal), but the recorded resources remain. The
next supervisor sweeps the directories of dead owners when it starts, and
``supervisor gc`` does it on demand: each record of a container not marked
released is handed to the sweeper registered for its kind, newest first, and
every sweeper tolerates a resource that is already gone.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import json
import os
import stat
from collections.abc import Callable

from .._record import field, mutable_record

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (3 ms for a command line)
if TYPE_CHECKING:
    from typing import Any

#: Where run directories live (override with SUPERVISOR_RUN_DIR, e.g. in tests).
DEFAULT_ROOT = "/run/supervisor"

Sweeper = Callable[[dict[str, "Any"]], None]  # Any as a string: typing is not imported
_SWEEPERS: dict[str, Sweeper] = {}


def register_sweeper(kind: str, sweeper: Sweeper) -> None:
    """Register how to remove a leftover resource of ``kind``.

    The sweeper receives the record (the keyword arguments given to
    :meth:`RunDir.record`) and must not fail if the resource is already gone.
    """
    _SWEEPERS[kind] = sweeper


def _sweep_dir(record: dict[str, Any]) -> None:
    import shutil

    shutil.rmtree(str(record["path"]), ignore_errors=True)


register_sweeper("dir", _sweep_dir)


#: Numbers the supervisors of this process (part of every container id).
_SUPERVISOR_NUMBERS = itertools.count(1)

#: One ledger line's JSON, compact (``json.dumps`` with separators makes an
#: encoder per call).
_encode = json.JSONEncoder(separators=(",", ":")).encode


def supervisor_prefix() -> str:
    """A new supervisor's part of its container ids (and so of their cgroup
    names): the process's PID and a number unique among its supervisors."""
    return f"{os.getpid()}-{next(_SUPERVISOR_NUMBERS):04x}"


def run_root() -> str:
    """The directory that holds every supervisor's run directory of this user.

    ``SUPERVISOR_RUN_DIR`` if set; else, for root, ``/run/supervisor``; for
    any other user (rootless) a folder of that user's own, never shared:
    ``$XDG_RUNTIME_DIR/supervisor`` if that runtime folder is the user's,
    else ``/tmp/supervisor-UID`` (see :func:`private_root`).
    """
    given = os.environ.get("SUPERVISOR_RUN_DIR")
    if given:
        return given
    uid = os.geteuid()
    if uid == 0:
        return DEFAULT_ROOT
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isabs(runtime):
        try:
            st = os.stat(runtime)
        except OSError:
            st = None
        if st is not None and st.st_uid == uid and not st.st_mode & 0o077:
            return os.path.join(runtime, "supervisor")
    return f"/tmp/supervisor-{uid}"


def private_root(root: str) -> None:
    """Rootless: make ``root`` (mode 0700) if missing and check that it is this user's own.

    A rootless supervisor's run root may lie in a folder others can write
    (``/tmp``): one made in advance by another user, or a symlink, is refused
    rather than used. For root this does nothing (its folders are made as
    they are needed).

    Raises:
        PermissionError: ``root`` is not a directory of this user's, or
            others may write to it (the message names it).
    """
    uid = os.geteuid()
    if uid == 0:
        return
    if not os.path.lexists(root):
        os.makedirs(root, mode=0o700, exist_ok=True)
    st = os.lstat(root)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != uid or st.st_mode & 0o022:
        raise PermissionError(
            errno.EPERM,
            f"the run directory {root} is not a folder of uid {uid}'s own that only it can write "
            "(remove it, or set SUPERVISOR_RUN_DIR)",
        )


def stat_fields(pid: int) -> list[bytes] | None:
    """The fields of ``/proc/PID/stat`` from the state on (field 3), or None if gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    # The command name may contain spaces and parentheses: split after the last ')'.
    return stat[stat.rindex(b")") + 2 :].split()


def start_time(pid: int) -> int | None:
    """The process's start time (clock ticks since boot), or None if gone."""
    fields = stat_fields(pid)
    return None if fields is None else int(fields[19])


_OWNER: tuple[int, str] | None = None


def owner_token() -> str:
    """This process as ``pid:starttime``: the owner written in shared pools
    (addresses, id ranges), which a later process can check for life."""
    global _OWNER
    pid = os.getpid()
    if _OWNER is None or _OWNER[0] != pid:
        _OWNER = (pid, str(start_time(pid) or 0))
    return f"{_OWNER[0]}:{_OWNER[1]}"


def owner_alive(token: str) -> bool:
    """Whether the process named by ``token`` (``pid:starttime``) still runs."""
    pid_text, _, start = token.partition(":")
    try:
        pid = int(pid_text)
    except ValueError:
        return False
    return str(start_time(pid)) == start


class RunDir:
    """The ledger of one supervisor.

    Args:
        root: the directory holding run directories (default: :func:`run_root`).
    """

    #: The ledger is compacted once it has this many lines, and four times
    #: as many as the live records.
    COMPACT_AT = 4096

    def __init__(self, root: str | None = None) -> None:
        self.root = root or run_root()
        pid = os.getpid()
        self.path = os.path.join(self.root, f"{pid}-{start_time(pid)}")
        # Several supervisors of one process share the directory: one file each.
        self.file = os.path.join(self.path, f"ledger-{next(_LEDGERS)}.jsonl")
        self._fd = -1
        self._lines = 0
        self._live: dict[str, list[bytes]] = {}  # cid -> its record lines

    def _append(self, line: bytes) -> None:
        if self._fd < 0:
            private_root(self.root)
            os.makedirs(self.path, mode=0o700, exist_ok=True)
            self._fd = os.open(self.file, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        os.write(self._fd, line)
        self._lines += 1

    def record(self, cid: str, kind: str, **data: Any) -> None:
        """Note a resource of container ``cid`` that is about to be created.

        Raises:
            OSError: the ledger cannot be written (the resource must then not
                be created).
        """
        line = (_encode({"cid": cid, "kind": kind, **data}) + "\n").encode()
        self._append(line)
        self._live.setdefault(cid, []).append(line)

    def record_once(self, cid: str, kind: str, **data: Any) -> None:
        """:meth:`record`, unless ``cid`` already has live records (a resource
        shared by containers, such as a bridge, recorded by its first user).

        Raises:
            OSError: the ledger cannot be written.
        """
        if cid not in self._live:
            self.record(cid, kind, **data)

    def forget_prefixed(self, prefix: str) -> None:
        """:meth:`forget` every live record whose id starts with ``prefix``."""
        for cid in [c for c in self._live if c.startswith(prefix)]:
            self.forget(cid)

    def forget(self, cid: str) -> None:
        """Note that container ``cid``'s resources are all released."""
        if self._live.pop(cid, None) is None:
            return
        self._append((_encode({"cid": cid, "released": True}) + "\n").encode())
        if self._lines >= self.COMPACT_AT and self._lines >= 4 * sum(map(len, self._live.values())):
            self._compact()

    def _compact(self) -> None:
        """Rewrite the ledger with the live records only (atomically: a rename)."""
        lines = [line for records in self._live.values() for line in records]
        tmp = self.file + ".new"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, b"".join(lines))
        finally:
            os.close(fd)
        os.rename(tmp, self.file)
        os.close(self._fd)
        self._fd = os.open(self.file, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
        self._lines = len(lines)

    def close(self) -> None:
        """Remove the ledger if no container records are left, and the run
        directory once no other supervisor of this process has one there."""
        if self._fd < 0:
            return
        os.close(self._fd)
        self._fd = -1
        if not self._live:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.file)
            with contextlib.suppress(OSError):
                os.rmdir(self.path)
        self._lines = 0


_LEDGERS = itertools.count()


def _pending(text: str, default_cid: str) -> list[dict[str, Any]]:
    """The records of a ledger whose containers were not released, in order."""
    records: dict[str, list[dict[str, Any]]] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        entry = json.loads(line)
        cid = str(entry.pop("cid", default_cid))
        if entry.get("released"):
            records.pop(cid, None)
        else:
            records.setdefault(cid, []).append(entry)
    return [entry for entries in records.values() for entry in entries]


@mutable_record
class SweepReport:
    """What :func:`sweep` found and removed."""

    owners: list[str] = field(default_factory=list)
    removed: list[dict[str, Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def sweep(root: str | None = None) -> SweepReport:
    """Remove the recorded resources of every dead supervisor.

    Returns:
        what was swept; errors are collected, not raised, so one stubborn
        resource never hides the others.
    """
    root = root or run_root()
    report = SweepReport()
    if not os.path.lexists(root):
        return report
    try:
        private_root(root)  # rootless: another user's ledger is never acted on
    except OSError as exc:
        report.errors.append(str(exc))
        return report
    try:
        owners = sorted(os.listdir(root))
    except FileNotFoundError:
        return report
    for owner in owners:
        pid_text, _, started = owner.partition("-")
        if not pid_text.isdigit():
            continue
        alive = start_time(int(pid_text))
        if alive is not None and str(alive) == started:
            continue  # its supervisor still runs
        report.owners.append(owner)
        path = os.path.join(root, owner)
        for name in sorted(os.listdir(path)):
            file = os.path.join(path, name)
            ok = True
            try:
                with open(file) as f:
                    records = _pending(f.read(), name.removesuffix(".jsonl"))
            except (OSError, ValueError) as exc:
                report.errors.append(f"{file}: {exc}")
                records = []
            for record in reversed(records):
                sweeper = _SWEEPERS.get(str(record.get("kind")))
                if sweeper is None:
                    _load_sweepers()
                    sweeper = _SWEEPERS.get(str(record.get("kind")))
                if sweeper is None:
                    report.errors.append(f"{file}: no sweeper for {record!r}")
                    ok = False
                    continue
                try:
                    sweeper(record)
                    report.removed.append(record)
                except Exception as exc:  # noqa: BLE001 - report, keep sweeping
                    report.errors.append(f"{file}: {record!r}: {exc}")
                    ok = False
            if ok:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(file)
        with contextlib.suppress(OSError):
            os.rmdir(path)
    return report


def _load_sweepers() -> None:
    """Import the modules that register sweepers for their resource kinds."""
    for module in ("supervisor._parent.cgroups", "supervisor._parent.network"):
        with contextlib.suppress(ImportError):
            __import__(module)
