"""Host id ranges, one per container: ``Spec(map_base="auto")``.

By default every container maps its ids to the same host range (100000 and
up), so two containers' processes are the same host user to the kernel: the
owners of files in a shared bind, the per-user limits, who may signal whom.
With ``map_base="auto"`` each container gets a range of its own, as
Kubernetes' user namespaces give each pod, from a pool shared by every
supervisor on the host: slots of :data:`SLOT_IDS` ids from :data:`FIRST`
up, each taken under an exclusive lock by an owner (``pid:starttime``) that a
later allocation can see is dead and reclaim. The crash ledger records each
lease before it is taken, so ``supervisor gc`` frees a dead supervisor's.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator

from .rundir import owner_alive, owner_token, register_sweeper, run_root

#: The first host id of the pool: far above the ids of users and of the
#: shared default range (100000 + 65536), below the kernel's 2**32 - 1.
FIRST = 1 << 30
#: Ids per slot: the default ``Spec.map_size``.
SLOT_IDS = 1 << 16
#: Slots in the pool (up to 2**31 - 1).
SLOTS = 16384


def _paths() -> tuple[str, str]:
    folder = os.path.join(run_root(), "ids")
    return folder, os.path.join(folder, "leases.json")


@contextlib.contextmanager
def _locked() -> Iterator[dict[str, dict[str, str]]]:
    """The pool's leases (slot number -> owner and container), under its lock; written back."""
    folder, path = _paths()
    os.makedirs(folder, 0o700, exist_ok=True)
    fd = os.open(os.path.join(folder, "lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            with open(path) as f:
                leases: dict[str, dict[str, str]] = json.load(f)
        except (FileNotFoundError, ValueError):
            leases = {}
        yield leases
        tmp = path + ".new"
        with open(tmp, "w") as f:
            json.dump(leases, f)
        os.rename(tmp, path)
    finally:
        os.close(fd)


def allocate(cid: str, size: int) -> int:
    """Lease a range of ``size`` host ids for container ``cid``.

    Args:
        cid: the container's id (kept with the lease, for gc).
        size: how many ids (``Spec.map_size``); ranges bigger than a slot
            take consecutive slots.

    Returns:
        the range's first host id.

    Raises:
        OSError: the pool is full (``ENOSPC``), or its files cannot be used.
    """
    need = max(1, -(-size // SLOT_IDS))
    with _locked() as leases:
        for slot, lease in list(leases.items()):
            if not owner_alive(lease["owner"]):
                del leases[slot]  # its owner died without releasing it
        taken = {int(s) for s in leases}
        start = 0
        while start + need <= SLOTS:
            clash = next((s for s in range(start, start + need) if s in taken), None)
            if clash is None:
                for s in range(start, start + need):
                    leases[str(s)] = {"owner": owner_token(), "cid": cid}
                return FIRST + start * SLOT_IDS
            start = clash + 1
    raise OSError(28, f"no free host id range: all {SLOTS} ranges of {SLOT_IDS} ids are leased")


def release(base: int, cid: str, owner: str | None = None) -> None:
    """Give back the range starting at ``base`` that ``cid`` of ``owner`` (default: us) leased."""
    mine = {"owner": owner or owner_token(), "cid": cid}
    slot = (base - FIRST) // SLOT_IDS
    with _locked() as leases:
        while leases.get(str(slot)) == mine:
            del leases[str(slot)]
            slot += 1


def _sweep(record: dict[str, object]) -> None:
    """Sweeper of a dead supervisor's ``id-range`` record (see :mod:`.rundir`)."""
    release(int(str(record["base"])), str(record["container"]), str(record["owner"]))


register_sweeper("id-range", _sweep)
